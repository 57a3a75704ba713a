//! The `/v1` API's requests, built in one place: paths, percent-encoding, query strings,
//! condition headers and JSON bodies (docs/API.md is the reference). Each constructor says
//! whether the request is idempotent, which decides what failover may repeat.
//!
//! [`crate::Client`] sends these and decodes the answers; `coordinatectl` sends them and
//! prints the answers as they came.

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE, IF_MATCH, IF_NONE_MATCH};
use hyper::Method;
use serde_json::json;

use crate::conn::{key_path, Request};

/// Largest page of a prefix read the server serves (`limit=`).
pub const MAX_PAGE: usize = 10_000;

/// How a read is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Through Raft's ReadIndex: sees every write acknowledged before it started.
    #[default]
    Linearizable,
    /// This node's state as it is: no quorum round, possibly stale.
    Serializable,
}

/// A write's condition, checked when the write is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    #[default]
    Always,
    /// Only if the key's `mod_revision` is this (`If-Match: "<rev>"`): compare-and-set.
    IfMatch(u64),
    /// Only if the key exists (`If-Match: *`).
    IfExists,
    /// Only if the key does not exist (`If-None-Match: *`).
    IfAbsent,
}

/// One page of a prefix read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Keys in this page at most (the server's default is 1000; at most [`MAX_PAGE`]).
    pub limit: Option<usize>,
    /// Only keys after this one (the last key of the previous page).
    pub start_after: Option<String>,
    pub consistency: Consistency,
}

/// Where a range read ends (it starts at its key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RangeEnd {
    /// Every key starting with the key (`?prefix=true`).
    #[default]
    Prefix,
    /// Every key from the key on (`?from_key=true`).
    FromKey,
    /// Keys before this one (`?range_end=<key>`).
    Before(String),
}

/// What a range read sorts by (`?sort_target=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortTarget {
    Key,
    Version,
    CreateRevision,
    ModRevision,
    Value,
}

/// A range read's order (`?sort_order=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortOrder {
    Ascend,
    Descend,
}

/// A range read, shaped as etcd's: which keys, at which revision, sorted how, filtered by
/// their revisions, and how much of each to return. `None` and `false` leave the server's
/// default (limit 1000, key order, the current revision).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    pub end: RangeEnd,
    /// Keys in this page at most (1 to [`MAX_PAGE`]).
    pub limit: Option<usize>,
    /// Only keys after this one.
    pub start_after: Option<String>,
    /// Read the store as it was at this revision.
    pub revision: Option<u64>,
    pub sort: Option<(SortTarget, SortOrder)>,
    /// Keys and revisions without values.
    pub keys_only: bool,
    /// Only the number of keys (see [`crate::RangeResponse::count`]).
    pub count_only: bool,
    pub min_create_revision: Option<u64>,
    pub max_create_revision: Option<u64>,
    pub min_mod_revision: Option<u64>,
    pub max_mod_revision: Option<u64>,
    pub consistency: Consistency,
}

impl RangeOptions {
    /// The query string's parameters, in a fixed order.
    fn query(&self) -> Vec<String> {
        let mut q = vec![match &self.end {
            RangeEnd::Prefix => "prefix=true".to_string(),
            RangeEnd::FromKey => "from_key=true".to_string(),
            RangeEnd::Before(end) => format!("range_end={}", query_value(end)),
        }];
        let mut number = |name: &str, n: Option<u64>| {
            if let Some(n) = n {
                q.push(format!("{name}={n}"));
            }
        };
        number("limit", self.limit.map(|l| l as u64));
        number("revision", self.revision);
        number("min_create_revision", self.min_create_revision);
        number("max_create_revision", self.max_create_revision);
        number("min_mod_revision", self.min_mod_revision);
        number("max_mod_revision", self.max_mod_revision);
        if let Some(after) = &self.start_after {
            q.push(format!("start_after={}", query_value(after)));
        }
        if let Some((target, order)) = self.sort {
            let target = match target {
                SortTarget::Key => "key",
                SortTarget::Version => "version",
                SortTarget::CreateRevision => "create_revision",
                SortTarget::ModRevision => "mod_revision",
                SortTarget::Value => "value",
            };
            let order = match order {
                SortOrder::Ascend => "ascend",
                SortOrder::Descend => "descend",
            };
            q.push(format!("sort_target={target}&sort_order={order}"));
        }
        if self.keys_only {
            q.push("keys_only=true".into());
        }
        if self.count_only {
            q.push("count_only=true".into());
        }
        if self.consistency == Consistency::Serializable {
            q.push("consistency=serializable".into());
        }
        q
    }
}

/// `/v1/kv/<key>`, percent-encoded.
///
/// ```
/// assert_eq!(coordinate_client::kv_path("a b/c"), "/v1/kv/a%20b/c");
/// ```
pub fn kv_path(key: &str) -> String {
    format!("/v1/kv{}", key_path(key))
}

/// A query-string value, percent-encoded (`+`, `&`, `=` and `%` included).
pub fn query_value(s: &str) -> String {
    key_path(s)[1..].to_string()
}

impl Request {
    /// Adds the headers of `condition`.
    pub fn condition(self, condition: Condition) -> Request {
        match condition {
            Condition::Always => self,
            Condition::IfMatch(rev) => match HeaderValue::from_str(&format!("\"{rev}\"")) {
                Ok(v) => self.header(IF_MATCH, v),
                Err(_) => self,
            },
            Condition::IfExists => self.header(IF_MATCH, HeaderValue::from_static("*")),
            Condition::IfAbsent => self.header(IF_NONE_MATCH, HeaderValue::from_static("*")),
        }
    }

    /// `GET /v1/kv/<key>`: the raw value with its revisions in headers.
    pub fn kv_get(key: &str, consistency: Consistency) -> Request {
        let mut path = kv_path(key);
        if consistency == Consistency::Serializable {
            path.push_str("?consistency=serializable");
        }
        Request::get(path)
    }

    /// `GET /v1/kv/<key>?revision=N`: the value as it was at revision `revision` (0: now).
    pub fn kv_get_at(key: &str, consistency: Consistency, revision: u64) -> Request {
        let mut req = Request::kv_get(key, consistency);
        if revision > 0 {
            let sep = if req.path.contains('?') { '&' } else { '?' };
            req.path.push_str(&format!("{sep}revision={revision}"));
        }
        req
    }

    /// `GET /v1/kv/<key>?...`: a range read (see [`RangeOptions`]).
    pub fn kv_range(key: &str, options: &RangeOptions) -> Request {
        Request::get(format!("{}?{}", kv_path(key), options.query().join("&")))
    }

    /// `PUT /v1/kv/<key>?lease=<id>`: a write attached to a lease (0: none, which detaches
    /// the key from any lease it had).
    pub fn kv_put_with_lease(key: &str, value: Bytes, condition: Condition, lease: i64) -> Request {
        let mut req = Request::kv_put(key, value, condition);
        if lease != 0 {
            req.path.push_str(&format!("?lease={lease}"));
        }
        req
    }

    /// `PUT /v1/kv/<key>`.
    pub fn kv_put(key: &str, value: Bytes, condition: Condition) -> Request {
        Request::write(Method::PUT, kv_path(key), value).condition(condition)
    }

    /// `DELETE /v1/kv/<key>`.
    pub fn kv_delete(key: &str, condition: Condition) -> Request {
        Request::write(Method::DELETE, kv_path(key), Bytes::new()).condition(condition)
    }

    /// `DELETE /v1/kv/<prefix>?prefix=true`: every key starting with `prefix`.
    pub fn kv_delete_prefix(prefix: &str) -> Request {
        let path = format!("{}?prefix=true", kv_path(prefix));
        Request::write(Method::DELETE, path, Bytes::new())
    }

    /// `GET /v1/kv/<prefix>?prefix=true&...`: one page of keys in order.
    pub fn kv_list(prefix: &str, options: &ListOptions) -> Request {
        let mut path = format!("{}?prefix=true", kv_path(prefix));
        if let Some(limit) = options.limit {
            path.push_str(&format!("&limit={limit}"));
        }
        if let Some(after) = &options.start_after {
            path.push_str(&format!("&start_after={}", query_value(after)));
        }
        if options.consistency == Consistency::Serializable {
            path.push_str("&consistency=serializable");
        }
        Request::get(path)
    }

    /// `POST /v1/txn` with a JSON body (see [`crate::Txn`]).
    pub fn txn(body: &serde_json::Value) -> Request {
        Request::write(Method::POST, "/v1/txn", Bytes::from(body.to_string())).json()
    }

    /// `GET /v1/watch/<key>?from_revision=N[&prefix=true]` (0: from now).
    pub fn watch(key: &str, prefix: bool, from_revision: u64) -> Request {
        let mut path = format!("/v1/watch{}?from_revision={from_revision}", key_path(key));
        if prefix {
            path.push_str("&prefix=true");
        }
        Request::get(path)
    }

    /// `POST /v1/lease`: grant a lease of `ttl` seconds (`id` 0: the server picks one).
    pub fn lease_grant(ttl: i64, id: i64) -> Request {
        let body = if id == 0 {
            json!({ "ttl": ttl })
        } else {
            json!({ "ttl": ttl, "id": id })
        };
        Request::write(Method::POST, "/v1/lease", Bytes::from(body.to_string())).json()
    }

    /// `GET /v1/lease`: every lease's id.
    pub fn lease_list() -> Request {
        Request::get("/v1/lease")
    }

    /// `GET /v1/lease/<id>[?keys=true]`: its time left, granted TTL and (if asked) keys.
    pub fn lease_time_to_live(id: i64, keys: bool) -> Request {
        let query = if keys { "?keys=true" } else { "" };
        Request::get(format!("/v1/lease/{id}{query}"))
    }

    /// `POST /v1/lease/<id>/keep-alive`. Repeating it only restarts the TTL once more, so
    /// it is marked idempotent: failover may send it to the next endpoint.
    pub fn lease_keep_alive(id: i64) -> Request {
        let path = format!("/v1/lease/{id}/keep-alive");
        Request {
            idempotent: true,
            ..Request::write(Method::POST, path, Bytes::new())
        }
    }

    /// `DELETE /v1/lease/<id>`: revoke it, deleting its keys.
    pub fn lease_revoke(id: i64) -> Request {
        Request::write(Method::DELETE, format!("/v1/lease/{id}"), Bytes::new())
    }

    /// `POST /v1/compact`: forget every revision before `revision`.
    pub fn compact(revision: u64) -> Request {
        let body = json!({ "revision": revision });
        Request::write(Method::POST, "/v1/compact", Bytes::from(body.to_string())).json()
    }

    /// `GET /v1/alarms`.
    pub fn alarms() -> Request {
        Request::get("/v1/alarms")
    }

    /// `DELETE /v1/alarms`: disarm NOSPACE.
    pub fn alarms_disarm() -> Request {
        Request::write(Method::DELETE, "/v1/alarms", Bytes::new())
    }

    /// `GET /v1/members`.
    pub fn members() -> Request {
        Request::get("/v1/members")
    }

    /// `POST /v1/members`: add node `id`, as a learner or a voter.
    pub fn member_add(id: u64, peer_url: &str, learner: bool) -> Request {
        let body = json!({ "id": id, "peer_url": peer_url, "learner": learner });
        Request::write(Method::POST, "/v1/members", Bytes::from(body.to_string())).json()
    }

    /// `DELETE /v1/members/<id>`.
    pub fn member_remove(id: u64) -> Request {
        Request::write(Method::DELETE, format!("/v1/members/{id}"), Bytes::new())
    }

    /// `POST /v1/members/<id>/promote`.
    pub fn member_promote(id: u64) -> Request {
        Request::write(
            Method::POST,
            format!("/v1/members/{id}/promote"),
            Bytes::new(),
        )
    }

    /// `GET /v1/status`.
    pub fn status() -> Request {
        Request::get("/v1/status")
    }

    /// `GET /health`.
    pub fn health() -> Request {
        Request::get("/health")
    }

    fn json(self) -> Request {
        self.header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded() {
        assert_eq!(kv_path("a b/c"), "/v1/kv/a%20b/c");
        assert_eq!(kv_path(""), "/v1/kv/");
        assert_eq!(query_value("a+b&c=d/e%"), "a%2Bb%26c%3Dd/e%25");
    }

    #[test]
    fn requests_carry_their_query_and_conditions() {
        let r = Request::kv_get("k", Consistency::Serializable);
        assert_eq!(r.path, "/v1/kv/k?consistency=serializable");
        assert!(r.idempotent);
        let r = Request::kv_put("k", Bytes::from("v"), Condition::IfMatch(7));
        assert_eq!(
            r.headers,
            vec![(IF_MATCH, HeaderValue::from_static("\"7\""))]
        );
        assert!(!r.idempotent);
        let r = Request::kv_delete("k", Condition::IfAbsent);
        assert_eq!(r.headers[0].0, IF_NONE_MATCH);
        let r = Request::kv_list(
            "p/",
            &ListOptions {
                limit: Some(2),
                start_after: Some("p/a b".into()),
                consistency: Consistency::Serializable,
            },
        );
        assert_eq!(
            r.path,
            "/v1/kv/p/?prefix=true&limit=2&start_after=p/a%20b&consistency=serializable"
        );
        assert_eq!(
            Request::watch("w/", true, 4).path,
            "/v1/watch/w/?from_revision=4&prefix=true"
        );
        assert_eq!(
            Request::kv_get_at("k", Consistency::Linearizable, 3).path,
            "/v1/kv/k?revision=3"
        );
        assert_eq!(
            Request::kv_get_at("k", Consistency::Serializable, 3).path,
            "/v1/kv/k?consistency=serializable&revision=3"
        );
        assert_eq!(
            Request::kv_get_at("k", Consistency::Linearizable, 0).path,
            "/v1/kv/k"
        );
        let r = Request::kv_put_with_lease("k", Bytes::from("v"), Condition::IfAbsent, 7);
        assert_eq!(r.path, "/v1/kv/k?lease=7");
        assert_eq!(r.headers[0].0, IF_NONE_MATCH);
        assert_eq!(
            Request::kv_put_with_lease("k", Bytes::new(), Condition::Always, 0).path,
            "/v1/kv/k"
        );
        let add = Request::member_add(4, "http://h:1", true);
        let body: serde_json::Value = serde_json::from_slice(&add.body).unwrap();
        assert_eq!(
            body,
            json!({"id": 4, "peer_url": "http://h:1", "learner": true})
        );
    }

    #[test]
    fn range_reads_carry_every_option() {
        let r = Request::kv_range("lock/", &RangeOptions::default());
        assert_eq!(r.path, "/v1/kv/lock/?prefix=true");
        assert!(r.idempotent);
        let options = RangeOptions {
            end: RangeEnd::Before("b c".into()),
            limit: Some(1),
            start_after: Some("a+".into()),
            revision: Some(9),
            sort: Some((SortTarget::CreateRevision, SortOrder::Descend)),
            keys_only: true,
            count_only: true,
            min_create_revision: Some(2),
            max_create_revision: Some(8),
            min_mod_revision: Some(3),
            max_mod_revision: Some(7),
            consistency: Consistency::Serializable,
        };
        assert_eq!(
            Request::kv_range("a", &options).path,
            "/v1/kv/a?range_end=b%20c&limit=1&revision=9&min_create_revision=2\
             &max_create_revision=8&min_mod_revision=3&max_mod_revision=7&start_after=a%2B\
             &sort_target=create_revision&sort_order=descend&keys_only=true&count_only=true\
             &consistency=serializable"
        );
        let from = RangeOptions {
            end: RangeEnd::FromKey,
            ..RangeOptions::default()
        };
        assert_eq!(Request::kv_range("k", &from).path, "/v1/kv/k?from_key=true");
    }

    #[test]
    fn lease_and_maintenance_requests() {
        let body = |r: &Request| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap();
        let g = Request::lease_grant(10, 0);
        assert_eq!(
            (g.method.clone(), g.path.as_str()),
            (Method::POST, "/v1/lease")
        );
        assert_eq!(body(&g), json!({"ttl": 10}));
        assert!(!g.idempotent);
        assert_eq!(
            body(&Request::lease_grant(10, 7)),
            json!({"ttl": 10, "id": 7})
        );
        assert_eq!(Request::lease_list().path, "/v1/lease");
        assert_eq!(
            Request::lease_time_to_live(7, true).path,
            "/v1/lease/7?keys=true"
        );
        assert_eq!(Request::lease_time_to_live(7, false).path, "/v1/lease/7");
        let k = Request::lease_keep_alive(7);
        assert_eq!(
            (k.method.clone(), k.path.as_str()),
            (Method::POST, "/v1/lease/7/keep-alive")
        );
        assert!(k.idempotent);
        let r = Request::lease_revoke(7);
        assert_eq!(
            (r.method.clone(), r.path.as_str()),
            (Method::DELETE, "/v1/lease/7")
        );
        assert!(!r.idempotent);
        assert_eq!(body(&Request::compact(5)), json!({"revision": 5}));
        assert_eq!(Request::alarms().path, "/v1/alarms");
        assert_eq!(Request::alarms_disarm().method, Method::DELETE);
    }
}
