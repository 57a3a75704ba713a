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
//! The `/v1` delete and compare-and-set are the next cases of `workload::OpKind` (see there).
//!
//! Exit code: 0 when every run was linearizable with no divergence and enough operations
//! succeeded; 1 when a run found a violation (or a crash, divergence, or a cluster that did not
//! recover); 2 when a run was inconclusive (checker budget, too few successful operations) or
//! could not be set up; 130 on interrupt.
//!
//! The modules, one concern each: `args` (flags, validated into an `args::Setup`),
//! `workload` (the clients), `nemesis` (fault kinds, the schedule, the membership fault),
//! `netns` (chaos's namespaces, over `coordinate_testkit::netns`), `cluster` (the nodes as
//! chaos drives them, over `coordinate_testkit::process`), `final_state` (the reads after
//! healing), `stale_read` (the self-test), `run` (one run, step by step, and all of them),
//! `report` (the output and each run's `report.txt`), `verdict`, `rng`, `clock` and
//! `interrupt`.

/// Prints a line, and appends it to the current run's `report.txt`.
macro_rules! say {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        $crate::report::report_line(&line);
    }};
}

mod args;
mod clock;
mod cluster;
mod final_state;
mod interrupt;
mod nemesis;
mod netns;
mod report;
mod rng;
mod run;
mod stale_read;
mod verdict;
mod workload;

use std::process::ExitCode;

use clap::Parser;

/// The `chaos` binary: parses the flags and runs; a setup error exits 2.
pub fn main() -> ExitCode {
    let args = args::Args::parse();
    match run::run_all(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::from(2)
        }
    }
}
