//! Backups: a copy of the whole store that can seed a new cluster.
//!
//! **The file**: `| magic "CBACKUP1" | data_len: u64 | data | zero padding | SHA-256 |`, the
//! data being the state machine's snapshot (`crate::kv::snapshot`: every key's history since
//! the compaction point, leases, alarms, members) and the digest covering every byte before
//! it. It ends the way etcd's snapshot files do: Maintenance/Snapshot streams everything but
//! the digest, then the digest, so `etcdctl snapshot save` writes exactly this file; the
//! padding makes the length before the digest a multiple of 512, as etcdctl checks (etcd's
//! files are whole database pages).
//!
//! **Restoring** (`coordinate restore FILE` with the flags the new member will run with)
//! checks the digest and the data, replaces the member list with the new cluster's (no member
//! removed), and bootstraps an empty data directory from it, as a founding member would
//! bootstrap an empty state: every new member restores the same file with the same member
//! list, so they start from the same first state. Revisions, history and leases are kept;
//! the new cluster's log starts afresh.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use coordinate_raft::storage::RaftStorage;

use crate::config::Config;
use crate::kv::Kv;

/// Bytes of the SHA-256 trailer.
pub const DIGEST_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"CBACKUP1";
const HEAD_LEN: usize = MAGIC.len() + 8;
/// What the length before the digest is a multiple of.
const ALIGN: usize = 512;

/// Why a backup cannot be read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a backup: {len} bytes, shorter than its SHA-256 trailer", path.display())]
    TooShort { path: PathBuf, len: usize },
    #[error("{} is damaged: its SHA-256 trailer does not match its contents", path.display())]
    Digest { path: PathBuf },
    #[error("{} does not hold a coordinate backup: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error(
        "{} is not empty: a backup only seeds a new member's empty data directory",
        dir.display()
    )]
    NotEmpty { dir: PathBuf },
    #[error("--join: a joining member gets its state from the leader, not from a backup")]
    Join,
    #[error("cannot write the data directory {}: {source}", dir.display())]
    Write {
        dir: PathBuf,
        source: coordinate_raft::Error,
    },
}

/// The SHA-256 of `data`.
pub fn digest(data: &[u8]) -> [u8; DIGEST_LEN] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0; DIGEST_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

/// The backup of a state machine's snapshot `data`: the whole file, digest last.
pub fn seal(data: &[u8]) -> Bytes {
    let body = (HEAD_LEN + data.len()).div_ceil(ALIGN) * ALIGN;
    let mut out = Vec::with_capacity(body + DIGEST_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(body, 0);
    let d = digest(&out);
    out.extend_from_slice(&d);
    Bytes::from(out)
}

/// Reads a backup file: its digest checked and its state parsed.
pub fn open(path: &Path) -> Result<Kv, BackupError> {
    let raw = std::fs::read(path).map_err(|source| BackupError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(raw).map_err(|e| e.at(path))
}

/// What [`parse`] found wrong, before the file's name is known.
#[derive(Debug, PartialEq, Eq)]
enum Damage {
    TooShort(usize),
    Digest,
    Format(String),
}

impl Damage {
    fn at(self, path: &Path) -> BackupError {
        let path = path.to_path_buf();
        match self {
            Damage::TooShort(len) => BackupError::TooShort { path, len },
            Damage::Digest => BackupError::Digest { path },
            Damage::Format(reason) => BackupError::Format { path, reason },
        }
    }
}

/// A backup's bytes, as [`seal`] wrote them.
fn parse(mut raw: Vec<u8>) -> Result<Kv, Damage> {
    let Some(split) = raw.len().checked_sub(DIGEST_LEN).filter(|&n| n >= HEAD_LEN) else {
        return Err(Damage::TooShort(raw.len()));
    };
    let trailer = raw.split_off(split);
    if digest(&raw) != trailer.as_slice() {
        return Err(Damage::Digest);
    }
    let mut raw = Bytes::from(raw);
    let head = raw.split_to(HEAD_LEN);
    if &head[..MAGIC.len()] != MAGIC {
        return Err(Damage::Format("it does not start with CBACKUP1".into()));
    }
    let mut len = [0; 8];
    len.copy_from_slice(&head[MAGIC.len()..]);
    let len = u64::from_be_bytes(len);
    let data = usize::try_from(len)
        .ok()
        .filter(|&len| len <= raw.len())
        .map(|len| raw.split_to(len))
        .ok_or_else(|| Damage::Format(format!("it claims {len} bytes of data")))?;
    Kv::restore(data).map_err(|e| Damage::Format(e.to_string()))
}

/// What a restore wrote.
#[derive(Debug)]
pub struct Restored {
    /// The store revision the new cluster starts at.
    pub revision: u64,
    /// Live keys.
    pub keys: usize,
}

/// Seeds `cfg`'s empty data directory with the backup at `path`, as the first state of a new
/// cluster whose members are `cfg`'s founding members.
pub fn restore(cfg: &Config, path: &Path) -> Result<Restored, BackupError> {
    if cfg.join {
        return Err(BackupError::Join);
    }
    let mut kv = open(path)?;
    let dir = &cfg.data_dir;
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(BackupError::NotEmpty { dir: dir.clone() });
    }
    let members = crate::server::founding_members(cfg);
    let voters: Vec<u64> = members.keys().copied().collect();
    kv.reseat_members(members);
    let written = |source| BackupError::Write {
        dir: dir.clone(),
        source,
    };
    let (mut storage, mut wal, _) =
        RaftStorage::open(dir, cfg.wal_segment_size).map_err(written)?;
    storage
        .bootstrap(&mut wal, voters, kv.snapshot())
        .map_err(written)?;
    Ok(Restored {
        revision: kv.revision(),
        keys: kv.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup_of(kv: &Kv) -> Vec<u8> {
        seal(&kv.snapshot()).to_vec()
    }

    #[test]
    fn a_backup_reads_back_and_damage_is_named() {
        let kv = Kv::with_members([(1, "http://127.0.0.1:1".to_string())].into());
        let raw = backup_of(&kv);
        assert_eq!(raw.len() % ALIGN, DIGEST_LEN, "etcdctl's check");
        assert_eq!(parse(raw.clone()), Ok(kv));

        let mut flipped = raw.clone();
        flipped[3] ^= 1;
        assert_eq!(parse(flipped), Err(Damage::Digest));
        assert_eq!(parse(vec![0; 5]), Err(Damage::TooShort(5)));
        // A sound trailer over something that is no backup, or no snapshot.
        for junk in [
            b"not a backup, no magic at all".to_vec(),
            seal(b"no snapshot").to_vec(),
        ] {
            let sealed = [junk.clone(), digest(&junk).to_vec()].concat();
            let raw = if junk.starts_with(MAGIC) {
                junk
            } else {
                sealed
            };
            assert!(matches!(parse(raw), Err(Damage::Format(_))));
        }
        // A length past the end.
        let mut long = seal(b"x")[..HEAD_LEN].to_vec();
        long[MAGIC.len()..].copy_from_slice(&u64::MAX.to_be_bytes());
        long.extend_from_slice(&digest(&long));
        assert!(matches!(parse(long), Err(Damage::Format(r)) if r.contains("claims")));
    }
}
