//! `/v1/kv/<key>`, `/v1/txn` and `/v1/watch/<key>`: keys with revisions, conditional writes,
//! prefix reads and deletes, transactions and watches. Errors are JSON.
//!
//! - `GET /v1/kv/<key>`: the raw value, `ETag: "<mod_revision>"`, `X-Coordinate-Revision`
//!   (the store revision it was read at); `?consistency=serializable` reads this node's state
//!   without a quorum round (fast, possibly stale).
//! - `GET /v1/kv/<prefix>?prefix=true&limit=N&start_after=<key>`: JSON list in key order.
//! - `PUT /v1/kv/<key>` with optional `If-Match: "<rev>"` / `If-Match: *` /
//!   `If-None-Match: *`: 200 with the new revision, or 412 with the current one.
//! - `DELETE /v1/kv/<key>` (same conditions): 204 / 404 / 412; `?prefix=true` deletes a range.
//! - `POST /v1/txn`: compares, then the success or the failure writes, atomically.
//! - `GET /v1/watch/<key>?prefix=true&from_revision=N`: Server-Sent Events.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{flag, header_value, percent_decode, query_params, read_body, v1};
use super::{ApiError, RestState, REVISION};
use crate::kv::{
    Compare, CompareOp, CompareTarget, Delete, DeleteRange, Event, KeyRange, KeyValue,
    Precondition, Put, RangeQuery, Txn, TxnOp,
};
use crate::service::{Consistency, GetRequest, RangeRequest, WatchItem, WatchRequest};

/// Default and largest page of a prefix read.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;
// A page of a prefix read stops at `service::MAX_PAGE_BYTES` of keys and values; its JSON
// answer is at most about 4/3 of it (base64) or 6 times (a value of control characters,
// escaped), plus per-key fields.
/// Bytes of JSON written to the connection at a time by a prefix read.
const LIST_CHUNK: usize = 64 * 1024;
/// Largest `/v1/txn` body.
const MAX_TXN_BODY: usize = 8 << 20;

fn json_err(status: StatusCode, reason: impl Into<String>) -> ApiError {
    ApiError::new(status, reason).json()
}

/// The key after `/v1/kv/` (or `/v1/watch/`), percent-decoded.
pub(super) fn key_of(uri: &Uri, prefix: &str) -> Result<String, ApiError> {
    let raw = uri
        .path()
        .strip_prefix(prefix)
        .map(|k| k.strip_prefix('/').unwrap_or(k))
        .unwrap_or("");
    percent_decode(raw, false).map_err(ApiError::json)
}

fn params(uri: &Uri) -> Result<HashMap<String, String>, ApiError> {
    query_params(uri).map_err(ApiError::json)
}

fn consistency(p: &HashMap<String, String>) -> Result<Consistency, ApiError> {
    match p.get("consistency").map(String::as_str) {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("serializable") => Ok(Consistency::Serializable),
        Some(other) => Err(json_err(
            StatusCode::BAD_REQUEST,
            format!("?consistency={other}: expected linearizable or serializable"),
        )),
    }
}

/// True if values go out base64-encoded.
fn base64_encoding(p: &HashMap<String, String>) -> Result<bool, ApiError> {
    match p.get("encoding").map(String::as_str) {
        None | Some("utf8") | Some("utf-8") => Ok(false),
        Some("base64") => Ok(true),
        Some(other) => Err(json_err(
            StatusCode::BAD_REQUEST,
            format!("?encoding={other}: expected utf8 or base64"),
        )),
    }
}

/// A value for JSON: a UTF-8 string, or base64 when asked for (or when the value is binary,
/// flagged with `"encoding": "base64"` on that item).
fn encode_value(obj: &mut serde_json::Map<String, Value>, value: &[u8], base64: bool) {
    match (base64, std::str::from_utf8(value)) {
        (false, Ok(text)) => {
            obj.insert("value".into(), Value::String(text.to_string()));
        }
        (force, _) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(value);
            obj.insert("value".into(), Value::String(encoded));
            if !force {
                obj.insert("encoding".into(), Value::String("base64".into()));
            }
        }
    }
}

pub(super) fn precondition(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
    let text = |name: header::HeaderName| -> Result<Option<String>, ApiError> {
        headers
            .get(&name)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().to_string())
                    .map_err(|_| json_err(StatusCode::BAD_REQUEST, format!("{name} is not text")))
            })
            .transpose()
    };
    match (text(header::IF_MATCH)?, text(header::IF_NONE_MATCH)?) {
        (Some(_), Some(_)) => Err(json_err(
            StatusCode::BAD_REQUEST,
            "use either If-Match or If-None-Match, not both",
        )),
        (Some(m), None) if m == "*" => Ok(Some(Precondition::Present)),
        (Some(m), None) => {
            let rev = m.trim_start_matches("W/").trim_matches('"');
            rev.parse::<u64>()
                .ok()
                .filter(|&r| r > 0)
                .map(|r| Some(Precondition::ModRevision(r)))
                .ok_or_else(|| {
                    json_err(
                        StatusCode::BAD_REQUEST,
                        format!("If-Match {m:?}: expected a revision like \"42\", or *"),
                    )
                })
        }
        (None, Some(n)) if n == "*" => Ok(Some(Precondition::Absent)),
        (None, Some(n)) => Err(json_err(
            StatusCode::BAD_REQUEST,
            format!("If-None-Match {n:?}: only * is supported"),
        )),
        (None, None) => Ok(None),
    }
}

/// `404 key not found` at store revision `revision`: an absent key is an answer of the
/// service, shown as 404 by REST.
fn key_not_found(revision: u64) -> ApiError {
    json_err(StatusCode::NOT_FOUND, "key not found").at_revision(revision)
}

fn with_revision(mut resp: Response, revision: u64) -> Response {
    resp.headers_mut().insert(REVISION, header_value(revision));
    resp
}

fn etag(mod_revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{mod_revision}\""))
        .unwrap_or(HeaderValue::from_static("\"0\""))
}

pub(crate) async fn get(State(s): State<RestState>, uri: Uri) -> Result<Response, ApiError> {
    let key = key_of(&uri, "/v1/kv")?;
    let p = params(&uri)?;
    let consistency = consistency(&p)?;
    if flag(&p, "prefix")? {
        return list(&s, key, &p, consistency).await;
    }
    if key.is_empty() {
        return Err(json_err(
            StatusCode::BAD_REQUEST,
            "missing key: use /v1/kv/<key>, or ?prefix=true to list",
        ));
    }
    let req = GetRequest {
        key: key.into(),
        revision: revision_param(&p, "revision")?,
        consistency,
    };
    let read = s.services.kv.get(req).await.map_err(v1)?;
    let Some(entry) = read.kv else {
        return Err(key_not_found(read.revision));
    };
    let mut resp = (StatusCode::OK, entry.value).into_response();
    let h = resp.headers_mut();
    h.insert(header::ETAG, etag(entry.mod_revision));
    h.insert(
        "x-coordinate-create-revision",
        header_value(entry.create_revision),
    );
    h.insert("x-coordinate-version", header_value(entry.version));
    Ok(with_revision(resp, read.revision))
}

async fn list(
    s: &RestState,
    prefix: String,
    p: &HashMap<String, String>,
    consistency: Consistency,
) -> Result<Response, ApiError> {
    let limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|&l| (1..=MAX_LIMIT).contains(&l))
            .ok_or_else(|| {
                json_err(
                    StatusCode::BAD_REQUEST,
                    format!("?limit={l}: expected 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let base64 = base64_encoding(p)?;
    let start_after = p.get("start_after").map(|a| Bytes::from(a.clone()));
    let query = RangeQuery {
        revision: revision_param(p, "revision")?,
        limit,
        ..RangeQuery::new(page_range(Bytes::from(prefix), start_after))
    };
    let req = RangeRequest { query, consistency };
    let read = s.services.kv.range(req).await.map_err(v1)?;
    let revision = read.revision;
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

/// The keys under `prefix` strictly after `start_after` (if it is in the prefix's range).
fn page_range(prefix: Bytes, start_after: Option<Bytes>) -> KeyRange {
    let Some(after) = start_after.filter(|a| *a >= prefix) else {
        return KeyRange::Prefix(prefix);
    };
    // The first key after `after` is `after` followed by a zero byte.
    let mut start = after.to_vec();
    start.push(0);
    match crate::kv::prefix_end(&prefix) {
        end if end[..] == [0] => KeyRange::FromKey(start.into()),
        end => KeyRange::Between(start.into(), end),
    }
}

/// `?<name>=<revision>`: 0 (the current one) if absent.
fn revision_param(p: &HashMap<String, String>, name: &str) -> Result<u64, ApiError> {
    match p.get(name) {
        None => Ok(0),
        Some(r) => r.parse::<u64>().map_err(|_| {
            json_err(
                StatusCode::BAD_REQUEST,
                format!("?{name}={r}: expected a revision number"),
            )
        }),
    }
}

/// A key for JSON: the UTF-8 string, or base64 (flagged by `key_encoding`) if it is not.
fn key_text(key: &[u8]) -> (std::borrow::Cow<'_, str>, Option<&'static str>) {
    match std::str::from_utf8(key) {
        Ok(text) => (text.into(), None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(key).into(),
            Some("base64"),
        ),
    }
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

pub(crate) async fn put(
    State(s): State<RestState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key_of(&uri, "/v1/kv")?;
    if key.is_empty() {
        return Err(json_err(
            StatusCode::BAD_REQUEST,
            "missing key: use /v1/kv/<key>",
        ));
    }
    let condition = precondition(&headers)?;
    let lease = match params(&uri)?.get("lease") {
        None => 0,
        Some(l) => l.parse::<i64>().ok().filter(|&l| l >= 0).ok_or_else(|| {
            json_err(
                StatusCode::BAD_REQUEST,
                format!("?lease={l}: expected a lease id"),
            )
        })?,
    };
    let value = read_body(&headers, body, s.max_value_size)
        .await
        .map_err(ApiError::json)?;
    let put = Put {
        condition,
        lease,
        ..Put::new(key.into(), value)
    };
    let revision = s.services.kv.put(put).await.map_err(v1)?.revision;
    let mut resp = Json(json!({ "revision": revision })).into_response();
    resp.headers_mut().insert(header::ETAG, etag(revision));
    Ok(with_revision(resp, revision))
}

pub(crate) async fn delete(
    State(s): State<RestState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_of(&uri, "/v1/kv")?;
    let p = params(&uri)?;
    let condition = precondition(&headers)?;
    if flag(&p, "prefix")? {
        if condition.is_some() {
            return Err(json_err(
                StatusCode::BAD_REQUEST,
                "conditions apply to single keys, not to ?prefix=true",
            ));
        }
        let d = DeleteRange {
            range: KeyRange::Prefix(key.into()),
            prev_kv: false,
        };
        let done = s.services.kv.delete_range(d).await.map_err(v1)?;
        let body = json!({ "deleted": done.deleted, "revision": done.revision });
        return Ok(with_revision(Json(body).into_response(), done.revision));
    }
    if key.is_empty() {
        return Err(json_err(
            StatusCode::BAD_REQUEST,
            "missing key: use /v1/kv/<key>, or ?prefix=true",
        ));
    }
    let d = Delete {
        key: key.into(),
        condition,
    };
    let done = s.services.kv.delete(d).await.map_err(v1)?;
    if done.deleted == 0 {
        return Err(key_not_found(done.revision));
    }
    Ok(with_revision(
        StatusCode::NO_CONTENT.into_response(),
        done.revision,
    ))
}

/// `POST /v1/txn` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TxnBody {
    #[serde(default)]
    compare: Vec<TxnCompare>,
    #[serde(default)]
    success: Vec<TxnWrite>,
    #[serde(default)]
    failure: Vec<TxnWrite>,
    /// `base64` if compared and written values are base64.
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnCompare {
    key: String,
    /// `value`, `mod_revision`, `version` or `exists`.
    target: String,
    /// `==`, `!=`, `>` or `<`.
    op: String,
    value: Value,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnWrite {
    /// `put` or `delete`.
    op: String,
    key: String,
    #[serde(default)]
    value: Option<String>,
}

pub(crate) async fn txn(
    State(s): State<RestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, MAX_TXN_BODY)
        .await
        .map_err(ApiError::json)?;
    let body: TxnBody = serde_json::from_slice(&body).map_err(|e| {
        json_err(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON transaction: {e}"),
        )
    })?;
    let req = txn_request(body, s.max_value_size)?;
    let done = s.services.kv.txn(req).await.map_err(v1)?;
    let body = json!({ "succeeded": done.succeeded, "revision": done.revision });
    Ok(with_revision(Json(body).into_response(), done.revision))
}

/// The service request a `/v1/txn` body asks for (400, or 413 for a value over the limit).
pub(super) fn txn_request(req: TxnBody, max_value: usize) -> Result<Txn, ApiError> {
    let bad = |m: String| json_err(StatusCode::BAD_REQUEST, m);
    let base64 = match req.encoding.as_deref() {
        None | Some("utf8") => false,
        Some("base64") => true,
        Some(other) => return Err(bad(format!("encoding {other:?}: expected utf8 or base64"))),
    };
    let decode = |v: &str| -> Result<Bytes, ApiError> {
        let bytes = if base64 {
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .map(Bytes::from)
                .map_err(|e| bad(format!("invalid base64 value: {e}")))?
        } else {
            Bytes::copy_from_slice(v.as_bytes())
        };
        if bytes.len() > max_value {
            return Err(json_err(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("value larger than the limit of {max_value} bytes"),
            ));
        }
        Ok(bytes)
    };
    let mut compares = Vec::new();
    for c in req.compare {
        let op = match c.op.as_str() {
            "==" | "=" => CompareOp::Equal,
            "!=" => CompareOp::NotEqual,
            ">" => CompareOp::Greater,
            "<" => CompareOp::Less,
            other => {
                return Err(bad(format!(
                    "compare op {other:?}: expected ==, !=, > or <"
                )))
            }
        };
        let number = |v: &Value| {
            v.as_u64()
                .ok_or_else(|| bad(format!("compare on {}: {v} is not a revision", c.target)))
        };
        let target = match c.target.as_str() {
            "value" => match &c.value {
                Value::String(v) => CompareTarget::ValueOrMissing(decode(v)?),
                v => return Err(bad(format!("compare value {v} is not a string"))),
            },
            "mod_revision" => CompareTarget::ModRevision(number(&c.value)?),
            "version" => CompareTarget::Version(number(&c.value)?),
            "exists" => CompareTarget::Exists(
                c.value
                    .as_bool()
                    .ok_or_else(|| bad("compare on exists needs true or false".into()))?,
            ),
            other => {
                return Err(bad(format!(
                    "compare target {other:?}: expected value, mod_revision, version or exists"
                )))
            }
        };
        compares.push(Compare {
            range: KeyRange::Key(c.key.into()),
            op,
            target,
        });
    }
    let writes = |list: Vec<TxnWrite>| -> Result<Vec<TxnOp>, ApiError> {
        list.into_iter()
            .map(|w| match (w.op.as_str(), w.value) {
                ("put", Some(v)) => Ok(TxnOp::Put(Put::new(w.key.into(), decode(&v)?))),
                ("put", None) => Err(bad(format!("put of {:?} needs a value", w.key))),
                ("delete", None) => Ok(TxnOp::Delete(DeleteRange {
                    range: KeyRange::Key(w.key.into()),
                    prev_kv: false,
                })),
                ("delete", Some(_)) => Err(bad("a delete takes no value".into())),
                (other, _) => Err(bad(format!("op {other:?}: expected put or delete"))),
            })
            .collect()
    };
    Ok(Txn {
        compares,
        success: writes(req.success)?,
        failure: writes(req.failure)?,
    })
}

/// One change as a Server-Sent Event: `put` or `delete`, its revision as the event id.
fn render_event(e: &Event, base64: bool) -> SseEvent {
    let kind = if e.deleted { "delete" } else { "put" };
    let mut obj = serde_json::Map::new();
    obj.insert("type".into(), Value::String(kind.into()));
    let (key, key_encoding) = key_text(&e.kv.key);
    obj.insert("key".into(), Value::String(key.into_owned()));
    if let Some(enc) = key_encoding {
        obj.insert("key_encoding".into(), Value::String(enc.into()));
    }
    if !e.deleted {
        encode_value(&mut obj, &e.kv.value, base64);
    }
    obj.insert("revision".into(), e.revision().into());
    SseEvent::default()
        .event(kind)
        .id(e.revision().to_string())
        .data(Value::Object(obj).to_string())
}

/// The last event of a watcher that fell too far behind.
fn render_cut_off(resume_from_revision: u64) -> SseEvent {
    let data = json!({
        "error": "this watcher fell too far behind and was cut off",
        "resume_from_revision": resume_from_revision,
    });
    SseEvent::default().event("error").data(data.to_string())
}

pub(crate) async fn watch(State(s): State<RestState>, uri: Uri) -> Result<Response, ApiError> {
    let key = key_of(&uri, "/v1/watch")?;
    let p = params(&uri)?;
    let prefix = flag(&p, "prefix")?;
    if key.is_empty() && !prefix {
        return Err(json_err(
            StatusCode::BAD_REQUEST,
            "missing key: use /v1/watch/<key>, or ?prefix=true",
        ));
    }
    let base64 = base64_encoding(&p)?;
    let from_revision = match p.get("from_revision") {
        None => 0,
        Some(r) => r.parse::<u64>().map_err(|_| {
            json_err(
                StatusCode::BAD_REQUEST,
                format!("?from_revision={r}: expected a revision number"),
            )
        })?,
    };
    let range = match prefix {
        true => KeyRange::Prefix(key.into()),
        false => KeyRange::Key(key.into()),
    };
    let req = WatchRequest {
        range,
        from_revision,
    };
    let watcher = s.services.watch.watch(req).map_err(v1)?;
    let stream = futures_util::stream::unfold(watcher, move |mut w| async move {
        let ev = match w.next(|e| render_event(e, base64)).await? {
            WatchItem::Event(ev) => ev,
            WatchItem::CutOff {
                resume_from_revision,
            } => render_cut_off(resume_from_revision),
        };
        Some((Ok::<SseEvent, Infallible>(ev), w))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
