//! Rides: what a rider asks for, kept in the ride [`store`], and followed as the third kind of
//! topic.
//!
//! `POST /api/rides` creates a ride in `searching` ([`api::rides::create`](crate::api::rides::create)); `DELETE
//! /api/rides/{rideId}` cancels it ([`api::rides::cancel`](crate::api::rides::cancel)); `GET /api/sse/rides/{rideId}`
//! ([`rider_sse::ride_status`](crate::api::rider_sse::ride_status)) follows its status through the
//! same hubs and SSE front as locations and surge ([`Topic::RideStatus`](crate::bus::Topic)).
//!
//! Every change of a ride goes through [`Rides`], the one handle the handlers and the matcher
//! share. It ends in one atomic step of the [`RideStore`]: the status is changed only if the
//! current one allows it ([`RideChange::applies_to`]), the status version `ts` only grows per
//! ride, and the new status JSON is stored and published together, so that every instance's
//! riders see each change once, in order.
//!
//! Who may follow and cancel a ride ([`Ride::allows`], PROTOCOL v1.1 "Token scopes"): a rider
//! token whose `ride` claim is it, or one with neither `ride` nor `drv` whose `sub` created it.
//! A tracking token (`drv` and `ride`) opens only its driver's position, while the ride is under
//! way ([`Ride::is_on_with`]).

pub mod ride;
pub mod store;

use std::{sync::Arc, time::Duration};

use ridecast_protocol::{Claims, Id, RideRequest, RideStep, Role, TokenError, TokenKeys, messages::ProgressResult};

pub use self::ride::{CreateOutcome, NewRide, Ride, RideChange, RideChangeOutcome, new_ride_id};
use self::store::RideStore;
use crate::{
    base::{clock, metrics::Metrics},
    bus::BackendError,
};

/// How many fresh ids `create` tries before giving up. With 128 random bits a second try
/// already means a broken random source.
const CREATE_ATTEMPTS: usize = 3;

/// A ride just created, with the ride-scoped token its creator gets.
#[derive(Debug, Clone)]
pub struct CreatedRide {
    pub ride: Ride,
    pub token: String,
}

/// Why a ride could not be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum RideError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("could not mint the ride's token")]
    Token(#[from] TokenError),
    #[error("no random ride id available")]
    Random(#[source] getrandom::Error),
    #[error("no unused ride id after {CREATE_ATTEMPTS} tries")]
    NoFreeId,
    /// The rider has this ride open (`searching` or under way): one at a time.
    #[error("ride {0} is still open; a rider has one open ride at a time (cancel it, or wait for it to end)")]
    RiderHasOpenRide(Id),
}

/// The rides of the whole deployment, as this instance reaches them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Rides {
    store: Arc<dyn RideStore>,
    keys: TokenKeys,
    metrics: Metrics,
    token_ttl: Duration,
}

impl Rides {
    /// Rides kept in `store`; tokens signed with `keys` (the current secret) live `token_ttl`.
    pub fn new(store: Arc<dyn RideStore>, keys: TokenKeys, metrics: Metrics, token_ttl: Duration) -> Self {
        Self { store, keys, metrics, token_ttl }
    }

    /// Creates a ride for `rider` in `searching` (stored and published), and mints its
    /// ride-scoped token: a rider token with `rider` as `sub`, the new id as `ride`, no `drv`.
    ///
    /// # Errors
    /// [`RideError::RiderHasOpenRide`] while the rider has a ride `searching` or under way
    /// (nothing is created); [`RideError::Backend`] when the store is unreachable (nothing is
    /// created); others when the random source or signing fails.
    pub async fn create(&self, rider: &Id, request: RideRequest) -> Result<CreatedRide, RideError> {
        for _ in 0..CREATE_ATTEMPTS {
            let id = self.store.new_id(rider).map_err(RideError::Random)?;
            let token = self.mint(rider, None, &id)?;
            let new = NewRide { id, rider: rider.clone(), pickup: request.pickup, dropoff: request.dropoff };
            let created = self.store.create(&new, clock::now_ms()).await;
            match self.counted(created)? {
                CreateOutcome::Created(ride) => {
                    Metrics::inc(&self.metrics.values().rides_created_total);
                    return Ok(CreatedRide { ride, token });
                }
                CreateOutcome::RiderHasOpenRide(open) => return Err(RideError::RiderHasOpenRide(open)),
                CreateOutcome::IdTaken => {
                    tracing::warn!(ride.id = %new.id, "a fresh ride id was taken; trying another")
                }
            }
        }
        Err(RideError::NoFreeId)
    }

    /// The stored ride.
    ///
    /// # Errors
    /// [`BackendError`] when the store is unreachable.
    pub async fn get(&self, id: &Id) -> Result<Option<Ride>, BackendError> {
        self.counted(self.store.get(id).await)
    }

    /// Assigns `ride` to `driver` if it is still `searching`: mints the tracking token (a rider
    /// token for the ride's creator with `drv` = `driver` and `ride` = the ride) and publishes
    /// `driver_assigned` with both. Atomic: of two concurrent assignments one is
    /// [`RideChangeOutcome::Applied`], the other [`RideChangeOutcome::Refused`] with the winner's
    /// driver in the returned ride.
    ///
    /// # Errors
    /// [`RideError::Backend`] when the store is unreachable (the ride is then unchanged, as far
    /// as this instance knows), [`RideError::Token`] if signing fails.
    pub async fn assign(&self, ride: &Ride, driver: &Id) -> Result<RideChangeOutcome, RideError> {
        let tracking_token = self.tracking_token(ride, driver)?;
        Ok(self.change(&ride.id, &RideChange::Assign { driver: driver.clone(), tracking_token }).await?)
    }

    /// Ends a `searching` ride as `no_driver`.
    ///
    /// # Errors
    /// [`BackendError`] when the store is unreachable.
    pub async fn no_driver(&self, id: &Id) -> Result<RideChangeOutcome, BackendError> {
        self.change(id, &RideChange::NoDriver).await
    }

    /// The assigned `driver` reports `step` of ride `id`: [`ProgressResult::Ok`] when the ride is
    /// at that step now, also when it already was (a repeat after a lost answer changes and
    /// publishes nothing); `Conflict` when it is past it or ended; `Forbidden` when it is not
    /// this driver's ride (also a ride still searching); `NotFound` for no such ride. While the
    /// ride stays under way, its status carries a fresh tracking token.
    ///
    /// # Errors
    /// [`RideError::Backend`] when the store is unreachable, [`RideError::Token`] if signing fails.
    pub async fn progress(&self, driver: &Id, id: &Id, step: RideStep) -> Result<ProgressResult, RideError> {
        let Some(ride) = self.get(id).await? else { return Ok(ProgressResult::NotFound) };
        if ride.driver.as_ref() != Some(driver) {
            return Ok(ProgressResult::Forbidden);
        }
        if ride.status == step.status() {
            return Ok(ProgressResult::Ok);
        }
        let tracking_token = self.tracking_token(&ride, driver)?;
        let change = RideChange::Progress { step, driver: driver.clone(), tracking_token };
        Ok(match self.change(id, &change).await? {
            RideChangeOutcome::Applied(_) => ProgressResult::Ok,
            // Changed between the read and the change: judged again on what it is now.
            RideChangeOutcome::Refused(now) if now.driver.as_ref() != Some(driver) => ProgressResult::Forbidden,
            RideChangeOutcome::Refused(now) if now.status == step.status() => ProgressResult::Ok,
            RideChangeOutcome::Refused(_) => ProgressResult::Conflict,
            RideChangeOutcome::Unknown => ProgressResult::NotFound,
        })
    }

    /// Cancels a ride that has not ended (`searching`, `driver_assigned`, `driver_arrived` or
    /// `in_progress`). A ride already `cancelled` (or `no_driver`, `completed`) comes back
    /// [`RideChangeOutcome::Refused`], unchanged.
    ///
    /// # Errors
    /// [`BackendError`] when the store is unreachable.
    pub async fn cancel(&self, id: &Id) -> Result<RideChangeOutcome, BackendError> {
        let outcome = self.change(id, &RideChange::Cancel).await?;
        if let RideChangeOutcome::Applied(_) = outcome {
            Metrics::inc(&self.metrics.values().rides_cancelled_total);
        }
        Ok(outcome)
    }

    /// A rider token for `ride`'s creator that tracks `driver`: `drv` = `driver`, `ride` = the
    /// ride, valid for the ride token TTL. What a status under way carries.
    ///
    /// # Errors
    /// [`TokenError::Signing`] if signing fails.
    pub fn tracking_token(&self, ride: &Ride, driver: &Id) -> Result<String, TokenError> {
        self.mint(&ride.rider, Some(driver), &ride.id)
    }

    async fn change(&self, id: &Id, change: &RideChange) -> Result<RideChangeOutcome, BackendError> {
        self.counted(self.store.change(id, change, clock::now_ms()).await)
    }

    fn mint(&self, rider: &Id, driver: Option<&Id>, ride: &Id) -> Result<String, TokenError> {
        self.keys.mint(&Claims {
            sub: rider.clone(),
            role: Role::Rider,
            exp: clock::now_secs() + self.token_ttl.as_secs(),
            drv: driver.cloned(),
            ride: Some(ride.clone()),
        })
    }

    /// Counts a failed store operation in `backend_errors_total`.
    fn counted<T>(&self, result: Result<T, BackendError>) -> Result<T, BackendError> {
        if result.is_err() {
            Metrics::inc(&self.metrics.values().backend_errors_total);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use tokio_util::sync::CancellationToken;

    use bytes::Bytes;
    use ridecast_protocol::{LatLng, RideState, RideStatus};

    use super::*;
    use crate::{
        bus::{NoDeliveries, embedded::EmbeddedBackend},
        rides::store::embedded::EmbeddedRides,
    };

    const SECRET: &[u8] = b"rides-test-secret";

    fn rides() -> (Rides, Metrics) {
        let metrics = Metrics::default();
        let shutdown = CancellationToken::new();
        let bus = Arc::new(EmbeddedBackend::new(Arc::new(NoDeliveries), Duration::from_secs(60), shutdown.clone()));
        let store = Arc::new(EmbeddedRides::new(bus, Duration::from_secs(600), shutdown));
        let keys = TokenKeys::new(SECRET, None).expect("keys");
        (Rides::new(store, keys, metrics.clone(), Duration::from_secs(120)), metrics)
    }

    fn id(raw: &str) -> Id {
        Id::parse(raw).expect("id")
    }

    fn request() -> RideRequest {
        RideRequest { pickup: LatLng { lat: 37.7, lng: -122.4 }, dropoff: LatLng { lat: 37.8, lng: -122.3 } }
    }

    fn claims_of(token: &str) -> Claims {
        TokenKeys::new(SECRET, None).expect("keys").verify(token, clock::now_secs()).expect("a valid token")
    }

    #[tokio::test]
    async fn a_created_ride_is_searching_and_its_token_is_scoped_to_it() {
        let (rides, metrics) = rides();
        let created = rides.create(&id("r-1"), request()).await.expect("created");
        let ride = &created.ride;
        assert_eq!(
            (ride.status, &ride.rider, ride.pickup, ride.dropoff),
            (RideStatus::Searching, &id("r-1"), request().pickup, request().dropoff)
        );
        assert_eq!(rides.get(&ride.id).await.expect("read").as_ref(), Some(ride));

        let claims = claims_of(&created.token);
        assert_eq!(
            (claims.sub, claims.role, claims.drv, claims.ride),
            (id("r-1"), Role::Rider, None, Some(ride.id.clone()))
        );
        assert!(claims.exp.abs_diff(clock::now_secs() + 120) <= 2, "the ride token TTL, got exp {}", claims.exp);
        assert_eq!(metrics.values().rides_created_total.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn only_a_searching_ride_is_assigned_and_its_tracking_token_tracks_the_driver() {
        let (rides, _metrics) = rides();
        let ride = rides.create(&id("r-1"), request()).await.expect("created").ride;

        let RideChangeOutcome::Applied(assigned) = rides.assign(&ride, &id("d-1")).await.expect("assign") else {
            panic!("a searching ride is assigned");
        };
        assert_eq!((assigned.status, assigned.driver.as_ref()), (RideStatus::DriverAssigned, Some(&id("d-1"))));
        assert!(assigned.ts > ride.ts, "the status version grows: {} after {}", assigned.ts, ride.ts);
        let state: RideState = serde_json::from_slice(&assigned.json).expect("status JSON");
        assert_eq!(
            (state.status, state.driver_id.as_ref(), state.ts),
            (RideStatus::DriverAssigned, Some(&id("d-1")), assigned.ts)
        );
        let tracking = claims_of(state.tracking_token.as_deref().expect("a tracking token"));
        assert_eq!(
            (tracking.sub, tracking.role, tracking.drv, tracking.ride),
            (id("r-1"), Role::Rider, Some(id("d-1")), Some(ride.id.clone()))
        );

        let second = rides.assign(&ride, &id("d-2")).await.expect("assign");
        assert_eq!(second, RideChangeOutcome::Refused(assigned.clone()), "the first assignment stands");
        assert_eq!(rides.no_driver(&ride.id).await.expect("no driver"), RideChangeOutcome::Refused(assigned));
    }

    #[tokio::test]
    async fn a_cancel_applies_to_searching_and_assigned_rides_and_is_counted_once() {
        let (rides, metrics) = rides();
        let assigned = rides.create(&id("r-1"), request()).await.expect("created").ride;
        rides.assign(&assigned, &id("d-1")).await.expect("assign");
        let RideChangeOutcome::Applied(cancelled) = rides.cancel(&assigned.id).await.expect("cancel") else {
            panic!("an assigned ride can be cancelled");
        };
        assert_eq!(cancelled.driver.as_ref(), Some(&id("d-1")), "the store remembers the driver");
        let state: RideState = serde_json::from_slice(&cancelled.json).expect("status JSON");
        assert_eq!((state.status, state.driver_id, state.tracking_token), (RideStatus::Cancelled, None, None));
        assert_eq!(rides.cancel(&assigned.id).await.expect("cancel"), RideChangeOutcome::Refused(cancelled));
        assert_eq!(metrics.values().rides_cancelled_total.load(Relaxed), 1);

        let unmatched = rides.create(&id("r-1"), request()).await.expect("created").ride;
        let RideChangeOutcome::Applied(ended) = rides.no_driver(&unmatched.id).await.expect("no driver") else {
            panic!("a searching ride can end without a driver");
        };
        assert!(
            matches!(rides.cancel(&unmatched.id).await.expect("cancel"), RideChangeOutcome::Refused(ride) if ride == ended)
        );
        assert!(matches!(rides.cancel(&id("nobody")).await.expect("cancel"), RideChangeOutcome::Unknown));
    }

    #[test]
    fn a_token_opens_only_what_its_claims_name_and_only_as_a_rider() {
        let ride = Ride {
            id: id("ride1"),
            rider: id("r-1"),
            pickup: request().pickup,
            dropoff: request().dropoff,
            status: RideStatus::Searching,
            driver: None,
            created_ms: 1,
            ts: 1,
            json: Bytes::new(),
        };
        let claims =
            |role, sub: &str, ride: Option<&str>| Claims { sub: id(sub), role, exp: 0, drv: None, ride: ride.map(id) };
        let tracking =
            |sub: &str, ride: Option<&str>| Claims { drv: Some(id("d-1")), ..claims(Role::Rider, sub, ride) };
        assert!(ride.allows(&claims(Role::Rider, "r-1", None)), "the creator");
        assert!(!ride.allows(&claims(Role::Rider, "r-1", Some("other"))), "the creator's token of another ride");
        assert!(ride.allows(&claims(Role::Rider, "someone", Some("ride1"))), "a token scoped to the ride");
        assert!(!ride.allows(&claims(Role::Rider, "r-2", None)), "another rider");
        assert!(!ride.allows(&claims(Role::Rider, "r-2", Some("other"))), "a token scoped to another ride");
        assert!(!ride.allows(&tracking("r-1", Some("ride1"))), "the ride's own tracking token");
        assert!(!ride.allows(&tracking("r-1", None)), "the creator's sub with a drv");
        assert!(!ride.allows(&claims(Role::Driver, "r-1", Some("ride1"))), "not a rider token");
    }

    #[test]
    fn ride_ids_are_32_random_hex_digits() {
        let (a, b) = (new_ride_id().expect("random"), new_ride_id().expect("random"));
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{a}");
    }
}
