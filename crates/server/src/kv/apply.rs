//! Applying one command: the rules of each, evaluated against the state at its log position
//! (see "Determinism" in [`super`]). Every check that can refuse a command runs before the
//! first change, so a refused command changes nothing.

use bytes::Bytes;

use super::command::{
    AlarmKind, Command, Compare, CompareOp, CompareTarget, Delete, DeleteRange, Event, KeyValue,
    LeaseId, OpResponse, Outcome, Precondition, Put, Refusal, Txn, TxnOp, TxnOutcome,
};
use super::mvcc::Written;
use super::range::KeyRange;
use super::Kv;

impl Kv {
    /// Applies the command committed at log `index`; the changes it made are appended to
    /// `events`.
    pub fn apply(&mut self, index: u64, cmd: Command, events: &mut Vec<Event>) -> Outcome {
        match cmd {
            Command::Put(put) => self.apply_put(put, events),
            Command::Delete(delete) => self.apply_delete(delete, events),
            Command::DeleteRange(d) => self.apply_delete_range(&d, events),
            Command::Txn(txn) => self.apply_txn(txn, events),
            Command::Compact { revision } => self.apply_compact(revision),
            Command::LeaseGrant { id, ttl } => self.apply_grant(id, ttl, index),
            Command::LeaseRevoke { id } => self.revoke(id, events),
            Command::LeaseKeepAlive { id } => match self.leases.renew(id, index) {
                Some(ttl) => Outcome::LeaseRenewed { id, ttl },
                None => Outcome::Refused(Refusal::LeaseNotFound(id)),
            },
            Command::LeaseExpire { id, renewed_at } => match self.leases.get(id) {
                None => Outcome::Refused(Refusal::LeaseNotFound(id)),
                Some(l) if l.renewed_at != renewed_at => Outcome::LeaseStillAlive { id },
                Some(_) => self.revoke(id, events),
            },
            Command::Alarm { alarm, active } => {
                match active {
                    true => self.alarms.insert(alarm),
                    false => self.alarms.remove(&alarm),
                };
                Outcome::Alarms(self.alarms.iter().copied().collect())
            }
            Command::PublishMember { id, attributes } => {
                let member = self.members.contains_key(&id);
                if member {
                    self.attributes.insert(id, attributes);
                }
                Outcome::MemberPublished { member }
            }
        }
    }

    /// True while a NOSPACE alarm is raised.
    fn no_space(&self) -> bool {
        self.alarms.iter().any(|a| a.kind == AlarmKind::NoSpace)
    }

    fn apply_put(&mut self, put: Put, events: &mut Vec<Event>) -> Outcome {
        if let Some(current) = self.failed_precondition(&put.key, put.condition) {
            return self.precondition_failed(current);
        }
        // Whether the key exists matters only to a put that keeps its value or lease: no
        // lookup for the others (every write runs this on the raft loop).
        let keeps = put.ignore_value || put.ignore_lease;
        let exists = keeps && self.history.current(&put.key).is_some();
        if let Err(refusal) = self.check_put(&put, exists) {
            return Outcome::Refused(refusal);
        }
        let revision = self.history.bump();
        let prev = self.put(put, events);
        Outcome::Put { revision, prev }
    }

    fn apply_delete(&mut self, delete: Delete, events: &mut Vec<Event>) -> Outcome {
        if let Some(current) = self.failed_precondition(&delete.key, delete.condition) {
            return self.precondition_failed(current);
        }
        let d = DeleteRange {
            range: KeyRange::Key(delete.key),
            prev_kv: true,
        };
        self.apply_delete_range(&d, events)
    }

    /// A delete of its own (not in a transaction): in the next revision, if anything goes.
    fn apply_delete_range(&mut self, d: &DeleteRange, events: &mut Vec<Event>) -> Outcome {
        let revision = self.history.revision() + 1;
        let (deleted, prev) = self.delete_range(d, revision, events);
        Outcome::Deleted {
            revision: self.history.revision(),
            deleted,
            prev,
        }
    }

    fn precondition_failed(&self, current: u64) -> Outcome {
        Outcome::PreconditionFailed {
            current,
            revision: self.history.revision(),
        }
    }

    /// `Some(current mod_revision)` if the precondition does not hold.
    fn failed_precondition(&self, key: &[u8], condition: Option<Precondition>) -> Option<u64> {
        let condition = condition?;
        let current = self.history.current(key).map_or(0, |e| e.mod_revision);
        let holds = match condition {
            Precondition::ModRevision(rev) => current != 0 && current == rev,
            Precondition::Absent => current == 0,
            Precondition::Present => current != 0,
        };
        (!holds).then_some(current)
    }

    /// Why a put cannot apply, if it cannot; `exists` (whether the key exists before it) is
    /// read only for a put that keeps the key's value or lease.
    fn check_put(&self, put: &Put, exists: bool) -> Result<(), Refusal> {
        if self.no_space() {
            return Err(Refusal::NoSpace);
        }
        if (put.ignore_value || put.ignore_lease) && !exists {
            return Err(Refusal::KeyNotFound);
        }
        if !put.ignore_lease && put.lease != 0 && !self.leases.contains(put.lease) {
            return Err(Refusal::LeaseNotFound(put.lease));
        }
        Ok(())
    }

    /// Writes a checked put at the current revision; returns the key before.
    fn put(&mut self, put: Put, events: &mut Vec<Event>) -> Option<KeyValue> {
        // Only a put that keeps the key's value or lease looks it up first (a put is one
        // lookup otherwise: this runs on the raft loop for every write).
        let (value, lease) = match put.ignore_value || put.ignore_lease {
            false => (put.value, put.lease),
            true => {
                let before = self.history.current(&put.key);
                let value = match (&before, put.ignore_value) {
                    (Some(b), true) => b.value.clone(),
                    _ => put.value,
                };
                let lease = match (&before, put.ignore_lease) {
                    (Some(b), true) => b.lease,
                    _ => put.lease,
                };
                (value, lease)
            }
        };
        let Written { kv, prev, rewrite } = self.history.put(put.key, value, lease);
        self.leases
            .reattach(&kv.key, prev.as_ref().map_or(0, |p| p.lease), lease);
        let event = Event {
            kv,
            deleted: false,
            prev: prev.clone(),
        };
        publish(events, event, rewrite);
        prev
    }

    /// Deletes the keys of a range in `revision` (bumping the store's revision to it if any
    /// existed); returns how many, and them if asked.
    fn delete_range(
        &mut self,
        d: &DeleteRange,
        revision: u64,
        events: &mut Vec<Event>,
    ) -> (u64, Vec<KeyValue>) {
        let keys: Vec<Bytes> = self
            .history
            .scan(&d.range, self.history.revision())
            .map(|kv| kv.key)
            .collect();
        if keys.is_empty() {
            return (0, Vec::new());
        }
        if self.history.revision() < revision {
            self.history.bump();
        }
        let mut prevs = Vec::new();
        for key in &keys {
            if let Some(prev) = self.delete_key(key, events) {
                if d.prev_kv {
                    prevs.push(prev);
                }
            }
        }
        (keys.len() as u64, prevs)
    }

    /// Deletes one key at the current revision, detaching it from its lease.
    fn delete_key(&mut self, key: &[u8], events: &mut Vec<Event>) -> Option<KeyValue> {
        let (prev, rewrite) = self.history.delete(key)?;
        self.leases.reattach(&prev.key, prev.lease, 0);
        let event = Event {
            kv: KeyValue {
                key: prev.key.clone(),
                mod_revision: self.history.revision(),
                ..KeyValue::default()
            },
            deleted: true,
            prev: Some(prev.clone()),
        };
        publish(events, event, rewrite);
        Some(prev)
    }

    fn apply_compact(&mut self, revision: u64) -> Outcome {
        let compacted = self.history.compact_revision();
        if revision <= compacted {
            return Outcome::Refused(Refusal::Compacted {
                compact_revision: compacted,
            });
        }
        if revision > self.history.revision() {
            return Outcome::Refused(Refusal::FutureRevision {
                current: self.history.revision(),
            });
        }
        self.history.compact(revision);
        Outcome::Compacted { revision }
    }

    fn apply_grant(&mut self, id: LeaseId, ttl: i64, index: u64) -> Outcome {
        if self.no_space() {
            return Outcome::Refused(Refusal::NoSpace);
        }
        // 0 means "no lease" in a put: no lease can have it (etcd's lessor refuses it too).
        if id == 0 {
            return Outcome::Refused(Refusal::LeaseNotFound(id));
        }
        if self.leases.contains(id) {
            return Outcome::Refused(Refusal::LeaseExists(id));
        }
        self.leases.grant(id, ttl, index);
        Outcome::LeaseGranted { id, ttl }
    }

    /// Deletes a lease and, in one revision, every key attached to it.
    fn revoke(&mut self, id: LeaseId, events: &mut Vec<Event>) -> Outcome {
        let Some(lease) = self.leases.remove(id) else {
            return Outcome::Refused(Refusal::LeaseNotFound(id));
        };
        if !lease.keys.is_empty() {
            self.history.bump();
        }
        let mut deleted = 0;
        for key in &lease.keys {
            if self.delete_key(key, events).is_some() {
                deleted += 1;
            }
        }
        Outcome::LeaseRevoked {
            id,
            revision: self.history.revision(),
            deleted,
        }
    }

    fn apply_txn(&mut self, txn: Txn, events: &mut Vec<Event>) -> Outcome {
        // Every compare on the path is decided against the state before the transaction,
        // then the path is checked, then run (etcd's order).
        let mut path = Vec::new();
        self.decide(&txn, &mut path);
        if let Err(refusal) = self.check_path(&txn, &path, &mut 0, &mut Vec::new()) {
            return Outcome::Refused(refusal);
        }
        let revision = self.history.revision() + 1;
        let before = self.history.revision();
        let out = self.run(txn, &path, &mut 0, revision, events);
        debug_assert!(self.history.revision() == before || self.history.revision() == revision);
        Outcome::Txn(out)
    }

    /// Appends, depth first, whether each transaction on the taken path succeeds.
    fn decide(&self, txn: &Txn, path: &mut Vec<bool>) {
        let succeeded = txn.compares.iter().all(|c| self.holds(c));
        path.push(succeeded);
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            if let TxnOp::Txn(nested) = op {
                self.decide(nested, path);
            }
        }
    }

    /// Why the taken path cannot run, if it cannot. `written` collects the path's writes in
    /// order: a put is checked against the keys as the earlier ones left them (a key deleted
    /// earlier in the transaction has no value or lease to keep).
    fn check_path<'a>(
        &self,
        txn: &'a Txn,
        path: &[bool],
        at: &mut usize,
        written: &mut Vec<&'a TxnOp>,
    ) -> Result<(), Refusal> {
        let succeeded = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        if self.no_space() && writes(txn) {
            return Err(Refusal::NoSpace);
        }
        for op in ops {
            match op {
                TxnOp::Put(put) => {
                    let keeps = put.ignore_value || put.ignore_lease;
                    let exists = keeps && self.exists_after(&put.key, written);
                    self.check_put(put, exists)?;
                    written.push(op);
                }
                TxnOp::Range(q) => {
                    self.history.readable(q.revision)?;
                }
                TxnOp::Txn(nested) => self.check_path(nested, path, at, written)?,
                TxnOp::Delete(_) => written.push(op),
            }
        }
        Ok(())
    }

    /// Whether `key` exists after the writes of a transaction so far.
    fn exists_after(&self, key: &[u8], written: &[&TxnOp]) -> bool {
        for op in written.iter().rev() {
            match op {
                TxnOp::Put(p) if p.key == key => return true,
                TxnOp::Delete(d) if d.range.contains(key) => return false,
                _ => {}
            }
        }
        self.history.current(key).is_some()
    }

    /// Runs the taken path; every write goes in `revision`.
    fn run(
        &mut self,
        txn: Txn,
        path: &[bool],
        at: &mut usize,
        revision: u64,
        events: &mut Vec<Event>,
    ) -> TxnOutcome {
        let succeeded = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if succeeded { txn.success } else { txn.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op {
                TxnOp::Put(put) => {
                    if self.history.revision() < revision {
                        self.history.bump();
                    }
                    OpResponse::Put {
                        prev: self.put(put, events),
                    }
                }
                TxnOp::Delete(d) => {
                    let (deleted, prev) = self.delete_range(&d, revision, events);
                    OpResponse::Delete { deleted, prev }
                }
                TxnOp::Range(q) => match self.history.readable(q.revision) {
                    Ok(r) => OpResponse::Range(self.history.range(&q, r)),
                    // Checked before the first write; unreachable, but never a panic.
                    Err(_) => OpResponse::Range(self.history.range(&q, self.history.revision())),
                },
                TxnOp::Txn(nested) => OpResponse::Txn(self.run(nested, path, at, revision, events)),
            };
            responses.push(response);
        }
        TxnOutcome {
            succeeded,
            revision: self.history.revision(),
            responses,
        }
    }

    /// Whether a compare holds: for a range, for every key in it; a range without keys
    /// compares like an absent key (etcd's rule).
    fn holds(&self, c: &Compare) -> bool {
        match &c.range {
            KeyRange::Key(key) => holds_for(self.history.current(key).as_ref(), c),
            range => {
                let mut kvs = self.history.scan(range, self.history.revision()).peekable();
                match kvs.peek() {
                    None => holds_for(None, c),
                    Some(_) => kvs.all(|kv| holds_for(Some(&kv), c)),
                }
            }
        }
    }
}

/// Publishes a change. A second write of one key in one transaction (`rewrite`) replaces
/// the first's event, as the history replaced its version: watchers see one event per key
/// and revision, with the key as it was before the transaction, live or caught up later.
fn publish(events: &mut Vec<Event>, event: Event, rewrite: bool) {
    let revision = event.revision();
    let earlier = match rewrite {
        true => events
            .iter_mut()
            .rev()
            .take_while(|e| e.revision() == revision)
            .find(|e| e.kv.key == event.kv.key),
        false => None,
    };
    match earlier {
        Some(e) => {
            let prev = e.prev.take();
            *e = Event { prev, ..event };
        }
        None => events.push(event),
    }
}

/// Whether a compare holds for one key (`None`: absent, compared as etcd compares it: every
/// number 0, no value).
fn holds_for(kv: Option<&KeyValue>, c: &Compare) -> bool {
    let ord = match &c.target {
        CompareTarget::Value(v) => match kv {
            Some(kv) => kv.value.as_ref().cmp(v.as_ref()),
            // etcd: "nil == empty string in grpc; no way to represent missing value".
            None => return false,
        },
        CompareTarget::ValueOrMissing(v) => match kv {
            Some(kv) => kv.value.as_ref().cmp(v.as_ref()),
            None => return c.op == CompareOp::NotEqual,
        },
        CompareTarget::ModRevision(r) => kv.map_or(0, |e| e.mod_revision).cmp(r),
        CompareTarget::CreateRevision(r) => kv.map_or(0, |e| e.create_revision).cmp(r),
        CompareTarget::Version(v) => kv.map_or(0, |e| e.version).cmp(v),
        CompareTarget::Lease(l) => kv.map_or(0, |e| e.lease).cmp(l),
        CompareTarget::Exists(want) => kv.is_some().cmp(want),
    };
    match c.op {
        CompareOp::Equal => ord.is_eq(),
        CompareOp::NotEqual => ord.is_ne(),
        CompareOp::Greater => ord.is_gt(),
        CompareOp::Less => ord.is_lt(),
    }
}

/// Whether a transaction has a write in either branch, at any depth (etcd's capped applier
/// refuses such a transaction under NOSPACE whichever branch runs).
fn writes(txn: &Txn) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        TxnOp::Put(_) | TxnOp::Delete(_) => true,
        TxnOp::Range(_) => false,
        TxnOp::Txn(nested) => writes(nested),
    })
}
