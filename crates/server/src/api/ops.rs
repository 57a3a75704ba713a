//! The operator's view: `/health`, `/v1/status`, `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{v1, ApiError, RestState};
use crate::metrics::METRICS;
use crate::service::Health;

/// 200 when this node knows a leader and has applied everything it knows is committed;
/// 503 with the reason otherwise.
pub(crate) async fn health(State(s): State<RestState>) -> Response {
    match s.services.status.health().await {
        Health::Ok { leader } => {
            Json(serde_json::json!({ "health": "ok", "leader": leader })).into_response()
        }
        Health::Unhealthy { reason } => unhealthy(&reason),
    }
}

fn unhealthy(reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "health": "unhealthy", "reason": reason })),
    )
        .into_response()
}

pub(crate) async fn status(State(s): State<RestState>) -> Result<Response, ApiError> {
    let status = s.services.status.status().await.map_err(v1)?;
    Ok(Json(status).into_response())
}

pub(crate) async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        METRICS.render(),
    )
        .into_response()
}
