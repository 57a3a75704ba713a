//! etcd's KV service (Range, Put, DeleteRange, Txn, Compact) over [`KvService`]: each call
//! translates etcd's request into the service's, checks what etcd's API layer checks (an
//! empty key, `ignore_value` with a value, a transaction's size and duplicate keys), and
//! renders the answer with its header. No KV logic lives here.

use bytes::Bytes;
use coordinate_etcd_api::etcdserverpb as pb;
use coordinate_etcd_api::etcdserverpb::kv_server::Kv;
use coordinate_etcd_api::mvccpb;
use tonic::{Request, Response, Status};

use super::status::{self, DUPLICATE_KEY, EMPTY_KEY, LEASE_PROVIDED, TOO_MANY_OPS, VALUE_PROVIDED};
use super::Grpc;
use crate::kv::{
    Compare, CompareOp, CompareTarget, DeleteRange, KeyRange, KeyValue, OpResponse, Put,
    RangeQuery, RangeResult, SortOrder, SortTarget, Txn, TxnOp, TxnOutcome,
};
use crate::service::{Consistency, RangeRequest};

/// Operations one transaction may hold, nested ones included (etcd's `--max-txn-ops`
/// default).
pub const MAX_TXN_OPS: usize = 128;
/// Bytes of keys and values one Range answer holds at most. etcd answers every key asked for;
/// past this, coordinate refuses rather than hand back part of the range.
pub const MAX_RANGE_BYTES: usize = 512 << 20;

#[tonic::async_trait]
impl Kv for Grpc {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let req = request.into_inner();
        let consistency = match req.serializable {
            true => Consistency::Serializable,
            false => Consistency::Linearizable,
        };
        let query = range_query(req)?;
        let limit = query.limit;
        let result = self
            .services
            .kv
            .range_within(RangeRequest { query, consistency }, MAX_RANGE_BYTES)
            .await
            .map_err(status::status)?;
        if result.more && (limit == 0 || result.kvs.len() < limit) {
            return Err(Status::resource_exhausted(format!(
                "etcdserver: the range holds more than {} MiB; read it in pages (a limit)",
                MAX_RANGE_BYTES >> 20
            )));
        }
        let header = self.header(result.revision);
        Ok(Response::new(range_response(header, result)))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let req = request.into_inner();
        let want_prev = req.prev_kv;
        let put = put(req)?;
        let done = self.services.kv.put(put).await.map_err(status::status)?;
        Ok(Response::new(pb::PutResponse {
            header: Some(self.header(done.revision)),
            prev_kv: done.prev.filter(|_| want_prev).map(kv),
        }))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let delete = delete_range(request.into_inner())?;
        let done = self
            .services
            .kv
            .delete_range(delete)
            .await
            .map_err(status::status)?;
        Ok(Response::new(pb::DeleteRangeResponse {
            header: Some(self.header(done.revision)),
            deleted: done.deleted as i64,
            prev_kvs: done.prev.into_iter().map(kv).collect(),
        }))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let req = request.into_inner();
        check_txn(&req)?;
        let wanted = prev_wanted(&req);
        let txn = txn(req)?;
        let out = self.services.kv.txn(txn).await.map_err(status::status)?;
        let header = self.header(out.revision);
        Ok(Response::new(txn_response(header, out, &wanted)))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let revision = request.into_inner().revision.max(0) as u64;
        self.services
            .kv
            .compact(revision)
            .await
            .map_err(status::status)?;
        // The header's revision is the store's, which a compaction does not change.
        Ok(Response::new(pb::CompactionResponse {
            header: Some(self.current_header()),
        }))
    }
}

fn non_empty(key: Vec<u8>) -> Result<Bytes, Status> {
    match key.is_empty() {
        true => Err(Status::invalid_argument(EMPTY_KEY)),
        false => Ok(Bytes::from(key)),
    }
}

/// etcd's range request as a query (its count is etcd's: every key of the range).
fn range_query(mut req: pb::RangeRequest) -> Result<RangeQuery, Status> {
    let key = non_empty(std::mem::take(&mut req.key))?;
    let sort_target = match req.sort_target() {
        pb::range_request::SortTarget::Key => SortTarget::Key,
        pb::range_request::SortTarget::Version => SortTarget::Version,
        pb::range_request::SortTarget::Create => SortTarget::CreateRevision,
        pb::range_request::SortTarget::Mod => SortTarget::ModRevision,
        pb::range_request::SortTarget::Value => SortTarget::Value,
    };
    let sort_order = match req.sort_order() {
        pb::range_request::SortOrder::None => SortOrder::None,
        pb::range_request::SortOrder::Ascend => SortOrder::Ascend,
        pb::range_request::SortOrder::Descend => SortOrder::Descend,
    };
    let positive = |v: i64| v.max(0) as u64;
    Ok(RangeQuery {
        revision: positive(req.revision),
        limit: positive(req.limit).try_into().unwrap_or(usize::MAX),
        keys_only: req.keys_only,
        count_only: req.count_only,
        count_all: true,
        sort_target,
        sort_order,
        min_mod_revision: positive(req.min_mod_revision),
        max_mod_revision: positive(req.max_mod_revision),
        min_create_revision: positive(req.min_create_revision),
        max_create_revision: positive(req.max_create_revision),
        ..RangeQuery::new(KeyRange::from_etcd(key, Bytes::from(req.range_end)))
    })
}

fn range_response(header: pb::ResponseHeader, r: RangeResult) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(kv).collect(),
        more: r.more,
        count: r.count as i64,
    }
}

fn put(req: pb::PutRequest) -> Result<Put, Status> {
    let key = non_empty(req.key)?;
    if req.ignore_value && !req.value.is_empty() {
        return Err(Status::invalid_argument(VALUE_PROVIDED));
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Status::invalid_argument(LEASE_PROVIDED));
    }
    Ok(Put {
        lease: req.lease,
        ignore_value: req.ignore_value,
        ignore_lease: req.ignore_lease,
        ..Put::new(key, Bytes::from(req.value))
    })
}

fn delete_range(req: pb::DeleteRangeRequest) -> Result<DeleteRange, Status> {
    let key = non_empty(req.key)?;
    Ok(DeleteRange {
        range: KeyRange::from_etcd(key, Bytes::from(req.range_end)),
        prev_kv: req.prev_kv,
    })
}

/// etcd's API-layer checks of a transaction: at most [`MAX_TXN_OPS`] operations per branch,
/// and no key written twice in the branch that may run (a put twice, or a put inside a
/// deleted range), nested transactions included.
fn check_txn(req: &pb::TxnRequest) -> Result<(), Status> {
    if req.compare.len() > MAX_TXN_OPS
        || req.success.len() > MAX_TXN_OPS
        || req.failure.len() > MAX_TXN_OPS
    {
        return Err(Status::invalid_argument(TOO_MANY_OPS));
    }
    for branch in [&req.success, &req.failure] {
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        writes(branch, &mut puts, &mut deletes)?;
        puts.sort();
        if puts.windows(2).any(|w| w[0] == w[1])
            || puts
                .iter()
                .any(|k| deletes.iter().any(|r: &KeyRange| r.contains(k)))
        {
            return Err(Status::invalid_argument(DUPLICATE_KEY));
        }
    }
    Ok(())
}

/// The keys a branch puts and the ranges it deletes, nested transactions' branches included.
fn writes(
    ops: &[pb::RequestOp],
    puts: &mut Vec<Vec<u8>>,
    deletes: &mut Vec<KeyRange>,
) -> Result<(), Status> {
    use pb::request_op::Request as Op;
    for op in ops {
        match &op.request {
            Some(Op::RequestPut(p)) => puts.push(p.key.clone()),
            Some(Op::RequestDeleteRange(d)) => deletes.push(KeyRange::from_etcd(
                Bytes::from(d.key.clone()),
                Bytes::from(d.range_end.clone()),
            )),
            Some(Op::RequestTxn(t)) => {
                check_txn(t)?;
                writes(&t.success, puts, deletes)?;
                writes(&t.failure, puts, deletes)?;
            }
            Some(Op::RequestRange(_)) | None => {}
        }
    }
    Ok(())
}

fn txn(req: pb::TxnRequest) -> Result<Txn, Status> {
    Ok(Txn {
        compares: req
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: ops(req.success)?,
        failure: ops(req.failure)?,
    })
}

fn ops(ops: Vec<pb::RequestOp>) -> Result<Vec<TxnOp>, Status> {
    use pb::request_op::Request as Op;
    ops.into_iter()
        .map(|op| match op.request {
            Some(Op::RequestRange(r)) => range_query(r).map(TxnOp::Range),
            Some(Op::RequestPut(p)) => put(p).map(TxnOp::Put),
            Some(Op::RequestDeleteRange(d)) => delete_range(d).map(TxnOp::Delete),
            Some(Op::RequestTxn(t)) => txn(t).map(TxnOp::Txn),
            None => Err(Status::invalid_argument(
                "etcdserver: a transaction operation holds no request",
            )),
        })
        .collect()
}

fn compare(mut c: pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{CompareResult, TargetUnion};
    let key = non_empty(std::mem::take(&mut c.key))?;
    let op = match c.result() {
        CompareResult::Equal => CompareOp::Equal,
        CompareResult::NotEqual => CompareOp::NotEqual,
        CompareResult::Greater => CompareOp::Greater,
        CompareResult::Less => CompareOp::Less,
    };
    let positive = |v: i64| v.max(0) as u64;
    let target = match (c.target(), c.target_union) {
        (pb::compare::CompareTarget::Value, Some(TargetUnion::Value(v))) => {
            CompareTarget::Value(Bytes::from(v))
        }
        (pb::compare::CompareTarget::Value, None) => CompareTarget::Value(Bytes::new()),
        (pb::compare::CompareTarget::Version, v) => CompareTarget::Version(match v {
            Some(TargetUnion::Version(v)) => positive(v),
            _ => 0,
        }),
        (pb::compare::CompareTarget::Create, v) => CompareTarget::CreateRevision(match v {
            Some(TargetUnion::CreateRevision(v)) => positive(v),
            _ => 0,
        }),
        (pb::compare::CompareTarget::Mod, v) => CompareTarget::ModRevision(match v {
            Some(TargetUnion::ModRevision(v)) => positive(v),
            _ => 0,
        }),
        (pb::compare::CompareTarget::Lease, v) => CompareTarget::Lease(match v {
            Some(TargetUnion::Lease(v)) => v,
            _ => 0,
        }),
        (pb::compare::CompareTarget::Value, Some(_)) => {
            return Err(Status::invalid_argument(
                "etcdserver: a value compare holds no value",
            ))
        }
    };
    Ok(Compare {
        range: KeyRange::from_etcd(key, Bytes::from(c.range_end)),
        op,
        target,
    })
}

/// Which puts of a transaction asked for the previous key, branch by branch (the state
/// machine returns it for every put; etcd only when asked).
#[derive(Default)]
struct PrevWanted {
    success: Vec<OpWant>,
    failure: Vec<OpWant>,
}

enum OpWant {
    Put(bool),
    Txn(PrevWanted),
    Other,
}

fn prev_wanted(req: &pb::TxnRequest) -> PrevWanted {
    use pb::request_op::Request as Op;
    let branch = |ops: &[pb::RequestOp]| {
        ops.iter()
            .map(|op| match &op.request {
                Some(Op::RequestPut(p)) => OpWant::Put(p.prev_kv),
                Some(Op::RequestTxn(t)) => OpWant::Txn(prev_wanted(t)),
                _ => OpWant::Other,
            })
            .collect()
    };
    PrevWanted {
        success: branch(&req.success),
        failure: branch(&req.failure),
    }
}

fn txn_response(
    header: pb::ResponseHeader,
    out: TxnOutcome,
    wanted: &PrevWanted,
) -> pb::TxnResponse {
    use pb::response_op::Response as Op;
    let branch = match out.succeeded {
        true => &wanted.success,
        false => &wanted.failure,
    };
    let no_inner = PrevWanted::default();
    let responses = out
        .responses
        .into_iter()
        .enumerate()
        .map(|(i, r)| pb::ResponseOp {
            response: Some(match r {
                OpResponse::Put { prev } => Op::ResponsePut(pb::PutResponse {
                    header: Some(header),
                    prev_kv: prev
                        .filter(|_| matches!(branch.get(i), Some(OpWant::Put(true))))
                        .map(kv),
                }),
                OpResponse::Delete { deleted, prev } => {
                    Op::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header: Some(header),
                        deleted: deleted as i64,
                        prev_kvs: prev.into_iter().map(kv).collect(),
                    })
                }
                OpResponse::Range(result) => Op::ResponseRange(range_response(header, result)),
                OpResponse::Txn(inner) => {
                    let inner_wanted = match branch.get(i) {
                        Some(OpWant::Txn(w)) => w,
                        _ => &no_inner,
                    };
                    Op::ResponseTxn(txn_response(header, inner, inner_wanted))
                }
            }),
        })
        .collect();
    pb::TxnResponse {
        header: Some(header),
        succeeded: out.succeeded,
        responses,
    }
}

/// A key as etcd shows it.
pub(crate) fn kv(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision as i64,
        mod_revision: kv.mod_revision as i64,
        version: kv.version as i64,
        value: kv.value,
        lease: kv.lease,
    }
}
