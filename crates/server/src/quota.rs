//! [`Quota`]: the store's size against `--quota-backend-bytes`, shared between the raft loop
//! (which publishes the size after every batch) and the services (which refuse a growing write
//! before proposing it, and raise the NOSPACE alarm).
//!
//! The size is every kept version's key and value bytes (history included): what compaction
//! and deletes free. The refusal that makes the quota hold on every replica alike is the
//! replicated alarm (`crate::kv`): once it is raised, growing commands fail at apply time
//! everywhere. This check only keeps a node from proposing what would grow a full store.

use std::sync::atomic::{AtomicU64, Ordering};

/// Default of `--quota-backend-bytes` (etcd's default: 2 GiB).
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// The quota and the size last published.
#[derive(Debug)]
pub struct Quota {
    limit: u64,
    used: AtomicU64,
}

impl Quota {
    pub fn new(limit: u64) -> Quota {
        Quota {
            limit,
            used: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn set_used(&self, bytes: u64) {
        self.used.store(bytes, Ordering::Relaxed);
    }

    /// True if a write adding `bytes` would take the store above its quota.
    pub fn exceeded_by(&self, bytes: u64) -> bool {
        self.used().saturating_add(bytes) > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_would_cross_the_quota_exceeds_it() {
        let q = Quota::new(100);
        q.set_used(90);
        assert!(!q.exceeded_by(10));
        assert!(q.exceeded_by(11));
        q.set_used(u64::MAX);
        assert!(q.exceeded_by(1));
    }
}
