//! [`ApiError`]: an HTTP error response, and the one place a [`ServiceError`] becomes an HTTP
//! status and body. Handlers never choose a status for a service error; they only say whether
//! their namespace answers in JSON (`/v1`) or plain text (the root API).
//!
//! | kind | status |
//! |---|---|
//! | invalid | 400 |
//! | not found | 404 |
//! | conflict | 409 |
//! | precondition failed | 412, with `current_revision` and `X-Coordinate-Revision` |
//! | misdirected | 421 |
//! | compacted (watch) | 410, with `oldest_revision` |
//! | timeout: outcome unknown | 504 |
//! | no leader, read timeout, shutting down, too many watchers | 503 |
//! | internal | 500 |

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{header_value, REVISION};
use crate::kv::Refusal;
use crate::service::{MemberRefusal, Rejection, ServiceError, Unavailable};

/// An error response: a status and a one-line reason.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) reason: String,
    /// Render as JSON (`/v1`) rather than plain text (root API).
    json: bool,
    /// Extra JSON fields (e.g. the current revision of a failed condition).
    extra: Option<serde_json::Value>,
    /// The store revision, sent as `X-Coordinate-Revision`.
    revision: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError {
            status,
            reason: reason.into(),
            json: false,
            extra: None,
            revision: None,
        }
    }

    /// The one-line reason.
    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }

    /// Marks the error to be rendered as JSON.
    pub(crate) fn json(mut self) -> ApiError {
        self.json = true;
        self
    }

    /// Adds fields to the JSON body.
    pub(crate) fn with(mut self, extra: serde_json::Value) -> ApiError {
        self.json = true;
        self.extra = Some(extra);
        self
    }

    /// Sends the store revision the answer was decided at.
    pub(crate) fn at_revision(mut self, revision: u64) -> ApiError {
        self.revision = Some(revision);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let revision = self.revision;
        let mut resp = if self.json {
            let mut body = json!({ "error": self.reason });
            if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
                (self.extra, body.as_object_mut())
            {
                obj.extend(extra);
            }
            (self.status, axum::Json(body)).into_response()
        } else {
            let mut body = self.reason;
            body.push('\n');
            (
                self.status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                body,
            )
                .into_response()
        };
        if let Some(revision) = revision {
            resp.headers_mut().insert(REVISION, header_value(revision));
        }
        resp
    }
}

/// The HTTP status of each kind of service error.
fn status_of(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::Rejected(r) => match r {
            Rejection::Invalid(_) => StatusCode::BAD_REQUEST,
            Rejection::NotFound(_) => StatusCode::NOT_FOUND,
            Rejection::Conflict(_) => StatusCode::CONFLICT,
            Rejection::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            // Only an absent member is "not found"; the rest contradict the membership.
            Rejection::Member(MemberRefusal::NotMember, _) => StatusCode::NOT_FOUND,
            Rejection::Member(..) => StatusCode::CONFLICT,
            Rejection::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Rejection::Compacted { .. } => StatusCode::GONE,
            Rejection::Refused(refusal) => match refusal {
                Refusal::LeaseNotFound(_) | Refusal::KeyNotFound => StatusCode::NOT_FOUND,
                Refusal::LeaseExists(_) => StatusCode::CONFLICT,
                Refusal::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
                Refusal::Compacted { .. } => StatusCode::GONE,
                Refusal::FutureRevision { .. } => StatusCode::BAD_REQUEST,
            },
        },
        ServiceError::Unavailable(u) => match u {
            Unavailable::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Unavailable::NoLeader
            | Unavailable::ReadTimeout
            | Unavailable::Shutdown
            | Unavailable::TooManyWatchers { .. }
            | Unavailable::WatchHubClosed => StatusCode::SERVICE_UNAVAILABLE,
        },
        ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A service error as plain text (the root API); `.json()` for `/v1`.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        let err = ApiError::new(status_of(&e), e.to_string());
        match e {
            ServiceError::Rejected(Rejection::PreconditionFailed { current, revision }) => err
                .with(json!({ "current_revision": current }))
                .at_revision(revision),
            ServiceError::Rejected(Rejection::Compacted { oldest, .. }) => {
                err.with(json!({ "oldest_revision": oldest }))
            }
            ServiceError::Rejected(Rejection::Refused(Refusal::Compacted { compact_revision })) => {
                err.with(json!({ "oldest_revision": compact_revision }))
            }
            ServiceError::Rejected(Rejection::Refused(Refusal::FutureRevision { current })) => {
                err.at_revision(current)
            }
            _ => err,
        }
    }
}

/// A service error as JSON (the `/v1` API).
pub(crate) fn v1(e: ServiceError) -> ApiError {
    ApiError::from(e).json()
}

pub(crate) fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Internal;

    async fn render(e: ApiError) -> (u16, Option<String>, String) {
        let resp = e.into_response();
        let status = resp.status().as_u16();
        let revision = resp
            .headers()
            .get(REVISION)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await;
        let body = body.map(|b| String::from_utf8_lossy(&b).into_owned());
        (status, revision, body.unwrap_or_default())
    }

    #[tokio::test]
    async fn every_kind_has_its_status_and_text() {
        let cases: Vec<(ServiceError, u16, &str)> = vec![
            (
                Rejection::Invalid("node id 0 is not valid".into()).into(),
                400,
                "invalid request: node id 0 is not valid",
            ),
            (
                Rejection::NotFound("node 9 is not a member".into()).into(),
                404,
                "node 9 is not a member",
            ),
            (
                Rejection::Conflict("node 2 is already a member".into()).into(),
                409,
                "node 2 is already a member",
            ),
            (
                Rejection::Misdirected("ask another node".into()).into(),
                421,
                "ask another node",
            ),
            (
                Unavailable::NoLeader.into(),
                503,
                "no leader is known; the request was not applied",
            ),
            (
                Unavailable::Timeout.into(),
                504,
                "timed out waiting for a quorum; outcome unknown: the write may still be applied",
            ),
            (
                Unavailable::ReadTimeout.into(),
                503,
                "timed out waiting for a quorum to confirm the read",
            ),
            (
                Unavailable::Shutdown.into(),
                503,
                "the node is shutting down; the request was not applied",
            ),
            (
                Unavailable::TooManyWatchers { limit: 3 }.into(),
                503,
                "too many watchers: the limit of 3 (--max-watchers) is reached; try again later",
            ),
            (
                Unavailable::WatchHubClosed.into(),
                503,
                "the node is shutting down",
            ),
            (
                Internal::Node(Box::new(coordinate_raft::Error::Raft(
                    ::raft::Error::ProposalDropped,
                )))
                .into(),
                500,
                "internal error: raft: raft: proposal dropped",
            ),
            (
                Internal::UnexpectedOutcome {
                    command: "a put",
                    outcome: "Txn".into(),
                }
                .into(),
                500,
                "unexpected outcome of a put: Txn",
            ),
        ];
        for (e, status, text) in cases {
            let (got, revision, body) = render(ApiError::from(e)).await;
            assert_eq!((got, body.as_str()), (status, format!("{text}\n").as_str()));
            assert_eq!(revision, None);
        }
    }

    #[tokio::test]
    async fn v1_errors_are_json() {
        let (status, _, body) = render(v1(Unavailable::Timeout.into())).await;
        assert_eq!(status, 504);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            json!({"error": "timed out waiting for a quorum; outcome unknown: the write may still be applied"})
        );
    }

    #[tokio::test]
    async fn a_failed_precondition_carries_both_revisions() {
        let e = Rejection::PreconditionFailed {
            current: 4,
            revision: 11,
        };
        let (status, revision, body) = render(v1(e.into())).await;
        assert_eq!(status, 412);
        assert_eq!(revision.as_deref(), Some("11"));
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            json!({"error": "precondition failed: the key's mod_revision is 4", "current_revision": 4})
        );
    }

    #[tokio::test]
    async fn a_compacted_watch_start_names_the_oldest_revision() {
        let e = Rejection::Compacted {
            requested: 2,
            oldest: 5,
        };
        let (status, _, body) = render(v1(e.into())).await;
        assert_eq!(status, 410);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            json!({"error": "revision 2 is no longer available to watch; the oldest is 5", "oldest_revision": 5})
        );
    }
}
