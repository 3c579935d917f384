//! Wiring: flags and environment into a configuration, the backend and stores it picks, the
//! router, the accept loop and the drain. Imported only by `main.rs` (and binaries built on
//! the origin); nothing below imports it.
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | flags and env (`RIDECAST_*`), resolved into a [`Config`](config::Config) |
//! | [`server`] | one instance: backend, stores, hubs, state, accept loop, drain |
//! | [`router`] | the API's routes in one table |
//! | [`dev`] | the dev-mode banner and the `token` subcommand |
//! | [`launch`] | what a binary does after parsing its flags: logging, fd limit, runtime, bind, signals |
//! | [`extension`] | how a program built on the origin (the demo) adds routes, and work once listening |

pub mod config;
pub mod dev;
pub mod extension;
pub mod launch;
pub mod router;
pub mod server;
