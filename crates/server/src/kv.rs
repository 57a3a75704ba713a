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
//! general serializer: the format is part of the on-disk and on-wire contract.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

const SNAPSHOT_MAGIC: &[u8; 4] = b"KVS3";

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

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_DELETE_PREFIX: u8 = 3;
const OP_TXN: u8 = 4;

impl Command {
    /// A plain, unconditional put.
    pub fn put(key: String, value: Bytes) -> Command {
        Command::Put {
            key,
            value,
            condition: None,
        }
    }

    /// Encodes the command for a raft entry.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Command::Put {
                key,
                value,
                condition,
            } => {
                b.reserve(16 + key.len() + value.len());
                b.put_u8(OP_PUT);
                put_condition(&mut b, condition);
                put_str(&mut b, key);
                // The value runs to the end: no length, no second copy on decode.
                b.put_slice(value);
            }
            Command::Delete { key, condition } => {
                b.put_u8(OP_DELETE);
                put_condition(&mut b, condition);
                put_str(&mut b, key);
            }
            Command::DeletePrefix { prefix } => {
                b.put_u8(OP_DELETE_PREFIX);
                put_str(&mut b, prefix);
            }
            Command::Txn {
                compares,
                success,
                failure,
            } => {
                b.put_u8(OP_TXN);
                b.put_u32_le(compares.len() as u32);
                for c in compares {
                    put_str(&mut b, &c.key);
                    b.put_u8(c.op as u8);
                    match &c.target {
                        CompareTarget::Value(v) => {
                            b.put_u8(0);
                            put_bytes(&mut b, v);
                        }
                        CompareTarget::ModRevision(r) => {
                            b.put_u8(1);
                            b.put_u64_le(*r);
                        }
                        CompareTarget::Version(v) => {
                            b.put_u8(2);
                            b.put_u64_le(*v);
                        }
                        CompareTarget::Exists(e) => {
                            b.put_u8(3);
                            b.put_u8(u8::from(*e));
                        }
                    }
                }
                for ops in [success, failure] {
                    b.put_u32_le(ops.len() as u32);
                    for op in ops {
                        match op {
                            TxnOp::Put { key, value } => {
                                b.put_u8(0);
                                put_str(&mut b, key);
                                put_bytes(&mut b, value);
                            }
                            TxnOp::Delete { key } => {
                                b.put_u8(1);
                                put_str(&mut b, key);
                            }
                        }
                    }
                }
            }
        }
        b.freeze()
    }

    /// Decodes a command from a committed entry, sharing the entry's buffer for values.
    pub fn decode(mut data: Bytes) -> Result<Command> {
        let bad = |why: &str| Error::Invalid(format!("malformed command: {why}"));
        if !data.has_remaining() {
            return Err(bad("empty"));
        }
        match data.get_u8() {
            OP_PUT => {
                let condition = take_condition(&mut data).ok_or_else(|| bad("condition"))?;
                let key = take_string(&mut data).ok_or_else(|| bad("key"))?;
                Ok(Command::Put {
                    key,
                    value: data,
                    condition,
                })
            }
            OP_DELETE => {
                let condition = take_condition(&mut data).ok_or_else(|| bad("condition"))?;
                let key = take_string(&mut data).ok_or_else(|| bad("key"))?;
                Ok(Command::Delete { key, condition })
            }
            OP_DELETE_PREFIX => {
                let prefix = take_string(&mut data).ok_or_else(|| bad("prefix"))?;
                Ok(Command::DeletePrefix { prefix })
            }
            OP_TXN => decode_txn(&mut data).ok_or_else(|| bad("transaction")),
            op => Err(bad(&format!("unknown op {op}"))),
        }
    }
}

/// The smallest encoded compare: key length, op, target tag, one byte of target.
const MIN_COMPARE_BYTES: usize = 4 + 1 + 1 + 1;

fn decode_txn(data: &mut Bytes) -> Option<Command> {
    let n = take_u32(data)? as usize;
    // Reserved by what the data can hold, never by the count field alone.
    let mut compares = Vec::with_capacity(n.min(data.remaining() / MIN_COMPARE_BYTES));
    for _ in 0..n {
        let key = take_string(data)?;
        let op = match take_u8(data)? {
            0 => CompareOp::Equal,
            1 => CompareOp::NotEqual,
            2 => CompareOp::Greater,
            3 => CompareOp::Less,
            _ => return None,
        };
        let target = match take_u8(data)? {
            0 => CompareTarget::Value(take_bytes(data)?),
            1 => CompareTarget::ModRevision(take_u64(data)?),
            2 => CompareTarget::Version(take_u64(data)?),
            3 => CompareTarget::Exists(take_u8(data)? == 1),
            _ => return None,
        };
        compares.push(Compare { key, op, target });
    }
    let mut branches = [Vec::new(), Vec::new()];
    for branch in &mut branches {
        let n = take_u32(data)? as usize;
        for _ in 0..n {
            let op = match take_u8(data)? {
                0 => TxnOp::Put {
                    key: take_string(data)?,
                    value: take_bytes(data)?,
                },
                1 => TxnOp::Delete {
                    key: take_string(data)?,
                },
                _ => return None,
            };
            branch.push(op);
        }
    }
    if data.has_remaining() {
        return None;
    }
    let [success, failure] = branches;
    Some(Command::Txn {
        compares,
        success,
        failure,
    })
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

/// A snapshot serialized a slice at a time while writes go on. It captures the state as of
/// its start: a key changed before the cursor reaches it has its entry from the start kept in
/// `before`, and that is what gets serialized (copy-on-write, one key at a time).
#[derive(Debug, PartialEq, Eq)]
struct SnapshotCursor {
    out: BytesMut,
    /// The last key serialized; every key up to it is done.
    done_through: Option<String>,
    /// Keys changed since the start and not serialized yet, with their entry at the start
    /// (`None`: the key did not exist then).
    before: BTreeMap<String, Option<Entry>>,
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

    /// Before a key changes: if a snapshot being serialized has not reached it yet, keeps its
    /// entry as of the snapshot's start.
    fn keep_for_snapshot(&mut self, key: &str) {
        if let Some(cur) = self.snapshotting.as_mut() {
            let pending = cur.done_through.as_deref().is_none_or(|done| key > done);
            if pending && !cur.before.contains_key(key) {
                cur.before
                    .insert(key.to_string(), self.data.get(key).cloned());
            }
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

    /// The whole state, serialized at once (a new cluster's bootstrap snapshot, tests).
    pub fn snapshot(&self) -> Bytes {
        let mut b = self.snapshot_header(BytesMut::new());
        for (k, e) in &self.data {
            put_entry(&mut b, k, e);
        }
        b.freeze()
    }

    /// Starts a snapshot of the current state that [`Kv::snapshot_step`] serializes a slice
    /// at a time, so a large state never stalls the caller (the raft loop) for long; writes in
    /// between do not change what it captures. Replaces an unfinished one.
    pub fn begin_snapshot(&mut self) {
        let out = self.snapshot_header(BytesMut::new());
        self.snapshotting = Some(Box::new(SnapshotCursor {
            out,
            done_through: None,
            before: BTreeMap::new(),
        }));
    }

    /// Serializes up to `budget` more entries of the snapshot started by
    /// [`Kv::begin_snapshot`]. Returns its data once complete (and forgets it); `None` while
    /// entries remain, or if no snapshot was started.
    pub fn snapshot_step(&mut self, budget: usize) -> Option<Bytes> {
        let Kv {
            data, snapshotting, ..
        } = self;
        let cur = snapshotting.as_mut()?;
        let from = match &cur.done_through {
            Some(done) => Bound::Excluded(done.as_str()),
            None => Bound::Unbounded,
        };
        // Merge the live entries with the kept ones; a kept one wins (it is the older).
        let mut live = data.range::<str, _>((from, Bound::Unbounded)).peekable();
        let mut kept = cur
            .before
            .range::<str, _>((from, Bound::Unbounded))
            .peekable();
        let mut last: Option<&str> = None;
        for _ in 0..budget {
            let live_first = match (live.peek(), kept.peek()) {
                (None, None) => break,
                (Some((lk, _)), Some((kk, _))) => lk.as_str() < kk.as_str(),
                (next_live, _) => next_live.is_some(),
            };
            let (key, entry) = if live_first {
                match live.next() {
                    Some((k, e)) => (k, Some(e)),
                    None => break,
                }
            } else {
                // The kept entry shadows a live one under the same key.
                if live.peek().map(|(k, _)| *k) == kept.peek().map(|(k, _)| *k) {
                    live.next();
                }
                match kept.next() {
                    Some((k, e)) => (k, e.as_ref()),
                    None => break,
                }
            };
            if let Some(e) = entry {
                put_entry(&mut cur.out, key, e);
            }
            last = Some(key.as_str());
        }
        if live.peek().is_none() && kept.peek().is_none() {
            return snapshotting.take().map(|cur| cur.out.freeze());
        }
        if let Some(last) = last.map(str::to_string) {
            // Kept entries up to the cursor are serialized; drop them.
            cur.before = cur.before.split_off(last.as_str());
            cur.before.remove(&last);
            cur.done_through = Some(last);
        }
        None
    }

    /// True while a snapshot started by [`Kv::begin_snapshot`] is unfinished.
    pub fn is_snapshotting(&self) -> bool {
        self.snapshotting.is_some()
    }

    /// The snapshot format up to the entry count, written into `b` (cleared first).
    fn snapshot_header(&self, mut b: BytesMut) -> BytesMut {
        let size = self.data_bytes as usize
            + self.data.len() * 32
            + self.members.values().map(|u| 12 + u.len()).sum::<usize>()
            + self.removed.len() * 8
            + 32;
        b.clear();
        b.reserve(size);
        b.put_slice(SNAPSHOT_MAGIC);
        b.put_u64_le(self.revision);
        b.put_u32_le(self.members.len() as u32);
        for (id, url) in &self.members {
            b.put_u64_le(*id);
            put_str(&mut b, url);
        }
        b.put_u32_le(self.removed.len() as u32);
        for id in &self.removed {
            b.put_u64_le(*id);
        }
        b.put_u64_le(self.data.len() as u64);
        b
    }

    /// Rebuilds the state from snapshot data; values share the snapshot's buffer.
    pub fn restore(mut data: Bytes) -> Result<Kv> {
        let bad = |why: &str| Error::Invalid(format!("malformed snapshot data: {why}"));
        if data.remaining() < 4 || &data[..4] != SNAPSHOT_MAGIC {
            return Err(bad("missing header"));
        }
        data.advance(4);
        let mut kv = Kv {
            revision: take_u64(&mut data).ok_or_else(|| bad("revision"))?,
            ..Kv::default()
        };
        let members = take_u32(&mut data).ok_or_else(|| bad("member count"))?;
        for _ in 0..members {
            let id = take_u64(&mut data).ok_or_else(|| bad("member id"))?;
            let url = take_string(&mut data).ok_or_else(|| bad("member URL"))?;
            kv.members.insert(id, url);
        }
        let removed = take_u32(&mut data).ok_or_else(|| bad("removed count"))?;
        for _ in 0..removed {
            kv.removed
                .insert(take_u64(&mut data).ok_or_else(|| bad("removed id"))?);
        }
        let count = take_u64(&mut data).ok_or_else(|| bad("key count"))?;
        for _ in 0..count {
            let key = take_string(&mut data).ok_or_else(|| bad("key"))?;
            let value = take_bytes(&mut data).ok_or_else(|| bad("value"))?;
            let create_revision = take_u64(&mut data).ok_or_else(|| bad("create revision"))?;
            let mod_revision = take_u64(&mut data).ok_or_else(|| bad("mod revision"))?;
            let version = take_u64(&mut data).ok_or_else(|| bad("version"))?;
            kv.data_bytes += (key.len() + value.len()) as u64;
            kv.data.insert(
                key,
                Entry {
                    value,
                    create_revision,
                    mod_revision,
                    version,
                },
            );
        }
        if data.has_remaining() {
            return Err(bad("trailing bytes"));
        }
        Ok(kv)
    }
}

fn put_entry(b: &mut BytesMut, key: &str, e: &Entry) {
    put_str(b, key);
    put_bytes(b, &e.value);
    b.put_u64_le(e.create_revision);
    b.put_u64_le(e.mod_revision);
    b.put_u64_le(e.version);
}

fn put_str(b: &mut BytesMut, s: &str) {
    put_bytes(b, s.as_bytes());
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_u32_le(v.len() as u32);
    b.put_slice(v);
}

fn put_condition(b: &mut BytesMut, c: &Option<Precondition>) {
    match c {
        None => b.put_u8(0),
        Some(Precondition::ModRevision(rev)) => {
            b.put_u8(1);
            b.put_u64_le(*rev);
        }
        Some(Precondition::Absent) => b.put_u8(2),
        Some(Precondition::Present) => b.put_u8(3),
    }
}

fn take_condition(data: &mut Bytes) -> Option<Option<Precondition>> {
    match take_u8(data)? {
        0 => Some(None),
        1 => Some(Some(Precondition::ModRevision(take_u64(data)?))),
        2 => Some(Some(Precondition::Absent)),
        3 => Some(Some(Precondition::Present)),
        _ => None,
    }
}

fn take_u8(data: &mut Bytes) -> Option<u8> {
    data.has_remaining().then(|| data.get_u8())
}

fn take_u32(data: &mut Bytes) -> Option<u32> {
    (data.remaining() >= 4).then(|| data.get_u32_le())
}

fn take_u64(data: &mut Bytes) -> Option<u64> {
    (data.remaining() >= 8).then(|| data.get_u64_le())
}

fn take_bytes(data: &mut Bytes) -> Option<Bytes> {
    let len = take_u32(data)? as usize;
    (data.remaining() >= len).then(|| data.split_to(len))
}

fn take_string(data: &mut Bytes) -> Option<String> {
    take_bytes(data).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(kv: &mut Kv, k: &str, v: &str) -> Outcome {
        kv.apply(Command::put(k.into(), b(v)), &mut Vec::new())
    }

    #[test]
    fn commands_round_trip() {
        let cmds = vec![
            Command::put("a/b c".into(), b("hello")),
            Command::Put {
                key: "k".into(),
                value: b(""),
                condition: Some(Precondition::ModRevision(7)),
            },
            Command::Delete {
                key: "k".into(),
                condition: Some(Precondition::Absent),
            },
            Command::DeletePrefix {
                prefix: "p/".into(),
            },
            Command::Txn {
                compares: vec![
                    Compare {
                        key: "x".into(),
                        op: CompareOp::Equal,
                        target: CompareTarget::Value(b("1")),
                    },
                    Compare {
                        key: "y".into(),
                        op: CompareOp::Less,
                        target: CompareTarget::ModRevision(3),
                    },
                    Compare {
                        key: "z".into(),
                        op: CompareOp::Greater,
                        target: CompareTarget::Version(1),
                    },
                    Compare {
                        key: "w".into(),
                        op: CompareOp::NotEqual,
                        target: CompareTarget::Exists(true),
                    },
                ],
                success: vec![TxnOp::Put {
                    key: "x".into(),
                    value: b("2"),
                }],
                failure: vec![TxnOp::Delete { key: "x".into() }],
            },
        ];
        for cmd in cmds {
            let encoded = cmd.encode();
            assert_eq!(Command::decode(encoded.clone()).unwrap(), cmd);
            // Any truncation is refused or decodes to something else, never panics.
            for cut in 0..encoded.len() {
                let _ = Command::decode(encoded.slice(..cut));
            }
        }
        assert!(Command::decode(Bytes::from_static(b"\x09abcd")).is_err());
        assert!(Command::decode(Bytes::from_static(b"\x01\x00\xff\0\0\0ab")).is_err());
    }

    #[test]
    fn revisions_and_versions() {
        let mut kv = Kv::default();
        assert_eq!(
            put(&mut kv, "x", "1"),
            Outcome::Done {
                revision: 1,
                changed: 1
            }
        );
        put(&mut kv, "y", "a");
        put(&mut kv, "x", "2");
        let x = kv.get("x").unwrap();
        assert_eq!((x.create_revision, x.mod_revision, x.version), (1, 3, 2));
        assert_eq!(kv.revision(), 3);
        // Deleting a missing key changes nothing, not even the revision.
        let out = kv.apply(
            Command::Delete {
                key: "nope".into(),
                condition: None,
            },
            &mut Vec::new(),
        );
        assert_eq!(
            out,
            Outcome::Done {
                revision: 3,
                changed: 0
            }
        );
        // Recreated keys start over.
        let mut events = Vec::new();
        kv.apply(
            Command::Delete {
                key: "x".into(),
                condition: None,
            },
            &mut events,
        );
        put(&mut kv, "x", "3");
        let x = kv.get("x").unwrap();
        assert_eq!((x.create_revision, x.mod_revision, x.version), (5, 5, 1));
        assert_eq!(
            events,
            vec![Event {
                revision: 4,
                key: "x".into(),
                value: None
            }]
        );
    }

    #[test]
    fn preconditions() {
        let mut kv = Kv::default();
        let mut ev = Vec::new();
        let absent = |k: &str, v: &str| Command::Put {
            key: k.into(),
            value: b(v),
            condition: Some(Precondition::Absent),
        };
        assert_eq!(
            kv.apply(absent("k", "1"), &mut ev),
            Outcome::Done {
                revision: 1,
                changed: 1
            }
        );
        assert_eq!(
            kv.apply(absent("k", "2"), &mut ev),
            Outcome::PreconditionFailed {
                current: 1,
                revision: 1
            }
        );
        let cas = |rev| Command::Put {
            key: "k".into(),
            value: b("cas"),
            condition: Some(Precondition::ModRevision(rev)),
        };
        assert_eq!(
            kv.apply(cas(9), &mut ev),
            Outcome::PreconditionFailed {
                current: 1,
                revision: 1
            }
        );
        assert_eq!(
            kv.apply(cas(1), &mut ev),
            Outcome::Done {
                revision: 2,
                changed: 1
            }
        );
        assert_eq!(kv.get("k").unwrap().value, b("cas"));
        // If-Match on a missing key fails with current 0.
        let del = Command::Delete {
            key: "gone".into(),
            condition: Some(Precondition::ModRevision(1)),
        };
        assert_eq!(
            kv.apply(del, &mut ev),
            Outcome::PreconditionFailed {
                current: 0,
                revision: 2
            }
        );
    }

    #[test]
    fn prefix_range_and_delete() {
        let mut kv = Kv::default();
        for k in ["a", "p/1", "p/2", "p/3", "q"] {
            put(&mut kv, k, k);
        }
        let keys: Vec<&String> = kv.range_from("p/", None).map(|(k, _)| k).collect();
        assert_eq!(keys, ["p/1", "p/2", "p/3"]);
        let keys: Vec<&String> = kv.range_from("p/", Some("p/1")).map(|(k, _)| k).collect();
        assert_eq!(keys, ["p/2", "p/3"]);
        let keys: Vec<&String> = kv.range_from("", Some("p/3")).map(|(k, _)| k).collect();
        assert_eq!(keys, ["q"]);
        let mut ev = Vec::new();
        let out = kv.apply(
            Command::DeletePrefix {
                prefix: "p/".into(),
            },
            &mut ev,
        );
        assert_eq!(
            out,
            Outcome::Done {
                revision: 6,
                changed: 3
            }
        );
        assert_eq!(ev.len(), 3);
        assert!(ev.iter().all(|e| e.revision == 6 && e.value.is_none()));
        assert_eq!(kv.len(), 2);
    }

    #[test]
    fn transactions_are_atomic() {
        let mut kv = Kv::default();
        put(&mut kv, "lock", "free");
        let take = Command::Txn {
            compares: vec![Compare {
                key: "lock".into(),
                op: CompareOp::Equal,
                target: CompareTarget::Value(b("free")),
            }],
            success: vec![
                TxnOp::Put {
                    key: "lock".into(),
                    value: b("held"),
                },
                TxnOp::Put {
                    key: "owner".into(),
                    value: b("me"),
                },
            ],
            failure: vec![],
        };
        let mut ev = Vec::new();
        assert_eq!(
            kv.apply(take.clone(), &mut ev),
            Outcome::Txn {
                succeeded: true,
                revision: 2
            }
        );
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|e| e.revision == 2));
        assert_eq!(
            kv.apply(take, &mut ev),
            Outcome::Txn {
                succeeded: false,
                revision: 2
            }
        );
        let missing = Compare {
            key: "nope".into(),
            op: CompareOp::Equal,
            target: CompareTarget::Exists(false),
        };
        assert!(kv.holds(&missing));
        let value_of_missing = Compare {
            key: "nope".into(),
            op: CompareOp::NotEqual,
            target: CompareTarget::Value(b("x")),
        };
        assert!(kv.holds(&value_of_missing));
    }

    #[test]
    fn snapshot_restore_keeps_everything() {
        let mut kv = Kv::with_members([(1, "http://127.0.0.1:1".to_string())].into());
        kv.add_member(2, Some("http://127.0.0.1:2".into()));
        kv.add_member(3, Some("http://127.0.0.1:3".into()));
        kv.remove_member(3);
        assert!(kv.is_removed(3));
        kv.add_member(2, None);
        assert_eq!(kv.members()[&2], "http://127.0.0.1:2");
        put(&mut kv, "x", "1");
        put(&mut kv, "y", "");
        put(&mut kv, "x", "2");
        let restored = Kv::restore(kv.snapshot()).unwrap();
        assert_eq!(restored, kv);
        assert_eq!(restored.data_bytes(), 3);
        let snap = kv.snapshot();
        for cut in 0..snap.len() {
            assert!(Kv::restore(snap.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    /// A snapshot serialized a slice at a time while keys are written, deleted, created and
    /// re-created captures exactly the state at its start, whatever the interleaving.
    #[test]
    fn a_snapshot_taken_in_steps_captures_the_state_at_its_start() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..30 {
            let mut kv = Kv::default();
            for i in 0..200 {
                if next(3) > 0 {
                    put(&mut kv, &format!("k{:03}", i), &format!("v{i}"));
                }
            }
            let expected = kv.snapshot();
            kv.begin_snapshot();
            let budget = 1 + next(40) as usize;
            let data = loop {
                // Between steps: writes and deletes anywhere, before or after the cursor.
                for _ in 0..next(20) {
                    let key = format!("k{:03}", next(220));
                    let cmd = if next(3) == 0 {
                        Command::Delete {
                            key,
                            condition: None,
                        }
                    } else {
                        Command::put(key, b(&format!("new{round}")))
                    };
                    kv.apply(cmd, &mut Vec::new());
                }
                if let Some(data) = kv.snapshot_step(budget) {
                    break data;
                }
            };
            assert_eq!(data, expected, "round {round}, budget {budget}");
            assert!(!kv.is_snapshotting());
            let restored = Kv::restore(data).unwrap();
            assert_eq!(restored.snapshot(), expected);
        }
    }
}
