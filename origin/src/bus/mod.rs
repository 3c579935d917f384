//! The boundary between an instance and what it shares with other instances.
//!
//! A [`Backend`] stores the latest value of what drivers and operators publish (a driver's
//! location, a zone's surge) and carries published values to every instance that subscribed to
//! the channel. Two implementations: [`redis::RedisBackend`] (many instances, through Redis)
//! and [`embedded::EmbeddedBackend`] (one process, no Redis).
//!
//! Messages that arrive on a subscribed channel are handed up through [`Deliveries`], which the
//! fan-out layer above implements: the bus never names what sits above it. Rides, dispatch and
//! chat keep their own stores (each with an embedded and a Redis implementation) and use the
//! bus only to publish.

pub mod connection;
pub mod embedded;
pub mod pubsub;
pub mod redis;
pub mod redis_url;

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;
use ridecast_protocol::{GridCell, Id, Multiplier, channels};

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

impl IngestOutcome {
    /// The outcome a store script answers with: 0 stale, 1 stored, 2 published.
    ///
    /// # Errors
    /// [`BackendError::UnexpectedReply`] for any other number.
    pub fn from_code(code: i64) -> Result<Self, BackendError> {
        match code {
            0 => Ok(Self::Stale),
            1 => Ok(Self::Stored),
            2 => Ok(Self::Published),
            other => Err(BackendError::UnexpectedReply(other.to_string())),
        }
    }
}

/// Why the backend could not do what was asked.
///
/// Server failures are logged, so the texts here name keys, fields and shapes, never the values
/// stored under them: a ride's hash holds its tracking token, a chat its messages, and a Redis
/// URL may hold a password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("invalid --redis-url: {0}")]
    InvalidUrl(String),
    #[error("redis answered {0}, which this version does not understand")]
    UnexpectedReply(String),
}

/// A script's reply described for an error without its values: how many items, and the first
/// when it is one of the short outcome words scripts answer with (`created`, `refused`, ...).
pub fn reply_shape(reply: &[String]) -> String {
    match reply.first() {
        Some(first) if first.len() <= 16 && first.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
            format!("{} items, the first {first:?}", reply.len())
        }
        _ => format!("{} items", reply.len()),
    }
}

/// Storage and pub/sub shared between instances.
#[async_trait]
pub trait Backend: Send + Sync + Debug + 'static {
    /// Stores each update as its driver's latest if it is newer, and publishes it on the
    /// driver's channel if its grid cell differs from the last published one: atomically per
    /// driver, in order (a driver's later update in `updates` is newer). Returns one result per
    /// update, in order: some may fail while others are stored (a cluster node down, say).
    async fn ingest_locations(&self, updates: &[LocationUpdate]) -> Vec<Result<IngestOutcome, BackendError>>;

    /// Whether the store is in this process, so that a call completes without waiting on I/O:
    /// the ingestor then writes each update inline instead of batching them.
    fn stores_in_process(&self) -> bool;

    /// Stores `multiplier` as `zone`'s current surge and publishes it on the zone's channel,
    /// atomically. Its `ts` is `now_ms`, or one more than the stored surge's `ts` if that is not
    /// older ([`ridecast_protocol::surge::next_ts`]), so that ids only grow even when instances
    /// set a zone within one millisecond or their clocks disagree. Returns the stored JSON.
    async fn set_surge(&self, zone: &Id, multiplier: Multiplier, now_ms: u64) -> Result<Bytes, BackendError>;

    /// The latest stored location of `driver` (which may be newer than the last one pushed:
    /// in-cell moves are stored, not pushed), as its JSON.
    async fn latest_location(&self, driver: &Id) -> Result<Option<Bytes>, BackendError>;

    /// The current surge of `zone`, as its JSON.
    async fn current_surge(&self, zone: &Id) -> Result<Option<Bytes>, BackendError>;

    /// Publishes `payload` on `channel` to every instance subscribed to it (this one included),
    /// storing nothing: for notices whose substance is stored elsewhere (chat).
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BackendError>;

    /// Starts handing `channels`' messages to this instance's [`Deliveries`].
    async fn subscribe(&self, channels: Vec<String>) -> Result<(), BackendError>;

    /// Stops delivering `channels`' messages.
    async fn unsubscribe(&self, channels: Vec<String>) -> Result<(), BackendError>;

    /// Whether the backend can serve requests now (Redis connected).
    fn is_ready(&self) -> bool;
}

/// Where the bus hands what arrives on this instance's subscribed channels. Implemented above
/// the bus (the local hubs and chat rooms), so that the bus depends on nothing above it.
pub trait Deliveries: Send + Sync + Debug + 'static {
    /// A message arrived on `channel`.
    fn deliver(&self, channel: &str, payload: &[u8]);

    /// Messages may have been missed (a reconnect, a reader that fell behind): whoever listens
    /// must recover what it follows from the stores.
    fn missed_messages(&self);
}

/// [`Deliveries`] for a bus whose messages nobody on this instance follows: tools, and tests of
/// the stores that publish through the bus.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDeliveries;

impl Deliveries for NoDeliveries {
    fn deliver(&self, _channel: &str, _payload: &[u8]) {}

    fn missed_messages(&self) {}
}
