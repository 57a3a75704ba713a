//! The replicated part of leases: which leases exist, their TTL, the log index of their last
//! grant or keep-alive, and which keys are attached to each.
//!
//! *When* a lease expires is not replicated state: it is a deadline on each node's clock
//! (`crate::lessor`), and only the leader's counts — it proposes [`super::Command::LeaseExpire`]
//! naming the `renewed_at` index its decision was based on. The expiry applies only if no
//! grant or keep-alive was applied since, so a decision made by a leader that has since lost
//! its leadership (its proposal forwarded to the new one) cannot revoke a lease the new leader
//! saw renewed.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::command::LeaseId;

/// One lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// Its TTL in seconds, as granted.
    pub ttl: i64,
    /// The log index of the grant or keep-alive applied last.
    pub renewed_at: u64,
    /// The keys attached to it now.
    pub keys: BTreeSet<Bytes>,
}

/// Every lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    leases: BTreeMap<LeaseId, Lease>,
}

impl Leases {
    pub fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&LeaseId, &Lease)> {
        self.leases.iter()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Creates a lease (the caller checked the id is free).
    pub fn grant(&mut self, id: LeaseId, ttl: i64, index: u64) {
        self.leases.insert(
            id,
            Lease {
                ttl,
                renewed_at: index,
                keys: BTreeSet::new(),
            },
        );
    }

    /// Records a keep-alive applied at `index`; the lease's TTL, if it exists.
    pub fn renew(&mut self, id: LeaseId, index: u64) -> Option<i64> {
        let lease = self.leases.get_mut(&id)?;
        lease.renewed_at = index;
        Some(lease.ttl)
    }

    /// Removes a lease, returning its attached keys.
    pub fn remove(&mut self, id: LeaseId) -> Option<Lease> {
        self.leases.remove(&id)
    }

    /// Moves `key` from lease `from` to lease `to` (0: none).
    pub fn reattach(&mut self, key: &Bytes, from: LeaseId, to: LeaseId) {
        if from == to {
            return;
        }
        if let Some(l) = self.leases.get_mut(&from) {
            l.keys.remove(key);
        }
        if let Some(l) = self.leases.get_mut(&to) {
            l.keys.insert(key.clone());
        }
    }

    /// Restores a lease read from a snapshot (its keys are attached afterwards).
    pub fn restore(&mut self, id: LeaseId, ttl: i64, renewed_at: u64) {
        self.grant(id, ttl, renewed_at);
    }
}
