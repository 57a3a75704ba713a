//! What chaos prints: every line goes to stdout and, through [`say!`], to the current run's
//! `report.txt`; and the formats of the lines a reader (or `tests/chaos.rs`) looks for: a
//! run's header, the linearizability line, the summary of all runs.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use coordinate_check::{self as check, Summary};

use crate::args::{Args, Setup};
use crate::verdict::Verdict;

/// Where [`say!`] copies its lines: the current run's report file.
static REPORT: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Appends `line` to the current run's report file, if there is one.
pub(crate) fn report_line(line: &str) {
    let mut guard = REPORT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = guard.as_mut() {
        let _ = writeln!(f, "{line}");
    }
}

/// Starts (`Some`) or ends (`None`) copying output to a run's report file.
pub(crate) fn report_to(path: Option<&Path>) {
    let mut guard = REPORT.lock().unwrap_or_else(|e| e.into_inner());
    *guard = path.and_then(|p| std::fs::File::create(p).ok());
}

/// The first line of run `run`.
pub(crate) fn run_header(args: &Args, setup: &Setup, run: usize, seed: u64) -> String {
    format!(
        "=== run {run}/{}: {} nodes ({}), {} s, nemesis {}, {} clients on {} keys, seed {seed}",
        args.runs,
        args.nodes,
        if setup.use_netns {
            "network namespaces"
        } else {
            "loopback"
        },
        args.duration,
        if setup.kinds.is_empty() {
            "none".to_string()
        } else {
            setup
                .kinds
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(",")
        },
        args.clients,
        args.keys
    )
}

/// The checker's verdict on a run's history, in one line.
pub(crate) fn linearizability_line(report: &check::Report) -> String {
    format!(
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
    )
}

/// What every run together did: operations, faults by kind, verdicts.
#[derive(Default)]
pub(crate) struct Totals {
    pub ops: Summary,
    pub faults: BTreeMap<&'static str, usize>,
    pub verdicts: Vec<Verdict>,
}

impl Totals {
    /// The last line of the output.
    pub fn summary_line(&self, elapsed: Duration) -> String {
        let faults: usize = self.faults.values().sum();
        let count = |v: Verdict| self.verdicts.iter().filter(|x| **x == v).count();
        format!(
            "=== summary: {} run(s) in {:.1} min; {}; {faults} faults{}; verdicts: {} pass, \
             {} inconclusive, {} fail",
            self.verdicts.len(),
            elapsed.as_secs_f64() / 60.0,
            self.ops,
            if self.faults.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    self.faults
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            count(Verdict::Pass),
            count(Verdict::Inconclusive),
            count(Verdict::Fail),
        )
    }
}
