//! Prometheus metrics: one registry for the process, exported as text on `GET /metrics`.
//!
//! The metric handles are process-wide statics (atomics inside), so the raft loop and the
//! HTTP handlers update them without locks or plumbing.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Everything this process exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status code.
    pub requests: IntCounterVec,
    /// HTTP request latency by route, in seconds.
    pub request_seconds: HistogramVec,
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
    /// Current store revision.
    pub revision: IntGauge,
    /// Active watchers.
    pub watchers: IntGauge,
    /// Peer messages dropped before raft saw them, by reason (see `raft::node::guard`).
    pub peer_refused: IntCounterVec,
    /// Watches refused because `--max-watchers` were open.
    pub watchers_refused: IntCounter,
    /// Open client connections.
    pub client_connections: IntGauge,
    /// Client connections refused because `--max-connections` were open.
    pub connections_refused: IntCounter,
    /// Failed accepts on the client port (e.g. out of file descriptors).
    pub accept_errors: IntCounter,
    /// Bytes of values and keys held in the watch history.
    pub watch_history_bytes: IntGauge,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("coordinate".into()), None)?;
    let latency = vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ];
    let m = Metrics {
        requests: IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )?,
        request_seconds: HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(latency.clone()),
            &["route"],
        )?,
        proposals: IntCounter::new("proposals_total", "Proposals handed to raft")?,
        fsync_seconds: Histogram::with_opts(
            HistogramOpts::new("wal_fsync_duration_seconds", "WAL fsync latency").buckets(latency),
        )?,
        leader_changes: IntCounter::new("leader_changes_total", "Leader changes seen")?,
        applied_index: IntGauge::new("applied_index", "Highest applied log index")?,
        snapshots: IntCounter::new("snapshots_total", "Snapshots written")?,
        wal_bytes: IntGauge::new("wal_bytes", "Bytes in the write-ahead log")?,
        revision: IntGauge::new("revision", "Current store revision")?,
        watchers: IntGauge::new("watchers", "Active watchers")?,
        peer_refused: IntCounterVec::new(
            Opts::new(
                "peer_messages_refused_total",
                "Peer messages refused before raft saw them, by reason",
            ),
            &["reason"],
        )?,
        watchers_refused: IntCounter::new(
            "watchers_refused_total",
            "Watches refused at the --max-watchers cap",
        )?,
        client_connections: IntGauge::new("client_connections", "Open client connections")?,
        connections_refused: IntCounter::new(
            "client_connections_refused_total",
            "Client connections refused at the --max-connections cap",
        )?,
        accept_errors: IntCounter::new(
            "client_accept_errors_total",
            "Failed accepts on the client port",
        )?,
        watch_history_bytes: IntGauge::new(
            "watch_history_bytes",
            "Bytes held in the watch history",
        )?,
        registry,
    };
    m.registry.register(Box::new(m.requests.clone()))?;
    m.registry.register(Box::new(m.request_seconds.clone()))?;
    m.registry.register(Box::new(m.proposals.clone()))?;
    m.registry.register(Box::new(m.fsync_seconds.clone()))?;
    m.registry.register(Box::new(m.leader_changes.clone()))?;
    m.registry.register(Box::new(m.applied_index.clone()))?;
    m.registry.register(Box::new(m.snapshots.clone()))?;
    m.registry.register(Box::new(m.wal_bytes.clone()))?;
    m.registry.register(Box::new(m.revision.clone()))?;
    m.registry.register(Box::new(m.watchers.clone()))?;
    m.registry.register(Box::new(m.peer_refused.clone()))?;
    m.registry.register(Box::new(m.watchers_refused.clone()))?;
    m.registry
        .register(Box::new(m.client_connections.clone()))?;
    m.registry
        .register(Box::new(m.connections_refused.clone()))?;
    m.registry.register(Box::new(m.accept_errors.clone()))?;
    m.registry
        .register(Box::new(m.watch_history_bytes.clone()))?;
    Ok(m)
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| match build() {
    Ok(m) => m,
    // Only reachable through a programming error in the fixed definitions above.
    Err(e) => panic!("invalid metric definitions: {e}"),
});

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        METRICS.requests.with_label_values(&["kv_get", "200"]).inc();
        METRICS.fsync_seconds.observe(0.001);
        let text = METRICS.render();
        for name in [
            "coordinate_http_requests_total",
            "coordinate_wal_fsync_duration_seconds_bucket",
            "coordinate_applied_index",
            "coordinate_leader_changes_total",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
