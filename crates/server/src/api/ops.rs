//! The operator's view: `/health`, `/v1/status`, `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, ApiState};
use crate::metrics::METRICS;

/// 200 when this node knows a leader and has applied everything it knows is committed;
/// 503 with the reason otherwise.
pub(crate) async fn health(State(s): State<ApiState>) -> Response {
    let status = match s.node.status().await {
        Ok(status) => status,
        Err(e) => return unhealthy(&e.to_string()),
    };
    if status.leader == 0 {
        return unhealthy("no leader is known");
    }
    if status.applied_index < status.commit_index {
        return unhealthy(&format!(
            "catching up: applied {} of {} committed entries",
            status.applied_index, status.commit_index
        ));
    }
    Json(serde_json::json!({ "health": "ok", "leader": status.leader })).into_response()
}

fn unhealthy(reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "health": "unhealthy", "reason": reason })),
    )
        .into_response()
}

pub(crate) async fn status(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let status = s
        .node
        .status()
        .await
        .map_err(|e| ApiError::from(e).json())?;
    Ok(Json(status).into_response())
}

pub(crate) async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        METRICS.render(),
    )
        .into_response()
}
