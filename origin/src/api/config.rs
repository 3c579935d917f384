//! What the handlers need to know, resolved from flags by the app layer
//! ([`crate::app::config`] is where each comes from, with its default).

use std::time::Duration;

use crate::limits::allowance::RateLimit;

/// Settings of the client-facing API: streams, sockets and the limits that apply per
/// connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// Browser origins allowed (CORS); empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Longest silence on an SSE stream before a comment heartbeat.
    pub heartbeat: Duration,
    /// The `retry:` every SSE stream starts with, and the one refusals carry.
    pub sse_retry_ms: u64,
    /// Streams and sockets one token may hold on this instance.
    pub max_streams_per_token: u32,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Driver frames other than locations.
    pub driver_rate: RateLimit,
    /// Rides one rider (`sub`) may request.
    pub ride_create_rate: RateLimit,
    /// One location stored per driver per interval, newest wins.
    pub ingest_interval: Duration,
    /// How often sockets are pinged.
    pub ws_ping: Duration,
    /// A socket silent this long is closed.
    pub ws_idle: Duration,
    /// Time a client has to send its request head.
    pub header_timeout: Duration,
}
