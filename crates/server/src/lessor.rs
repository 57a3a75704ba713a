//! [`Lessor`]: when each lease expires, on this node's clock — the part of leases that is not
//! replicated state.
//!
//! Every node keeps a deadline per lease: applying a grant or a keep-alive sets it to now +
//! TTL. Only the leader acts on deadlines: its lease keeper (`crate::maintenance`) proposes
//! `LeaseExpire` for each lease past its deadline, naming the `renewed_at` index its decision
//! rests on, and the state machine applies it only if no grant or keep-alive was applied since
//! (see `crate::kv::lease`). A node that becomes leader first extends every deadline to now +
//! TTL ([`Lessor::promote`], etcd's rule): its deadlines were set when it applied the last
//! keep-alives, possibly long before, and clients could not renew while there was no leader.
//!
//! The two bounds this gives, both measured from the last keep-alive `k` that was applied:
//! - **never early**: the deadline is always at least `k + TTL` — set then, or set at a
//!   promotion, which comes after every keep-alive the old leader applied (a client that
//!   measures from when it sent the keep-alive counts from earlier still);
//! - **never much late**: a holder that died after `k` keeps its keys until `k + TTL` plus the
//!   keeper's tick, or, if the leader died before that, until the next leader's promotion +
//!   TTL: at most `k + TTL` + TTL + the election. etcd also adds an election timeout at
//!   promotion; it protects nothing the first bound needs, and would break this one.
//!
//! Deadlines are `Instant`s: a wall-clock jump moves no deadline. Restarting a node sets every
//! deadline to now + TTL (safe: later, never earlier).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::kv::LeaseId;

/// The shortest TTL granted, in seconds: a shorter request gets this (etcd's minimum, 1.5
/// election timeouts, rounded up, with coordinate's 1 s election timeout).
pub const MIN_TTL_SECONDS: i64 = 2;
/// The longest TTL granted, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_TTL_SECONDS: i64 = 9_000_000_000;
/// How long a lease whose expiry was proposed is left alone before proposing again (the
/// proposal may have been lost in a leader change).
pub const EXPIRY_RETRY: Duration = Duration::from_secs(2);

/// One lease's deadline.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    at: Instant,
    ttl: Duration,
    /// The log index of the grant or keep-alive that set it.
    renewed_at: u64,
    /// When its expiry was last proposed, if it was.
    expiring_since: Option<Instant>,
}

/// Every lease's deadline on this node, in id order (so which leases a tick expires first
/// does not depend on a hash seed: the simulator replays it exactly).
#[derive(Debug, Default)]
pub struct Lessor {
    deadlines: Mutex<BTreeMap<LeaseId, Deadline>>,
}

/// A TTL in seconds as a duration (negative or absurd values clamp).
fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.clamp(0, MAX_TTL_SECONDS) as u64)
}

impl Lessor {
    pub fn new() -> Lessor {
        Lessor::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<LeaseId, Deadline>> {
        // Nothing panics while holding the lock; a poisoned map is still coherent.
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A grant or keep-alive of `id` was applied at log index `renewed_at`, at `now`.
    pub fn renewed(&self, id: LeaseId, ttl: i64, renewed_at: u64, now: Instant) {
        let ttl = ttl_duration(ttl);
        self.lock().insert(
            id,
            Deadline {
                at: now + ttl,
                ttl,
                renewed_at,
                expiring_since: None,
            },
        );
    }

    /// The lease is gone (revoked or expired).
    pub fn removed(&self, id: LeaseId) {
        self.lock().remove(&id);
    }

    /// The state was replaced (startup, or a snapshot from the leader): exactly these leases,
    /// as `(id, ttl, renewed_at)`, each with a full TTL from `now`.
    pub fn reset(&self, leases: impl Iterator<Item = (LeaseId, i64, u64)>, now: Instant) {
        let mut map = self.lock();
        map.clear();
        for (id, ttl, renewed_at) in leases {
            let ttl = ttl_duration(ttl);
            let d = Deadline {
                at: now + ttl,
                ttl,
                renewed_at,
                expiring_since: None,
            };
            map.insert(id, d);
        }
    }

    /// This node became leader at `now`: every lease gets its full TTL from now.
    pub fn promote(&self, now: Instant) {
        for d in self.lock().values_mut() {
            d.at = now + d.ttl;
            d.expiring_since = None;
        }
    }

    /// Up to `limit` leases past their deadline at `now` whose expiry was not proposed in the
    /// last [`EXPIRY_RETRY`], as `(id, renewed_at)`; they are marked as being expired.
    pub fn take_expired(&self, now: Instant, limit: usize) -> Vec<(LeaseId, u64)> {
        let mut out = Vec::new();
        for (id, d) in self.lock().iter_mut() {
            if out.len() >= limit {
                break;
            }
            let retry = d
                .expiring_since
                .is_none_or(|since| now.duration_since(since) >= EXPIRY_RETRY);
            if d.at <= now && retry {
                d.expiring_since = Some(now);
                out.push((*id, d.renewed_at));
            }
        }
        out
    }

    /// Time left before the lease's deadline on this node (`None`: unknown here).
    pub fn remaining(&self, id: LeaseId, now: Instant) -> Option<Duration> {
        self.lock()
            .get(&id)
            .map(|d| d.at.saturating_duration_since(now))
    }
}

/// The TTL to grant for a requested one: at least [`MIN_TTL_SECONDS`], at most
/// [`MAX_TTL_SECONDS`].
pub fn granted_ttl(requested: i64) -> i64 {
    requested.clamp(MIN_TTL_SECONDS, MAX_TTL_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_ttl_from_its_last_renewal() {
        let l = Lessor::new();
        let t0 = Instant::now();
        l.renewed(1, 10, 5, t0);
        assert!(l.take_expired(t0 + Duration::from_secs(9), 10).is_empty());
        l.renewed(1, 10, 8, t0 + Duration::from_secs(9));
        assert!(l.take_expired(t0 + Duration::from_secs(18), 10).is_empty());
        assert_eq!(
            l.take_expired(t0 + Duration::from_secs(19), 10),
            vec![(1, 8)]
        );
        // Proposed once; again only after EXPIRY_RETRY.
        assert!(l.take_expired(t0 + Duration::from_secs(20), 10).is_empty());
        let later = t0 + Duration::from_secs(19) + EXPIRY_RETRY;
        assert_eq!(l.take_expired(later, 10), vec![(1, 8)]);
        l.removed(1);
        assert!(l.take_expired(later + EXPIRY_RETRY, 10).is_empty());
        assert_eq!(l.remaining(1, later), None);
    }

    #[test]
    fn promotion_gives_every_lease_a_full_ttl() {
        let l = Lessor::new();
        let t0 = Instant::now();
        l.renewed(1, 5, 1, t0);
        l.renewed(2, 60, 2, t0);
        let promoted = t0 + Duration::from_secs(30);
        l.promote(promoted);
        let deadline_1 = promoted + Duration::from_secs(5);
        assert_eq!(l.remaining(1, promoted), Some(deadline_1 - promoted));
        assert!(l
            .take_expired(deadline_1 - Duration::from_millis(1), 10)
            .is_empty());
        assert_eq!(l.take_expired(deadline_1, 10), vec![(1, 1)]);
    }

    #[test]
    fn a_reset_keeps_exactly_the_given_leases_and_limits_bound_the_batch() {
        let l = Lessor::new();
        let t0 = Instant::now();
        l.renewed(9, 1, 1, t0);
        l.reset((1..=5).map(|id| (id, 2, id as u64)), t0);
        let after = t0 + Duration::from_secs(2);
        let first = l.take_expired(after, 3);
        assert_eq!(first.len(), 3);
        let rest = l.take_expired(after, 10);
        assert_eq!(rest.len(), 2);
        assert!(first
            .iter()
            .chain(&rest)
            .all(|(id, _)| (1..=5).contains(id)));
    }

    #[test]
    fn granted_ttls_are_clamped() {
        assert_eq!(granted_ttl(0), MIN_TTL_SECONDS);
        assert_eq!(granted_ttl(-5), MIN_TTL_SECONDS);
        assert_eq!(granted_ttl(60), 60);
        assert_eq!(granted_ttl(i64::MAX), MAX_TTL_SECONDS);
    }
}
