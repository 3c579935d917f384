//! The boundary between an instance and what it shares with other instances.
//!
//! A [`Backend`] stores each key's latest value (a driver's location, a zone's surge, a ride's
//! status) and carries published values to every instance that subscribed to the channel. It
//! also keeps rides themselves, changing them only through atomic, conditional transitions
//! (see [`crate::rides`]). Two implementations:
//! [`redis::RedisBackend`] (many instances, through Redis) and [`embedded::EmbeddedBackend`] (one
//! process, no Redis). Messages that arrive on a subscribed channel are handed to the local
//! hubs or chat rooms ([`Inbound`](crate::fanout::subscriptions::Inbound)).

pub mod connection;
pub mod embedded;
pub mod pubsub;
pub mod redis;
pub mod redis_url;

use std::{fmt::Debug, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use ridecast_protocol::{GridCell, Id, Multiplier, channels};

use crate::rides::{NewRide, Ride, RideChange, RideChangeOutcome};

/// A key whose latest value riders can follow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A driver's location: stored by ingest, pushed when its grid cell changes.
    DriverLocation(Id),
    /// A zone's surge multiplier: stored and pushed on every change an operator makes.
    SurgeZone(Id),
    /// A ride's status: stored and pushed on every change (created, assigned, cancelled, ...).
    RideStatus(Id),
}

impl Topic {
    /// The pub/sub channel its pushed values travel on.
    pub fn channel(&self) -> String {
        match self {
            Self::DriverLocation(driver) => channels::driver_location(driver),
            Self::SurgeZone(zone) => channels::surge_zone(zone),
            Self::RideStatus(ride) => channels::ride_status(ride),
        }
    }

    /// The SSE `event:` name of its values.
    pub fn event_name(&self) -> &'static str {
        match self {
            Self::DriverLocation(_) => "location",
            Self::SurgeZone(_) => "surge",
            Self::RideStatus(_) => "ride",
        }
    }
}

/// How long the store keeps what expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A driver's latest location, after its last update.
    pub location: Duration,
    /// A ride, after its last change.
    pub ride: Duration,
}

/// One accepted location update, serialized once.
#[derive(Debug, Clone)]
pub struct LocationUpdate {
    pub driver: Id,
    pub ts: u64,
    pub cell: GridCell,
    /// The rider-facing location JSON, exactly as pushed and stored.
    pub json: Bytes,
}

/// What happened to an update at ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Not newer than the stored update: dropped.
    Stale,
    /// Stored, but in the same cell as the last pushed one: not pushed.
    Stored,
    /// Stored and published: the cell changed.
    Published,
}

/// Why the backend could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("invalid --redis-url: {0}")]
    InvalidUrl(String),
    #[error("redis answered {0:?}, which this version does not understand")]
    UnexpectedReply(String),
}

/// Storage and pub/sub shared between instances.
#[async_trait]
pub trait Backend: Send + Sync + Debug + 'static {
    /// Stores `update` as its driver's latest if it is newer, and publishes it on the driver's
    /// channel if its grid cell differs from the last published one. Atomic per driver.
    async fn ingest_location(&self, update: &LocationUpdate) -> Result<IngestOutcome, BackendError>;

    /// Stores `multiplier` as `zone`'s current surge and publishes it on the zone's channel,
    /// atomically. Its `ts` is `now_ms`, or one more than the stored surge's `ts` if that is not
    /// older ([`ridecast_protocol::surge::next_ts`]), so that ids only grow even when instances
    /// set a zone within one millisecond or their clocks disagree. Returns the stored JSON.
    async fn set_surge(&self, zone: &Id, multiplier: Multiplier, now_ms: u64) -> Result<Bytes, BackendError>;

    /// Stores `ride` as a new ride in `searching`, its `ts` and creation time `now_ms`, and
    /// publishes that status on the ride's channel, atomically. The ride is kept for the
    /// configured ride TTL after its last change. `None` (and nothing stored) if a ride with
    /// this id exists already, unless it is this very request's (same rider, same `now_ms`: a
    /// write repeated after a lost reply), which is returned as it is now.
    async fn create_ride(&self, ride: &NewRide, now_ms: u64) -> Result<Option<Ride>, BackendError>;

    /// The stored ride, if it exists (and has not expired).
    async fn ride(&self, id: &Id) -> Result<Option<Ride>, BackendError>;

    /// Applies `change` to the ride if its current status allows it
    /// ([`RideChange::applies_to`]): the new status (and driver), a `ts` that only grows
    /// ([`ridecast_protocol::surge::next_ts`], as for surge), the status JSON stored and
    /// published on the ride's channel, and the ride's TTL renewed, all atomically: of two
    /// instances assigning one ride at once, exactly one gets [`RideChangeOutcome::Applied`].
    async fn change_ride(&self, id: &Id, change: &RideChange, now_ms: u64) -> Result<RideChangeOutcome, BackendError>;

    /// The latest stored value of `topic`, as its JSON.
    async fn latest(&self, topic: &Topic) -> Result<Option<Bytes>, BackendError>;

    /// Publishes `payload` on `channel` to every instance subscribed to it (this one included),
    /// storing nothing: for notices whose substance is stored elsewhere (chat).
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BackendError>;

    /// Starts delivering `channels`' messages to the local hubs and chat rooms.
    async fn subscribe(&self, channels: Vec<String>) -> Result<(), BackendError>;

    /// Stops delivering `channels`' messages.
    async fn unsubscribe(&self, channels: Vec<String>) -> Result<(), BackendError>;

    /// Whether the backend can serve requests now (Redis connected).
    fn is_ready(&self) -> bool;
}
