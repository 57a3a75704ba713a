//! The replicated state machine: a multi-version key-value store with etcd's revisions,
//! leases and alarms, plus the cluster's member list (id → peer URL), what each member
//! published about itself (name, client URLs) and the cluster's id, changed only by applying
//! committed raft entries in log order.
//!
//! # Revisions and history
//! Keys and values are bytes. One global revision counter is bumped by every committed change
//! to the data (a put, a delete that removed something, a transaction that changed something,
//! a lease revocation that deleted keys: one revision each, like etcd). Every key carries
//! `create_revision`, `mod_revision`, `version` (changes since creation) and its lease. Every
//! version of every key is kept ([`mvcc`]) until a compaction: a read at any revision from
//! the compaction point to the current one sees the store exactly as it was, and a watch can
//! start at any of them. Compaction is a command like any other (manual, or proposed by the
//! leader's auto-compactor), so every replica forgets the same revisions.
//!
//! # Leases and alarms
//! A lease ([`lease`]) is granted with a TTL; a put may attach its key to one. Revoking the
//! lease (or its expiry, decided by the leader's clock and applied as a command) deletes every
//! attached key in one revision. A raised NOSPACE alarm (the store went above its quota)
//! refuses, here at apply time and so identically everywhere, every command that would grow
//! the store: puts, transactions that write, lease grants. Deletes, compaction, revocations
//! and reads still work, and the alarm is cleared by a command too.
//!
//! # Determinism
//! Every node applies the same entries and ends in the same state. A command that fails to
//! decode is skipped identically everywhere (the proposer gets an error), so it can never make
//! replicas diverge. Conditions are evaluated here, at apply time, against the state every
//! replica has at that log position — never against a possibly stale view in a handler — and
//! a command that cannot apply (a lease that does not exist, a compacted revision, the NOSPACE
//! alarm) is refused here with a [`Refusal`], the same on every replica. Nothing here reads a
//! clock or a flag: what depends on them (a lease's deadline, the quota, the compaction
//! policy) is decided before proposing, and the command carries the decision.
//!
//! Commands and snapshots use a small explicit binary encoding (little-endian lengths), not a
//! general serializer: the format is part of the on-disk and on-wire contract, and both carry a
//! format version (see below and [`codec`], [`snapshot`]).
//!
//! # The on-disk contract
//! Every log entry this module ever wrote must decode, the same way, in every later build: a
//! data dir from an older version opens (`tests/fixtures.rs` opens one written before versions
//! existed), and replicas running the same build apply the same bytes identically.
//!
//! - A **command**'s first byte says its format version ([`codec`]): `0xCE` starts the
//!   envelope `| 0xCE | version | kind | body |`; a bare `| kind | body |` with kind 1..=4 is
//!   version 1's short form — what every build before the envelope wrote, and what this one
//!   still writes for those four kinds, so that older members of a cluster being upgraded
//!   read every entry. That short-form set is closed: a bare byte 5 is an error, not the
//!   fifth kind; every later kind is written in the envelope.
//! - A **new command** (a lease grant, a compaction, an auth change) is a new kind number in
//!   the current version, with a new variant of [`Command`], its encoder and its decoder, and a
//!   golden-bytes test. A kind's number and body layout are fixed once released: a changed
//!   layout or meaning is a new kind, never an edit of the old one, and a retired kind's
//!   number is never reused (its decoder stays, for old logs).
//! - The **version** changes only if the envelope itself changes (a field every command
//!   carries); a build decodes every version up to its own.
//! - A **snapshot** is `| "KVSV" | version: u32 | body |` ([`snapshot`]), or version 1's short
//!   form `| "KVS3" | body |` — what every build wrote before versions existed. This build
//!   writes version 3 (version 2's history, leases, alarms and compaction point, and the
//!   cluster id and member attributes) in the long form. A layout is fixed once released; restore keeps reading every older version
//!   (filling the new state with its empty value: a version-1 state has no history, so its
//!   compaction point is its revision).
//! - An unknown version or kind fails to decode with an error naming it. It depends on the
//!   bytes alone, so every replica of one build refuses the same entry (the proposer gets the
//!   error, the entry is skipped, the state does not diverge). A snapshot of an unknown
//!   version is refused too: found at startup it stops the node before it applies anything;
//!   sent by a leader, the message is refused (the follower stays behind rather than diverge).
//! - **Mixed versions**: a build that does not know a kind skips entries of it while newer
//!   replicas apply them, so a new kind (or version) must not be proposed before every member
//!   runs a build that knows it. A command that version 1's four kinds can say (a UTF-8 key,
//!   no lease, no range but a prefix, a transaction of single-key puts and deletes) is still
//!   written in their short form, so an older build in the middle of a rolling upgrade applies
//!   the common writes as this one does; it skips a compaction (harmless: it keeps no
//!   history) but would miss a lease, so leases must wait until every member is upgraded. An
//!   older build refuses a newer snapshot version (it stays behind rather than diverge, and
//!   catches up once upgraded). A member publishes its attributes (kind 15) at every start,
//!   whatever the others run: an older build skips the entry, which costs only what its
//!   MemberList shows, until it is upgraded and that member starts again. There is no cluster-version negotiation yet (etcd gates new
//!   formats on its cluster version, the lowest version among members).

mod apply;
mod codec;
mod command;
mod lease;
mod mvcc;
mod range;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};

use self::mvcc::History;
use self::snapshot::SnapshotCursor;
pub use codec::{ENVELOPE, FORMAT_VERSION};
pub use command::{
    Alarm, AlarmKind, Command, Compare, CompareOp, CompareTarget, Delete, DeleteRange, Event,
    KeyValue, LeaseId, MemberAttributes, OpResponse, Outcome, Precondition, Put, Refusal, Txn,
    TxnOp, TxnOutcome,
};
pub use lease::Lease;
pub use range::{prefix_end, KeyRange, RangeQuery, RangeResult, SortOrder, SortTarget};
pub use snapshot::SNAPSHOT_VERSION;

/// Log entries of history the physical compaction visits per applied batch, at least (see
/// [`compaction_budget`]).
pub const COMPACTION_STEP: usize = 1024;

/// Log entries of history the physical compaction visits after a batch of `entries` applied
/// entries: [`COMPACTION_STEP`], and two per entry, so that it outpaces the writes (each adds
/// one entry) however large the batches. Each visit is a key lookup (about a microsecond at
/// 100,000 keys): a compaction of 10,000 revisions done in one batch stalled the raft loop
/// for 10 ms, and every write waiting behind it (see [`mvcc`] and BENCHMARKS.md).
pub fn compaction_budget(entries: usize) -> usize {
    COMPACTION_STEP.saturating_add(entries.saturating_mul(2))
}

/// A new cluster's id: a 64-bit FNV-1a hash of its founding members (id and peer URL each),
/// stable across builds and platforms, and never 0.
pub fn founding_cluster_id(members: &BTreeMap<u64, String>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, url) in members {
        for b in id.to_le_bytes().iter().chain(url.as_bytes()) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h.max(1)
}

/// The store: its history, leases, alarms and members.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Kv {
    history: History,
    leases: lease::Leases,
    alarms: BTreeSet<Alarm>,
    /// Current members: id → peer URL (voters and learners alike; raft's ConfState says which).
    members: BTreeMap<u64, String>,
    /// Ids removed from the cluster and not added back.
    removed: BTreeSet<u64>,
    /// What the members published about themselves (names, client URLs).
    attributes: BTreeMap<u64, MemberAttributes>,
    /// The cluster's id, fixed when it was founded (0: a state from a build before it was
    /// kept; the node derives one from its flags, as those builds did).
    cluster_id: u64,
    /// A snapshot being serialized a slice at a time (see [`Kv::begin_snapshot`]).
    snapshotting: Option<Box<SnapshotCursor>>,
}

impl Kv {
    /// A fresh state holding only the founding members.
    pub fn with_members(members: BTreeMap<u64, String>) -> Kv {
        Kv {
            cluster_id: founding_cluster_id(&members),
            members,
            ..Kv::default()
        }
    }

    /// Records a member added (or its URL changed). Promotion keeps the known URL.
    pub fn add_member(&mut self, id: u64, url: Option<String>) {
        self.removed.remove(&id);
        match url {
            Some(url) => {
                self.members.insert(id, url);
            }
            None => {
                self.members.entry(id).or_default();
            }
        }
    }

    /// Records a member removed.
    pub fn remove_member(&mut self, id: u64) {
        self.members.remove(&id);
        self.attributes.remove(&id);
        self.removed.insert(id);
    }

    /// Makes `members` the whole member list of a new cluster, with no member ever removed
    /// and none published yet: a restored backup seeding a new cluster, which gets its own id.
    pub fn reseat_members(&mut self, members: BTreeMap<u64, String>) {
        self.cluster_id = founding_cluster_id(&members);
        self.members = members;
        self.attributes.clear();
        self.removed.clear();
    }

    /// What each member published about itself (a member that has not yet is absent).
    pub fn attributes(&self) -> &BTreeMap<u64, MemberAttributes> {
        &self.attributes
    }

    /// The cluster's id (0: not kept by the build that founded it).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// True if this id was removed and not added back.
    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// Ids removed from the cluster and not added back.
    pub fn removed(&self) -> &BTreeSet<u64> {
        &self.removed
    }

    /// The member list (id → peer URL).
    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    /// The key as it is now.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.history.current(key)
    }

    /// A range read, or why it cannot be answered (a compacted or future revision).
    pub fn range(&self, query: &RangeQuery) -> Result<RangeResult, Refusal> {
        let revision = self.history.readable(query.revision)?;
        Ok(self.history.range(query, revision))
    }

    /// The hash of the history readable up to `revision` (0: the current one), and the
    /// revision it was taken at (etcd's HashKV; see `mvcc::History::hash`).
    pub fn hash(&self, revision: u64) -> Result<(u32, u64), Refusal> {
        let revision = self.history.readable(revision)?;
        Ok((self.history.hash(revision), revision))
    }

    /// The changes of whole revisions from `from` on, about `max_bytes` of keys and values
    /// of them, and the first revision not included; refused if `from` is compacted.
    pub fn changes(&self, from: u64, max_bytes: usize) -> Result<(Vec<Event>, u64), Refusal> {
        if from < self.history.compact_revision() {
            return Err(Refusal::Compacted {
                compact_revision: self.history.compact_revision(),
            });
        }
        Ok(self.history.changes_from(from, max_bytes))
    }

    /// The store revision: the number of committed changes so far.
    pub fn revision(&self) -> u64 {
        self.history.revision()
    }

    /// The oldest revision still readable.
    pub fn compact_revision(&self) -> u64 {
        self.history.compact_revision()
    }

    /// Revisions kept from the compaction point to the current one.
    pub fn retained_revisions(&self) -> u64 {
        self.history.retained_revisions()
    }

    /// Keys that exist now.
    pub fn len(&self) -> usize {
        self.history.live_keys()
    }

    /// True when no key exists now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the keys and values that exist now.
    pub fn live_bytes(&self) -> u64 {
        self.history.live_bytes()
    }

    /// Bytes of every kept version, history included: what the quota bounds.
    pub fn total_bytes(&self) -> u64 {
        self.history.total_bytes()
    }

    /// A lease, if it exists.
    pub fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(id)
    }

    /// How many leases exist.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Every lease.
    pub fn leases(&self) -> impl Iterator<Item = (&LeaseId, &Lease)> {
        self.leases.iter()
    }

    /// The alarms raised.
    pub fn alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.alarms.iter()
    }

    /// True while history before the compaction point is still held.
    pub fn compaction_pending(&self) -> bool {
        self.history.compaction_pending()
    }

    /// Drops up to `budget` log entries of history before the compaction point; paused while
    /// a snapshot is serialized (it reads versions the physical step would drop).
    pub fn compact_step(&mut self, budget: usize) {
        if self.snapshotting.is_none() {
            self.history.compact_step(budget);
        }
    }
}

#[cfg(test)]
mod tests;
