//! The replicated state machine: an ordered map from key to value with etcd-style revisions,
//! plus the cluster's member list (id → peer URL), changed only by applying committed raft
//! entries in log order.
//!
//! # Revisions
//! One global revision counter is bumped by every committed change to the data (a put, a
//! delete that removed something, a transaction that changed something: one revision each, like
//! etcd). Every key carries `create_revision` (when it was created), `mod_revision` (its last
//! change) and `version` (changes since creation). All of it is in snapshots, so every node
//! reports the same numbers.
//!
//! # Determinism
//! Every node applies the same entries and ends in the same state. A command that fails to
//! decode is skipped identically everywhere (the proposer gets an error), so it can never make
//! replicas diverge. Conditional writes are evaluated here, at apply time, against the state
//! every replica has at that log position — never against a possibly stale view in a handler.
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
//!   form `| "KVS3" | body |` — what every build wrote before versions existed, and what this
//!   one still writes while version 1 is current. New state (leases, a compaction revision)
//!   means a new snapshot version, written in the long form, whose layout is fixed once
//!   released; restore keeps reading every older version (filling the new state with its
//!   empty value).
//! - An unknown version or kind fails to decode with an error naming it. It depends on the
//!   bytes alone, so every replica of one build refuses the same entry (the proposer gets the
//!   error, the entry is skipped, the state does not diverge). A snapshot of an unknown
//!   version is refused too: found at startup it stops the node before it applies anything;
//!   sent by a leader, the message is refused (the follower stays behind rather than diverge).
//! - **Mixed versions**: a build that does not know a kind skips entries of it while newer
//!   replicas apply them, so a new kind (or version) must not be proposed before every member
//!   runs a build that knows it. Today's commands are written in the short form that builds
//!   before the envelope (c0c95b6 and older) read, so such a build and this one may run in one
//!   cluster during a rolling upgrade, and snapshots are written in version 1's short form,
//!   which such a build restores (so also a follower that catches up by snapshot, or a data
//!   dir moved back to an older build). There is no cluster-version
//!   negotiation yet (etcd gates new formats on its cluster version, the lowest version among
//!   members); until there is, upgrade every member before using a new command.

mod codec;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use self::snapshot::SnapshotCursor;
pub use codec::{ENVELOPE, FORMAT_VERSION};
pub use snapshot::SNAPSHOT_VERSION;

/// A key's value and revision metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
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

/// What a transaction compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The value, compared bytewise (a missing key compares as absent: only `NotEqual` holds).
    Value(Bytes),
    /// The key's `mod_revision` (0 when absent).
    ModRevision(u64),
    /// The key's `version` (0 when absent).
    Version(u64),
    /// Whether the key exists.
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

/// One comparison of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub op: CompareOp,
    pub target: CompareTarget,
}

/// One write of a transaction branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Put { key: String, value: Bytes },
    Delete { key: String },
}

/// A state-machine command carried in a raft entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        key: String,
        value: Bytes,
        condition: Option<Precondition>,
    },
    Delete {
        key: String,
        condition: Option<Precondition>,
    },
    DeletePrefix {
        prefix: String,
    },
    Txn {
        compares: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
}

/// One change, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub revision: u64,
    pub key: String,
    /// The new value; `None` for a delete.
    pub value: Option<Bytes>,
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied. `revision` is the store revision after it; `changed` counts keys written or
    /// deleted (0 for a delete of a missing key).
    Done { revision: u64, changed: u64 },
    /// A precondition did not hold; nothing changed. `current` is the key's `mod_revision`
    /// (0 if absent), `revision` the store's.
    PreconditionFailed { current: u64, revision: u64 },
    /// A transaction: which branch ran, and the revision after it.
    Txn { succeeded: bool, revision: u64 },
}

impl Command {
    /// A plain, unconditional put.
    pub fn put(key: String, value: Bytes) -> Command {
        Command::Put {
            key,
            value,
            condition: None,
        }
    }
}

/// The key-value map, its revision, and the member list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Kv {
    data: BTreeMap<String, Entry>,
    revision: u64,
    /// Bytes of keys and values held (for status and metrics).
    data_bytes: u64,
    /// Current members: id → peer URL (voters and learners alike; raft's ConfState says which).
    members: BTreeMap<u64, String>,
    /// Ids removed from the cluster and not added back.
    removed: BTreeSet<u64>,
    /// A snapshot being serialized a slice at a time (see [`Kv::begin_snapshot`]).
    snapshotting: Option<Box<SnapshotCursor>>,
}

impl Kv {
    /// A fresh state holding only the founding members.
    pub fn with_members(members: BTreeMap<u64, String>) -> Kv {
        Kv {
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
        self.removed.insert(id);
    }

    /// True if this id was removed and not added back.
    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// Applies one committed command; the changes it made are appended to `events`.
    pub fn apply(&mut self, cmd: Command, events: &mut Vec<Event>) -> Outcome {
        match cmd {
            Command::Put {
                key,
                value,
                condition,
            } => {
                if let Some(current) = self.failed_precondition(&key, condition) {
                    return Outcome::PreconditionFailed {
                        current,
                        revision: self.revision,
                    };
                }
                self.revision += 1;
                self.write(key, value, events);
                self.done(1)
            }
            Command::Delete { key, condition } => {
                if let Some(current) = self.failed_precondition(&key, condition) {
                    return Outcome::PreconditionFailed {
                        current,
                        revision: self.revision,
                    };
                }
                if !self.data.contains_key(&key) {
                    return self.done(0);
                }
                self.revision += 1;
                self.remove(key, events);
                self.done(1)
            }
            Command::DeletePrefix { prefix } => {
                let keys: Vec<String> = self
                    .range_from(&prefix, None)
                    .map(|(k, _)| k.clone())
                    .collect();
                if keys.is_empty() {
                    return self.done(0);
                }
                self.revision += 1;
                let n = keys.len() as u64;
                for k in keys {
                    self.remove(k, events);
                }
                self.done(n)
            }
            Command::Txn {
                compares,
                success,
                failure,
            } => {
                let succeeded = compares.iter().all(|c| self.holds(c));
                let ops = if succeeded { success } else { failure };
                let changes = ops
                    .iter()
                    .filter(|op| match op {
                        TxnOp::Put { .. } => true,
                        TxnOp::Delete { key } => self.data.contains_key(key),
                    })
                    .count();
                if changes > 0 {
                    self.revision += 1;
                    for op in ops {
                        match op {
                            TxnOp::Put { key, value } => self.write(key, value, events),
                            TxnOp::Delete { key } => {
                                if self.data.contains_key(&key) {
                                    self.remove(key, events);
                                }
                            }
                        }
                    }
                }
                Outcome::Txn {
                    succeeded,
                    revision: self.revision,
                }
            }
        }
    }

    fn done(&self, changed: u64) -> Outcome {
        Outcome::Done {
            revision: self.revision,
            changed,
        }
    }

    /// `Some(current mod_revision)` if the precondition does not hold.
    fn failed_precondition(&self, key: &str, condition: Option<Precondition>) -> Option<u64> {
        let condition = condition?;
        let current = self.data.get(key).map_or(0, |e| e.mod_revision);
        let holds = match condition {
            Precondition::ModRevision(rev) => current != 0 && current == rev,
            Precondition::Absent => current == 0,
            Precondition::Present => current != 0,
        };
        (!holds).then_some(current)
    }

    fn holds(&self, c: &Compare) -> bool {
        let entry = self.data.get(&c.key);
        let ord = match &c.target {
            CompareTarget::Value(v) => match entry {
                Some(e) => e.value.as_ref().cmp(v.as_ref()),
                None => return c.op == CompareOp::NotEqual,
            },
            CompareTarget::ModRevision(r) => entry.map_or(0, |e| e.mod_revision).cmp(r),
            CompareTarget::Version(v) => entry.map_or(0, |e| e.version).cmp(v),
            CompareTarget::Exists(want) => entry.is_some().cmp(want),
        };
        match c.op {
            CompareOp::Equal => ord.is_eq(),
            CompareOp::NotEqual => ord.is_ne(),
            CompareOp::Greater => ord.is_gt(),
            CompareOp::Less => ord.is_lt(),
        }
    }

    /// Writes at the current revision (the caller bumped it).
    fn write(&mut self, key: String, value: Bytes, events: &mut Vec<Event>) {
        self.keep_for_snapshot(&key);
        let revision = self.revision;
        events.push(Event {
            revision,
            key: key.clone(),
            value: Some(value.clone()),
        });
        self.data_bytes += value.len() as u64;
        let key_len = key.len() as u64;
        // One lookup: this runs on the raft loop for every write.
        match self.data.entry(key) {
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let e = o.get_mut();
                self.data_bytes -= e.value.len() as u64;
                e.value = value;
                e.mod_revision = revision;
                e.version += 1;
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                self.data_bytes += key_len;
                v.insert(Entry {
                    value,
                    create_revision: revision,
                    mod_revision: revision,
                    version: 1,
                });
            }
        }
    }

    fn remove(&mut self, key: String, events: &mut Vec<Event>) {
        self.keep_for_snapshot(&key);
        if let Some(e) = self.data.remove(&key) {
            self.data_bytes -= (key.len() + e.value.len()) as u64;
            events.push(Event {
                revision: self.revision,
                key,
                value: None,
            });
        }
    }

    /// Reads one key.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.data.get(key)
    }

    /// Keys starting with `prefix`, in order, strictly after `start_after` if given.
    pub fn range_from<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<&str>,
    ) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
        use std::ops::Bound;
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        self.data
            .range((lower, Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// The store revision: the number of committed changes so far.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// The member list (id → peer URL).
    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }
}

#[cfg(test)]
mod tests;
