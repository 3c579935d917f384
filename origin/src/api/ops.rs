//! Operations endpoints: liveness, readiness, metrics. None needs a token (bind `/metrics` to
//! an internal address in production).

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use http::header::CONTENT_TYPE;
use serde_json::json;

use crate::api::{error::ApiError, state::AppState};

/// Alive: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready for new clients: the backend is reachable and the instance is not draining.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if state.drain.is_draining() {
        return Err(ApiError::Unavailable("the instance is draining"));
    }
    if !state.backend.is_ready() {
        return Err(ApiError::Unavailable("redis is not reachable"));
    }
    Ok(Json(json!({ "status": "ready" })))
}

/// Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
