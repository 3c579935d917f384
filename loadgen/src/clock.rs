//! The one clock that send and receipt instants are read from.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time in microseconds since the epoch.
///
/// Drivers stamp sends and riders stamp receipts with the same clock; both run on one machine,
/// so the clocks agree and `receipt - send` is the delivery latency.
pub fn epoch_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
