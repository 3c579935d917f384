//! The ground floor: what every layer above may use and which uses nothing above it.
//!
//! | module | what it holds |
//! |---|---|
//! | [`clock`] | wall-clock milliseconds and seconds, durations as milliseconds |
//! | [`random`] | unguessable ids from the OS's random source |
//! | [`metrics`] | the instance's counters and gauges, and their Prometheus text |
//! | [`shutdown`] | the drain signal every connection watches, and the bounded wait for them |

pub mod clock;
pub mod metrics;
pub mod random;
pub mod shutdown;
