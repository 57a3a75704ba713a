//! `/v1/members`: list the members (with the name and client URLs each published), add one
//! (voter or learner), promote a learner, remove one.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{bad_request, read_body, v1, ApiError, RestState};
use crate::service::{
    AddMemberRequest, ListMembersResponse, MemberInfo, PromoteMemberRequest, RemoveMemberRequest,
};
use coordinate_raft::peers::{canonical_peer_url, parse_node_id};

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

/// `GET /v1/members`. (Its one possible error, shutting down, is plain text, as it always
/// was.)
pub(crate) async fn list(State(s): State<RestState>) -> Result<Response, ApiError> {
    let list = s.services.members.list().await?;
    Ok(Json(shown(&list)).into_response())
}

/// A member as `/v1/members` shows it: the node's view, and what the member published.
#[derive(serde::Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    info: &'a MemberInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_urls: Option<&'a [String]>,
}

fn shown(list: &ListMembersResponse) -> Vec<Shown<'_>> {
    list.members
        .iter()
        .map(|info| {
            let published = list.attributes.get(&info.id);
            Shown {
                info,
                name: published.map(|a| a.name.as_str()),
                client_urls: published.map(|a| a.client_urls.as_slice()),
            }
        })
        .collect()
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

/// `POST /v1/members`: 201 with the member list once the addition is applied.
pub(crate) async fn add(
    State(s): State<RestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, MAX_SMALL_BODY)
        .await
        .map_err(ApiError::json)?;
    let m: NewMember = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("invalid JSON member: {e}")).json())?;
    let id = node_id(&m.id.to_string()).map_err(ApiError::json)?;
    let req = AddMemberRequest {
        id,
        peer_url: peer_url(&m.peer_url).map_err(ApiError::json)?,
        learner: m.learner,
    };
    s.services.members.add(req).await.map_err(v1)?;
    let list = s.services.members.list().await?;
    Ok((StatusCode::CREATED, Json(shown(&list))).into_response())
}

pub(crate) async fn remove(
    State(s): State<RestState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = node_id(&id).map_err(ApiError::json)?;
    let req = RemoveMemberRequest { id };
    s.services.members.remove(req).await.map_err(v1)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn promote(
    State(s): State<RestState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = node_id(&id).map_err(ApiError::json)?;
    let req = PromoteMemberRequest { id };
    s.services.members.promote(req).await.map_err(v1)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
