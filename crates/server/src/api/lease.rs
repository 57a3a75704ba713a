//! `/v1/lease`, `/v1/compact` and `/v1/alarms`: leases, compaction of the history, and the
//! alarms (NOSPACE). Errors are JSON.
//!
//! - `POST /v1/lease` `{"ttl": <seconds>, "id": <optional id>}`: grant; answers the id and
//!   the TTL granted (at least 2 s).
//! - `GET /v1/lease`: every lease's id. `GET /v1/lease/<id>?keys=true`: its time left, its
//!   granted TTL and (if asked) its keys; 404 if it does not exist (any more).
//! - `POST /v1/lease/<id>/keep-alive`: restarts its TTL. `DELETE /v1/lease/<id>`: revokes
//!   it, deleting its keys in one revision.
//! - `POST /v1/compact` `{"revision": N}`: forget every revision before N, on every node.
//! - `GET /v1/alarms`: the alarms raised; `DELETE /v1/alarms`: disarm NOSPACE (after
//!   compacting and deleting enough; a write above the quota raises it again).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{flag, query_params, read_body, v1, ApiError, RestState};
use crate::kv::{Alarm, AlarmKind, LeaseId};

/// Largest body of these endpoints (a few numbers of JSON).
const MAX_BODY: usize = 4096;

fn bad(reason: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, reason).json()
}

/// A small JSON object body.
async fn json_body(
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes = read_body(headers, body, MAX_BODY)
        .await
        .map_err(ApiError::json)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("invalid JSON: {e}"))),
    }
}

/// An integer field of a JSON body (`None` if absent).
fn int_field(obj: &serde_json::Map<String, Value>, name: &str) -> Result<Option<i64>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(format!("{name}: {v} is not an integer"))),
    }
}

fn lease_id(text: &str) -> Result<LeaseId, ApiError> {
    text.parse::<LeaseId>()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| bad(format!("lease id {text:?}: expected a positive integer")))
}

pub(crate) async fn grant(
    State(s): State<RestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let obj = json_body(&headers, body).await?;
    let ttl = int_field(&obj, "ttl")?.ok_or_else(|| bad("missing ttl (seconds)"))?;
    if ttl <= 0 {
        return Err(bad(format!("ttl {ttl}: must be positive")));
    }
    let id = int_field(&obj, "id")?.unwrap_or(0);
    let granted = s.services.lease.grant(id, ttl).await.map_err(v1)?;
    Ok(Json(json!({ "id": granted.id, "ttl": granted.ttl })).into_response())
}

pub(crate) async fn list(State(s): State<RestState>) -> Result<Response, ApiError> {
    let (ids, revision) = s.services.lease.list().await.map_err(v1)?;
    Ok(Json(json!({ "leases": ids, "revision": revision })).into_response())
}

pub(crate) async fn time_to_live(
    State(s): State<RestState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let id = lease_id(&id)?;
    let keys = flag(&query_params(&uri).map_err(ApiError::json)?, "keys")?;
    let Some(t) = s.services.lease.time_to_live(id, keys).await.map_err(v1)? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("lease {id} not found")).json());
    };
    let mut body = json!({
        "id": t.id,
        "ttl": t.ttl,
        "granted_ttl": t.granted_ttl,
        "revision": t.revision,
    });
    if keys {
        let keys: Vec<Value> = t
            .keys
            .iter()
            .map(|k| Value::String(String::from_utf8_lossy(k).into_owned()))
            .collect();
        body["keys"] = Value::Array(keys);
    }
    Ok(Json(body).into_response())
}

pub(crate) async fn keep_alive(
    State(s): State<RestState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = lease_id(&id)?;
    let ttl = s.services.lease.keep_alive(id).await.map_err(v1)?;
    Ok(Json(json!({ "id": id, "ttl": ttl })).into_response())
}

pub(crate) async fn revoke(
    State(s): State<RestState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = lease_id(&id)?;
    let done = s.services.lease.revoke(id).await.map_err(v1)?;
    let body = json!({ "revision": done.revision, "deleted": done.deleted });
    Ok(Json(body).into_response())
}

pub(crate) async fn compact(
    State(s): State<RestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let obj = json_body(&headers, body).await?;
    let revision = int_field(&obj, "revision")?
        .filter(|&r| r > 0)
        .ok_or_else(|| bad("missing revision: a positive revision to compact to"))?;
    let revision = s.services.kv.compact(revision as u64).await.map_err(v1)?;
    Ok(Json(json!({ "compact_revision": revision })).into_response())
}

fn alarms_json(alarms: &[Alarm]) -> Value {
    let list: Vec<Value> = alarms
        .iter()
        .map(|a| {
            let kind = match a.kind {
                AlarmKind::NoSpace => "NOSPACE",
            };
            json!({ "member": a.member, "alarm": kind })
        })
        .collect();
    Value::Array(list)
}

pub(crate) async fn alarms(State(s): State<RestState>) -> Result<Response, ApiError> {
    let (alarms, revision) = s.services.kv.alarms().await.map_err(v1)?;
    let body = json!({ "alarms": alarms_json(&alarms), "revision": revision });
    Ok(Json(body).into_response())
}

pub(crate) async fn disarm(State(s): State<RestState>) -> Result<Response, ApiError> {
    let left = s.services.kv.disarm(AlarmKind::NoSpace).await.map_err(v1)?;
    Ok(Json(json!({ "alarms": alarms_json(&left) })).into_response())
}
