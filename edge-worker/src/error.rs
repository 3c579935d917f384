//! The edge's errors and their single conversion to the contract's JSON error response.

use ridecast_protocol::{ErrorBody, ErrorCode, TokenError, sse};
use worker::{Headers, Response};

use crate::rider_stream;

/// `Retry-After` on a 503: the origin is usually back (restarted or failed over) within seconds.
const RETRY_AFTER_SECS: &str = "2";

/// Why the edge refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("no token: send `Authorization: Bearer <token>` or `?token=`")]
    MissingToken,
    #[error("token refused")]
    BadToken(#[source] TokenError),
    #[error("invalid id in path")]
    InvalidId(#[source] ridecast_protocol::InvalidId),
    #[error("this token may not open this stream")]
    Forbidden,
    #[error("no such route")]
    NotFound,
    #[error("the origin is unreachable; try again shortly")]
    OriginUnreachable(#[source] worker::Error),
    /// A tracking token the origin could not confirm (timeout, 5xx, 429, ...): refused, with a retry.
    #[error("the origin could not confirm this tracking token ({0}); try again shortly")]
    OriginCannotConfirm(String),
    #[error("this token already has {max} streams open here (EDGE_MAX_STREAMS_PER_TOKEN); close one first")]
    TooManyStreams { max: u32 },
    #[error(
        "this stream's object is full ({max} riders, EDGE_MAX_RIDERS_PER_OBJECT, an eighth more for returning tokens); try again shortly"
    )]
    ObjectFull { max: u32 },
    #[error(
        "this stream's {objects} objects are all full ({max} riders each: EDGE_MAX_RIDERS_PER_OBJECT, \
         EDGE_MAX_SHARDS_PER_KEY); try again shortly"
    )]
    TreeFull { objects: u32, max: u32 },
    #[error("this token opened {max} streams' objects within a minute (EDGE_MAX_OBJECTS_PER_TOKEN); try again later")]
    TooManyObjects { max: u32 },
    /// A shard could not link to its key's root object.
    #[error("{0}")]
    TreeLink(String),
    #[error("edge configuration is missing `{0}`")]
    Config(&'static str),
    #[error("the Workers runtime failed")]
    Runtime(#[source] worker::Error),
}

impl From<worker::Error> for EdgeError {
    fn from(e: worker::Error) -> Self {
        Self::Runtime(e)
    }
}

impl EdgeError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::MissingToken => ErrorCode::MissingToken,
            Self::BadToken(TokenError::Expired) => ErrorCode::TokenExpired,
            Self::BadToken(_) => ErrorCode::InvalidToken,
            Self::InvalidId(_) => ErrorCode::InvalidId,
            Self::Forbidden => ErrorCode::Forbidden,
            Self::NotFound => ErrorCode::NotFound,
            Self::OriginUnreachable(_)
            | Self::OriginCannotConfirm(_)
            | Self::ObjectFull { .. }
            | Self::TreeFull { .. } => ErrorCode::Unavailable,
            Self::TooManyStreams { .. } | Self::TooManyObjects { .. } => ErrorCode::RateLimited,
            Self::Config(_) | Self::Runtime(_) | Self::TreeLink(_) => ErrorCode::Internal,
        }
    }

    /// The contract's `{"error":{"code","message"}}` with the code's status. Only server-side
    /// failures are logged; client errors are the client's business.
    ///
    /// # Errors
    /// Only if the runtime cannot build a response at all.
    pub fn into_response(self) -> worker::Result<Response> {
        let code = self.code();
        if code.http_status() >= 500 {
            worker::console_error!("edge error: {self:?}");
        }
        let body = ErrorBody::new(code, self.to_string());
        let headers = Headers::new();
        headers.set("content-type", "application/json")?;
        headers.set("cache-control", "no-store")?;
        if matches!(code, ErrorCode::Unavailable | ErrorCode::RateLimited) {
            headers.set("retry-after", RETRY_AFTER_SECS)?;
        }
        Ok(Response::from_json(&body)?.with_status(code.http_status()).with_headers(headers))
    }

    /// The answer on an SSE path. A browser's EventSource gives up for good on any non-200
    /// answer, so "come back later" (503 and 429: the origin cannot answer, a cap is reached) is
    /// the contract's EventSource-safe form instead: `200 text/event-stream`, a jittered
    /// `retry:`, a comment saying why, and the end of the stream. Auth failures stay 401/403.
    ///
    /// # Errors
    /// Only if the runtime cannot build a response at all.
    pub fn into_sse_response(self, retry_ms: u64) -> worker::Result<Response> {
        let code = self.code();
        if !matches!(code, ErrorCode::Unavailable | ErrorCode::RateLimited) {
            return self.into_response();
        }
        if code == ErrorCode::Unavailable {
            worker::console_warn!("stream refused for now: {self}");
        }
        let body = format!("{}{}", sse::retry(jittered(retry_ms)), sse::comment(&self.to_string()));
        Ok(Response::ok(body)?.with_headers(rider_stream::sse_headers()?))
    }
}

/// `ms` spread over ±50 %, so that riders refused together do not all come back together.
fn jittered(ms: u64) -> u64 {
    ms / 2 + (js_sys::Math::random() * ms as f64) as u64
}
