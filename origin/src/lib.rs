//! Ridecast's regional origin.
//!
//! Drivers hold one WebSocket here and send their positions; riders receive positions as
//! Server-Sent Events. Instances share updates through a [`bus::Backend`]: Redis Pub/Sub when
//! configured, an in-process bus otherwise.
//!
//! # Layers
//!
//! Each folder is a layer, and a layer uses only the layers below it (`origin/tests/layers.rs`
//! fails on any import that reaches up, and on any import circle between files):
//!
//! | layer | modules | what lives there |
//! |---|---|---|
//! | 4 wiring | [`app`] | flags into a [`Config`], the backend and stores it picks, router, accept loop, drain, the `launch` both binaries share, the [`Extension`] point; imported only by `main.rs` and programs built on the origin |
//! | 3 client API | [`api`] | everything a client talks to: connection front, extractors, errors, one module per handler |
//! | 2 engine | [`auth`], [`ingest`], [`fanout`], [`rides`], [`dispatch`], [`chat`], [`limits`] | what the system does, without HTTP: token checks, ingest, hubs, rides, offers, chat, limits; engine modules use one another without circles |
//! | 1 bus | [`bus`] | latest values and pub/sub, embedded or Redis; it hands what arrives up through [`bus::Deliveries`], never naming what sits above |
//! | 0 base | [`base`] | clock, random ids, metrics, shutdown |
//!
//! Rides, dispatch and chat each keep their own store the same way: a trait in `store/mod.rs`,
//! with `store/embedded.rs` (one process) and `store/redis.rs` (its Lua beside it).
//!
//! # How a location travels, and where each step lives
//!
//! 1. [`api::driver_ws`] reads a driver's frames, validates them and coalesces floods.
//! 2. [`ingest`] stores each accepted update once and publishes it only when its grid cell changed:
//!    inline on the embedded store, in batches (one round trip for many drivers) on Redis.
//! 3. [`bus`] carries it to every instance (Redis) or straight to local hubs (embedded).
//! 4. [`fanout::hubs`] keeps one latest-value hub per channel with local subscribers;
//!    [`fanout::subscriptions`] holds the instance's single bus subscription for it.
//! 5. [`api::rider_sse`] writes each hub value to every rider stream, latest-only;
//!    [`api::edge_link`] to every edge Durable Object following it.
//!
//! A zone's surge multiplier is the second kind of topic: [`api::surge`] takes an operator's
//! value and stores and publishes it through the [`bus`]; from there it travels as in steps 3 to
//! 5. A ride's status is the third: [`rides`] creates and cancels rides (and is where the matcher
//! assigns them), each change stored and published atomically by its ride store, then on as in
//! steps 3 to 5. A new subscriber starts from [`fanout::snapshots`]: the bus's latest value, or
//! the ride store's.
//!
//! Ride offers: [`dispatch`] finds the nearest available drivers for a new ride, keeps its
//! offers, deadlines and winner in a store shared by every instance (an in-process book, or Lua
//! scripts in Redis), and reaches each driver's [`api::driver_ws`] session on whatever instance
//! it is connected to; the winner is assigned through [`rides`].
//!
//! Ride chat: [`chat`] stores each message in the ride's stream (Redis, or memory) before
//! anyone sees it, and wakes the ride's participants on every instance with a notice through
//! the [`bus`] and [`fanout::chat_rooms`]; each participant's [`api::chat`] session sends what
//! the store holds after its last message.
//!
//! The live demo is not here: it is `ridecast-demo` (`demo/`), built on [`Extension`] and the
//! public API.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod base;
pub mod bus;
pub mod chat;
pub mod dispatch;
pub mod fanout;
pub mod ingest;
pub mod limits;
pub mod rides;

pub use app::{
    config::Config,
    extension::{Extension, Listening},
    server::{run, run_with},
};
