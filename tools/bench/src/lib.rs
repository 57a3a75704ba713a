//! The load generator behind `coordinate-bench`: N keep-alive HTTP connections driving PUTs,
//! reads, or a mix against coordinate or etcd, with latency histograms and error counts.
//!
//! # How a run goes
//! 1. Flags ([`Args`]) are validated into a [`workload::Plan`]: the key space (`--keys` keys
//!    named `<prefix>00000000`…), the value sizes, the operation mix, and how the target spells
//!    each request (coordinate's root API, or etcd's v3 JSON gateway with base64 keys/values).
//! 2. Optional pre-load: every key is written once, by all connections together, so that reads
//!    find their key. Its errors are reported separately.
//! 3. The measured phase: each connection is one tokio task on one
//!    [`coordinate_client::Connection`] (HTTP/1.1 keep-alive, requests in sequence: closed loop,
//!    so the offered load is `connections` requests in flight). Connections are spread
//!    round-robin over `--endpoints`. Each picks a uniformly random key per operation, and
//!    runs until `--duration` has passed or `--ops` operations have been issued in total.
//!    Operations that start during `--warmup` are executed but not counted.
//! 4. Each task keeps its own histograms and error counts (no shared locks in the hot loop);
//!    they are merged at the end into a [`report::Report`], printed as a table or as JSON.
//!
//! # What counts
//! Success is the target's success status (coordinate: 204 for PUT, 200/404 for GET; etcd: 200,
//! see [`workload::classify`]). Everything else is an error, counted by kind: `http <status>`,
//! `timeout` (no answer within `--timeout-ms`), `connect` (refused, or not connected within
//! `--timeout-ms`: nothing was sent), `transport` (the connection broke).
//! A failed request closes its connection; the next request on it reconnects. Throughput is
//! successful operations per measured second; latency histograms hold successful operations.
//!
//! # Read modes
//! `linearizable` is coordinate's `GET /<key>` and etcd's default range. `serializable` is
//! etcd's `"serializable": true`, and on coordinate `GET /v1/kv/<key>?consistency=serializable`,
//! which needs a server that has the `/v1/kv` API (older servers answer 404 and every such read
//! is counted as an error).

pub mod cli;
pub mod grpc;
pub mod report;
pub mod watchers;
pub mod workload;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tokio::time::Instant;

use coordinate_client::{ClientError, ClientTls, Connection, TlsSpec};
use report::{PreloadReport, Report, RunInfo, Stats};
use workload::{Outcome, Plan, Rng, SizeRange};

/// The system under load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// coordinate's HTTP API (`PUT /<key>`, `GET /<key>`).
    Coordinate,
    /// etcd's v3 JSON gateway (`POST /v3/kv/put`, `POST /v3/kv/range`).
    Etcd,
    /// etcd's v3 gRPC API (KV Put and Range), which coordinate and etcd both serve: the same
    /// client for both (in clear only).
    Grpc,
}

/// A worker's connection to its endpoint.
enum Conn {
    Http(Connection),
    Grpc(grpc::GrpcConnection),
}

/// Which operations to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Writes only.
    Put,
    /// Reads only (in `--read-mode`).
    Get,
    /// Reads with probability `--read-ratio`, writes otherwise.
    Mixed,
}

/// How reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadMode {
    /// Sees every write acknowledged before it started (coordinate `GET /<key>`).
    Linearizable,
    /// May be stale (coordinate `GET /v1/kv/<key>?consistency=serializable`, needs `/v1/kv`).
    Serializable,
}

fn name<T: ValueEnum>(v: T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// Flags of `coordinate-bench`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "coordinate-bench",
    version,
    about = "Load generator for coordinate (and etcd, for comparison): throughput and latency"
)]
pub struct Args {
    /// Client endpoints (host:port), comma-separated; connections are spread over them
    /// round-robin.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:12380")]
    pub endpoints: Vec<String>,
    /// The system under load.
    #[arg(long, value_enum, default_value_t = Target::Coordinate)]
    pub target: Target,
    /// Concurrent keep-alive connections (each has one request in flight).
    #[arg(long, short = 'c', default_value_t = 16)]
    pub connections: usize,
    /// How long to measure (after --warmup), e.g. `10s`, `500ms`, `2m` [default: 10s unless
    /// --ops is given].
    #[arg(long, value_parser = parse_duration, conflicts_with = "ops")]
    pub duration: Option<Duration>,
    /// Total operations to issue instead of a duration (0 with --preload: only pre-load).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Time at the start whose operations run but are not counted.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Operations to send.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Share of reads in the `mixed` workload, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// How reads are served (`serializable` needs coordinate's `/v1/kv` API).
    #[arg(long, value_enum, default_value_t = ReadMode::Linearizable)]
    pub read_mode: ReadMode,
    /// Size of the key space; every operation picks one key uniformly.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Prefix of every key name (followed by an 8-digit index).
    #[arg(long, default_value = "bench-")]
    pub key_prefix: String,
    /// Value size in bytes: `128`, or a uniform range such as `100-256`.
    #[arg(long, value_parser = SizeRange::parse, default_value = "128")]
    pub value_size: SizeRange,
    /// Before measuring, write every key of the key space once.
    #[arg(long)]
    pub preload: bool,
    /// Per-request timeout in milliseconds; a request without an answer by then is an error.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Print the result as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Never draw a progress bar (it is only drawn when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Worker threads of the client's runtime [default: number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the key and value choices (each connection derives its own).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Speak TLS, verifying the nodes against this CA (PEM), as etcdctl's flag.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// A client certificate (PEM), for nodes started with --client-cert-auth.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Speak TLS without verifying the nodes (for --auto-tls nodes).
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// HTTP/2 connections the workers of `--target grpc` share, spread over the endpoints
    /// like the workers (each multiplexes its workers' requests) [default: one per worker].
    #[arg(long)]
    pub grpc_conns: Option<usize>,
    /// The gRPC client of `--target grpc`: `h2` frames the calls by hand on one HTTP/2
    /// connection (the lightest on the shared cores), `tonic` is etcd's generated client.
    #[arg(long, value_enum, default_value_t = grpc::Client::H2)]
    pub grpc_client: grpc::Client,
    /// Operations per second at most, over all connections (each paces itself to its share)
    /// [default: as fast as the answers come].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Print every measured request slower than this many milliseconds, in the order they
    /// started (when, on which connection, how long): a timeline of the tail, which tells a
    /// stall of every connection at once from one connection left waiting.
    #[arg(long)]
    pub slow_ms: Option<f64>,
    /// Watchers of every key to hold open on the first endpoint during the run (`--target
    /// grpc`), each checked to receive every revision of the run, once, in order.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// Watch streams the watchers are spread over (one HTTP/2 connection carries them all).
    #[arg(long, default_value_t = 1)]
    pub watch_streams: usize,
    /// How long the watchers may take, once the load ends, to receive its last revision.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub watch_drain: Duration,
}

impl Args {
    /// Checks what clap cannot; returns one line saying what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() || self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err("--endpoints needs at least one host:port".into());
        }
        if let Some(e) = self.endpoints.iter().find(|e| {
            e.contains("://")
                || e.rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        }) {
            return Err(format!("endpoint {e:?} is not host:port"));
        }
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(format!(
                "--read-ratio {} is not between 0 and 1",
                self.read_ratio
            ));
        }
        if self.ops == Some(0) && !self.preload {
            return Err("--ops 0 does nothing without --preload".into());
        }
        if self.duration == Some(Duration::ZERO) {
            return Err("--duration must be above zero".into());
        }
        if self.timeout_ms == 0 {
            return Err("--timeout-ms must be above zero".into());
        }
        if self.threads == Some(0) {
            return Err("--threads must be at least 1".into());
        }
        let tls = self.cacert.is_some() || self.cert.is_some() || self.insecure_skip_tls_verify;
        if self.target == Target::Grpc && tls {
            return Err("--target grpc speaks in clear only: drop the TLS flags".into());
        }
        if let Some(n) = self.grpc_conns {
            if self.target != Target::Grpc {
                return Err("--grpc-conns needs --target grpc".into());
            }
            if !(1..=self.connections).contains(&n) {
                return Err(format!(
                    "--grpc-conns must be between 1 and --connections ({})",
                    self.connections
                ));
            }
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err("--rate must be a number of operations per second above zero".into());
        }
        if self.watchers > 0 && self.target != Target::Grpc {
            return Err("--watchers needs --target grpc".into());
        }
        if self.watchers > 0 && !(1..=self.watchers).contains(&self.watch_streams) {
            return Err(format!(
                "--watch-streams must be between 1 and --watchers ({})",
                self.watchers
            ));
        }
        Ok(())
    }

    /// TLS for every connection, if a TLS flag is given (one handshake per connection: each
    /// keeps its connection alive for the whole run).
    pub fn tls(&self) -> Result<Option<ClientTls>, String> {
        let cert_and_key = self.cert.clone().zip(self.key.clone());
        if self.cacert.is_none() && cert_and_key.is_none() && !self.insecure_skip_tls_verify {
            return Ok(None);
        }
        if self.cacert.is_none() && !self.insecure_skip_tls_verify {
            return Err("TLS needs --cacert, or --insecure-skip-tls-verify".into());
        }
        let spec = TlsSpec {
            trusted_ca: self.cacert.clone(),
            cert_and_key,
            insecure: self.insecure_skip_tls_verify,
        };
        ClientTls::new(&spec).map(Some).map_err(|e| e.to_string())
    }

    /// How the measured phase ends.
    pub fn stop(&self) -> Stop {
        match (self.ops, self.duration) {
            (Some(n), _) => Stop::Ops(n),
            (None, Some(d)) => Stop::Duration(d),
            (None, None) => Stop::Duration(Duration::from_secs(10)),
        }
    }

    fn run_info(&self) -> RunInfo {
        RunInfo {
            target: name(self.target),
            workload: name(self.workload),
            read_mode: name(self.read_mode),
            read_ratio: match self.workload {
                Workload::Put => None,
                Workload::Get => Some(1.0),
                Workload::Mixed => Some(self.read_ratio),
            },
            endpoints: self.endpoints.clone(),
            connections: self.connections,
            keys: self.keys,
            value_size: self.value_size.to_string(),
        }
    }
}

/// When the measured phase ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long past the warm-up.
    Duration(Duration),
    /// After this many operations issued in total (warm-up included).
    Ops(u64),
}

/// Parses `10s`, `500ms`, `2m`, `1.5s`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 10s, 500ms or 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use ms, s, m or h"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=7.0 * 86_400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Counters shared with the progress bar (the only cross-task state in the hot loop).
struct Shared {
    issued: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

/// Runs the benchmark described by `args` (already validated) on the current runtime, every
/// connection over TLS with `tls` if given (`Args::tls`).
pub async fn run(args: Args, tls: Option<ClientTls>) -> Report {
    let plan = Arc::new(Plan::new(
        args.target,
        args.workload,
        args.read_ratio,
        args.read_mode,
        &args.key_prefix,
        args.keys,
        args.value_size,
        args.seed,
    ));
    let timeout = Duration::from_millis(args.timeout_ms);
    let endpoint = |i: usize| args.endpoints[i % args.endpoints.len()].clone();
    let conns: Result<Vec<Conn>, String> = match args.target {
        Target::Grpc => {
            let shared = args.grpc_conns.unwrap_or(args.connections);
            let channels = (0..shared)
                .map(|i| grpc::connection(args.grpc_client, &endpoint(i), timeout))
                .collect::<Result<Vec<_>, String>>();
            channels.map(|channels| {
                (0..args.connections)
                    .map(|i| {
                        let channel = channels[i % channels.len()].clone();
                        let conn = grpc::GrpcConnection::new(channel, args.read_mode, timeout);
                        Conn::Grpc(conn)
                    })
                    .collect()
            })
        }
        _ => Ok((0..args.connections)
            .map(|i| Conn::Http(Connection::new(endpoint(i), timeout).with_tls(tls.clone())))
            .collect()),
    };
    let mut conns = match conns {
        Ok(conns) => conns,
        Err(e) => {
            let mut stats = Stats::default();
            stats.record_error("connect", || e);
            return Report::new(args.run_info(), None, &stats, Duration::ZERO, None);
        }
    };
    let progress = !args.no_progress && std::io::stderr().is_terminal();

    let preload = if args.preload {
        let (report, back) = preload_keys(&plan, conns, args.seed, progress).await;
        conns = back;
        Some(report)
    } else {
        None
    };

    let stop = args.stop();
    if stop == Stop::Ops(0) {
        return Report::new(
            args.run_info(),
            preload,
            &Stats::default(),
            Duration::ZERO,
            None,
        );
    }
    let watching = match args.watchers {
        0 => None,
        n => Some(watchers::open(&args.endpoints[0], n, args.watch_streams).await),
    };
    let watching = match watching.transpose() {
        Ok(w) => w,
        Err(e) => {
            let mut stats = Stats::default();
            stats.record_error("watch", || e);
            return Report::new(args.run_info(), preload, &stats, Duration::ZERO, None);
        }
    };
    let pace = args
        .rate
        .map(|r| Duration::from_secs_f64(args.connections as f64 / r));
    let (cpu0, t0) = (process_cpu_seconds(), Instant::now());
    let slow = args.slow_ms.map(|ms| Duration::from_secs_f64(ms / 1000.0));
    let (mut stats, measured) = measure(
        &plan,
        conns,
        Schedule {
            stop,
            warmup: args.warmup,
            seed: args.seed,
            pace,
            slow,
        },
        progress,
    )
    .await;
    let client_cores = match (cpu0, process_cpu_seconds()) {
        (Some(a), Some(b)) => Some((b - a) / t0.elapsed().as_secs_f64().max(1e-3)),
        _ => None,
    };
    let watch = match watching {
        None => None,
        Some(w) => match w.finish(args.watch_drain).await {
            Ok(report) => Some(report),
            Err(e) => {
                stats.record_error("watch", || e);
                None
            }
        },
    };
    if args.slow_ms.is_some() {
        // On stderr: stdout stays the report (or its JSON).
        eprint!("{}", stats.slow_timeline());
    }
    let mut report = Report::new(args.run_info(), preload, &stats, measured, client_cores);
    report.watch = watch;
    report
}

/// CPU time (user + system, all threads) this process has used, from `/proc/self/stat`.
fn process_cpu_seconds() -> Option<f64> {
    parse_proc_stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds. The kernel reports them in
/// USER_HZ ticks, which is 100 on every Linux architecture this runs on.
fn parse_proc_stat_cpu(stat: &str) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Writes every key once, spread over all connections. Gives the connections back.
async fn preload_keys(
    plan: &Arc<Plan>,
    conns: Vec<Conn>,
    seed: u64,
    progress: bool,
) -> (PreloadReport, Vec<Conn>) {
    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let keys = plan.key_count();
    let bar = progress.then(|| {
        spawn_progress(
            shared.clone(),
            ProgressKind::Count(keys),
            "preload".to_string(),
        )
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let plan = plan.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(i as u64 + 1));
            let mut stats = Stats::default();
            loop {
                let key = shared.issued.fetch_add(1, Ordering::Relaxed);
                if key >= keys {
                    break;
                }
                let req = plan.put(key, &mut rng);
                execute(&plan, &mut conn, req, &mut stats, &shared, None).await;
            }
            (stats, conn)
        }));
    }
    let mut stats = Stats::default();
    let mut conns = Vec::new();
    for t in tasks {
        match t.await {
            Ok((s, c)) => {
                stats.merge(&s);
                conns.push(c);
            }
            Err(e) => stats.record_error("panic", || e.to_string()),
        }
    }
    finish_progress(bar, &shared).await;
    let report = PreloadReport {
        keys,
        ok: stats.ok(),
        errors: stats.errors,
        seconds: (start.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    };
    (report, conns)
}

/// How the measured phase runs.
struct Schedule {
    stop: Stop,
    warmup: Duration,
    seed: u64,
    /// Each connection's time between requests (`--rate`).
    pace: Option<Duration>,
    /// Requests slower than this are listed (`--slow-ms`).
    slow: Option<Duration>,
}

/// The measured phase. Returns the merged statistics and the measured time.
async fn measure(
    plan: &Arc<Plan>,
    conns: Vec<Conn>,
    schedule: Schedule,
    progress: bool,
) -> (Stats, Duration) {
    let Schedule {
        stop,
        warmup,
        seed,
        pace,
        slow,
    } = schedule;
    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let start = Instant::now();
    let counted_from = start + warmup;
    let deadline = match stop {
        Stop::Duration(d) => Some(counted_from + d),
        Stop::Ops(_) => None,
    };
    let bar = progress.then(|| {
        let kind = match stop {
            Stop::Duration(d) => ProgressKind::Time(warmup + d),
            Stop::Ops(n) => ProgressKind::Count(n),
        };
        spawn_progress(shared.clone(), kind, "run".to_string())
    });
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let plan = plan.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            // Different from the preload's streams, and from every other connection's.
            let mut rng = Rng::new(seed.wrapping_mul(7_919).wrapping_add(1 << 32 | i as u64));
            let mut stats = Stats::default();
            let mut next_at = start;
            loop {
                if let Some(period) = pace {
                    next_at += period;
                    tokio::time::sleep_until(next_at).await;
                }
                match stop {
                    Stop::Ops(n) => {
                        if shared.issued.fetch_add(1, Ordering::Relaxed) >= n {
                            break;
                        }
                    }
                    Stop::Duration(_) => {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                    }
                }
                let req = plan.next(&mut rng);
                let kind = req.kind;
                let t0 = Instant::now();
                execute(
                    &plan,
                    &mut conn,
                    req,
                    &mut stats,
                    &shared,
                    Some(counted_from),
                )
                .await;
                let latency = t0.elapsed();
                if slow.is_some_and(|s| latency > s) && t0 >= counted_from {
                    stats.record_slow(t0 - counted_from, i, kind, latency);
                }
            }
            (stats, Instant::now())
        }));
    }
    let mut stats = Stats::default();
    let mut last = counted_from;
    for t in tasks {
        match t.await {
            Ok((s, end)) => {
                stats.merge(&s);
                last = last.max(end);
            }
            Err(e) => stats.record_error("panic", || e.to_string()),
        }
    }
    finish_progress(bar, &shared).await;
    (stats, last.saturating_duration_since(counted_from))
}

/// Sends one request and records its outcome (if it started at or after `counted_from`).
async fn execute(
    plan: &Plan,
    conn: &mut Conn,
    req: workload::Request<'_>,
    stats: &mut Stats,
    shared: &Shared,
    counted_from: Option<Instant>,
) {
    let kind = req.kind;
    let t0 = Instant::now();
    let answered = match conn {
        Conn::Http(conn) => over_http(plan, conn, &req).await,
        Conn::Grpc(conn) => match conn.execute(&req).await {
            Outcome::Error(what) => {
                let sample = format!("{} {}: {what}", kind.name(), req.path);
                Err((what, sample))
            }
            served => Ok(served),
        },
    };
    let latency = t0.elapsed();
    let counted = counted_from.is_none_or(|c| t0 >= c);
    shared.done.fetch_add(1, Ordering::Relaxed);
    match answered {
        Ok(outcome) if counted => {
            stats.record_ok(kind, latency);
            if outcome == Outcome::NotFound {
                stats.not_found += 1;
            }
        }
        Ok(_) => {}
        Err((what, sample)) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            if counted {
                stats.record_error(&what, || sample);
            }
        }
    }
}

/// Sends one HTTP request: a served outcome (`Ok` or `NotFound`), or the error's kind and a
/// sample of it.
async fn over_http(
    plan: &Plan,
    conn: &mut Connection,
    req: &workload::Request<'_>,
) -> Result<Outcome, (String, String)> {
    let kind = req.kind;
    match conn
        .request(req.method.clone(), req.path, req.body.clone())
        .await
    {
        Ok(resp) => match plan.classify(kind, &resp) {
            Outcome::Error(what) => {
                let body = String::from_utf8_lossy(&resp.body);
                let mut sample = format!("{} {}: {}", kind.name(), req.path, body.trim());
                sample.truncate(300);
                Err((what, sample))
            }
            served => Ok(served),
        },
        Err(e) => {
            let what = match &e {
                ClientError::Timeout(_) => "timeout",
                ClientError::Connect { .. } => "connect",
                ClientError::Http(_) => "transport",
                ClientError::Request(_) => "request",
            };
            // A refused connection fails at once: pause a little rather than spin.
            if matches!(e, ClientError::Connect { .. }) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let sample = format!("{} {}: {e}", kind.name(), req.path);
            Err((what.to_string(), sample))
        }
    }
}

enum ProgressKind {
    /// A bar over this many operations.
    Count(u64),
    /// A bar over this much time.
    Time(Duration),
}

/// Draws a progress bar on stderr until `shared.stop` is set.
fn spawn_progress(
    shared: Arc<Shared>,
    kind: ProgressKind,
    label: String,
) -> tokio::task::JoinHandle<()> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let (len, template) = match kind {
        ProgressKind::Count(n) => (n, "{prefix:>7} [{bar:30}] {pos}/{len} ops {msg}"),
        ProgressKind::Time(d) => (
            d.as_millis() as u64,
            "{prefix:>7} [{bar:30}] {elapsed}/{duration} {msg}",
        ),
    };
    let counting_ops = matches!(kind, ProgressKind::Count(_));
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label);
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = (start, 0u64);
        while !shared.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = Instant::now();
            let done = shared.done.load(Ordering::Relaxed);
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, done);
            bar.set_position(if counting_ops {
                done
            } else {
                now.duration_since(start).as_millis() as u64
            });
            bar.set_message(format!(
                "{} ops/s, {} errors",
                report::thousands(rate as u64),
                shared.failed.load(Ordering::Relaxed)
            ));
        }
        bar.finish_and_clear();
    })
}

async fn finish_progress(bar: Option<tokio::task::JoinHandle<()>>, shared: &Shared) {
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(bar) = bar {
        let _ = bar.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        let args =
            Args::try_parse_from(std::iter::once("coordinate-bench").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        args.validate()?;
        Ok(args)
    }

    #[test]
    fn process_cpu_time_is_read_from_proc_stat() {
        let line = "1234 (tokio (worker) 1) S 1 2 3 4 5 6 7 8 9 10 250 130 0 0 20 0 4 0 100";
        assert_eq!(parse_proc_stat_cpu(line), Some(3.8));
        assert_eq!(parse_proc_stat_cpu("garbage"), None);
        assert!(process_cpu_seconds().is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_are_a_ten_second_put_run_on_the_default_port() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.endpoints, vec!["127.0.0.1:12380"]);
        assert_eq!(a.target, Target::Coordinate);
        assert_eq!(a.workload, Workload::Put);
        assert_eq!(a.read_mode, ReadMode::Linearizable);
        assert_eq!(a.connections, 16);
        assert_eq!(a.keys, 10_000);
        assert_eq!(a.value_size, SizeRange { min: 128, max: 128 });
        assert_eq!(a.stop(), Stop::Duration(Duration::from_secs(10)));
        assert!(!a.preload && !a.json);
    }

    #[test]
    fn flags_parse() {
        let a = parse(&[
            "--endpoints",
            "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
            "--target",
            "etcd",
            "-c",
            "64",
            "--ops",
            "1000",
            "--workload",
            "mixed",
            "--read-ratio",
            "0.9",
            "--read-mode",
            "serializable",
            "--keys",
            "100000",
            "--value-size",
            "100-256",
            "--preload",
            "--json",
            "--warmup",
            "2s",
        ])
        .unwrap();
        assert_eq!(a.endpoints.len(), 3);
        assert_eq!(a.target, Target::Etcd);
        assert_eq!(a.connections, 64);
        assert_eq!(a.stop(), Stop::Ops(1000));
        assert_eq!(a.workload, Workload::Mixed);
        assert_eq!(a.read_ratio, 0.9);
        assert_eq!(a.read_mode, ReadMode::Serializable);
        assert_eq!(a.keys, 100_000);
        assert_eq!(a.value_size, SizeRange { min: 100, max: 256 });
        assert!(a.preload && a.json);
        assert_eq!(a.warmup, Duration::from_secs(2));
        let info = a.run_info();
        assert_eq!(
            (
                info.target.as_str(),
                info.workload.as_str(),
                info.read_mode.as_str()
            ),
            ("etcd", "mixed", "serializable")
        );
        assert_eq!(
            parse(&["--duration", "30s"]).unwrap().stop(),
            Stop::Duration(Duration::from_secs(30))
        );
        assert_eq!(
            parse(&["--preload", "--ops", "0"]).unwrap().stop(),
            Stop::Ops(0)
        );
    }

    #[test]
    fn bad_flags_are_refused_with_a_reason() {
        let err = |args: &[&str]| parse(args).unwrap_err();
        assert!(err(&["--duration", "1s", "--ops", "5"]).contains("cannot be used with"));
        assert!(err(&["--connections", "0"]).contains("at least 1"));
        assert!(err(&["--read-ratio", "1.5"]).contains("between 0 and 1"));
        assert!(err(&["--endpoints", "http://127.0.0.1:1"]).contains("not host:port"));
        assert!(err(&["--endpoints", "127.0.0.1"]).contains("not host:port"));
        assert!(err(&["--ops", "0"]).contains("--preload"));
        assert!(err(&["--keys", "0"]).contains("at least 1"));
        assert!(err(&["--value-size", "300-200"]).contains("empty range"));
        assert!(err(&["--target", "redis"]).contains("invalid value"));
        assert!(err(&["--duration", "0s"]).contains("above zero"));
        let grpc_tls = ["--target", "grpc", "--insecure-skip-tls-verify"];
        assert!(err(&grpc_tls).contains("in clear only"));
        assert_eq!(parse(&["--target", "grpc"]).unwrap().target, Target::Grpc);
    }
}
