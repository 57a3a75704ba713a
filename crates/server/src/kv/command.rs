//! The commands the state machine applies ([`Command`]) and what applying one returns
//! ([`Outcome`]); their encoding is [`super::codec`]'s.

use bytes::Bytes;

use super::range::{KeyRange, RangeQuery, RangeResult};

/// A lease's id (etcd's int64; 0 means "no lease").
pub type LeaseId = i64;

/// A key as readers see it at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    pub create_revision: u64,
    pub mod_revision: u64,
    /// Changes since creation (1 for a new key).
    pub version: u64,
    /// The lease the key is attached to (0: none).
    pub lease: LeaseId,
}

/// A precondition of a conditional write (HTTP `If-Match` / `If-None-Match`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The key exists with exactly this `mod_revision`.
    ModRevision(u64),
    /// The key does not exist.
    Absent,
    /// The key exists (any revision).
    Present,
}

/// Write a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    pub key: Bytes,
    pub value: Bytes,
    /// Attach the key to this lease (0: none, and detach it from any).
    pub lease: LeaseId,
    /// Keep the key's current value (etcd's `ignore_value`; the key must exist).
    pub ignore_value: bool,
    /// Keep the key's current lease (etcd's `ignore_lease`; the key must exist).
    pub ignore_lease: bool,
    pub condition: Option<Precondition>,
}

impl Put {
    /// A plain put: no lease, no condition.
    pub fn new(key: Bytes, value: Bytes) -> Put {
        Put {
            key,
            value,
            lease: 0,
            ignore_value: false,
            ignore_lease: false,
            condition: None,
        }
    }
}

/// Delete one key if `condition` (if any) holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub key: Bytes,
    pub condition: Option<Precondition>,
}

/// Delete every key of a range, in one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRange {
    pub range: KeyRange,
    /// Return the deleted keys as they were.
    pub prev_kv: bool,
}

/// What a transaction compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value, compared bytewise; an absent key fails every comparison of its value
    /// (etcd's rule).
    Value(Bytes),
    /// The value, compared bytewise; an absent key differs from every value, so only `!=`
    /// holds for it (coordinate's REST rule, and version 1's transactions).
    ValueOrMissing(Bytes),
    /// The key's `mod_revision` (0 when absent).
    ModRevision(u64),
    /// The key's `create_revision` (0 when absent).
    CreateRevision(u64),
    /// The key's `version` (0 when absent).
    Version(u64),
    /// The key's lease (0 when absent or unleased).
    Lease(LeaseId),
    /// Whether the key exists (coordinate's REST `exists`; not an etcd target).
    Exists(bool),
}

/// How a transaction compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One comparison of a transaction; over a range, it must hold for every key in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub range: KeyRange,
    pub op: CompareOp,
    pub target: CompareTarget,
}

/// One operation of a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Put(Put),
    Delete(DeleteRange),
    Range(RangeQuery),
    Txn(Txn),
}

/// Evaluate `compares` at apply time; run `success` if all hold, else `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// An alarm a member raises (etcd's `AlarmType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmKind {
    /// The store is above its quota: growing writes are refused.
    NoSpace,
}

/// One raised alarm: which member raised it, and what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Alarm {
    pub member: u64,
    pub kind: AlarmKind,
}

/// A state-machine command carried in a raft entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put(Put),
    Delete(Delete),
    DeleteRange(DeleteRange),
    Txn(Txn),
    /// Forget every revision before `revision` (etcd's Compact).
    Compact {
        revision: u64,
    },
    /// Create a lease of `ttl` seconds (the proposer picked the id and the effective TTL).
    LeaseGrant {
        id: LeaseId,
        ttl: i64,
    },
    /// Delete a lease and every key attached to it.
    LeaseRevoke {
        id: LeaseId,
    },
    /// Restart a lease's TTL (on every node: the leader's clock decides expiry).
    LeaseKeepAlive {
        id: LeaseId,
    },
    /// The leader found the lease expired: revoke it, unless a keep-alive or grant was
    /// applied after the one (at log index `renewed_at`) the leader's decision was based on.
    LeaseExpire {
        id: LeaseId,
        renewed_at: u64,
    },
    /// Raise (`active`) or clear an alarm.
    Alarm {
        alarm: Alarm,
        active: bool,
    },
    /// Member `id` says what it is called and where clients reach it (etcd's member
    /// attributes, which a member publishes once it runs).
    PublishMember {
        id: u64,
        attributes: MemberAttributes,
    },
}

/// What a member publishes about itself: its name and its client URLs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberAttributes {
    pub name: String,
    pub client_urls: Vec<String>,
}

impl Command {
    /// A plain, unconditional put.
    pub fn put(key: Bytes, value: Bytes) -> Command {
        Command::Put(Put::new(key, value))
    }
}

/// One change, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The key after the change; for a delete only `key` and `mod_revision` (the revision of
    /// the delete) are set, like etcd's DELETE events.
    pub kv: KeyValue,
    pub deleted: bool,
    /// The key before the change, if it existed.
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> u64 {
        self.kv.mod_revision
    }
}

/// A well-formed command (or read) that cannot apply, identically on every replica: nothing
/// changed. The texts are coordinate's; the gRPC front-end answers etcd's own.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The lease does not exist (etcd: "requested lease not found").
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// A lease with this id exists (etcd: "lease already exists").
    #[error("lease {0} already exists")]
    LeaseExists(LeaseId),
    /// A NOSPACE alarm is raised: writes that grow the store are refused.
    #[error(
        "database space exceeded: the store is above its quota (--quota-backend-bytes); \
         compact and delete, then disarm the NOSPACE alarm"
    )]
    NoSpace,
    /// The revision was compacted away; `compact_revision` is the oldest one readable.
    #[error(
        "required revision has been compacted: the oldest revision available is \
         {compact_revision}"
    )]
    Compacted { compact_revision: u64 },
    /// The revision is after the store's current one.
    #[error("required revision is a future revision: the current revision is {current}")]
    FutureRevision { current: u64 },
    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
}

/// What each operation of the transaction branch that ran returned, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResponse {
    Put { prev: Option<KeyValue> },
    Delete { deleted: u64, prev: Vec<KeyValue> },
    Range(RangeResult),
    Txn(TxnOutcome),
}

/// What a transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    /// The store revision after it.
    pub revision: u64,
    pub responses: Vec<OpResponse>,
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A put created `revision`; `prev` is the key before it.
    Put {
        revision: u64,
        prev: Option<KeyValue>,
    },
    /// A delete removed `deleted` keys; `revision` is the store revision after it (unchanged
    /// if nothing was deleted). `prev` holds them if asked for.
    Deleted {
        revision: u64,
        deleted: u64,
        prev: Vec<KeyValue>,
    },
    Txn(TxnOutcome),
    /// The store now keeps revisions from `revision` on.
    Compacted {
        revision: u64,
    },
    LeaseGranted {
        id: LeaseId,
        ttl: i64,
    },
    /// A lease is gone (revoked, or expired); its `deleted` keys went in `revision`.
    LeaseRevoked {
        id: LeaseId,
        revision: u64,
        deleted: u64,
    },
    /// A keep-alive restarted the lease's TTL of `ttl` seconds.
    LeaseRenewed {
        id: LeaseId,
        ttl: i64,
    },
    /// An expiry was void: the lease was renewed after the leader decided.
    LeaseStillAlive {
        id: LeaseId,
    },
    /// The alarms raised after an alarm command.
    Alarms(Vec<Alarm>),
    /// A member's attributes were recorded (`member`), or ignored: the id is not a member.
    MemberPublished {
        member: bool,
    },
    /// A precondition did not hold; nothing changed. `current` is the key's `mod_revision`
    /// (0 if absent), `revision` the store's.
    PreconditionFailed {
        current: u64,
        revision: u64,
    },
    Refused(Refusal),
}
