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
        let add = Request::member_add(4, "http://h:1", true);
        let body: serde_json::Value = serde_json::from_slice(&add.body).unwrap();
        assert_eq!(
            body,
            json!({"id": 4, "peer_url": "http://h:1", "learner": true})
        );
    }
}
