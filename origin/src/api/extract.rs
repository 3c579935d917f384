//! Who is calling and what they may open, read from the request: the bearer token (from
//! `Authorization: Bearer <t>` or `?token=<t>`), ids in the path, and the ride or driver they
//! name, each checked in the contract's order (401, then 400, then 403, then 404).
//!
//! The query form exists because browsers' EventSource and WebSocket cannot set headers.

use axum::extract::{FromRequestParts, Path};
use http::{header::AUTHORIZATION, request::Parts};
use ridecast_protocol::{Id, Role};

use crate::{
    api::{error::ApiError, state::AppState},
    auth::{AuthError, Principal},
    limits::token_streams::StreamKey,
    rides::Ride,
};

/// The token a request carries, if any: the header wins over the query.
pub fn bearer_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned());
    }
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "token").map(|(_, value)| value.into_owned())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        Ok(state.auth.verify(&token)?)
    }
}

/// The driver a rider may follow, from a `/{driver_id}/` path segment: a verified rider token
/// (401) whose `drv` (403) is that well-formed id (400). What the location stream and the
/// polling endpoint both take.
///
/// A tracking token (one that also names a `ride`, as a ride's status under way hands out) works
/// only while that ride is under way with that driver: once it is completed, cancelled or
/// expired, the token is refused (403), and streams opened with it end ([`TrackedDriver::ride`]).
/// A `drv`-only token (minted by an operator) is bound by its `exp` alone.
#[derive(Debug, Clone)]
pub struct TrackedDriver {
    pub driver: Id,
    /// The ride a tracking token is bound to.
    pub ride: Option<Id>,
}

impl FromRequestParts<AppState> for TrackedDriver {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let driver = path_id(parts, state, "driver id").await?;
        principal.require_tracking(&driver)?;
        let ride = principal.claims.ride;
        if let Some(id) = &ride {
            let on = state.rides.get(id).await?.is_some_and(|ride| ride.is_on_with(&driver));
            if !on {
                return Err(AuthError::RideEnded(id.clone()).into());
            }
        }
        Ok(Self { driver, ride })
    }
}

/// A surge zone id from a `/{zone_id}` path segment, well formed (400). Placed after
/// [`Principal`] in a handler's arguments, so that a missing token is still 401 first.
#[derive(Debug, Clone)]
pub struct ZonePath(pub Id);

impl FromRequestParts<AppState> for ZonePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(path_id(parts, state, "zone id").await?))
    }
}

/// A ride id from a `/{ride_id}` path segment, well formed (400). Placed after [`Principal`].
#[derive(Debug, Clone)]
pub struct RidePath(pub Id);

impl FromRequestParts<AppState> for RidePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(path_id(parts, state, "ride id").await?))
    }
}

/// The zone a rider follows, from a `/{zone_id}` path segment: a verified token (401), a
/// well-formed id (400), the `rider` role (403). Any rider may follow any zone.
#[derive(Debug, Clone)]
pub struct FollowedZone(pub Id);

impl FromRequestParts<AppState> for FollowedZone {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let ZonePath(zone) = ZonePath::from_request_parts(parts, state).await?;
        principal.require_role(Role::Rider)?;
        Ok(Self(zone))
    }
}

/// A ride the caller may follow and cancel, from a `/{ride_id}` path segment, checked in the
/// contract's order: a verified token (401), a well-formed ride id (400), the `rider` role (403),
/// a ride the store knows (404), then that the token may have it (403, [`Ride::allows`]: its
/// `ride` claim names the ride, or it has neither `ride` nor `drv` and its `sub` created it). An unknown ride is 404 for every rider token: whose it
/// would be cannot be known. A store that cannot be read is [`ApiError::Backend`].
#[derive(Debug, Clone)]
pub struct AuthorizedRide(pub Ride);

impl FromRequestParts<AppState> for AuthorizedRide {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let id = path_id(parts, state, "ride id").await?;
        principal.require_role(Role::Rider)?;
        let ride = state.rides.get(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no ride {id}")))?;
        principal.require_ride(&ride)?;
        Ok(Self(ride))
    }
}

/// The one id in the request's path, checked against the id rule; `what` names it in errors.
async fn path_id(parts: &mut Parts, state: &AppState, what: &'static str) -> Result<Id, ApiError> {
    let Path(raw) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::BadRequest(format!("expected one {what} in the path")))?;
    Id::parse(&raw).map_err(ApiError::invalid_id(what))
}

impl FromRequestParts<AppState> for StreamKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or(AuthError::Missing)?;
        Ok(state.token_streams.key(&token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, authorization: Option<&str>) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn the_header_and_the_query_both_carry_tokens() {
        assert_eq!(bearer_token(&parts("/x", Some("Bearer abc"))).as_deref(), Some("abc"));
        assert_eq!(bearer_token(&parts("/x", Some("bearer  abc "))).as_deref(), Some("abc"));
        assert_eq!(bearer_token(&parts("/x?a=1&token=t.u.v", None)).as_deref(), Some("t.u.v"));
        assert_eq!(
            bearer_token(&parts("/x?token=from-query", Some("Bearer from-header"))).as_deref(),
            Some("from-header")
        );
    }

    #[test]
    fn other_schemes_and_absent_tokens_give_none() {
        assert_eq!(bearer_token(&parts("/x", Some("Basic abc"))), None);
        assert_eq!(bearer_token(&parts("/x?tok=1", None)), None);
        assert_eq!(bearer_token(&parts("/x", None)), None);
    }
}
