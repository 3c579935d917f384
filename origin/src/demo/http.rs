//! The demo's routes, mounted only in dev mode (they hand out tokens to anyone):
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `GET /demo` | 302 to `/demo/` |
//! | `GET /demo/`, `/demo/rider`, `/demo/driver`, `/demo/fleet` | the pages |
//! | `GET /demo/assets/{file}` | their script and styles |
//! | `GET /demo/city.json` | the map |
//! | `POST /demo/token` | a rider or driver token signed with the dev secret |
//! | `GET /demo/sse/fleet` | the fleet feed, one `fleet` event a second |
//!
//! Everything else the pages do goes through the public API, as any app would.

use std::{convert::Infallible, sync::Arc};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State, rejection::BytesRejection},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use ridecast_protocol::{Claims, Id, Role, sse};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Demo;
use crate::{
    api::{error::ApiError, rider_sse, state::AppState},
    base::clock,
};

/// Lifetime of a token from `POST /demo/token`: a day of playing with the demo.
const TOKEN_TTL_SECS: u64 = 86_400;

/// The pages, each a whole HTML document.
const INDEX: &str = include_str!("assets/index.html");
const RIDER: &str = include_str!("assets/rider.html");
const DRIVER: &str = include_str!("assets/driver.html");
const FLEET: &str = include_str!("assets/fleet.html");

/// What `/demo/assets/{file}` serves: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("assets/app.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("assets/style.css")),
];

/// The demo's routes, for the API router to merge.
pub fn routes(demo: Arc<Demo>) -> Router<AppState> {
    Router::new()
        .route("/", get(to_the_demo))
        .route("/demo", get(to_the_demo))
        .route("/demo/", get(|| async { page(INDEX) }))
        .route("/demo/rider", get(|| async { page(RIDER) }))
        .route("/demo/driver", get(|| async { page(DRIVER) }))
        .route("/demo/fleet", get(|| async { page(FLEET) }))
        .route("/demo/assets/{file}", get(asset))
        .route("/demo/city.json", get(city))
        .route("/demo/token", post(token))
        .route("/demo/sse/fleet", get(fleet))
        .with_state(demo)
}

async fn to_the_demo() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/demo/")]).into_response()
}

/// Served fresh every time: the pages change with the binary, and they are small.
fn page(html: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], html).into_response()
}

async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, content) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::NotFound(format!("no demo asset {file:?}")))?;
    Ok(([(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, "no-cache")], *content).into_response())
}

async fn city(State(demo): State<Arc<Demo>>) -> Response {
    let headers = [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")];
    (headers, demo.city_json.clone()).into_response()
}

/// The body of `POST /demo/token`.
#[derive(Debug, Deserialize)]
struct TokenRequest {
    role: String,
    #[serde(default)]
    sub: Option<String>,
}

#[derive(Debug, Serialize)]
struct IssuedToken {
    token: String,
    sub: Id,
}

/// A rider or driver token for `sub` (a random `web-<hex>` when absent), signed with the dev
/// secret, valid for a day. Rider tokens track nobody: a ride's `driver_assigned` status brings
/// the tracking token, as in production. A bad body is 400 `invalid_message`, a bad `sub` 400
/// `invalid_id`.
async fn token(State(demo): State<Arc<Demo>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    const EXPECTED: &str = r#"expected {"role":"rider"|"driver","sub":"<optional id>"}"#;
    let value: serde_json::Value =
        serde_json::from_slice(&body?).map_err(|e| ApiError::BadRequest(format!("not JSON ({e}); {EXPECTED}")))?;
    // Through a `Value`: a derived struct would also accept an array.
    if !value.is_object() {
        return Err(ApiError::BadRequest(format!("the body must be a JSON object; {EXPECTED}")));
    }
    let request: TokenRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::BadRequest(format!("not a token request ({e}); {EXPECTED}")))?;
    let role = match request.role.as_str() {
        "rider" => Role::Rider,
        "driver" => Role::Driver,
        other => return Err(ApiError::BadRequest(format!("role {other:?} is not offered here; {EXPECTED}"))),
    };
    let sub = request.sub.unwrap_or_else(|| format!("web-{}", crate::base::random::hex_or_clock::<6>()));
    let sub = Id::parse(&sub).map_err(ApiError::invalid_id("sub"))?;
    let claims = Claims { sub: sub.clone(), role, exp: clock::now_secs() + TOKEN_TTL_SECS, drv: None, ride: None };
    let token = demo.keys.mint(&claims).map_err(ApiError::Signing)?;
    let mut response = Json(IssuedToken { token, sub }).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /demo/sse/fleet`: `retry:` first, then the feed's frames, latest only, until the
/// instance drains. Refused like any stream when draining (200 with `retry:`).
async fn fleet(State(demo): State<Arc<Demo>>) -> Response {
    if demo.drain.is_draining() {
        return rider_sse::refusal(demo.sse_retry_ms, "this instance is draining; reconnect");
    }
    let stream = FleetStream {
        first: Some(Bytes::from(sse::retry(demo.sse_retry_ms))),
        frames: demo.feed.watch(),
        drain: demo.drain.token().clone(),
        ended: false,
    };
    let frames = futures_util::stream::unfold(stream, |mut stream| async move {
        let frame = stream.next().await?;
        Some((Ok::<_, Infallible>(frame), stream))
    });
    let mut response = Response::new(Body::from_stream(frames));
    response.headers_mut().extend(rider_sse::sse_headers());
    response
}

/// One page's fleet stream.
struct FleetStream {
    first: Option<Bytes>,
    frames: watch::Receiver<Bytes>,
    drain: CancellationToken,
    ended: bool,
}

impl FleetStream {
    /// The next bytes to write; `None` once the stream is over.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if self.ended {
            return None;
        }
        tokio::select! {
            biased;
            () = self.drain.cancelled() => {
                self.ended = true;
                Some(Bytes::from(sse::comment("server restarting; reconnect")))
            }
            changed = self.frames.changed() => match changed {
                Ok(()) => Some(self.frames.borrow_and_update().clone()),
                Err(_) => None,
            },
        }
    }
}
