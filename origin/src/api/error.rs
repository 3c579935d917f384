//! The one conversion from failures to contract error responses.

use axum::{
    Json,
    extract::{rejection::BytesRejection, ws::rejection::WebSocketUpgradeRejection},
    response::{IntoResponse, Response},
};
use http::{
    HeaderValue, StatusCode,
    header::{ALLOW, RETRY_AFTER, UPGRADE},
};
use ridecast_protocol::{
    ErrorBody, ErrorCode, InvalidId, TokenError, ride::RideRequestError, surge::SurgeRequestError,
};

use crate::{auth::AuthError, bus::BackendError, limits::token_streams::TooManyStreams, rides::RideError};

/// Seconds a client is asked to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u64 = 2;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{what} is not a valid id: {source}")]
    InvalidId {
        what: &'static str,
        #[source]
        source: InvalidId,
    },
    /// A message id (a chat `since`) that is not `<ms>-<seq>`.
    #[error("{0:?} is not a message id (`<ms>-<seq>`, as the server sent it)")]
    InvalidMessageId(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the store is unavailable; try again shortly")]
    Backend(#[from] BackendError),
    #[error("{0}; try again shortly")]
    Unavailable(&'static str),
    #[error("{0} is too large")]
    TooLarge(&'static str),
    #[error("{0}")]
    BadRequest(String),
    /// The request body could not be read: larger than the limit (413), or cut off (400).
    #[error("could not read the request body: {0}")]
    Body(#[from] BytesRejection),
    #[error(transparent)]
    Surge(#[from] SurgeRequestError),
    #[error(transparent)]
    RideRequest(#[from] RideRequestError),
    /// A ride could not be created or changed: the store (503) or this instance (500) failed.
    #[error(transparent)]
    Ride(RideError),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    TooManyStreams(#[from] TooManyStreams),
    /// Over a principal's rate (ride creation): 429 with `Retry-After` the whole seconds until
    /// one more is allowed.
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
    /// A token this instance hands out could not be signed (500).
    #[error("could not sign a token")]
    Signing(#[source] TokenError),
    /// A known path asked with a method it does not serve (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A WebSocket path asked with another method than `GET` (405, `Allow: GET`).
    #[error("this path is a WebSocket: open it with GET and the WebSocket upgrade headers")]
    WrongMethod,
    /// A WebSocket path asked with a plain request, after every check an upgrade gets passed
    /// (426, `Upgrade: websocket`).
    #[error(
        "this path is a WebSocket and the request is not an upgrade ({0}): send `Connection: Upgrade`, \
         `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key`"
    )]
    NotAnUpgrade(#[source] WebSocketUpgradeRejection),
}

impl From<WebSocketUpgradeRejection> for ApiError {
    fn from(rejection: WebSocketUpgradeRejection) -> Self {
        match rejection {
            WebSocketUpgradeRejection::MethodNotGet(_) | WebSocketUpgradeRejection::MethodNotConnect(_) => {
                Self::WrongMethod
            }
            other => Self::NotAnUpgrade(other),
        }
    }
}

impl From<RideError> for ApiError {
    /// A store failure is the same 503 wherever it happens.
    fn from(error: RideError) -> Self {
        match error {
            RideError::Backend(source) => Self::Backend(source),
            open @ RideError::RiderHasOpenRide(_) => Self::Conflict(open.to_string()),
            other => Self::Ride(other),
        }
    }
}

impl ApiError {
    /// Adapter for `Id::parse(..).map_err(ApiError::invalid_id("driver id"))`.
    pub fn invalid_id(what: &'static str) -> impl FnOnce(InvalidId) -> Self {
        move |source| Self::InvalidId { what, source }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Auth(AuthError::Missing) => ErrorCode::MissingToken,
            Self::Auth(AuthError::Token(TokenError::Expired)) => ErrorCode::TokenExpired,
            Self::Auth(AuthError::Token(_)) => ErrorCode::InvalidToken,
            Self::Auth(
                AuthError::WrongRole { .. }
                | AuthError::WrongDriver(_)
                | AuthError::NotThisRide(_)
                | AuthError::NotInRide(_)
                | AuthError::RideEnded(_)
                | AuthError::ScopedToken,
            ) => ErrorCode::Forbidden,
            Self::InvalidId { .. } | Self::InvalidMessageId(_) => ErrorCode::InvalidId,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Backend(_) | Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::Body(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
            Self::BadRequest(_) | Self::Body(_) | Self::Surge(SurgeRequestError::Malformed(_)) => {
                ErrorCode::InvalidMessage
            }
            Self::Surge(SurgeRequestError::Invalid(_)) => ErrorCode::InvalidSurge,
            Self::RideRequest(RideRequestError::Malformed(_)) => ErrorCode::InvalidMessage,
            Self::RideRequest(RideRequestError::Invalid { .. }) => ErrorCode::InvalidLocation,
            Self::Ride(_) | Self::Signing(_) => ErrorCode::Internal,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::TooManyStreams(_) | Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::WrongMethod | Self::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            Self::NotAnUpgrade(_) => ErrorCode::UpgradeRequired,
        }
    }
}

/// Attached to 5xx responses so the logging middleware can say what went wrong. It names what
/// failed, never values that may be secret (see [`BackendError`]).
#[derive(Debug, Clone)]
pub struct ServerFailure(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(ErrorBody::new(code, self.to_string()))).into_response();
        if let Self::RateLimited { retry_after_secs, .. } = &self {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        } else if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        match &self {
            Self::WrongMethod => _ = response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET")),
            Self::NotAnUpgrade(_) => _ = response.headers_mut().insert(UPGRADE, HeaderValue::from_static("websocket")),
            _ => {}
        }
        // Draining and full are expected states, not failures; a backend error is worth a log line.
        let failure = match &self {
            Self::Backend(source) => Some(source.to_string()),
            Self::Ride(source) => Some(error_chain(source)),
            Self::Signing(source) => Some(error_chain(source)),
            _ => None,
        };
        if let Some(detail) = failure {
            response.extensions_mut().insert(ServerFailure(detail));
        }
        response
    }
}

/// An error and its sources, for a log line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_are_401_or_403_with_distinct_codes() {
        assert_eq!(ApiError::Auth(AuthError::Missing).into_response().status(), 401);
        assert_eq!(ApiError::Auth(AuthError::Token(TokenError::Expired)).code(), ErrorCode::TokenExpired);
        let forbidden = ApiError::Auth(AuthError::WrongRole { needed: "rider", actual: "driver" });
        assert_eq!(forbidden.into_response().status(), 403);
    }

    #[test]
    fn a_malformed_surge_body_and_an_out_of_range_multiplier_are_400_with_distinct_codes() {
        let malformed = ApiError::from(ridecast_protocol::SurgeRequest::parse(b"{").expect_err("malformed"));
        assert_eq!(malformed.code(), ErrorCode::InvalidMessage);
        assert_eq!(malformed.into_response().status(), 400);
        let invalid =
            ApiError::from(ridecast_protocol::SurgeRequest::parse(br#"{"multiplier":0.5}"#).expect_err("invalid"));
        assert_eq!(invalid.code(), ErrorCode::InvalidSurge);
        assert_eq!(invalid.into_response().status(), 400);
    }

    #[test]
    fn a_malformed_ride_body_and_a_point_off_the_map_are_400_with_distinct_codes() {
        let malformed = ApiError::from(ridecast_protocol::RideRequest::parse(b"{").expect_err("malformed"));
        assert_eq!(malformed.code(), ErrorCode::InvalidMessage);
        let off_the_map = br#"{"pickup":{"lat":91,"lng":0},"dropoff":{"lat":0,"lng":0}}"#;
        let invalid = ApiError::from(ridecast_protocol::RideRequest::parse(off_the_map).expect_err("invalid"));
        assert_eq!(invalid.code(), ErrorCode::InvalidLocation);
        assert_eq!(invalid.into_response().status(), 400);
    }

    #[test]
    fn another_riders_ride_is_403_and_a_conflict_409() {
        let ride = ridecast_protocol::Id::parse("r1").expect("id");
        assert_eq!(ApiError::Auth(AuthError::NotThisRide(ride)).into_response().status(), 403);
        assert_eq!(ApiError::Conflict("ended".into()).into_response().status(), 409);
    }

    /// What axum's extractor says of a plain `method` request to a WebSocket path.
    async fn plain_request_rejection(method: http::Method) -> WebSocketUpgradeRejection {
        use axum::extract::{FromRequestParts, ws::WebSocketUpgrade};
        let (mut parts, ()) =
            http::Request::builder().method(method).uri("/ws/rides").body(()).expect("request").into_parts();
        WebSocketUpgrade::from_request_parts(&mut parts, &()).await.map(|_| ()).expect_err("not an upgrade")
    }

    #[tokio::test]
    async fn a_plain_request_to_a_websocket_path_is_426_and_another_method_405() {
        let plain = ApiError::from(plain_request_rejection(http::Method::GET).await).into_response();
        assert_eq!(plain.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(plain.headers()[UPGRADE], "websocket");
        let post = ApiError::from(plain_request_rejection(http::Method::POST).await).into_response();
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET");
    }

    #[test]
    fn unavailability_says_when_to_come_back() {
        let response = ApiError::Unavailable("draining").into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        assert!(response.extensions().get::<ServerFailure>().is_none(), "draining is not a failure to log");
    }
}
