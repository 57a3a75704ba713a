//! [`Client`]: typed calls of the `/v1` API over a list of endpoints with failover.
//!
//! Each call builds its request ([`crate::api`]), sends it through [`Endpoints::call`] (which
//! decides what may be retried on another endpoint), checks the status the API promises for
//! success and decodes the answer. Anything else the cluster answers is
//! [`Error::Refused`] with the server's reason; nothing was applied then, except on a `504`
//! (which failover already reports as outcome unknown).

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{Condition, Consistency, ListOptions};
use crate::conn::{Request, Response};
use crate::error::Error;
use crate::failover::Endpoints;
use crate::tls::ClientTls;

/// A key's value with its revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// The lease the key is attached to (0: none). Single-key reads do not say (0).
    pub lease: i64,
}

/// A single-key read that found the key, and the store revision it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResponse {
    pub kv: KeyValue,
    pub revision: u64,
}

/// One page of a prefix read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    pub kvs: Vec<KeyValue>,
    /// True if keys follow: ask again with `start_after` = the last key.
    pub more: bool,
    pub revision: u64,
}

/// What a delete did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteResponse {
    /// Keys removed (0 or 1 for a single key).
    pub deleted: u64,
    /// The store revision after it.
    pub revision: u64,
}

/// A member, as `GET /v1/members` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub id: u64,
    pub peer_url: String,
    /// `voter` or `learner`.
    pub role: String,
    #[serde(default)]
    pub is_leader: bool,
    #[serde(default)]
    pub reachable: Option<bool>,
    /// Known on the leader only.
    #[serde(default)]
    pub match_index: Option<u64>,
}

/// A node's view, as `GET /v1/status` gives it (docs/API.md lists the fields).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Status {
    pub id: u64,
    pub role: String,
    /// 0: no leader known.
    pub leader: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    #[serde(default)]
    pub snapshot_index: u64,
    #[serde(default)]
    pub first_index: u64,
    #[serde(default)]
    pub last_index: u64,
    pub revision: u64,
    #[serde(default)]
    pub keys: u64,
    #[serde(default)]
    pub data_bytes: u64,
    #[serde(default)]
    pub wal_bytes: u64,
    #[serde(default)]
    pub voters: Vec<u64>,
    #[serde(default)]
    pub members: Vec<Member>,
}

/// What a transaction compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Value(Bytes),
    ModRevision(u64),
    Version(u64),
    Exists(bool),
    /// 0 for an absent key: `CreateRevision(0)` with `Eq` is "create only if absent".
    CreateRevision(u64),
    /// The lease a key is attached to (0: none, or absent).
    Lease(i64),
}

/// A transaction's comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Lt,
}

/// A transaction's write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Bytes,
    },
    /// A put that attaches the key to a lease.
    PutWithLease {
        key: String,
        value: Bytes,
        lease: i64,
    },
    Delete {
        key: String,
    },
}

/// `POST /v1/txn`: if every comparison holds, `success` is applied, else `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<(String, Target, CompareOp)>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// The JSON body; values travel base64-encoded, so any bytes do.
    pub fn to_json(&self) -> Value {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let compare: Vec<Value> = self
            .compare
            .iter()
            .map(|(key, target, op)| {
                let op = match op {
                    CompareOp::Eq => "==",
                    CompareOp::Ne => "!=",
                    CompareOp::Gt => ">",
                    CompareOp::Lt => "<",
                };
                let (target, value) = match target {
                    Target::Value(v) => ("value", json!(b64(v))),
                    Target::ModRevision(r) => ("mod_revision", json!(r)),
                    Target::Version(v) => ("version", json!(v)),
                    Target::Exists(e) => ("exists", json!(e)),
                    Target::CreateRevision(r) => ("create_revision", json!(r)),
                    Target::Lease(l) => ("lease", json!(l)),
                };
                json!({ "key": key, "target": target, "op": op, "value": value })
            })
            .collect();
        let ops = |ops: &[TxnOp]| -> Vec<Value> {
            ops.iter()
                .map(|op| match op {
                    TxnOp::Put { key, value } => {
                        json!({ "op": "put", "key": key, "value": b64(value) })
                    }
                    TxnOp::PutWithLease { key, value, lease } => {
                        json!({ "op": "put", "key": key, "value": b64(value), "lease": lease })
                    }
                    TxnOp::Delete { key } => json!({ "op": "delete", "key": key }),
                })
                .collect()
        };
        json!({
            "compare": compare,
            "success": ops(&self.success),
            "failure": ops(&self.failure),
            "encoding": "base64",
        })
    }
}

/// What a transaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub revision: u64,
}

/// A typed client of the `/v1` API (see the module docs).
pub struct Client {
    endpoints: Endpoints,
}

impl Client {
    /// A client of `endpoints` (`host:port` each, tried in order), with a per-request deadline.
    pub fn new(endpoints: &[String], timeout: Duration) -> Client {
        Client::with_tls(endpoints, timeout, None)
    }

    /// The same, over TLS with `tls` if given.
    pub fn with_tls(endpoints: &[String], timeout: Duration, tls: Option<ClientTls>) -> Client {
        Client {
            endpoints: Endpoints::with_tls(endpoints, timeout, tls),
        }
    }

    /// The endpoints, for raw requests.
    pub fn endpoints(&mut self) -> &mut Endpoints {
        &mut self.endpoints
    }

    /// Sends `req`; the answering endpoint and its answer if its status is `want`.
    pub(crate) async fn expect(
        &mut self,
        what: &str,
        req: &Request,
        want: &[StatusCode],
    ) -> Result<(String, Response), Error> {
        let (endpoint, resp) = self.endpoints.call(req).await?;
        if !want.contains(&resp.status) {
            return Err(Error::Refused {
                what: what.to_string(),
                endpoint,
                status: resp.status,
                reason: resp.reason(),
                body: resp.body,
            });
        }
        Ok((endpoint, resp))
    }

    /// A key's value; `None` if it does not exist.
    pub async fn get(
        &mut self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<GetResponse>, Error> {
        self.get_request(key, &Request::kv_get(key, consistency))
            .await
    }

    /// Sends a single-key read of `key` and decodes its answer.
    pub(crate) async fn get_request(
        &mut self,
        key: &str,
        req: &Request,
    ) -> Result<Option<GetResponse>, Error> {
        let what = format!("get {key:?}");
        let (endpoint, r) = self
            .expect(&what, req, &[StatusCode::OK, StatusCode::NOT_FOUND])
            .await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let header = |name: &str| {
            r.number(name).ok_or_else(|| Error::Invalid {
                what: what.clone(),
                endpoint: endpoint.clone(),
                detail: format!("no {name} header"),
            })
        };
        Ok(Some(GetResponse {
            kv: KeyValue {
                key: key.to_string(),
                create_revision: header("x-coordinate-create-revision")?,
                mod_revision: header("etag")?,
                version: header("x-coordinate-version")?,
                lease: 0,
                value: r.body.clone(),
            },
            revision: header("x-coordinate-revision")?,
        }))
    }

    /// Writes `value` if `condition` holds; the new revision. A condition that does not
    /// hold is [`Error::Refused`] with status 412.
    pub async fn put(
        &mut self,
        key: &str,
        value: Bytes,
        condition: Condition,
    ) -> Result<u64, Error> {
        self.put_request(key, &Request::kv_put(key, value, condition))
            .await
    }

    /// Sends a put of `key` and decodes its answer: the new revision.
    pub(crate) async fn put_request(&mut self, key: &str, req: &Request) -> Result<u64, Error> {
        let what = format!("put {key:?}");
        let (endpoint, r) = self.expect(&what, req, &[StatusCode::OK]).await?;
        let body: Value = decode(&what, &endpoint, &r)?;
        body["revision"]
            .as_u64()
            .ok_or_else(|| invalid(&what, &endpoint, "no revision"))
    }

    /// Compare-and-set: writes only if the key's `mod_revision` is `expected`.
    pub async fn cas(&mut self, key: &str, value: Bytes, expected: u64) -> Result<u64, Error> {
        self.put(key, value, Condition::IfMatch(expected)).await
    }

    /// Deletes one key if `condition` holds (an absent key is `deleted: 0`).
    pub async fn delete(
        &mut self,
        key: &str,
        condition: Condition,
    ) -> Result<DeleteResponse, Error> {
        let what = format!("delete {key:?}");
        let req = Request::kv_delete(key, condition);
        let (endpoint, r) = self
            .expect(
                &what,
                &req,
                &[StatusCode::NO_CONTENT, StatusCode::NOT_FOUND],
            )
            .await?;
        Ok(DeleteResponse {
            deleted: u64::from(r.status == StatusCode::NO_CONTENT),
            revision: r
                .number("x-coordinate-revision")
                .ok_or_else(|| invalid(&what, &endpoint, "no x-coordinate-revision header"))?,
        })
    }

    /// Deletes every key starting with `prefix`, in one revision.
    pub async fn delete_prefix(&mut self, prefix: &str) -> Result<DeleteResponse, Error> {
        #[derive(Deserialize)]
        struct Answer {
            deleted: u64,
            revision: u64,
        }
        let what = format!("delete prefix {prefix:?}");
        let req = Request::kv_delete_prefix(prefix);
        let (endpoint, r) = self.expect(&what, &req, &[StatusCode::OK]).await?;
        let a: Answer = decode(&what, &endpoint, &r)?;
        Ok(DeleteResponse {
            deleted: a.deleted,
            revision: a.revision,
        })
    }

    /// One page of the keys starting with `prefix`.
    pub async fn list(&mut self, prefix: &str, options: &ListOptions) -> Result<ListPage, Error> {
        let what = format!("ls {prefix:?}");
        let req = Request::kv_list(prefix, options);
        let (endpoint, r) = self.expect(&what, &req, &[StatusCode::OK]).await?;
        let page: RangeBody = decode(&what, &endpoint, &r)?;
        let (more, revision) = (page.more, page.revision);
        Ok(ListPage {
            kvs: page.kvs(&what, &endpoint)?,
            more,
            revision,
        })
    }

    /// Runs a transaction.
    pub async fn txn(&mut self, txn: &Txn) -> Result<TxnResponse, Error> {
        let req = Request::txn(&txn.to_json());
        let (endpoint, r) = self.expect("txn", &req, &[StatusCode::OK]).await?;
        decode("txn", &endpoint, &r)
    }

    /// The members, as the answering endpoint knows them.
    pub async fn members(&mut self) -> Result<Vec<Member>, Error> {
        let (endpoint, r) = self
            .expect("members", &Request::members(), &[StatusCode::OK])
            .await?;
        decode("members", &endpoint, &r)
    }

    /// Adds a member; the new member list.
    pub async fn add_member(
        &mut self,
        id: u64,
        peer_url: &str,
        learner: bool,
    ) -> Result<Vec<Member>, Error> {
        let what = format!("add member {id}");
        let req = Request::member_add(id, peer_url, learner);
        let (endpoint, r) = self.expect(&what, &req, &[StatusCode::CREATED]).await?;
        decode(&what, &endpoint, &r)
    }

    /// Removes a member.
    pub async fn remove_member(&mut self, id: u64) -> Result<(), Error> {
        let what = format!("remove member {id}");
        let req = Request::member_remove(id);
        self.expect(&what, &req, &[StatusCode::NO_CONTENT]).await?;
        Ok(())
    }

    /// Makes a caught-up learner a voter (the leader answers; failover finds it).
    pub async fn promote_member(&mut self, id: u64) -> Result<(), Error> {
        let what = format!("promote member {id}");
        let req = Request::member_promote(id);
        self.expect(&what, &req, &[StatusCode::NO_CONTENT]).await?;
        Ok(())
    }

    /// The first answering endpoint's status.
    pub async fn status(&mut self) -> Result<Status, Error> {
        let (endpoint, r) = self
            .expect("status", &Request::status(), &[StatusCode::OK])
            .await?;
        decode("status", &endpoint, &r)
    }
}

/// One key of a range read's JSON answer.
#[derive(Deserialize)]
struct RangeItem {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    encoding: Option<String>,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    #[serde(default)]
    lease: i64,
}

/// A range read's JSON answer (`count` only with `count_only`, `kvs` only without).
#[derive(Deserialize)]
pub(crate) struct RangeBody {
    #[serde(default)]
    kvs: Vec<RangeItem>,
    #[serde(default)]
    pub(crate) more: bool,
    #[serde(default)]
    pub(crate) count: Option<u64>,
    pub(crate) revision: u64,
}

impl RangeBody {
    /// The keys, values decoded.
    pub(crate) fn kvs(self, what: &str, endpoint: &str) -> Result<Vec<KeyValue>, Error> {
        let mut kvs = Vec::with_capacity(self.kvs.len());
        for item in self.kvs {
            let value = match item.encoding.as_deref() {
                Some("base64") => base64::engine::general_purpose::STANDARD
                    .decode(&item.value)
                    .map(Bytes::from)
                    .map_err(|e| invalid(what, endpoint, &format!("bad base64: {e}")))?,
                _ => Bytes::from(item.value),
            };
            kvs.push(KeyValue {
                key: item.key,
                value,
                create_revision: item.create_revision,
                mod_revision: item.mod_revision,
                version: item.version,
                lease: item.lease,
            });
        }
        Ok(kvs)
    }
}

pub(crate) fn invalid(what: &str, endpoint: &str, detail: &str) -> Error {
    Error::Invalid {
        what: what.to_string(),
        endpoint: endpoint.to_string(),
        detail: detail.to_string(),
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: &str,
    endpoint: &str,
    r: &Response,
) -> Result<T, Error> {
    serde_json::from_slice(&r.body).map_err(|e| invalid(what, endpoint, &e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_encode_values_as_base64() {
        let txn = Txn {
            compare: vec![("lock".into(), Target::Exists(false), CompareOp::Eq)],
            success: vec![TxnOp::Put {
                key: "lock".into(),
                value: Bytes::from_static(&[0xff]),
            }],
            failure: vec![TxnOp::Delete { key: "w".into() }],
        };
        let leased = Txn {
            compare: vec![
                ("l/1".into(), Target::CreateRevision(0), CompareOp::Eq),
                ("l/1".into(), Target::Lease(7), CompareOp::Ne),
            ],
            success: vec![TxnOp::PutWithLease {
                key: "l/1".into(),
                value: Bytes::from_static(b"v"),
                lease: 7,
            }],
            failure: vec![],
        };
        assert_eq!(
            leased.to_json(),
            json!({
                "compare": [
                    {"key": "l/1", "target": "create_revision", "op": "==", "value": 0},
                    {"key": "l/1", "target": "lease", "op": "!=", "value": 7},
                ],
                "success": [{"op": "put", "key": "l/1", "value": "dg==", "lease": 7}],
                "failure": [],
                "encoding": "base64",
            })
        );
        assert_eq!(
            txn.to_json(),
            json!({
                "compare": [{"key": "lock", "target": "exists", "op": "==", "value": false}],
                "success": [{"op": "put", "key": "lock", "value": "/w=="}],
                "failure": [{"op": "delete", "key": "w"}],
                "encoding": "base64",
            })
        );
    }

    #[test]
    fn range_answers_decode_values_leases_and_counts() {
        let body: RangeBody = serde_json::from_str(
            r#"{"kvs":[{"create_revision":4,"key":"a","lease":7,"mod_revision":5,"value":"x","version":2},{"create_revision":6,"encoding":"base64","key":"b","mod_revision":6,"value":"//4=","version":1}],"more":true,"revision":9}"#,
        )
        .unwrap();
        assert!(body.more);
        let kvs = body.kvs("ls", "e").unwrap();
        assert_eq!(kvs[0].lease, 7);
        assert_eq!(kvs[1].value, Bytes::from_static(&[0xff, 0xfe]));
        assert_eq!(kvs[1].lease, 0);
        let count: RangeBody = serde_json::from_str(r#"{"count":3,"revision":9}"#).unwrap();
        assert_eq!((count.count, count.revision), (Some(3), 9));
        // keys_only: values are empty.
        let keys: RangeBody = serde_json::from_str(
            r#"{"kvs":[{"create_revision":4,"key":"a","mod_revision":5,"value":"","version":2}],"more":false,"revision":9}"#,
        )
        .unwrap();
        assert!(keys.kvs("ls", "e").unwrap()[0].value.is_empty());
    }

    #[test]
    fn status_and_members_decode() {
        let status: Status = serde_json::from_str(
            r#"{"id":2,"role":"follower","leader":1,"term":2,"commit_index":21,"applied_index":21,"snapshot_index":1,"first_index":2,"last_index":21,"keys":3,"data_bytes":46,"revision":12,"wal_bytes":1659,"voters":[2,1,3],"members":[{"id":1,"peer_url":"http://127.0.0.1:12379","role":"voter","is_leader":true,"reachable":true}]}"#,
        )
        .unwrap();
        assert_eq!((status.leader, status.revision), (1, 12));
        assert_eq!(status.members[0].match_index, None);
        assert!(status.members[0].is_leader);
    }
}
