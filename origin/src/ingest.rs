//! Location ingest: each accepted update is serialized once, stored once, and published once
//! if (and only if) its ~50 m grid cell changed. Filtering here, not per subscriber, means a
//! driver creeping through traffic costs one store write and nothing downstream.

use std::sync::Arc;

use bytes::Bytes;
use ridecast_protocol::{GridCell, Id, LocationReport};

use crate::{
    base::metrics::Metrics,
    bus::{Backend, BackendError, IngestOutcome, LocationUpdate},
};

/// Stores and publishes validated location reports. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ingestor {
    backend: Arc<dyn Backend>,
    metrics: Metrics,
}

impl Ingestor {
    pub fn new(backend: Arc<dyn Backend>, metrics: Metrics) -> Self {
        Self { backend, metrics }
    }

    /// Ingests a report already validated by the caller.
    ///
    /// # Errors
    /// [`BackendError`] when the store is unreachable; the update is then lost, and the
    /// driver's next one (a second later) takes its place.
    pub async fn ingest(&self, driver: &Id, report: LocationReport) -> Result<IngestOutcome, BackendError> {
        let cell = GridCell::of(report.lat, report.lng);
        let ts = report.ts;
        let location = report.attribute_to(driver.clone());
        // Serializing plain numbers and a validated id cannot fail.
        let json = Bytes::from(serde_json::to_vec(&location).unwrap_or_default());
        let update = LocationUpdate { driver: driver.clone(), ts, cell, json };
        let values = self.metrics.values();
        let started = std::time::Instant::now();
        let result = self.backend.ingest_location(&update).await;
        self.metrics.ingest_latency().observe(started.elapsed());
        match result {
            Ok(outcome) => {
                Metrics::inc(match outcome {
                    IngestOutcome::Stale => &values.updates_stale_total,
                    IngestOutcome::Stored => &values.updates_suppressed_total,
                    IngestOutcome::Published => &values.updates_published_total,
                });
                Ok(outcome)
            }
            Err(error) => {
                Metrics::inc(&values.updates_failed_total);
                Metrics::inc(&values.backend_errors_total);
                Err(error)
            }
        }
    }
}
