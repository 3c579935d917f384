//! The in-process backend: one instance, no Redis. What `cargo run` uses.
//!
//! The store is two maps: driver locations, with expiry, and zone surges, kept until replaced
//! (as in Redis; see `bus::redis`). Each change is one critical section of its map's lock, which
//! is what makes it atomic here. "Publishing" hands the value straight to this instance's
//! [`Deliveries`] (its hubs and chat rooms).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use ridecast_protocol::{GridCell, Id, Multiplier, Surge, channels, surge::next_ts};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::base::shutdown;

use super::{Backend, BackendError, Deliveries, IngestOutcome, LocationUpdate, Topic};

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

/// In-process store and bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedBackend {
    locations: Arc<Mutex<HashMap<String, StoredLocation>>>,
    surges: Arc<Mutex<HashMap<Id, StoredSurge>>>,
    deliveries: Arc<dyn Deliveries>,
    /// How long a driver's location is kept after its last update.
    location_ttl: Duration,
}

impl EmbeddedBackend {
    /// A backend keeping each driver's location for `location_ttl` after its last update, with
    /// a sweeper task (stopped by `shutdown`) so that drivers who left do not hold memory.
    pub fn new(deliveries: Arc<dyn Deliveries>, location_ttl: Duration, shutdown: CancellationToken) -> Self {
        let backend = Self { locations: Arc::default(), surges: Arc::default(), deliveries, location_ttl };
        let sweeper = backend.clone();
        shutdown::sweep_until(location_ttl, shutdown, move || sweeper.sweep());
        backend
    }

    fn sweep(&self) {
        let now = Instant::now();
        lock(&self.locations).retain(|_, stored| stored.expires_at > now);
    }

    /// One update: stored if newer, handed to the hubs if its cell changed. The stored entry is
    /// updated in place, so a driver's fixes after its first allocate nothing here.
    fn ingest(&self, update: &LocationUpdate) -> IngestOutcome {
        let now = Instant::now();
        let expires_at = now + self.location_ttl;
        let outcome = {
            let mut locations = lock(&self.locations);
            match locations.get_mut(update.driver.as_str()) {
                Some(stored) if stored.expires_at > now && stored.ts >= update.ts => return IngestOutcome::Stale,
                Some(stored) => {
                    let live = stored.expires_at > now;
                    let moved = !live || stored.published_cell != update.cell;
                    stored.ts = update.ts;
                    stored.json = update.json.clone();
                    stored.expires_at = expires_at;
                    if moved {
                        stored.published_cell = update.cell;
                        IngestOutcome::Published
                    } else {
                        IngestOutcome::Stored
                    }
                }
                None => {
                    let stored = StoredLocation {
                        ts: update.ts,
                        json: update.json.clone(),
                        published_cell: update.cell,
                        expires_at,
                    };
                    locations.insert(update.driver.as_str().to_owned(), stored);
                    IngestOutcome::Published
                }
            }
        };
        if outcome == IngestOutcome::Published {
            self.deliveries.deliver(&channels::driver_location(&update.driver), &update.json);
        }
        outcome
    }
}

fn lock<T>(map: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections are single map operations; see `Hubs::lock` on poisoning.
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl Backend for EmbeddedBackend {
    async fn ingest_locations(&self, updates: &[LocationUpdate]) -> Vec<Result<IngestOutcome, BackendError>> {
        updates.iter().map(|update| Ok(self.ingest(update))).collect()
    }

    fn stores_in_process(&self) -> bool {
        true
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
        self.deliveries.deliver(&Topic::SurgeZone(zone.clone()).channel(), &json);
        Ok(json)
    }

    async fn latest_location(&self, driver: &Id) -> Result<Option<Bytes>, BackendError> {
        let now = Instant::now();
        let locations = lock(&self.locations);
        Ok(locations.get(driver.as_str()).filter(|stored| stored.expires_at > now).map(|stored| stored.json.clone()))
    }

    async fn current_surge(&self, zone: &Id) -> Result<Option<Bytes>, BackendError> {
        Ok(lock(&self.surges).get(zone).map(|stored| stored.json.clone()))
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BackendError> {
        self.deliveries.deliver(channel, &payload);
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

    /// What the bus handed up, in order.
    #[derive(Debug, Default)]
    struct Recorded(Mutex<Vec<(String, Vec<u8>)>>);

    impl Deliveries for Recorded {
        fn deliver(&self, channel: &str, payload: &[u8]) {
            lock(&self.0).push((channel.to_owned(), payload.to_vec()));
        }

        fn missed_messages(&self) {}
    }

    fn backend() -> (EmbeddedBackend, Arc<Recorded>) {
        let recorded = Arc::new(Recorded::default());
        (EmbeddedBackend::new(recorded.clone(), Duration::from_secs(60), CancellationToken::new()), recorded)
    }

    fn surge(json: &[u8]) -> Surge {
        serde_json::from_slice(json).expect("surge JSON")
    }

    #[tokio::test]
    async fn a_surge_is_stored_as_the_zones_current_value_and_pushed() {
        let (backend, recorded) = backend();
        let zone = Id::parse("z1").expect("id");
        assert_eq!(backend.current_surge(&zone).await.expect("current"), None);

        let json = backend.set_surge(&zone, Multiplier::new(1.8).expect("valid"), 1_000).await.expect("set");
        assert_eq!(&json[..], br#"{"zoneId":"z1","multiplier":1.8,"ts":1000}"#);
        assert_eq!(backend.current_surge(&zone).await.expect("current"), Some(json.clone()));
        let pushed = lock(&recorded.0).clone();
        assert_eq!(
            pushed,
            vec![(Topic::SurgeZone(zone).channel(), json.to_vec())],
            "pushed once, on the zone's channel"
        );
    }

    #[tokio::test]
    async fn surge_timestamps_grow_within_one_millisecond_and_against_a_clock_behind() {
        let (backend, _recorded) = backend();
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
}
