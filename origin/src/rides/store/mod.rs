//! Where rides live: [`EmbeddedRides`](embedded::EmbeddedRides) (a map behind a mutex, one
//! process) or [`RedisRides`](redis::RedisRides) (one hash per ride, changed only by Lua
//! scripts, shared by every instance).
//!
//! Both make each change one atomic step: the status is changed only if the current one allows
//! it ([`RideChange::applies_to`]), the status version `ts` only grows per ride, the ride is
//! kept for the ride TTL after its last change, and the new status JSON is stored and published
//! on the ride's channel together, so that every instance's riders see each change once, in
//! order.
//!
//! Both also keep, per rider, the ride that rider has open (`searching` or under way): a create
//! while it is open is refused ([`CreateOutcome::RiderHasOpenRide`]), in the same atomic step
//! as the create, and the change that ends the ride clears it. An index entry naming a ride
//! that has ended or expired counts for nothing, so a lost clean-up never locks a rider out.

pub mod embedded;
pub mod redis;

use std::fmt::Debug;

use async_trait::async_trait;
use ridecast_protocol::Id;

use crate::bus::BackendError;
use crate::rides::ride::{CreateOutcome, NewRide, Ride, RideChange, RideChangeOutcome};

/// The rides of the whole deployment, changed only through atomic, conditional transitions.
#[async_trait]
pub trait RideStore: Send + Sync + Debug + 'static {
    /// A fresh, unguessable id for a ride of `rider`. The Redis store picks one in the rider's
    /// cluster slot (see its module docs); anywhere else any random id does.
    ///
    /// # Errors
    /// When the host has no entropy source.
    fn new_id(&self, rider: &Id) -> Result<Id, getrandom::Error> {
        let _ = rider;
        crate::rides::ride::new_ride_id()
    }

    /// Stores `ride` as a new ride in `searching`, its `ts` and creation time `now_ms`, makes it
    /// its rider's open ride, and publishes that status on the ride's channel, atomically.
    /// [`CreateOutcome::IdTaken`] (nothing stored) if a ride with this id exists already, unless
    /// it is this very request's (same rider, same `now_ms`: a write repeated after a lost
    /// reply), which is returned as it is now; [`CreateOutcome::RiderHasOpenRide`] (nothing
    /// stored) while the rider has another ride open.
    async fn create(&self, ride: &NewRide, now_ms: u64) -> Result<CreateOutcome, BackendError>;

    /// The stored ride, if it exists (and has not expired).
    async fn get(&self, id: &Id) -> Result<Option<Ride>, BackendError>;

    /// Applies `change` to the ride if its current status allows it: the new status (and
    /// driver), a `ts` that only grows ([`ridecast_protocol::surge::next_ts`]), the status JSON
    /// stored and published on the ride's channel, and the ride's TTL renewed, all atomically:
    /// of two instances assigning one ride at once, exactly one gets
    /// [`RideChangeOutcome::Applied`].
    async fn change(&self, id: &Id, change: &RideChange, now_ms: u64) -> Result<RideChangeOutcome, BackendError>;
}
