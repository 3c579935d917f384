//! What keeps one client from taking more than its share of an instance. Every limit is a flag
//! with a documented default (README, docs/API.md, SECURITY.md); where each is enforced:
//!
//! | limit | flag (default) | enforced in |
//! |---|---|---|
//! | connections per instance | `--max-connections` (fd limit − 128) | the accept loop ([`crate::app::server`]) |
//! | time to send a request head (slowloris) | `--header-timeout-secs` (10) | [`crate::api::front`] |
//! | request body | `--max-body-bytes` (16 KiB) | the router |
//! | request head, WebSocket frame | 8 KiB, 4 KiB (contract) | [`crate::api::front`], sockets |
//! | ride requests per rider `sub` | `--ride-create-rate` (0.1/s), `--ride-create-burst` (3) | [`crate::api::rides`], [`principal_allowances`] |
//! | concurrent streams and sockets per token | `--max-streams-per-token` (8) | [`token_streams`] |
//! | driver frames other than locations, per driver (kept across reconnects) | `--driver-rate` (10/s), `--driver-burst` (20) | [`crate::api::driver_ws`], [`principal_allowances`] |
//! | driver locations | `--ingest-interval-ms` (200): one stored per interval, newest wins | [`crate::api::driver_ws`] |
//! | driver positions written to dispatch | one per second per driver (fixed), newest wins, the last one kept | [`crate::api::driver_ws`] |
//! | chat messages per side of a ride (kept across reconnects) | `--chat-rate` (5/s), `--chat-burst` (10) | [`crate::chat`], [`principal_allowances`] |
//! | chat kept per ride | `--chat-history-max` (1000) messages and their dedupe ids, `--chat-ttl-secs` (86400) after the last | [`crate::chat::store`] |
//! | silent sockets | `--ws-ping-secs` (20), `--ws-idle-secs` (60) | the driver and chat sockets |
//! | riders that stop reading | latest value only; dropped after 120 s blocked | [`crate::api::rider_sse`] |
//! | ids in paths and messages | the contract's id rule | [`crate::auth`], [`ridecast_protocol`] |

pub mod allowance;
pub mod principal_allowances;
pub mod token_streams;

/// Frames refused for the rate in a row before a socket counts as flooding and is closed
/// (1008): a client that ignores `rate_limited` that often is not going to slow down.
pub const REFUSALS_BEFORE_CLOSE: u32 = 100;

/// A socket's run of frames refused in a row for the rate.
#[derive(Debug, Default, Clone, Copy)]
pub struct RefusedRun(u32);

impl RefusedRun {
    /// A frame passed: the run is over.
    pub fn clear(&mut self) {
        self.0 = 0;
    }

    /// Counts one refusal; `true` once the run is [`REFUSALS_BEFORE_CLOSE`] long (flooding).
    pub fn add(&mut self) -> bool {
        self.0 += 1;
        self.0 >= REFUSALS_BEFORE_CLOSE
    }
}
