//! `/v1/kv/<key>` and `/v1/txn`: keys with revisions, conditional writes, deletes and
//! transactions (range reads are `api::range`'s, watches `api::watch`'s). Errors are JSON.
//!
//! - `GET /v1/kv/<key>`: the raw value, `ETag: "<mod_revision>"`, `X-Coordinate-Revision`
//!   (the store revision it was read at); `?revision=N` reads it as it was then;
//!   `?consistency=serializable` reads this node's state without a quorum round (fast,
//!   possibly stale).
//! - `PUT /v1/kv/<key>` with optional `If-Match: "<rev>"` / `If-Match: *` /
//!   `If-None-Match: *`, and `?lease=<id>`: 200 with the new revision, or 412 with the
//!   current one.
//! - `DELETE /v1/kv/<key>` (same conditions): 204 / 404 / 412; with `?prefix=true`,
//!   `?from_key=true` or `?range_end=<key>` it deletes a range.
//! - `POST /v1/txn`: compares, then the success or the failure writes, atomically.
//! - Keys are the path's UTF-8 text, or base64 with `?key_encoding=base64`.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{flag, header_value, percent_decode, query_params, read_body, v1};
use super::{ApiError, RestState, REVISION};
use crate::kv::{
    Compare, CompareOp, CompareTarget, Delete, DeleteRange, KeyRange, Precondition, Put, Txn, TxnOp,
};
use crate::service::{Consistency, GetRequest};

/// Largest `/v1/txn` body.
const MAX_TXN_BODY: usize = 8 << 20;

pub(super) fn json_err(status: StatusCode, reason: impl Into<String>) -> ApiError {
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

/// How keys in the path and the query are written: UTF-8 text (percent-encoded), or base64
/// with `?key_encoding=base64` (for keys that are not UTF-8).
pub(super) fn key_decoder(
    p: &HashMap<String, String>,
) -> Result<impl Fn(&str) -> Result<Bytes, ApiError>, ApiError> {
    let base64 = match p.get("key_encoding").map(String::as_str) {
        None | Some("utf8") | Some("utf-8") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(json_err(
                StatusCode::BAD_REQUEST,
                format!("?key_encoding={other}: expected utf8 or base64"),
            ))
        }
    };
    Ok(move |text: &str| -> Result<Bytes, ApiError> {
        if !base64 {
            return Ok(Bytes::copy_from_slice(text.as_bytes()));
        }
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(|e| json_err(StatusCode::BAD_REQUEST, format!("invalid base64 key: {e}")))
    })
}

/// The key of the path after `prefix`, decoded per `?key_encoding`.
pub(super) fn request_key(
    uri: &Uri,
    prefix: &str,
    p: &HashMap<String, String>,
) -> Result<Bytes, ApiError> {
    key_decoder(p)?(&key_of(uri, prefix)?)
}

pub(super) fn params(uri: &Uri) -> Result<HashMap<String, String>, ApiError> {
    query_params(uri).map_err(ApiError::json)
}

pub(super) fn consistency(p: &HashMap<String, String>) -> Result<Consistency, ApiError> {
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
pub(super) fn base64_encoding(p: &HashMap<String, String>) -> Result<bool, ApiError> {
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
pub(super) fn encode_value(obj: &mut serde_json::Map<String, Value>, value: &[u8], base64: bool) {
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

pub(super) fn with_revision(mut resp: Response, revision: u64) -> Response {
    resp.headers_mut().insert(REVISION, header_value(revision));
    resp
}

fn etag(mod_revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{mod_revision}\""))
        .unwrap_or(HeaderValue::from_static("\"0\""))
}

pub(crate) async fn get(State(s): State<RestState>, uri: Uri) -> Result<Response, ApiError> {
    let p = params(&uri)?;
    let key = request_key(&uri, "/v1/kv", &p)?;
    let consistency = consistency(&p)?;
    if super::range::is_range(&p)? {
        return super::range::list(&s, key, &p, consistency, key_decoder(&p)?).await;
    }
    if key.is_empty() {
        return Err(json_err(
            StatusCode::BAD_REQUEST,
            "missing key: use /v1/kv/<key>, or ?prefix=true to list",
        ));
    }
    let req = GetRequest {
        key,
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

/// `?<name>=<revision>`: 0 (the current one) if absent.
pub(super) fn revision_param(p: &HashMap<String, String>, name: &str) -> Result<u64, ApiError> {
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
pub(super) fn key_text(key: &[u8]) -> (std::borrow::Cow<'_, str>, Option<&'static str>) {
    match std::str::from_utf8(key) {
        Ok(text) => (text.into(), None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(key).into(),
            Some("base64"),
        ),
    }
}

pub(crate) async fn put(
    State(s): State<RestState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let p = params(&uri)?;
    let key = request_key(&uri, "/v1/kv", &p)?;
    if key.is_empty() {
        return Err(json_err(
            StatusCode::BAD_REQUEST,
            "missing key: use /v1/kv/<key>",
        ));
    }
    let condition = precondition(&headers)?;
    let lease = match p.get("lease") {
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
        ..Put::new(key, value)
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
    let p = params(&uri)?;
    let key = request_key(&uri, "/v1/kv", &p)?;
    let condition = precondition(&headers)?;
    if super::range::is_range(&p)? {
        if condition.is_some() {
            return Err(json_err(
                StatusCode::BAD_REQUEST,
                "conditions apply to single keys, not to ranges",
            ));
        }
        let range = match flag(&p, "prefix")? {
            // A prefix stays a prefix (the log's short form for it).
            true if !p.contains_key("start_after") => KeyRange::Prefix(key),
            _ => super::range::key_range(key, &p, key_decoder(&p)?)?,
        };
        let d = DeleteRange {
            range,
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
    let d = Delete { key, condition };
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
    /// A put's lease (0 or absent: none).
    #[serde(default)]
    lease: i64,
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
    let compares = req
        .compare
        .into_iter()
        .map(|c| txn_compare(c, &decode))
        .collect::<Result<Vec<_>, _>>()?;
    let writes = |list: Vec<TxnWrite>| -> Result<Vec<TxnOp>, ApiError> {
        list.into_iter()
            .map(|w| match (w.op.as_str(), w.value) {
                ("put", Some(v)) => Ok(TxnOp::Put(Put {
                    lease: w.lease,
                    ..Put::new(w.key.into(), decode(&v)?)
                })),
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

/// One comparison of a `/v1/txn` body (values decoded by `decode`).
fn txn_compare(
    c: TxnCompare,
    decode: &impl Fn(&str) -> Result<Bytes, ApiError>,
) -> Result<Compare, ApiError> {
    let bad = |m: String| json_err(StatusCode::BAD_REQUEST, m);
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
        "create_revision" => CompareTarget::CreateRevision(number(&c.value)?),
        "lease" => CompareTarget::Lease(number(&c.value)? as i64),
        "version" => CompareTarget::Version(number(&c.value)?),
        "exists" => CompareTarget::Exists(
            c.value
                .as_bool()
                .ok_or_else(|| bad("compare on exists needs true or false".into()))?,
        ),
        other => {
            return Err(bad(format!(
                "compare target {other:?}: expected value, mod_revision, create_revision, \
                 version, lease or exists"
            )))
        }
    };
    Ok(Compare {
        range: KeyRange::Key(c.key.into()),
        op,
        target,
    })
}
