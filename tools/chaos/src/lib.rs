//! `chaos`: a workload, a nemesis and a verdict — coordinate under faults, checked for
//! linearizability.
//!
//! ```text
//! cargo build --release && target/release/chaos --nodes 5 --duration 300 --runs 4
//! ```
//!
//! One run: start a fresh cluster of real `coordinate` processes; several clients PUT unique
//! values to and GET a few keys through random nodes, recording every operation with its
//! invocation and completion time and its outcome (ok; failed — a 503 write, known not to have
//! happened; unknown — a 504, a timeout or a reset); meanwhile the nemesis injects one fault at
//! a time on a random schedule and heals it. After the workload: heal everything, wait until
//! every node has applied the same index, read every key from every node, and check
//! - linearizability of the whole history (per key, [`coordinate_check`]), including the
//!   final reads — so an acknowledged write that is not readable at the end, and not
//!   superseded, is a violation;
//! - that no node diverges: every node answers the same value for every key and holds the
//!   same number of keys at the same applied index;
//! - that no node exited unless the nemesis killed it, and that no answer fell outside the
//!   contract (PUT: 204/503/504; GET: 200/404/503).
//!
//! Faults: `kill` (kill -9 of the leader or of a random node — on 5 nodes sometimes two, one
//! time in ten every node — and a restart on the same data dir), `pause` (SIGSTOP/SIGCONT,
//! same targets), `partition` (the leader isolated, a random majority/minority split, or a
//! "bridge": two sides that only one node sees both of), `membership` (`DELETE /<id>` of the
//! leader or a random node, which then exits by itself; later `POST /<id>` and a restart with
//! `--join` on an empty data dir).
//!
//! Partitions need network namespaces: each node runs in its own namespace (`ip netns exec`),
//! with a veth to a bridge in a "hub" namespace that the clients' threads enter; addresses are
//! 10.77.0.x and exist only inside those namespaces. A partition is a pair of blackhole routes
//! per cut link (dropped silently, like a dead network); healing flushes them. Everything is
//! deleted at the end, also on panic or Ctrl-C, and namespaces (and their processes) left
//! behind by a chaos process that no longer exists are removed at start. Without root or `ip`
//! (`--net auto` finds out), nodes run on loopback and partitions are left out.
//!
//! The `/v1` delete and compare-and-set are the next cases of [`OpKind`] (see there).
//!
//! Exit code: 0 when every run was linearizable with no divergence and enough operations
//! succeeded; 1 when a run found a violation (or a crash, divergence, or a cluster that did not
//! recover); 2 when a run was inconclusive (checker budget, too few successful operations) or
//! could not be set up; 130 on interrupt.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use coordinate_check::{self as check, Call, History, Operation, Outcome, Summary, Time};
use coordinate_client::{ClientError, Connection};

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    about = "Runs a workload against a coordinate cluster under injected faults and checks \
             the history for linearizability"
)]
struct Args {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of workload (and faults) per run.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Independent runs, each on a fresh cluster.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Faults to inject, comma-separated: kill, pause, partition, membership; or `none`.
    #[arg(long, default_value = "kill,pause,partition,membership")]
    nemesis: String,
    /// Concurrent clients (each one request at a time).
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Keys the clients share (each an independent register).
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Seed of the schedule and the workload [default: from the clock]; printed per run.
    #[arg(long)]
    seed: Option<u64>,
    /// Where nodes run: `netns` (own network namespaces, needed for partitions), `loopback`,
    /// or `auto` (netns when possible).
    #[arg(long, default_value = "auto")]
    net: String,
    /// The `coordinate` binary [default: next to this one].
    #[arg(long)]
    coordinate: Option<PathBuf>,
    /// `--snapshot-count` of every node: small, so snapshots, compaction and catch-up by
    /// snapshot happen during the run.
    #[arg(long, default_value_t = 200)]
    snapshot_count: u64,
    /// `--request-timeout-ms` of every node.
    #[arg(long, default_value_t = 1500)]
    request_timeout_ms: u64,
    /// How long a client waits for an answer before recording the outcome as unknown, ms.
    #[arg(long, default_value_t = 3000)]
    client_timeout_ms: u64,
    /// Mean quiet time between two faults, seconds.
    #[arg(long, default_value_t = 1.5)]
    fault_interval: f64,
    /// Mean duration of one fault, seconds.
    #[arg(long, default_value_t = 2.5)]
    fault_duration: f64,
    /// Longest pause of a client between two requests, ms (random up to this).
    #[arg(long, default_value_t = 5)]
    think_ms: u64,
    /// Fewest successful operations per run for a verdict to count.
    #[arg(long, default_value_t = 100)]
    min_ok: usize,
    /// How long the cluster may take to converge after healing, seconds.
    #[arg(long, default_value_t = 60)]
    recovery_timeout: u64,
    /// Time limit of the linearizability search per run, seconds.
    #[arg(long, default_value_t = 300)]
    check_time_limit: u64,
    /// Directory for run data (node logs, data dirs, history) [default: the temp dir].
    /// Each run's directory is removed when the run passes, unless --keep.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep every run's directory.
    #[arg(long)]
    keep: bool,
    /// `--log-level` of every node.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Proves the pipeline can fail: `stale-read` rewrites one recorded read to return a value
    /// that was overwritten, by an acknowledged write, before the read began. The run must
    /// then end NOT LINEARIZABLE (exit 1).
    #[arg(long)]
    self_test: Option<String>,
}

/// Prints a line, and appends it to the current run's `report.txt`.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        report_line(&line);
    }};
}

/// Where [`say!`] copies its lines: the current run's report file.
static REPORT: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

fn report_line(line: &str) {
    let mut guard = REPORT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = guard.as_mut() {
        let _ = writeln!(f, "{line}");
    }
}

/// Starts (`Some`) or ends (`None`) copying output to a run's report file.
fn report_to(path: Option<&Path>) {
    let mut guard = REPORT.lock().unwrap_or_else(|e| e.into_inner());
    *guard = path.and_then(|p| std::fs::File::create(p).ok());
}

/// Set by SIGINT/SIGTERM: the current run stops early and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    match run_all(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::from(2)
        }
    }
}

/// How one run ended, worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Pass,
    Inconclusive,
    Fail,
}

fn run_all(args: Args) -> Result<ExitCode, String> {
    let kinds = FaultKind::parse_list(&args.nemesis)?;
    if let Some(t) = &args.self_test {
        if t != "stale-read" {
            return Err(format!("--self-test {t:?}: the only one is stale-read"));
        }
    }
    if args.nodes == 0 || args.clients == 0 || args.keys == 0 || args.runs == 0 {
        return Err("--nodes, --clients, --keys and --runs must be at least 1".into());
    }
    let bin = match &args.coordinate {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this binary's path: {e}"))?
            .with_file_name("coordinate"),
    };
    if !bin.is_file() {
        return Err(format!(
            "no coordinate binary at {} (build it: `cargo build --release`, or pass --coordinate)",
            bin.display()
        ));
    }
    let use_netns = match args.net.as_str() {
        "netns" => true,
        "loopback" => false,
        "auto" => {
            let ok = netns::available();
            if !ok {
                say!(
                    "note: network namespaces are not available here (needs root and `ip` from \
                     iproute2): nodes run on loopback, without partitions"
                );
            }
            ok
        }
        other => return Err(format!("--net {other:?}: want auto, netns or loopback")),
    };
    let kinds: Vec<FaultKind> = if use_netns {
        kinds
    } else if args.net == "loopback" && kinds.contains(&FaultKind::Partition) {
        return Err("--nemesis partition needs --net netns (network namespaces)".into());
    } else {
        kinds
            .into_iter()
            .filter(|k| *k != FaultKind::Partition)
            .collect()
    };
    if use_netns {
        netns::remove_stale();
    }
    install_signal_handler();

    let base_seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let started = Instant::now();
    let mut totals = Summary::default();
    let mut fault_totals: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut verdicts: Vec<Verdict> = Vec::new();
    for run in 1..=args.runs {
        if interrupted() {
            break;
        }
        let seed = base_seed.wrapping_add(run as u64 - 1);
        let header = format!(
            "=== run {run}/{}: {} nodes ({}), {} s, nemesis {}, {} clients on {} keys, seed {seed}",
            args.runs,
            args.nodes,
            if use_netns {
                "network namespaces"
            } else {
                "loopback"
            },
            args.duration,
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
            },
            args.clients,
            args.keys
        );
        let outcome = Run::execute(&args, &bin, use_netns, &kinds, run, seed, &header);
        totals.add(&outcome.summary);
        for f in &outcome.faults {
            *fault_totals.entry(f.kind.name()).or_default() += 1;
        }
        say!("verdict of run {run}: {:?}", outcome.verdict);
        verdicts.push(outcome.verdict);
    }
    let faults: usize = fault_totals.values().sum();
    say!(
        "=== summary: {} run(s) in {:.1} min; {totals}; {faults} faults{}; verdicts: {} pass, \
         {} inconclusive, {} fail",
        verdicts.len(),
        started.elapsed().as_secs_f64() / 60.0,
        if fault_totals.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                fault_totals
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        verdicts.iter().filter(|v| **v == Verdict::Pass).count(),
        verdicts
            .iter()
            .filter(|v| **v == Verdict::Inconclusive)
            .count(),
        verdicts.iter().filter(|v| **v == Verdict::Fail).count(),
    );
    if interrupted() {
        say!("interrupted");
        return Ok(ExitCode::from(130));
    }
    Ok(match verdicts.iter().max() {
        Some(Verdict::Pass) => ExitCode::SUCCESS,
        Some(Verdict::Inconclusive) | None => ExitCode::from(2),
        Some(Verdict::Fail) => ExitCode::from(1),
    })
}

/// SIGINT and SIGTERM set [`INTERRUPTED`]; the run in progress winds down and cleans up.
fn install_signal_handler() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("chaos: interrupted; stopping the run and cleaning up");
            INTERRUPTED.store(true, Ordering::SeqCst);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Randomness (a seeded xorshift: the schedule is reproducible from the printed seed, up to
// timing)
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so nearby seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Uniform in `[lo, hi)` seconds.
    fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(lo + (hi - lo) * unit)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------

/// What a client may do. The `/v1` delete and compare-and-set join here, with a [`Call`] and a
/// rule in the checker's register model each. One caution for the checker: it leaves out an
/// unknown write that no read returned, which is exact only while reads are the only
/// observations; a failed compare-and-set or a successful delete can depend on a write without
/// reading its value, so with them such writes must stay in (returning at +infinity).
#[derive(Clone, Copy, Debug)]
enum OpKind {
    Put,
    Get,
}

/// What the workload needs to know.
#[derive(Clone)]
struct Workload {
    /// Client address of node `i + 1`.
    addrs: Vec<String>,
    keys: Vec<String>,
    clients: usize,
    timeout: Duration,
    think: Duration,
    epoch: Instant,
    deadline: Instant,
    seed: u64,
}

/// Answers outside the contract, with where they came from.
type Unexpected = Vec<String>;

impl Workload {
    /// Runs every client until the deadline; returns their operations (in no particular order)
    /// and the answers that fell outside the contract.
    fn run(self) -> (Vec<Operation>, Unexpected) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return (Vec::new(), vec![format!("cannot start a runtime: {e}")]),
        };
        let w = Arc::new(self);
        rt.block_on(async {
            let tasks: Vec<_> = (0..w.clients)
                .map(|c| tokio::spawn(client(w.clone(), c)))
                .collect();
            let mut ops = Vec::new();
            let mut unexpected = Vec::new();
            for t in tasks {
                match t.await {
                    Ok((o, u)) => {
                        ops.extend(o);
                        unexpected.extend(u);
                    }
                    Err(e) => unexpected.push(format!("a client task failed: {e}")),
                }
            }
            (ops, unexpected)
        })
    }

    fn now(&self) -> Time {
        self.epoch.elapsed().as_nanos() as Time
    }
}

/// One client: one request at a time, each to a random node, on a random key.
async fn client(w: Arc<Workload>, id: usize) -> (Vec<Operation>, Unexpected) {
    let mut rng = Rng::new(w.seed ^ (id as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut conns: Vec<Connection> = w
        .addrs
        .iter()
        .map(|a| Connection::new(a.clone(), w.timeout))
        .collect();
    let mut ops = Vec::new();
    let mut unexpected = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < w.deadline && !interrupted() {
        let node = rng.below(conns.len() as u64) as usize;
        let key = w.keys[rng.below(w.keys.len() as u64) as usize].clone();
        let kind = if rng.chance(0.5) {
            OpKind::Put
        } else {
            OpKind::Get
        };
        let op = match kind {
            OpKind::Put => {
                let value = format!("c{id}-{seq}");
                seq += 1;
                let invoke = w.now();
                let r = conns[node].put(&key, Bytes::from(value.clone())).await;
                let complete = w.now();
                let (outcome, detail) = match r {
                    Ok(resp) => match resp.status.as_u16() {
                        204 => (Outcome::Ok, String::new()),
                        503 => (Outcome::Fail, "503".to_string()),
                        504 => (Outcome::Unknown, "504".to_string()),
                        s => {
                            unexpected.push(format!(
                                "PUT /{key} on node {}: {s} {}",
                                node + 1,
                                String::from_utf8_lossy(&resp.body).trim()
                            ));
                            (Outcome::Unknown, s.to_string())
                        }
                    },
                    // Nothing was sent: the write certainly did not happen.
                    Err(ClientError::Connect { .. }) => (Outcome::Fail, "connect".to_string()),
                    Err(ClientError::Timeout(_)) => (Outcome::Unknown, "timeout".to_string()),
                    Err(e) => (Outcome::Unknown, short(&e.to_string())),
                };
                Operation {
                    id: 0,
                    client: id,
                    node: node as u64 + 1,
                    key,
                    call: Call::Put(value),
                    invoke,
                    complete,
                    outcome,
                    detail,
                }
            }
            OpKind::Get => {
                let invoke = w.now();
                let r = conns[node].get(&key).await;
                let complete = w.now();
                let (outcome, detail) = read_outcome(r, &key, node, &mut unexpected);
                Operation {
                    id: 0,
                    client: id,
                    node: node as u64 + 1,
                    key,
                    call: Call::Get,
                    invoke,
                    complete,
                    outcome,
                    detail,
                }
            }
        };
        // Like a real client, back off a little after an error (a dead node refuses
        // connections at once; without this most operations would be refusals).
        let backoff = if matches!(op.outcome, Outcome::Ok | Outcome::Read(_)) {
            0
        } else {
            20 + rng.below(30)
        };
        ops.push(op);
        let think = w.think.as_millis() as u64 + 1;
        tokio::time::sleep(Duration::from_millis(backoff + rng.below(think))).await;
    }
    (ops, unexpected)
}

/// The outcome of a GET.
fn read_outcome(
    r: Result<coordinate_client::Response, ClientError>,
    key: &str,
    node: usize,
    unexpected: &mut Unexpected,
) -> (Outcome, String) {
    match r {
        Ok(resp) => match resp.status.as_u16() {
            200 => match String::from_utf8(resp.body.to_vec()) {
                Ok(v) => (Outcome::Read(Some(v)), String::new()),
                Err(_) => {
                    unexpected.push(format!("GET /{key} on node {}: non-UTF-8 value", node + 1));
                    (Outcome::Unknown, "non-UTF-8 value".into())
                }
            },
            404 => (Outcome::Read(None), String::new()),
            503 => (Outcome::Fail, "503".into()),
            s => {
                unexpected.push(format!(
                    "GET /{key} on node {}: {s} {}",
                    node + 1,
                    String::from_utf8_lossy(&resp.body).trim()
                ));
                (Outcome::Unknown, s.to_string())
            }
        },
        Err(ClientError::Connect { .. }) => (Outcome::Fail, "connect".into()),
        Err(ClientError::Timeout(_)) => (Outcome::Unknown, "timeout".into()),
        Err(e) => (Outcome::Unknown, short(&e.to_string())),
    }
}

/// The first line of an error, bounded.
fn short(s: &str) -> String {
    short_line(s.lines().next().unwrap_or(""), 80)
}

/// At most `n` characters of `s`.
fn short_line(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// A kind of fault the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FaultKind {
    Kill,
    Pause,
    Partition,
    /// Remove a node (`DELETE /<id>`), then add it back with an empty data dir
    /// (`POST /<id>`, started with `--join`).
    Membership,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Membership => "membership",
        }
    }

    fn parse_list(s: &str) -> Result<Vec<FaultKind>, String> {
        let mut kinds = BTreeSet::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "none" => {}
                "kill" => {
                    kinds.insert(FaultKind::Kill);
                }
                "pause" => {
                    kinds.insert(FaultKind::Pause);
                }
                "partition" => {
                    kinds.insert(FaultKind::Partition);
                }
                "membership" => {
                    kinds.insert(FaultKind::Membership);
                }
                other => {
                    return Err(format!(
                        "--nemesis: unknown fault {other:?} (want kill, pause, partition, \
                         membership or none)"
                    ))
                }
            }
        }
        Ok(kinds.into_iter().collect())
    }
}

/// One fault as it happened.
struct FaultRecord {
    kind: FaultKind,
    what: String,
    start: Time,
    end: Time,
}

impl std::fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{} .. {}] {}",
            check::history::secs(self.start),
            check::history::secs(self.end),
            self.what
        )
    }
}

/// A fault in force, to be healed.
enum Active {
    Killed(Vec<u64>),
    Paused(Vec<u64>),
    Partitioned,
    Removed(u64),
}

// ---------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------

mod netns {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::process::{Command, Stdio};

    /// Every namespace this binary creates starts with this, then `<pid>-`.
    pub const PREFIX: &str = "coordchaos-";

    /// Client port of every node (each node has its own namespace, so they never collide).
    pub const CLIENT_PORT: u16 = 2379;
    /// Peer port of every node.
    pub const PEER_PORT: u16 = 2380;

    mod sys {
        use std::os::raw::c_int;
        extern "C" {
            pub fn setns(fd: c_int, nstype: c_int) -> c_int;
        }
        pub const CLONE_NEWNET: c_int = 0x4000_0000;
    }

    /// Moves the calling thread (and the threads and processes it starts afterwards) into the
    /// network namespace `file` refers to.
    pub fn enter(file: &File) -> io::Result<()> {
        // SAFETY: setns reads the descriptor, which `file` keeps open for the duration of the
        // call, and changes only the calling thread's network namespace.
        let rc = unsafe { sys::setns(file.as_raw_fd(), sys::CLONE_NEWNET) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The calling thread's current network namespace (to come back to).
    pub fn current() -> io::Result<File> {
        File::open("/proc/thread-self/ns/net")
    }

    /// Runs `ip` with `args`; an error carries its stderr.
    pub fn ip(args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Whether this process can create network namespaces (tries one).
    pub fn available() -> bool {
        let name = format!("{PREFIX}{}-probe", std::process::id());
        let ok = ip(&["netns", "add", &name]).is_ok();
        if ok {
            let _ = ip(&["netns", "delete", &name]);
        }
        ok
    }

    /// Deletes namespaces left behind by chaos processes that no longer exist.
    pub fn remove_stale() {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("chaos: removing namespace {name} left by process {pid}");
                // Nodes that outlived it (it was killed) still run in there: stop them first.
                if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
                    for p in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                        if p.parse::<u32>().is_ok() {
                            let _ = Command::new("kill").args(["-KILL", p]).status();
                        }
                    }
                }
                let _ = ip(&["netns", "delete", name]);
            }
        }
    }

    /// A hub namespace holding a bridge (and the clients), and one namespace per node with a
    /// veth to the bridge. Dropping it deletes them all.
    pub struct Net {
        pub hub: String,
        /// Namespace of node `i + 1`.
        pub nodes: Vec<String>,
        hub_file: Option<File>,
        created: Vec<String>,
        /// Cut links (a < b, node ids).
        pub cut: Vec<(u64, u64)>,
    }

    /// Address of node `id` inside the namespaces.
    pub fn node_ip(id: u64) -> String {
        format!("10.77.0.{}", 10 + id)
    }

    impl Net {
        pub fn create(tag: &str, n: usize) -> Result<Net, String> {
            let mut net = Net {
                hub: format!("{tag}-hub"),
                nodes: (1..=n).map(|i| format!("{tag}-n{i}")).collect(),
                hub_file: None,
                created: Vec::new(),
                cut: Vec::new(),
            };
            let hub = net.hub.clone();
            ip(&["netns", "add", &hub])?;
            net.created.push(hub.clone());
            ip(&["-n", &hub, "link", "set", "lo", "up"])?;
            ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", &hub, "addr", "add", "10.77.0.1/24", "dev", "br0"])?;
            ip(&["-n", &hub, "link", "set", "br0", "up"])?;
            for (i, ns) in net.nodes.clone().iter().enumerate() {
                let id = i as u64 + 1;
                let veth = format!("v{id}");
                ip(&["netns", "add", ns])?;
                net.created.push(ns.clone());
                ip(&["-n", ns, "link", "set", "lo", "up"])?;
                ip(&[
                    "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                    "netns", ns,
                ])?;
                ip(&["-n", &hub, "link", "set", &veth, "master", "br0"])?;
                ip(&["-n", &hub, "link", "set", &veth, "up"])?;
                let addr = format!("{}/24", node_ip(id));
                ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
                ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            }
            net.hub_file = Some(
                File::open(format!("/run/netns/{hub}"))
                    .or_else(|_| File::open(format!("/var/run/netns/{hub}")))
                    .map_err(|e| format!("open namespace {hub}: {e}"))?,
            );
            Ok(net)
        }

        /// Moves the calling thread into the hub namespace.
        pub fn enter_hub(&self) -> Result<(), String> {
            let file = self.hub_file.as_ref().ok_or("no hub namespace")?;
            enter(file).map_err(|e| format!("setns into {}: {e}", self.hub))
        }

        /// Drops every packet between nodes `a` and `b` (both directions).
        pub fn cut(&mut self, a: u64, b: u64) -> Result<(), String> {
            let (a, b) = (a.min(b), a.max(b));
            if self.cut.contains(&(a, b)) {
                return Ok(());
            }
            let to_b = format!("{}/32", node_ip(b));
            let to_a = format!("{}/32", node_ip(a));
            ip(&[
                "-n",
                &self.nodes[a as usize - 1],
                "route",
                "add",
                "blackhole",
                &to_b,
            ])?;
            ip(&[
                "-n",
                &self.nodes[b as usize - 1],
                "route",
                "add",
                "blackhole",
                &to_a,
            ])?;
            self.cut.push((a, b));
            Ok(())
        }

        /// Removes every cut.
        pub fn heal(&mut self) -> Result<(), String> {
            let mut result = Ok(());
            for ns in &self.nodes {
                if let Err(e) = ip(&["-n", ns, "route", "flush", "type", "blackhole"]) {
                    result = Err(e);
                }
            }
            if result.is_ok() {
                self.cut.clear();
            }
            result
        }
    }

    impl Drop for Net {
        fn drop(&mut self) {
            for ns in self.created.iter().rev() {
                if let Err(e) = ip(&["netns", "delete", ns]) {
                    eprintln!("chaos: cleanup: {e}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

struct Node {
    id: u64,
    /// The command: program and arguments.
    cmd: Vec<String>,
    client_addr: String,
    peer_url: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
    starts: u32,
    /// Removed from the membership: its exit is expected.
    removed: bool,
    /// Its removal was asked for but not acknowledged, and it was still a member when last
    /// looked at: the removal may still be applied (then it exits 0 by itself).
    removal_unsure: bool,
    /// Added back to the cluster: starts with `--join` from now on.
    join: bool,
}

struct Cluster {
    nodes: Vec<Node>,
    /// Exits nobody caused.
    crashes: Vec<String>,
    /// Things worth reporting that are not failures.
    notes: Vec<String>,
    /// For status queries from the controlling thread.
    rt: tokio::runtime::Runtime,
}

impl Cluster {
    fn node(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn spawn(&mut self, id: u64) -> Result<(), String> {
        let node = self.node(id);
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .map_err(|e| format!("open {}: {e}", node.log_path.display()))?;
        let _ = writeln!(
            log,
            "=== chaos: start #{} of node {id}: {}",
            node.starts,
            node.cmd.join(" ")
        );
        let err = log
            .try_clone()
            .map_err(|e| format!("clone log handle: {e}"))?;
        use std::os::unix::process::CommandExt;
        let child = Command::new(&node.cmd[0])
            .args(&node.cmd[1..])
            .args(node.join.then_some("--join"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .env("RUST_BACKTRACE", "1")
            // Its own process group: a Ctrl-C on the terminal reaches chaos, which stops the
            // nodes itself, instead of killing nodes mid-run.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", node.cmd[0]))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// kill -9 and reap.
    fn kill(&mut self, id: u64) {
        let node = self.node(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    fn signal(&mut self, id: u64, sig: &str) {
        let node = self.node(id);
        if let Some(child) = &node.child {
            // The child is not reaped yet, so its pid is still its own.
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    fn pause(&mut self, id: u64) {
        self.signal(id, "STOP");
        self.node(id).paused = true;
    }

    fn resume(&mut self, id: u64) {
        self.signal(id, "CONT");
        self.node(id).paused = false;
    }

    /// Records (and reaps) nodes that exited without the nemesis killing them.
    fn check_exits(&mut self, now: Time) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let at = check::history::secs(now);
                    let last_words = std::fs::read_to_string(&node.log_path)
                        .ok()
                        .and_then(|log| log.lines().last().map(|l| short_line(l, 200)))
                        .unwrap_or_default();
                    if node.removal_unsure && status.success() {
                        say!(
                            "  node {} exited 0 at {at}: its unacknowledged removal was applied \
                             late",
                            node.id
                        );
                        node.removed = true;
                        node.removal_unsure = false;
                    }
                    let crash = if !node.removed {
                        Some(format!(
                            "node {} exited by itself at {at}: {status}",
                            node.id
                        ))
                    } else if !status.success() {
                        Some(format!(
                            "node {}, removed from the cluster, exited at {at} with {status} \
                             (want 0)",
                            node.id
                        ))
                    } else {
                        None
                    };
                    if let Some(crash) = crash {
                        let crash = format!("{crash}; its log ends: {last_words}");
                        say!("  {crash}");
                        self.crashes.push(crash);
                    }
                    node.child = None;
                }
            }
        }
    }

    /// `/v1/status` of node `id`, if it answers within a second.
    fn status(&self, id: u64) -> Option<serde_json::Value> {
        let node = &self.nodes[id as usize - 1];
        if node.child.is_none() || node.paused {
            return None;
        }
        let mut conn = Connection::new(node.client_addr.clone(), Duration::from_secs(1));
        let resp = self
            .rt
            .block_on(conn.request(hyper::Method::GET, "/v1/status", Bytes::new()))
            .ok()?;
        if resp.status.as_u16() != 200 {
            return None;
        }
        serde_json::from_slice(&resp.body).ok()
    }

    /// One request to node `id`: the status and the body, or why there was no answer.
    fn request(
        &self,
        id: u64,
        method: hyper::Method,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<(u16, String), ClientError> {
        let node = &self.nodes[id as usize - 1];
        let mut conn = Connection::new(node.client_addr.clone(), timeout);
        let body = Bytes::from(body.to_string());
        let r = self.rt.block_on(conn.request(method, path, body))?;
        Ok((
            r.status.as_u16(),
            String::from_utf8_lossy(&r.body).trim().to_string(),
        ))
    }

    /// The member ids node `via` knows, if it answers.
    fn members(&self, via: u64) -> Option<BTreeSet<u64>> {
        let (status, body) = self
            .request(
                via,
                hyper::Method::GET,
                "/v1/members",
                "",
                Duration::from_secs(2),
            )
            .ok()?;
        if status != 200 {
            return None;
        }
        let list: serde_json::Value = serde_json::from_str(&body).ok()?;
        list.as_array()?
            .iter()
            .map(|m| m.get("id")?.as_u64())
            .collect()
    }

    /// The member ids that any serving node other than `exclude` reports.
    fn members_any(&self, exclude: u64) -> Option<BTreeSet<u64>> {
        self.serving()
            .into_iter()
            .filter(|&id| id != exclude)
            .find_map(|id| self.members(id))
    }

    /// Running nodes that are members and not paused.
    fn serving(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some() && !n.paused && !n.removed)
            .map(|n| n.id)
            .collect()
    }

    /// The node that says it leads in the highest term, if any answers so.
    fn leader(&self) -> Option<u64> {
        self.ids()
            .into_iter()
            .filter_map(|id| {
                let s = self.status(id)?;
                (s.get("role")?.as_str()? == "leader").then_some((s.get("term")?.as_u64()?, id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Waits until every node runs, names the same leader, and has applied the same index as
    /// every other has committed. Returns that index.
    fn converge(&mut self, timeout: Duration, epoch: Instant) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_exits(epoch.elapsed().as_nanos() as Time);
            let statuses: Vec<Option<serde_json::Value>> =
                self.ids().into_iter().map(|id| self.status(id)).collect();
            let num = |s: &serde_json::Value, f: &str| s.get(f).and_then(|v| v.as_u64());
            let all: Option<Vec<(u64, u64, u64)>> = statuses
                .iter()
                .map(|s| {
                    let s = s.as_ref()?;
                    Some((
                        num(s, "leader")?,
                        num(s, "commit_index")?,
                        num(s, "applied_index")?,
                    ))
                })
                .collect();
            if let Some(all) = &all {
                let (leader, commit, _) = all[0];
                let leader_says = statuses
                    .get(leader.wrapping_sub(1) as usize)
                    .and_then(|s| s.as_ref())
                    .and_then(|s| s.get("role"))
                    .and_then(|r| r.as_str())
                    == Some("leader");
                if leader != 0
                    && leader_says
                    && all
                        .iter()
                        .all(|&(l, c, a)| l == leader && c == commit && a == commit)
                {
                    return Ok(commit);
                }
            }
            if Instant::now() < deadline && !interrupted() {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let last = statuses
                .iter()
                .enumerate()
                .map(|(i, s)| match s {
                    Some(s) => format!("node {}: {s}", i + 1),
                    None => format!("node {}: no answer", i + 1),
                })
                .collect::<Vec<_>>()
                .join("\n    ");
            return Err(format!(
                "the cluster did not converge within {timeout:?}; last statuses:\n    {last}"
            ));
        }
    }

    /// SIGCONT for paused nodes, then SIGTERM to every node, waiting up to 10 s each (then
    /// kill -9). Returns the nodes that did not exit cleanly.
    fn stop_all(&mut self) -> Vec<String> {
        let mut unclean = Vec::new();
        for id in self.ids() {
            if self.node(id).paused {
                self.resume(id);
            }
            self.signal(id, "TERM");
        }
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else {
                continue;
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => break None,
                }
            };
            match status {
                Some(s) if s.success() => {}
                Some(s) => unclean.push(format!("node {}: SIGTERM -> {s}", node.id)),
                None => {
                    let _ = child.kill();
                    let _ = child.wait();
                    unclean.push(format!(
                        "node {}: still running 10 s after SIGTERM (killed)",
                        node.id
                    ));
                }
            }
        }
        unclean
    }

    fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "----- node {} ({}), last {lines} lines -----\n{}\n",
                node.id,
                node.log_path.display(),
                all[all.len().saturating_sub(lines)..].join("\n")
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Loopback ports: a block per process (from its pid) below the ephemeral range, each checked
/// by binding it.
fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    const LOW: u32 = 21_000;
    const HIGH: u32 = 32_000;
    let span = HIGH - LOW;
    let mut port = LOW + (std::process::id() * 37) % span;
    let mut out = Vec::new();
    for _ in 0..span {
        port = if port + 1 >= HIGH { LOW } else { port + 1 };
        let p = port as u16;
        if [12379, 12380, 22379, 22380, 32379, 32380].contains(&p) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("0.0.0.0", p)).is_ok()
        {
            out.push(p);
            if out.len() == n {
                return Ok(out);
            }
        }
    }
    Err("no free loopback ports".into())
}

// ---------------------------------------------------------------------------------------------
// One run
// ---------------------------------------------------------------------------------------------

struct RunOutcome {
    verdict: Verdict,
    summary: Summary,
    faults: Vec<FaultRecord>,
}

struct Run<'a> {
    args: &'a Args,
    kinds: &'a [FaultKind],
    rng: Rng,
    epoch: Instant,
    faults: Vec<FaultRecord>,
    /// Reasons the run failed (a bug) and reasons it says nothing (inconclusive).
    failures: Vec<String>,
    inconclusive: Vec<String>,
}

impl Run<'_> {
    fn execute(
        args: &Args,
        bin: &Path,
        use_netns: bool,
        kinds: &[FaultKind],
        run: usize,
        seed: u64,
        header: &str,
    ) -> RunOutcome {
        let pid = std::process::id();
        let dir = args
            .dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("coordinate-chaos-{pid}-{run}-{}", seed % 1_000_000));
        if std::fs::create_dir_all(&dir).is_ok() {
            report_to(Some(&dir.join("report.txt")));
        }
        say!("{header}");
        let mut r = Run {
            args,
            kinds,
            rng: Rng::new(seed),
            epoch: Instant::now(),
            faults: Vec::new(),
            failures: Vec::new(),
            inconclusive: Vec::new(),
        };
        let home = netns::current().ok();
        let (summary, tails) = match r.execute_in(
            &dir,
            bin,
            use_netns,
            &format!("{}{pid}-{run}", netns::PREFIX),
        ) {
            Ok(x) => x,
            Err(e) => {
                r.inconclusive.push(format!("setup: {e}"));
                (Summary::default(), String::new())
            }
        };
        // Back to where we started (the namespaces are gone by now).
        if let (true, Some(home)) = (use_netns, &home) {
            if let Err(e) = netns::enter(home) {
                eprintln!("chaos: cannot return to the original network namespace: {e}");
            }
        }
        let verdict = if !r.failures.is_empty() {
            Verdict::Fail
        } else if !r.inconclusive.is_empty() {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        };
        for f in &r.failures {
            say!("FAIL: {f}");
        }
        for f in &r.inconclusive {
            say!("INCONCLUSIVE: {f}");
        }
        if verdict != Verdict::Pass && !tails.is_empty() {
            say!("{tails}");
        }
        if verdict == Verdict::Pass && !args.keep {
            report_to(None);
            let _ = std::fs::remove_dir_all(&dir);
        } else if dir.exists() {
            say!(
                "run data kept in {} (report.txt: this run's output)",
                dir.display()
            );
            report_to(None);
        }
        RunOutcome {
            verdict,
            summary,
            faults: r.faults,
        }
    }

    fn now(&self) -> Time {
        self.epoch.elapsed().as_nanos() as Time
    }

    /// The run proper; returns the operation counts and, for a failed run, node log tails.
    fn execute_in(
        &mut self,
        dir: &Path,
        bin: &Path,
        use_netns: bool,
        tag: &str,
    ) -> Result<(Summary, String), String> {
        let args = self.args;
        let n = args.nodes;
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut net = if use_netns {
            let net = netns::Net::create(tag, n)?;
            net.enter_hub()?;
            Some(net)
        } else {
            None
        };
        let (peer_urls, client_addrs, listen) = match &net {
            Some(_) => (
                (1..=n as u64)
                    .map(|id| format!("http://{}:{}", netns::node_ip(id), netns::PEER_PORT))
                    .collect::<Vec<_>>(),
                (1..=n as u64)
                    .map(|id| format!("{}:{}", netns::node_ip(id), netns::CLIENT_PORT))
                    .collect::<Vec<_>>(),
                "0.0.0.0",
            ),
            None => {
                let ports = free_ports(2 * n)?;
                (
                    ports[..n]
                        .iter()
                        .map(|p| format!("http://127.0.0.1:{p}"))
                        .collect(),
                    ports[n..]
                        .iter()
                        .map(|p| format!("127.0.0.1:{p}"))
                        .collect(),
                    "127.0.0.1",
                )
            }
        };
        let bin_s = bin.display().to_string();
        let nodes = (1..=n as u64)
            .map(|id| {
                let mut cmd = Vec::new();
                if let Some(net) = &net {
                    cmd.extend(
                        ["ip", "netns", "exec", &net.nodes[id as usize - 1]].map(String::from),
                    );
                }
                let port = client_addrs[id as usize - 1]
                    .rsplit(':')
                    .next()
                    .unwrap_or("0")
                    .to_string();
                cmd.extend([
                    bin_s.clone(),
                    "--id".into(),
                    id.to_string(),
                    "--cluster".into(),
                    peer_urls.join(","),
                    "--port".into(),
                    port,
                    "--listen-host".into(),
                    listen.into(),
                    "--data-dir".into(),
                    dir.join(format!("node-{id}")).display().to_string(),
                    "--snapshot-count".into(),
                    args.snapshot_count.to_string(),
                    "--request-timeout-ms".into(),
                    args.request_timeout_ms.to_string(),
                    "--log-level".into(),
                    args.log_level.clone(),
                ]);
                Node {
                    id,
                    cmd,
                    client_addr: client_addrs[id as usize - 1].clone(),
                    peer_url: peer_urls[id as usize - 1].clone(),
                    data_dir: dir.join(format!("node-{id}")),
                    log_path: dir.join(format!("node-{id}.log")),
                    child: None,
                    paused: false,
                    starts: 0,
                    removed: false,
                    removal_unsure: false,
                    join: false,
                }
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let mut cluster = Cluster {
            nodes,
            crashes: Vec::new(),
            notes: Vec::new(),
            rt,
        };
        for id in cluster.ids() {
            cluster.spawn(id)?;
        }
        self.epoch = Instant::now();
        cluster
            .converge(Duration::from_secs(30), self.epoch)
            .map_err(|e| format!("no leader at start: {e}\n{}", cluster.log_tails(20)))?;

        // Workload and nemesis.
        self.epoch = Instant::now();
        let deadline = self.epoch + Duration::from_secs(args.duration);
        let keys: Vec<String> = (0..args.keys).map(|k| format!("chaos/k{k}")).collect();
        let workload = Workload {
            addrs: client_addrs.clone(),
            keys: keys.clone(),
            clients: args.clients,
            timeout: Duration::from_millis(args.client_timeout_ms),
            think: Duration::from_millis(args.think_ms),
            epoch: self.epoch,
            deadline,
            seed: self.rng.next(),
        };
        let worker = std::thread::Builder::new()
            .name("workload".into())
            .spawn(move || workload.run())
            .map_err(|e| format!("spawn the workload thread: {e}"))?;
        self.nemesis(&mut cluster, net.as_mut(), deadline);
        let (ops, unexpected) = worker
            .join()
            .unwrap_or_else(|_| (Vec::new(), vec!["the workload thread panicked".into()]));
        let mut history = History::new();
        let mut ops = ops;
        ops.sort_by_key(|o| (o.invoke, o.client));
        if let Some(test) = &args.self_test {
            match inject_stale_read(&mut ops) {
                Some(what) => say!("  self-test {test}: {what}"),
                None => self
                    .inconclusive
                    .push("self-test: no read to make stale in this history".into()),
            }
        }
        history.extend(ops);
        for u in unexpected.iter().take(20) {
            self.failures
                .push(format!("answer outside the contract: {u}"));
        }
        if unexpected.len() > 20 {
            self.failures.push(format!(
                "... {} answers outside the contract in all",
                unexpected.len()
            ));
        }

        // Heal, converge, read everything from everyone.
        let summary_workload = history.summary();
        say!("  {summary_workload}");
        say!("  faults: {} injected", self.faults.len());
        // Crashes first: they explain most of what may go wrong after them.
        cluster.check_exits(self.now());
        self.failures.append(&mut cluster.crashes);
        let healed_at = Instant::now();
        match cluster.converge(Duration::from_secs(args.recovery_timeout), self.epoch) {
            Ok(index) => {
                say!(
                    "  recovery: all {n} nodes applied index {index} {:.1} s after the workload ended",
                    healed_at.elapsed().as_secs_f64()
                );
                self.final_reads(&mut cluster, &keys, &mut history);
            }
            Err(e) => self.failures.push(e),
        }
        std::fs::write(dir.join("history.txt"), history.to_text()).ok();
        std::fs::write(
            dir.join("faults.txt"),
            self.faults
                .iter()
                .map(|f| format!("{f}\n"))
                .collect::<String>(),
        )
        .ok();

        // Linearizability.
        let cfg = check::Config {
            time_limit: Duration::from_secs(args.check_time_limit),
            ..check::Config::default()
        };
        let report = check::check(&history, &cfg);
        say!(
            "  linearizability: {} ({} keys, {} operations searched, {} steps, {:.2} s)",
            match &report.verdict {
                check::Verdict::Linearizable => "linearizable".to_string(),
                check::Verdict::NotLinearizable(_) => "NOT LINEARIZABLE".to_string(),
                check::Verdict::Unknown(why) => format!("unknown ({why})"),
            },
            report.keys,
            report.ops_searched,
            report.steps,
            report.elapsed.as_secs_f64()
        );
        match &report.verdict {
            check::Verdict::Linearizable => {}
            check::Verdict::NotLinearizable(v) => {
                say!("{v}");
                let (from, to) = (
                    v.window.iter().map(|o| o.invoke).min().unwrap_or(0),
                    v.window.iter().map(|o| o.complete).max().unwrap_or(0),
                );
                for f in &self.faults {
                    if f.start <= to && f.end >= from.saturating_sub(5_000_000_000) {
                        say!("  fault around the window: {f}");
                    }
                }
                self.failures
                    .push(format!("history of key {:?} is not linearizable", v.key));
            }
            check::Verdict::Unknown(why) => self.inconclusive.push(why.clone()),
        }
        if summary_workload.ok() < args.min_ok {
            self.inconclusive.push(format!(
                "only {} operations succeeded (want at least {})",
                summary_workload.ok(),
                args.min_ok
            ));
        }

        // Stop.
        cluster.check_exits(self.now());
        self.failures.append(&mut cluster.crashes);
        for u in cluster.stop_all() {
            say!("  note: {u}");
        }
        for note in &cluster.notes {
            say!("  note: {note}");
        }
        let tails = if self.failures.is_empty() && self.inconclusive.is_empty() {
            String::new()
        } else {
            cluster.log_tails(40)
        };
        drop(cluster);
        drop(net);
        Ok((summary_workload, tails))
    }

    /// Sleeps `d` in small steps, watching for nodes that exit by themselves.
    fn sleep(&mut self, cluster: &mut Cluster, d: Duration, deadline: Instant) {
        let end = (Instant::now() + d).min(deadline);
        while Instant::now() < end && !interrupted() {
            std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
            let now = self.now();
            cluster.check_exits(now);
        }
    }

    /// Injects one fault at a time until `deadline`, each healed before the next.
    fn nemesis(
        &mut self,
        cluster: &mut Cluster,
        mut net: Option<&mut netns::Net>,
        deadline: Instant,
    ) {
        let args = self.args;
        let n = args.nodes as u64;
        loop {
            let quiet = self
                .rng
                .secs(0.5 * args.fault_interval, 1.5 * args.fault_interval);
            self.sleep(cluster, quiet, deadline);
            let remaining = deadline.saturating_duration_since(Instant::now());
            if self.kinds.is_empty() || remaining < Duration::from_secs(1) || interrupted() {
                break;
            }
            if !cluster.crashes.is_empty() {
                // The run has failed already; more faults would only blur what happened.
                say!("  the nemesis stops: a node crashed");
                break;
            }
            self.readd_late_removals(cluster);
            let kind = self.kinds[self.rng.below(self.kinds.len() as u64) as usize];
            let start = self.now();
            let (what, active) = match kind {
                FaultKind::Kill | FaultKind::Pause => {
                    // Now and then every node at once: a whole-cluster crash and restart.
                    let all = kind == FaultKind::Kill && self.rng.chance(0.1);
                    let targets = if all {
                        (1..=n).map(|id| (id, false)).collect()
                    } else {
                        self.pick_targets(cluster, n)
                    };
                    let names = if all {
                        "every node".to_string()
                    } else {
                        targets
                            .iter()
                            .map(|(id, leader)| {
                                format!("node {id}{}", if *leader { " (leader)" } else { "" })
                            })
                            .collect::<Vec<_>>()
                            .join(" and ")
                    };
                    let ids: Vec<u64> = targets.iter().map(|(id, _)| *id).collect();
                    if kind == FaultKind::Kill {
                        for &id in &ids {
                            cluster.kill(id);
                        }
                        (
                            format!("kill -9 {names}, then restart"),
                            Active::Killed(ids),
                        )
                    } else {
                        for &id in &ids {
                            cluster.pause(id);
                        }
                        (
                            format!("SIGSTOP {names}, then SIGCONT"),
                            Active::Paused(ids),
                        )
                    }
                }
                FaultKind::Membership => {
                    let (target, leader) = self.pick_targets(cluster, n)[0];
                    let who = format!("node {target}{}", if leader { " (leader)" } else { "" });
                    match self.remove_member(cluster, target) {
                        Ok(()) => (
                            format!("remove {who}, then add it back with an empty data dir"),
                            Active::Removed(target),
                        ),
                        Err(why) => {
                            let record = FaultRecord {
                                kind,
                                what: format!("remove {who}: not removed ({why})"),
                                start,
                                end: self.now(),
                            };
                            say!("  fault {record}");
                            self.faults.push(record);
                            continue;
                        }
                    }
                }
                FaultKind::Partition => {
                    let Some(net) = net.as_deref_mut() else {
                        break;
                    };
                    let (what, sides) = self.pick_partition(cluster, n);
                    let mut ok = true;
                    for (a, b) in sides {
                        if let Err(e) = net.cut(a, b) {
                            self.inconclusive.push(format!("partition: {e}"));
                            ok = false;
                            break;
                        }
                    }
                    if !ok {
                        let _ = net.heal();
                        break;
                    }
                    (what, Active::Partitioned)
                }
            };
            let hold = self
                .rng
                .secs(0.4 * args.fault_duration, 1.6 * args.fault_duration);
            // Faults end by the deadline at the latest, so the workload sees the healed cluster.
            self.sleep(cluster, hold, deadline + Duration::from_millis(200));
            match active {
                Active::Killed(ids) => {
                    for id in ids {
                        if let Err(e) = cluster.spawn(id) {
                            self.failures.push(format!("restart node {id}: {e}"));
                        }
                    }
                }
                Active::Paused(ids) => {
                    for id in ids {
                        cluster.resume(id);
                    }
                }
                Active::Partitioned => {
                    if let Some(net) = net.as_deref_mut() {
                        if let Err(e) = net.heal() {
                            self.failures.push(format!("heal the partition: {e}"));
                        }
                    }
                }
                Active::Removed(id) => {
                    if let Err(e) = self.add_member_back(cluster, id) {
                        self.failures.push(format!("add node {id} back: {e}"));
                    }
                }
            }
            let record = FaultRecord {
                kind,
                what,
                start,
                end: self.now(),
            };
            say!("  fault {record}");
            self.faults.push(record);
        }
        // Nothing stays broken: restart what is not running (a crash is already recorded).
        self.readd_late_removals(cluster);
        for id in cluster.ids() {
            // (A node whose re-adding failed stays down: that failure is recorded, and started
            // without --join on an empty data dir it would found a cluster of its own.)
            if cluster.node(id).child.is_none() && !cluster.node(id).removed {
                let _ = cluster.spawn(id);
            }
            if cluster.node(id).paused {
                cluster.resume(id);
            }
        }
        if let Some(net) = net {
            if let Err(e) = net.heal() {
                self.failures.push(format!("heal the network: {e}"));
            }
        }
    }

    /// `DELETE /<target>` through another member; then waits for the target to exit by itself
    /// (it shuts down once it applies its removal), or kills it after 10 s (a removed node that
    /// never hears of its removal keeps running: not a bug). `Err`: it is still a member.
    fn remove_member(&mut self, cluster: &mut Cluster, target: u64) -> Result<(), String> {
        let timeout = Duration::from_millis(self.args.client_timeout_ms);
        let now = self.now();
        cluster.check_exits(now);
        let others: Vec<u64> = cluster
            .serving()
            .into_iter()
            .filter(|&id| id != target)
            .collect();
        let Some(&via) = others.get(self.rng.below(others.len().max(1) as u64) as usize) else {
            return Err("no other member to ask".into());
        };
        let path = format!("/{target}");
        let answer = cluster.request(via, hyper::Method::DELETE, &path, "", timeout);
        if let Err(e @ ClientError::Connect { .. }) = &answer {
            // Nothing was sent.
            return Err(format!("DELETE via node {via}: {}", short(&e.to_string())));
        }
        if !matches!(answer, Ok((204, _))) {
            // Not acknowledged: find out whether it happened anyway (a lagging node may not
            // have applied it yet, so look for a while).
            let deadline = Instant::now() + Duration::from_secs(10);
            let still = loop {
                let members = cluster.members_any(target);
                if members.as_ref().is_some_and(|m| !m.contains(&target)) {
                    break false;
                }
                if Instant::now() >= deadline {
                    break true;
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            if still {
                // It may still be applied later: then the node exits by itself, which is
                // not a crash, and it is added back before the next fault.
                cluster.node(target).removal_unsure = true;
                return Err(match answer {
                    Ok((status, body)) => format!("DELETE via node {via}: {status} {body}"),
                    Err(e) => format!("DELETE via node {via}: {}", short(&e.to_string())),
                });
            }
        }
        cluster.node(target).removed = true;
        cluster.node(target).removal_unsure = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while cluster.node(target).child.is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.now();
            cluster.check_exits(now);
        }
        if cluster.node(target).child.is_some() {
            cluster.notes.push(format!(
                "node {target} was still running 10 s after its removal (killed)"
            ));
            cluster.kill(target);
        }
        Ok(())
    }

    /// Adds back the nodes whose unacknowledged removal was applied after all.
    fn readd_late_removals(&mut self, cluster: &mut Cluster) {
        let now = self.now();
        cluster.check_exits(now);
        for id in cluster.ids() {
            let node = cluster.node(id);
            if node.removed && node.child.is_none() {
                if let Err(e) = self.add_member_back(cluster, id) {
                    self.failures.push(format!("add node {id} back: {e}"));
                }
            }
        }
    }

    /// Empties the data dir of a removed node, adds it back (`POST /<id>` with its peer URL,
    /// retried for up to 30 s), and starts it with `--join`.
    fn add_member_back(&mut self, cluster: &mut Cluster, id: u64) -> Result<(), String> {
        let timeout = Duration::from_millis(self.args.client_timeout_ms);
        if cluster.node(id).child.is_some() {
            cluster.kill(id);
        }
        let dir = cluster.node(id).data_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("empty {}: {e}", dir.display()))?;
        }
        let url = cluster.node(id).peer_url.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        let added = loop {
            let serving = cluster.serving();
            if serving.is_empty() {
                last = "no member is serving".into();
            } else {
                let via = serving[self.rng.below(serving.len() as u64) as usize];
                match cluster.request(via, hyper::Method::POST, &format!("/{id}"), &url, timeout) {
                    Ok((204, _)) => break true,
                    Ok((status, body)) => last = format!("POST via node {via}: {status} {body}"),
                    Err(e) => last = format!("POST via node {via}: {}", short(&e.to_string())),
                }
                // An unacknowledged add may still have happened.
                if cluster.members(via).is_some_and(|m| m.contains(&id)) {
                    break true;
                }
            }
            if Instant::now() >= deadline || interrupted() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        if !added {
            return Err(format!(
                "not a member again after 30 s; last answer: {last}"
            ));
        }
        let node = cluster.node(id);
        node.removed = false;
        node.join = true;
        cluster.spawn(id)
    }

    /// The leader or a random node (on five or more nodes sometimes a second one, never a
    /// majority); `(id, was it the leader)`.
    fn pick_targets(&mut self, cluster: &Cluster, n: u64) -> Vec<(u64, bool)> {
        let leader = cluster.leader();
        let mut ids: Vec<u64> = (1..=n).collect();
        self.rng.shuffle(&mut ids);
        let first = match leader {
            Some(l) if self.rng.chance(0.5) => l,
            _ => ids[0],
        };
        let mut targets = vec![(first, Some(first) == leader)];
        if n >= 5 && self.rng.chance(0.3) {
            if let Some(&second) = ids.iter().find(|&&id| id != first) {
                targets.push((second, Some(second) == leader));
            }
        }
        targets
    }

    /// A partition: its description and the links to cut.
    fn pick_partition(&mut self, cluster: &Cluster, n: u64) -> (String, Vec<(u64, u64)>) {
        let mut ids: Vec<u64> = (1..=n).collect();
        self.rng.shuffle(&mut ids);
        let between = |a: &[u64], b: &[u64]| -> Vec<(u64, u64)> {
            a.iter()
                .flat_map(|&x| b.iter().map(move |&y| (x, y)))
                .collect()
        };
        let set = |s: &[u64]| {
            let mut s = s.to_vec();
            s.sort_unstable();
            format!("{s:?}")
        };
        match self.rng.below(3) {
            0 => {
                let leader = cluster.leader().unwrap_or(ids[0]);
                let rest: Vec<u64> = (1..=n).filter(|&id| id != leader).collect();
                (
                    format!("isolate the leader: {} | {}", set(&[leader]), set(&rest)),
                    between(&[leader], &rest),
                )
            }
            1 if n >= 3 => {
                // a | b, with c seeing both: two majorities that share one node.
                let bridge = ids[0];
                let rest = &ids[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                (
                    format!(
                        "bridge: {} | {}, node {bridge} sees both sides",
                        set(a),
                        set(b)
                    ),
                    between(a, b),
                )
            }
            _ => {
                let minority = 1 + self.rng.below(((n - 1) / 2).max(1)) as usize;
                let (a, b) = ids.split_at(minority.min(ids.len() - 1));
                (
                    format!("minority {} | majority {}", set(a), set(b)),
                    between(a, b),
                )
            }
        }
    }

    /// Reads every key from every node (recorded in the history), and checks that the nodes
    /// agree on every value and on their key count, and that every acknowledged write is
    /// readable or superseded.
    fn final_reads(&mut self, cluster: &mut Cluster, keys: &[String], history: &mut History) {
        let timeout = Duration::from_millis(self.args.client_timeout_ms);
        let mut finals: BTreeMap<&str, BTreeMap<u64, Outcome>> = BTreeMap::new();
        let mut unexpected = Vec::new();
        for node in cluster.ids() {
            let addr = cluster.nodes[node as usize - 1].client_addr.clone();
            let mut conn = Connection::new(addr, timeout);
            for key in keys {
                let invoke = self.now();
                let r = cluster.rt.block_on(conn.get(key));
                let complete = self.now();
                let (outcome, detail) = read_outcome(r, key, node as usize - 1, &mut unexpected);
                finals
                    .entry(key.as_str())
                    .or_default()
                    .insert(node, outcome.clone());
                history.push(Operation {
                    id: 0,
                    // Final readers are numbered after the workload's clients.
                    client: self.args.clients + node as usize - 1,
                    node,
                    key: key.clone(),
                    call: Call::Get,
                    invoke,
                    complete,
                    outcome,
                    detail,
                });
            }
        }
        for u in unexpected {
            self.failures.push(format!("final read: {u}"));
        }
        let mut diverged = false;
        let mut lost = 0;
        let mut acked = 0;
        for (key, answers) in &finals {
            let distinct: BTreeSet<String> = answers.values().map(|o| format!("{o:?}")).collect();
            if distinct.len() != 1 {
                diverged = true;
                self.failures.push(format!(
                    "nodes disagree on key {key:?} after healing: {}",
                    answers
                        .iter()
                        .map(|(n, o)| format!("node {n}: {o:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            }
            let Some(Outcome::Read(final_value)) = answers.values().next().cloned() else {
                self.failures.push(format!(
                    "final read of key {key:?} got no answer: {answers:?}"
                ));
                continue;
            };
            // An acknowledged write is lost if the final value was written by an
            // acknowledged write that completed before it was even invoked (or is absent).
            let ops: Vec<&Operation> = history.ops().iter().filter(|o| o.key == *key).collect();
            let final_writer = ops
                .iter()
                .find(|o| matches!((&o.call, &final_value), (Call::Put(v), Some(f)) if v == f));
            for w in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
                acked += 1;
                let Call::Put(v) = &w.call else { continue };
                if final_value.as_deref() == Some(v.as_str()) {
                    continue;
                }
                let lost_for_sure = match final_writer {
                    None => final_value.is_none(),
                    Some(f) => f.outcome == Outcome::Ok && f.complete < w.invoke,
                };
                if lost_for_sure {
                    lost += 1;
                }
            }
        }
        if lost > 0 {
            self.failures.push(format!(
                "{lost} acknowledged writes are neither readable at the end nor superseded"
            ));
        }
        let counts: BTreeSet<u64> = cluster
            .ids()
            .into_iter()
            .filter_map(|id| cluster.status(id)?.get("keys")?.as_u64())
            .collect();
        if counts.len() > 1 {
            diverged = true;
            self.failures
                .push(format!("nodes hold different numbers of keys: {counts:?}"));
        }
        say!(
            "  final state: {} keys read from all {} nodes: {}; {acked} acknowledged writes, \
             {lost} lost",
            keys.len(),
            cluster.nodes.len(),
            if diverged { "DIVERGED" } else { "identical" },
        );
    }
}

/// Makes one read stale: it returns the value of an acknowledged write that another
/// acknowledged write overwrote before the read began. Returns what it did.
fn inject_stale_read(ops: &mut [Operation]) -> Option<String> {
    let ok_writes: Vec<(String, String, Time, Time)> = ops
        .iter()
        .filter_map(|o| match (&o.call, &o.outcome) {
            (Call::Put(v), Outcome::Ok) => Some((o.key.clone(), v.clone(), o.invoke, o.complete)),
            _ => None,
        })
        .collect();
    for read in ops.iter_mut() {
        let Outcome::Read(Some(seen)) = &read.outcome else {
            continue;
        };
        // An older write, then a newer one that started after it completed, both before the
        // read began.
        let found = ok_writes.iter().find_map(|(k_new, _, inv_new, done_new)| {
            if *k_new != read.key || *done_new >= read.invoke {
                return None;
            }
            ok_writes.iter().find(|(k_old, v_old, _, done_old)| {
                *k_old == read.key && done_old < inv_new && v_old != seen
            })
        });
        if let Some((_, old, _, _)) = found {
            let what = format!(
                "client {}'s read of {:?} at {} now returns {old:?} instead of {seen:?}",
                read.client,
                read.key,
                check::history::secs(read.invoke)
            );
            read.outcome = Outcome::Read(Some(old.clone()));
            read.detail = "stale value injected by --self-test".into();
            return Some(what);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_parse() {
        assert_eq!(
            FaultKind::parse_list("kill, pause,partition").unwrap(),
            vec![FaultKind::Kill, FaultKind::Pause, FaultKind::Partition]
        );
        assert!(FaultKind::parse_list("none").unwrap().is_empty());
        assert!(FaultKind::parse_list("explode").is_err());
    }

    #[test]
    fn the_self_test_makes_a_read_stale() {
        use check::history::build::{get, put};
        let mut ops = vec![
            put(0, "k", "a", 0, 1),
            put(0, "k", "b", 2, 3),
            get(1, "k", Some("b"), 4, 5),
        ];
        assert!(inject_stale_read(&mut ops).is_some());
        assert_eq!(ops[2].outcome, Outcome::Read(Some("a".into())));
        let h = {
            let mut h = History::new();
            h.extend(ops);
            h
        };
        assert!(!check::check(&h, &check::Config::default())
            .verdict
            .is_linearizable());
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.below(5);
            assert_eq!(x, b.below(5));
            assert!(x < 5);
        }
    }
}
