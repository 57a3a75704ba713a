//! Injected disk faults, on the real write and fsync calls of the WAL and the snapshot files,
//! so that tests can prove what a failing disk does to a node: the WAL's faults stop it
//! (fail-stop, like etcd), a snapshot file's are retried, and nothing acknowledged is lost.
//!
//! Off unless the process starts with `COORDINATE_FAILPOINT=<point>:<n>:<fault>`: from the
//! `n`-th call at `<point>` on (counting from 1), every call fails — a broken disk stays
//! broken. Points: `wal-write`, `wal-sync`, `snapshot-write`, `snapshot-sync`. Faults: `eio`
//! (an I/O error), `enospc` (no space left), `short` (a write that stops halfway, then no
//! space; for the `-write` points). Read once, at the first disk write; a malformed value is
//! ignored with a warning. Each point costs one relaxed atomic load when it is off.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    WalWrite,
    WalSync,
    SnapshotWrite,
    SnapshotSync,
}

/// What the disk does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Eio,
    Enospc,
    /// Half the bytes are written, then no space is left.
    Short,
}

/// Linux's errno values for an I/O error and a full disk.
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

impl Fault {
    /// The error the failing call returns.
    pub fn error(self) -> io::Error {
        match self {
            Fault::Eio => io::Error::from_raw_os_error(EIO),
            Fault::Enospc | Fault::Short => io::Error::from_raw_os_error(ENOSPC),
        }
    }
}

struct Plan {
    point: Point,
    from: u64,
    fault: Fault,
    calls: AtomicU64,
}

/// The environment variable that turns a fault on.
pub const VAR: &str = "COORDINATE_FAILPOINT";

fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let spec = std::env::var(VAR).ok()?;
        match parse(&spec) {
            Some((point, from, fault)) => {
                tracing::warn!(%spec, "disk fault injection is on ({VAR})");
                Some(Plan {
                    point,
                    from,
                    fault,
                    calls: AtomicU64::new(0),
                })
            }
            None => {
                tracing::warn!(%spec, "ignoring a malformed {VAR} (want <point>:<n>:<fault>)");
                None
            }
        }
    })
    .as_ref()
}

/// Parses `<point>:<n>:<fault>`.
pub fn parse(spec: &str) -> Option<(Point, u64, Fault)> {
    let mut parts = spec.split(':');
    let point = match parts.next()? {
        "wal-write" => Point::WalWrite,
        "wal-sync" => Point::WalSync,
        "snapshot-write" => Point::SnapshotWrite,
        "snapshot-sync" => Point::SnapshotSync,
        _ => return None,
    };
    let from: u64 = parts.next()?.parse().ok().filter(|&n| n >= 1)?;
    let fault = match parts.next()? {
        "eio" => Fault::Eio,
        "enospc" => Fault::Enospc,
        "short" => Fault::Short,
        _ => return None,
    };
    parts.next().is_none().then_some((point, from, fault))
}

/// The fault this call at `point` meets, if one is injected there and it is due.
pub fn hit(point: Point) -> Option<Fault> {
    let plan = plan()?;
    if plan.point != point {
        return None;
    }
    let call = plan.calls.fetch_add(1, Ordering::Relaxed) + 1;
    (call >= plan.from).then_some(plan.fault)
}

/// A write of `buf` through `write`, unless a fault is due at `point`: then nothing (or, for
/// a short write, the first half) is written and the fault's error is returned.
pub fn write(
    point: Point,
    buf: &[u8],
    mut write: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    match hit(point) {
        None => write(buf),
        Some(Fault::Short) => {
            write(&buf[..buf.len() / 2])?;
            Err(Fault::Short.error())
        }
        Some(fault) => Err(fault.error()),
    }
}

/// An fsync through `sync`, unless a fault is due at `point`.
pub fn sync(point: Point, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    match hit(point) {
        None => sync(),
        Some(fault) => Err(fault.error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_are_refused() {
        assert_eq!(
            parse("wal-sync:3:eio"),
            Some((Point::WalSync, 3, Fault::Eio))
        );
        assert_eq!(
            parse("snapshot-write:1:short"),
            Some((Point::SnapshotWrite, 1, Fault::Short))
        );
        for bad in [
            "",
            "wal-sync",
            "wal-sync:0:eio",
            "wal:1:eio",
            "wal-sync:1:boom",
            "wal-sync:1:eio:x",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn writes_go_through_without_a_plan_and_faults_carry_their_errno() {
        let mut written = Vec::new();
        // Without a plan (no variable in the test's environment) writes go through.
        write(Point::WalWrite, b"abcd", |b| {
            written.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(written, b"abcd");
        assert_eq!(Fault::Short.error().raw_os_error(), Some(ENOSPC));
        assert_eq!(Fault::Eio.error().raw_os_error(), Some(EIO));
    }
}
