//! One simulated run: N nodes of coordinate's own raft node and state machine, a simulated
//! network and disks, clients, and a fault schedule, all drawn from one seed.
//!
//! Time is a number of milliseconds that moves only from one event to the next: nodes tick on
//! their own (slightly drifting) periods, messages arrive after a delay or never, the log
//! writer takes each node's queue after an fsync latency, background snapshot saves finish
//! later. Everything random comes from the run's one generator, and every collection is
//! ordered, so a seed replays the same run exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coordinate_check::history::{Call, History, Operation, Outcome as OpOutcome};
use coordinate_raft::handle::Declined;
use coordinate_raft::node::{Exit, Input, MemberChange, Node, NodeConfig, Recovered};
use coordinate_raft::storage::snapshot::SnapshotFiles;
use coordinate_raft::storage::wal::SnapshotMarker;
use coordinate_raft::storage::{founding_snapshot, RaftStorage};
use coordinate_raft::transport::{InboundShare, TransportEvent};
use coordinate_raft::Published;
use coordinate_server::kv::{
    Command, Compare, CompareOp, CompareTarget, Delete, KeyRange, Kv, LeaseId, Outcome, Put,
    RangeQuery, Refusal, Txn, TxnOp,
};
use coordinate_server::lessor::granted_ttl;
use coordinate_server::maintenance::LeaseKeeper;
use coordinate_server::state::{Clock, Query, ReadResult};
use raft::eraftpb::{HardState, Message, MessageType, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, StateRole};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::oneshot;

use crate::check::Checks;
use crate::disk::{Job, SharedDisk};
use crate::io::SimIo;
use crate::state::SimState;

/// How long a client waits for an answer before it counts the outcome unknown.
const CLIENT_TIMEOUT_MS: u64 = 4_000;
/// The quiet time at the end of a run: faults stop, crashed nodes restart, the cluster
/// settles, then every node answers a read of every key.
const SETTLE_MS: u64 = 6_000;

/// What a run does, beyond its seed.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: u64,
    pub clients: usize,
    pub keys: usize,
    /// Clients that hold a lease with a key on it, and keep it alive (for a while).
    pub lease_holders: usize,
    /// Simulated time with faults, before the settling phase.
    pub duration_ms: u64,
    /// Keep a readable trace of the run.
    pub trace: bool,
    /// A disk whose fsync lies: a crash may lose what was fsynced. Only for testing that the
    /// checks catch what such a disk causes.
    pub lying_disk: bool,
    /// Node 1's clock runs half again as fast as true time, far beyond the drift leases
    /// allow. Only for testing that the lease check catches what such a clock causes.
    pub wild_clock: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            nodes: 3,
            clients: 4,
            keys: 3,
            lease_holders: 2,
            duration_ms: 20_000,
            trace: false,
            lying_disk: false,
            wild_clock: false,
        }
    }
}

/// The fault settings of one run, drawn from its seed (so that runs differ in kind, not only
/// in timing).
#[derive(Clone, Debug)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    pub max_delay_ms: u64,
    /// Mean time between crashes (0: none).
    pub crash_every_ms: u64,
    /// Mean time between partitions (0: none).
    pub partition_every_ms: u64,
    /// Chance that an fsync fails.
    pub fsync_failure: f64,
    pub max_fsync_ms: u64,
    /// Entries between snapshots.
    pub snapshot_count: u64,
    /// Mean time between membership changes (0: none).
    pub membership_every_ms: u64,
}

impl Faults {
    fn draw(rng: &mut ChaCha8Rng) -> Faults {
        // With chance `p`, a value in `range`; else none of that fault.
        let pick = |rng: &mut ChaCha8Rng, p: f64, range: std::ops::Range<f64>| {
            if rng.gen_bool(p) {
                rng.gen_range(range)
            } else {
                0.0
            }
        };
        Faults {
            drop: pick(rng, 0.6, 0.001..0.1),
            duplicate: pick(rng, 0.4, 0.001..0.05),
            max_delay_ms: rng.gen_range(1..60),
            crash_every_ms: if rng.gen_bool(0.7) {
                rng.gen_range(1_000..8_000)
            } else {
                0
            },
            partition_every_ms: if rng.gen_bool(0.7) {
                rng.gen_range(1_000..8_000)
            } else {
                0
            },
            fsync_failure: pick(rng, 0.3, 0.0005..0.01),
            max_fsync_ms: rng.gen_range(1..30),
            snapshot_count: rng.gen_range(5..200),
            membership_every_ms: if rng.gen_bool(0.5) {
                rng.gen_range(500..5_000)
            } else {
                0
            },
        }
    }
}

/// Everything that can happen.
#[derive(Debug)]
enum Event {
    Tick(u64, u64),
    Deliver(Box<Message>),
    /// The log writer of node `.0` (run `.1`) takes its queue.
    Write(u64, u64),
    /// A background snapshot save of node `.0` (run `.1`) finishes.
    Saved(u64, u64, Box<Snapshot>, u64),
    /// Client `.0` may issue its next request.
    Client(usize),
    /// Client `.0`'s request `.1` has waited long enough.
    Timeout(usize, u64),
    /// Lease holder `.0` may take its next step.
    Lease(usize),
    Crash,
    Restart(u64),
    Partition,
    Heal,
    /// A membership change is asked for.
    Membership,
    /// Faults stop: heal, restart everyone, settle.
    Settle,
    /// The final reads.
    FinalReads,
}

/// Where the answer to a proposed command comes.
type Answer =
    oneshot::Receiver<Result<<SimState as coordinate_raft::StateMachine>::Output, Declined>>;

/// What a client is waiting for.
enum Waiting {
    Put(Answer),
    Get(oneshot::Receiver<ReadResult>),
}

struct Client {
    /// Request number, op's place in the history, receiver.
    pending: Option<(u64, usize, Waiting)>,
    next: u64,
    /// The value this client last saw or wrote, by key (what its compare-and-sets expect).
    known: BTreeMap<String, Option<String>>,
}

struct SimNode {
    node: Option<Node<SimState, SimIo>>,
    /// This node's clock: true time, running fast or slow by `drift_ppm`.
    clock: Clock,
    /// The leader's lease keeper (its memory starts over with each run of the node).
    keeper: LeaseKeeper,
    /// How many of this run's lease expiries were checked.
    expiries_seen: usize,
    /// It applied its own removal and stopped for good.
    removed: bool,
    disk: SharedDisk,
    /// Which run of the node this is (events of an earlier run are ignored).
    run: u64,
    /// A Write event is scheduled for this run.
    write_scheduled: bool,
    tick_ms: u64,
}

/// The outcome of one run.
#[derive(Debug)]
pub struct RunReport {
    pub seed: u64,
    pub faults: Faults,
    /// The safety properties that failed, if any.
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub ops: usize,
    pub acked_writes: usize,
    /// The history's counts by kind and outcome.
    pub summary: coordinate_check::history::Summary,
    pub events: u64,
    /// Fault kinds that happened at least once (drop, duplicate, crash, ...).
    pub kinds: BTreeSet<&'static str>,
}

impl RunReport {
    /// The report of a run that panicked.
    pub fn panicked(seed: u64, opts: &Options, what: String) -> RunReport {
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        RunReport {
            seed,
            faults: Faults::draw(&mut rng),
            violations: vec![format!(
                "the node panicked: {what} (replay the seed to see where; {} nodes)",
                opts.nodes
            )],
            trace: Vec::new(),
            ops: 0,
            acked_writes: 0,
            summary: Default::default(),
            events: 0,
            kinds: BTreeSet::new(),
        }
    }
}

pub struct World {
    opts: Options,
    /// Instant zero of the nodes' clocks, and true time (ms) as the clocks read it.
    base: Instant,
    clock_ms: Arc<AtomicU64>,
    /// Lease holders, and per lease the last acknowledged renewal: when it was sent (true
    /// ms) and the TTL (ms).
    holders: Vec<Holder>,
    renewed: BTreeMap<LeaseId, (u64, u64)>,
    faults: Faults,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Event>,
    nodes: BTreeMap<u64, SimNode>,
    /// Directed links that drop everything.
    blocked: BTreeSet<(u64, u64)>,
    clients: Vec<Client>,
    /// The membership change asked for and not answered yet.
    change: Option<(MemberChange, oneshot::Receiver<Result<(), Declined>>)>,
    history: History,
    runs: u64,
    settling: bool,
    checks: Checks,
    trace: Vec<String>,
    kinds: BTreeSet<&'static str>,
    handled: u64,
}

fn url(id: u64) -> String {
    format!("http://127.0.0.{id}:2380")
}

impl World {
    pub fn new(seed: u64, opts: Options) -> World {
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        let faults = Faults::draw(&mut rng);
        let members: BTreeMap<u64, String> = (1..=opts.nodes).map(|id| (id, url(id))).collect();
        let founding = Kv::with_members(members).snapshot();
        // Only differences between instants matter: any base replays the same run.
        let base = Instant::now();
        let clock_ms = Arc::new(AtomicU64::new(0));
        let mut nodes = BTreeMap::new();
        for id in 1..=opts.nodes {
            let disk = SharedDisk::default();
            bootstrap(&disk, opts.nodes, founding.clone());
            let tick_ms = rng.gen_range(95..=105);
            nodes.insert(
                id,
                SimNode {
                    node: None,
                    clock: node_clock(
                        base,
                        &clock_ms,
                        match (id, opts.wild_clock) {
                            (1, true) => 500_000,
                            _ => drift(&mut rng),
                        },
                    ),
                    keeper: LeaseKeeper::default(),
                    expiries_seen: 0,
                    removed: false,
                    disk,
                    run: 0,
                    write_scheduled: false,
                    tick_ms,
                },
            );
        }
        let clients = (0..opts.clients)
            .map(|_| Client {
                pending: None,
                next: 0,
                known: BTreeMap::new(),
            })
            .collect();
        let holders = (0..opts.lease_holders)
            .map(|_| Holder {
                lease: None,
                pending: None,
                next: 0,
            })
            .collect();
        World {
            opts,
            base,
            clock_ms,
            holders,
            renewed: BTreeMap::new(),
            faults,
            rng,
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
            nodes,
            blocked: BTreeSet::new(),
            clients,
            change: None,
            history: History::new(),
            runs: 0,
            settling: false,
            checks: Checks::default(),
            trace: Vec::new(),
            kinds: BTreeSet::new(),
            handled: 0,
        }
    }

    fn at(&mut self, delay: u64, e: Event) {
        self.seq += 1;
        self.events.insert((self.now + delay, self.seq), e);
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.opts.trace {
            let l = line();
            self.trace.push(format!("{:>7} ms  {l}", self.now));
        }
    }

    /// Runs to the end and checks the history.
    pub fn run(mut self, seed: u64) -> RunReport {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.start(id);
        }
        for c in 0..self.clients.len() {
            let d = self.rng.gen_range(0..200);
            self.at(d, Event::Client(c));
        }
        for h in 0..self.holders.len() {
            let d = self.rng.gen_range(0..2_000);
            self.at(d, Event::Lease(h));
        }
        if self.faults.crash_every_ms > 0 {
            let d = self.rng.gen_range(0..self.faults.crash_every_ms * 2);
            self.at(d, Event::Crash);
        }
        if self.faults.partition_every_ms > 0 {
            let d = self.rng.gen_range(0..self.faults.partition_every_ms * 2);
            self.at(d, Event::Partition);
        }
        if self.faults.membership_every_ms > 0 {
            let d = self.rng.gen_range(0..self.faults.membership_every_ms * 2);
            self.at(d, Event::Membership);
        }
        let d = self.opts.duration_ms;
        self.at(d, Event::Settle);
        self.at(d + SETTLE_MS, Event::FinalReads);
        let end = d + SETTLE_MS + CLIENT_TIMEOUT_MS + 1_000;
        while let Some(((t, _), e)) = self.events.pop_first() {
            if t > end || !self.checks.violations.is_empty() {
                break;
            }
            self.now = t;
            self.clock_ms.store(t, Ordering::Relaxed);
            self.handled += 1;
            self.handle(e);
            self.poll_clients();
            self.poll_holders();
            self.poll_change();
        }
        self.finish(seed)
    }

    fn finish(mut self, seed: u64) -> RunReport {
        // Whatever is still pending never got an answer.
        for c in 0..self.clients.len() {
            if let Some((_, op, _)) = self.clients[c].pending.take() {
                self.complete(op, OpOutcome::Unknown, "no answer");
            }
        }
        let acked = self
            .history
            .ops()
            .iter()
            .filter(|o| o.call.is_write() && o.outcome == OpOutcome::Ok)
            .count();
        if self.checks.violations.is_empty() {
            let report = coordinate_check::linearizability::check(
                &self.history,
                &coordinate_check::linearizability::Config {
                    max_steps: 50_000_000,
                    time_limit: Duration::from_secs(60),
                    shrink_time_limit: Duration::from_secs(10),
                },
            );
            // A history the checker cannot decide (out of budget) fails the run too: a pass
            // must mean it was checked.
            use coordinate_check::linearizability::Verdict;
            match report.verdict {
                Verdict::Linearizable => {}
                Verdict::NotLinearizable(v) => self
                    .checks
                    .violations
                    .push(format!("the client history is not linearizable: {v}")),
                Verdict::Unknown(why) => self
                    .checks
                    .violations
                    .push(format!("the client history could not be checked: {why}")),
            }
        }
        RunReport {
            seed,
            faults: self.faults,
            violations: self.checks.violations,
            trace: self.trace,
            ops: self.history.len(),
            acked_writes: acked,
            summary: self.history.summary(),
            events: self.handled,
            kinds: self.kinds,
        }
    }

    /// Starts (or restarts) node `id` from what its disk holds.
    fn start(&mut self, id: u64) {
        self.runs += 1;
        let incarnation = self.runs;
        let election = self.rng.gen_range(10..20);
        let snapshot_count = self.faults.snapshot_count;
        let catch_up = self.rng.gen_range(0..20);
        let cluster_ids: Vec<u64> = self.nodes.keys().copied().collect();
        let sim = self.nodes.get_mut(&id).expect("known node");
        sim.run = incarnation;
        sim.write_scheduled = false;
        let recovered = {
            let disk = sim.disk.lock();
            disk.recover()
        };
        let (rec, snapshot) = match recovered {
            Ok(r) => r,
            Err(why) => {
                self.checks
                    .violations
                    .push(format!("node {id} cannot recover its disk: {why}"));
                return;
            }
        };
        let (state, applied) = match &snapshot {
            Some(s) => match Kv::restore(s.data.clone()) {
                Ok(kv) => (kv, s.get_metadata().index),
                Err(e) => {
                    self.checks
                        .violations
                        .push(format!("node {id}: its snapshot does not restore: {e}"));
                    return;
                }
            },
            None => (Kv::default(), 0),
        };
        sim.keeper = LeaseKeeper::default();
        sim.expiries_seen = 0;
        let clock = sim.clock.clone();
        let files: Arc<dyn SnapshotFiles> = Arc::new(sim.disk.clone());
        let storage = RaftStorage::recover(rec, snapshot.as_ref(), files);
        let cfg = NodeConfig {
            id,
            snapshot_count,
            snapshot_bytes: 1 << 20,
            catch_up_entries: catch_up,
            catch_up_bytes: 1 << 20,
            request_timeout: Duration::from_millis(CLIENT_TIMEOUT_MS),
            cluster_ids,
            election_ticks: (election, election + 1),
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = Node::with_io(
            cfg,
            Recovered {
                storage,
                state: SimState::new(state, clock),
                applied,
            },
            SimIo::new(sim.disk.clone()),
            Arc::new(Published::default()),
            incarnation,
            &logger,
        );
        match node {
            Ok(mut node) => {
                node.start();
                sim.node = Some(node);
                self.checks.restarted(id);
                let d = self.rng.gen_range(0..sim_tick(&self.nodes, id));
                self.at(d, Event::Tick(id, incarnation));
                self.note(|| format!("n{id} starts (run {incarnation}, applied {applied})"));
                self.after(id);
            }
            Err(e) => self
                .checks
                .violations
                .push(format!("node {id} does not start: {e}")),
        }
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Tick(id, run) => {
                if self.is_run(id, run) {
                    let tick = sim_tick(&self.nodes, id);
                    self.at(tick, Event::Tick(id, run));
                    if let Some(n) = self.node(id) {
                        n.tick();
                    }
                    self.keep_leases(id);
                    self.after(id);
                }
            }
            Event::Deliver(m) => self.deliver(*m),
            Event::Write(id, run) => {
                if self.is_run(id, run) {
                    self.write(id);
                }
            }
            Event::Saved(id, run, snap, compact_to) => {
                if self.is_run(id, run) {
                    self.saved(id, *snap, compact_to);
                }
            }
            Event::Client(c) => self.issue(c),
            Event::Lease(h) => self.lease_step(h),
            Event::Timeout(c, n) => {
                if self.clients[c].pending.as_ref().is_some_and(|p| p.0 == n) {
                    if let Some((_, op, _)) = self.clients[c].pending.take() {
                        self.complete(op, OpOutcome::Unknown, "timeout");
                    }
                    self.next_request(c);
                }
            }
            Event::Crash => {
                if !self.settling {
                    self.crash_one();
                    let d = self.rng.gen_range(0..self.faults.crash_every_ms * 2);
                    self.at(d, Event::Crash);
                }
            }
            Event::Restart(id) => {
                if self.nodes[&id].node.is_none() && !self.nodes[&id].removed {
                    self.start(id);
                }
            }
            Event::Membership => {
                if !self.settling {
                    self.change_membership();
                    let d = self.rng.gen_range(0..self.faults.membership_every_ms * 2);
                    self.at(d, Event::Membership);
                }
            }
            Event::Partition => {
                if !self.settling {
                    self.partition();
                    let heal = self.rng.gen_range(300..4_000);
                    self.at(heal, Event::Heal);
                    let d = self.rng.gen_range(0..self.faults.partition_every_ms * 2);
                    self.at(heal + d, Event::Partition);
                }
            }
            Event::Heal => {
                if !self.blocked.is_empty() {
                    self.note(|| "network healed".into());
                }
                self.blocked.clear();
            }
            Event::Settle => {
                self.settling = true;
                self.blocked.clear();
                self.note(|| "faults stop; the cluster settles".into());
                let down: Vec<u64> = self
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.node.is_none() && !n.removed)
                    .map(|(&id, _)| id)
                    .collect();
                for id in down {
                    self.start(id);
                }
            }
            Event::FinalReads => self.final_reads(),
        }
    }

    /// A node that is up, drawn at random.
    fn random_up(&mut self) -> Option<u64> {
        let up: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.node.is_some())
            .map(|(&id, _)| id)
            .collect();
        (!up.is_empty()).then(|| up[self.rng.gen_range(0..up.len())])
    }

    fn is_run(&self, id: u64, run: u64) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|n| n.run == run && n.node.is_some())
    }

    fn node(&mut self, id: u64) -> Option<&mut Node<SimState, SimIo>> {
        self.nodes.get_mut(&id).and_then(|n| n.node.as_mut())
    }

    /// After anything happened to node `id`: let it do what became possible, check it, and
    /// carry out what it asked for (messages, log writes, snapshot saves).
    fn after(&mut self, id: u64) {
        let up: BTreeSet<u64> = self
            .nodes
            .iter()
            .filter(|(&p, n)| p != id && n.node.is_some())
            .map(|(&p, _)| p)
            .filter(|&p| !self.blocked.contains(&(id, p)) && !self.blocked.contains(&(p, id)))
            .collect();
        let Some(node) = self.node(id) else {
            return;
        };
        node.io_mut().connected = up;
        let result = node.advance();
        match result {
            Ok(None) => {}
            Ok(Some(Exit::Removed)) => {
                self.note(|| format!("n{id} was removed; it stops for good"));
                self.stop(id, true);
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.removed = true;
                }
                return;
            }
            Ok(Some(Exit::Shutdown)) => {}
            Err(e) => {
                self.kinds.insert("fail-stop");
                self.note(|| format!("n{id} fail-stops: {e}"));
                self.stop(id, false);
                let d = self.rng.gen_range(200..3_000);
                self.at(d, Event::Restart(id));
                return;
            }
        }
        let Some(node) = self.nodes.get(&id).and_then(|n| n.node.as_ref()) else {
            return;
        };
        self.checks.observe(id, node);
        self.check_expiries(id);
        let Some(node) = self.node(id) else {
            return;
        };
        let io = node.io_mut();
        let out = std::mem::take(&mut io.outbox);
        let saves = std::mem::take(&mut io.saves);
        let queued = !io.disk.lock().queue.is_empty();
        for m in out {
            self.send(m);
        }
        let run = self.nodes[&id].run;
        for (snap, compact_to) in saves {
            let d = self.rng.gen_range(1..50);
            self.at(d, Event::Saved(id, run, Box::new(snap), compact_to));
        }
        if queued && !self.nodes[&id].write_scheduled {
            if let Some(n) = self.nodes.get_mut(&id) {
                n.write_scheduled = true;
            }
            let d = self.rng.gen_range(0..=self.faults.max_fsync_ms);
            self.at(d, Event::Write(id, run));
        }
    }

    /// The log writer takes node `id`'s queue.
    fn write(&mut self, id: u64) {
        let fail = self.rng.gen_bool(self.faults.fsync_failure);
        let Some(sim) = self.nodes.get_mut(&id) else {
            return;
        };
        sim.write_scheduled = false;
        let batch = sim.disk.lock().write_batch(false, fail);
        match batch {
            Ok(messages) => {
                for m in messages {
                    self.send(m);
                }
            }
            Err(e) => {
                self.kinds.insert("fsync failure");
                self.note(|| format!("n{id}: fsync fails ({e})"));
            }
        }
        self.after(id);
    }

    /// A background snapshot save finished: the file is durable, or its write failed
    /// (nothing of it is on the disk: the real store writes a temporary file and renames it
    /// only once it is durable) and the node retries later; the node is told either way.
    fn saved(&mut self, id: u64, snap: Snapshot, compact_to: u64) {
        // A snapshot file is many writes and fsyncs: more likely to meet a failing disk.
        let fail = self
            .rng
            .gen_bool((self.faults.fsync_failure * 20.0).min(0.5));
        let Some(sim) = self.nodes.get_mut(&id) else {
            return;
        };
        let result = if fail {
            self.kinds.insert("snapshot write failure");
            Err(coordinate_raft::Error::io(
                "writing a simulated snapshot",
                std::io::Error::other("injected fsync failure"),
            ))
        } else {
            SnapshotFiles::save(&sim.disk, &snap)
        };
        self.kinds.insert("snapshot");
        let meta: SnapshotMetadata = snap.get_metadata().clone();
        let index = meta.index;
        if let Some(node) = sim.node.as_mut() {
            let _ = node.handle(Input::SnapshotSaved {
                meta,
                compact_to,
                result,
            });
        }
        if fail {
            self.note(|| format!("n{id}: writing its snapshot at {index} fails"));
        }
        self.after(id);
    }

    fn send(&mut self, m: Message) {
        let (from, to) = (m.from, m.to);
        let blocked = self.blocked.contains(&(from, to));
        if blocked || self.rng.gen_bool(self.faults.drop) {
            self.kinds
                .insert(if blocked { "partition" } else { "drop" });
            self.note(|| format!("n{from}→n{to} {} dropped", describe(&m)));
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshot_sent(from, to, false);
            }
            return;
        }
        let copies = if self.rng.gen_bool(self.faults.duplicate) {
            self.kinds.insert("duplicate");
            2
        } else {
            1
        };
        for _ in 0..copies {
            let d = self.rng.gen_range(0..=self.faults.max_delay_ms);
            if d > 0 {
                self.kinds.insert("delay");
            }
            self.note(|| format!("n{from}→n{to} {} in {d} ms", describe(&m)));
            self.at(d, Event::Deliver(Box::new(m.clone())));
        }
    }

    fn deliver(&mut self, m: Message) {
        let (from, to, snapshot) = (m.from, m.to, m.get_msg_type() == MessageType::MsgSnapshot);
        // A partition that began while the message was in flight cuts it too.
        let cut = self.blocked.contains(&(from, to));
        let Some(node) = self.node(to).filter(|_| !cut) else {
            if snapshot {
                self.snapshot_sent(from, to, false);
            }
            return;
        };
        let _ = node.handle(Input::Transport(TransportEvent::Message(
            Box::new(m),
            InboundShare::default(),
        )));
        self.after(to);
        if snapshot {
            self.snapshot_sent(from, to, true);
        }
    }

    /// Tells a sender how its snapshot stream ended (the transport's report).
    fn snapshot_sent(&mut self, from: u64, to: u64, ok: bool) {
        if let Some(node) = self.node(from) {
            let _ = node.handle(Input::Transport(TransportEvent::SnapshotSent { to, ok }));
            self.after(from);
        }
    }

    /// Stops node `id`: a crash (`removed` false) loses what was not durable, and a torn tail.
    fn stop(&mut self, id: u64, removed: bool) {
        let Some(sim) = self.nodes.get_mut(&id) else {
            return;
        };
        // Dropping the node drops every reply it held: its clients see the outcome unknown.
        sim.node = None;
        if !removed {
            let mut disk = sim.disk.lock();
            let (written, synced) = disk.written();
            // A lying disk (a test of the checks) loses fsynced records too.
            let floor = if self.opts.lying_disk { 0 } else { synced };
            let keep = self.rng.gen_range(floor..=written);
            if keep < written {
                self.kinds.insert("torn write");
            }
            disk.crash(keep);
        }
    }

    fn crash_one(&mut self) {
        let Some(id) = self.random_up() else {
            return;
        };
        self.kinds.insert("crash");
        self.note(|| format!("n{id} crashes"));
        self.stop(id, false);
        let d = self.rng.gen_range(100..3_000);
        self.at(d, Event::Restart(id));
    }

    fn partition(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let a = ids[self.rng.gen_range(0..ids.len())];
        match self.rng.gen_range(0..3) {
            // One node cut off both ways.
            0 => {
                for &b in &ids {
                    if b != a {
                        self.blocked.insert((a, b));
                        self.blocked.insert((b, a));
                    }
                }
                self.note(|| format!("n{a} is cut off"));
            }
            // One direction of one link.
            1 => {
                let b = ids[self.rng.gen_range(0..ids.len())];
                if a != b {
                    self.kinds.insert("asymmetric link");
                    self.blocked.insert((a, b));
                    self.note(|| format!("n{a}→n{b} is cut (one way)"));
                }
            }
            // A random split.
            _ => {
                let side: BTreeSet<u64> = ids
                    .iter()
                    .copied()
                    .filter(|_| self.rng.gen_bool(0.5))
                    .collect();
                for &x in &ids {
                    for &y in &ids {
                        if side.contains(&x) != side.contains(&y) {
                            self.blocked.insert((x, y));
                        }
                    }
                }
                self.note(|| format!("the network splits: {side:?} | the rest"));
            }
        }
        self.kinds.insert("partition");
    }

    // ---- leases ----

    /// On the leader, what the server's maintenance task does each tick: the lease keeper
    /// (`maintenance::LeaseKeeper`, on this node's clock) extends every lease in a new term,
    /// then proposes the expiry of every lease past its deadline.
    fn keep_leases(&mut self, id: u64) {
        let Some(sim) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(node) = sim.node.as_mut() else {
            return;
        };
        if !is_leader(node) {
            sim.keeper.follow();
            return;
        }
        let term = node.raw().raft.term;
        let due = sim
            .keeper
            .due(&node.state_machine().lessor, term, (sim.clock)());
        for (lease, renewed_at) in due {
            let (tx, _) = oneshot::channel();
            let data = Command::LeaseExpire {
                id: lease,
                renewed_at,
            }
            .encode();
            let _ = node.handle(Input::Propose { data, reply: tx });
        }
    }

    /// A lease may expire only a TTL after its last acknowledged renewal was sent, less what
    /// the clocks' drift allows (each runs within 2% of true time).
    fn check_expiries(&mut self, id: u64) {
        let Some(sim) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(node) = sim.node.as_ref() else {
            return;
        };
        let expired: Vec<LeaseId> = node.state_machine().expired[sim.expiries_seen..].to_vec();
        sim.expiries_seen += expired.len();
        for lease in expired {
            self.kinds.insert("lease expiry");
            let Some((sent, ttl)) = self.renewed.remove(&lease) else {
                continue;
            };
            let after = self.now.saturating_sub(sent);
            self.note(|| format!("lease {lease} expired {after} ms after its last renewal"));
            if after * 100 < ttl * 95 {
                self.checks.violations.push(format!(
                    "lease safety: lease {lease} expired at {} ms, {after} ms after its last \
                     acknowledged renewal was sent, within its TTL of {ttl} ms",
                    self.now
                ));
            }
        }
    }

    /// Holder `h`'s next step: grant a lease, put its key on it, keep it alive every third
    /// of its TTL; now and then it stops (its process died) and comes back later.
    fn lease_step(&mut self, h: usize) {
        if self.holders[h].pending.is_some() || self.settling {
            return;
        }
        let Some(to) = self.random_up() else {
            self.at(500, Event::Lease(h));
            return;
        };
        let holder = &mut self.holders[h];
        let (step, command) = match holder.lease {
            None => {
                holder.next += 1;
                let id = (h as i64 + 1) * 1_000_000 + holder.next;
                let ttl = granted_ttl(self.rng.gen_range(2..=6));
                (LeaseStep::Grant, Command::LeaseGrant { id, ttl })
            }
            Some((id, false)) => (
                LeaseStep::Attach,
                Command::Put(Put {
                    lease: id,
                    ..Put::new(
                        Bytes::from(format!("lease-key-{h}")),
                        Bytes::from(format!("{id}")),
                    )
                }),
            ),
            Some((id, true)) => (LeaseStep::KeepAlive(id), Command::LeaseKeepAlive { id }),
        };
        let (tx, rx) = oneshot::channel();
        let sent = self.now;
        self.holders[h].pending = Some((step, sent, rx));
        self.note(|| format!("holder {h} asks n{to}: {command:?}"));
        if let Some(node) = self.node(to) {
            let _ = node.handle(Input::Propose {
                data: command.encode(),
                reply: tx,
            });
        }
        self.after(to);
    }

    fn poll_holders(&mut self) {
        for h in 0..self.holders.len() {
            let Some((step, sent, mut rx)) = self.holders[h].pending.take() else {
                continue;
            };
            let answer = match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) if self.now < sent + CLIENT_TIMEOUT_MS => {
                    self.holders[h].pending = Some((step, sent, rx));
                    continue;
                }
                Ok(Ok(Ok(outcome))) => Some(outcome),
                _ => None,
            };
            self.note(|| format!("holder {h}: {step:?} -> {answer:?}"));
            let holder = &mut self.holders[h];
            let mut next = 100;
            match (step, answer) {
                (LeaseStep::Grant, Some(Outcome::LeaseGranted { id, ttl })) => {
                    holder.lease = Some((id, false));
                    self.renewed.insert(id, (sent, ttl as u64 * 1_000));
                    next = 0;
                }
                (LeaseStep::Attach, Some(Outcome::Put { .. })) => {
                    if let Some((id, _)) = holder.lease {
                        holder.lease = Some((id, true));
                    }
                }
                (LeaseStep::KeepAlive(id), Some(Outcome::LeaseRenewed { ttl, .. })) => {
                    self.renewed.insert(id, (sent, ttl as u64 * 1_000));
                    next = ttl as u64 * 1_000 / 3;
                    // Now and then the holder dies: its lease must then expire.
                    if self.rng.gen_bool(0.05) {
                        holder.lease = None;
                        next = self.rng.gen_range(1_000..10_000);
                        self.note(|| format!("holder {h} stops keeping lease {id} alive"));
                    }
                }
                // The lease is gone (it expired): start over with a new one.
                (_, Some(Outcome::Refused(Refusal::LeaseNotFound(_)))) => holder.lease = None,
                // Unknown or refused: try again.
                _ => {}
            }
            self.at(next, Event::Lease(h));
        }
    }

    // ---- membership ----

    /// The leader, if one is up and knows it leads.
    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .find(|(_, n)| n.node.as_ref().is_some_and(is_leader))
            .map(|(&id, _)| id)
    }

    /// Asks the leader for one change, drawn from what its configuration allows: add a node
    /// (a learner, sometimes a voter) started with an empty disk, promote a learner, or remove
    /// a member (never below three voters).
    fn change_membership(&mut self) {
        if self.change.is_some() {
            return;
        }
        let Some(leader) = self.leader() else {
            return;
        };
        let (voters, learners): (Vec<u64>, Vec<u64>) = {
            let Some(node) = self.nodes[&leader].node.as_ref() else {
                return;
            };
            let conf = node.raw().raft.prs().conf();
            let mut v: Vec<u64> = conf.voters().ids().iter().collect();
            let mut l: Vec<u64> = conf.learners().iter().copied().collect();
            v.sort_unstable();
            l.sort_unstable();
            (v, l)
        };
        let roll = self.rng.gen_range(0..3);
        let change = if roll == 0 && voters.len() + learners.len() < self.opts.nodes as usize + 2 {
            let id = self.nodes.keys().next_back().copied().unwrap_or(0) + 1;
            self.add_node(id);
            MemberChange::Add {
                id,
                url: url(id),
                learner: self.rng.gen_bool(0.7),
            }
        } else if roll == 1 && !learners.is_empty() {
            let id = learners[self.rng.gen_range(0..learners.len())];
            MemberChange::Promote { id }
        } else {
            let removable: Vec<u64> = learners
                .iter()
                .chain(voters.iter().filter(|_| voters.len() > 3))
                .copied()
                .collect();
            if removable.is_empty() {
                return;
            }
            MemberChange::Remove {
                id: removable[self.rng.gen_range(0..removable.len())],
            }
        };
        self.kinds.insert("membership");
        self.note(|| format!("n{leader} is asked: {change:?}"));
        let (tx, rx) = oneshot::channel();
        if let Some(node) = self.node(leader) {
            let _ = node.handle(Input::ChangeMembers {
                change: change.clone(),
                reply: tx,
            });
        }
        self.change = Some((change, rx));
        self.after(leader);
    }

    /// A node that will join: an empty disk, started before it is added (like `--join`).
    fn add_node(&mut self, id: u64) {
        let tick_ms = self.rng.gen_range(95..=105);
        let clock = node_clock(self.base, &self.clock_ms, drift(&mut self.rng));
        self.nodes.insert(
            id,
            SimNode {
                node: None,
                clock,
                keeper: LeaseKeeper::default(),
                expiries_seen: 0,
                removed: false,
                disk: SharedDisk::default(),
                run: 0,
                write_scheduled: false,
                tick_ms,
            },
        );
        self.start(id);
    }

    fn poll_change(&mut self) {
        let Some((change, mut rx)) = self.change.take() else {
            return;
        };
        let result = match rx.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => {
                self.change = Some((change, rx));
                return;
            }
            Err(oneshot::error::TryRecvError::Closed) => "no answer".to_string(),
            Ok(Ok(())) => "applied".to_string(),
            Ok(Err(e)) => e.to_string(),
        };
        self.note(|| format!("{change:?}: {result}"));
    }

    // ---- clients ----

    fn next_request(&mut self, c: usize) {
        let think = self.rng.gen_range(0..30);
        self.at(think, Event::Client(c));
    }

    fn issue(&mut self, c: usize) {
        if self.clients[c].pending.is_some() || self.settling {
            return;
        }
        let Some(id) = self.random_up() else {
            self.next_request(c);
            return;
        };
        let key = format!("k{}", self.rng.gen_range(0..self.opts.keys));
        let n = self.clients[c].next;
        self.clients[c].next += 1;
        let value = format!("{c}.{n}");
        let call = match self.rng.gen_range(0..20) {
            0..=8 => Call::Put(value),
            9..=10 => Call::Delete,
            11..=13 => Call::Cas {
                expect: self.clients[c].known.get(&key).cloned().flatten(),
                value,
            },
            _ => Call::Get,
        };
        self.request(c, id, key, call, n);
    }

    /// Sends `call` on `key` to node `id` for client `c`: writes as commands (a
    /// compare-and-set as etcd clients make one, a transaction comparing the value), reads
    /// linearizable.
    fn request(&mut self, c: usize, id: u64, key: String, call: Call, n: u64) {
        let op = self.history.push(Operation {
            id: 0,
            client: c,
            node: id,
            key: key.clone(),
            call: call.clone(),
            invoke: self.now * 1_000_000,
            complete: 0,
            outcome: OpOutcome::Unknown,
            detail: String::new(),
        });
        if self.opts.trace {
            let line = format!("c{c} asks n{id}: {}", self.history.ops()[op]);
            self.note(|| line);
        }
        let k = || Bytes::from(key.clone());
        let command = match call {
            Call::Put(v) => Some(Command::Put(Put::new(k(), Bytes::from(v)))),
            Call::Delete => Some(Command::Delete(Delete {
                key: k(),
                condition: None,
            })),
            Call::Cas { expect, value } => Some(Command::Txn(Txn {
                compares: vec![Compare {
                    range: KeyRange::Key(k()),
                    op: CompareOp::Equal,
                    target: match expect {
                        Some(e) => CompareTarget::Value(Bytes::from(e)),
                        None => CompareTarget::Version(0),
                    },
                }],
                success: vec![TxnOp::Put(Put::new(k(), Bytes::from(value)))],
                failure: Vec::new(),
            })),
            Call::Get => None,
        };
        let k = Bytes::from(key);
        let waiting = match command {
            Some(command) => {
                let (tx, rx) = oneshot::channel();
                let data = command.encode();
                if let Some(node) = self.node(id) {
                    let _ = node.handle(Input::Propose { data, reply: tx });
                }
                Waiting::Put(rx)
            }
            None => {
                let (tx, rx) = oneshot::channel();
                let query = Query::Range(RangeQuery::key(k));
                if let Some(node) = self.node(id) {
                    let _ = node.handle(Input::Read {
                        query,
                        linearizable: true,
                        reply: tx,
                    });
                }
                Waiting::Get(rx)
            }
        };
        self.clients[c].pending = Some((n, op, waiting));
        self.at(CLIENT_TIMEOUT_MS, Event::Timeout(c, n));
        self.after(id);
    }

    /// What client `c` now knows the key holds, after op `op` ended with `outcome`.
    fn learn(&mut self, c: usize, op: usize, outcome: &OpOutcome) {
        let Some(o) = self.history.ops().get(op) else {
            return;
        };
        let seen = match (&o.call, outcome) {
            (Call::Put(v) | Call::Cas { value: v, .. }, OpOutcome::Ok) => Some(Some(v.clone())),
            (Call::Delete, OpOutcome::Ok) => Some(None),
            (Call::Get, OpOutcome::Read(v)) => Some(v.clone()),
            _ => None,
        };
        if let Some(seen) = seen {
            let key = o.key.clone();
            self.clients[c].known.insert(key, seen);
        }
    }

    fn complete(&mut self, op: usize, outcome: OpOutcome, note: &str) {
        let now = self.now * 1_000_000;
        self.history.complete(op, now, outcome, note);
        if self.opts.trace {
            let line = format!("answered: {}", self.history.ops()[op]);
            self.note(|| line);
        }
    }

    /// Collects every answer that arrived.
    fn poll_clients(&mut self) {
        for c in 0..self.clients.len() {
            let Some((n, op, waiting)) = self.clients[c].pending.take() else {
                continue;
            };
            let answer = match waiting {
                Waiting::Put(mut rx) => match rx.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => {
                        self.clients[c].pending = Some((n, op, Waiting::Put(rx)));
                        continue;
                    }
                    Err(oneshot::error::TryRecvError::Closed) => (OpOutcome::Unknown, "dropped"),
                    Ok(Ok(Ok(Outcome::Put { .. } | Outcome::Deleted { .. }))) => {
                        (OpOutcome::Ok, "")
                    }
                    Ok(Ok(Ok(Outcome::Txn(t)))) if t.succeeded => (OpOutcome::Ok, ""),
                    Ok(Ok(Ok(Outcome::Txn(_)))) => (OpOutcome::CompareFailed, ""),
                    Ok(Ok(_)) => (OpOutcome::Fail, "not applied"),
                    Ok(Err(Declined::NoLeader)) => (OpOutcome::Fail, "no leader"),
                    Ok(Err(_)) => (OpOutcome::Unknown, "declined"),
                },
                Waiting::Get(mut rx) => match rx.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => {
                        self.clients[c].pending = Some((n, op, Waiting::Get(rx)));
                        continue;
                    }
                    Err(oneshot::error::TryRecvError::Closed) => (OpOutcome::Unknown, "dropped"),
                    Ok(ReadResult::Range(Ok(r))) => (
                        OpOutcome::Read(
                            r.kvs
                                .first()
                                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                        ),
                        "",
                    ),
                    Ok(_) => (OpOutcome::Unknown, "refused"),
                },
            };
            self.learn(c, op, &answer.0);
            self.complete(op, answer.0, answer.1);
            if c < self.opts.clients {
                self.next_request(c);
            }
        }
    }

    /// At the end, every node answers a linearizable read of every key (one extra client per
    /// node): a write acknowledged and then lost, or a replica that diverged, shows here.
    fn final_reads(&mut self) {
        self.note(|| "final reads".into());
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            let c = self.clients.len();
            self.clients.push(Client {
                pending: None,
                next: 0,
                known: BTreeMap::new(),
            });
            // One key per extra client keeps their requests sequential.
            for k in 0..self.opts.keys {
                let c = if k == 0 {
                    c
                } else {
                    self.clients.push(Client {
                        pending: None,
                        next: 0,
                        known: BTreeMap::new(),
                    });
                    self.clients.len() - 1
                };
                self.request(c, id, format!("k{k}"), Call::Get, 0);
            }
        }
    }
}

/// What a lease holder asked for.
#[derive(Clone, Copy, Debug)]
enum LeaseStep {
    Grant,
    Attach,
    KeepAlive(LeaseId),
}

/// A client holding a lease: the lease and whether its key is on it.
struct Holder {
    lease: Option<(LeaseId, bool)>,
    /// What it asked for, when (true ms), and where the answer comes.
    pending: Option<(LeaseStep, u64, Answer)>,
    next: i64,
}

/// A clock drift, in parts per million: within 2% of true time.
fn drift(rng: &mut ChaCha8Rng) -> i64 {
    rng.gen_range(-20_000..=20_000)
}

/// A node's clock: the world's true time, running `ppm` fast (or slow).
fn node_clock(base: Instant, true_ms: &Arc<AtomicU64>, ppm: i64) -> Clock {
    let t = true_ms.clone();
    Arc::new(move || {
        let us = t.load(Ordering::Relaxed) as i128 * (1_000_000 + ppm as i128) / 1_000;
        base + Duration::from_micros(us.max(0) as u64)
    })
}

/// Node `id`'s tick period.
fn sim_tick(nodes: &BTreeMap<u64, SimNode>, id: u64) -> u64 {
    nodes.get(&id).map_or(100, |n| n.tick_ms)
}

/// A founding member's first disk state: the bootstrap snapshot at index 1 with every member,
/// as `RaftStorage::bootstrap` writes it.
fn bootstrap(disk: &SharedDisk, nodes: u64, data: Bytes) {
    let snap = founding_snapshot((1..=nodes).collect(), data);
    // Saving to the simulated disk cannot fail.
    let _ = SnapshotFiles::save(disk, &snap);
    let mut d = disk.lock();
    d.queue
        .push(Job::Marker(SnapshotMarker { index: 1, term: 1 }, true));
    d.queue.push(Job::Append {
        number: 0,
        entries: Vec::new(),
        hard_state: Some(HardState {
            term: 1,
            commit: 1,
            ..Default::default()
        }),
        messages: Vec::new(),
    });
    let _ = d.write_batch(true, false);
}

/// A message, briefly.
fn describe(m: &Message) -> String {
    let mut s = format!("{:?} term {}", m.get_msg_type(), m.term);
    if !m.entries.is_empty() {
        s += &format!(" {} entries from {}", m.entries.len(), m.entries[0].index);
    }
    if m.commit > 0 {
        s += &format!(" commit {}", m.commit);
    }
    if m.get_msg_type() == MessageType::MsgSnapshot {
        s += &format!(" at {}", m.get_snapshot().get_metadata().index);
    }
    if m.reject {
        s += " reject";
    }
    s
}

/// The role of a node, for checks.
pub fn is_leader(node: &Node<SimState, SimIo>) -> bool {
    node.raw().raft.state == StateRole::Leader
}

/// Entry `index` of a node's log: its term and data, if the log still holds it.
pub fn entry_at(node: &Node<SimState, SimIo>, index: u64) -> Option<(u64, Bytes)> {
    let log = &node.raw().raft.raft_log;
    let e = log
        .slice(index, index + 1, None, GetEntriesContext::empty(false))
        .ok()?;
    e.into_iter().next().map(|e| (e.term, e.data))
}
