//! The in-process backend: one instance, no Redis. What `cargo run` uses.
//!
//! The store is three maps: driver locations, with expiry; zone surges, kept until replaced (as
//! in Redis; see `bus::redis`); and rides, with expiry after their last change. Each change is
//! one critical section of its map's lock, which is what makes it atomic here. "Publishing"
//! hands the value straight to the local hubs (or chat rooms).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use ridecast_protocol::{GridCell, Id, Multiplier, RideState, RideStatus, Surge, surge::next_ts};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendError, IngestOutcome, LocationUpdate, Retention, Topic};
use crate::{
    fanout::subscriptions::Inbound,
    rides::{NewRide, Ride, RideChange, RideChangeOutcome},
};

#[derive(Debug)]
struct StoredLocation {
    ts: u64,
    json: Bytes,
    published_cell: GridCell,
    expires_at: Instant,
}

#[derive(Debug)]
struct StoredSurge {
    ts: u64,
    json: Bytes,
}

#[derive(Debug)]
struct StoredRide {
    ride: Ride,
    expires_at: Instant,
}

/// In-process store and bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedBackend {
    locations: Arc<Mutex<HashMap<String, StoredLocation>>>,
    surges: Arc<Mutex<HashMap<Id, StoredSurge>>>,
    rides: Arc<Mutex<HashMap<Id, StoredRide>>>,
    inbound: Inbound,
    retention: Retention,
}

impl EmbeddedBackend {
    /// A backend keeping each driver's location and each ride for their `retention` after their
    /// last change, with a sweeper task (stopped by `shutdown`) so that drivers who left and
    /// rides long over do not hold memory.
    pub fn new(inbound: Inbound, retention: Retention, shutdown: CancellationToken) -> Self {
        let backend =
            Self { locations: Arc::default(), surges: Arc::default(), rides: Arc::default(), inbound, retention };
        let sweeper = backend.clone();
        let period = retention.location.min(retention.ride).min(Duration::from_secs(30));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(period);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => sweeper.sweep(),
                }
            }
        });
        backend
    }

    fn sweep(&self) {
        let now = Instant::now();
        lock(&self.locations).retain(|_, stored| stored.expires_at > now);
        lock(&self.rides).retain(|_, stored| stored.expires_at > now);
    }

    fn publish_ride(&self, ride: &Ride) {
        // Outside the lock, like surge: should two changes race here, the hub keeps the newer.
        self.inbound.deliver(&Topic::RideStatus(ride.id.clone()).channel(), &ride.json);
    }
}

fn lock<T>(map: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections are single map operations; see `Hubs::lock` on poisoning.
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl Backend for EmbeddedBackend {
    async fn ingest_location(&self, update: &LocationUpdate) -> Result<IngestOutcome, BackendError> {
        let now = Instant::now();
        let outcome = {
            let mut locations = lock(&self.locations);
            let key = update.driver.as_str();
            let current = locations.get(key).filter(|stored| stored.expires_at > now);
            if current.is_some_and(|stored| stored.ts >= update.ts) {
                return Ok(IngestOutcome::Stale);
            }
            let moved = current.is_none_or(|stored| stored.published_cell != update.cell);
            let published_cell = match current {
                Some(stored) if !moved => stored.published_cell,
                _ => update.cell,
            };
            let stored = StoredLocation {
                ts: update.ts,
                json: update.json.clone(),
                published_cell,
                expires_at: now + self.retention.location,
            };
            locations.insert(key.to_owned(), stored);
            if moved { IngestOutcome::Published } else { IngestOutcome::Stored }
        };
        if outcome == IngestOutcome::Published {
            self.inbound.deliver(&Topic::DriverLocation(update.driver.clone()).channel(), &update.json);
        }
        Ok(outcome)
    }

    async fn set_surge(&self, zone: &Id, multiplier: Multiplier, now_ms: u64) -> Result<Bytes, BackendError> {
        let json = {
            let mut surges = lock(&self.surges);
            let ts = next_ts(now_ms, surges.get(zone).map(|stored| stored.ts));
            let json = Bytes::from(Surge { zone_id: zone.clone(), multiplier, ts }.to_json());
            surges.insert(zone.clone(), StoredSurge { ts, json: json.clone() });
            json
        };
        // Outside the lock, like ingest: should two sets race here, the hub keeps the newer.
        self.inbound.deliver(&Topic::SurgeZone(zone.clone()).channel(), &json);
        Ok(json)
    }

    async fn create_ride(&self, new: &NewRide, now_ms: u64) -> Result<Option<Ride>, BackendError> {
        let now = Instant::now();
        let ride = {
            let mut rides = lock(&self.rides);
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
            rides.insert(new.id.clone(), StoredRide { ride: ride.clone(), expires_at: now + self.retention.ride });
            ride
        };
        self.publish_ride(&ride);
        Ok(Some(ride))
    }

    async fn ride(&self, id: &Id) -> Result<Option<Ride>, BackendError> {
        let now = Instant::now();
        Ok(lock(&self.rides).get(id).filter(|stored| stored.expires_at > now).map(|stored| stored.ride.clone()))
    }

    async fn change_ride(&self, id: &Id, change: &RideChange, now_ms: u64) -> Result<RideChangeOutcome, BackendError> {
        let now = Instant::now();
        let ride = {
            let mut rides = lock(&self.rides);
            let Some(stored) = rides.get_mut(id).filter(|stored| stored.expires_at > now) else {
                return Ok(RideChangeOutcome::Unknown);
            };
            if !change.applies_to(stored.ride.status) {
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
            stored.expires_at = now + self.retention.ride;
            stored.ride.clone()
        };
        self.publish_ride(&ride);
        Ok(RideChangeOutcome::Applied(ride))
    }

    async fn latest(&self, topic: &Topic) -> Result<Option<Bytes>, BackendError> {
        let now = Instant::now();
        Ok(match topic {
            Topic::DriverLocation(driver) => lock(&self.locations)
                .get(driver.as_str())
                .filter(|stored| stored.expires_at > now)
                .map(|stored| stored.json.clone()),
            Topic::SurgeZone(zone) => lock(&self.surges).get(zone).map(|stored| stored.json.clone()),
            Topic::RideStatus(ride) => lock(&self.rides)
                .get(ride)
                .filter(|stored| stored.expires_at > now)
                .map(|stored| stored.ride.json.clone()),
        })
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BackendError> {
        self.inbound.deliver(channel, &payload);
        Ok(())
    }

    async fn subscribe(&self, _channels: Vec<String>) -> Result<(), BackendError> {
        Ok(())
    }

    async fn unsubscribe(&self, _channels: Vec<String>) -> Result<(), BackendError> {
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{base::metrics::Metrics, fanout::hubs::Hubs};

    fn backend() -> (EmbeddedBackend, Hubs) {
        let (inbound, _commands) = Inbound::new(Metrics::default());
        let retention = Retention { location: Duration::from_secs(60), ride: Duration::from_secs(60) };
        let hubs = inbound.hubs.clone();
        (EmbeddedBackend::new(inbound, retention, CancellationToken::new()), hubs)
    }

    fn surge(json: &[u8]) -> Surge {
        serde_json::from_slice(json).expect("surge JSON")
    }

    #[tokio::test]
    async fn a_surge_is_stored_as_the_zones_current_value_and_pushed() {
        let (backend, hubs) = backend();
        let zone = Id::parse("z1").expect("id");
        let topic = Topic::SurgeZone(zone.clone());
        let mut subscriber = hubs.subscribe(topic.clone());
        assert_eq!(backend.latest(&topic).await.expect("latest"), None);

        let json = backend.set_surge(&zone, Multiplier::new(1.8).expect("valid"), 1_000).await.expect("set");
        assert_eq!(&json[..], br#"{"zoneId":"z1","multiplier":1.8,"ts":1000}"#);
        assert_eq!(backend.latest(&topic).await.expect("latest"), Some(json.clone()));
        let pushed = subscriber.next().await.expect("a pushed value");
        assert_eq!((pushed.id, &pushed.json), (1_000, &json));
        assert!(pushed.frame.starts_with(b"event: surge\nid: 1000\ndata: {"));
    }

    #[tokio::test]
    async fn surge_timestamps_grow_within_one_millisecond_and_against_a_clock_behind() {
        let (backend, _hubs) = backend();
        let zone = Id::parse("z1").expect("id");
        let two = Multiplier::new(2.0).expect("valid");
        let stamps = [
            surge(&backend.set_surge(&zone, two, 5_000).await.expect("set")).ts,
            surge(&backend.set_surge(&zone, two, 5_000).await.expect("set")).ts,
            surge(&backend.set_surge(&zone, two, 4_000).await.expect("set")).ts,
            surge(&backend.set_surge(&zone, two, 9_000).await.expect("set")).ts,
        ];
        assert_eq!(stamps, [5_000, 5_001, 5_002, 9_000]);
        let other = Id::parse("z2").expect("id");
        assert_eq!(surge(&backend.set_surge(&other, two, 4_000).await.expect("set")).ts, 4_000, "per zone");
    }

    fn new_ride(id: &str) -> NewRide {
        NewRide {
            id: Id::parse(id).expect("id"),
            rider: Id::parse("rider-1").expect("id"),
            pickup: ridecast_protocol::LatLng { lat: 1.0, lng: 2.0 },
            dropoff: ridecast_protocol::LatLng { lat: 3.0, lng: 4.0 },
        }
    }

    #[tokio::test]
    async fn a_new_ride_is_stored_and_pushed_as_searching_once() {
        let (backend, hubs) = backend();
        let new = new_ride("ride1");
        let topic = Topic::RideStatus(new.id.clone());
        let mut subscriber = hubs.subscribe(topic.clone());

        let ride = backend.create_ride(&new, 7_000).await.expect("create").expect("a new id");
        assert_eq!(
            (ride.status, ride.driver.as_ref(), ride.created_ms, ride.ts),
            (RideStatus::Searching, None, 7_000, 7_000)
        );
        assert_eq!(&ride.json[..], br#"{"rideId":"ride1","status":"searching","ts":7000}"#);
        assert_eq!(backend.ride(&new.id).await.expect("read"), Some(ride.clone()));
        assert_eq!(backend.latest(&topic).await.expect("latest"), Some(ride.json.clone()));
        let pushed = subscriber.next().await.expect("a pushed value");
        assert!(pushed.frame.starts_with(b"event: ride\nid: 7000\ndata: {"), "{:?}", pushed.frame);

        assert_eq!(backend.create_ride(&new, 8_000).await.expect("create"), None, "an id is used once");
        assert_eq!(backend.ride(&new.id).await.expect("read"), Some(ride), "the taken id's ride is unchanged");
    }

    #[tokio::test(start_paused = true)]
    async fn a_ride_is_forgotten_its_retention_after_its_last_change() {
        let (backend, _hubs) = backend();
        let new = new_ride("ride1");
        backend.create_ride(&new, 1_000).await.expect("create").expect("a new id");
        tokio::time::advance(Duration::from_secs(40)).await;
        let cancelled = backend.change_ride(&new.id, &RideChange::Cancel, 2_000).await.expect("cancel");
        assert!(matches!(cancelled, RideChangeOutcome::Applied(_)), "{cancelled:?}");
        tokio::time::advance(Duration::from_secs(40)).await;
        assert!(backend.ride(&new.id).await.expect("read").is_some(), "kept 60 s after the cancel, not after creation");
        tokio::time::advance(Duration::from_secs(21)).await;
        assert_eq!(backend.ride(&new.id).await.expect("read"), None);
        assert_eq!(backend.latest(&Topic::RideStatus(new.id.clone())).await.expect("latest"), None);
        let late = backend.change_ride(&new.id, &RideChange::Cancel, 3_000).await.expect("cancel");
        assert_eq!(late, RideChangeOutcome::Unknown);
    }
}
