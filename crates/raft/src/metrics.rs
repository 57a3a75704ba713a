//! The replication layer's Prometheus metrics: process-wide statics (atomics inside), so the
//! raft loop and the log writer update them without locks or plumbing. They belong to no
//! registry here; the server registers them in its own with [`RaftMetrics::register`].

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Latency buckets, in seconds, from 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Everything the replication layer exports.
pub struct RaftMetrics {
    /// Proposals handed to raft (writes and membership changes).
    pub proposals: IntCounter,
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
        registry.register(Box::new(self.fsync_seconds.clone()))?;
        registry.register(Box::new(self.leader_changes.clone()))?;
        registry.register(Box::new(self.applied_index.clone()))?;
        registry.register(Box::new(self.snapshots.clone()))?;
        registry.register(Box::new(self.wal_bytes.clone()))?;
        registry.register(Box::new(self.peer_refused.clone()))?;
        Ok(())
    }
}
