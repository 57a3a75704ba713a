//! The node's [`Io`] in the simulator: what the node sends, queues to its log and asks to be
//! saved is collected here, and the simulator decides when (and whether) it happens.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use coordinate_raft::node::Io;
use coordinate_raft::storage::wal::SnapshotMarker;
use coordinate_raft::{Error, Result};
use raft::eraftpb::{Entry, HardState, Message, Snapshot};

use crate::disk::{Job, SharedDisk};

/// One node's simulated world.
pub struct SimIo {
    pub disk: SharedDisk,
    /// Messages the node sent, not yet handed to the network.
    pub outbox: Vec<Message>,
    /// Snapshots the node asked to save in the background, with their `compact_to`.
    pub saves: Vec<(Snapshot, u64)>,
    /// Peers whose links are up (the simulator updates it as partitions come and go).
    pub connected: BTreeSet<u64>,
}

impl SimIo {
    pub fn new(disk: SharedDisk) -> SimIo {
        SimIo {
            disk,
            outbox: Vec::new(),
            saves: Vec::new(),
            connected: BTreeSet::new(),
        }
    }

    fn queue(&mut self, job: Job) -> Result<()> {
        let mut disk = self.disk.lock();
        if let Some(e) = &disk.failure {
            return Err(Error::LogWriter(e.clone()));
        }
        disk.queue.push(job);
        Ok(())
    }
}

impl Io for SimIo {
    fn send(&mut self, msgs: Vec<Message>) -> Vec<Message> {
        self.outbox.extend(msgs);
        Vec::new()
    }

    fn set_peers(&mut self, _peers: HashMap<u64, String>, _removed: Vec<u64>) {}

    fn forget_identity(&mut self, _id: u64) {}

    fn scheme(&self) -> &'static str {
        "http"
    }

    fn is_connected(&self, id: u64) -> bool {
        self.connected.contains(&id)
    }

    fn append(
        &mut self,
        number: u64,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        messages: Vec<Message>,
    ) -> Result<()> {
        self.queue(Job::Append {
            number,
            entries,
            hard_state,
            messages,
        })
    }

    fn mark_snapshot(&mut self, marker: SnapshotMarker, discard_log: bool) -> Result<()> {
        self.queue(Job::Marker(marker, discard_log))
    }

    fn compact(&mut self, _index: u64, prune: u64, _freed: VecDeque<Entry>) -> Result<()> {
        self.queue(Job::Compact { prune })
    }

    /// Everything queued is written and fsynced now (a barrier's fsync never fails here:
    /// the writer's own batches are where fsync failures are injected).
    fn barrier(&mut self) -> Result<()> {
        let messages = self
            .disk
            .lock()
            .write_batch(true, false)
            .map_err(Error::LogWriter)?;
        self.outbox.extend(messages);
        Ok(())
    }

    fn persisted(&self) -> u64 {
        self.disk.lock().persisted
    }

    fn failure(&self) -> Option<Arc<Error>> {
        self.disk.lock().failure.clone()
    }

    fn wal_bytes(&self) -> u64 {
        self.disk.lock().records() as u64
    }

    fn save_snapshot(&mut self, snap: Snapshot, compact_to: u64) -> Result<()> {
        self.saves.push((snap, compact_to));
        Ok(())
    }

    fn mark_removed(&mut self) -> Result<()> {
        self.disk.lock().removed = true;
        Ok(())
    }
}
