//! What the raft node needs of the world, as one trait: sending messages to peers, making the
//! log durable, writing snapshot files in the background and marking the data dir removed.
//!
//! The node's own code — the `RawNode`, the pending-request tables, reads, membership,
//! snapshots — calls only this trait, never a socket, a thread or the disk directly, so it can
//! be driven without them: [`Wired`] is the production wiring (the peer transport, the log
//! writer thread, a snapshot thread, the data dir), and a deterministic simulator supplies
//! its own (a simulated network and disk it completes, delays or loses when it chooses).
//!
//! Completions come back as the node's ordinary inputs: the log writer's progress is read
//! with [`Io::persisted`] (the driver calls [`Node::advance`](super::Node::advance) after it
//! changes), a background snapshot save ends with [`Input::SnapshotSaved`].

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use raft::eraftpb::{Entry, HardState, Message, Snapshot};

use super::Input;
use crate::error::{Error, Result};
use crate::persist::LogWriter;
use crate::state_machine::StateMachine;
use crate::storage::snapshot::SnapshotFiles;
use crate::storage::wal::SnapshotMarker;
use crate::transport::Transport;

/// The node's side effects.
pub trait Io {
    /// Sends messages to peers; returns those that cannot be delivered (no such peer, or its
    /// queue is full), which the node reports unreachable.
    fn send(&mut self, msgs: Vec<Message>) -> Vec<Message>;

    /// The peers to keep links to (id → `host:port`), and the ids removed from the cluster
    /// (whose hellos are answered so they learn it).
    fn set_peers(&mut self, peers: HashMap<u64, String>, removed: Vec<u64>);

    /// Forgets the data-dir identity pinned for `id` (it was added back, with a new one).
    fn forget_identity(&mut self, id: u64);

    /// The scheme peers speak: `http` or `https`.
    fn scheme(&self) -> &'static str;

    /// Whether a link to peer `id` is up now.
    fn is_connected(&self, id: u64) -> bool;

    /// Queues a `Ready`'s entries and hard state; `messages` are sent once they are durable,
    /// and [`Io::persisted`] then reaches `number`.
    fn append(
        &mut self,
        number: u64,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        messages: Vec<Message>,
    ) -> Result<()>;

    /// Queues a snapshot marker (its file is already durable); `discard_log` when it replaces
    /// the whole log (a snapshot installed from the leader).
    fn mark_snapshot(&mut self, marker: SnapshotMarker, discard_log: bool) -> Result<()>;

    /// Queues compaction: the log below `index`, snapshot files older than `prune`; `freed`
    /// are the in-memory entries it covers, to be freed off the raft loop.
    fn compact(&mut self, index: u64, prune: u64, freed: VecDeque<Entry>) -> Result<()>;

    /// Returns once everything queued so far is durable.
    fn barrier(&mut self) -> Result<()>;

    /// The highest `Ready` number whose contents are durable.
    fn persisted(&self) -> u64;

    /// Why the log writer stopped, if it did (the node then stops: fail-stop).
    fn failure(&self) -> Option<Arc<Error>>;

    /// Bytes of log on disk.
    fn wal_bytes(&self) -> u64;

    /// Starts writing this node's own snapshot durably in the background; the node learns
    /// the outcome from an [`Input::SnapshotSaved`] carrying `snap`'s metadata and
    /// `compact_to`. An error means the write could not start (and no report will come).
    fn save_snapshot(&mut self, snap: Snapshot, compact_to: u64) -> Result<()>;

    /// Durably marks the data dir as a removed member's, so it never starts as one again.
    fn mark_removed(&mut self) -> Result<()>;
}

/// The production wiring: the peer transport, the log writer thread, snapshot files written
/// by a thread of their own, and the data directory.
pub struct Wired<S: StateMachine> {
    pub(super) transport: Transport<Input<S>>,
    pub(super) writer: LogWriter,
    pub(super) snaps: Arc<dyn SnapshotFiles>,
    /// The node's input queue (the loop in `Node::run` takes from it), and its sending side,
    /// where a snapshot thread reports.
    pub(super) rx: flume::Receiver<Input<S>>,
    pub(super) tx: flume::Sender<Input<S>>,
    pub(super) dir: PathBuf,
}

impl<S: StateMachine> Io for Wired<S> {
    fn send(&mut self, msgs: Vec<Message>) -> Vec<Message> {
        self.transport.send(msgs)
    }

    fn set_peers(&mut self, peers: HashMap<u64, String>, removed: Vec<u64>) {
        self.transport.set_peers(peers);
        self.transport.set_removed(removed);
    }

    fn forget_identity(&mut self, id: u64) {
        self.transport.forget_identity(id);
    }

    fn scheme(&self) -> &'static str {
        self.transport.scheme()
    }

    fn is_connected(&self, id: u64) -> bool {
        self.transport.is_connected(id)
    }

    fn append(
        &mut self,
        number: u64,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        messages: Vec<Message>,
    ) -> Result<()> {
        self.writer.append(number, entries, hard_state, messages)
    }

    fn mark_snapshot(&mut self, marker: SnapshotMarker, discard_log: bool) -> Result<()> {
        self.writer.snapshot(marker, discard_log)
    }

    fn compact(&mut self, index: u64, prune: u64, freed: VecDeque<Entry>) -> Result<()> {
        self.writer.compact(index, prune, freed)
    }

    /// Waits for the log writer thread, letting the runtime move the event loop's other
    /// tasks elsewhere meanwhile (rare: a snapshot install, a stop).
    fn barrier(&mut self) -> Result<()> {
        tokio::task::block_in_place(|| self.writer.barrier())
    }

    fn persisted(&self) -> u64 {
        self.writer.persisted()
    }

    fn failure(&self) -> Option<Arc<Error>> {
        self.writer.failure()
    }

    fn wal_bytes(&self) -> u64 {
        self.writer.wal_bytes()
    }

    fn save_snapshot(&mut self, mut snap: Snapshot, compact_to: u64) -> Result<()> {
        let snaps = self.snaps.clone();
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let result = snaps.save(&snap);
                // The node waits for this report before starting another snapshot.
                let _ = tx.send(Input::SnapshotSaved {
                    meta: snap.take_metadata(),
                    compact_to,
                    result,
                });
            })
            .map(drop)
            .map_err(|e| Error::io("starting a snapshot writer", e))
    }

    fn mark_removed(&mut self) -> Result<()> {
        let path = self.dir.join(crate::storage::REMOVED_FILE);
        tokio::task::block_in_place(|| {
            std::fs::write(
                &path,
                "this node was removed from the cluster; start a new node with an empty data \
                 directory\n",
            )
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            crate::storage::wal::sync_dir(&self.dir)
        })
    }
}
