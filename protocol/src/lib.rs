//! Ridecast's public contract (`shared/PROTOCOL.md`) as Rust types and pure functions.
//!
//! Everything here is free of I/O and of any async runtime so that the origin (tokio) and the
//! edge worker (wasm32, workerd) share one definition of every message, rule and encoding.
//!
//! | module | what it holds |
//! |---|---|
//! | [`ids`] | driver, ride and zone ids: the `[A-Za-z0-9_-]{1,64}` rule |
//! | [`location`] | a driver's position, its validation and staleness rule |
//! | [`grid`] | the ~50 m grid cell that decides whether an update is worth pushing |
//! | [`messages`] | WebSocket frames, driver to server and server to driver |
//! | [`token`] | JWT claims, roles, minting and verification (HS256, key rotation) |
//! | [`surge`] | a zone's surge multiplier, the operator's request and the pushed value |
//! | [`ride`] | a ride's request, its status and the status value riders follow |
//! | [`chat`] | ride chat frames, their rules, and message ids in one total order |
//! | [`sse`] | Server-Sent Events framing that no payload can break |
//! | [`error`] | the JSON error body shared by HTTP and WebSocket |
//! | [`channels`] | names of pub/sub channels and store keys shared by every instance |
#![forbid(unsafe_code)]

pub mod channels;
pub mod chat;
pub mod error;
pub mod grid;
pub mod ids;
pub mod location;
pub mod messages;
pub mod ride;
pub mod sse;
pub mod surge;
pub mod token;

pub use error::{ErrorBody, ErrorCode};
pub use grid::GridCell;
pub use ids::{Id, InvalidId};
pub use location::{InvalidLocation, LatLng, Location, LocationReport};
pub use ride::{RideCreated, RideRequest, RideState, RideStatus, RideStep};
pub use surge::{InvalidSurge, Multiplier, Surge, SurgeRequest};
pub use token::{Claims, Role, TokenError, TokenKeys};

/// Largest WebSocket frame (and message) accepted on any Ridecast socket, in bytes.
pub const MAX_FRAME_BYTES: usize = 4 * 1024;

/// Whether `text` is (at most) a JSON object: its first non-whitespace character is `{`. serde
/// reads a tagged enum from a JSON array as well, which no frame of the contract is; checking
/// the first byte costs nothing, where reading into a `Value` first would cost every frame.
pub fn is_json_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{')
}
