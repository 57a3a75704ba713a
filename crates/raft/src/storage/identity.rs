//! Data-dir identity: a random number that names one data directory for its whole life, and
//! the identities this node has seen its peers present (trust on first use).
//!
//! A member whose data directory is lost or replaced comes back with the same `--id` but with
//! no memory of its term, its vote or its log: letting it take part again could elect two
//! leaders in one term or lose acknowledged writes. Each data directory therefore draws a
//! random, nonzero identity once (`<data_dir>/IDENTITY`) and presents it in the hello of every
//! peer connection; each node remembers the identity every peer presented first
//! (`<data_dir>/PEERS`) and refuses a peer that presents another one. The operator lets such a
//! node rejoin, empty, by removing it and adding it back (the leader then forgets its identity).
//!
//! This detects accidents, not attackers: identities travel in clear text until peer TLS
//! exists, so anyone who can watch the peer network can learn and replay them.
//!
//! Both files are written durably: a temp file, fsync, rename, fsync of the directory, so a
//! crash leaves the old file or the new one. `IDENTITY` holds 16 hex digits and a newline;
//! `PEERS` one `<id> <identity as 16 hex digits>` line per peer. A malformed file is an error
//! naming it: guessing would defeat the check.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// The file holding this data directory's identity.
pub const IDENTITY_FILE: &str = "IDENTITY";
/// The file holding the identities peers presented.
pub const PEERS_FILE: &str = "PEERS";

/// Reads this data directory's identity, drawing and durably writing a new one if there is
/// none yet.
pub fn load_or_create(data_dir: &Path) -> Result<u64> {
    let path = data_dir.join(IDENTITY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => parse_identity(text.trim_end_matches('\n')).ok_or_else(|| Error::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: "not a data-dir identity (16 hex digits, nonzero)".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir)
                .map_err(|e| Error::io(format!("creating {}", data_dir.display()), e))?;
            let identity = random_identity();
            write_durably(&path, format!("{identity:016x}\n").as_bytes())?;
            tracing::info!(identity = %format!("{identity:016x}"), "created the data-dir identity");
            Ok(identity)
        }
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// 16 hex digits, not zero.
fn parse_identity(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok().filter(|&v| v != 0)
}

/// A random nonzero u64: the OS-seeded keys of std's hasher, mixed with the time and pid.
fn random_identity() -> u64 {
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.write_u128(now);
        h.write_u32(std::process::id());
        let v = h.finish();
        if v != 0 {
            return v;
        }
    }
}

/// Writes `bytes` to `path` durably: temp file, fsync, rename, fsync of the directory.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
    let mut f = File::create(&tmp).map_err(|e| Error::io(ctx("creating", &tmp), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(ctx("writing", &tmp), e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| Error::io(ctx("renaming into", path), e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(ctx("syncing", dir), e))
}

/// What a presented identity means.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The identity this node remembers for the peer.
    Known,
    /// The peer was never seen: remember it (trust on first use).
    New,
    /// The peer presents another identity than the remembered one.
    Mismatch { known: u64 },
}

/// The identities peers presented, in memory and in `<data_dir>/PEERS`.
pub struct KnownPeers {
    path: PathBuf,
    map: Mutex<BTreeMap<u64, u64>>,
    /// Serializes file writes; each writes the map as it is when the write starts, so the last
    /// write holds the newest state.
    write: Mutex<()>,
}

impl KnownPeers {
    /// Loads the file at `path` (none yet: nobody known).
    pub fn load(path: &Path) -> Result<KnownPeers> {
        let map = match fs::read_to_string(path) {
            Ok(text) => parse_peers(&text).map_err(|(line, reason)| Error::Corrupt {
                path: path.to_path_buf(),
                offset: line,
                reason: format!("line {line}: {reason}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        Ok(KnownPeers {
            path: path.to_path_buf(),
            map: Mutex::new(map),
            write: Mutex::new(()),
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `identity`, presented by peer `id`, means.
    pub fn check(&self, id: u64, identity: u64) -> Verdict {
        match self.map().get(&id) {
            None => Verdict::New,
            Some(&known) if known == identity => Verdict::Known,
            Some(&known) => Verdict::Mismatch { known },
        }
    }

    /// Remembers `identity` for `id` if nothing is remembered yet; true if that changed the map
    /// (then call [`KnownPeers::save`]).
    pub fn remember(&self, id: u64, identity: u64) -> bool {
        let mut map = self.map();
        if map.contains_key(&id) {
            return false;
        }
        map.insert(id, identity);
        true
    }

    /// Forgets the identity of `id`; true if one was remembered.
    pub fn forget(&self, id: u64) -> bool {
        self.map().remove(&id).is_some()
    }

    /// Writes the map durably. Blocking: run it off the event loop.
    pub fn save(&self) -> Result<()> {
        let _writing = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let text: String = self
            .map()
            .iter()
            .map(|(id, identity)| format!("{id} {identity:016x}\n"))
            .collect();
        write_durably(&self.path, text.as_bytes())
    }
}

/// Parses `PEERS`; on error, the 1-based line number and what is wrong with it.
fn parse_peers(text: &str) -> std::result::Result<BTreeMap<u64, u64>, (u64, String)> {
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        let mut parts = line.split(' ');
        let (Some(id), Some(identity), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err((n, "want `<id> <identity>`".into()));
        };
        let id: u64 = id
            .parse()
            .ok()
            .filter(|&id| id != 0)
            .ok_or((n, format!("bad node id {id:?}")))?;
        let identity = parse_identity(identity).ok_or((n, format!("bad identity {identity:?}")))?;
        if map.insert(id, identity).is_some() {
            return Err((n, format!("node {id} listed twice")));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        assert_ne!(a, 0);
        assert_eq!(load_or_create(dir.path()).unwrap(), a);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), a);
    }

    #[test]
    fn a_malformed_identity_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "xyz\n", "0000000000000000\n", "12345678901234567\n"] {
            fs::write(dir.path().join(IDENTITY_FILE), bad).unwrap();
            let e = load_or_create(dir.path()).unwrap_err().to_string();
            assert!(e.contains(IDENTITY_FILE), "{bad:?}: {e}");
        }
    }

    #[test]
    fn known_peers_trust_on_first_use_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PEERS_FILE);
        let peers = KnownPeers::load(&path).unwrap();
        assert_eq!(peers.check(2, 7), Verdict::New);
        assert!(peers.remember(2, 7));
        assert!(!peers.remember(2, 8));
        assert_eq!(peers.check(2, 7), Verdict::Known);
        assert_eq!(peers.check(2, 8), Verdict::Mismatch { known: 7 });
        peers.remember(3, u64::MAX);
        peers.save().unwrap();
        let again = KnownPeers::load(&path).unwrap();
        assert_eq!(again.check(2, 8), Verdict::Mismatch { known: 7 });
        assert_eq!(again.check(3, u64::MAX), Verdict::Known);
        assert!(again.forget(2));
        again.save().unwrap();
        assert_eq!(KnownPeers::load(&path).unwrap().check(2, 8), Verdict::New);
    }

    #[test]
    fn a_malformed_peers_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PEERS_FILE);
        for bad in [
            "2\n",
            "x 0000000000000001\n",
            "2 1\n",
            "0 0000000000000001\n",
            "2 0000000000000001\n2 0000000000000002\n",
        ] {
            fs::write(&path, bad).unwrap();
            let e = KnownPeers::load(&path).err().unwrap().to_string();
            assert!(e.contains(PEERS_FILE), "{bad:?}: {e}");
        }
    }
}
