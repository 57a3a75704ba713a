//! Snapshot files: the state machine's full contents at one applied index, plus the raft
//! metadata (index, term, membership) that lets the log restart after it.
//!
//! A snapshot is written to `<index>-<term>.snap.tmp`, fsynced, renamed to
//! `<index>-<term>.snap`, and the directory fsynced: a crash leaves either the old set of files
//! or the new one, never a half-written `.snap`. The WAL marker that refers to a snapshot is
//! written only after this returns (the file first, then the record that points at it).
//!
//! File format: `| magic "CSNAP001" | meta_len: u32 | SnapshotMetadata (protobuf) |
//! data_len: u64 | data | crc32c: u32 |`, the CRC covering every byte before it.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Snapshot, SnapshotMetadata};

use crate::error::{Error, Result};
use crate::storage::failpoint::{self, Point};
use crate::storage::wal::{remove_if_present, sync_dir};
use crate::storage::wire;

const MAGIC: &[u8; 8] = b"CSNAP001";
/// Bytes written between flushes of a snapshot file.
const FLUSH_EVERY: usize = 1 << 20;

/// Where snapshot files are kept: [`SnapshotStore`]'s directory, or a simulator's disk.
pub trait SnapshotFiles: Send + Sync {
    /// Durably writes a snapshot: once this returns, it survives a crash.
    fn save(&self, snap: &Snapshot) -> Result<()>;
    /// Loads and verifies the snapshot with this index and term.
    fn load(&self, index: u64, term: u64) -> Result<Snapshot>;
    /// Deletes every snapshot older than `index`.
    fn prune(&self, index: u64) -> Result<()>;
}

impl SnapshotFiles for SnapshotStore {
    fn save(&self, snap: &Snapshot) -> Result<()> {
        SnapshotStore::save(self, snap)
    }
    fn load(&self, index: u64, term: u64) -> Result<Snapshot> {
        SnapshotStore::load(self, index, term)
    }
    fn prune(&self, index: u64) -> Result<()> {
        SnapshotStore::prune(self, index)
    }
}

/// The directory of snapshot files.
#[derive(Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Opens the directory, creating it if needed and removing leftover temp files.
    pub fn open(dir: &Path) -> Result<SnapshotStore> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        for entry in
            fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
        {
            let path = entry
                .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
                .path();
            if path.extension().is_some_and(|x| x == "tmp") {
                fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            }
        }
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, index: u64, term: u64) -> PathBuf {
        self.dir.join(format!("{index:016x}-{term:016x}.snap"))
    }

    /// Durably writes a snapshot (temp file, fsync, rename, fsync directory).
    pub fn save(&self, snap: &Snapshot) -> Result<()> {
        let meta = snap.get_metadata();
        let path = self.path(meta.index, meta.term);
        let tmp = path.with_extension("snap.tmp");
        let meta_bytes = meta.write_to_bytes().map_err(Error::encode)?;
        let mut head = Vec::with_capacity(MAGIC.len() + 4 + meta_bytes.len() + 8);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(meta_bytes.len() as u32).to_le_bytes());
        head.extend_from_slice(&meta_bytes);
        head.extend_from_slice(&(snap.data.len() as u64).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head), &snap.data);

        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&head)?;
            // Flushed a piece at a time: one big fsync would queue the whole file ahead of the
            // WAL's small fsyncs on the same disk and stall every write meanwhile.
            for piece in snap.data.chunks(FLUSH_EVERY) {
                failpoint::write(Point::SnapshotWrite, piece, |b| f.write_all(b))?;
                failpoint::sync(Point::SnapshotSync, || f.sync_data())?;
            }
            f.write_all(&crc.to_le_bytes())?;
            failpoint::sync(Point::SnapshotSync, || f.sync_all())?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            // Best effort: a leftover temp file is removed on the next open anyway.
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(format!("writing snapshot {}", path.display()), e));
        }
        sync_dir(&self.dir)
    }

    /// Loads and verifies the snapshot with this index and term.
    pub fn load(&self, index: u64, term: u64) -> Result<Snapshot> {
        let path = self.path(index, term);
        let mut raw = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .map_err(|e| Error::io(format!("reading snapshot {}", path.display()), e))?;
        decode(raw).map_err(|(offset, reason)| Error::Corrupt {
            path,
            offset,
            reason: reason.to_string(),
        })
    }

    /// Deletes every snapshot file older than `index`.
    pub fn prune(&self, index: u64) -> Result<()> {
        for entry in fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("reading {}", self.dir.display()), e))?
        {
            let path = entry
                .map_err(|e| Error::io(format!("reading {}", self.dir.display()), e))?
                .path();
            let older = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".snap"))
                .and_then(|n| n.split('-').next())
                .and_then(|i| u64::from_str_radix(i, 16).ok())
                .is_some_and(|i| i < index);
            if older {
                remove_if_present(&path)?;
            }
        }
        Ok(())
    }
}

/// Decodes and verifies a snapshot file's bytes; an error names the offset and what is wrong.
/// Allocates nothing by a length field: lengths are checked against the file first.
pub fn decode(raw: Vec<u8>) -> std::result::Result<Snapshot, (u64, &'static str)> {
    if raw.len() < MAGIC.len() + 4 + 8 + 4 || &raw[..MAGIC.len()] != MAGIC {
        return Err((0, "not a snapshot file"));
    }
    let body_len = raw.len() - 4;
    let mut crc = [0; 4];
    crc.copy_from_slice(&raw[body_len..]);
    if crc32c::crc32c(&raw[..body_len]) != u32::from_le_bytes(crc) {
        return Err((body_len as u64, "checksum mismatch"));
    }
    let mut pos = MAGIC.len();
    let mut len4 = [0; 4];
    len4.copy_from_slice(&raw[pos..pos + 4]);
    let meta_len = u32::from_le_bytes(len4) as usize;
    pos += 4;
    if pos + meta_len + 8 > body_len {
        return Err((pos as u64, "metadata length out of range"));
    }
    let meta_bytes = &raw[pos..pos + meta_len];
    wire::check(meta_bytes, &wire::SNAPSHOT_METADATA).map_err(|why| (pos as u64, why.reason()))?;
    let meta =
        SnapshotMetadata::parse_from_bytes(meta_bytes).map_err(|_| (pos as u64, "bad metadata"))?;
    pos += meta_len;
    let mut len8 = [0; 8];
    len8.copy_from_slice(&raw[pos..pos + 8]);
    let data_len = u64::from_le_bytes(len8) as usize;
    pos += 8;
    // `pos <= body_len` here; subtracting cannot overflow where adding a length could.
    if data_len != body_len - pos {
        return Err((pos as u64, "data length does not match the file"));
    }
    let mut snap = Snapshot::default();
    snap.set_metadata(meta);
    snap.data = bytes::Bytes::from(raw).slice(pos..body_len);
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(index: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = 3;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s.data = vec![7u8; 1000].into();
        s
    }

    #[test]
    fn round_trip_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        store.save(&sample(10)).unwrap();
        store.save(&sample(20)).unwrap();
        let got = store.load(20, 3).unwrap();
        assert_eq!(got, sample(20));
        store.prune(20).unwrap();
        assert!(store.load(10, 3).is_err());
        assert!(store.load(20, 3).is_ok());
    }

    #[test]
    fn corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        store.save(&sample(10)).unwrap();
        let path = store.path(10, 3);
        let mut raw = fs::read(&path).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0xff;
        fs::write(&path, &raw).unwrap();
        let err = store.load(10, 3).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
    }
}
