//! [`KvService`]: reads and writes of keys, one typed request and response per command.
//!
//! Writes become log commands ([`Command`]) here and nowhere else, and what applying one did
//! ([`Outcome`]) is decoded here, once, by a small pure function per command. A front-end
//! never sees either.
//!
//! An absent key is an answer, not an error: a get returns no entry and a delete reports
//! zero keys deleted (as etcd's Range and DeleteRange do); the REST front-end shows both as
//! 404. A failed precondition is an error ([`Rejection::PreconditionFailed`]): the write was
//! not applied.

use bytes::Bytes;

use crate::kv::{Command, Compare, Entry, Outcome, Precondition, TxnOp};

use super::error::{Internal, Rejection, ServiceError};
use super::node::{Consistency, Query, Raft};

/// Bytes of keys and values at which a page of a range read stops (with `more: true`; a page
/// always holds at least one key), so one read's answer stays bounded in memory.
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// Reads and writes keys through raft.
#[derive(Clone)]
pub struct KvService {
    raft: Raft,
}

/// Write `value` under `key`, if `condition` (if any) holds when the write is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutRequest {
    pub key: String,
    pub value: Bytes,
    pub condition: Option<Precondition>,
}

/// A put was applied: `revision` is the store revision it created (the key's new
/// `mod_revision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutResponse {
    pub revision: u64,
}

/// Read one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetRequest {
    pub key: String,
    pub consistency: Consistency,
}

/// The key's entry (`None`: absent), read at store revision `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResponse {
    pub revision: u64,
    pub entry: Option<Entry>,
}

/// Read the keys under `prefix` in key order, after `start_after`, at most `limit` of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRequest {
    pub prefix: String,
    pub start_after: Option<String>,
    pub limit: usize,
    pub consistency: Consistency,
}

/// One page of a range read at store revision `revision`; `more`: keys follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    pub revision: u64,
    pub kvs: Vec<(String, Entry)>,
    pub more: bool,
}

/// Delete one key, if `condition` (if any) holds when the delete is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRequest {
    pub key: String,
    pub condition: Option<Precondition>,
}

/// A delete was applied at `revision`; `deleted` is 0 if the key was absent, else 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteResponse {
    pub revision: u64,
    pub deleted: u64,
}

/// Delete every key under `prefix` (all keys if it is empty), in one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletePrefixRequest {
    pub prefix: String,
}

/// A prefix delete was applied at `revision`, removing `deleted` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeletePrefixResponse {
    pub revision: u64,
    pub deleted: u64,
}

/// Evaluate `compares` at apply time; apply `success` if all hold, else `failure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnRequest {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// Which branch of a transaction ran, and the store revision after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub revision: u64,
}

impl KvService {
    pub(super) fn new(raft: Raft) -> KvService {
        KvService { raft }
    }

    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, ServiceError> {
        let cmd = Command::Put {
            key: req.key,
            value: req.value,
            condition: req.condition,
        };
        put_response(self.raft.propose(&cmd).await?)
    }

    pub async fn get(&self, req: GetRequest) -> Result<GetResponse, ServiceError> {
        let read = self.raft.read(Query::Get(req.key), req.consistency).await?;
        Ok(GetResponse {
            revision: read.revision,
            entry: read.kvs.into_iter().next().map(|(_, e)| e),
        })
    }

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, ServiceError> {
        let query = Query::Range {
            prefix: req.prefix,
            start_after: req.start_after,
            limit: req.limit,
            max_bytes: MAX_PAGE_BYTES,
        };
        let read = self.raft.read(query, req.consistency).await?;
        Ok(RangeResponse {
            revision: read.revision,
            kvs: read.kvs,
            more: read.more,
        })
    }

    pub async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse, ServiceError> {
        let cmd = Command::Delete {
            key: req.key,
            condition: req.condition,
        };
        delete_response(self.raft.propose(&cmd).await?)
    }

    pub async fn delete_prefix(
        &self,
        req: DeletePrefixRequest,
    ) -> Result<DeletePrefixResponse, ServiceError> {
        let cmd = Command::DeletePrefix { prefix: req.prefix };
        delete_prefix_response(self.raft.propose(&cmd).await?)
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, ServiceError> {
        let cmd = Command::Txn {
            compares: req.compares,
            success: req.success,
            failure: req.failure,
        };
        txn_response(self.raft.propose(&cmd).await?)
    }
}

fn unexpected(command: &'static str, outcome: Outcome) -> ServiceError {
    Internal::UnexpectedOutcome {
        command,
        outcome: format!("{outcome:?}"),
    }
    .into()
}

fn precondition_failed(current: u64, revision: u64) -> ServiceError {
    Rejection::PreconditionFailed { current, revision }.into()
}

/// What applying a put did.
fn put_response(outcome: Outcome) -> Result<PutResponse, ServiceError> {
    match outcome {
        Outcome::Done { revision, .. } => Ok(PutResponse { revision }),
        Outcome::PreconditionFailed { current, revision } => {
            Err(precondition_failed(current, revision))
        }
        other => Err(unexpected("a put", other)),
    }
}

/// What applying a delete did.
fn delete_response(outcome: Outcome) -> Result<DeleteResponse, ServiceError> {
    match outcome {
        Outcome::Done { revision, changed } => Ok(DeleteResponse {
            revision,
            deleted: changed,
        }),
        Outcome::PreconditionFailed { current, revision } => {
            Err(precondition_failed(current, revision))
        }
        other => Err(unexpected("a delete", other)),
    }
}

/// What applying a prefix delete did (it has no condition).
fn delete_prefix_response(outcome: Outcome) -> Result<DeletePrefixResponse, ServiceError> {
    match outcome {
        Outcome::Done { revision, changed } => Ok(DeletePrefixResponse {
            revision,
            deleted: changed,
        }),
        other => Err(unexpected("a prefix delete", other)),
    }
}

/// What applying a transaction did.
fn txn_response(outcome: Outcome) -> Result<TxnResponse, ServiceError> {
    match outcome {
        Outcome::Txn {
            succeeded,
            revision,
        } => Ok(TxnResponse {
            succeeded,
            revision,
        }),
        other => Err(unexpected("a transaction", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: Outcome = Outcome::Done {
        revision: 7,
        changed: 1,
    };
    const FAILED: Outcome = Outcome::PreconditionFailed {
        current: 3,
        revision: 7,
    };
    const TXN: Outcome = Outcome::Txn {
        succeeded: true,
        revision: 7,
    };

    fn is_precondition_failed(r: Result<impl std::fmt::Debug, ServiceError>) -> bool {
        matches!(
            r,
            Err(ServiceError::Rejected(Rejection::PreconditionFailed {
                current: 3,
                revision: 7
            }))
        )
    }

    fn is_internal(r: Result<impl std::fmt::Debug, ServiceError>) -> bool {
        matches!(
            r,
            Err(ServiceError::Internal(Internal::UnexpectedOutcome { .. }))
        )
    }

    #[test]
    fn puts() {
        assert_eq!(put_response(DONE).ok(), Some(PutResponse { revision: 7 }));
        assert!(is_precondition_failed(put_response(FAILED)));
        assert!(is_internal(put_response(TXN)));
    }

    #[test]
    fn deletes() {
        let absent = Outcome::Done {
            revision: 7,
            changed: 0,
        };
        assert_eq!(
            delete_response(absent).ok(),
            Some(DeleteResponse {
                revision: 7,
                deleted: 0
            })
        );
        assert_eq!(delete_response(DONE).ok().map(|r| r.deleted), Some(1));
        assert!(is_precondition_failed(delete_response(FAILED)));
        assert!(is_internal(delete_response(TXN)));
    }

    #[test]
    fn prefix_deletes() {
        let many = Outcome::Done {
            revision: 9,
            changed: 12,
        };
        assert_eq!(
            delete_prefix_response(many).ok(),
            Some(DeletePrefixResponse {
                revision: 9,
                deleted: 12
            })
        );
        assert!(is_internal(delete_prefix_response(FAILED)));
        assert!(is_internal(delete_prefix_response(TXN)));
    }

    #[test]
    fn transactions() {
        assert_eq!(
            txn_response(TXN).ok(),
            Some(TxnResponse {
                succeeded: true,
                revision: 7
            })
        );
        assert!(is_internal(txn_response(DONE)));
        assert!(is_internal(txn_response(FAILED)));
        let e = txn_response(DONE).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("unexpected outcome of a transaction: Done { revision: 7, changed: 1 }")
        );
    }
}
