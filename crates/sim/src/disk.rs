//! The simulated disk of one node: the log writer's records and the snapshot files, with the
//! durability the real ones have, and the faults real disks have.
//!
//! It models the contract of `coordinate_raft::persist` and `storage::wal`, record by record:
//! - the node queues jobs (a `Ready`'s entries and hard state, snapshot markers,
//!   compactions); the simulator decides when the writer takes them ([`Disk::write_batch`]),
//!   and whether the batch is fsynced by the same rule as the real writer
//!   (`persist::needs_sync`);
//! - a crash keeps every fsynced record, a prefix of the written but unsynced ones (the WAL
//!   cuts a torn tail at its first bad record), and nothing of what was still queued;
//! - an fsync can fail: the writer then stops, as the real one does, and the node fail-stops;
//! - a snapshot file is durable once saved (the real store writes, fsyncs and renames it
//!   before returning), and recovery needs the file every durable marker names.
//!
//! Recovery replays the surviving records with the WAL's own rules
//! (`wal::Recovered::replay_entry` / `replay_marker`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use coordinate_raft::persist::needs_sync;
use coordinate_raft::storage::snapshot::SnapshotFiles;
use coordinate_raft::storage::wal::{Recovered, SnapshotMarker};
use coordinate_raft::Error;
use raft::eraftpb::{Entry, HardState, Message, Snapshot};

/// One record of the simulated WAL.
#[derive(Clone, Debug)]
enum Record {
    Entry(Entry),
    HardState(HardState),
    Marker(SnapshotMarker, bool),
}

/// What the node queued for its log writer.
#[derive(Debug)]
pub enum Job {
    Append {
        number: u64,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        messages: Vec<Message>,
    },
    Marker(SnapshotMarker, bool),
    Compact {
        prune: u64,
    },
}

/// A node's disk; it outlives the node's crashes.
#[derive(Default)]
pub struct Disk {
    /// Records written, in order; `written[..synced]` survive any crash.
    written: Vec<Record>,
    synced: usize,
    /// The hard state last written (for the fsync rule).
    hard_state: HardState,
    /// Jobs the node queued that the writer has not taken yet.
    pub queue: Vec<Job>,
    /// Snapshot files, by index.
    snapshots: BTreeMap<u64, Snapshot>,
    /// The highest `Ready` number made durable in this run of the node.
    pub persisted: u64,
    /// Set once an fsync failed: the writer stopped (until the node restarts).
    pub failure: Option<Arc<Error>>,
    /// The data dir is marked as a removed member's.
    pub removed: bool,
}

impl Disk {
    /// The writer takes every queued job, writes them, fsyncs if the batch needs it (or
    /// `force`, a barrier), and publishes the Ready number. `fail` makes the fsync fail: the
    /// writer stops with nothing of the batch durable. Returns the messages that had to wait
    /// for the batch to be durable.
    pub fn write_batch(&mut self, force: bool, fail: bool) -> Result<Vec<Message>, Arc<Error>> {
        if let Some(e) = &self.failure {
            return Err(e.clone());
        }
        let mut durable = force;
        let mut number = None;
        let mut messages = Vec::new();
        let mut prune = None;
        for job in std::mem::take(&mut self.queue) {
            match job {
                Job::Append {
                    number: n,
                    entries,
                    hard_state,
                    messages: m,
                } => {
                    durable |= !entries.is_empty();
                    self.written.extend(entries.into_iter().map(Record::Entry));
                    if let Some(hs) = hard_state {
                        durable |= needs_sync(&self.hard_state, &hs);
                        self.hard_state = hs.clone();
                        self.written.push(Record::HardState(hs));
                    }
                    number = Some(n);
                    messages.extend(m);
                }
                Job::Marker(marker, discard) => {
                    durable = true;
                    self.written.push(Record::Marker(marker, discard));
                }
                Job::Compact { prune: p } => {
                    durable = true;
                    prune = Some(prune.unwrap_or(0).max(p));
                }
            }
        }
        if durable {
            if fail {
                let e = Arc::new(Error::io(
                    "syncing the simulated WAL",
                    std::io::Error::other("injected fsync failure"),
                ));
                self.failure = Some(e.clone());
                return Err(e);
            }
            self.synced = self.written.len();
        }
        if let Some(index) = prune {
            // Only files older than a durable marker are pruned (the marker is in this batch
            // or before it, and the batch is durable now).
            self.snapshots.retain(|&i, _| i >= index);
        }
        if let Some(n) = number {
            self.persisted = n;
        }
        Ok(messages)
    }

    /// The node crashed: what was queued is gone, and only the first `keep` records written
    /// survive (a torn tail is cut at its first bad record). An honest disk keeps at least
    /// every fsynced one: `keep >= synced()`.
    pub fn crash(&mut self, keep: usize) {
        let keep = keep.min(self.written.len());
        self.written.truncate(keep);
        self.synced = keep;
        self.queue.clear();
        self.persisted = 0;
        self.failure = None;
        self.hard_state = self.last_hard_state();
    }

    /// Records written, and how many of them are fsynced (what a crash keeps at least).
    pub fn written(&self) -> (usize, usize) {
        (self.written.len(), self.synced)
    }

    fn last_hard_state(&self) -> HardState {
        self.written
            .iter()
            .rev()
            .find_map(|r| match r {
                Record::HardState(hs) => Some(hs.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Replays the log as the WAL does on open; the snapshot its newest marker names.
    pub fn recover(&self) -> Result<(Recovered, Option<Snapshot>), String> {
        let mut rec = Recovered::default();
        for r in &self.written {
            match r {
                Record::Entry(e) => rec.replay_entry(e.clone())?,
                Record::HardState(hs) => rec.hard_state = hs.clone(),
                Record::Marker(m, discard) => rec.replay_marker(*m, *discard),
            }
        }
        let snapshot = match rec.snapshot {
            None => None,
            Some(m) => match self.snapshots.get(&m.index) {
                Some(s) if s.get_metadata().term == m.term => Some(s.clone()),
                _ => {
                    return Err(format!(
                        "the log names snapshot {}/{}, whose file is not on the disk",
                        m.index, m.term
                    ))
                }
            },
        };
        Ok((rec, snapshot))
    }

    /// Records written (the simulator's stand-in for the WAL's size in the node's status).
    pub fn records(&self) -> usize {
        self.written.len()
    }
}

/// A disk shared by the node's I/O and its snapshot files.
#[derive(Clone, Default)]
pub struct SharedDisk(Arc<Mutex<Disk>>);

impl SharedDisk {
    pub fn lock(&self) -> MutexGuard<'_, Disk> {
        // Single-threaded: a poisoned lock only means a check panicked; its state is whole.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SnapshotFiles for SharedDisk {
    fn save(&self, snap: &Snapshot) -> coordinate_raft::Result<()> {
        let index = snap.get_metadata().index;
        self.lock().snapshots.insert(index, snap.clone());
        Ok(())
    }

    fn load(&self, index: u64, term: u64) -> coordinate_raft::Result<Snapshot> {
        match self.lock().snapshots.get(&index) {
            Some(s) if s.get_metadata().term == term => Ok(s.clone()),
            _ => Err(Error::Internal(format!(
                "no snapshot file {index}/{term} on the simulated disk"
            ))),
        }
    }

    fn prune(&self, index: u64) -> coordinate_raft::Result<()> {
        self.lock().snapshots.retain(|&i, _| i >= index);
        Ok(())
    }
}
