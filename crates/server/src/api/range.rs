//! Range reads of `/v1/kv`: `GET /v1/kv/<key>` with `?prefix=true`, `?from_key=true` or
//! `?range_end=<key>` lists the keys of that range, at a revision, shaped (limit, sort, keys
//! or count only, revision filters), as JSON written in chunks.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;

use super::kv::{base64_encoding, json_err, key_text, revision_param, with_revision};
use super::{flag, v1, ApiError, RestState};
use crate::kv::{prefix_end, KeyRange, KeyValue, RangeQuery, SortOrder, SortTarget};
use crate::service::{Consistency, RangeRequest};

/// Default and largest page of a range read.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;
// A page of a range read stops at `service::MAX_PAGE_BYTES` of keys and values; its JSON
// answer is at most about 4/3 of it (base64) or 6 times (a value of control characters,
// escaped), plus per-key fields.
/// Bytes of JSON written to the connection at a time by a range read.
const LIST_CHUNK: usize = 64 * 1024;

/// True if the query asks for a range rather than one key.
pub(super) fn is_range(p: &HashMap<String, String>) -> Result<bool, ApiError> {
    Ok(flag(p, "prefix")? || flag(p, "from_key")? || p.contains_key("range_end"))
}

fn bad(reason: String) -> ApiError {
    json_err(StatusCode::BAD_REQUEST, reason)
}

/// The keys asked for: `key` and what follows it per `?prefix`, `?from_key` or
/// `?range_end`, starting strictly after `?start_after` if that is later.
pub(super) fn key_range(
    key: Bytes,
    p: &HashMap<String, String>,
    decode: impl Fn(&str) -> Result<Bytes, ApiError>,
) -> Result<KeyRange, ApiError> {
    let start_after = p.get("start_after").map(|a| decode(a)).transpose()?;
    let (start, end) = match (flag(p, "prefix")?, flag(p, "from_key")?, p.get("range_end")) {
        (true, false, None) => {
            let end = prefix_end(&key);
            (key, (end[..] != [0]).then_some(end))
        }
        (false, true, None) => (key, None),
        (false, false, Some(end)) => (key, Some(decode(end)?)),
        _ => {
            return Err(bad(
                "use one of ?prefix=true, ?from_key=true and ?range_end=<key>".into(),
            ))
        }
    };
    // The first key after `after` is `after` followed by a zero byte.
    let start = match start_after {
        Some(after) if after >= start => {
            let mut next = after.to_vec();
            next.push(0);
            Bytes::from(next)
        }
        _ => start,
    };
    Ok(match end {
        Some(end) => KeyRange::Between(start, end),
        None => KeyRange::FromKey(start),
    })
}

/// `?<name>=<n>`: a number, 0 if absent.
fn number(p: &HashMap<String, String>, name: &str) -> Result<u64, ApiError> {
    match p.get(name) {
        None => Ok(0),
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| bad(format!("?{name}={v}: expected a number"))),
    }
}

/// The range query a request asks for (400 for a bad parameter).
fn range_query(
    key: Bytes,
    p: &HashMap<String, String>,
    decode: impl Fn(&str) -> Result<Bytes, ApiError>,
) -> Result<RangeQuery, ApiError> {
    let limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|&l| (1..=MAX_LIMIT).contains(&l))
            .ok_or_else(|| bad(format!("?limit={l}: expected 1 to {MAX_LIMIT}")))?,
    };
    let sort_target = match p.get("sort_target").map(String::as_str) {
        None | Some("key") => SortTarget::Key,
        Some("version") => SortTarget::Version,
        Some("create_revision") => SortTarget::CreateRevision,
        Some("mod_revision") => SortTarget::ModRevision,
        Some("value") => SortTarget::Value,
        Some(other) => {
            return Err(bad(format!(
            "?sort_target={other}: expected key, version, create_revision, mod_revision or value"
        )))
        }
    };
    let sort_order = match p.get("sort_order").map(String::as_str) {
        None => SortOrder::None,
        Some("ascend") => SortOrder::Ascend,
        Some("descend") => SortOrder::Descend,
        Some(other) => {
            return Err(bad(format!(
                "?sort_order={other}: expected ascend or descend"
            )))
        }
    };
    let sort_order = match (sort_order, sort_target) {
        // Sorting by anything but the key needs an order: ascending, like etcd's clients.
        (SortOrder::None, t) if t != SortTarget::Key => SortOrder::Ascend,
        (order, _) => order,
    };
    Ok(RangeQuery {
        range: key_range(key, p, decode)?,
        revision: revision_param(p, "revision")?,
        limit,
        max_bytes: usize::MAX,
        keys_only: flag(p, "keys_only")?,
        count_only: flag(p, "count_only")?,
        // The REST answer has no count (but with count_only): a page reads only its keys.
        count_all: false,
        sort_target,
        sort_order,
        min_mod_revision: number(p, "min_mod_revision")?,
        max_mod_revision: number(p, "max_mod_revision")?,
        min_create_revision: number(p, "min_create_revision")?,
        max_create_revision: number(p, "max_create_revision")?,
    })
}

/// A range read: JSON `{"kvs": [...], "more", "revision"}` (`{"count", "revision"}` with
/// `?count_only=true`).
pub(super) async fn list(
    s: &RestState,
    key: Bytes,
    p: &HashMap<String, String>,
    consistency: Consistency,
    decode: impl Fn(&str) -> Result<Bytes, ApiError>,
) -> Result<Response, ApiError> {
    let base64 = base64_encoding(p)?;
    let query = range_query(key, p, decode)?;
    let count_only = query.count_only;
    let req = RangeRequest { query, consistency };
    let read = s.services.kv.range(req).await.map_err(v1)?;
    let revision = read.revision;
    if count_only {
        let body = json!({ "count": read.count, "revision": revision });
        return Ok(with_revision(axum::Json(body).into_response(), revision));
    }
    let page = ListBody {
        kvs: read.kvs.into_iter(),
        more: read.more,
        revision,
        base64,
        started: false,
        done: false,
    };
    let stream = futures_util::stream::unfold(page, |mut page| async move {
        let chunk = page.next_chunk()?;
        Some((Ok::<Bytes, Infallible>(chunk), page))
    });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(with_revision(resp, revision))
}

/// One listed key, as JSON. Fields in alphabetical order: the same bytes as the
/// `serde_json::Map` this replaced, so the documented answers did not change.
#[derive(serde::Serialize)]
struct ListedKey<'a> {
    create_revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    key: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "is_zero")]
    lease: i64,
    mod_revision: u64,
    value: std::borrow::Cow<'a, str>,
    version: u64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl<'a> ListedKey<'a> {
    fn new(e: &'a KeyValue, base64: bool) -> ListedKey<'a> {
        let (value, encoding) = match (base64, std::str::from_utf8(&e.value)) {
            (false, Ok(text)) => (std::borrow::Cow::Borrowed(text), None),
            (force, _) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(&e.value);
                (encoded.into(), (!force).then_some("base64"))
            }
        };
        let (key, key_encoding) = key_text(&e.key);
        ListedKey {
            create_revision: e.create_revision,
            encoding,
            key,
            key_encoding,
            lease: e.lease,
            mod_revision: e.mod_revision,
            value,
            version: e.version,
        }
    }
}

/// A prefix listing's JSON body, written in chunks of about [`LIST_CHUNK`] bytes as the
/// connection takes them, instead of one document built in memory (a listing of 50 MiB
/// of values built a 300 MiB `serde_json::Value` tree before).
struct ListBody {
    kvs: std::vec::IntoIter<KeyValue>,
    more: bool,
    revision: u64,
    base64: bool,
    started: bool,
    done: bool,
}

impl ListBody {
    /// The next chunk of the body; `None` after the last.
    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut buf = Vec::with_capacity(LIST_CHUNK);
        if !self.started {
            buf.extend_from_slice(b"{\"kvs\":[");
        }
        for entry in self.kvs.by_ref() {
            if std::mem::replace(&mut self.started, true) {
                buf.push(b',');
            }
            // Serializing plain strings and numbers into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut buf, &ListedKey::new(&entry, self.base64));
            if buf.len() >= LIST_CHUNK {
                return Some(buf.into());
            }
        }
        self.started = true;
        self.done = true;
        let tail = json!({ "more": self.more, "revision": self.revision }).to_string();
        buf.extend_from_slice(b"],");
        buf.extend_from_slice(tail.trim_start_matches('{').as_bytes());
        Some(buf.into())
    }
}
