//! What became of fixes: counted in the metrics, and, when the store failed, told to the
//! driver's session (which tells the driver once per outage).

use crate::{base::metrics::Metrics, bus::IngestOutcome};

/// The store did not take the fix (or, written in batches, the last batch failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("locations cannot be stored right now")]
pub struct StoreUnavailable;

/// Counts what became of one update: `None` when the store failed to take it.
pub fn count(metrics: &Metrics, outcome: Option<IngestOutcome>) {
    let values = metrics.values();
    Metrics::inc(match outcome {
        Some(IngestOutcome::Stale) => &values.updates_stale_total,
        Some(IngestOutcome::Stored) => &values.updates_suppressed_total,
        Some(IngestOutcome::Published) => &values.updates_published_total,
        None => &values.updates_failed_total,
    });
}
