//! End-to-end test harness for Ridecast.
//!
//! Everything here starts *real* things: `redis-server` processes, `ridecast-origin` processes,
//! and third-party clients (tokio-tungstenite for the driver WebSocket, reqwest with
//! eventsource-stream for rider SSE, plus a hand-written raw-TCP reader for the byte-level SSE
//! checks). The tests in `tests/` are written against `shared/PROTOCOL.md` and read like it.
//!
//! | module | what it holds |
//! |---|---|
//! | [`wait`] | timeouts that say what was expected, quiet periods, the test clock |
//! | [`net`] | free ports |
//! | [`redis`] | [`RedisServer`]: a private `redis-server` that can be killed and restarted |
//! | [`redis_cluster`] | [`RedisCluster`]: a private three-primary Redis Cluster whose primaries can fail over |
//! | [`origin`] | [`Origin`]: builds, starts, signals and kills `ridecast-origin` |
//! | [`process`] | a process's open file descriptors and resident memory, from `/proc/<pid>` |
//! | [`cluster`] | [`Mode`] and [`Cluster`]: one embedded origin, or Redis (one server or a cluster) plus several origins |
//! | [`tokens`] | tokens for every role, good and bad, minted with `ridecast_protocol` |
//! | [`geo`] | the contract's grid formula, written out again, and routes through its cells |
//! | [`driver`] | [`DriverSocket`]: the driver's WebSocket (tokio-tungstenite) |
//! | [`chat`] | [`ChatSocket`]: the ride chat's WebSocket (tokio-tungstenite), and a ride with an assigned driver |
//! | [`rider`] | [`RiderStream`]: the rider's SSE stream (reqwest + eventsource-stream) |
//! | [`raw_sse`] | [`RawSse`]: SSE over a hand-driven TCP socket, for headers, comments and stalls |
//! | [`http`] | plain requests, the contract's error-body check, [`Endpoint`] (origin or edge) |
//! | [`link`] | the origin's edge link as a Durable Object holds it (tokio-tungstenite) |
//! | [`edge`] | [`Edge`]: the edge worker under real workerd (`wrangler dev --local`) |
//! | [`stub_origin`] | [`StubOrigin`]: an origin that answers one status chosen by the test (502, 503, 429, 200) |
//!
//! Run with `scripts/test` (installs what is missing), or `cargo test -p ridecast-tests` given
//! `redis-server` on `PATH`, PyJWT for Python 3 (the interop test), and for the edge tests the
//! tools `scripts/edge-setup` installs (worker-build, wasm-bindgen-cli, wrangler). Every test
//! starts its own processes on free ports, so the tests run in parallel.
//!
//! The origin binary is built once per test binary with `escargot` (as `cargo build -p
//! ridecast-origin` would build it, with the origin's own features); set
//! `RIDECAST_TESTS_ORIGIN_BIN` to use a binary that is already built instead.
#![forbid(unsafe_code)]

pub mod chat;
pub mod cluster;
pub mod driver;
pub mod edge;
pub mod geo;
pub mod http;
pub mod link;
pub mod net;
pub mod origin;
pub mod process;
pub mod raw_sse;
pub mod redis;
pub mod redis_cluster;
pub mod rider;
pub mod stub_origin;
pub mod tokens;
pub mod wait;

pub use chat::ChatSocket;
pub use cluster::{Cluster, Mode};
pub use driver::{DriverSocket, Fix};
pub use edge::Edge;
pub use geo::Route;
pub use http::{Auth, Endpoint};
pub use origin::{Exited, Origin, OriginBuilder};
pub use raw_sse::{RawOptions, RawSse, SseFrame};
pub use redis::RedisServer;
pub use redis_cluster::RedisCluster;
pub use rider::{Polled, RiderStream, SeenLocation, poll, wait_until_stored};
pub use stub_origin::StubOrigin;
pub use wait::{EXPECT, QUIET, TsClock};

/// Runs an `async fn(Mode)` scenario once per deployment mode, as `<name>::embedded` and
/// `<name>::redis`, so every core behaviour is checked with the in-process bus and with Redis.
#[macro_export]
macro_rules! in_both_modes {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$scenario($crate::Mode::Embedded).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$scenario($crate::Mode::Redis).await;
            }
        }
    )+};
}

/// Runs `async fn(Mode)` scenarios once more each on a Redis Cluster, as
/// `on_a_redis_cluster::<name>`: the cross-instance behaviours, with sharded Pub/Sub and every
/// key and script on the shard its hash tag picks.
#[macro_export]
macro_rules! on_a_redis_cluster_too {
    ($($scenario:ident),+ $(,)?) => {
        mod on_a_redis_cluster {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario($crate::Mode::RedisCluster).await;
            }
        )+}
    };
}
