//! The seed's root API: `PUT`/`GET /<key>`, `POST /<id>` (body = peer URL), `DELETE /<id>`.
//! `<key>` is the percent-decoded path after the first `/` and may contain `/`. Names under
//! `v1/`, and `health` and `metrics`, belong to the operator endpoints and are refused as keys.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::members::{node_id, peer_url, MAX_SMALL_BODY};
use super::{bad_request, percent_decode, read_body, ApiError, RestState};
use crate::kv::Put;
use crate::service::{AddMemberRequest, Consistency, GetRequest, RemoveMemberRequest};

fn membership_hint(e: ApiError) -> ApiError {
    bad_request(format!(
        "{}; POST and DELETE on the root API change membership (use /v1/kv/ to delete keys)",
        e.reason()
    ))
}

/// The key named by a root-API path: percent-decoded, not empty, not an operator endpoint
/// (a `PUT` there is `400`, anything else `404`).
pub(super) fn root_key(path: &str, method: &Method) -> Result<String, ApiError> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    if raw.is_empty() {
        return Err(bad_request("missing key: use /<key>"));
    }
    let key = percent_decode(raw, false)?;
    if key == "health" || key == "metrics" || key == "v1" || key.starts_with("v1/") {
        if method == Method::PUT {
            return Err(bad_request(format!(
                "the key {key:?} is reserved for operator endpoints; store it through /v1/kv/"
            )));
        }
        let err = ApiError::new(StatusCode::NOT_FOUND, format!("no such endpoint: /{key}"));
        return Err(if key.starts_with("v1") {
            err.json()
        } else {
            err
        });
    }
    Ok(key)
}

pub(crate) async fn handle(
    State(s): State<RestState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = root_key(uri.path(), &method)?;
    match method {
        Method::PUT => {
            let value = read_body(&headers, body, s.max_value_size).await?;
            s.services.kv.put(Put::new(key.into(), value)).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Method::GET => {
            let req = GetRequest {
                key: key.into(),
                revision: 0,
                consistency: Consistency::Linearizable,
            };
            match s.services.kv.get(req).await?.kv {
                Some(e) => Ok((StatusCode::OK, e.value).into_response()),
                None => Err(ApiError::new(StatusCode::NOT_FOUND, "key not found")),
            }
        }
        Method::POST => {
            let id = node_id(&key).map_err(membership_hint)?;
            let body = read_body(&headers, body, MAX_SMALL_BODY).await?;
            let url = std::str::from_utf8(&body)
                .map_err(|_| bad_request("the body must be the new node's peer URL"))?
                .trim();
            let req = AddMemberRequest {
                id,
                peer_url: peer_url(url)?,
                learner: false,
            };
            s.services.members.add(req).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Method::DELETE => {
            let id = node_id(&key).map_err(membership_hint)?;
            s.services
                .members
                .remove(RemoveMemberRequest { id })
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not supported on /<key>"),
        )),
    }
}
