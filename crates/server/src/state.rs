//! [`Store`]: the key-value state machine as the raft crate drives it — [`Kv`] plus what the
//! node must not know about: decoding log commands, publishing applied changes to watchers,
//! the size limits a forwarded proposal is checked against, and the read queries.
//!
//! Everything here runs on the raft loop's task, in log order (see
//! `coordinate_raft::state_machine` for the contract).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use coordinate_raft::StateMachine;

use crate::error::{Error, Result};
use crate::kv::{
    self, Alarm, Command, CompareTarget, Event, Kv, LeaseId, MemberAttributes, Outcome, RangeQuery,
    RangeResult, Refusal, TxnOp,
};
use crate::lessor::Lessor;
use crate::metrics::METRICS;
use crate::quota::Quota;
use crate::watch::WatchHub;

/// What a read asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// Keys of a range, at a revision, shaped.
    Range(RangeQuery),
    /// The changes of whole revisions from `from` on, about `max_bytes` of keys and values
    /// of them (a watch catching up from the history).
    Changes { from: u64, max_bytes: usize },
    /// One lease: its TTL and attached keys.
    Lease(LeaseId),
    /// Every lease's id.
    Leases,
    /// The alarms raised.
    Alarms,
    /// The oldest revision still readable.
    CompactRevision,
    /// A hash of the history readable up to a revision (0: the current one).
    Hash(u64),
    /// What the members published about themselves.
    Members,
}

/// A lease as the state holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: LeaseId,
    /// The TTL it was granted, in seconds.
    pub ttl: i64,
    /// The log index of its last grant or keep-alive.
    pub renewed_at: u64,
    pub keys: Vec<Bytes>,
}

/// What a read returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    Range(std::result::Result<RangeResult, Refusal>),
    /// The events, and the first revision not included.
    Changes(std::result::Result<(Vec<Event>, u64), Refusal>),
    /// The lease (`None`: it does not exist), and the store revision.
    Lease(Option<LeaseInfo>, u64),
    Leases(Vec<LeaseId>, u64),
    Alarms(Vec<Alarm>, u64),
    CompactRevision(u64),
    /// The hash, the revision it covers, and the compaction point.
    Hash(std::result::Result<(u32, u64), Refusal>, u64),
    /// Each member's published attributes (a member that has not published is absent).
    Members(BTreeMap<u64, MemberAttributes>),
}

/// What the store adds to the node's status.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoreStatus {
    /// Keys that exist now.
    pub keys: usize,
    /// Bytes of the keys and values that exist now.
    pub data_bytes: u64,
    /// Bytes of every kept version, history included (what the quota bounds).
    pub total_bytes: u64,
    /// The store revision.
    pub revision: u64,
    /// The oldest revision still readable.
    pub compact_revision: u64,
    pub leases: usize,
}

/// The replicated key-value store.
pub struct Store {
    kv: Kv,
    watch: Arc<WatchHub>,
    /// Lease deadlines on this node's clock, kept in step with the leases applied.
    lessor: Arc<Lessor>,
    /// The store's size as the quota measures it, published after every batch.
    quota: Arc<Quota>,
    /// Changes applied in the current batch, published to watchers at its end.
    events: Vec<Event>,
    /// Entries applied in the current batch: the physical compaction's budget grows with it.
    applied_in_batch: usize,
    /// Largest value a command may write or compare (the HTTP limit).
    max_value_size: usize,
    /// The cluster id response headers carry: the state's, once it has one.
    cluster: Arc<AtomicU64>,
    /// This node's clock, for lease deadlines.
    clock: Clock,
}

/// A node's monotonic clock: `Instant::now` in production, a simulator's time in tests.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

impl Store {
    pub fn new(
        kv: Kv,
        watch: Arc<WatchHub>,
        lessor: Arc<Lessor>,
        quota: Arc<Quota>,
        max_value_size: usize,
        cluster: Arc<AtomicU64>,
    ) -> Store {
        let clock: Clock = Arc::new(Instant::now);
        Store::with_clock(kv, watch, lessor, quota, max_value_size, cluster, clock)
    }

    /// [`Store::new`] with lease deadlines on `clock`.
    pub fn with_clock(
        kv: Kv,
        watch: Arc<WatchHub>,
        lessor: Arc<Lessor>,
        quota: Arc<Quota>,
        max_value_size: usize,
        cluster: Arc<AtomicU64>,
        clock: Clock,
    ) -> Store {
        lessor.reset(lease_terms(&kv), clock());
        quota.set_used(kv.total_bytes());
        publish_cluster_id(&kv, &cluster);
        Store {
            kv,
            watch,
            lessor,
            quota,
            events: Vec::new(),
            applied_in_batch: 0,
            max_value_size,
            cluster,
            clock,
        }
    }

    /// The store's gauges, after a batch or a snapshot.
    fn publish_metrics(&self) {
        METRICS.revision.set(self.kv.revision() as i64);
        METRICS
            .compact_revision
            .set(self.kv.compact_revision() as i64);
        METRICS.store_bytes.set(self.kv.total_bytes() as i64);
        METRICS.leases.set(self.kv.lease_count() as i64);
        METRICS.alarms.set(self.kv.alarms().count() as i64);
    }

    /// Keeps the lessor in step with what a lease command did.
    fn track_leases(&self, index: u64, outcome: &Outcome) {
        match outcome {
            Outcome::LeaseGranted { id, ttl } | Outcome::LeaseRenewed { id, ttl } => {
                self.lessor.renewed(*id, *ttl, index, (self.clock)())
            }
            Outcome::LeaseRevoked { id, .. } => self.lessor.removed(*id),
            _ => {}
        }
    }

    /// Answers a read from the current state.
    fn read(&self, query: &Query) -> ReadResult {
        let revision = self.kv.revision();
        match query {
            Query::Range(q) => ReadResult::Range(self.kv.range(q)),
            Query::Changes { from, max_bytes } => {
                ReadResult::Changes(self.kv.changes(*from, *max_bytes))
            }
            Query::Lease(id) => {
                let info = self.kv.lease(*id).map(|l| LeaseInfo {
                    id: *id,
                    ttl: l.ttl,
                    renewed_at: l.renewed_at,
                    keys: l.keys.iter().cloned().collect(),
                });
                ReadResult::Lease(info, revision)
            }
            Query::Leases => {
                ReadResult::Leases(self.kv.leases().map(|(id, _)| *id).collect(), revision)
            }
            Query::Alarms => ReadResult::Alarms(self.kv.alarms().copied().collect(), revision),
            Query::CompactRevision => ReadResult::CompactRevision(self.kv.compact_revision()),
            Query::Hash(at) => ReadResult::Hash(self.kv.hash(*at), self.kv.compact_revision()),
            Query::Members => ReadResult::Members(self.kv.attributes().clone()),
        }
    }
}

impl StateMachine for Store {
    /// A command that does not decode is rejected identically on every replica.
    type Output = Result<Outcome>;
    type Query = Query;
    type Read = ReadResult;
    type Status = StoreStatus;
    type Snapshot = Kv;
    type Error = Error;

    fn apply(&mut self, index: u64, command: &Bytes) -> Result<Outcome> {
        let result =
            Command::decode(command.clone()).map(|cmd| self.kv.apply(index, cmd, &mut self.events));
        self.applied_in_batch += 1;
        if let Ok(outcome) = &result {
            self.track_leases(index, outcome);
        }
        if let Err(err) = &result {
            tracing::warn!(index, error = %err, "skipping a malformed command");
        }
        result
    }

    fn applied(&mut self, _index: u64) {
        self.watch.publish(std::mem::take(&mut self.events));
        // The physical compaction, a bounded slice per batch (see kv::mvcc).
        let batch = std::mem::take(&mut self.applied_in_batch);
        self.kv.compact_step(kv::compaction_budget(batch));
        self.quota.set_used(self.kv.total_bytes());
        self.publish_metrics();
    }

    fn query(&self, query: &Query) -> ReadResult {
        self.read(query)
    }

    fn check_proposal(&self, command: &Bytes) -> Result<()> {
        let cmd = Command::decode(command.clone())?;
        match largest_value(&cmd) {
            n if n > self.max_value_size => Err(Error::Malformed(format!(
                "a value of {n} bytes exceeds {}",
                self.max_value_size
            ))),
            _ => Ok(()),
        }
    }

    fn members(&self) -> &BTreeMap<u64, String> {
        self.kv.members()
    }

    fn add_member(&mut self, id: u64, url: Option<String>) {
        self.kv.add_member(id, url);
    }

    fn remove_member(&mut self, id: u64) {
        self.kv.remove_member(id);
    }

    fn removed(&self) -> &BTreeSet<u64> {
        self.kv.removed()
    }

    /// The live keys and values: what the snapshot threshold compares the log with. Not the
    /// history too, which grows with the log it came from, so a snapshot would never be due
    /// by bytes while the history is uncompacted.
    fn data_bytes(&self) -> u64 {
        self.kv.live_bytes()
    }

    fn begin_snapshot(&mut self) {
        self.kv.begin_snapshot();
    }

    fn snapshot_step(&mut self, budget: usize) -> Option<Bytes> {
        self.kv.snapshot_step(budget)
    }

    fn is_snapshotting(&self) -> bool {
        self.kv.is_snapshotting()
    }

    fn parse_snapshot(&self, data: Bytes) -> Result<Kv> {
        Kv::restore(data)
    }

    fn snapshot_members(snapshot: &Kv) -> &BTreeMap<u64, String> {
        snapshot.members()
    }

    fn install(&mut self, snapshot: Kv) {
        self.kv = snapshot;
        self.lessor.reset(lease_terms(&self.kv), (self.clock)());
        self.quota.set_used(self.kv.total_bytes());
        publish_cluster_id(&self.kv, &self.cluster);
        // Open watchers read on from the new state's history.
        self.watch.reset(self.kv.revision());
        self.publish_metrics();
        tracing::info!(
            keys = self.kv.len(),
            revision = self.kv.revision(),
            "state machine restored from a snapshot"
        );
    }

    fn status(&self) -> StoreStatus {
        StoreStatus {
            keys: self.kv.len(),
            data_bytes: self.kv.live_bytes(),
            total_bytes: self.kv.total_bytes(),
            revision: self.kv.revision(),
            compact_revision: self.kv.compact_revision(),
            leases: self.kv.lease_count(),
        }
    }
}

/// Makes the state's cluster id the one headers carry; a state from a build that kept none
/// leaves the one the node derived from its flags.
fn publish_cluster_id(kv: &Kv, cluster: &AtomicU64) {
    if kv.cluster_id() != 0 {
        cluster.store(kv.cluster_id(), Ordering::Relaxed);
    }
}

/// Every lease as `(id, ttl, renewed_at)`, for the lessor.
fn lease_terms(kv: &Kv) -> impl Iterator<Item = (LeaseId, i64, u64)> + '_ {
    kv.leases().map(|(id, l)| (*id, l.ttl, l.renewed_at))
}

/// The largest value a command writes or compares.
fn largest_value(cmd: &Command) -> usize {
    match cmd {
        Command::Put(put) => put.value.len(),
        Command::Txn(txn) => largest_in_txn(txn),
        _ => 0,
    }
}

fn largest_in_txn(txn: &kv::Txn) -> usize {
    let compared = txn.compares.iter().map(|c| match &c.target {
        CompareTarget::Value(v) | CompareTarget::ValueOrMissing(v) => v.len(),
        _ => 0,
    });
    let written = txn.success.iter().chain(&txn.failure).map(|op| match op {
        TxnOp::Put(put) => put.value.len(),
        TxnOp::Txn(nested) => largest_in_txn(nested),
        TxnOp::Delete(_) | TxnOp::Range(_) => 0,
    });
    compared.chain(written).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Compare, CompareOp, KeyRange, Put, Txn};
    use crate::watch::WatchLimits;

    fn store(max_value_size: usize) -> Store {
        let limits = WatchLimits {
            window: 16,
            window_bytes: 1 << 20,
            max_watchers: 4,
        };
        Store::new(
            Kv::default(),
            Arc::new(WatchHub::new(limits, 0)),
            Arc::new(Lessor::new()),
            Arc::new(Quota::new(1 << 30)),
            max_value_size,
            Arc::new(AtomicU64::new(0)),
        )
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn forwarded_commands_are_what_the_api_accepts() {
        let s = store(10);
        let check = |cmd: &Command| s.check_proposal(&cmd.encode());
        assert_eq!(check(&Command::put(b("k"), b("v"))), Ok(()));
        // Too large a value, in a put, a transaction's write, a nested one, or a compare.
        let big = Bytes::from(vec![0u8; 11]);
        assert!(check(&Command::put(b("k"), big.clone())).is_err());
        let txn = |compares, success| Txn {
            compares,
            success,
            failure: Vec::new(),
        };
        let write = txn(Vec::new(), vec![TxnOp::Put(Put::new(b("k"), big.clone()))]);
        assert!(check(&Command::Txn(write.clone())).is_err());
        let nested = txn(Vec::new(), vec![TxnOp::Txn(write)]);
        assert!(check(&Command::Txn(nested)).is_err());
        let compare = txn(
            vec![Compare {
                range: KeyRange::Key(b("k")),
                op: CompareOp::Equal,
                target: CompareTarget::Value(big),
            }],
            Vec::new(),
        );
        assert!(check(&Command::Txn(compare)).is_err());
        // Not a command; empty.
        assert!(s.check_proposal(&Bytes::from_static(&[9, 9, 9])).is_err());
        assert!(s.check_proposal(&Bytes::new()).is_err());
    }

    #[test]
    fn a_malformed_command_fails_in_its_output_and_changes_nothing() {
        let mut s = store(10);
        assert!(s.apply(1, &Bytes::from_static(&[9, 9, 9])).is_err());
        let put = Command::put(b("k"), b("v")).encode();
        assert!(matches!(
            s.apply(2, &put),
            Ok(Outcome::Put { revision: 1, .. })
        ));
        s.applied(2);
        assert_eq!(s.status().revision, 1);
        let ReadResult::Range(Ok(read)) = s.query(&Query::Range(RangeQuery::key(b("k")))) else {
            panic!("a range read answers a range");
        };
        assert_eq!(read.kvs.len(), 1);
    }

    #[test]
    fn leases_and_alarms_are_read_from_the_state() {
        let mut s = store(10);
        let grant = Command::LeaseGrant { id: 7, ttl: 5 };
        assert!(matches!(
            s.apply(1, &grant.encode()),
            Ok(Outcome::LeaseGranted { id: 7, ttl: 5 })
        ));
        let put = Command::Put(Put {
            lease: 7,
            ..Put::new(b("k"), b("v"))
        });
        assert!(s.apply(2, &put.encode()).is_ok());
        s.applied(2);
        let ReadResult::Lease(Some(lease), 1) = s.query(&Query::Lease(7)) else {
            panic!("lease 7 exists at revision 1");
        };
        assert_eq!(
            (lease.ttl, lease.renewed_at, lease.keys),
            (5, 1, vec![b("k")])
        );
        assert_eq!(s.query(&Query::Lease(8)), ReadResult::Lease(None, 1));
        assert_eq!(s.query(&Query::Leases), ReadResult::Leases(vec![7], 1));
        assert_eq!(s.status().leases, 1);
    }
}
