//! `/v1/members`: list the members, add one (voter or learner), promote a learner, remove one.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{bad_request, read_body, ApiError, ApiState};
use crate::config::{canonical_peer_url, parse_node_id};
use coordinate_raft::node::MemberChange;

/// Largest body accepted where a peer URL or a small JSON document is expected.
pub(crate) const MAX_SMALL_BODY: usize = 4096;

/// Parses a node id strictly (see [`parse_node_id`]).
pub(crate) fn node_id(s: &str) -> Result<u64, ApiError> {
    parse_node_id(s).map_err(bad_request)
}

/// Checks an `http://host:port` peer URL; returns the one spelling members are stored under.
pub(crate) fn peer_url(url: &str) -> Result<String, ApiError> {
    canonical_peer_url(url).map_err(|e| bad_request(format!("invalid peer URL {url:?}: {e}")))
}

pub(crate) async fn list(State(s): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(s.node.members().await?).into_response())
}

/// Body of `POST /v1/members`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    id: u64,
    peer_url: String,
    #[serde(default)]
    learner: bool,
}

pub(crate) async fn add(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, MAX_SMALL_BODY)
        .await
        .map_err(ApiError::json)?;
    let m: NewMember = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("invalid JSON member: {e}")).json())?;
    let id = node_id(&m.id.to_string()).map_err(ApiError::json)?;
    let url = peer_url(&m.peer_url).map_err(ApiError::json)?;
    let change = MemberChange::Add {
        id,
        url,
        learner: m.learner,
    };
    s.node
        .change_members(change)
        .await
        .map_err(|e| ApiError::from(e).json())?;
    let members = s.node.members().await?;
    Ok((StatusCode::CREATED, Json(members)).into_response())
}

pub(crate) async fn remove(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = node_id(&id).map_err(ApiError::json)?;
    s.node
        .change_members(MemberChange::Remove { id })
        .await
        .map_err(|e| ApiError::from(e).json())?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn promote(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = node_id(&id).map_err(ApiError::json)?;
    s.node
        .change_members(MemberChange::Promote { id })
        .await
        .map_err(|e| ApiError::from(e).json())?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
