//! [`KvService`]: reads and writes of keys, one typed request and response per command.
//!
//! Writes become log commands ([`Command`]) here and nowhere else, and what applying one did
//! ([`Outcome`]) is decoded here, once, by a small pure function per command. A front-end
//! never sees either. A refused command (a failed precondition, a missing lease, a compacted
//! revision, the NOSPACE alarm) is an error, sorted once in `node.rs`.
//!
//! An absent key is an answer, not an error: a get returns no entry and a delete reports
//! zero keys deleted (as etcd's Range and DeleteRange do); the REST front-end shows both as
//! 404.

use std::sync::Arc;

use bytes::Bytes;

use crate::kv::{
    Alarm, AlarmKind, Command, Delete, DeleteRange, KeyValue, Outcome, Put, RangeQuery,
    RangeResult, Refusal, Txn, TxnOp, TxnOutcome,
};
use crate::quota::Quota;

use super::error::{Internal, ServiceError};
use super::node::{Consistency, Query, Raft, ReadResult};

/// Bytes of keys and values at which a page of a range read stops (with `more: true`; a page
/// always holds at least one key), so one read's answer stays bounded in memory.
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// Reads and writes keys through raft.
#[derive(Clone)]
pub struct KvService {
    raft: Raft,
    quota: Arc<Quota>,
    /// This node's member id (the raiser of the alarms it raises).
    member: u64,
}

/// A put was applied: `revision` is the store revision it created (the key's new
/// `mod_revision`); `prev` is the key before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResponse {
    pub revision: u64,
    pub prev: Option<KeyValue>,
}

/// Read one key at `revision` (0: the current one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetRequest {
    pub key: Bytes,
    pub revision: u64,
    pub consistency: Consistency,
}

/// The key (`None`: absent), read when the store was at revision `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResponse {
    pub revision: u64,
    pub kv: Option<KeyValue>,
}

/// A range read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRequest {
    pub query: RangeQuery,
    pub consistency: Consistency,
}

/// A delete was applied at `revision`; `deleted` is 0 if the key was absent, else 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteResponse {
    pub revision: u64,
    pub deleted: u64,
    pub prev: Option<KeyValue>,
}

/// A range delete was applied at `revision`, removing `deleted` keys (`prev`: them, if
/// asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub revision: u64,
    pub deleted: u64,
    pub prev: Vec<KeyValue>,
}

impl KvService {
    pub(super) fn new(raft: Raft, quota: Arc<Quota>, member: u64) -> KvService {
        KvService {
            raft,
            quota,
            member,
        }
    }

    pub async fn put(&self, put: Put) -> Result<PutResponse, ServiceError> {
        self.check_quota((put.key.len() + put.value.len()) as u64)
            .await?;
        put_response(self.raft.propose(&Command::Put(put)).await?)
    }

    /// Refuses a write of `bytes` that would take the store above its quota, raising the
    /// NOSPACE alarm (once applied, every replica refuses growing writes until it is cleared).
    async fn check_quota(&self, bytes: u64) -> Result<(), ServiceError> {
        if !self.quota.exceeded_by(bytes) {
            return Ok(());
        }
        tracing::warn!(
            used = self.quota.used(),
            quota = self.quota.limit(),
            "the store is above its quota; raising the NOSPACE alarm"
        );
        self.set_alarm(self.no_space_alarm(), true).await?;
        Err(Refusal::NoSpace.into())
    }

    fn no_space_alarm(&self) -> Alarm {
        Alarm {
            member: self.member,
            kind: AlarmKind::NoSpace,
        }
    }

    /// Raises (`active`) or clears an alarm; returns the alarms raised after it.
    pub async fn set_alarm(&self, alarm: Alarm, active: bool) -> Result<Vec<Alarm>, ServiceError> {
        match self.raft.propose(&Command::Alarm { alarm, active }).await? {
            Outcome::Alarms(alarms) => Ok(alarms),
            other => Err(unexpected("an alarm", other)),
        }
    }

    /// Clears every alarm of `kind` (etcd's disarm); returns the alarms raised after it.
    pub async fn disarm(&self, kind: AlarmKind) -> Result<Vec<Alarm>, ServiceError> {
        let (raised, _) = self.alarms().await?;
        let mut left = raised.clone();
        for alarm in raised.into_iter().filter(|a| a.kind == kind) {
            left = self.set_alarm(alarm, false).await?;
        }
        Ok(left)
    }

    /// The alarms raised, and the store revision.
    pub async fn alarms(&self) -> Result<(Vec<Alarm>, u64), ServiceError> {
        match self
            .raft
            .read(Query::Alarms, Consistency::Linearizable)
            .await?
        {
            ReadResult::Alarms(alarms, revision) => Ok((alarms, revision)),
            other => Err(unexpected_read("an alarm read", other)),
        }
    }

    pub async fn get(&self, req: GetRequest) -> Result<GetResponse, ServiceError> {
        let query = RangeQuery {
            revision: req.revision,
            ..RangeQuery::key(req.key)
        };
        let read = self.range_query(query, req.consistency).await?;
        Ok(GetResponse {
            revision: read.revision,
            kv: read.kvs.into_iter().next(),
        })
    }

    /// A range read; its page stops at [`MAX_PAGE_BYTES`] at most.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResult, ServiceError> {
        let mut query = req.query;
        query.max_bytes = query.max_bytes.min(MAX_PAGE_BYTES);
        self.range_query(query, req.consistency).await
    }

    /// A range read whose answer is bounded by `max_bytes`, not by [`MAX_PAGE_BYTES`] (etcd's
    /// Range answers every key asked for: its clients do not page unless they set a limit).
    pub async fn range_within(
        &self,
        req: RangeRequest,
        max_bytes: usize,
    ) -> Result<RangeResult, ServiceError> {
        let mut query = req.query;
        query.max_bytes = query.max_bytes.min(max_bytes);
        self.range_query(query, req.consistency).await
    }

    async fn range_query(
        &self,
        query: RangeQuery,
        consistency: Consistency,
    ) -> Result<RangeResult, ServiceError> {
        match self.raft.read(Query::Range(query), consistency).await? {
            ReadResult::Range(result) => Ok(result?),
            other => Err(unexpected_read("a range read", other)),
        }
    }

    pub async fn delete(&self, delete: Delete) -> Result<DeleteResponse, ServiceError> {
        match self.raft.propose(&Command::Delete(delete)).await? {
            Outcome::Deleted {
                revision,
                deleted,
                prev,
            } => Ok(DeleteResponse {
                revision,
                deleted,
                prev: prev.into_iter().next(),
            }),
            other => Err(unexpected("a delete", other)),
        }
    }

    pub async fn delete_range(&self, d: DeleteRange) -> Result<DeleteRangeResponse, ServiceError> {
        delete_range_response(self.raft.propose(&Command::DeleteRange(d)).await?)
    }

    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome, ServiceError> {
        let written = txn_bytes(&txn);
        if written > 0 {
            self.check_quota(written).await?;
        }
        match self.raft.propose(&Command::Txn(txn)).await? {
            Outcome::Txn(out) => Ok(out),
            other => Err(unexpected("a transaction", other)),
        }
    }

    /// This node's hash of the history readable up to `revision` (0: the current one), equal
    /// on every replica at the same revision: `(hash, revision, compact revision)`. Read from
    /// this node's applied state, as etcd's HashKV is.
    pub async fn hash(&self, revision: u64) -> Result<(u32, u64, u64), ServiceError> {
        match self
            .raft
            .read(Query::Hash(revision), Consistency::Serializable)
            .await?
        {
            ReadResult::Hash(hash, compacted) => {
                let (hash, revision) = hash?;
                Ok((hash, revision, compacted))
            }
            other => Err(unexpected_read("a hash", other)),
        }
    }

    /// Compacts the history: revisions before `revision` become unreadable on every node.
    pub async fn compact(&self, revision: u64) -> Result<u64, ServiceError> {
        match self.raft.propose(&Command::Compact { revision }).await? {
            Outcome::Compacted { revision } => Ok(revision),
            other => Err(unexpected("a compaction", other)),
        }
    }
}

pub(super) fn unexpected(command: &'static str, outcome: Outcome) -> ServiceError {
    Internal::UnexpectedOutcome {
        command,
        outcome: format!("{outcome:?}"),
    }
    .into()
}

pub(super) fn unexpected_read(query: &'static str, read: ReadResult) -> ServiceError {
    Internal::UnexpectedOutcome {
        command: query,
        outcome: format!("{read:?}"),
    }
    .into()
}

/// Bytes of keys and values a transaction's puts may write (either branch).
fn txn_bytes(txn: &Txn) -> u64 {
    txn.success
        .iter()
        .chain(&txn.failure)
        .map(|op| match op {
            TxnOp::Put(p) => (p.key.len() + p.value.len()) as u64,
            TxnOp::Txn(nested) => txn_bytes(nested),
            TxnOp::Delete(_) | TxnOp::Range(_) => 0,
        })
        .sum()
}

/// What applying a put did.
fn put_response(outcome: Outcome) -> Result<PutResponse, ServiceError> {
    match outcome {
        Outcome::Put { revision, prev } => Ok(PutResponse { revision, prev }),
        other => Err(unexpected("a put", other)),
    }
}

/// What applying a range delete did.
fn delete_range_response(outcome: Outcome) -> Result<DeleteRangeResponse, ServiceError> {
    match outcome {
        Outcome::Deleted {
            revision,
            deleted,
            prev,
        } => Ok(DeleteRangeResponse {
            revision,
            deleted,
            prev,
        }),
        other => Err(unexpected("a range delete", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_of_another_command_are_internal_errors() {
        let txn = Outcome::Txn(TxnOutcome {
            succeeded: true,
            revision: 7,
            responses: Vec::new(),
        });
        assert_eq!(
            put_response(Outcome::Put {
                revision: 7,
                prev: None
            })
            .ok(),
            Some(PutResponse {
                revision: 7,
                prev: None
            })
        );
        let e = put_response(txn.clone()).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.starts_with("unexpected outcome of a put: Txn")),
            "{e:?}"
        );
        assert!(matches!(
            delete_range_response(txn),
            Err(ServiceError::Internal(Internal::UnexpectedOutcome { .. }))
        ));
    }
}
