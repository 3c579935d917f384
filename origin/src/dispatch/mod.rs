//! Ride offers: which available driver gets an offer for a ride, what happens when it is
//! acknowledged, accepted, rejected or left to expire, and who wins a ride.
//!
//! The rules live in [`book::Book`] (pure, `now` passed in); the stores make them shared and
//! atomic. Contract: PROTOCOL.md, "Driver WebSocket" (offers) and "Numbers" (offer expiry and
//! resend, one offer per driver at a time).

pub mod book;
pub mod dispatcher;
pub mod post;
pub mod store;

use ridecast_protocol::{
    Id,
    messages::{LatLng, OfferResult, ServerMessage},
};
use serde::{Deserialize, Serialize};

/// One offer of a ride to a driver, as stored and as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    pub offer_id: String,
    pub ride_id: Id,
    pub driver: Id,
    pub pickup: LatLng,
    pub dropoff: LatLng,
    /// Epoch ms after which an accept is `expired` and the ride moves on.
    pub expires_at: u64,
}

impl Offer {
    /// The `offer` frame the driver receives (again, with the same id, until it acks).
    pub fn frame(&self) -> ServerMessage {
        ServerMessage::Offer {
            offer_id: self.offer_id.clone(),
            ride_id: self.ride_id.to_string(),
            pickup: self.pickup,
            dropoff: self.dropoff,
            expires_at: self.expires_at,
        }
    }

    /// The `offer_result` frame telling the driver how the offer ended.
    pub fn result(&self, result: OfferResult) -> ServerMessage {
        ServerMessage::OfferResult { offer_id: self.offer_id.clone(), result }
    }
}

/// Where an offer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferState {
    Pending,
    Accepted,
    Rejected,
    Expired,
    /// Another driver accepted the ride first.
    Taken,
    /// The rider cancelled, or the ride was given up.
    Cancelled,
}

/// The limits an offer is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferLimits {
    /// Drivers offered one ride at most, in all.
    pub max_attempts: usize,
    /// Offers of one ride live at once (1: one driver at a time, nearest first).
    pub fanout: usize,
    /// A driver not heard from for this long gets no offers.
    pub stale_ms: u64,
}

/// What became of an attempt to offer a ride to a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferAttempt {
    Created,
    /// Offline, busy, holding another offer, stale, or already offered this ride.
    DriverUnavailable,
    /// The ride already has its number of live offers.
    RideFull,
    /// The ride was assigned, cancelled or given up.
    RideClosed,
    /// The ride was offered to its maximum number of drivers.
    Exhausted,
}

/// Answer to `offer_ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    Acked,
    NotPending(OfferState),
    NotYours,
    Unknown,
}

/// Answer to `accept`.
#[derive(Debug, Clone, PartialEq)]
pub enum AcceptOutcome {
    /// This driver won the ride; `taken` are the other live offers of it, now ended.
    Confirmed {
        ride: Id,
        taken: Vec<Offer>,
    },
    /// Too late: the deadline had passed (the ride moves on if it has no other live offer).
    Expired {
        ride: Id,
    },
    /// Already ended otherwise (taken, cancelled, rejected, expired by a sweeper).
    Ended(OfferState),
    /// Accepted before: a repeat.
    AlreadyAccepted,
    /// The offer is another driver's.
    NotYours,
    Unknown,
}

/// Answer to `reject`.
#[derive(Debug, Clone, PartialEq)]
pub enum RejectOutcome {
    Rejected { ride: Id },
    NotPending(OfferState),
    NotYours,
    Unknown,
}

/// The offer result a driver is told when its offer ends in `state`, if any.
pub fn result_of(state: OfferState) -> Option<OfferResult> {
    match state {
        OfferState::Accepted => Some(OfferResult::Confirmed),
        OfferState::Expired => Some(OfferResult::Expired),
        OfferState::Taken => Some(OfferResult::Taken),
        OfferState::Cancelled => Some(OfferResult::Cancelled),
        OfferState::Pending | OfferState::Rejected => None,
    }
}

/// Great-circle distance in metres (haversine; Redis GEO uses the same sphere).
pub fn distance_m(a: LatLng, b: LatLng) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_372_797.560_856;
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlng = (b.lng - a.lng).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlng / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().asin()
}
