//! The faults: their kinds (as `--nemesis` names them), a fault in force (to be healed), and
//! the record of one that happened (`faults.txt`, and the lines around a violation).

use std::collections::BTreeSet;

use coordinate_check::{self as check, Time};

/// A kind of fault the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FaultKind {
    Kill,
    Pause,
    Partition,
    /// Remove a node (`DELETE /<id>`), then add it back with an empty data dir
    /// (`POST /<id>`, started with `--join`).
    Membership,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Membership => "membership",
        }
    }

    /// The kind `--nemesis` calls `name`; `None` for `none`.
    fn parse(name: &str) -> Result<Option<FaultKind>, String> {
        match name {
            "none" => Ok(None),
            "kill" => Ok(Some(FaultKind::Kill)),
            "pause" => Ok(Some(FaultKind::Pause)),
            "partition" => Ok(Some(FaultKind::Partition)),
            "membership" => Ok(Some(FaultKind::Membership)),
            other => Err(format!(
                "--nemesis: unknown fault {other:?} (want kill, pause, partition, \
                 membership or none)"
            )),
        }
    }

    /// A comma-separated list, deduplicated and in a fixed order.
    pub fn parse_list(s: &str) -> Result<Vec<FaultKind>, String> {
        let mut kinds = BTreeSet::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            kinds.extend(FaultKind::parse(name)?);
        }
        Ok(kinds.into_iter().collect())
    }
}

/// One fault as it happened.
pub(crate) struct FaultRecord {
    pub kind: FaultKind,
    pub what: String,
    pub start: Time,
    pub end: Time,
}

impl std::fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{} .. {}] {}",
            check::history::secs(self.start),
            check::history::secs(self.end),
            self.what
        )
    }
}

/// A fault in force, to be healed.
pub(crate) enum Active {
    Killed(Vec<u64>),
    Paused(Vec<u64>),
    Partitioned,
    Removed(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse() {
        assert_eq!(
            FaultKind::parse_list("kill, pause,partition").unwrap(),
            vec![FaultKind::Kill, FaultKind::Pause, FaultKind::Partition]
        );
        assert!(FaultKind::parse_list("none").unwrap().is_empty());
        assert!(FaultKind::parse_list("explode").is_err());
    }
}
