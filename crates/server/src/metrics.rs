//! Prometheus metrics: one registry for the process, exported as text on `GET /metrics`.
//!
//! The metric handles are process-wide statics (atomics inside), so the handlers and the
//! state machine update them without locks or plumbing. The replication layer's own metrics
//! (`coordinate_raft::metrics`) are registered here too, under the same `coordinate_` prefix.

use std::sync::LazyLock;

use coordinate_raft::metrics::LATENCY_BUCKETS;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Everything this process exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status code.
    pub requests: IntCounterVec,
    /// HTTP request latency by route, in seconds.
    pub request_seconds: HistogramVec,
    /// Current store revision.
    pub revision: IntGauge,
    /// Active watchers.
    pub watchers: IntGauge,
    /// Watches refused because `--max-watchers` were open.
    pub watchers_refused: IntCounter,
    /// Open client connections.
    pub client_connections: IntGauge,
    /// Client connections refused because `--max-connections` were open.
    pub connections_refused: IntCounter,
    /// Failed accepts on the client port (e.g. out of file descriptors).
    pub accept_errors: IntCounter,
    /// Client connections whose TLS handshake failed or timed out.
    pub tls_handshake_failures: IntCounter,
    /// Bytes of values and keys held in the watch history.
    pub watch_history_bytes: IntGauge,
    /// The oldest revision still readable (the compaction point).
    pub compact_revision: IntGauge,
    /// Bytes of every kept version, history included (what the quota bounds).
    pub store_bytes: IntGauge,
    /// `--quota-backend-bytes`.
    pub quota_bytes: IntGauge,
    /// Leases that exist.
    pub leases: IntGauge,
    /// Leases this node (as leader) found expired and revoked.
    pub lease_expiries: IntCounter,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("coordinate".into()), None)?;
    let m = Metrics {
        requests: IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )?,
        request_seconds: HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?,
        revision: IntGauge::new("revision", "Current store revision")?,
        watchers: IntGauge::new("watchers", "Active watchers")?,
        watchers_refused: IntCounter::new(
            "watchers_refused_total",
            "Watches refused at the --max-watchers cap",
        )?,
        client_connections: IntGauge::new("client_connections", "Open client connections")?,
        connections_refused: IntCounter::new(
            "client_connections_refused_total",
            "Client connections refused at the --max-connections cap",
        )?,
        tls_handshake_failures: IntCounter::new(
            "client_tls_handshake_failures_total",
            "Client connections whose TLS handshake failed or timed out",
        )?,
        accept_errors: IntCounter::new(
            "client_accept_errors_total",
            "Failed accepts on the client port",
        )?,
        watch_history_bytes: IntGauge::new(
            "watch_history_bytes",
            "Bytes held in the watch history",
        )?,
        compact_revision: IntGauge::new("compact_revision", "The oldest revision still readable")?,
        store_bytes: IntGauge::new(
            "store_bytes",
            "Bytes of keys and values of every kept version (what the quota bounds)",
        )?,
        quota_bytes: IntGauge::new("quota_bytes", "The store's quota (--quota-backend-bytes)")?,
        leases: IntGauge::new("leases", "Leases that exist")?,
        lease_expiries: IntCounter::new(
            "lease_expiries_total",
            "Leases this node, as leader, found expired and revoked",
        )?,
        registry,
    };
    m.registry.register(Box::new(m.requests.clone()))?;
    m.registry.register(Box::new(m.request_seconds.clone()))?;
    m.registry.register(Box::new(m.revision.clone()))?;
    m.registry.register(Box::new(m.watchers.clone()))?;
    m.registry.register(Box::new(m.watchers_refused.clone()))?;
    m.registry
        .register(Box::new(m.client_connections.clone()))?;
    m.registry
        .register(Box::new(m.connections_refused.clone()))?;
    m.registry.register(Box::new(m.accept_errors.clone()))?;
    m.registry
        .register(Box::new(m.tls_handshake_failures.clone()))?;
    m.registry
        .register(Box::new(m.watch_history_bytes.clone()))?;
    for gauge in [
        &m.compact_revision,
        &m.store_bytes,
        &m.quota_bytes,
        &m.leases,
    ] {
        m.registry.register(Box::new(gauge.clone()))?;
    }
    m.registry.register(Box::new(m.lease_expiries.clone()))?;
    coordinate_raft::metrics::METRICS.register(&m.registry)?;
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
        coordinate_raft::metrics::METRICS
            .fsync_seconds
            .observe(0.001);
        let text = METRICS.render();
        for name in [
            "coordinate_http_requests_total",
            "coordinate_wal_fsync_duration_seconds_bucket",
            "coordinate_applied_index",
            "coordinate_leader_changes_total",
            "coordinate_store_bytes",
            "coordinate_compact_revision",
            "coordinate_leases",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
