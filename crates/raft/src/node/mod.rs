//! The raft node: one task owns the `RawNode`, its storage and the state machine, and runs
//! the Ready loop. Everything else talks to it through one bounded channel of [`Input`]s and
//! gets answers on oneshot channels.
//!
//! # The loop
//! 1. Wait for input or the next tick, yield once so that every request handler that is ready
//!    queues its request too, then drain everything queued (group commit: all proposals that
//!    arrived meanwhile go into one raft append).
//! 2. Proposals become one `MsgPropose` with many entries. Each entry's context carries
//!    `(node id, incarnation, sequence)` so that when the entry is applied — on whichever node
//!    proposed it — the waiting request is answered, and an entry replayed from an earlier run
//!    of this node can never answer a new request.
//! 3. Reads that arrived together share one ReadIndex round. When the read state comes back
//!    they wait until `applied >= read index`, then are served from the state machine.
//! 4. One `Ready`: send the leader's messages, install a snapshot if any, apply committed
//!    entries, append entries and hard state to the WAL with **one fsync**, and only then send
//!    the messages that must follow persistence (votes, append acks).
//! 5. Every `snapshot_count` applied entries, or once the log since the last snapshot holds
//!    more than `snapshot_bytes` (or the state's size, if larger), snapshot the state machine
//!    and compact the log. A snapshot file that cannot be written is retried with backoff.
//!
//! Requests whose reply can no longer arrive (a proposal lost in a leader change, a read index
//! never answered) are swept periodically; their callers time out with "outcome unknown".
//!
//! Read batching lives in [`reads`], membership changes in [`membership`], what is measured
//! of the peers for `/metrics` in [`telemetry`]. What the node
//! accepts from peers is decided in [`guard`] (pure rules) and [`inbound`] (the checks that need
//! the state machine: received snapshots, forwarded proposals) before raft-rs sees a message.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfState, Entry, EntryType, Message, MessageType, SnapshotMetadata,
};
use raft::{RawNode, SnapshotStatus, StateRole, Storage as _};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::handle::{Declined, Reply};
use crate::metrics::METRICS;
use crate::persist::{LogEvent, LogWriter};
use crate::state_machine::StateMachine;
use crate::storage::RaftStorage;
use crate::transport::{Transport, TransportEvent};

#[cfg(test)]
mod cluster_tests;
pub mod guard;
mod inbound;
mod io;
mod membership;
mod reads;
mod telemetry;

pub use io::{Io, Wired};
pub use membership::{MemberChange, MemberInfo, LEARNER_CATCH_UP_SLACK};
use reads::{PendingRead, ReadBatch};

/// How often raft ticks.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks without a heartbeat before a follower campaigns.
pub const ELECTION_TICKS: usize = 10;
/// Ticks between leader heartbeats.
pub const HEARTBEAT_TICKS: usize = 1;
/// A read-index round not answered after this many ticks is sent again.
const READ_RETRY_TICKS: u32 = 3;
/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Shutdown,
    /// This node applied its own removal from the cluster.
    Removed,
}

/// Everything the raft loop can be asked to do, or be told.
pub enum Input<S: StateMachine> {
    /// Replicate and apply a state-machine command.
    Propose {
        data: Bytes,
        reply: Reply<S::Output>,
    },
    /// Read: linearizably (ReadIndex, then wait for apply) or from local state.
    Read {
        query: S::Query,
        linearizable: bool,
        reply: oneshot::Sender<S::Read>,
    },
    /// What the peer transport received or failed to send.
    Transport(TransportEvent),
    /// What the log writer made durable, or that it failed.
    Log(LogEvent),
    /// Change the membership; answered once the change is applied here.
    ChangeMembers {
        change: MemberChange,
        reply: Reply<()>,
    },
    /// List the members.
    Members(oneshot::Sender<Vec<MemberInfo>>),
    /// Report the node's status.
    Status(oneshot::Sender<NodeStatus<S::Status>>),
    /// Start moving leadership to voter `to` (this node must lead); answered once started.
    TransferLeader {
        to: u64,
        reply: oneshot::Sender<std::result::Result<(), crate::handle::Rejection>>,
    },
    /// A copy of the state machine's snapshot data as of now (taken with the next snapshot,
    /// which is also saved as usual); refused while this node has applied nothing.
    Backup(BackupReply),
    /// A snapshot of this node's state, written in the background, is durable (or failed).
    SnapshotSaved {
        meta: SnapshotMetadata,
        compact_to: u64,
        result: Result<()>,
    },
    /// Sync and stop the loop.
    Shutdown,
}

impl<S: StateMachine> From<TransportEvent> for Input<S> {
    fn from(e: TransportEvent) -> Self {
        Input::Transport(e)
    }
}

impl<S: StateMachine> From<LogEvent> for Input<S> {
    fn from(e: LogEvent) -> Self {
        Input::Log(e)
    }
}

/// A point-in-time view of the node, for `/v1/status`; `state` is what the state machine
/// reports, flattened into the same object.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeStatus<T> {
    pub id: u64,
    pub role: &'static str,
    pub leader: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub first_index: u64,
    pub last_index: u64,
    #[serde(flatten)]
    pub state: T,
    pub wal_bytes: u64,
    pub voters: Vec<u64>,
    pub members: Vec<MemberInfo>,
}

/// Default of `--snapshot-bytes`: log bytes since the last snapshot that trigger a new one.
pub const DEFAULT_SNAPSHOT_BYTES: u64 = 64 << 20;
/// At most this many entries are kept behind a snapshot for lagging peers.
pub const MAX_CATCH_UP_ENTRIES: u64 = 5_000;
/// The catch-up log kept behind a snapshot is at most this share of `snapshot_bytes` (16 MiB
/// at the default), so the log held in memory stays within about 1.25 times the snapshot
/// threshold.
pub const CATCH_UP_SHARE_OF_SNAPSHOT_BYTES: u64 = 4;
/// The first retry of a snapshot whose file could not be written, doubling up to
/// [`SNAPSHOT_RETRY_MAX`].
const SNAPSHOT_RETRY_FIRST: Duration = Duration::from_secs(1);
const SNAPSHOT_RETRY_MAX: Duration = Duration::from_secs(60);

/// Settings of the node loop.
pub struct NodeConfig {
    pub id: u64,
    pub snapshot_count: u64,
    /// Log bytes since the last snapshot that trigger a new one (or the state machine's size,
    /// if larger: a snapshot writes the whole state, so taking one per `snapshot_bytes` of log
    /// keeps its cost at most about one byte written per byte logged).
    pub snapshot_bytes: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging peers catch up by log.
    pub catch_up_entries: u64,
    /// Bytes of log kept behind a snapshot at most (bounds `catch_up_entries` by size).
    pub catch_up_bytes: u64,
    /// Requests older than this are abandoned (their callers have timed out).
    pub request_timeout: Duration,
    /// The `--cluster` ids: the only peers heard while this node has no membership yet.
    pub cluster_ids: Vec<u64>,
    /// The election timeout is drawn from these ticks, `[min, max)`, at every reset:
    /// [`ELECTION_TIMEOUT_TICKS`] in production. (raft-rs draws from the thread's random
    /// generator; a simulator that must replay a run exactly gives each node a range of one.)
    pub election_ticks: (usize, usize),
}

/// The production election timeout range, in ticks: raft-rs's default, one to two election
/// timeouts.
pub const ELECTION_TIMEOUT_TICKS: (usize, usize) = (ELECTION_TICKS, 2 * ELECTION_TICKS);

/// A proposal waiting to be applied: a command, or a membership change.
enum Pending<S: StateMachine> {
    Command(Reply<S::Output>),
    Membership(Reply<()>),
}

impl<S: StateMachine> Pending<S> {
    fn decline(self, why: Declined) {
        match self {
            Pending::Command(reply) => {
                let _ = reply.send(Err(why));
            }
            Pending::Membership(reply) => {
                let _ = reply.send(Err(why));
            }
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Pending::Command(reply) => reply.is_closed(),
            Pending::Membership(reply) => reply.is_closed(),
        }
    }
}

/// What recovery hands the node: durable raft state, the state machine rebuilt from the
/// newest snapshot, and the index that snapshot covers.
pub struct Recovered<S> {
    pub storage: RaftStorage,
    pub state: S,
    pub applied: u64,
}

/// The node's connections to the rest of the process.
pub struct NodeIo<S: StateMachine> {
    /// Sends raft messages to peers.
    pub transport: Transport<Input<S>>,
    /// Makes entries and hard state durable.
    pub writer: LogWriter,
    /// The node's input queue.
    pub rx: flume::Receiver<Input<S>>,
    /// The same queue's sending side, for the node's own background work (snapshot saves).
    pub tx: flume::Sender<Input<S>>,
    /// Where the term and leader are published for the handles.
    pub published: Arc<crate::handle::Published>,
    /// The data directory (where a removed member's tombstone goes).
    pub data_dir: std::path::PathBuf,
}

/// Where a backup's data goes: what [`StateMachine::snapshot_step`] returned, at an applied
/// index after the request.
pub type BackupReply = oneshot::Sender<std::result::Result<Bytes, crate::handle::Rejection>>;

/// Where this node's own snapshot is: at most one is taken at a time.
enum SnapshotStage {
    Idle,
    /// The state machine is being serialized, a slice per loop iteration; `snap` holds the
    /// metadata (index, term, membership) it is taken at.
    Serializing {
        snap: Box<raft::eraftpb::Snapshot>,
        compact_to: u64,
    },
    /// A thread is writing the file; `Input::SnapshotSaved` reports the end.
    Saving,
}

/// Keys serialized per loop iteration while a snapshot is taken: about half a millisecond
/// (2,048 keys took 4 ms a step, and five such steps in a row were a wrk PUT's p99).
const SNAPSHOT_STEP: usize = 256;

/// The raft node. `I` is how it reaches the world: [`Wired`] in production, a simulator's
/// network and disk in tests (see [`io`]).
pub struct Node<S: StateMachine, I: Io = Wired<S>> {
    cfg: NodeConfig,
    raw: RawNode<RaftStorage>,
    sm: S,
    conf_state: ConfState,
    io: I,
    /// The highest `Ready` number reported persisted to raft-rs.
    persisted: u64,
    /// The highest `Ready` number handed to the log writer.
    queued: u64,
    /// Where this node's own snapshot is (at most one at a time).
    snapshot_stage: SnapshotStage,
    /// Set while snapshot writes fail: when to try again.
    snapshot_retry: Option<SnapshotBackoff>,
    /// Backups asked for after the snapshot being taken began: they get the next one.
    backups_waiting: Vec<BackupReply>,
    /// Backups that get the snapshot being serialized.
    backups_taking: Vec<BackupReply>,
    incarnation: u64,
    next_seq: u64,
    proposals: HashMap<u64, Pending<S>>,
    queued_proposals: Vec<Entry>,
    queued_reads: Vec<PendingRead<S>>,
    read_batches: BTreeMap<u64, ReadBatch<S>>,
    next_read_ctx: u64,
    applied: u64,
    leader: u64,
    role: StateRole,
    ticks: u64,
    /// The tick at which this node applied its own removal (cleared if it is added back).
    removed_at: Option<u64>,
    /// Members that answered this node's hello saying they applied its removal (a node that
    /// missed its own removal learns it this way).
    removed_by: BTreeSet<u64>,
    /// The term and leader, for the handles.
    published: Arc<crate::handle::Published>,
    /// A received snapshot, parsed before it was stepped, for `handle_ready` to install.
    verified_snapshot: Option<inbound::VerifiedSnapshot<S>>,
    /// Rate limit of the log lines about refused peer messages.
    refusals: guard::RefusalLog,
    /// The newest forwarded proposal stepped from each peer (a copy is never stepped).
    forwarded_seen: guard::ForwardedSeen,
    /// When the snapshot being taken began, for its duration metric.
    snapshot_started: Option<Instant>,
    /// Heartbeat round trips and peer reachability, for `/metrics`.
    telemetry: telemetry::PeerTelemetry,
}

impl<S: StateMachine> Node<S> {
    /// Builds the node over recovered storage and state machine, wired to the process's
    /// transport, log writer and data directory.
    pub fn new(
        cfg: NodeConfig,
        recovered: Recovered<S>,
        io: NodeIo<S>,
        logger: &slog::Logger,
    ) -> Result<Node<S>> {
        let NodeIo {
            transport,
            writer,
            rx,
            tx,
            published,
            data_dir,
        } = io;
        let wired = Wired {
            transport,
            writer,
            snaps: recovered.storage.snapshot_store(),
            rx,
            tx,
            dir: data_dir,
        };
        // Distinguishes this run's proposals from an earlier run's replayed entries.
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Node::with_io(cfg, recovered, wired, published, incarnation, logger)
    }

    /// Runs the loop until `Input::Shutdown` or this node's removal, then makes everything
    /// durable.
    ///
    /// The loop is a task on the node's event loop, beside the HTTP handlers and peer readers
    /// that feed it, so handing it a request is a task wake-up on the same thread, not a
    /// thread wake-up. It never waits for the disk (the log writer thread does); the rare
    /// steps that must — installing a leader's snapshot, stopping — run in `block_in_place`.
    pub async fn run(mut self) -> Result<Exit> {
        self.start();
        let mut next_tick = Instant::now() + TICK;
        let rx = self.io.rx.clone();
        loop {
            let mut stop = false;
            if let Some(input) = next_input(&rx, self.sm.is_snapshotting(), next_tick).await {
                stop |= self.handle(input)?;
                // Drain what is already queued, bounded so ticks are never starved.
                for _ in 0..8192 {
                    match rx.try_recv() {
                        Ok(input) => stop |= self.handle(input)?,
                        Err(_) => break,
                    }
                }
            }
            if Instant::now() >= next_tick {
                next_tick += TICK;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + TICK;
                }
                self.tick();
            }
            if let Some(exit) = self.advance()? {
                return Ok(exit);
            }
            if stop {
                break;
            }
        }
        self.stop()?;
        Ok(Exit::Shutdown)
    }
}

impl<S: StateMachine, I: Io> Node<S, I> {
    /// Builds the node over recovered storage and state machine, reaching the world through
    /// `io`; `incarnation` must differ from every earlier run's of this node (it tells this
    /// run's proposals from replayed ones).
    pub fn with_io(
        cfg: NodeConfig,
        recovered: Recovered<S>,
        io: I,
        published: Arc<crate::handle::Published>,
        incarnation: u64,
        logger: &slog::Logger,
    ) -> Result<Node<S, I>> {
        let Recovered {
            storage,
            state: sm,
            applied,
        } = recovered;
        let conf_state = storage.initial_state()?.conf_state;
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: ELECTION_TICKS,
            min_election_tick: cfg.election_ticks.0,
            max_election_tick: cfg.election_ticks.1,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let mut raw = RawNode::new(&raft_cfg, storage, logger)?;
        // A lone voter need not wait out an election timeout to lead.
        if raw.raft.prs().conf().voters().ids().len() == 1
            && raw.raft.prs().conf().voters().contains(cfg.id)
        {
            raw.campaign()?;
        }
        Ok(Node {
            cfg,
            raw,
            sm,
            conf_state,
            io,
            persisted: 0,
            queued: 0,
            snapshot_stage: SnapshotStage::Idle,
            snapshot_retry: None,
            backups_waiting: Vec::new(),
            backups_taking: Vec::new(),
            incarnation,
            next_seq: 1,
            proposals: HashMap::new(),
            queued_proposals: Vec::new(),
            queued_reads: Vec::new(),
            read_batches: BTreeMap::new(),
            next_read_ctx: 1,
            applied,
            leader: 0,
            role: StateRole::Follower,
            ticks: 0,
            removed_at: None,
            removed_by: BTreeSet::new(),
            published,
            verified_snapshot: None,
            refusals: guard::RefusalLog::default(),
            forwarded_seen: guard::ForwardedSeen::default(),
            snapshot_started: None,
            telemetry: telemetry::PeerTelemetry::default(),
        })
    }

    /// Points the peer links at the member list; a driver calls this once, before the first
    /// input.
    pub fn start(&mut self) {
        self.sync_peers();
    }

    /// One raft tick ([`TICK`] of time): elections, heartbeats, read retries.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.on_tick();
    }

    /// Does everything the inputs handled and the log's progress since the last call made
    /// possible: proposals and reads go to raft, one `Ready` is sent, applied and queued to
    /// the log, a snapshot step is taken. Returns the exit once this node's removal stands
    /// (everything is then durable and the data dir marked); an error stops the node.
    pub fn advance(&mut self) -> Result<Option<Exit>> {
        self.on_persisted()?;
        self.flush_proposals();
        self.flush_reads();
        self.handle_ready()?;
        self.published.set(self.raw.raft.term, self.leader);
        self.maybe_snapshot()?;
        if self.removal_is_final() || self.told_removed() {
            self.io.barrier()?;
            self.io.mark_removed()?;
            tracing::warn!(
                id = self.cfg.id,
                "this node was removed from the cluster; shutting down"
            );
            return Ok(Some(Exit::Removed));
        }
        Ok(None)
    }

    /// Makes everything queued durable, for a clean stop.
    pub fn stop(&mut self) -> Result<()> {
        self.io.barrier()?;
        tracing::info!(
            applied = self.applied,
            "raft loop stopped; state is durable"
        );
        Ok(())
    }

    /// The raft-rs node, read-only: for a simulator's safety checks.
    pub fn raw(&self) -> &RawNode<RaftStorage> {
        &self.raw
    }

    /// The state machine, read-only.
    pub fn state_machine(&self) -> &S {
        &self.sm
    }

    /// The world this node reaches, for a simulator to complete what it queued.
    pub fn io_mut(&mut self) -> &mut I {
        &mut self.io
    }

    /// True once this node's removal stands: it applied it an election timeout ago, has applied
    /// everything it knows is committed, and was not added back meanwhile. (A node added back
    /// under the same id with an empty data dir replays its old removal first, and its
    /// re-addition moments later: the leader keeps feeding a member, never a removed node.)
    fn removal_is_final(&self) -> bool {
        self.removed_at.is_some_and(|at| {
            self.ticks >= at + ELECTION_TICKS as u64
                && self.applied >= self.raw.raft.raft_log.committed
        })
    }

    /// True once most of the other voters this node knows told it they applied its removal,
    /// while it hears from no leader: it was removed while it could not hear of it, and no one
    /// will send it the entry. (A majority, so one forged answer — without peer TLS — cannot
    /// stop a member; no leader, so answers from members that have not yet applied its
    /// re-addition cannot stop a node that was added back.)
    fn told_removed(&self) -> bool {
        if self.raw.raft.leader_id != raft::INVALID_ID {
            return false;
        }
        let others: Vec<u64> = self
            .conf_state
            .voters
            .iter()
            .copied()
            .filter(|&v| v != self.cfg.id)
            .collect();
        let told = others
            .iter()
            .filter(|v| self.removed_by.contains(v))
            .count();
        !others.is_empty() && told > others.len() / 2
    }

    /// Handles one input; returns true on shutdown.
    pub fn handle(&mut self, input: Input<S>) -> Result<bool> {
        match input {
            Input::Propose { data, reply } => {
                if self.leader == 0 && self.raw.raft.leader_id == raft::INVALID_ID {
                    METRICS.proposals_failed.inc();
                    let _ = reply.send(Err(Declined::NoLeader));
                    return Ok(false);
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.queued_proposals.push(Entry {
                    data,
                    context: self.proposal_context(seq),
                    ..Default::default()
                });
                self.proposals.insert(seq, Pending::Command(reply));
            }
            Input::Read {
                query,
                linearizable,
                reply,
            } => {
                if linearizable {
                    self.queued_reads.push((query, reply));
                } else {
                    let _ = reply.send(self.sm.query(&query));
                }
            }
            Input::Transport(event) => self.on_transport_event(event),
            Input::ChangeMembers { change, reply } => self.change_members(change, reply),
            Input::Members(reply) => {
                let _ = reply.send(self.members());
            }
            Input::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Input::TransferLeader { to, reply } => {
                let _ = reply.send(self.transfer_leader(to));
            }
            // A node that has applied nothing (`--join`, not added yet) has no state to copy.
            Input::Backup(reply) if self.applied == 0 => {
                let _ = reply.send(Err(crate::handle::Rejection::Misdirected(
                    "this node holds no state yet (it waits to be added to a cluster); ask a member"
                        .into(),
                )));
            }
            Input::Backup(reply) => self.backups_waiting.push(reply),
            // The writer's state is looked at on every turn of the loop; this only wakes it.
            Input::Log(LogEvent::Persisted | LogEvent::Failed) => {}
            Input::SnapshotSaved {
                meta,
                compact_to,
                result,
            } => self.on_snapshot_saved(meta, compact_to, result)?,
            Input::Shutdown => return Ok(true),
        }
        Ok(false)
    }

    /// Starts a leadership transfer to voter `to`, if this node leads.
    fn transfer_leader(&mut self, to: u64) -> std::result::Result<(), crate::handle::Rejection> {
        use crate::handle::Rejection;
        if self.role != StateRole::Leader {
            return Err(Rejection::Misdirected("this node is not the leader".into()));
        }
        if to == self.cfg.id || !self.conf_state.voters.contains(&to) {
            return Err(Rejection::Invalid(format!(
                "node {to} is not a voter other than the leader"
            )));
        }
        tracing::info!(to, "moving leadership, as asked");
        self.raw.transfer_leader(to);
        Ok(())
    }

    fn on_transport_event(&mut self, event: TransportEvent) {
        match event {
            // The budget share is released once the message has been stepped.
            TransportEvent::Message(m, _share) => self.on_peer_message(*m),
            TransportEvent::Unreachable(peer) => self.raw.report_unreachable(peer),
            TransportEvent::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            // A node that hears from a leader is a member, whatever a lagging peer says (one
            // that has not applied this node's re-addition yet, say).
            TransportEvent::RemovedBy { member, to }
                if to == self.cfg.id && self.raw.raft.leader_id == raft::INVALID_ID =>
            {
                if self.removed_by.insert(member) {
                    tracing::warn!(
                        member,
                        "member says it applied this node's removal from the cluster"
                    );
                }
            }
            TransportEvent::RemovedBy { .. } => {}
        }
    }

    fn proposal_context(&self, seq: u64) -> Bytes {
        let mut ctx = Vec::with_capacity(24);
        ctx.extend_from_slice(&self.cfg.id.to_le_bytes());
        ctx.extend_from_slice(&self.incarnation.to_le_bytes());
        ctx.extend_from_slice(&seq.to_le_bytes());
        ctx.into()
    }

    /// The sequence number of an entry proposed by this incarnation of this node.
    fn own_proposal(&self, ctx: &[u8]) -> Option<u64> {
        guard::proposal_origin(ctx)
            .filter(|o| o.node == self.cfg.id && o.incarnation == self.incarnation)
            .map(|o| o.seq)
    }

    /// Hands every queued proposal to raft as one message.
    fn flush_proposals(&mut self) {
        if self.queued_proposals.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.queued_proposals);
        METRICS.proposals.inc_by(entries.len() as u64);
        let seqs: Vec<u64> = entries
            .iter()
            .filter_map(|e| self.own_proposal(&e.context))
            .collect();
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.cfg.id;
        m.set_entries(entries.into());
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(error = %e, count = seqs.len(), "proposals dropped");
            METRICS.proposals_failed.inc_by(seqs.len() as u64);
            let internal = match e {
                raft::Error::ProposalDropped => None,
                other => Some(Arc::new(Error::Raft(other))),
            };
            for seq in seqs {
                if let Some(pending) = self.proposals.remove(&seq) {
                    pending.decline(match &internal {
                        None => Declined::NoLeader,
                        Some(e) => Declined::Internal(e.clone()),
                    });
                }
            }
        }
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        if self.raw.raft.leader_id != raft::INVALID_ID && !self.removed_by.is_empty() {
            // Heard from a leader since: those answers were stale.
            self.removed_by.clear();
        }
        let timeout_ticks = (self.cfg.request_timeout.as_millis() / TICK.as_millis()).max(1) as u32;
        // Re-send read-index rounds that got no answer (no leader yet, or a new leader that
        // has not committed in its term drops them); give up on those nobody waits for.
        let mut retry = Vec::new();
        self.read_batches.retain(|&ctx, b| {
            b.age_ticks += 1;
            b.requests.retain(|(_, reply)| !reply.is_closed());
            if b.requests.is_empty() || b.age_ticks > timeout_ticks {
                return false;
            }
            if b.index.is_none() {
                b.issued_ticks += 1;
                if b.issued_ticks >= READ_RETRY_TICKS {
                    b.issued_ticks = 0;
                    retry.push(ctx);
                }
            }
            true
        });
        for ctx in retry {
            self.raw.read_index(self.read_context(ctx));
        }
        if self.ticks.is_multiple_of(10) {
            self.proposals.retain(|_, pending| !pending.is_closed());
            self.publish_reachable();
        }
    }

    fn send(&mut self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        if self.role == StateRole::Leader {
            let now = Instant::now();
            for m in msgs.iter() {
                if m.get_msg_type() == MessageType::MsgHeartbeat {
                    self.telemetry.heartbeat_sent(m.to, now);
                }
            }
        }
        for m in self.io.send(msgs) {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.raw.report_snapshot(m.to, SnapshotStatus::Failure);
            }
            self.raw.report_unreachable(m.to);
        }
    }

    fn handle_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
        }
        // The leader may send appends before its own fsync: raft counts its own copy toward a
        // quorum only once the log writer reports it persisted.
        self.send(rd.take_messages());

        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            let index = snap.get_metadata().index;
            // Parsed before anything is durable: a snapshot is stepped only once its data
            // restored (`inbound`), so this parse is a fallback that cannot fail on a stepped
            // one, and if it ever did, nothing of it would have been written.
            let state = match self.verified_snapshot.take() {
                Some(v) if v.is_of(&snap) => v.state,
                _ => tokio::task::block_in_place(|| self.sm.parse_snapshot(snap.data.clone()))
                    .map_err(|e| Error::Snapshot(Box::new(e)))?,
            };
            // The file is durable before the marker that names it is queued.
            let marker =
                tokio::task::block_in_place(|| self.raw.mut_store().install_snapshot(&snap))?;
            self.io.mark_snapshot(marker, true)?;
            self.sm.install(state);
            // A snapshot of the replaced state machine being serialized is moot (its backups
            // get the next one).
            if matches!(self.snapshot_stage, SnapshotStage::Serializing { .. }) {
                self.snapshot_stage = SnapshotStage::Idle;
                self.snapshot_started = None;
                self.backups_waiting.append(&mut self.backups_taking);
            }
            self.conf_state = snap.get_metadata().get_conf_state().clone();
            self.applied = index;
            self.sync_peers();
            METRICS.snapshots_installed.inc();
            tracing::info!(index, "installed snapshot from leader");
        }

        // Only entries this node has persisted are ever handed out as committed.
        self.apply(rd.take_committed_entries())?;

        // raft-rs reads new entries back from storage: they go into the in-memory log now, and
        // to the log writer, which persists them, then sends the messages that must follow
        // persistence (votes, append acknowledgements) and reports the Ready number back.
        let installed = (!rd.snapshot().is_empty()).then(|| rd.snapshot().get_metadata().index);
        let has_snapshot = installed.is_some();
        let store = self.raw.mut_store();
        store.append(rd.entries())?;
        let hard_state = match rd.hs() {
            Some(hs) => {
                store.set_hard_state(hs);
                Some(hs.clone())
            }
            // The snapshot raised the commit index, maybe the term.
            None if has_snapshot => Some(store.hard_state().clone()),
            None => None,
        };
        let number = rd.number();
        // A Ready with nothing to make durable, after every earlier one is: persisted as it
        // is, without a round trip through the log writer's thread (two cross-thread wake-ups,
        // for every heartbeat round of a read-only load). Its messages may go now: every
        // message of an earlier Ready has gone (the writer sends them before it reports).
        let nothing_to_write = rd.entries().is_empty() && hard_state.is_none() && !has_snapshot;
        let durable_now = nothing_to_write && self.io.persisted() >= self.queued;
        if durable_now {
            self.send(rd.take_persisted_messages());
        } else {
            self.io.append(
                number,
                rd.take_entries(),
                hard_state,
                rd.take_persisted_messages(),
            )?;
            self.queued = number;
        }
        self.on_read_states(rd.take_read_states());
        self.raw.advance_append_async(rd);
        if durable_now {
            self.raw.on_persist_ready(number);
            self.persisted = number;
        }
        if let Some(index) = installed {
            // raft-rs counts a snapshot as applied only once it is persisted; installs are
            // rare, so wait for it here.
            self.io.barrier()?;
            self.on_persisted()?;
            // Its marker is durable: the WAL segments and the snapshot files it replaces go,
            // as after a snapshot of this node's own.
            self.io.compact(index + 1, index, VecDeque::new())?;
        }
        self.raw.advance_apply_to(self.applied);
        METRICS
            .commit_index
            .set(self.raw.raft.raft_log.committed as i64);
        METRICS.term.set(self.raw.raft.term as i64);
        Ok(())
    }

    /// Tells raft-rs what the log writer has made durable since the last call.
    fn on_persisted(&mut self) -> Result<()> {
        let persisted = self.io.persisted();
        if persisted > self.persisted {
            self.raw.on_persist_ready(persisted);
            self.persisted = persisted;
        }
        match self.io.failure() {
            Some(e) => Err(Error::LogWriter(e)),
            None => Ok(()),
        }
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        if leader != self.leader {
            if leader == 0 {
                tracing::info!(term = self.raw.raft.term, "leader lost");
            } else {
                tracing::info!(leader, term = self.raw.raft.term, "leader elected");
            }
            self.leader = leader;
            METRICS.leader_changes.inc();
            METRICS.has_leader.set(i64::from(leader != 0));
            // Read rounds of the old term may never be answered: ask again.
            for b in self.read_batches.values_mut() {
                if b.index.is_none() {
                    b.issued_ticks = READ_RETRY_TICKS;
                }
            }
        }
        if role != self.role {
            tracing::debug!(?role, "role changed");
            self.role = role;
            METRICS.is_leader.set(i64::from(role == StateRole::Leader));
            self.telemetry.role_changed();
        }
    }

    /// Applies committed entries in log order and answers the requests this node proposed;
    /// then tells the state machine the batch is done and serves the reads now possible.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            match e.get_entry_type() {
                // An empty entry is the one a new leader appends to commit its term.
                EntryType::EntryNormal if e.data.is_empty() => {}
                EntryType::EntryNormal => {
                    let output = self.sm.apply(e.index, &e.data);
                    match self.take_pending(&e.context) {
                        Some(Pending::Command(reply)) => {
                            let _ = reply.send(Ok(output));
                        }
                        // A membership change and a command never share a context.
                        Some(Pending::Membership(reply)) => {
                            let _ = reply.send(Err(Declined::Internal(Arc::new(Error::Internal(
                                format!("entry {} is not a membership change", e.index),
                            )))));
                        }
                        None => {}
                    }
                }
                EntryType::EntryConfChange => self.apply_conf_change_entry(&e),
                EntryType::EntryConfChangeV2 => {
                    // Never proposed by this version; skipped identically on every node.
                    tracing::warn!(
                        index = e.index,
                        "ignoring an unsupported joint-consensus change"
                    );
                }
            }
            self.applied = e.index;
        }
        self.sm.applied(self.applied);
        METRICS.applied_index.set(self.applied as i64);
        self.serve_reads();
        Ok(())
    }

    /// The request waiting for the entry with this context, if this node proposed it.
    fn take_pending(&mut self, context: &[u8]) -> Option<Pending<S>> {
        self.own_proposal(context)
            .and_then(|seq| self.proposals.remove(&seq))
    }

    /// Applies a membership change entry and answers its proposer.
    fn apply_conf_change_entry(&mut self, e: &Entry) {
        let result = ConfChange::parse_from_bytes(&e.data)
            .map_err(|err| {
                Declined::Internal(Arc::new(Error::Internal(format!(
                    "membership change at {} does not decode: {err}",
                    e.index
                ))))
            })
            .and_then(|cc| self.apply_conf_change(&cc));
        if let Err(err) = &result {
            tracing::warn!(index = e.index, error = %err, "membership change not applied");
        }
        match self.take_pending(&e.context) {
            Some(Pending::Membership(reply)) => {
                let _ = reply.send(result);
            }
            Some(Pending::Command(reply)) => {
                let _ = reply.send(Err(Declined::Internal(Arc::new(Error::Internal(format!(
                    "entry {} is a membership change, not a command",
                    e.index
                ))))));
            }
            None => {}
        }
    }

    /// Takes a snapshot of the state machine once [`snapshot_due`] says so (or raft needs a
    /// fresh one for a peer), in two stages that never stall the loop for long: the state as
    /// of the applied index is serialized [`SNAPSHOT_STEP`] keys per loop iteration (the loop
    /// does not sleep meanwhile, and handles inputs between steps; writes applied meanwhile do
    /// not change what is captured, see [`StateMachine::begin_snapshot`]); then a thread of its own
    /// writes and fsyncs the file, and [`Node::on_snapshot_saved`] finishes the job. After a
    /// failed write nothing starts before the backoff has passed, unless a backup is asked
    /// for: backups get the serialized data, whether or not its file is then written.
    fn maybe_snapshot(&mut self) -> Result<()> {
        match self.snapshot_stage {
            SnapshotStage::Saving => return Ok(()),
            SnapshotStage::Serializing { .. } => {}
            SnapshotStage::Idle => {
                let backup = !self.backups_waiting.is_empty();
                if !backup
                    && self
                        .snapshot_retry
                        .as_ref()
                        .is_some_and(|b| self.ticks < b.retry_at_tick)
                {
                    return Ok(());
                }
                let store = self.raw.store();
                let snap_index = store.snapshot_index();
                let wanted = backup || (store.take_snapshot_request() && self.applied > snap_index);
                let due = snapshot_due(
                    &self.cfg,
                    self.applied.saturating_sub(snap_index),
                    store.bytes_between(snap_index, self.applied),
                    self.sm.data_bytes(),
                );
                if !wanted && !due {
                    return Ok(());
                }
                let index = self.applied;
                let snap = store.snapshot_at(index, self.conf_state.clone(), Bytes::new())?;
                let compact_to =
                    store.catch_up_start(index, self.cfg.catch_up_entries, self.cfg.catch_up_bytes);
                self.sm.begin_snapshot();
                self.snapshot_started = Some(Instant::now());
                self.backups_taking = std::mem::take(&mut self.backups_waiting);
                self.snapshot_stage = SnapshotStage::Serializing {
                    snap: Box::new(snap),
                    compact_to,
                };
            }
        }
        let Some(data) = self.sm.snapshot_step(SNAPSHOT_STEP) else {
            return Ok(());
        };
        let SnapshotStage::Serializing {
            mut snap,
            compact_to,
        } = std::mem::replace(&mut self.snapshot_stage, SnapshotStage::Saving)
        else {
            return Ok(());
        };
        snap.data = data;
        let meta = snap.get_metadata().clone();
        for reply in self.backups_taking.drain(..) {
            let _ = reply.send(Ok(snap.data.clone()));
        }
        if let Err(e) = self.io.save_snapshot(*snap, compact_to) {
            // As if the write had failed (e.g. no threads left): retried later.
            self.on_snapshot_saved(meta, compact_to, Err(e))?;
        }
        Ok(())
    }

    /// A snapshot file is durable: serve it to peers, drop the log it covers from memory, and
    /// queue its WAL marker and the compaction of older segments and files (which happens only
    /// once the marker is durable). A snapshot installed from the leader meanwhile supersedes
    /// it. A failed write does not stop the node: a snapshot only saves log space and replay
    /// time, nothing is lost without one (the log it would compact stays, in the WAL and in
    /// memory). It is retried with backoff, logged once at warn and again once it succeeds.
    fn on_snapshot_saved(
        &mut self,
        meta: SnapshotMetadata,
        compact_to: u64,
        result: Result<()>,
    ) -> Result<()> {
        self.snapshot_stage = SnapshotStage::Idle;
        let started = self.snapshot_started.take();
        if let Err(error) = result {
            let backoff = SnapshotBackoff::after_failure(self.snapshot_retry.as_ref(), self.ticks);
            if backoff.failures == 1 {
                tracing::warn!(
                    index = meta.index,
                    %error,
                    retry_in = ?backoff.delay,
                    "writing a snapshot failed; serving on, the log is kept, retrying with backoff"
                );
            } else {
                tracing::debug!(
                    index = meta.index,
                    %error,
                    failures = backoff.failures,
                    retry_in = ?backoff.delay,
                    "writing a snapshot failed again"
                );
            }
            self.snapshot_retry = Some(backoff);
            return Ok(());
        }
        if let Some(backoff) = self.snapshot_retry.take() {
            tracing::info!(
                index = meta.index,
                failures = backoff.failures,
                "snapshot written after failed attempts"
            );
        }
        let index = meta.index;
        let Some((marker, freed)) = self.raw.mut_store().snapshot_saved(meta, compact_to)? else {
            return Ok(());
        };
        self.io.mark_snapshot(marker, false)?;
        self.io.compact(compact_to, index, freed)?;
        METRICS.snapshots.inc();
        if let Some(started) = started {
            METRICS
                .snapshot_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        tracing::info!(index, compact_to, "snapshot written, log compacted");
        Ok(())
    }

    /// Publishes which members this node can reach (itself excluded).
    fn publish_reachable(&mut self) {
        let me = self.cfg.id;
        let peers: Vec<(u64, bool)> = self
            .sm
            .members()
            .keys()
            .filter(|&&id| id != me)
            .map(|&id| (id, self.io.is_connected(id)))
            .collect();
        self.telemetry.publish_reachable(peers);
    }

    fn status(&self) -> NodeStatus<S::Status> {
        let raft = &self.raw.raft;
        let store = self.raw.store();
        NodeStatus {
            id: self.cfg.id,
            role: match raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate => "candidate",
                StateRole::PreCandidate => "pre_candidate",
            },
            leader: raft.leader_id,
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.applied,
            snapshot_index: store.snapshot_index(),
            first_index: store.first_index(),
            last_index: store.last_index(),
            state: self.sm.status(),
            wal_bytes: self.io.wal_bytes(),
            voters: {
                let mut v = self.conf_state.voters.clone();
                v.sort_unstable();
                v
            },
            members: self.members(),
        }
    }
}

/// The node's next input, or `None` once `tick_at` has come. While a snapshot is being
/// serialized (`busy`) it does not wait at all: the serialization goes on between inputs.
///
/// Woken by an input, it yields once before returning it: every request handler that is
/// ready then runs and queues its request, so one Raft step takes them all (one append,
/// one WAL write) rather than one step per request.
async fn next_input<S: StateMachine>(
    rx: &flume::Receiver<Input<S>>,
    busy: bool,
    tick_at: Instant,
) -> Option<Input<S>> {
    // The node holds a sender itself, so the queue never disconnects; if it did, stop.
    let received = if busy {
        match rx.try_recv() {
            Ok(input) => Some(input),
            Err(flume::TryRecvError::Empty) => None,
            Err(flume::TryRecvError::Disconnected) => Some(Input::Shutdown),
        }
    } else {
        match tokio::time::timeout_at(tick_at.into(), rx.recv_async()).await {
            Ok(received) => Some(received.unwrap_or(Input::Shutdown)),
            Err(_elapsed) => None,
        }
    };
    tokio::task::yield_now().await;
    received
}

/// Whether a snapshot is due: the `log_bytes` applied since the last one reach
/// `snapshot_bytes` or the state's size (`state_bytes`), whichever is larger — the bound on the
/// log's memory, while a snapshot's cost (it writes the whole state) stays amortised over at
/// least as many bytes of log as it writes — or the `entries` reach `snapshot_count`. A state
/// larger than `snapshot_bytes` also needs the log to hold half its size before the count
/// counts: otherwise a large state (1M keys, 200 MB) would be written whole every 100,000
/// small writes, several bytes written per byte logged.
fn snapshot_due(cfg: &NodeConfig, entries: u64, log_bytes: u64, state_bytes: u64) -> bool {
    let by_bytes = log_bytes >= cfg.snapshot_bytes.max(state_bytes);
    let by_count = entries >= cfg.snapshot_count
        && (state_bytes <= cfg.snapshot_bytes || log_bytes.saturating_mul(2) >= state_bytes);
    entries > 0 && (by_bytes || by_count)
}

/// The retry schedule of failing snapshot writes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SnapshotBackoff {
    /// Failed attempts in a row.
    failures: u32,
    /// The wait before the next attempt.
    delay: Duration,
    /// The node's tick count at which to try again.
    retry_at_tick: u64,
}

impl SnapshotBackoff {
    /// After one more failure at tick `now`: 1 s, then doubling up to 60 s.
    fn after_failure(prev: Option<&SnapshotBackoff>, now: u64) -> SnapshotBackoff {
        let (failures, delay) = match prev {
            None => (1, SNAPSHOT_RETRY_FIRST),
            Some(p) => (
                p.failures.saturating_add(1),
                (p.delay * 2).min(SNAPSHOT_RETRY_MAX),
            ),
        };
        SnapshotBackoff {
            failures,
            delay,
            retry_at_tick: now + (delay.as_millis() / TICK.as_millis()) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::testing::Counter;

    /// Bounds a call that must return at once, so a broken one fails instead of hanging.
    async fn promptly<T>(f: impl std::future::Future<Output = T>) -> T {
        match tokio::time::timeout(Duration::from_secs(60), f).await {
            Ok(v) => v,
            Err(_) => panic!("did not return"),
        }
    }

    fn cfg(snapshot_count: u64, snapshot_bytes: u64) -> NodeConfig {
        NodeConfig {
            id: 1,
            snapshot_count,
            snapshot_bytes,
            catch_up_entries: 0,
            catch_up_bytes: 0,
            request_timeout: Duration::from_secs(1),
            cluster_ids: vec![1],
            election_ticks: ELECTION_TIMEOUT_TICKS,
        }
    }

    #[test]
    fn a_snapshot_is_due_by_count_or_by_bytes() {
        let c = cfg(100, 1000);
        assert!(!snapshot_due(&c, 0, 0, 0));
        assert!(!snapshot_due(&c, 99, 999, 0));
        assert!(snapshot_due(&c, 100, 0, 0));
        assert!(snapshot_due(&c, 1, 1000, 0));
        // A state larger than the threshold raises it: a snapshot per 1000 log bytes of a
        // 5000-byte state would write five bytes per byte logged.
        assert!(!snapshot_due(&c, 1, 4999, 5000));
        assert!(snapshot_due(&c, 1, 5000, 5000));
        // The count alone is enough while the state is within the threshold...
        assert!(snapshot_due(&c, 100, 10, 1000));
        // ...but a larger state is written whole only once the log holds half its size.
        assert!(!snapshot_due(&c, 100, 2499, 5000));
        assert!(snapshot_due(&c, 100, 2500, 5000));
        assert!(!snapshot_due(&c, 99, 2500, 5000));
        // Nothing new since the last snapshot: never.
        assert!(!snapshot_due(&c, 0, 1 << 40, 0));
    }

    #[test]
    fn snapshot_retries_back_off_to_a_minute() {
        let mut b = SnapshotBackoff::after_failure(None, 0);
        assert_eq!((b.failures, b.delay), (1, SNAPSHOT_RETRY_FIRST));
        let mut delays = vec![b.delay.as_secs()];
        for _ in 0..8 {
            b = SnapshotBackoff::after_failure(Some(&b), 0);
            delays.push(b.delay.as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.failures, 9);
    }

    #[tokio::test]
    async fn next_input_returns_what_is_queued_or_none_at_the_tick() {
        let (tx, rx) = flume::bounded::<Input<Counter>>(4);
        let far = Instant::now() + Duration::from_secs(3600);
        tx.send(Input::Log(LogEvent::Persisted)).unwrap();
        let got = promptly(next_input(&rx, false, far)).await;
        assert!(matches!(got, Some(Input::Log(LogEvent::Persisted))));
        // Nothing queued: `None` once the tick is due.
        assert!(next_input(&rx, false, Instant::now()).await.is_none());
        // While a snapshot is being serialized it never waits for the tick.
        assert!(promptly(next_input(&rx, true, far)).await.is_none());
        tx.send(Input::Log(LogEvent::Persisted)).unwrap();
        let got = promptly(next_input(&rx, true, far)).await;
        assert!(matches!(got, Some(Input::Log(LogEvent::Persisted))));
        // A queue nobody can send to any more means stop.
        drop(tx);
        let got = promptly(next_input(&rx, false, far)).await;
        assert!(matches!(got, Some(Input::Shutdown)));
    }
}
