//! The client HTTP API. This is the only module that maps errors to status codes.
//!
//! Root namespace (the seed's API): `PUT /<key>` writes, `GET /<key>` reads linearizably,
//! `POST /<id>` / `DELETE /<id>` change membership. `<key>` is the percent-decoded path after
//! the first `/`, and may contain `/`. Names under `v1/`, and `health` and `metrics`, belong to
//! the operator endpoints and are refused as keys.
//!
//! Status codes: 204 write applied; 200 value; 404 no such key; 400 malformed request; 413
//! value too large; 503 no leader (write not applied) or read not confirmed; 504 timed out
//! after the write was handed to raft (outcome unknown).

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::config::peer_addr;
use crate::error::Error;
use crate::kv::Command;
use crate::raft::node::MemberChange;
use crate::raft::{NodeHandle, RequestError};

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    pub node: NodeHandle,
    pub max_value_size: usize,
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/members", get(list_members).post(add_member))
        .route("/v1/members/{id}", axum::routing::delete(remove_member))
        .route(
            "/v1/members/{id}/promote",
            axum::routing::post(promote_member),
        )
        .fallback(root)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// An error response: a status and a one-line reason.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.1;
        body.push('\n');
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        let status = match e {
            RequestError::NoLeader | RequestError::ReadTimeout | RequestError::Shutdown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RequestError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            RequestError::Rejected(Error::Conflict(_)) => StatusCode::CONFLICT,
            RequestError::Rejected(Error::NotFound(_)) => StatusCode::NOT_FOUND,
            RequestError::Rejected(Error::Misdirected(_)) => StatusCode::MISDIRECTED_REQUEST,
            RequestError::Rejected(Error::Invalid(_)) => StatusCode::BAD_REQUEST,
            RequestError::Rejected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

async fn status(State(s): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(s.node.status().await?).into_response())
}

async fn root(
    State(s): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = uri.path().strip_prefix('/').unwrap_or(uri.path());
    if raw.is_empty() {
        return Err(bad_request("missing key: use /<key>"));
    }
    let key = percent_decode(raw)?;
    if key == "health" || key == "metrics" || key == "v1" || key.starts_with("v1/") {
        if method == Method::PUT {
            return Err(bad_request(format!(
                "the key {key:?} is reserved for operator endpoints; use /v1/kv/ for such names"
            )));
        }
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: /{key}"),
        ));
    }
    match method {
        Method::PUT => {
            let value = read_body(&headers, body, s.max_value_size).await?;
            s.node.propose(Command::Put { key, value }.encode()).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Method::GET | Method::HEAD => match s.node.read(key).await? {
            Some(v) => Ok((StatusCode::OK, v).into_response()),
            None => Err(ApiError(StatusCode::NOT_FOUND, "key not found".into())),
        },
        Method::POST => {
            let id = node_id(&key)?;
            let body = read_body(&headers, body, MAX_URL_BODY).await?;
            let url = std::str::from_utf8(&body)
                .map_err(|_| bad_request("the body must be the new node's peer URL"))?
                .trim()
                .to_string();
            validate_peer_url(&url)?;
            s.node
                .change_members(MemberChange::Add {
                    id,
                    url,
                    learner: false,
                })
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Method::DELETE => {
            let id = node_id(&key)?;
            s.node.change_members(MemberChange::Remove { id }).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not supported on /<key>"),
        )),
    }
}

/// Largest body accepted where a peer URL or a small JSON document is expected.
const MAX_URL_BODY: usize = 4096;

fn node_id(s: &str) -> Result<u64, ApiError> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err(bad_request(format!(
            "{s:?} is not a node id (a positive integer); POST and DELETE on the root API change membership"
        ))),
        Ok(id) => Ok(id),
    }
}

fn validate_peer_url(url: &str) -> Result<(), ApiError> {
    peer_addr(url)
        .map(|_| ())
        .map_err(|e| bad_request(format!("invalid peer URL {url:?}: {e}")))
}

async fn list_members(State(s): State<ApiState>) -> Result<Response, ApiError> {
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

async fn add_member(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&headers, body, MAX_URL_BODY).await?;
    let m: NewMember = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("invalid JSON member: {e}")))?;
    if m.id == 0 {
        return Err(bad_request("node id 0 is not valid"));
    }
    validate_peer_url(&m.peer_url)?;
    s.node
        .change_members(MemberChange::Add {
            id: m.id,
            url: m.peer_url,
            learner: m.learner,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(s.node.members().await?)).into_response())
}

async fn remove_member(
    State(s): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let id = node_id(&id)?;
    s.node.change_members(MemberChange::Remove { id }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn promote_member(
    State(s): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let id = node_id(&id)?;
    s.node.change_members(MemberChange::Promote { id }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("value larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit")
        {
            too_large()
        } else {
            bad_request(format!("reading the request body: {e}"))
        }
    })
}

/// Decodes `%XX` escapes; the result must be UTF-8.
fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad_request("malformed percent-encoding in the key"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad_request("the key is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b/c").ok().as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("%E2%9C%93").ok().as_deref(), Some("✓"));
        assert!(percent_decode("bad%2").is_err());
        assert!(percent_decode("bad%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
