//! One process's rides: a map behind a mutex, each change one critical section of its lock.
//! Publishing goes through the bus (the embedded one hands it straight to this instance's hubs).

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
    bus::{Backend, BackendError},
    rides::ride::{NewRide, Ride, RideChange, RideChangeOutcome},
};

#[derive(Debug)]
struct StoredRide {
    ride: Ride,
    expires_at: Instant,
}

/// Rides in this process's memory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedRides {
    rides: Arc<Mutex<HashMap<Id, StoredRide>>>,
    bus: Arc<dyn Backend>,
    /// How long a ride is kept after its last change.
    ttl: Duration,
}

impl EmbeddedRides {
    /// Rides kept `ttl` after their last change and published through `bus`, with a sweeper
    /// task (stopped by `shutdown`) so that rides long over do not hold memory.
    pub fn new(bus: Arc<dyn Backend>, ttl: Duration, shutdown: CancellationToken) -> Self {
        let store = Self { rides: Arc::default(), bus, ttl };
        let sweeper = store.clone();
        let period = ttl.min(Duration::from_secs(30));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => sweeper.sweep(),
                }
            }
        });
        store
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, stored| stored.expires_at > now);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Id, StoredRide>> {
        // Critical sections are single map operations; see `Hubs::lock` on poisoning.
        self.rides.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn publish(&self, ride: &Ride) -> Result<(), BackendError> {
        // Outside the lock: should two changes race here, the hub keeps the newer (ids grow).
        self.bus.publish(&channels::ride_status(&ride.id), ride.json.clone()).await
    }
}

#[async_trait]
impl RideStore for EmbeddedRides {
    async fn create(&self, new: &NewRide, now_ms: u64) -> Result<Option<Ride>, BackendError> {
        let now = Instant::now();
        let ride = {
            let mut rides = self.lock();
            if let Some(stored) = rides.get(&new.id).filter(|stored| stored.expires_at > now) {
                // The same request again (as a Redis client may write it twice): its ride.
                let replay = stored.ride.rider == new.rider && stored.ride.created_ms == now_ms;
                return Ok(replay.then(|| stored.ride.clone()));
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
            rides.insert(new.id.clone(), StoredRide { ride: ride.clone(), expires_at: now + self.ttl });
            ride
        };
        self.publish(&ride).await?;
        Ok(Some(ride))
    }

    async fn get(&self, id: &Id) -> Result<Option<Ride>, BackendError> {
        let now = Instant::now();
        Ok(self.lock().get(id).filter(|stored| stored.expires_at > now).map(|stored| stored.ride.clone()))
    }

    async fn change(&self, id: &Id, change: &RideChange, now_ms: u64) -> Result<RideChangeOutcome, BackendError> {
        let now = Instant::now();
        let ride = {
            let mut rides = self.lock();
            let Some(stored) = rides.get_mut(id).filter(|stored| stored.expires_at > now) else {
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
            stored.ride.clone()
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
        store.create(&new, 1_000).await.expect("create").expect("a new id");
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
}
