//! Counting and reporting: per-worker statistics (latency histograms per operation kind,
//! errors by kind with a sample message), merged at the end into a [`Report`] that prints as a
//! table or serializes to JSON.
//!
//! Latencies are recorded in microseconds in an `hdrhistogram` with 3 significant digits, from
//! 1 µs to 10 minutes; only successful operations (including reads of a missing key) are in the
//! histograms. Errors and timeouts are counted separately and always printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::OpKind;

/// Largest latency the histograms hold (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 600_000_000;

fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_LATENCY_US, 3) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds are valid: {e}"),
    }
}

/// How often one kind of error happened, with the first message seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    pub count: u64,
    pub sample: String,
}

/// What one worker (or the merge of all of them) observed.
#[derive(Clone, Debug)]
pub struct Stats {
    pub put: Histogram<u64>,
    pub get: Histogram<u64>,
    /// Successful reads of a key that does not exist.
    pub not_found: u64,
    /// Errors by kind: `timeout`, `connect`, `transport`, `http <status>`, ...
    pub errors: BTreeMap<String, ErrorCount>,
    /// Requests over `--slow-ms` (at most [`MAX_SLOW`]).
    pub slow: Vec<SlowRequest>,
}

/// Slow requests kept for `--slow-ms` at most.
pub const MAX_SLOW: usize = 100_000;

/// A request over `--slow-ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlowRequest {
    /// When it started, from the start of the measured phase.
    pub at: Duration,
    pub connection: usize,
    pub kind: OpKind,
    pub latency: Duration,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            put: new_histogram(),
            get: new_histogram(),
            not_found: 0,
            errors: BTreeMap::new(),
            slow: Vec::new(),
        }
    }
}

impl Stats {
    pub fn record_slow(
        &mut self,
        at: Duration,
        connection: usize,
        kind: OpKind,
        latency: Duration,
    ) {
        if self.slow.len() < MAX_SLOW {
            self.slow.push(SlowRequest {
                at,
                connection,
                kind,
                latency,
            });
        }
    }

    /// The slow requests in the order they started, one line each.
    pub fn slow_timeline(&self) -> String {
        let mut slow = self.slow.clone();
        slow.sort_by_key(|r| r.at);
        slow.iter()
            .map(|r| {
                format!(
                    "slow {:>9.3}s  conn {:>4}  {} {:.2} ms\n",
                    r.at.as_secs_f64(),
                    r.connection,
                    r.kind.name(),
                    r.latency.as_secs_f64() * 1000.0
                )
            })
            .collect()
    }

    pub fn record_ok(&mut self, kind: OpKind, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        let h = match kind {
            OpKind::Put => &mut self.put,
            OpKind::Get => &mut self.get,
        };
        h.saturating_record(us);
    }

    pub fn record_error(&mut self, kind: &str, message: impl FnOnce() -> String) {
        match self.errors.get_mut(kind) {
            Some(e) => e.count += 1,
            None => {
                self.errors.insert(
                    kind.to_string(),
                    ErrorCount {
                        count: 1,
                        sample: message(),
                    },
                );
            }
        }
    }

    pub fn ok(&self) -> u64 {
        self.put.len() + self.get.len()
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.put.add(&other.put);
        let _ = self.get.add(&other.get);
        self.not_found += other.not_found;
        let room = MAX_SLOW.saturating_sub(self.slow.len());
        self.slow.extend(other.slow.iter().take(room));
        for (kind, e) in &other.errors {
            let entry = self
                .errors
                .entry(kind.clone())
                .or_insert_with(|| ErrorCount {
                    count: 0,
                    sample: e.sample.clone(),
                });
            entry.count += e.count;
        }
    }
}

/// Percentiles of one histogram, in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Option<LatencySummary> {
        if h.is_empty() {
            return None;
        }
        Some(LatencySummary {
            count: h.len(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        })
    }
}

/// The preload phase: every key written once before measuring.
#[derive(Clone, Debug, Serialize)]
pub struct PreloadReport {
    pub keys: u64,
    pub ok: u64,
    pub errors: BTreeMap<String, ErrorCount>,
    pub seconds: f64,
}

/// The whole result of a run, as printed and as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What was run (flattened: the JSON keeps one flat object).
    #[serde(flatten)]
    pub run: RunInfo,
    pub preload: Option<PreloadReport>,
    /// Measured time (after warm-up), in seconds.
    pub seconds: f64,
    /// Successful operations per second over the measured time.
    pub ops_per_sec: f64,
    pub ok: u64,
    pub not_found: u64,
    pub error_total: u64,
    pub errors: BTreeMap<String, ErrorCount>,
    /// Latency of successful operations, by kind (`put`, `get`, and `all`).
    pub latency: BTreeMap<String, LatencySummary>,
    /// CPU this tool used during the measured phase (warm-up included), in cores: near the
    /// machine's core count, the client itself is the limit. `None` where /proc is missing.
    pub client_cpu_cores: Option<f64>,
    /// The watchers held open during the run (`--watchers`), and what they received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::watchers::WatchReport>,
}

/// The report fields that describe the run rather than its results.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub target: String,
    pub workload: String,
    pub read_mode: String,
    pub read_ratio: Option<f64>,
    pub endpoints: Vec<String>,
    pub connections: usize,
    pub keys: u64,
    pub value_size: String,
}

impl Report {
    pub fn new(
        info: RunInfo,
        preload: Option<PreloadReport>,
        stats: &Stats,
        measured: Duration,
        client_cpu_cores: Option<f64>,
    ) -> Report {
        let mut latency = BTreeMap::new();
        for (name, h) in [
            (OpKind::Put.name(), &stats.put),
            (OpKind::Get.name(), &stats.get),
        ] {
            if let Some(s) = LatencySummary::of(h) {
                latency.insert(name.to_string(), s);
            }
        }
        if !stats.put.is_empty() && !stats.get.is_empty() {
            let mut all = stats.put.clone();
            let _ = all.add(&stats.get);
            if let Some(s) = LatencySummary::of(&all) {
                latency.insert("all".to_string(), s);
            }
        }
        let seconds = measured.as_secs_f64();
        let ok = stats.ok();
        Report {
            run: info,
            preload,
            seconds: (seconds * 1000.0).round() / 1000.0,
            ops_per_sec: if seconds > 0.0 {
                (ok as f64 / seconds * 10.0).round() / 10.0
            } else {
                0.0
            },
            ok,
            not_found: stats.not_found,
            error_total: stats.error_total(),
            errors: stats.errors.clone(),
            latency,
            client_cpu_cores: client_cpu_cores.map(|c| (c * 100.0).round() / 100.0),
            watch: None,
        }
    }

    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "target {} at {}, {} connection{}, workload {}{}, {} keys, values {} B",
            self.run.target,
            self.run.endpoints.join(","),
            self.run.connections,
            if self.run.connections == 1 { "" } else { "s" },
            self.run.workload,
            match (self.run.workload.as_str(), self.run.read_ratio) {
                ("put", _) => String::new(),
                ("mixed", Some(r)) => format!(" ({:.0}% {} reads)", r * 100.0, self.run.read_mode),
                _ => format!(" ({} reads)", self.run.read_mode),
            },
            self.run.keys,
            self.run.value_size,
        );
        if let Some(p) = &self.preload {
            let errors: u64 = p.errors.values().map(|e| e.count).sum();
            let _ = writeln!(
                s,
                "preload: {} of {} keys written in {:.1} s, {} error{}",
                p.ok,
                p.keys,
                p.seconds,
                errors,
                if errors == 1 { "" } else { "s" }
            );
            write_errors(&mut s, &p.errors);
        }
        let _ = writeln!(
            s,
            "{} ok ops in {:.2} s: {} ops/s; {} error{}{}",
            self.ok,
            self.seconds,
            thousands(self.ops_per_sec.round() as u64),
            self.error_total,
            if self.error_total == 1 { "" } else { "s" },
            if self.not_found > 0 {
                format!("; {} reads of a missing key", self.not_found)
            } else {
                String::new()
            }
        );
        if !self.latency.is_empty() {
            let _ = writeln!(
                s,
                "{:<6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "", "count", "mean", "p50", "p90", "p99", "p99.9", "max"
            );
            for (name, l) in &self.latency {
                let _ = writeln!(
                    s,
                    "{:<6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    name,
                    l.count,
                    format_us(l.mean_us.round() as u64),
                    format_us(l.p50_us),
                    format_us(l.p90_us),
                    format_us(l.p99_us),
                    format_us(l.p999_us),
                    format_us(l.max_us),
                );
            }
        }
        write_errors(&mut s, &self.errors);
        if let Some(c) = self.client_cpu_cores {
            let _ = writeln!(s, "client CPU: {c:.2} cores");
        }
        if let Some(w) = &self.watch {
            let _ = writeln!(
                s,
                "watchers: {} of {} (over {} stream{}) got every revision to {} in order; \
                 {} events, {} missing, {} out of order, {} cut off, {} started late; \
                 drained in {:.2} s",
                w.complete,
                w.watchers,
                w.streams,
                if w.streams == 1 { "" } else { "s" },
                w.final_revision,
                w.events,
                w.missing,
                w.out_of_order,
                w.cut_off,
                w.late_start,
                w.drain_seconds,
            );
        }
        s
    }
}

fn write_errors(s: &mut String, errors: &BTreeMap<String, ErrorCount>) {
    for (kind, e) in errors {
        let _ = writeln!(s, "  error {kind}: {} (e.g. {})", e.count, e.sample);
    }
}

/// A latency for people: `850µs`, `1.25ms`, `12.5ms`, `1.20s`.
pub fn format_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 10_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// `12345678` → `12,345,678`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            target: "coordinate".into(),
            workload: "mixed".into(),
            read_mode: "linearizable".into(),
            read_ratio: Some(0.9),
            endpoints: vec!["127.0.0.1:1".into()],
            connections: 4,
            keys: 100,
            value_size: "100-256".into(),
        }
    }

    #[test]
    fn latencies_are_formatted_for_people() {
        assert_eq!(format_us(850), "850µs");
        assert_eq!(format_us(1_250), "1.25ms");
        assert_eq!(format_us(12_500), "12.5ms");
        assert_eq!(format_us(1_200_000), "1.20s");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn summaries_have_the_right_percentiles() {
        let mut st = Stats::default();
        for us in 1..=1000u64 {
            st.record_ok(OpKind::Put, Duration::from_micros(us));
        }
        let l = LatencySummary::of(&st.put).unwrap();
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50_us, 500);
        assert_eq!(l.p90_us, 900);
        assert_eq!(l.p99_us, 990);
        assert_eq!(l.p999_us, 999);
        assert_eq!(l.max_us, 1000);
        assert!((l.mean_us - 500.5).abs() < 1.0);
        assert!(LatencySummary::of(&st.get).is_none());
    }

    #[test]
    fn slow_requests_merge_and_list_in_start_order() {
        let mut a = Stats::default();
        a.record_slow(
            Duration::from_millis(1500),
            3,
            OpKind::Put,
            Duration::from_millis(25),
        );
        let mut b = Stats::default();
        b.record_slow(
            Duration::from_millis(200),
            0,
            OpKind::Get,
            Duration::from_micros(10_500),
        );
        a.merge(&b);
        assert_eq!(
            a.slow_timeline(),
            "slow     0.200s  conn    0  get 10.50 ms\nslow     1.500s  conn    3  put 25.00 ms\n"
        );
        let mut full = Stats::default();
        for i in 0..MAX_SLOW + 5 {
            full.record_slow(Duration::ZERO, i, OpKind::Put, Duration::from_millis(11));
        }
        full.merge(&a);
        assert_eq!(full.slow.len(), MAX_SLOW);
    }

    #[test]
    fn merged_stats_add_up_and_keep_error_samples() {
        let mut a = Stats::default();
        a.record_ok(OpKind::Put, Duration::from_micros(100));
        a.record_error("timeout", || "no answer within 5s".into());
        a.record_error("timeout", || unreachable!("sample kept from the first"));
        let mut b = Stats::default();
        b.record_ok(OpKind::Get, Duration::from_micros(200));
        b.not_found = 2;
        b.record_error("http 503", || "no leader".into());
        b.record_error("timeout", || "other".into());
        a.merge(&b);
        assert_eq!(a.ok(), 2);
        assert_eq!(a.not_found, 2);
        assert_eq!(a.error_total(), 4);
        assert_eq!(a.errors["timeout"].count, 3);
        assert_eq!(a.errors["timeout"].sample, "no answer within 5s");
        assert_eq!(a.errors["http 503"].count, 1);
    }

    #[test]
    fn reports_print_and_serialize_everything() {
        let mut st = Stats::default();
        for _ in 0..90 {
            st.record_ok(OpKind::Get, Duration::from_micros(500));
        }
        for _ in 0..10 {
            st.record_ok(OpKind::Put, Duration::from_millis(2));
        }
        st.record_error("http 504", || "outcome unknown".into());
        let r = Report::new(info(), None, &st, Duration::from_secs(2), Some(0.456));
        assert_eq!(r.ops_per_sec, 50.0);
        assert_eq!(r.error_total, 1);
        let text = r.to_text();
        assert!(text.contains("90% linearizable reads"), "{text}");
        assert!(
            text.contains("100 ok ops in 2.00 s: 50 ops/s; 1 error"),
            "{text}"
        );
        assert!(
            text.contains("error http 504: 1 (e.g. outcome unknown)"),
            "{text}"
        );
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_string()
        };
        assert!(line("get").contains("500µs"), "{text}");
        assert!(line("put").contains("2.00ms"), "{text}");
        assert!(line("all").contains(" 100 "), "{text}");
        assert!(text.contains("client CPU: 0.46 cores"), "{text}");

        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ops_per_sec"], 50.0);
        assert_eq!(json["latency"]["get"]["p99_us"], 500);
        assert_eq!(json["latency"]["put"]["count"], 10);
        assert_eq!(json["latency"]["all"]["count"], 100);
        assert_eq!(json["errors"]["http 504"]["count"], 1);
        assert_eq!(json["error_total"], 1);
        assert_eq!(json["client_cpu_cores"], 0.46);
    }
}
