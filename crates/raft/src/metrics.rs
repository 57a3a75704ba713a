//! The replication layer's Prometheus metrics: process-wide statics (atomics inside), so the
//! raft loop and the log writer update them without locks or plumbing. They belong to no
//! registry here; the server registers them in its own with [`RaftMetrics::register`].

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Latency buckets, in seconds, from 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Snapshot duration buckets, in seconds, from 1 ms to 2 min (a million keys take seconds).
pub const SNAPSHOT_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Everything the replication layer exports.
pub struct RaftMetrics {
    /// Proposals handed to raft (writes and membership changes).
    pub proposals: IntCounter,
    /// Proposals refused before raft took them: no leader known, or raft dropped them.
    pub proposals_failed: IntCounter,
    /// 1 while this node knows a leader, 0 during an election.
    pub has_leader: IntGauge,
    /// 1 on the leader, 0 elsewhere.
    pub is_leader: IntGauge,
    /// The raft term this node is in.
    pub term: IntGauge,
    /// Highest log index this node knows committed (minus `applied_index`: the apply lag).
    pub commit_index: IntGauge,
    /// Time from the start of a snapshot of this node's own state to its file being durable.
    pub snapshot_seconds: Histogram,
    /// Snapshots received from the leader and installed.
    pub snapshots_installed: IntCounter,
    /// On the leader: time from a heartbeat to a peer to its answer, by peer id.
    pub peer_round_trip_seconds: HistogramVec,
    /// 1 while this node has a working connection to the peer, by peer id.
    pub peer_reachable: IntGaugeVec,
    /// Duration of each WAL fsync, in seconds.
    pub fsync_seconds: Histogram,
    /// Times this node saw the leader change.
    pub leader_changes: IntCounter,
    /// Highest applied log index.
    pub applied_index: IntGauge,
    /// Snapshots written by this node.
    pub snapshots: IntCounter,
    /// Bytes in the write-ahead log.
    pub wal_bytes: IntGauge,
    /// Peer messages dropped before raft saw them, by reason (see `node::guard`).
    pub peer_refused: IntCounterVec,
}

fn build() -> Result<RaftMetrics, prometheus::Error> {
    Ok(RaftMetrics {
        proposals: IntCounter::new("proposals_total", "Proposals handed to raft")?,
        proposals_failed: IntCounter::new(
            "proposals_failed_total",
            "Proposals refused before raft took them (no leader)",
        )?,
        has_leader: IntGauge::new("has_leader", "1 if this node knows a leader")?,
        is_leader: IntGauge::new("is_leader", "1 if this node is the leader")?,
        term: IntGauge::new("term", "The raft term of this node")?,
        commit_index: IntGauge::new("commit_index", "Highest log index known committed")?,
        snapshot_seconds: Histogram::with_opts(
            HistogramOpts::new(
                "snapshot_duration_seconds",
                "Time to serialize and durably write a snapshot of this node's state",
            )
            .buckets(SNAPSHOT_BUCKETS.to_vec()),
        )?,
        snapshots_installed: IntCounter::new(
            "snapshots_installed_total",
            "Snapshots received from the leader and installed",
        )?,
        peer_round_trip_seconds: HistogramVec::new(
            HistogramOpts::new(
                "peer_round_trip_seconds",
                "Leader's heartbeat round trip to each peer",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["peer"],
        )?,
        peer_reachable: IntGaugeVec::new(
            Opts::new(
                "peer_reachable",
                "1 if this node has a working connection to the peer",
            ),
            &["peer"],
        )?,
        fsync_seconds: Histogram::with_opts(
            HistogramOpts::new("wal_fsync_duration_seconds", "WAL fsync latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )?,
        leader_changes: IntCounter::new("leader_changes_total", "Leader changes seen")?,
        applied_index: IntGauge::new("applied_index", "Highest applied log index")?,
        snapshots: IntCounter::new("snapshots_total", "Snapshots written")?,
        wal_bytes: IntGauge::new("wal_bytes", "Bytes in the write-ahead log")?,
        peer_refused: IntCounterVec::new(
            Opts::new(
                "peer_messages_refused_total",
                "Peer messages refused before raft saw them, by reason",
            ),
            &["reason"],
        )?,
    })
}

/// The process's replication metrics.
pub static METRICS: LazyLock<RaftMetrics> = LazyLock::new(|| match build() {
    Ok(m) => m,
    // Only reachable through a programming error in the fixed definitions above.
    Err(e) => panic!("invalid metric definitions: {e}"),
});

impl RaftMetrics {
    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.proposals.clone()))?;
        registry.register(Box::new(self.proposals_failed.clone()))?;
        for gauge in [
            &self.has_leader,
            &self.is_leader,
            &self.term,
            &self.commit_index,
        ] {
            registry.register(Box::new(gauge.clone()))?;
        }
        registry.register(Box::new(self.snapshot_seconds.clone()))?;
        registry.register(Box::new(self.snapshots_installed.clone()))?;
        registry.register(Box::new(self.peer_round_trip_seconds.clone()))?;
        registry.register(Box::new(self.peer_reachable.clone()))?;
        registry.register(Box::new(self.fsync_seconds.clone()))?;
        registry.register(Box::new(self.leader_changes.clone()))?;
        registry.register(Box::new(self.applied_index.clone()))?;
        registry.register(Box::new(self.snapshots.clone()))?;
        registry.register(Box::new(self.wal_bytes.clone()))?;
        registry.register(Box::new(self.peer_refused.clone()))?;
        Ok(())
    }
}
