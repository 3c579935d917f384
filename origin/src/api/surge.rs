//! `POST /api/surge/{zoneId}`: an operator sets a zone's surge multiplier.
//!
//! The value is stored as the zone's current one and published through the [`bus`](crate::bus);
//! from there it travels exactly like a driver's location, through the same hubs, to rider
//! streams (`GET /api/sse/surge/{zoneId}`, [`rider_sse`](crate::api::rider_sse)) and edge links
//! (`GET /edge/v1/surge/{zoneId}`, [`edge_link`](crate::api::edge_link)) on every instance.

use axum::{
    extract::{State, rejection::BytesRejection},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{StatusCode, header};
use ridecast_protocol::{Role, SurgeRequest};

use crate::{
    api::{error::ApiError, extract::ZonePath, state::AppState},
    auth::Principal,
    base::{clock, metrics::Metrics},
};

/// Checks, in the contract's order: the token (401), the zone id and the body (400), the `ops`
/// role (403). Answers 202 with the stored value, whose `ts` is the surge's event id; 503 when
/// the store is unreachable.
pub async fn set(
    State(state): State<AppState>,
    principal: Principal,
    ZonePath(zone): ZonePath,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let multiplier = SurgeRequest::parse(&body?)?;
    principal.require_role(Role::Ops)?;
    let values = state.metrics.values();
    let json = match state.backend.set_surge(&zone, multiplier, clock::now_ms()).await {
        Ok(json) => json,
        Err(error) => {
            Metrics::inc(&values.backend_errors_total);
            return Err(error.into());
        }
    };
    Metrics::inc(&values.surge_updates_total);
    tracing::info!(zone.id = %zone, multiplier = multiplier.get(), ops.sub = %principal.claims.sub, "surge set");
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], json).into_response())
}
