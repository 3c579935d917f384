//! `POST /api/rides` and `DELETE /api/rides/{rideId}`.

use axum::{
    Json,
    extract::{State, rejection::BytesRejection},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{StatusCode, header};
use ridecast_protocol::{RideCreated, RideRequest, RideStatus};
use tokio::time::Instant;

use crate::rides::RideChangeOutcome;
use crate::{
    api::{error::ApiError, extract::AuthorizedRide, state::AppState},
    auth::Principal,
};

/// A rider asks for a ride. Checks, in the contract's order: the token (401), the body (400:
/// `invalid_message`, or `invalid_location` for a point off the map), the `rider` role and a
/// token without `ride` or `drv` (403); then the rider's request rate (429 when the `sub`
/// requests rides faster than `--ride-create-rate` / `--ride-create-burst` on this instance:
/// each request sends real offers to real drivers); then that the rider has no other ride
/// `searching` or under way (409 `conflict`, whose message names that ride).
/// Answers 201 with the new ride's id, `searching` and its ride-scoped token; 503 when the
/// store is unreachable.
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = RideRequest::parse(&body?)?;
    principal.require_ride_creator()?;
    let allowances = &state.ride_allowances;
    if let Err(wait) = allowances.take(&principal.claims.sub, Instant::now()) {
        let message = allowances.limit().refusal("ride requests", "try again later");
        return Err(ApiError::RateLimited { message, retry_after_secs: whole_seconds(wait) });
    }
    let created = state.rides.create(&principal.claims.sub, request).await?;
    tracing::info!(ride.id = %created.ride.id, rider.sub = %created.ride.rider, "ride requested");
    // Offered before the answer: a rider who got 201 has a ride that is being matched (a
    // failure here ends it as `no_driver`, which the ride stream shows).
    state.dispatcher.ride_created(&created.ride).await;
    let answer = RideCreated { ride_id: created.ride.id, status: created.ride.status, token: created.token };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `wait` rounded up to whole seconds, at least one (a `Retry-After`).
fn whole_seconds(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The ride's creator (or a token scoped to the ride) cancels it: 200 with the ride's status
/// JSON, `cancelled`, also when it already was (a repeated `DELETE` changes nothing). A ride
/// with a driver can still be cancelled, up to and including `in_progress`; one that ended as
/// `no_driver` or `completed` cannot (409 `conflict`).
pub async fn cancel(State(state): State<AppState>, AuthorizedRide(ride): AuthorizedRide) -> Result<Response, ApiError> {
    let json = match state.rides.cancel(&ride.id).await? {
        RideChangeOutcome::Applied(ride) => {
            tracing::info!(ride.id = %ride.id, had_driver = ride.driver.is_some(), "ride cancelled");
            if let Err(error) = state.dispatcher.ride_cancelled(&ride.id).await {
                // The offers still end: by their deadline, or as `cancelled` when answered.
                tracing::warn!(ride.id = %ride.id, %error, "drivers not told of a cancel");
            }
            ride.json
        }
        RideChangeOutcome::Refused(ride) if ride.status == RideStatus::Cancelled => ride.json,
        RideChangeOutcome::Refused(ride) => {
            return Err(ApiError::Conflict(format!(
                "ride {} has ended as {}; it cannot be cancelled",
                ride.id, ride.status
            )));
        }
        // Expired between the permission check and the cancel.
        RideChangeOutcome::Unknown => return Err(ApiError::NotFound(format!("no ride {}", ride.id))),
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}
