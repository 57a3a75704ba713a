//! The node's background duties, on one timer: the lease keeper and the auto-compactor.
//!
//! - **Lease keeper** (the leader only, every [`TICK`]): on becoming leader in a new term it
//!   extends every lease ([`Lessor::promote`]); then it proposes the expiry of every lease past
//!   its deadline (at most [`MAX_EXPIRIES_PER_TICK`] at a time, etcd rate-limits the same way),
//!   each naming the renewal it saw, so a keep-alive applied meanwhile voids it.
//! - **Auto-compactor** (the leader only): `--auto-compaction-mode revision` keeps the last
//!   `retention` revisions, compacting once `retention / 10` more have accumulated (so the
//!   history stays within 1.1 × retention); `periodic` keeps `retention` of time, sampling the
//!   revision every tenth of it (etcd's scheme) and compacting to the sample that is
//!   `retention` old. Compaction is a command, so every replica forgets the same revisions.
//!   Whatever the policy, once the history (the versions beyond the live keys) takes more than
//!   [`HISTORY_SHARE`] of the quota, it compacts half of the history at a time: a policy
//!   counted in revisions or time says nothing of their size, and a store full of history
//!   would refuse every write.
//!
//! Leadership is read from the node's status each tick: a node that is not leader does
//! nothing, and one that becomes leader waits for its first tick. Failures (no leader, a
//! timeout) are logged and retried on a later tick.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::kv::LeaseId;
use crate::lessor::Lessor;
use crate::metrics::METRICS;
use crate::quota::Quota;
use crate::service::Services;
use std::sync::Arc;

/// How often the duties run.
pub const TICK: Duration = Duration::from_millis(100);
/// Lease expiries proposed per tick at most.
pub const MAX_EXPIRIES_PER_TICK: usize = 100;
/// The share of the quota the history may take before it is compacted by half, whatever the
/// policy.
pub const HISTORY_SHARE: f64 = 0.25;
/// Shortest sampling interval of the periodic compactor.
const MIN_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// What the auto-compactor keeps (`--auto-compaction-mode` and `--auto-compaction-retention`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Never compact by itself (`--auto-compaction-retention 0`).
    Off,
    /// Keep the last this many revisions.
    Revisions(u64),
    /// Keep this much time of history.
    Periodic(Duration),
}

/// Runs the duties until the process ends.
pub async fn run(
    services: Services,
    lessor: Arc<Lessor>,
    quota: Arc<Quota>,
    compaction: AutoCompaction,
) {
    let mut keeper = LeaseKeeper::default();
    let mut compactor = Compactor::new(compaction);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let status = match services.status.status().await {
            Ok(status) => status,
            Err(e) => {
                tracing::debug!(error = %e, "maintenance: no status");
                continue;
            }
        };
        let leader = status.role == "leader";
        let now = Instant::now();
        if !leader {
            keeper.follow();
            compactor.follow();
            continue;
        }
        keeper.tick(&services, &lessor, status.term, now).await;
        let revision = status.state.revision;
        let compacted = status.state.compact_revision;
        let history = status
            .state
            .total_bytes
            .saturating_sub(status.state.data_bytes);
        let pressed = history as f64 > quota.limit() as f64 * HISTORY_SHARE;
        let target = compactor.target(revision, compacted, now).max(
            pressed
                .then(|| pressure_target(revision, compacted))
                .flatten(),
        );
        if let Some(target) = target {
            match services.kv.compact(target).await {
                Ok(rev) => tracing::info!(revision = rev, "auto-compacted the history"),
                Err(e) => tracing::warn!(error = %e, target, "auto-compaction failed"),
            }
        }
    }
}

/// The lease keeper's memory: the term it last extended every lease in. Its decisions are
/// [`LeaseKeeper::due`] (pure, also driven by the simulator); [`LeaseKeeper::tick`] proposes
/// them.
#[derive(Debug, Default)]
pub struct LeaseKeeper {
    promoted_term: Option<u64>,
}

impl LeaseKeeper {
    /// What the leader's keeper does at `now` in `term`: in a new term, extend every lease
    /// (and nothing else this tick); then the leases to expire, as `(id, renewed_at)`.
    pub fn due(&mut self, lessor: &Lessor, term: u64, now: Instant) -> Vec<(LeaseId, u64)> {
        if self.promoted_term != Some(term) {
            lessor.promote(now);
            self.promoted_term = Some(term);
            tracing::info!(term, "leader: every lease extended by its TTL");
            return Vec::new();
        }
        lessor.take_expired(now, MAX_EXPIRIES_PER_TICK)
    }

    /// This node stopped leading: the next term it leads starts with an extension.
    pub fn follow(&mut self) {
        self.promoted_term = None;
    }

    async fn tick(&mut self, services: &Services, lessor: &Lessor, term: u64, now: Instant) {
        let expired = self.due(lessor, term, now);
        let proposals = expired.into_iter().map(|(id, renewed_at)| async move {
            match services.lease.expire(id, renewed_at).await {
                Ok(true) => {
                    METRICS.lease_expiries.inc();
                    tracing::info!(lease = id, "lease expired");
                }
                Ok(false) => tracing::debug!(lease = id, "lease renewed before its expiry"),
                Err(e) => tracing::debug!(lease = id, error = %e, "lease expiry not applied"),
            }
        });
        futures_util::future::join_all(proposals).await;
    }
}

/// The auto-compactor's policy and memory.
struct Compactor {
    policy: AutoCompaction,
    /// Periodic mode: `(when, revision)` samples, oldest first.
    samples: VecDeque<(Instant, u64)>,
}

impl Compactor {
    fn new(policy: AutoCompaction) -> Compactor {
        Compactor {
            policy,
            samples: VecDeque::new(),
        }
    }

    /// Not leader: samples taken as leader say nothing about the next term.
    fn follow(&mut self) {
        self.samples.clear();
    }

    /// The revision to compact to now, if any.
    fn target(&mut self, revision: u64, compacted: u64, now: Instant) -> Option<u64> {
        match self.policy {
            AutoCompaction::Off => None,
            AutoCompaction::Revisions(retention) => revision_target(revision, compacted, retention),
            AutoCompaction::Periodic(retention) => {
                let interval = (retention / 10).max(MIN_SAMPLE_INTERVAL);
                let due = self
                    .samples
                    .back()
                    .is_none_or(|(at, _)| now.duration_since(*at) >= interval);
                if due {
                    self.samples.push_back((now, revision));
                }
                // The newest sample at least `retention` old is where to compact to.
                let mut target = None;
                while let Some(&(at, rev)) = self.samples.front() {
                    if now.duration_since(at) < retention {
                        break;
                    }
                    target = Some(rev);
                    self.samples.pop_front();
                }
                target.filter(|&t| t > compacted)
            }
        }
    }
}

/// Under quota pressure: compact half of the history held (none if there is none).
fn pressure_target(revision: u64, compacted: u64) -> Option<u64> {
    let target = compacted + (revision - compacted).div_ceil(2);
    (target > compacted && target <= revision).then_some(target)
}

/// Revision mode: compact to `revision - retention` once that is `retention / 10` (at least 1)
/// past the compaction point.
fn revision_target(revision: u64, compacted: u64, retention: u64) -> Option<u64> {
    let target = revision.checked_sub(retention)?;
    let slack = (retention / 10).max(1);
    (target >= compacted.saturating_add(slack)).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_mode_keeps_the_retention_within_a_tenth() {
        assert_eq!(revision_target(50, 0, 100), None);
        assert_eq!(revision_target(109, 0, 100), None);
        assert_eq!(revision_target(110, 0, 100), Some(10));
        assert_eq!(revision_target(115, 10, 100), None);
        assert_eq!(revision_target(120, 10, 100), Some(20));
        assert_eq!(revision_target(5, 0, 1), Some(4));
    }

    #[test]
    fn periodic_mode_compacts_to_the_revision_of_retention_ago() {
        let mut c = Compactor::new(AutoCompaction::Periodic(Duration::from_secs(100)));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // A sample every 10 s; nothing is 100 s old before t0 + 100.
        for s in (0..100).step_by(10) {
            assert_eq!(c.target(s * 2, 0, at(s)), None);
        }
        // The sample of t0 is revision 0: nothing to compact.
        assert_eq!(c.target(200, 0, at(100)), None);
        assert_eq!(c.target(220, 0, at(110)), Some(20));
        assert_eq!(c.target(240, 20, at(120)), Some(40));
        c.follow();
        assert_eq!(c.target(300, 40, at(130)), None);
    }

    #[test]
    fn quota_pressure_compacts_half_the_history() {
        assert_eq!(pressure_target(100, 0), Some(50));
        assert_eq!(pressure_target(101, 50), Some(76));
        assert_eq!(pressure_target(51, 50), Some(51));
        assert_eq!(pressure_target(50, 50), None);
    }

    #[test]
    fn off_never_compacts() {
        let mut c = Compactor::new(AutoCompaction::Off);
        assert_eq!(c.target(1_000_000, 0, Instant::now()), None);
    }
}
