//! [`LeaseService`]: grant, revoke, keep alive, inspect and list leases.
//!
//! A grant's id (when the client leaves it 0) and its effective TTL are decided here, before
//! proposing, so the command carries them and every replica applies the same. A keep-alive is
//! a log command like any other: it is acknowledged only once applied, and applying it restarts
//! the lease's deadline on every node, so the next leader knows of it (see `crate::lessor`).
//! Time-to-live reads the lease from the state (linearizably) and its time left from this
//! node's deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::kv::{Command, LeaseId, Outcome};
use crate::lessor::{granted_ttl, Lessor};

use super::error::{Rejection, ServiceError};
use super::kv::{unexpected, unexpected_read};
use super::node::{Consistency, Query, Raft, ReadResult};

/// Leases through raft.
#[derive(Clone)]
pub struct LeaseService {
    raft: Raft,
    lessor: Arc<Lessor>,
    ids: Arc<IdGenerator>,
}

/// A lease was granted: its id and the TTL it got (the requested one, clamped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantResponse {
    pub id: LeaseId,
    pub ttl: i64,
}

/// A lease was revoked at `revision`, deleting `deleted` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevokeResponse {
    pub revision: u64,
    pub deleted: u64,
}

/// A lease as it is: `ttl` is the time left in seconds (rounded down), `granted_ttl` what it
/// was granted, `keys` the keys attached (if asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeToLive {
    pub id: LeaseId,
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<Bytes>,
    /// The store revision it was read at.
    pub revision: u64,
}

impl LeaseService {
    pub(super) fn new(raft: Raft, lessor: Arc<Lessor>, member: u64) -> LeaseService {
        LeaseService {
            raft,
            lessor,
            ids: Arc::new(IdGenerator::new(member)),
        }
    }

    /// Grants a lease of `ttl` seconds; `id` 0 picks one.
    pub async fn grant(&self, id: LeaseId, ttl: i64) -> Result<GrantResponse, ServiceError> {
        if id < 0 {
            return Err(Rejection::Invalid(format!("lease id {id}: must be positive")).into());
        }
        let id = if id == 0 { self.ids.next() } else { id };
        let cmd = Command::LeaseGrant {
            id,
            ttl: granted_ttl(ttl),
        };
        match self.raft.propose(&cmd).await? {
            Outcome::LeaseGranted { id, ttl } => Ok(GrantResponse { id, ttl }),
            other => Err(unexpected("a lease grant", other)),
        }
    }

    /// Revokes a lease and deletes its keys.
    pub async fn revoke(&self, id: LeaseId) -> Result<RevokeResponse, ServiceError> {
        match self.raft.propose(&Command::LeaseRevoke { id }).await? {
            Outcome::LeaseRevoked {
                revision, deleted, ..
            } => Ok(RevokeResponse { revision, deleted }),
            other => Err(unexpected("a lease revocation", other)),
        }
    }

    /// Proposes the expiry the leader's keeper decided (`crate::maintenance`); true if the
    /// lease is gone, false if it was renewed since `renewed_at`.
    pub async fn expire(&self, id: LeaseId, renewed_at: u64) -> Result<bool, ServiceError> {
        let cmd = Command::LeaseExpire { id, renewed_at };
        match self.raft.propose(&cmd).await? {
            Outcome::LeaseRevoked { .. } => Ok(true),
            Outcome::LeaseStillAlive { .. } => Ok(false),
            other => Err(unexpected("a lease expiry", other)),
        }
    }

    /// Restarts a lease's TTL; returns it (seconds).
    pub async fn keep_alive(&self, id: LeaseId) -> Result<i64, ServiceError> {
        match self.raft.propose(&Command::LeaseKeepAlive { id }).await? {
            Outcome::LeaseRenewed { ttl, .. } => Ok(ttl),
            other => Err(unexpected("a lease keep-alive", other)),
        }
    }

    /// A lease's time left, TTL and (if `keys`) attached keys; `None` if it does not exist.
    pub async fn time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> Result<Option<TimeToLive>, ServiceError> {
        let read = self
            .raft
            .read(Query::Lease(id), Consistency::Linearizable)
            .await?;
        let ReadResult::Lease(info, revision) = read else {
            return Err(unexpected_read("a lease read", read));
        };
        Ok(info.map(|l| {
            let left = self
                .lessor
                .remaining(id, Instant::now())
                .map_or(l.ttl, |d| d.as_secs() as i64);
            TimeToLive {
                id,
                ttl: left,
                granted_ttl: l.ttl,
                keys: if keys { l.keys } else { Vec::new() },
                revision,
            }
        }))
    }

    /// Every lease's id, and the store revision.
    pub async fn list(&self) -> Result<(Vec<LeaseId>, u64), ServiceError> {
        let read = self
            .raft
            .read(Query::Leases, Consistency::Linearizable)
            .await?;
        match read {
            ReadResult::Leases(ids, revision) => Ok((ids, revision)),
            other => Err(unexpected_read("a lease list", other)),
        }
    }
}

/// Lease ids unique across the cluster without coordination (etcd's scheme): the member id's
/// low 16 bits, then 47 bits that start at the time of startup in milliseconds (shifted
/// left 8) and count up. Positive, never 0; a duplicate is refused at apply
/// (`LeaseExists`), never overwritten.
#[derive(Debug)]
struct IdGenerator {
    prefix: u64,
    next: AtomicU64,
}

const ID_SUFFIX_BITS: u32 = 47;

impl IdGenerator {
    fn new(member: u64) -> IdGenerator {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        IdGenerator {
            prefix: (member & 0xffff) << ID_SUFFIX_BITS,
            next: AtomicU64::new(millis << 8),
        }
    }

    fn next(&self) -> LeaseId {
        let mask = (1u64 << ID_SUFFIX_BITS) - 1;
        loop {
            let suffix = self.next.fetch_add(1, Ordering::Relaxed) & mask;
            let id = (self.prefix | suffix) as i64;
            if id > 0 {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_positive_distinct_and_carry_the_member() {
        let g = IdGenerator::new(3);
        let ids: Vec<i64> = (0..1000).map(|_| g.next()).collect();
        assert!(ids.iter().all(|&id| id > 0));
        assert!(ids.iter().all(|&id| (id as u64) >> ID_SUFFIX_BITS == 3));
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Member 0 (tests) still never yields 0.
        assert!(IdGenerator::new(0).next() > 0);
    }
}
