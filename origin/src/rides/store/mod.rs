//! Where rides live: [`EmbeddedRides`](embedded::EmbeddedRides) (a map behind a mutex, one
//! process) or [`RedisRides`](redis::RedisRides) (one hash per ride, changed only by Lua
//! scripts, shared by every instance).
//!
//! Both make each change one atomic step: the status is changed only if the current one allows
//! it ([`RideChange::applies_to`]), the status version `ts` only grows per ride, the ride is
//! kept for the ride TTL after its last change, and the new status JSON is stored and published
//! on the ride's channel together, so that every instance's riders see each change once, in
//! order.

pub mod embedded;
pub mod redis;

use std::fmt::Debug;

use async_trait::async_trait;
use ridecast_protocol::Id;

use crate::bus::BackendError;
use crate::rides::ride::{NewRide, Ride, RideChange, RideChangeOutcome};

/// The rides of the whole deployment, changed only through atomic, conditional transitions.
#[async_trait]
pub trait RideStore: Send + Sync + Debug + 'static {
    /// Stores `ride` as a new ride in `searching`, its `ts` and creation time `now_ms`, and
    /// publishes that status on the ride's channel, atomically. `None` (and nothing stored) if a
    /// ride with this id exists already, unless it is this very request's (same rider, same
    /// `now_ms`: a write repeated after a lost reply), which is returned as it is now.
    async fn create(&self, ride: &NewRide, now_ms: u64) -> Result<Option<Ride>, BackendError>;

    /// The stored ride, if it exists (and has not expired).
    async fn get(&self, id: &Id) -> Result<Option<Ride>, BackendError>;

    /// Applies `change` to the ride if its current status allows it: the new status (and
    /// driver), a `ts` that only grows ([`ridecast_protocol::surge::next_ts`]), the status JSON
    /// stored and published on the ride's channel, and the ride's TTL renewed, all atomically:
    /// of two instances assigning one ride at once, exactly one gets
    /// [`RideChangeOutcome::Applied`].
    async fn change(&self, id: &Id, change: &RideChange, now_ms: u64) -> Result<RideChangeOutcome, BackendError>;
}
