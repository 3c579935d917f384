//! Every name the worker reads from its environment, in one place. Each must match `wrangler.toml`.

/// Durable Object namespace holding one `DriverHub` per driver id.
pub const DRIVER_HUB: &str = "DRIVER_HUB";
/// Durable Object namespace holding one `SurgeHub` per zone id.
pub const SURGE_HUB: &str = "SURGE_HUB";
/// Var: base URL of the origin (`http://127.0.0.1:8080`), without a trailing slash.
pub const ORIGIN_URL: &str = "ORIGIN_URL";
/// Secret: the HS256 token secret shared with the origin (`wrangler secret put RIDECAST_TOKEN_SECRET`).
pub const RIDECAST_TOKEN_SECRET: &str = "RIDECAST_TOKEN_SECRET";
/// Optional secret: the previous token secret, still accepted during a rotation.
pub const RIDECAST_TOKEN_SECRET_PREVIOUS: &str = "RIDECAST_TOKEN_SECRET_PREVIOUS";
/// Optional var: seconds between heartbeat comments (the dead-rider probe); default 10, at most 15.
pub const EDGE_HEARTBEAT_SECS: &str = "EDGE_HEARTBEAT_SECS";
/// Optional var: seconds the upstream link stays open after the last rider left; default 10.
pub const EDGE_LINK_GRACE_SECS: &str = "EDGE_LINK_GRACE_SECS";
