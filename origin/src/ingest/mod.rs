//! Location ingest: each accepted fix is serialized once, stored once, and published once if
//! (and only if) its ~50 m grid cell changed. Filtering here, not per subscriber, means a driver
//! creeping through traffic costs one store write and nothing downstream.
//!
//! What a fix costs is mostly how the store is reached, so there are two ways in:
//!
//! * an in-process store ([`Backend::stores_in_process`]) is written inline, in the driver's
//!   own task: no hand-off, no wake-up of another task;
//! * a remote one (Redis) is written in batches by one task per instance ([`batch`]): a fix that
//!   changes cell is written at once (with whatever else waits, in one round trip), one that
//!   stays in its cell waits up to [`batch::BatchSettings::in_cell_delay`] for company. Round
//!   trips and wake-ups, not Lua, were what a fix cost when each went alone.
//!
//! The session tells which kind a fix is from its own [`DriverTrack`]; the store still decides
//! (stale `ts`, the cell it last published), so a wrong guess costs at most the delay.

pub mod batch;
pub mod outcomes;

use std::sync::Arc;

use bytes::Bytes;
use ridecast_protocol::{GridCell, Id, LocationReport};
use tokio_util::sync::CancellationToken;

use crate::{
    base::metrics::Metrics,
    bus::{Backend, LocationUpdate},
};

pub use self::outcomes::StoreUnavailable;
use self::{
    batch::{BatchSettings, Batcher},
    outcomes::count,
};

/// What a driver's session remembers between fixes: the cell of the last fix it handed in.
#[derive(Debug, Default, Clone, Copy)]
pub struct DriverTrack {
    last_cell: Option<GridCell>,
}

/// Stores and publishes validated location reports. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingestor {
    backend: Arc<dyn Backend>,
    metrics: Metrics,
    /// The batch writer, for a store that is not in this process.
    batcher: Option<Batcher>,
}

impl Ingestor {
    /// An ingestor for `backend`; for a remote one it starts the batch writer, which flushes
    /// what waits and stops on `shutdown`.
    pub fn new(backend: Arc<dyn Backend>, metrics: Metrics, shutdown: CancellationToken) -> Self {
        let batcher = (!backend.stores_in_process())
            .then(|| Batcher::spawn(backend.clone(), BatchSettings::default(), metrics.clone(), shutdown));
        Self { backend, metrics, batcher }
    }

    /// Ingests a report already validated by the caller, from the session whose `track` it is.
    ///
    /// # Errors
    /// [`StoreUnavailable`] when the store failed: the fix is then lost, and the driver's next
    /// one takes its place.
    pub async fn ingest(
        &self,
        driver: &Id,
        report: LocationReport,
        track: &mut DriverTrack,
    ) -> Result<(), StoreUnavailable> {
        let cell = GridCell::of(report.lat, report.lng);
        let changes_cell = track.last_cell != Some(cell);
        track.last_cell = Some(cell);
        let ts = report.ts;
        let location = report.attribute_to(driver.clone());
        // Serializing plain numbers and a validated id cannot fail.
        let json = Bytes::from(serde_json::to_vec(&location).unwrap_or_default());
        let update = LocationUpdate { driver: location.driver_id, ts, cell, json };
        match &self.batcher {
            Some(batcher) => batcher.submit(update, changes_cell),
            None => self.ingest_inline(update).await,
        }
    }

    async fn ingest_inline(&self, update: LocationUpdate) -> Result<(), StoreUnavailable> {
        let started = std::time::Instant::now();
        let results = self.backend.ingest_locations(std::slice::from_ref(&update)).await;
        self.metrics.ingest_latency().observe(started.elapsed());
        let mut stored = Ok(());
        for result in results {
            count(&self.metrics, result.as_ref().ok().copied());
            if let Err(error) = result {
                tracing::warn!(driver.id = %update.driver, %error, "location not stored");
                Metrics::inc(&self.metrics.values().backend_errors_total);
                stored = Err(StoreUnavailable);
            }
        }
        stored
    }
}
