//! The in-process backend: one instance, no Redis. What `cargo run` uses.
//!
//! The store is two maps: driver locations, with expiry, and zone surges, kept until replaced
//! (as in Redis; see `bus::redis`). "Publishing" hands the value straight to the local hubs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use ridecast_protocol::{GridCell, Id, Multiplier, Surge, surge::next_ts};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendError, IngestOutcome, LocationUpdate, Topic};
use crate::fanout::Hubs;

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
    hubs: Hubs,
    ttl: Duration,
}

impl EmbeddedBackend {
    /// A backend keeping each driver's location for `ttl` after its last update, with a sweeper
    /// task (stopped by `shutdown`) so that drivers who left do not hold memory.
    pub fn new(hubs: Hubs, ttl: Duration, shutdown: CancellationToken) -> Self {
        let backend = Self { locations: Arc::default(), surges: Arc::default(), hubs, ttl };
        let sweeper = backend.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(ttl.min(Duration::from_secs(30)));
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
            let stored =
                StoredLocation { ts: update.ts, json: update.json.clone(), published_cell, expires_at: now + self.ttl };
            locations.insert(key.to_owned(), stored);
            if moved { IngestOutcome::Published } else { IngestOutcome::Stored }
        };
        if outcome == IngestOutcome::Published {
            self.hubs.deliver(&Topic::DriverLocation(update.driver.clone()).channel(), &update.json);
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
        self.hubs.deliver(&Topic::SurgeZone(zone.clone()).channel(), &json);
        Ok(json)
    }

    async fn latest(&self, topic: &Topic) -> Result<Option<Bytes>, BackendError> {
        let now = Instant::now();
        Ok(match topic {
            Topic::DriverLocation(driver) => lock(&self.locations)
                .get(driver.as_str())
                .filter(|stored| stored.expires_at > now)
                .map(|stored| stored.json.clone()),
            Topic::SurgeZone(zone) => lock(&self.surges).get(zone).map(|stored| stored.json.clone()),
        })
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
    use crate::metrics::Metrics;

    fn backend() -> (EmbeddedBackend, Hubs) {
        let (hubs, _commands) = Hubs::new(Metrics::default());
        (EmbeddedBackend::new(hubs.clone(), Duration::from_secs(60), CancellationToken::new()), hubs)
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
}
