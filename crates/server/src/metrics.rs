//! Prometheus metrics: one registry for the process, exported as text on `GET /metrics`.
//!
//! The metric handles are process-wide statics (atomics inside), so the handlers and the
//! state machine update them without locks or plumbing. The replication layer's own metrics
//! (`coordinate_raft::metrics`) are registered here too, under the same `coordinate_` prefix.
//!
//! The standard `process_*` metrics (resident and virtual memory, CPU seconds, open and
//! maximum file descriptors, start time) are sampled from `/proc/self` at every scrape, under
//! their usual unprefixed names: dashboards expect them, and etcdctl's `check datascale`
//! refuses to run without `process_resident_memory_bytes`.

use std::sync::LazyLock;

use coordinate_raft::metrics::LATENCY_BUCKETS;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Everything this process exports.
pub struct Metrics {
    registry: Registry,
    /// The `process_*` metrics, unprefixed, set at each scrape.
    process: ProcessMetrics,
    /// HTTP requests by route and status code.
    pub requests: IntCounterVec,
    /// HTTP request latency by route, in seconds.
    pub request_seconds: HistogramVec,
    /// gRPC calls by method (`KV/Range`) and gRPC status code name (`OK`, `Unavailable`).
    pub grpc_requests: IntCounterVec,
    /// gRPC unary call latency by method, in seconds (streams are counted, not timed).
    pub grpc_seconds: HistogramVec,
    /// Alarms raised (NOSPACE), cluster-wide, as this node has applied them.
    pub alarms: IntGauge,
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
        grpc_requests: IntCounterVec::new(
            Opts::new(
                "grpc_requests_total",
                "gRPC calls by method and status code",
            ),
            &["method", "code"],
        )?,
        grpc_seconds: HistogramVec::new(
            HistogramOpts::new("grpc_request_duration_seconds", "gRPC unary call latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )?,
        alarms: IntGauge::new("alarms", "Alarms raised (NOSPACE)")?,
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
        process: ProcessMetrics::new()?,
    };
    m.registry.register(Box::new(m.requests.clone()))?;
    m.registry.register(Box::new(m.request_seconds.clone()))?;
    m.registry.register(Box::new(m.grpc_requests.clone()))?;
    m.registry.register(Box::new(m.grpc_seconds.clone()))?;
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
        &m.alarms,
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
        self.process.sample();
        let mut families = self.registry.gather();
        families.extend(self.process.registry.gather());
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The standard process metrics, read from `/proc/self` when scraped.
struct ProcessMetrics {
    registry: Registry,
    resident: Gauge,
    virtual_bytes: Gauge,
    cpu_seconds: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_seconds: Gauge,
}

impl ProcessMetrics {
    fn new() -> prometheus::Result<ProcessMetrics> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> prometheus::Result<Gauge> {
            let g = Gauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(ProcessMetrics {
            resident: gauge("process_resident_memory_bytes", "Resident memory in bytes")?,
            virtual_bytes: gauge("process_virtual_memory_bytes", "Virtual memory in bytes")?,
            cpu_seconds: gauge(
                "process_cpu_seconds_total",
                "User and system CPU time spent, in seconds",
            )?,
            open_fds: gauge("process_open_fds", "Open file descriptors")?,
            max_fds: gauge("process_max_fds", "The open-file limit")?,
            start_seconds: gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
            )?,
            registry,
        })
    }

    /// Sets every gauge from `/proc/self`; a value that cannot be read keeps its last one.
    fn sample(&self) {
        if let Some(stat) = read_stat() {
            self.resident.set(stat.rss_bytes as f64);
            self.virtual_bytes.set(stat.vsize_bytes as f64);
            self.cpu_seconds.set(stat.cpu_seconds);
            self.start_seconds.set(stat.start_seconds);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as f64);
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            self.max_fds.set(limit.rlim_cur as f64);
        }
    }
}

/// What `/proc/self/stat` says of this process.
struct Stat {
    rss_bytes: u64,
    vsize_bytes: u64,
    cpu_seconds: f64,
    start_seconds: f64,
}

fn read_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    parse_stat(&text, &boot, clock_ticks()?, page_size()?)
}

/// Parses `/proc/self/stat` (`text`) with `/proc/stat` (`boot`, for the boot time).
fn parse_stat(text: &str, boot: &str, ticks: f64, page: u64) -> Option<Stat> {
    // The command name is in parentheses and may hold spaces: fields follow the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields counted from 3 (state) on: utime 14, stime 15, starttime 22, vsize 23, rss 24.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let boot_time = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Stat {
        rss_bytes: field(24)? * page,
        vsize_bytes: field(23)?,
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        start_seconds: boot_time as f64 + field(22)? as f64 / ticks,
    })
}

fn clock_ticks() -> Option<f64> {
    sysconf(libc::_SC_CLK_TCK).map(|n| n as f64)
}

fn page_size() -> Option<u64> {
    sysconf(libc::_SC_PAGESIZE)
}

/// A positive system configuration value.
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let n = unsafe { libc::sysconf(name) };
    u64::try_from(n).ok().filter(|&n| n > 0)
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

    #[test]
    fn process_metrics_are_this_processs() {
        let text = METRICS.render();
        let value = |name: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
            line[name.len() + 1..].parse().unwrap()
        };
        // A running test binary holds megabytes, a few descriptors, and started after 2020.
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_start_time_seconds") > 1.5e9);
    }

    #[test]
    fn a_stat_line_with_spaces_in_its_name_parses() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 8 0 1000 8192000 300 \
                    18446744073709551615 1 1 0 0 0";
        let parsed = parse_stat(stat, "cpu 1 2 3\nbtime 1700000000\n", 100.0, 4096).unwrap();
        assert_eq!(parsed.rss_bytes, 300 * 4096);
        assert_eq!(parsed.vsize_bytes, 8_192_000);
        assert_eq!(parsed.cpu_seconds, 2.0);
        assert_eq!(parsed.start_seconds, 1_700_000_010.0);
        assert!(parse_stat("garbage", "btime 1", 100.0, 4096).is_none());
    }
}
