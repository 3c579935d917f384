//! Ridecast's regional origin.
//!
//! Drivers hold one WebSocket here and send their positions; riders receive positions as
//! Server-Sent Events. Instances share updates through a [`bus::Backend`]: Redis Pub/Sub when
//! configured, an in-process bus otherwise.
//!
//! How a location travels, and where each step lives:
//!
//! 1. [`driver_ws`] reads a driver's frames, validates them and coalesces floods.
//! 2. [`ingest`] stores each accepted update once and publishes it only when its grid cell changed.
//! 3. [`bus`] carries it to every instance (Redis) or straight to local hubs (embedded).
//! 4. [`fanout`] keeps one latest-value hub per channel with local subscribers;
//!    [`subscriptions`] holds the instance's single bus subscription for it.
//! 5. [`rider_sse`] writes each hub value to every rider stream, latest-only.
//!
//! A zone's surge multiplier is the second kind of topic: [`surge`] takes an operator's value
//! and stores and publishes it through the [`bus`]; from there it travels as in steps 3 to 5.
//! A ride's status is the third: [`rides`] creates and cancels rides (and is where the matcher
//! assigns them), each change stored and published atomically through the [`bus`], then on as
//! in steps 3 to 5.
//!
//! Ride offers: [`dispatch`] finds the nearest available drivers for a new ride, keeps its
//! offers, deadlines and winner in a store shared by every instance (an in-process book, or Lua
//! scripts in Redis), and reaches each driver's [`driver_ws`] session on whatever instance it is
//! connected to; the winner is assigned through [`rides`].
//!
//! Ride chat: [`chat`] stores each message in the ride's stream (Redis, or memory) before
//! anyone sees it, and wakes the ride's participants on every instance with a notice through
//! the [`bus`]; each participant's session sends what the store holds after its last message.
//!
//! Edge Durable Objects follow hubs through [`edge_link`] WebSockets. The rest: [`config`]
//! (flags and env), [`auth`] (bearer tokens), [`http`] (connection front, router, errors),
//! [`websocket`] (what the driver and chat sockets share),
//! [`polling`] (the legacy polling endpoint), [`ops`] (health, readiness, metrics), [`metrics`],
//! [`shutdown`] (drain), [`server`] (wiring it all together), [`dev`] (the dev-mode banner and
//! token subcommand), [`launch`] (what a binary does after parsing its flags), [`extension`]
//! (how a program built on the origin adds routes and work to it).
//!
//! The live demo is not here: it is `ridecast-demo` (`demo/`), built on [`extension`] and the
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
