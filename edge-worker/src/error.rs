//! The edge's errors and their single conversion to the contract's JSON error response.

use ridecast_protocol::{ErrorBody, ErrorCode, TokenError};
use worker::{Headers, Response};

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
            Self::OriginUnreachable(_) => ErrorCode::Unavailable,
            Self::Config(_) | Self::Runtime(_) => ErrorCode::Internal,
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
        if code == ErrorCode::Unavailable {
            headers.set("retry-after", RETRY_AFTER_SECS)?;
        }
        Ok(Response::from_json(&body)?.with_status(code.http_status()).with_headers(headers))
    }
}
