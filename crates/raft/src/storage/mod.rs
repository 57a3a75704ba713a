//! Durable raft state: the in-memory view of the log that raft-rs reads through the
//! [`raft::Storage`] trait, backed by the write-ahead log and the snapshot files.
//!
//! `RaftStorage` is owned by the raft loop (inside `RawNode`), so nothing here is shared or
//! locked. It holds the log in memory; the [`wal::Wal`] that makes it durable is owned by the
//! log writer thread (`raft::persist`), which writes and fsyncs what each `Ready` hands it.
//! Snapshot files are written before the WAL record that refers to them is queued: installed
//! ones here, the node's own ones by a background thread (see `raft::node`).
//!
//! The in-memory log holds every entry after the newest compaction point; `first_index` is the
//! oldest entry still held and `prev_term` the term of the entry just before it, which raft needs
//! to match a follower's log at the boundary. It also keeps a running byte count through each
//! entry, so the bytes of any range of the log are known at once: the node snapshots and
//! compacts by bytes as well as by entry count (see `raft::node`).

pub mod datadir;
pub mod failpoint;
pub mod identity;
pub mod snapshot;
pub mod wal;
pub mod wire;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::error::{Error, Result};
use snapshot::{SnapshotFiles, SnapshotStore};
use wal::{SnapshotMarker, Wal};

/// Written into the data directory when this node applies its own removal.
pub const REMOVED_FILE: &str = "REMOVED";

/// Bytes an in-memory entry is counted as beyond its data and context (the `Entry` itself,
/// its queue slot and running count).
const ENTRY_OVERHEAD: u64 = 96;

/// What an entry costs the in-memory log, in bytes.
fn entry_bytes(e: &Entry) -> u64 {
    (e.data.len() + e.context.len()) as u64 + ENTRY_OVERHEAD
}

/// The node's raft log, hard state and snapshots.
pub struct RaftStorage {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot_meta: SnapshotMetadata,
    first_index: u64,
    prev_term: u64,
    entries: VecDeque<Entry>,
    /// Running byte count of the log through each entry of `entries` (same positions).
    ends: VecDeque<u64>,
    /// The running byte count just before `first_index`.
    base: u64,
    snaps: Arc<dyn SnapshotFiles>,
    /// Set when raft asked for a snapshot the newest file cannot serve (it predates the
    /// recipient's membership); the node loop then writes a fresh one.
    snapshot_wanted: std::cell::Cell<bool>,
}

impl RaftStorage {
    /// Opens the data directory and recovers. Returns the WAL (for the log writer) and the
    /// newest snapshot too, so the caller can restore the state machine from it.
    pub fn open(dir: &Path, segment_size: u64) -> Result<(RaftStorage, Wal, Option<Snapshot>)> {
        let tombstone = dir.join(REMOVED_FILE);
        if tombstone.exists() {
            return Err(Error::Removed(tombstone));
        }
        let snaps = SnapshotStore::open(&dir.join("snap"))?;
        let (wal, rec) = Wal::open(&dir.join("wal"), segment_size)?;
        let snapshot = match rec.snapshot {
            Some(m) => Some(snaps.load(m.index, m.term)?),
            None => None,
        };
        let store = RaftStorage::recover(rec, snapshot.as_ref(), Arc::new(snaps));
        Ok((store, wal, snapshot))
    }

    /// Rebuilds the in-memory log from what replay recovered (`rec`) and the snapshot its
    /// marker names, loaded from `snaps`, where snapshots are kept from now on.
    pub fn recover(
        rec: wal::Recovered,
        snapshot: Option<&Snapshot>,
        snaps: Arc<dyn SnapshotFiles>,
    ) -> RaftStorage {
        let mut store = RaftStorage {
            hard_state: rec.hard_state,
            conf_state: ConfState::default(),
            snapshot_meta: SnapshotMetadata::default(),
            first_index: 1,
            prev_term: 0,
            entries: VecDeque::new(),
            ends: VecDeque::new(),
            base: 0,
            snaps,
            snapshot_wanted: std::cell::Cell::new(false),
        };
        if let Some(snap) = snapshot {
            let meta = snap.get_metadata();
            store.snapshot_meta = meta.clone();
            store.conf_state = meta.get_conf_state().clone();
            store.first_index = meta.index + 1;
            store.prev_term = meta.term;
            store.hard_state.commit = store.hard_state.commit.max(meta.index);
            store.hard_state.term = store.hard_state.term.max(meta.term);
        }
        if let Some(first) = rec.entries.first() {
            store.first_index = first.index;
        }
        store.push_entries(rec.entries);
        store
    }

    /// True once the node has a membership: it bootstrapped a cluster, or a leader sent it a
    /// snapshot. A `--join` node starts uninitialized.
    pub fn is_initialized(&self) -> bool {
        !self.conf_state.voters.is_empty() || !self.conf_state.learners.is_empty()
    }

    /// Creates the first state of a brand-new cluster: a snapshot at index 1 holding the
    /// membership and the initial state-machine `data`. Every founding member writes the same
    /// one, so they agree from the start; nodes added later receive it (or a newer one) from the
    /// leader instead.
    pub fn bootstrap(
        &mut self,
        wal: &mut Wal,
        voters: Vec<u64>,
        data: bytes::Bytes,
    ) -> Result<Snapshot> {
        let snap = founding_snapshot(voters, data);
        let marker = self.install_snapshot(&snap)?;
        wal.mark_snapshot(marker, true);
        wal.set_hard_state(&self.hard_state)?;
        wal.sync()?;
        Ok(snap)
    }

    /// Installs a snapshot received from the leader (or the bootstrap one): durably writes its
    /// file and replaces the in-memory log. The caller queues the returned marker (replacing
    /// the whole log) and [`RaftStorage::hard_state`] to the WAL.
    pub fn install_snapshot(&mut self, snap: &Snapshot) -> Result<SnapshotMarker> {
        let meta = snap.get_metadata();
        self.snaps.save(snap)?;
        self.snapshot_meta = meta.clone();
        self.conf_state = meta.get_conf_state().clone();
        self.first_index = meta.index + 1;
        self.prev_term = meta.term;
        self.entries.clear();
        self.ends.clear();
        self.base = 0;
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        Ok(SnapshotMarker {
            index: meta.index,
            term: meta.term,
        })
    }

    /// The hard state as last recorded.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The snapshot files (the log writer prunes old ones once a newer marker is durable).
    pub fn snapshot_store(&self) -> Arc<dyn SnapshotFiles> {
        self.snaps.clone()
    }

    /// A snapshot of this node's own state at applied `index`, not yet written: the caller
    /// saves it (off the raft loop) and then reports it with [`RaftStorage::snapshot_saved`].
    pub fn snapshot_at(
        &self,
        index: u64,
        conf_state: ConfState,
        data: bytes::Bytes,
    ) -> Result<Snapshot> {
        let term = raft::Storage::term(self, index)?;
        let mut snap = Snapshot::default();
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf_state);
        snap.data = data;
        Ok(snap)
    }

    /// Records that the snapshot with `meta` is durably written: it becomes the one served to
    /// peers, and in-memory entries before `compact_to` leave the log (kept entries let slightly
    /// lagging peers catch up by log). Returns the marker the caller queues to the WAL, then the
    /// WAL compaction and the pruning of older snapshot files, and the entries that left, for
    /// the caller to free off the raft loop (100,000 entries take 5-7 ms to free). Returns
    /// `None` if a newer snapshot (installed from the leader meanwhile) already took its place.
    pub fn snapshot_saved(
        &mut self,
        meta: SnapshotMetadata,
        compact_to: u64,
    ) -> Result<Option<(SnapshotMarker, VecDeque<Entry>)>> {
        if meta.index <= self.snapshot_meta.index {
            return Ok(None);
        }
        let marker = SnapshotMarker {
            index: meta.index,
            term: meta.term,
        };
        self.snapshot_meta = meta;
        let dropped = self.compact(compact_to.min(marker.index))?;
        Ok(Some((marker, dropped)))
    }

    /// Drops the entries before `compact_to` from the log and returns them.
    fn compact(&mut self, compact_to: u64) -> Result<VecDeque<Entry>> {
        if compact_to <= self.first_index {
            return Ok(VecDeque::new());
        }
        let prev_term = raft::Storage::term(self, compact_to - 1)?;
        let drop = ((compact_to - self.first_index) as usize).min(self.entries.len());
        if drop > 0 {
            self.base = self.ends[drop - 1];
        }
        // The kept tail is moved (a few thousand entries at most), not the dropped head.
        let kept = self.entries.split_off(drop);
        let dropped = std::mem::replace(&mut self.entries, kept);
        self.ends.drain(..drop);
        self.first_index = compact_to;
        self.prev_term = prev_term;
        Ok(dropped)
    }

    /// Appends (or overwrites from `entries[0].index` on) entries in memory; the log writer
    /// makes them durable.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index < self.first_index {
            return Err(Error::Internal(format!(
                "append at {} before the first index {}",
                first.index, self.first_index
            )));
        }
        let keep = (first.index - self.first_index) as usize;
        if keep > self.entries.len() {
            return Err(Error::Internal(format!(
                "append at {} leaves a gap after {}",
                first.index,
                self.last_index()
            )));
        }
        self.entries.truncate(keep);
        self.ends.truncate(keep);
        self.push_entries(entries.iter().cloned());
        Ok(())
    }

    /// Appends entries at the end of the in-memory log, counting their bytes.
    fn push_entries(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            let end = self.ends.back().copied().unwrap_or(self.base) + entry_bytes(&e);
            self.ends.push_back(end);
            self.entries.push_back(e);
        }
    }

    /// The running byte count through entry `index` (clamped to the log held in memory).
    fn end_at(&self, index: u64) -> u64 {
        if index < self.first_index {
            return self.base;
        }
        let at = (index - self.first_index) as usize;
        self.ends
            .get(at)
            .or(self.ends.back())
            .copied()
            .unwrap_or(self.base)
    }

    /// Bytes of the in-memory entries after `after` up to and including `through`.
    pub fn bytes_between(&self, after: u64, through: u64) -> u64 {
        if through <= after {
            return 0;
        }
        self.end_at(through).saturating_sub(self.end_at(after))
    }

    /// Bytes of every entry held in memory.
    pub fn log_bytes(&self) -> u64 {
        self.ends.back().copied().unwrap_or(self.base) - self.base
    }

    /// Where to compact after a snapshot at `index`: the oldest entry to keep so that at most
    /// `max_entries` entries and `max_bytes` bytes of log stay behind the snapshot, for peers
    /// that lag slightly to catch up by log rather than by snapshot (never below 1).
    pub fn catch_up_start(&self, index: u64, max_entries: u64, max_bytes: u64) -> u64 {
        let by_count = index.saturating_sub(max_entries).max(1);
        let lo = by_count.max(self.first_index);
        if lo > index {
            return lo;
        }
        let through = self.end_at(index);
        // The first kept entry `c` must satisfy end(index) - end(c - 1) <= max_bytes; `ends`
        // only grows, so that holds from some position on.
        let from = (lo - self.first_index) as usize;
        let to = ((index - self.first_index + 1) as usize).min(self.ends.len());
        let ok = |i: usize| {
            let before = if i == 0 { self.base } else { self.ends[i - 1] };
            through - before <= max_bytes
        };
        let first_ok = (from..to).find(|&i| ok(i)).unwrap_or(to);
        self.first_index + first_ok as u64
    }

    /// Records a new hard state (the log writer makes it durable).
    pub fn set_hard_state(&mut self, hs: &HardState) {
        self.hard_state = hs.clone();
    }

    /// Tracks membership changes as they are applied, for `initial_state` and snapshots.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// True (once) if raft needs a newer snapshot than the newest file.
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// The newest snapshot's index.
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_meta.index
    }

    /// The oldest entry still held (compaction point + 1).
    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// The newest entry's index.
    pub fn last_index(&self) -> u64 {
        self.first_index + self.entries.len() as u64 - 1
    }
}

/// A brand-new cluster's first snapshot: index 1, term 1, the founding `voters`, and the
/// state machine's initial `data`.
pub fn founding_snapshot(voters: Vec<u64>, data: bytes::Bytes) -> Snapshot {
    let mut snap = Snapshot::default();
    let meta = snap.mut_metadata();
    meta.index = 1;
    meta.term = 1;
    meta.mut_conf_state().voters = voters;
    snap.data = data;
    snap
}

impl raft::Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.first_index) as usize;
        let hi = (high - self.first_index) as usize;
        let mut out: Vec<Entry> = self.entries.range(lo..hi).cloned().collect();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx + 1 == self.first_index {
            return Ok(self.prev_term);
        }
        if idx == self.snapshot_meta.index {
            return Ok(self.snapshot_meta.term);
        }
        if idx < self.first_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.first_index) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(RaftStorage::last_index(self))
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let meta = &self.snapshot_meta;
        let cs = meta.get_conf_state();
        // A node added after the newest snapshot would refuse it (raft only installs a
        // snapshot whose membership contains the recipient): ask for a fresh one.
        let knows_recipient = cs.voters.contains(&to) || cs.learners.contains(&to);
        if meta.index == 0 || meta.index < request_index || !knows_recipient {
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        // Read from disk on the event loop's thread (rare: a peer far behind), so let the
        // runtime move its other tasks elsewhere meanwhile.
        let loaded = tokio::task::block_in_place(|| self.snaps.load(meta.index, meta.term));
        loaded.map_err(|e| {
            tracing::error!(error = %e, "cannot load snapshot to send");
            raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 10].into(),
            ..Default::default()
        }
    }

    fn sized(index: u64, bytes: usize) -> Entry {
        Entry {
            index,
            term: 1,
            data: vec![0u8; bytes].into(),
            ..Default::default()
        }
    }

    /// The byte counts follow appends, overwrites and compaction, and the catch-up window is
    /// bounded by bytes as well as by count.
    #[test]
    fn the_log_counts_its_bytes_and_bounds_catch_up_by_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, mut wal, _) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        s.bootstrap(&mut wal, vec![1], bytes::Bytes::new()).unwrap();
        let one = 1000 + ENTRY_OVERHEAD;
        let ents: Vec<Entry> = (2..=11).map(|i| sized(i, 1000)).collect();
        s.append(&ents).unwrap();
        assert_eq!(s.log_bytes(), 10 * one);
        assert_eq!(s.bytes_between(1, 11), 10 * one);
        assert_eq!(s.bytes_between(5, 7), 2 * one);
        assert_eq!(s.bytes_between(7, 7), 0);
        // Overwriting a suffix replaces its bytes.
        s.append(&[sized(10, 10)]).unwrap();
        assert_eq!(s.log_bytes(), 8 * one + 10 + ENTRY_OVERHEAD);
        // By count only: keep 4 entries behind index 9 (5..=9).
        assert_eq!(s.catch_up_start(9, 4, u64::MAX), 5);
        // By bytes: two and a half entries' worth keeps two (8..=9).
        assert_eq!(s.catch_up_start(9, 4, 2 * one + one / 2), 8);
        // Nothing fits: keep none.
        assert_eq!(s.catch_up_start(9, 4, 10), 10);
        s.compact(s.catch_up_start(9, 4, 2 * one + one / 2))
            .unwrap();
        assert_eq!(s.first_index(), 8);
        assert_eq!(s.log_bytes(), 2 * one + 10 + ENTRY_OVERHEAD);
        assert_eq!(s.bytes_between(0, 9), 2 * one);
        assert_eq!(s.catch_up_start(9, 100, u64::MAX), 8);
    }

    #[test]
    fn bootstrap_append_snapshot_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut s, mut wal, snap) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
            assert!(snap.is_none());
            assert!(!s.is_initialized());
            s.bootstrap(&mut wal, vec![1, 2, 3], bytes::Bytes::from_static(b"state"))
                .unwrap();
            assert!(s.is_initialized());
            assert_eq!((s.first_index(), s.last_index()), (2, 1));
            assert_eq!(s.term(1).unwrap(), 1);
            let ents: Vec<Entry> = (2..=20).map(|i| entry(i, 2)).collect();
            s.append(&ents).unwrap();
            wal.append_entries(&ents).unwrap();
            wal.sync().unwrap();
            // Overwrite a suffix.
            s.append(&[entry(18, 3)]).unwrap();
            wal.append_entries(&[entry(18, 3)]).unwrap();
            wal.sync().unwrap();
            assert_eq!(s.last_index(), 18);
            let cs = s.initial_state().unwrap().conf_state;
            let mut snap = s
                .snapshot_at(15, cs, bytes::Bytes::from_static(b"at 15"))
                .unwrap();
            // Nothing changes until the file is saved.
            assert_eq!((s.snapshot_index(), s.first_index()), (1, 2));
            s.snapshot_store().save(&snap).unwrap();
            let (marker, freed) = s.snapshot_saved(snap.take_metadata(), 12).unwrap().unwrap();
            assert_eq!(marker, SnapshotMarker { index: 15, term: 2 });
            // The entries that left the log are handed back, to be freed elsewhere.
            let freed: Vec<u64> = freed.iter().map(|e| e.index).collect();
            assert_eq!(freed, (2..12).collect::<Vec<u64>>());
            assert_eq!(s.snapshot_index(), 15);
            // An older one finishing later is ignored.
            let mut old = s
                .snapshot_at(14, ConfState::default(), bytes::Bytes::new())
                .unwrap();
            assert_eq!(s.snapshot_saved(old.take_metadata(), 12).unwrap(), None);
            wal.mark_snapshot(marker, false);
            wal.sync().unwrap();
            assert_eq!(s.first_index(), 12);
            assert_eq!(s.term(11).unwrap(), 2);
            assert!(s
                .entries(11, 13, None, GetEntriesContext::empty(false))
                .is_err());
            assert_eq!(
                s.entries(12, 19, None, GetEntriesContext::empty(false))
                    .unwrap()
                    .len(),
                7
            );
        }
        let (s, _, snap) = RaftStorage::open(dir.path(), 1 << 20).unwrap();
        let snap = snap.expect("snapshot recovered");
        assert_eq!(snap.get_metadata().index, 15);
        assert_eq!(&snap.data[..], b"at 15");
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
        assert_eq!((s.first_index(), s.last_index()), (16, 18));
        assert_eq!(s.term(18).unwrap(), 3);
        assert_eq!(s.term(15).unwrap(), 2);
    }
}
