//! Ridecast's edge worker: rider SSE streams terminated in Durable Objects near the rider.
//!
//! Contract: "The edge worker" in `shared/PROTOCOL.md`. The worker checks the rider's token at the
//! edge, sends each location or surge stream to the Durable Object named after its key, and passes
//! every other `/api/` request through to the origin, streaming.
//!
//! | module | what it holds |
//! |---|---|
//! | [`bindings`] | names of the Durable Object bindings, vars and secrets (match `wrangler.toml`) |
//! | [`error`] | the edge's error type and its one conversion to a contract JSON error response |
//! | [`auth`] | reading and verifying the rider token (shared rules from `ridecast-protocol`) |
//! | [`router`] | the `fetch` entry point: which request goes to which Durable Object or the origin |
//! | [`cors`] | `CORS_ORIGINS`: preflights answered at the edge, headers on every answer |
//! | [`limits`] | streams per token and riders per object, objects a token may open per minute |
//! | [`tracking`] | tracking tokens confirmed with the origin, fail-closed, reused for at most 5 s |
//! | [`passthrough`] | streaming proxy of other `/api/` requests to `ORIGIN_URL` |
//! | [`rider_stream`] | one rider's SSE body: a latest-only cell, never more than one pending frame |
//! | [`hub`] | "the latest value of a key": fan-out, heartbeat probe, upstream link, grace alarm |
//! | [`tree`] | a key's riders over several objects: the root, its shards, the paths between them |
//! | [`objects`] | the `DriverHub` and `SurgeHub` Durable Objects, thin wrappers over [`hub`] |
#![forbid(unsafe_code)]

pub mod auth;
pub mod bindings;
pub mod cors;
pub mod error;
pub mod hub;
pub mod limits;
pub mod objects;
pub mod passthrough;
pub mod rider_stream;
pub mod router;
pub mod tracking;
pub mod tree;
