//! Where dispatch state lives: [`EmbeddedDispatch`](embedded::EmbeddedDispatch) (the
//! [`Book`](super::book::Book) behind a mutex, one process) or
//! [`RedisDispatch`](redis::RedisDispatch) (the same transitions as Lua scripts,
//! [`redis_scripts`], shared by every instance).

pub mod embedded;
pub mod redis;
pub mod redis_scripts;

use std::{fmt::Debug, time::Duration};

use async_trait::async_trait;
use ridecast_protocol::{Id, messages::LatLng};

use crate::{
    bus::BackendError,
    dispatch::{AcceptOutcome, AckOutcome, Offer, OfferAttempt, OfferLimits, RejectOutcome},
};

/// The dispatch transitions, atomic each.
#[async_trait]
pub trait DispatchStore: Send + Sync + Debug + 'static {
    async fn set_available(&self, driver: &Id, available: bool, now: u64) -> Result<(), BackendError>;
    async fn set_position(&self, driver: &Id, at: LatLng, now: u64) -> Result<(), BackendError>;
    /// Whether the driver said it is online for offers: what a reconnecting session resumes.
    async fn is_available(&self, driver: &Id) -> Result<bool, BackendError>;
    /// Online drivers near `pickup`, nearest first; [`DispatchStore::try_offer`] checks the rest.
    async fn candidates(
        &self,
        pickup: LatLng,
        radius_m: f64,
        now: u64,
        limits: OfferLimits,
        count: usize,
    ) -> Result<Vec<Id>, BackendError>;
    async fn try_offer(&self, offer: &Offer, now: u64, limits: OfferLimits) -> Result<OfferAttempt, BackendError>;
    async fn current_offer(&self, driver: &Id) -> Result<Option<(Offer, bool)>, BackendError>;
    async fn ack(&self, offer_id: &str, driver: &Id) -> Result<AckOutcome, BackendError>;
    async fn accept(&self, offer_id: &str, driver: &Id, now: u64) -> Result<AcceptOutcome, BackendError>;
    async fn reject(&self, offer_id: &str, driver: &Id) -> Result<RejectOutcome, BackendError>;
    async fn due(&self, now: u64, limit: usize) -> Result<Vec<String>, BackendError>;
    async fn expire(&self, offer_id: &str, now: u64) -> Result<Option<Offer>, BackendError>;
    /// Closes the ride for dispatch; returns the offers whose drivers must be told `cancelled`
    /// (live ones, and the winner's if it is still on the ride).
    async fn close_ride(&self, ride: &Id, now: u64) -> Result<Vec<Offer>, BackendError>;
    /// Whether the ride has offers still waiting for an answer.
    async fn has_live_offers(&self, ride: &Id) -> Result<bool, BackendError>;
    /// The ride found nobody to offer it to: search again at `retry_at` (epoch ms).
    async fn wait(&self, ride: &Id, retry_at: u64) -> Result<(), BackendError>;
    /// The rides due for another search; each goes to one caller per `lease` (after which it
    /// comes due again unless an offer was made or the ride closed).
    async fn waiting_due(&self, now: u64, limit: usize, lease: Duration) -> Result<Vec<Id>, BackendError>;
}
