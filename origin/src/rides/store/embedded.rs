//! One process's rides: a map behind a mutex, each change one critical section of its lock, with
//! each rider's open ride beside it under the same lock. Publishing goes through the bus (the
//! embedded one hands it straight to this instance's hubs).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use ridecast_protocol::{Id, RideState, RideStatus, channels, surge::next_ts};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RideStore;
use crate::{
    base::shutdown,
    bus::{Backend, BackendError},
    rides::ride::{CreateOutcome, NewRide, Ride, RideChange, RideChangeOutcome},
};

#[derive(Debug)]
struct StoredRide {
    ride: Ride,
    expires_at: Instant,
}

#[derive(Debug, Default)]
struct Book {
    rides: HashMap<Id, StoredRide>,
    /// Each rider's open ride, by the rider's `sub`. An entry whose ride ended or expired counts
    /// for nothing (and is swept).
    open: HashMap<Id, Id>,
}

impl Book {
    /// The live (unexpired) ride `id`.
    fn live(&self, id: &Id, now: Instant) -> Option<&StoredRide> {
        self.rides.get(id).filter(|stored| stored.expires_at > now)
    }

    /// `rider`'s open ride, if it still is open.
    fn open_ride_of(&self, rider: &Id, now: Instant) -> Option<&Id> {
        let ride = self.open.get(rider)?;
        self.live(ride, now).is_some_and(|stored| stored.ride.status.is_open()).then_some(ride)
    }
}

/// Rides in this process's memory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedRides {
    book: Arc<Mutex<Book>>,
    bus: Arc<dyn Backend>,
    /// How long a ride is kept after its last change.
    ttl: Duration,
}

impl EmbeddedRides {
    /// Rides kept `ttl` after their last change and published through `bus`, with a sweeper
    /// task (stopped by `shutdown`) so that rides long over do not hold memory.
    pub fn new(bus: Arc<dyn Backend>, ttl: Duration, shutdown: CancellationToken) -> Self {
        let store = Self { book: Arc::default(), bus, ttl };
        let sweeper = store.clone();
        shutdown::sweep_until(ttl, shutdown, move || sweeper.sweep());
        store
    }

    fn sweep(&self) {
        let now = Instant::now();
        let mut book = self.lock();
        book.rides.retain(|_, stored| stored.expires_at > now);
        let Book { rides, open } = &mut *book;
        open.retain(|_, ride| rides.get(ride).is_some_and(|stored| stored.ride.status.is_open()));
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // Critical sections are single map operations; see `Hubs::lock` on poisoning.
        self.book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn publish(&self, ride: &Ride) -> Result<(), BackendError> {
        // Outside the lock: should two changes race here, the hub keeps the newer (ids grow).
        self.bus.publish(&channels::ride_status(&ride.id), ride.json.clone()).await
    }
}

#[async_trait]
impl RideStore for EmbeddedRides {
    async fn create(&self, new: &NewRide, now_ms: u64) -> Result<CreateOutcome, BackendError> {
        let now = Instant::now();
        let ride = {
            let mut book = self.lock();
            if let Some(stored) = book.live(&new.id, now) {
                // The same request again (as a Redis client may write it twice): its ride.
                let replay = stored.ride.rider == new.rider && stored.ride.created_ms == now_ms;
                return Ok(if replay { CreateOutcome::Created(stored.ride.clone()) } else { CreateOutcome::IdTaken });
            }
            if let Some(open) = book.open_ride_of(&new.rider, now) {
                return Ok(CreateOutcome::RiderHasOpenRide(open.clone()));
            }
            let state = RideState {
                ride_id: new.id.clone(),
                status: RideStatus::Searching,
                driver_id: None,
                tracking_token: None,
                ts: now_ms,
            };
            let ride = Ride {
                id: new.id.clone(),
                rider: new.rider.clone(),
                pickup: new.pickup,
                dropoff: new.dropoff,
                status: RideStatus::Searching,
                driver: None,
                created_ms: now_ms,
                ts: now_ms,
                json: Bytes::from(state.to_json()),
            };
            book.rides.insert(new.id.clone(), StoredRide { ride: ride.clone(), expires_at: now + self.ttl });
            book.open.insert(new.rider.clone(), new.id.clone());
            ride
        };
        self.publish(&ride).await?;
        Ok(CreateOutcome::Created(ride))
    }

    async fn get(&self, id: &Id) -> Result<Option<Ride>, BackendError> {
        let now = Instant::now();
        Ok(self.lock().live(id, now).map(|stored| stored.ride.clone()))
    }

    async fn change(&self, id: &Id, change: &RideChange, now_ms: u64) -> Result<RideChangeOutcome, BackendError> {
        let now = Instant::now();
        let ride = {
            let mut book = self.lock();
            let Some(stored) = book.rides.get_mut(id).filter(|stored| stored.expires_at > now) else {
                return Ok(RideChangeOutcome::Unknown);
            };
            if !change.applies_to(stored.ride.status, stored.ride.driver.as_ref()) {
                return Ok(RideChangeOutcome::Refused(stored.ride.clone()));
            }
            let ts = next_ts(now_ms, Some(stored.ride.ts));
            let state = change.state(id, ts);
            let ride = &mut stored.ride;
            if let RideChange::Assign { driver, .. } = change {
                ride.driver = Some(driver.clone());
            }
            ride.status = state.status;
            ride.ts = ts;
            ride.json = Bytes::from(state.to_json());
            stored.expires_at = now + self.ttl;
            let ride = stored.ride.clone();
            if ride.status.is_final() && book.open.get(&ride.rider) == Some(id) {
                book.open.remove(&ride.rider);
            }
            ride
        };
        self.publish(&ride).await?;
        Ok(RideChangeOutcome::Applied(ride))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{NoDeliveries, embedded::EmbeddedBackend};

    fn store() -> EmbeddedRides {
        let shutdown = CancellationToken::new();
        let bus = Arc::new(EmbeddedBackend::new(Arc::new(NoDeliveries), Duration::from_secs(60), shutdown.clone()));
        EmbeddedRides::new(bus, Duration::from_secs(60), shutdown)
    }

    fn new_ride(id: &str) -> NewRide {
        NewRide {
            id: Id::parse(id).expect("id"),
            rider: Id::parse("rider-1").expect("id"),
            pickup: ridecast_protocol::LatLng { lat: 1.0, lng: 2.0 },
            dropoff: ridecast_protocol::LatLng { lat: 3.0, lng: 4.0 },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_ride_is_forgotten_its_ttl_after_its_last_change() {
        let store = store();
        let new = new_ride("ride1");
        assert!(matches!(store.create(&new, 1_000).await.expect("create"), CreateOutcome::Created(_)));
        tokio::time::advance(Duration::from_secs(40)).await;
        let cancelled = store.change(&new.id, &RideChange::Cancel, 2_000).await.expect("cancel");
        assert!(matches!(cancelled, RideChangeOutcome::Applied(_)), "{cancelled:?}");
        tokio::time::advance(Duration::from_secs(40)).await;
        assert!(store.get(&new.id).await.expect("read").is_some(), "kept 60 s after the cancel, not after creation");
        tokio::time::advance(Duration::from_secs(21)).await;
        assert_eq!(store.get(&new.id).await.expect("read"), None);
        let late = store.change(&new.id, &RideChange::Cancel, 3_000).await.expect("cancel");
        assert_eq!(late, RideChangeOutcome::Unknown);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rider_whose_open_ride_expired_may_request_another() {
        let store = store();
        let first = new_ride("ride1");
        assert!(matches!(store.create(&first, 1_000).await.expect("create"), CreateOutcome::Created(_)));
        let held = store.create(&new_ride("ride2"), 2_000).await.expect("create");
        assert_eq!(held, CreateOutcome::RiderHasOpenRide(first.id.clone()));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(store.create(&new_ride("ride2"), 3_000).await.expect("create"), CreateOutcome::Created(_)));
    }
}
