//! `/v1/members`: list the members, add one (voter or learner), promote a learner, remove one.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{bad_request, read_body, ApiError, ApiState};
use crate::config::peer_addr;
use crate::raft::node::MemberChange;

/// Largest body accepted where a peer URL or a small JSON document is expected.
pub(crate) const MAX_SMALL_BODY: usize = 4096;

/// Parses a node id: a positive integer.
pub(crate) fn node_id(s: &str) -> Result<u64, ApiError> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err(bad_request(format!(
            "{s:?} is not a node id (a positive integer)"
        ))),
        Ok(id) => Ok(id),
    }
}

/// Checks that `url` is an `http://host:port` peer URL.
pub(crate) fn validate_peer_url(url: &str) -> Result<(), ApiError> {
    peer_addr(url)
        .map(|_| ())
        .map_err(|e| bad_request(format!("invalid peer URL {url:?}: {e}")))
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
    if m.id == 0 {
        return Err(bad_request("node id 0 is not valid").json());
    }
    validate_peer_url(&m.peer_url).map_err(ApiError::json)?;
    let change = MemberChange::Add {
        id: m.id,
        url: m.peer_url,
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
