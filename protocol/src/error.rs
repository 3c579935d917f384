//! The error body of the contract: `{"error":{"code":"<snake_case>","message":"<text>"}}` over
//! HTTP, and `{"type":"error","code":..,"message":..}` on a WebSocket (see [`crate::messages`]).

use serde::{Deserialize, Serialize};

/// Every error code Ridecast answers with. The code is the stable part clients match on;
/// the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No token was sent.
    MissingToken,
    /// The token is malformed, badly signed, of another algorithm, or carries bad claims.
    InvalidToken,
    /// The token's `exp` has passed.
    TokenExpired,
    /// The token is valid but does not allow this request.
    Forbidden,
    /// A path or message id breaks the id rule.
    InvalidId,
    /// A body or frame is not the JSON the contract describes.
    InvalidMessage,
    /// A location breaks the range or finiteness rules.
    InvalidLocation,
    /// A surge multiplier is not within [1.0, 10.0].
    InvalidSurge,
    /// Nothing is known under this name.
    NotFound,
    /// The path exists but not for this method (a WebSocket path asked with anything but `GET`).
    MethodNotAllowed,
    /// The request conflicts with the current state.
    Conflict,
    /// The ride is over (`completed` or `cancelled`): its chat takes no new messages.
    RideEnded,
    /// A body or frame is larger than allowed.
    TooLarge,
    /// Too many requests or messages.
    RateLimited,
    /// A WebSocket path asked with a plain request, not a WebSocket upgrade.
    UpgradeRequired,
    /// The instance is full or draining; try again (elsewhere) later.
    Unavailable,
    /// The backing store or bus failed.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::MissingToken | Self::InvalidToken | Self::TokenExpired => 401,
            Self::Forbidden => 403,
            Self::InvalidId | Self::InvalidMessage | Self::InvalidLocation | Self::InvalidSurge => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict | Self::RideEnded => 409,
            Self::TooLarge => 413,
            Self::UpgradeRequired => 426,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

/// `{"error":{"code":..,"message":..}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code, message: message.into() } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_to_the_contract_shape() {
        let body = ErrorBody::new(ErrorCode::InvalidToken, "bad signature");
        assert_eq!(
            serde_json::to_string(&body).expect("serializes"),
            r#"{"error":{"code":"invalid_token","message":"bad signature"}}"#
        );
    }
}
