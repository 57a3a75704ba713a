//! After healing: every key read from every node (the reads join the history, so an
//! acknowledged write that is not readable at the end, and not superseded, is a violation
//! the checker sees), and the nodes compared: the same value for every key, the same number
//! of keys. Lost acknowledged writes are also counted here, for the report.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use coordinate_check::{Call, History, Operation, Outcome};
use coordinate_client::Connection;

use crate::args::Args;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::verdict::Findings;
use crate::workload::read_outcome;

/// The final answers: key → node → outcome.
type Finals = BTreeMap<String, BTreeMap<u64, Outcome>>;

/// Acknowledged writes of the checked keys, and those lost.
#[derive(Default)]
struct Writes {
    acked: usize,
    lost: usize,
}

/// Reads every key from every node (recorded in the history), and checks that the nodes
/// agree on every value and on their key count, and that every acknowledged write is
/// readable or superseded.
pub(crate) fn final_reads(
    cluster: &mut Cluster,
    keys: &[String],
    history: &mut History,
    clock: Clock,
    args: &Args,
    findings: &mut Findings,
) {
    let finals = read_everything(cluster, keys, history, clock, args, findings);
    let mut diverged = false;
    let mut writes = Writes::default();
    for (key, answers) in &finals {
        diverged |= !check_key(key, answers, history, &mut writes, findings);
    }
    let lost = writes.lost;
    if lost > 0 {
        findings.fail(format!(
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
        findings.fail(format!("nodes hold different numbers of keys: {counts:?}"));
    }
    say!(
        "  final state: {} keys read from all {} nodes: {}; {} acknowledged writes, \
         {lost} lost",
        keys.len(),
        cluster.nodes.len(),
        if diverged { "DIVERGED" } else { "identical" },
        writes.acked,
    );
}

/// Every key from every node, each read recorded in the history (final readers are numbered
/// after the workload's clients).
fn read_everything(
    cluster: &mut Cluster,
    keys: &[String],
    history: &mut History,
    clock: Clock,
    args: &Args,
    findings: &mut Findings,
) -> Finals {
    let timeout = Duration::from_millis(args.client_timeout_ms);
    let mut finals = Finals::new();
    let mut unexpected = Vec::new();
    for node in cluster.ids() {
        let addr = cluster.nodes[node as usize - 1].client_addr.clone();
        let mut conn = Connection::new(addr, timeout).with_tls(cluster.tls.clone());
        for key in keys {
            let invoke = clock.now();
            let r = cluster.rt.block_on(conn.get(key));
            let complete = clock.now();
            let (outcome, detail) = read_outcome(r, key, node as usize - 1, &mut unexpected);
            finals
                .entry(key.clone())
                .or_default()
                .insert(node, outcome.clone());
            history.push(Operation {
                id: 0,
                client: args.clients + node as usize - 1,
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
        findings.fail(format!("final read: {u}"));
    }
    finals
}

/// One key's final answers: all nodes must agree (`false` if they do not), and every
/// acknowledged write of it must be the final value or superseded (counted in `writes`).
fn check_key(
    key: &str,
    answers: &BTreeMap<u64, Outcome>,
    history: &History,
    writes: &mut Writes,
    findings: &mut Findings,
) -> bool {
    let distinct: BTreeSet<String> = answers.values().map(|o| format!("{o:?}")).collect();
    if distinct.len() != 1 {
        findings.fail(format!(
            "nodes disagree on key {key:?} after healing: {}",
            answers
                .iter()
                .map(|(n, o)| format!("node {n}: {o:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return false;
    }
    let Some(Outcome::Read(final_value)) = answers.values().next().cloned() else {
        findings.fail(format!(
            "final read of key {key:?} got no answer: {answers:?}"
        ));
        return true;
    };
    // An acknowledged write is lost if the final value was written by an
    // acknowledged write that completed before it was even invoked (or is absent).
    let ops: Vec<&Operation> = history.ops().iter().filter(|o| o.key == *key).collect();
    let final_writer = ops
        .iter()
        .find(|o| matches!((&o.call, &final_value), (Call::Put(v), Some(f)) if v == f));
    for w in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        writes.acked += 1;
        let Call::Put(v) = &w.call else { continue };
        if final_value.as_deref() == Some(v.as_str()) {
            continue;
        }
        let lost_for_sure = match final_writer {
            None => final_value.is_none(),
            Some(f) => f.outcome == Outcome::Ok && f.complete < w.invoke,
        };
        if lost_for_sure {
            writes.lost += 1;
        }
    }
    true
}
