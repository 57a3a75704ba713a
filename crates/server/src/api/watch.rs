//! `GET /v1/watch/<key>`: changes as Server-Sent Events, from any revision the store holds.
//!
//! Each event's `id:` names its place in the stream: `<revision>` for the last event of its
//! revision, `<revision>.<n>` for the n-th of several (a transaction). A browser reconnecting
//! sends the last one back as `Last-Event-ID`, and the watch resumes exactly after it: from
//! the next revision, or from the rest of a partly delivered one.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::kv::{
    base64_encoding, encode_value, json_err, key_decoder, key_text, params, request_key,
};
use super::{flag, v1, ApiError, RestState};
use crate::kv::{Event, KeyRange, KeyValue};
use crate::service::{Position, WatchItem, WatchRequest};

/// Where a reconnecting client resumes: `(revision, events of it to skip)`, from the
/// `Last-Event-ID` it sends back.
fn resume_point(headers: &HeaderMap) -> Result<Option<(u64, usize)>, ApiError> {
    let Some(id) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let bad = || {
        json_err(
            StatusCode::BAD_REQUEST,
            "Last-Event-ID: expected an event id of this API, like 42 or 42.1",
        )
    };
    let id = id.to_str().map_err(|_| bad())?.trim();
    let point = match id.split_once('.') {
        None => id.parse::<u64>().map(|r| (r + 1, 0)),
        Some((rev, n)) => rev
            .parse::<u64>()
            .and_then(|r| n.parse::<usize>().map(|n| (r, n))),
    };
    point.map(Some).map_err(|_| bad())
}

/// The keys watched: the key, a prefix, everything from the key on, or a range.
fn watched_range(key: bytes::Bytes, p: &HashMap<String, String>) -> Result<KeyRange, ApiError> {
    if flag(p, "prefix")? && !p.contains_key("range_end") && !flag(p, "from_key")? {
        return Ok(KeyRange::Prefix(key));
    }
    if super::range::is_range(p)? {
        return super::range::key_range(key, p, key_decoder(p)?);
    }
    if key.is_empty() {
        return Err(json_err(
            StatusCode::BAD_REQUEST,
            "missing key: use /v1/watch/<key>, or ?prefix=true",
        ));
    }
    Ok(KeyRange::Key(key))
}

/// A key's fields for JSON (`prefix` names them: "" or "prev_").
fn put_kv(obj: &mut serde_json::Map<String, Value>, kv: &KeyValue, base64: bool) {
    encode_value(obj, &kv.value, base64);
    obj.insert("create_revision".into(), kv.create_revision.into());
    obj.insert("mod_revision".into(), kv.mod_revision.into());
    obj.insert("version".into(), kv.version.into());
    if kv.lease != 0 {
        obj.insert("lease".into(), kv.lease.into());
    }
}

/// One change as a Server-Sent Event: `put` or `delete`, with its place as the event id.
fn render_event(e: &Event, at: Position, base64: bool, prev_kv: bool) -> SseEvent {
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
    if let (true, Some(prev)) = (prev_kv, &e.prev) {
        let mut p = serde_json::Map::new();
        put_kv(&mut p, prev, base64);
        obj.insert("prev_kv".into(), Value::Object(p));
    }
    let id = match at.last {
        true => e.revision().to_string(),
        false => format!("{}.{}", e.revision(), at.index + 1),
    };
    SseEvent::default()
        .event(kind)
        .id(id)
        .data(Value::Object(obj).to_string())
}

/// The last event of a watcher that fell behind the compaction point.
fn render_compacted(next_revision: u64, compact_revision: u64) -> SseEvent {
    let data = json!({
        "error": "the history this watcher had not read yet was compacted",
        "resume_from_revision": next_revision,
        "compact_revision": compact_revision,
    });
    SseEvent::default().event("error").data(data.to_string())
}

pub(crate) async fn watch(
    State(s): State<RestState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = params(&uri)?;
    let key = request_key(&uri, "/v1/watch", &p)?;
    let range = watched_range(key, &p)?;
    let base64 = base64_encoding(&p)?;
    let prev_kv = flag(&p, "prev_kv")?;
    let from_revision = match p.get("from_revision") {
        None => 0,
        Some(r) => r.parse::<u64>().map_err(|_| {
            json_err(
                StatusCode::BAD_REQUEST,
                format!("?from_revision={r}: expected a revision number"),
            )
        })?,
    };
    let (from_revision, skip) = resume_point(&headers)?.unwrap_or((from_revision, 0));
    let req = WatchRequest {
        skip,
        no_put: flag(&p, "no_put")?,
        no_delete: flag(&p, "no_delete")?,
        ..WatchRequest::new(range, from_revision)
    };
    let watcher = s.services.watch.watch(req).await.map_err(v1)?;
    let stream = futures_util::stream::unfold(watcher, move |mut w| async move {
        let ev = loop {
            match w.next(|e, at| render_event(e, at, base64, prev_kv)).await? {
                WatchItem::Event(ev) => break ev,
                WatchItem::Compacted {
                    next_revision,
                    compact_revision,
                } => break render_compacted(next_revision, compact_revision),
                // Not asked for here (SSE keep-alives say the stream is alive).
                WatchItem::Progress { .. } => continue,
            }
        };
        Some((Ok::<SseEvent, Infallible>(ev), w))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("last-event-id", v.parse().unwrap());
        h
    }

    #[test]
    fn event_ids_resume_after_the_event_they_name() {
        assert_eq!(resume_point(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(resume_point(&header("42")).ok(), Some(Some((43, 0))));
        assert_eq!(resume_point(&header("42.2")).ok(), Some(Some((42, 2))));
        assert!(resume_point(&header("x")).is_err());
        assert!(resume_point(&header("4.x")).is_err());
    }
}
