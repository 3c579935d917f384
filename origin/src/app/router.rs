//! The API's routes, in one table.

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    response::{IntoResponse, Response},
    routing::{any, delete, get, post},
};
use http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api::{
    chat, driver_ws, edge_link,
    error::{ApiError, ServerFailure},
    front, ops, polling, rider_sse, rides,
    state::AppState,
    surge,
};

/// The whole API. Tests can drive it with `tower::ServiceExt::oneshot`.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The API and `extra` routes (an [`Extension`](crate::app::extension::Extension)'s), inside the
/// same layers and before the 404 fallback.
pub fn router_with(state: AppState, extra: Router) -> Router {
    let cors = cors_layer(&state.config.cors_origins);
    let max_body = state.config.max_body_bytes;
    // WebSocket paths take any method, so that a wrong one meets the same checks as an upgrade
    // and a JSON 405 after them (PROTOCOL v1.1), not the router's bare one.
    let routes = Router::new()
        .route("/ws/rides", any(driver_ws::upgrade))
        .route("/ws/chat/{ride_id}", any(chat::upgrade))
        .route("/api/sse/drivers/{driver_id}/location", get(rider_sse::driver_location))
        .route("/api/sse/surge/{zone_id}", get(rider_sse::surge_zone))
        .route("/api/sse/rides/{ride_id}", get(rider_sse::ride_status))
        .route("/api/drivers/{driver_id}/location", get(polling::driver_location))
        .route("/api/surge/{zone_id}", post(surge::set))
        .route("/api/rides", post(rides::create))
        .route("/api/rides/{ride_id}", delete(rides::cancel))
        .route("/edge/v1/drivers/{driver_id}", any(edge_link::driver_link))
        .route("/edge/v1/surge/{zone_id}", any(edge_link::surge_link))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .merge(extra)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(front::refuse_large_heads))
        .layer(middleware::map_response(log_server_failures));
    match cors {
        Some(cors) => routes.layer(cors),
        None => routes,
    }
}

async fn not_found(method: Method, uri: http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not served on {}", uri.path()))
}

/// Client errors are the client's business; server failures are logged here, once.
async fn log_server_failures(response: Response) -> Response {
    if let Some(ServerFailure(detail)) = response.extensions().get::<ServerFailure>() {
        tracing::warn!(status = response.status().as_u16(), %detail, "request failed");
    }
    response.into_response()
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("last-event-id")])
            .expose_headers([header::ETAG, header::RETRY_AFTER]),
    )
}
