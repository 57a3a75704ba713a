//! The runs: each on a fresh cluster in its own directory, step by step — namespaces and
//! nodes up, a leader; the workload under the nemesis; heal, converge and read everything
//! back; check the history; stop — and all of them, their summary and the exit code.
//!
//! A run's directory (`coordinate-chaos-<pid>-<run>-<seed>`, under `--dir` or the temp dir)
//! holds its `report.txt`, `history.txt`, `faults.txt`, the nodes' data dirs and logs; it is
//! removed when the run passes, unless `--keep`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use coordinate_check::{self as check, History, Operation, Summary};

use crate::args::{Args, Setup};
use crate::clock::Clock;
use crate::cluster::{Cluster, Layout};
use crate::final_state::final_reads;
use crate::interrupt::{install_signal_handler, interrupted};
use crate::nemesis::{FaultRecord, Nemesis};
use crate::netns::{self, Namespaces};
use crate::report::{linearizability_line, report_to, run_header, Totals};
use crate::rng::Rng;
use crate::stale_read::inject_stale_read;
use crate::verdict::{Findings, Verdict};
use crate::workload::{Unexpected, Workload};

/// How long the cluster may take to elect its first leader.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers outside the contract listed one by one; more are only counted.
const UNEXPECTED_LISTED: usize = 20;
/// Lines of each node's log shown when the cluster does not start.
const START_LOG_TAIL: usize = 20;
/// Lines of each node's log shown when a run does not pass.
const FAILED_LOG_TAIL: usize = 40;
/// Faults up to this long before a non-linearizable window are shown with it.
const FAULT_LOOKBACK_NANOS: u64 = 5_000_000_000;

/// Every run the flags ask for; the exit code of the worst verdict (130 on interrupt).
pub(crate) fn run_all(args: Args) -> Result<ExitCode, String> {
    let setup = Setup::resolve(&args)?;
    if setup.use_netns {
        netns::remove_stale();
    }
    install_signal_handler();
    let base_seed = args.seed.unwrap_or_else(clock_seed);
    let started = Instant::now();
    let mut totals = Totals::default();
    for run in 1..=args.runs {
        if interrupted() {
            break;
        }
        let seed = base_seed.wrapping_add(run as u64 - 1);
        let header = run_header(&args, &setup, run, seed);
        let outcome = Run::execute(&args, &setup, run, seed, &header);
        totals.ops.add(&outcome.summary);
        for f in &outcome.faults {
            *totals.faults.entry(f.kind.name()).or_default() += 1;
        }
        say!("verdict of run {run}: {:?}", outcome.verdict);
        totals.verdicts.push(outcome.verdict);
    }
    say!("{}", totals.summary_line(started.elapsed()));
    if interrupted() {
        say!("interrupted");
        return Ok(ExitCode::from(130));
    }
    Ok(match totals.verdicts.iter().max() {
        Some(Verdict::Pass) => ExitCode::SUCCESS,
        Some(Verdict::Inconclusive) | None => ExitCode::from(2),
        Some(Verdict::Fail) => ExitCode::from(1),
    })
}

/// The default seed: from the clock.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// What one run adds to the totals.
struct RunOutcome {
    verdict: Verdict,
    summary: Summary,
    faults: Vec<FaultRecord>,
}

struct Run<'a> {
    args: &'a Args,
    setup: &'a Setup,
    clock: Clock,
    faults: Vec<FaultRecord>,
    findings: Findings,
}

impl Run<'_> {
    /// One run, its report and its directory; never fails (a setup error is inconclusive).
    fn execute(args: &Args, setup: &Setup, run: usize, seed: u64, header: &str) -> RunOutcome {
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
            setup,
            clock: Clock::start(),
            faults: Vec::new(),
            findings: Findings::default(),
        };
        let home = netns::current().ok();
        let tag = format!("{}{pid}-{run}", netns::PREFIX);
        let (summary, tails) = match r.execute_in(Rng::new(seed), &dir, &tag) {
            Ok(x) => x,
            Err(e) => {
                r.findings.inconclusive(format!("setup: {e}"));
                (Summary::default(), String::new())
            }
        };
        // Back to where we started (the namespaces are gone by now).
        if let (true, Some(home)) = (setup.use_netns, &home) {
            if let Err(e) = netns::enter(home) {
                eprintln!("chaos: cannot return to the original network namespace: {e}");
            }
        }
        let verdict = r.finish(&tails, dir);
        RunOutcome {
            verdict,
            summary,
            faults: r.faults,
        }
    }

    /// Prints the findings (and the log tails unless the run passed), then removes the run's
    /// directory if it passed, or says where it is kept.
    fn finish(&self, tails: &str, dir: PathBuf) -> Verdict {
        let verdict = self.findings.verdict();
        for f in &self.findings.failures {
            say!("FAIL: {f}");
        }
        for f in &self.findings.inconclusive {
            say!("INCONCLUSIVE: {f}");
        }
        if verdict != Verdict::Pass && !tails.is_empty() {
            say!("{tails}");
        }
        if verdict == Verdict::Pass && !self.args.keep {
            report_to(None);
            let _ = std::fs::remove_dir_all(&dir);
        } else if dir.exists() {
            say!(
                "run data kept in {} (report.txt: this run's output)",
                dir.display()
            );
            report_to(None);
        }
        verdict
    }

    /// The run proper; returns the operation counts and, for a failed run, node log tails.
    fn execute_in(
        &mut self,
        mut rng: Rng,
        dir: &Path,
        tag: &str,
    ) -> Result<(Summary, String), String> {
        let n = self.args.nodes;
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut net = match self.setup.use_netns {
            true => {
                let net = Namespaces::create(tag, n).map_err(|e| e.to_string())?;
                net.enter_hub().map_err(|e| e.to_string())?;
                Some(net)
            }
            false => None,
        };
        let scheme = if self.args.tls { "https" } else { "http" };
        let layout = match &net {
            Some(_) => Layout::namespaces(n, scheme),
            None => Layout::loopback(n, scheme)?,
        };
        let mut cluster = self.start_cluster(&layout, net.as_ref(), dir)?;
        let keys: Vec<String> = (0..self.args.keys).map(|k| format!("chaos/k{k}")).collect();
        let workload_seed = rng.next();
        let mut history = self.workload_under_faults(
            rng,
            workload_seed,
            &mut cluster,
            net.as_mut(),
            &layout,
            &keys,
        )?;
        let summary = history.summary();
        say!("  {summary}");
        say!("  faults: {} injected", self.faults.len());
        self.recover(&mut cluster, &keys, &mut history, dir);
        self.check(&history, &summary);
        let tails = self.stop(&mut cluster);
        drop(cluster);
        drop(net);
        Ok((summary, tails))
    }

    /// The nodes started, and a leader elected among them.
    fn start_cluster(
        &mut self,
        layout: &Layout,
        net: Option<&Namespaces>,
        dir: &Path,
    ) -> Result<Cluster, String> {
        let mut cluster = Cluster::new(layout, net, &self.setup.bin, dir, self.args)?;
        for id in cluster.ids() {
            cluster.spawn(id).map_err(|e| e.to_string())?;
        }
        self.clock = Clock::start();
        cluster
            .converge(START_TIMEOUT, self.clock.epoch())
            .map_err(|e| {
                format!(
                    "no leader at start: {e}\n{}",
                    cluster.log_tails(START_LOG_TAIL)
                )
            })?;
        Ok(cluster)
    }

    /// The workload (on its own thread) and the nemesis (on this one) until the deadline;
    /// the history sorted by invocation, with the self-test's stale read if asked for.
    fn workload_under_faults(
        &mut self,
        rng: Rng,
        workload_seed: u64,
        cluster: &mut Cluster,
        net: Option<&mut Namespaces>,
        layout: &Layout,
        keys: &[String],
    ) -> Result<History, String> {
        let args = self.args;
        self.clock = Clock::start();
        let deadline = self.clock.epoch() + Duration::from_secs(args.duration);
        let workload = Workload {
            addrs: layout.client_addrs.clone(),
            tls: cluster.tls.clone(),
            keys: keys.to_vec(),
            clients: args.clients,
            timeout: Duration::from_millis(args.client_timeout_ms),
            think: Duration::from_millis(args.think_ms),
            epoch: self.clock.epoch(),
            deadline,
            seed: workload_seed,
        };
        let worker = std::thread::Builder::new()
            .name("workload".into())
            .spawn(move || workload.run())
            .map_err(|e| format!("spawn the workload thread: {e}"))?;
        let mut nemesis = Nemesis::new(args, &self.setup.kinds, rng, self.clock);
        nemesis.run(cluster, net, deadline);
        self.faults = nemesis.faults;
        self.findings.append(nemesis.findings);
        let (ops, unexpected) = worker
            .join()
            .unwrap_or_else(|_| (Vec::new(), vec!["the workload thread panicked".into()]));
        Ok(self.history(ops, &unexpected))
    }

    /// The operations as a history (the self-test applied); answers outside the contract
    /// are failures.
    fn history(&mut self, mut ops: Vec<Operation>, unexpected: &Unexpected) -> History {
        ops.sort_by_key(|o| (o.invoke, o.client));
        if let Some(test) = &self.args.self_test {
            match inject_stale_read(&mut ops) {
                Some(what) => say!("  self-test {test}: {what}"),
                None => self
                    .findings
                    .inconclusive("self-test: no read to make stale in this history"),
            }
        }
        let mut history = History::new();
        history.extend(ops);
        for u in unexpected.iter().take(UNEXPECTED_LISTED) {
            self.findings
                .fail(format!("answer outside the contract: {u}"));
        }
        if unexpected.len() > UNEXPECTED_LISTED {
            self.findings.fail(format!(
                "... {} answers outside the contract in all",
                unexpected.len()
            ));
        }
        history
    }

    /// After the workload: crashes recorded, the cluster converged, every key read from
    /// every node; the history and the faults written to the run's directory.
    fn recover(
        &mut self,
        cluster: &mut Cluster,
        keys: &[String],
        history: &mut History,
        dir: &Path,
    ) {
        // Crashes first: they explain most of what may go wrong after them.
        cluster.check_exits(self.clock.now());
        self.findings.failures.append(&mut cluster.crashes);
        let healed_at = Instant::now();
        let timeout = Duration::from_secs(self.args.recovery_timeout);
        match cluster.converge(timeout, self.clock.epoch()) {
            Ok(index) => {
                say!(
                    "  recovery: all {} nodes applied index {index} {:.1} s after the workload ended",
                    self.args.nodes,
                    healed_at.elapsed().as_secs_f64()
                );
                final_reads(
                    cluster,
                    keys,
                    history,
                    self.clock,
                    self.args,
                    &mut self.findings,
                );
            }
            Err(e) => self.findings.fail(e),
        }
        std::fs::write(dir.join("history.txt"), history.to_text()).ok();
        let faults: String = self.faults.iter().map(|f| format!("{f}\n")).collect();
        std::fs::write(dir.join("faults.txt"), faults).ok();
    }

    /// Linearizability of the history, and enough successful operations for it to count.
    fn check(&mut self, history: &History, summary: &Summary) {
        let cfg = check::Config {
            time_limit: Duration::from_secs(self.args.check_time_limit),
            ..check::Config::default()
        };
        let report = check::check(history, &cfg);
        say!("{}", linearizability_line(&report));
        match &report.verdict {
            check::Verdict::Linearizable => {}
            check::Verdict::NotLinearizable(v) => {
                say!("{v}");
                self.show_faults_around(v);
                self.findings
                    .fail(format!("history of key {:?} is not linearizable", v.key));
            }
            check::Verdict::Unknown(why) => self.findings.inconclusive(why.clone()),
        }
        if summary.ok() < self.args.min_ok {
            self.findings.inconclusive(format!(
                "only {} operations succeeded (want at least {})",
                summary.ok(),
                self.args.min_ok
            ));
        }
    }

    /// The faults in force during a violation's window or shortly before it.
    fn show_faults_around(&self, v: &check::Violation) {
        let from = v.window.iter().map(|o| o.invoke).min().unwrap_or(0);
        let to = v.window.iter().map(|o| o.complete).max().unwrap_or(0);
        for f in &self.faults {
            if f.start <= to && f.end >= from.saturating_sub(FAULT_LOOKBACK_NANOS) {
                say!("  fault around the window: {f}");
            }
        }
    }

    /// Crashes recorded, every node stopped; the log tails if the run did not pass.
    fn stop(&mut self, cluster: &mut Cluster) -> String {
        cluster.check_exits(self.clock.now());
        self.findings.failures.append(&mut cluster.crashes);
        for u in cluster.stop_all() {
            say!("  note: {u}");
        }
        for note in &cluster.notes {
            say!("  note: {note}");
        }
        if self.findings.is_empty() {
            String::new()
        } else {
            cluster.log_tails(FAILED_LOG_TAIL)
        }
    }
}
