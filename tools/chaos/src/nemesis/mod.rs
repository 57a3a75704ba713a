//! The nemesis: one fault at a time on a random schedule, each healed before the next.
//!
//! A quiet time (uniform around `--fault-interval`), then a fault picked from the kinds asked
//! for — `kill` (kill -9 and a restart on the same data dir; one time in ten every node at
//! once), `pause` (SIGSTOP/SIGCONT), `partition` (links cut in the namespaces, see
//! [`targets`]), `membership` (see [`membership`]) — held for a random time around
//! `--fault-duration`, then healed and recorded. It stops at the deadline, or as soon as a
//! node crashes (the run has failed, more faults would blur what happened); then nothing stays
//! broken: every node runs, none is paused, no link is cut.

mod fault;
mod membership;
mod targets;

use std::time::{Duration, Instant};

use coordinate_check::Time;

pub(crate) use fault::{Active, FaultKind, FaultRecord};

use crate::args::Args;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::interrupt::interrupted;
use crate::netns::Namespaces;
use crate::rng::Rng;
use crate::verdict::Findings;

/// Below this much time left before the deadline, no new fault starts.
const LAST_FAULT_MARGIN: Duration = Duration::from_secs(1);
/// A fault may outlast the workload's deadline by this much (so the workload still ends on a
/// healed cluster, give or take the heal itself).
const HOLD_PAST_DEADLINE: Duration = Duration::from_millis(200);
/// Step of the nemesis's sleeps, between two looks for nodes that exited.
const SLEEP_STEP: Duration = Duration::from_millis(50);
/// One time in this many, a kill takes every node at once.
const KILL_ALL_CHANCE: f64 = 0.1;

/// What injecting a fault came to.
enum Injected {
    /// In force: heal it after the hold.
    Active(String, Active),
    /// Not in force (recorded already): go on with the next.
    Skipped,
    /// The nemesis stops (no namespaces for a partition, or one could not be cut).
    Stop,
}

/// The nemesis of one run: its schedule's randomness, and what it did and found.
pub(crate) struct Nemesis<'a> {
    args: &'a Args,
    kinds: &'a [FaultKind],
    rng: Rng,
    clock: Clock,
    /// Every fault, as it happened.
    pub faults: Vec<FaultRecord>,
    /// What went wrong while injecting and healing.
    pub findings: Findings,
}

impl<'a> Nemesis<'a> {
    pub fn new(args: &'a Args, kinds: &'a [FaultKind], rng: Rng, clock: Clock) -> Nemesis<'a> {
        Nemesis {
            args,
            kinds,
            rng,
            clock,
            faults: Vec::new(),
            findings: Findings::default(),
        }
    }

    fn now(&self) -> Time {
        self.clock.now()
    }

    fn nodes(&self) -> u64 {
        self.args.nodes as u64
    }

    /// Injects one fault at a time until `deadline`, each healed before the next; then
    /// restores whatever is still broken.
    pub fn run(
        &mut self,
        cluster: &mut Cluster,
        mut net: Option<&mut Namespaces>,
        deadline: Instant,
    ) {
        let args = self.args;
        loop {
            let quiet = self
                .rng
                .secs(0.5 * args.fault_interval, 1.5 * args.fault_interval);
            self.sleep(cluster, quiet, deadline);
            if !self.another_fault(cluster, deadline) {
                break;
            }
            self.readd_late_removals(cluster);
            let kind = self.kinds[self.rng.below(self.kinds.len() as u64) as usize];
            let start = self.now();
            let (what, active) = match self.inject(kind, cluster, net.as_deref_mut(), start) {
                Injected::Active(what, active) => (what, active),
                Injected::Skipped => continue,
                Injected::Stop => break,
            };
            let hold = self
                .rng
                .secs(0.4 * args.fault_duration, 1.6 * args.fault_duration);
            // Faults end by the deadline at the latest, so the workload sees the healed cluster.
            self.sleep(cluster, hold, deadline + HOLD_PAST_DEADLINE);
            self.heal(active, cluster, net.as_deref_mut());
            self.record(kind, what, start);
        }
        self.restore(cluster, net);
    }

    /// Whether there is time, a kind to pick, and no crash yet.
    fn another_fault(&mut self, cluster: &Cluster, deadline: Instant) -> bool {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if self.kinds.is_empty() || remaining < LAST_FAULT_MARGIN || interrupted() {
            return false;
        }
        if !cluster.crashes.is_empty() {
            // The run has failed already; more faults would only blur what happened.
            say!("  the nemesis stops: a node crashed");
            return false;
        }
        true
    }

    /// Puts a fault of `kind` in force.
    fn inject(
        &mut self,
        kind: FaultKind,
        cluster: &mut Cluster,
        net: Option<&mut Namespaces>,
        start: Time,
    ) -> Injected {
        match kind {
            FaultKind::Kill | FaultKind::Pause => self.kill_or_pause(kind, cluster),
            FaultKind::Membership => self.remove_a_member(cluster, start),
            FaultKind::Partition => match net {
                Some(net) => self.partition(cluster, net),
                None => Injected::Stop,
            },
        }
    }

    /// kill -9 or SIGSTOP of the leader or a random node (or two), or now and then of every
    /// node at once (kills only): a whole-cluster crash and restart.
    fn kill_or_pause(&mut self, kind: FaultKind, cluster: &mut Cluster) -> Injected {
        let n = self.nodes();
        let all = kind == FaultKind::Kill && self.rng.chance(KILL_ALL_CHANCE);
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
                .map(|(id, leader)| format!("node {id}{}", if *leader { " (leader)" } else { "" }))
                .collect::<Vec<_>>()
                .join(" and ")
        };
        let ids: Vec<u64> = targets.iter().map(|(id, _)| *id).collect();
        if kind == FaultKind::Kill {
            for &id in &ids {
                cluster.kill(id);
            }
            Injected::Active(
                format!("kill -9 {names}, then restart"),
                Active::Killed(ids),
            )
        } else {
            for &id in &ids {
                cluster.pause(id);
            }
            Injected::Active(
                format!("SIGSTOP {names}, then SIGCONT"),
                Active::Paused(ids),
            )
        }
    }

    /// Removes the leader or a random node; a removal that did not happen is recorded as
    /// such and skipped.
    fn remove_a_member(&mut self, cluster: &mut Cluster, start: Time) -> Injected {
        let (target, leader) = self.pick_targets(cluster, self.nodes())[0];
        let who = format!("node {target}{}", if leader { " (leader)" } else { "" });
        match self.remove_member(cluster, target) {
            Ok(()) => Injected::Active(
                format!("remove {who}, then add it back with an empty data dir"),
                Active::Removed(target),
            ),
            Err(why) => {
                let what = format!("remove {who}: not removed ({why})");
                self.record(FaultKind::Membership, what, start);
                Injected::Skipped
            }
        }
    }

    /// Cuts the links of a random partition; if one cannot be cut, heals and stops.
    fn partition(&mut self, cluster: &Cluster, net: &mut Namespaces) -> Injected {
        let (what, sides) = self.pick_partition(cluster, self.nodes());
        for (a, b) in sides {
            if let Err(e) = net.cut(a, b) {
                self.findings.inconclusive(format!("partition: {e}"));
                let _ = net.heal();
                return Injected::Stop;
            }
        }
        Injected::Active(what, Active::Partitioned)
    }

    /// Ends a fault: restart, resume, reconnect, or add back.
    fn heal(&mut self, active: Active, cluster: &mut Cluster, net: Option<&mut Namespaces>) {
        match active {
            Active::Killed(ids) => {
                for id in ids {
                    if let Err(e) = cluster.spawn(id) {
                        self.findings.fail(format!("restart node {id}: {e}"));
                    }
                }
            }
            Active::Paused(ids) => {
                for id in ids {
                    cluster.resume(id);
                }
            }
            Active::Partitioned => {
                if let Some(net) = net {
                    if let Err(e) = net.heal() {
                        self.findings.fail(format!("heal the partition: {e}"));
                    }
                }
            }
            Active::Removed(id) => {
                if let Err(e) = self.add_member_back(cluster, id) {
                    self.findings.fail(format!("add node {id} back: {e}"));
                }
            }
        }
    }

    /// Prints and keeps the record of a fault that started at `start` and ends now.
    fn record(&mut self, kind: FaultKind, what: String, start: Time) {
        let record = FaultRecord {
            kind,
            what,
            start,
            end: self.now(),
        };
        say!("  fault {record}");
        self.faults.push(record);
    }

    /// Nothing stays broken: restart what is not running (a crash is already recorded),
    /// resume what is paused, heal the network.
    fn restore(&mut self, cluster: &mut Cluster, net: Option<&mut Namespaces>) {
        self.readd_late_removals(cluster);
        for id in cluster.ids() {
            // (A node whose re-adding failed stays down: that failure is recorded, and started
            // without --join on an empty data dir it would found a cluster of its own.)
            if !cluster.node(id).is_running() && !cluster.node(id).removed {
                let _ = cluster.spawn(id);
            }
            if cluster.node(id).paused {
                cluster.resume(id);
            }
        }
        if let Some(net) = net {
            if let Err(e) = net.heal() {
                self.findings.fail(format!("heal the network: {e}"));
            }
        }
    }

    /// Sleeps `d` in small steps, watching for nodes that exit by themselves.
    fn sleep(&mut self, cluster: &mut Cluster, d: Duration, deadline: Instant) {
        let end = (Instant::now() + d).min(deadline);
        while Instant::now() < end && !interrupted() {
            std::thread::sleep(SLEEP_STEP.min(end - Instant::now()));
            cluster.check_exits(self.now());
        }
    }
}
