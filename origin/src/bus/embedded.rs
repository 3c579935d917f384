//! The in-process backend: one instance, no Redis. What `cargo run` uses.
//!
//! The store is a map with expiry; "publishing" hands the value straight to the local hubs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use ridecast_protocol::GridCell;
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

/// In-process store and bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EmbeddedBackend {
    locations: Arc<Mutex<HashMap<String, StoredLocation>>>,
    hubs: Hubs,
    ttl: Duration,
}

impl EmbeddedBackend {
    /// A backend keeping each driver's location for `ttl` after its last update, with a sweeper
    /// task (stopped by `shutdown`) so that drivers who left do not hold memory.
    pub fn new(hubs: Hubs, ttl: Duration, shutdown: CancellationToken) -> Self {
        let backend = Self { locations: Arc::default(), hubs, ttl };
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
        self.lock().retain(|_, stored| stored.expires_at > now);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, StoredLocation>> {
        // Critical sections are single map operations; see `Hubs::lock` on poisoning.
        self.locations.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    async fn ingest_location(&self, update: &LocationUpdate) -> Result<IngestOutcome, BackendError> {
        let now = Instant::now();
        let outcome = {
            let mut locations = self.lock();
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

    async fn latest(&self, topic: &Topic) -> Result<Option<Bytes>, BackendError> {
        let now = Instant::now();
        Ok(match topic {
            Topic::DriverLocation(driver) => self
                .lock()
                .get(driver.as_str())
                .filter(|stored| stored.expires_at > now)
                .map(|stored| stored.json.clone()),
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
