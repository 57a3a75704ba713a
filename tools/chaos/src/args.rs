//! The command line: [`Args`] as clap parses it, and [`Setup`], what a valid command line
//! means (the fault kinds that will run, the `coordinate` binary, loopback or namespaces).
//! Every usage error is found here, before anything starts.

use std::path::PathBuf;

use clap::Parser;

use crate::nemesis::FaultKind;
use crate::netns;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    about = "Runs a workload against a coordinate cluster under injected faults and checks \
             the history for linearizability"
)]
pub(crate) struct Args {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Seconds of workload (and faults) per run.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Independent runs, each on a fresh cluster.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Faults to inject, comma-separated: kill, pause, partition, membership; or `none`.
    #[arg(long, default_value = "kill,pause,partition,membership")]
    pub nemesis: String,
    /// Concurrent clients (each one request at a time).
    #[arg(long, default_value_t = 6)]
    pub clients: usize,
    /// Keys the clients share (each an independent register).
    #[arg(long, default_value_t = 4)]
    pub keys: usize,
    /// Seed of the schedule and the workload [default: from the clock]; printed per run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where nodes run: `netns` (own network namespaces, needed for partitions), `loopback`,
    /// or `auto` (netns when possible).
    #[arg(long, default_value = "auto")]
    pub net: String,
    /// The `coordinate` binary [default: next to this one].
    #[arg(long)]
    pub coordinate: Option<PathBuf>,
    /// `--snapshot-count` of every node: small, so snapshots, compaction and catch-up by
    /// snapshot happen during the run.
    #[arg(long, default_value_t = 200)]
    pub snapshot_count: u64,
    /// `--request-timeout-ms` of every node.
    #[arg(long, default_value_t = 1500)]
    pub request_timeout_ms: u64,
    /// How long a client waits for an answer before recording the outcome as unknown, ms.
    #[arg(long, default_value_t = 3000)]
    pub client_timeout_ms: u64,
    /// Mean quiet time between two faults, seconds.
    #[arg(long, default_value_t = 1.5)]
    pub fault_interval: f64,
    /// Mean duration of one fault, seconds.
    #[arg(long, default_value_t = 2.5)]
    pub fault_duration: f64,
    /// Longest pause of a client between two requests, ms (random up to this).
    #[arg(long, default_value_t = 5)]
    pub think_ms: u64,
    /// Fewest successful operations per run for a verdict to count.
    #[arg(long, default_value_t = 100)]
    pub min_ok: usize,
    /// How long the cluster may take to converge after healing, seconds.
    #[arg(long, default_value_t = 60)]
    pub recovery_timeout: u64,
    /// Time limit of the linearizability search per run, seconds.
    #[arg(long, default_value_t = 300)]
    pub check_time_limit: u64,
    /// Directory for run data (node logs, data dirs, history) [default: the temp dir].
    /// Each run's directory is removed when the run passes, unless --keep.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep every run's directory.
    #[arg(long)]
    pub keep: bool,
    /// Peer mTLS and client TLS requiring client certificates on every node, from a CA made
    /// for the run (the workload and the checks speak TLS too).
    #[arg(long)]
    pub tls: bool,
    /// `--log-level` of every node.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Proves the pipeline can fail: `stale-read` rewrites one recorded read to return a value
    /// that was overwritten, by an acknowledged write, before the read began. The run must
    /// then end NOT LINEARIZABLE (exit 1).
    #[arg(long)]
    pub self_test: Option<String>,
}

/// What the flags ask for, validated.
pub(crate) struct Setup {
    /// The faults the nemesis picks from (partitions left out without namespaces).
    pub kinds: Vec<FaultKind>,
    /// The `coordinate` binary.
    pub bin: PathBuf,
    /// Nodes in their own network namespaces (else on loopback).
    pub use_netns: bool,
}

impl Setup {
    /// Checks the flags in the order a user reads them; `Err` is a usage error (exit 2).
    pub fn resolve(args: &Args) -> Result<Setup, String> {
        let kinds = FaultKind::parse_list(&args.nemesis)?;
        if let Some(t) = &args.self_test {
            if t != "stale-read" {
                return Err(format!("--self-test {t:?}: the only one is stale-read"));
            }
        }
        if args.nodes == 0 || args.clients == 0 || args.keys == 0 || args.runs == 0 {
            return Err("--nodes, --clients, --keys and --runs must be at least 1".into());
        }
        let bin = coordinate_binary(args)?;
        let use_netns = use_netns(&args.net)?;
        let kinds = runnable_kinds(kinds, &args.net, use_netns)?;
        Ok(Setup {
            kinds,
            bin,
            use_netns,
        })
    }
}

/// `--coordinate`, or `coordinate` next to this binary; it must exist.
fn coordinate_binary(args: &Args) -> Result<PathBuf, String> {
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
    Ok(bin)
}

/// `--net`: whether nodes run in namespaces (`auto` tries, and says so when it cannot).
fn use_netns(net: &str) -> Result<bool, String> {
    match net {
        "netns" => Ok(true),
        "loopback" => Ok(false),
        "auto" => {
            let ok = netns::available();
            if !ok {
                say!(
                    "note: network namespaces are not available here (needs root and `ip` from \
                     iproute2): nodes run on loopback, without partitions"
                );
            }
            Ok(ok)
        }
        other => Err(format!("--net {other:?}: want auto, netns or loopback")),
    }
}

/// The kinds that can run: partitions need namespaces (an error if asked for with
/// `--net loopback`, left out if `auto` found none).
fn runnable_kinds(
    kinds: Vec<FaultKind>,
    net: &str,
    use_netns: bool,
) -> Result<Vec<FaultKind>, String> {
    if use_netns {
        Ok(kinds)
    } else if net == "loopback" && kinds.contains(&FaultKind::Partition) {
        Err("--nemesis partition needs --net netns (network namespaces)".into())
    } else {
        Ok(kinds
            .into_iter()
            .filter(|k| *k != FaultKind::Partition)
            .collect())
    }
}
