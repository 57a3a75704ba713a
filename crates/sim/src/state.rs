//! The state machine the simulated nodes run: coordinate's own [`Store`], wrapped to record
//! what it applied at each index, so that the simulator can check that no two nodes ever
//! apply different commands at one index.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use coordinate_raft::StateMachine;
use coordinate_server::kv::{Command, Kv, LeaseId, Outcome};
use coordinate_server::lessor::Lessor;
use coordinate_server::quota::Quota;
use coordinate_server::state::{Clock, Query, ReadResult, Store, StoreStatus};
use coordinate_server::watch::{WatchHub, WatchLimits};

/// The largest value a command may carry (the HTTP limit's default).
const MAX_VALUE: usize = 1 << 20;

/// [`Store`] plus the log of what it applied in this run of the node.
pub struct SimState {
    store: Store,
    /// The lease deadlines on this node's clock (the leader's keeper reads them).
    pub lessor: Arc<Lessor>,
    /// `(index, command)` of every normal entry applied since this run of the node began
    /// (entries under a snapshot it installed are not listed).
    pub applied: Vec<(u64, Bytes)>,
    /// Leases revoked because they expired, in apply order, in this run of the node.
    pub expired: Vec<LeaseId>,
}

impl SimState {
    /// The store over `kv`, its lease deadlines on `clock` (the node's drifting clock).
    pub fn new(kv: Kv, clock: Clock) -> SimState {
        let hub = WatchHub::new(
            WatchLimits {
                window: 1000,
                window_bytes: 1 << 20,
                max_watchers: 16,
            },
            kv.revision(),
        );
        let lessor = Arc::new(Lessor::new());
        let store = Store::with_clock(
            kv,
            Arc::new(hub),
            lessor.clone(),
            Arc::new(Quota::new(u64::MAX)),
            MAX_VALUE,
            Arc::new(AtomicU64::new(0)),
            clock,
        );
        SimState {
            store,
            lessor,
            applied: Vec::new(),
            expired: Vec::new(),
        }
    }
}

impl StateMachine for SimState {
    type Output = <Store as StateMachine>::Output;
    type Query = Query;
    type Read = ReadResult;
    type Status = StoreStatus;
    type Snapshot = Kv;
    type Error = coordinate_server::error::Error;

    fn apply(&mut self, index: u64, command: &Bytes) -> Self::Output {
        self.applied.push((index, command.clone()));
        let output = self.store.apply(index, command);
        if let Ok(Outcome::LeaseRevoked { id, .. }) = &output {
            if matches!(
                Command::decode(command.clone()),
                Ok(Command::LeaseExpire { .. })
            ) {
                self.expired.push(*id);
            }
        }
        output
    }
    fn applied(&mut self, index: u64) {
        self.store.applied(index)
    }
    fn query(&self, query: &Query) -> ReadResult {
        self.store.query(query)
    }
    fn check_proposal(&self, command: &Bytes) -> Result<(), Self::Error> {
        self.store.check_proposal(command)
    }
    fn members(&self) -> &BTreeMap<u64, String> {
        self.store.members()
    }
    fn add_member(&mut self, id: u64, url: Option<String>) {
        self.store.add_member(id, url)
    }
    fn remove_member(&mut self, id: u64) {
        self.store.remove_member(id)
    }
    fn removed(&self) -> &BTreeSet<u64> {
        self.store.removed()
    }
    fn data_bytes(&self) -> u64 {
        self.store.data_bytes()
    }
    fn begin_snapshot(&mut self) {
        self.store.begin_snapshot()
    }
    fn snapshot_step(&mut self, budget: usize) -> Option<Bytes> {
        self.store.snapshot_step(budget)
    }
    fn is_snapshotting(&self) -> bool {
        self.store.is_snapshotting()
    }
    fn parse_snapshot(&self, data: Bytes) -> Result<Kv, Self::Error> {
        self.store.parse_snapshot(data)
    }
    fn snapshot_members(snapshot: &Kv) -> &BTreeMap<u64, String> {
        Store::snapshot_members(snapshot)
    }
    fn install(&mut self, snapshot: Kv) {
        self.store.install(snapshot)
    }
    fn status(&self) -> StoreStatus {
        self.store.status()
    }
}
