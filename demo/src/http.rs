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
use ridecast_origin::base::clock;
use ridecast_protocol::{Claims, ErrorBody, ErrorCode, Id, InvalidId, Role, TokenError, TokenKeys, sse};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{city::City, feed::FleetFeed, fleet::Fleet};

/// What the demo's routes use. Shared behind an `Arc`.
#[derive(Debug)]
pub struct Demo {
    pub city: Arc<City>,
    /// `GET /demo/city.json`, serialized once.
    pub city_json: Bytes,
    pub fleet: Fleet,
    pub feed: FleetFeed,
    /// Signs the tokens of `POST /demo/token` (the dev secret).
    pub keys: TokenKeys,
    /// Fires when the instance starts draining.
    pub shutdown: CancellationToken,
    pub sse_retry_ms: u64,
}

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

/// The demo's routes, for the origin to serve beside its API.
pub fn routes(demo: Arc<Demo>) -> Router {
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

async fn asset(Path(file): Path<String>) -> Result<Response, DemoError> {
    let (_, content_type, content) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| DemoError::NotFound(format!("no demo asset {file:?}")))?;
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
async fn token(State(demo): State<Arc<Demo>>, body: Result<Bytes, BytesRejection>) -> Result<Response, DemoError> {
    const EXPECTED: &str = r#"expected {"role":"rider"|"driver","sub":"<optional id>"}"#;
    let value: serde_json::Value =
        serde_json::from_slice(&body?).map_err(|e| DemoError::BadRequest(format!("not JSON ({e}); {EXPECTED}")))?;
    // Through a `Value`: a derived struct would also accept an array.
    if !value.is_object() {
        return Err(DemoError::BadRequest(format!("the body must be a JSON object; {EXPECTED}")));
    }
    let request: TokenRequest = serde_json::from_value(value)
        .map_err(|e| DemoError::BadRequest(format!("not a token request ({e}); {EXPECTED}")))?;
    let role = match request.role.as_str() {
        "rider" => Role::Rider,
        "driver" => Role::Driver,
        other => return Err(DemoError::BadRequest(format!("role {other:?} is not offered here; {EXPECTED}"))),
    };
    let sub = request.sub.unwrap_or_else(|| format!("web-{}", random_hex()));
    let sub = Id::parse(&sub).map_err(DemoError::InvalidSub)?;
    let claims = Claims { sub: sub.clone(), role, exp: clock::now_secs() + TOKEN_TTL_SECS, drv: None, ride: None };
    let token = demo.keys.mint(&claims).map_err(|error| {
        tracing::warn!(%error, "the demo could not sign a token");
        DemoError::Signing(error)
    })?;
    let mut response = Json(IssuedToken { token, sub }).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /demo/sse/fleet`: `retry:` first, then the feed's frames, latest only, until the
/// instance drains. Refused like any stream when draining (200 with `retry:`).
async fn fleet(State(demo): State<Arc<Demo>>) -> Response {
    let retry = Bytes::from(sse::retry(demo.sse_retry_ms));
    if demo.shutdown.is_cancelled() {
        let refusal = [retry, Bytes::from(sse::comment("this instance is draining; reconnect"))].concat();
        return (SSE_HEADERS, refusal).into_response();
    }
    let stream =
        FleetStream { first: Some(retry), frames: demo.feed.watch(), drain: demo.shutdown.clone(), ended: false };
    let frames = futures_util::stream::unfold(stream, |mut stream| async move {
        let frame = stream.next().await?;
        Some((Ok::<_, Infallible>(frame), stream))
    });
    (SSE_HEADERS, Body::from_stream(frames)).into_response()
}

/// The headers every SSE stream of the contract carries.
const SSE_HEADERS: [(header::HeaderName, &str); 3] = [
    (header::CONTENT_TYPE, "text/event-stream"),
    (header::CACHE_CONTROL, "no-cache, no-transform"),
    (header::HeaderName::from_static("x-accel-buffering"), "no"),
];

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

/// `N` random bytes as hex: a fresh rider's or driver's id. Unguessable is not the point (the
/// tokens are what count), so a host without entropy falls back to the clock.
fn random_hex() -> String {
    let mut bytes = [0u8; 6];
    match getrandom::fill(&mut bytes) {
        Ok(()) => bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
        Err(_) => format!("{:x}", clock::now_nanos()),
    }
}

/// What the demo's routes fail with, answered in the contract's error form.
#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("sub is not a valid id: {0}")]
    InvalidSub(#[source] InvalidId),
    /// Larger than the limit (413), or cut off (400).
    #[error("could not read the request body: {0}")]
    Body(#[from] BytesRejection),
    #[error("could not sign a token")]
    Signing(#[source] TokenError),
}

impl IntoResponse for DemoError {
    fn into_response(self) -> Response {
        let code = match &self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Body(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
            Self::BadRequest(_) | Self::Body(_) => ErrorCode::InvalidMessage,
            Self::InvalidSub(_) => ErrorCode::InvalidId,
            Self::Signing(_) => ErrorCode::Internal,
        };
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(ErrorBody::new(code, self.to_string()))).into_response()
    }
}
