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
/// Optional var: browser origins allowed by CORS, comma-separated; unset or empty = no CORS
/// headers at all. `*` counts only while the worker runs with the public dev secret.
pub const CORS_ORIGINS: &str = "CORS_ORIGINS";
/// Optional var: streams one token may hold open on one Durable Object; default 8 (the origin's
/// `--max-streams-per-token`).
pub const EDGE_MAX_STREAMS_PER_TOKEN: &str = "EDGE_MAX_STREAMS_PER_TOKEN";
/// Optional var: riders the fan-out tree puts on one Durable Object before the next (`crate::tree`;
/// an eighth more for returning tokens); default 500 (~122 KB each in a 128 MB
/// isolate, with room to spare).
pub const EDGE_MAX_RIDERS_PER_OBJECT: &str = "EDGE_MAX_RIDERS_PER_OBJECT";
/// Optional var: shard objects one key may grow when its riders outnumber
/// `EDGE_MAX_RIDERS_PER_OBJECT` (`crate::tree`); default 200, 0 = the root object only.
pub const EDGE_MAX_SHARDS_PER_KEY: &str = "EDGE_MAX_SHARDS_PER_KEY";
/// Optional var: distinct Durable Objects one token may open through one worker isolate per
/// minute; default 20.
pub const EDGE_MAX_OBJECTS_PER_TOKEN: &str = "EDGE_MAX_OBJECTS_PER_TOKEN";
