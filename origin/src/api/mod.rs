//! Everything a client talks to: the connection front, extractors, errors, and every handler.
//!
//! | module | what it holds |
//! |---|---|
//! | [`front`] | each connection's first request head: rider SSE served on the socket, the rest to hyper |
//! | [`config`] | what the handlers need to know, resolved from flags by the app layer |
//! | [`state`] | [`AppState`](state::AppState), the cheap handles every handler reaches |
//! | [`extract`] | who is calling and what they may open: tokens, ids in paths, checked in the contract's order |
//! | [`error`] | the one place errors become HTTP responses |
//! | [`driver_ws`] | `GET /ws/rides`: a driver's socket (locations in, offers out) |
//! | [`rider_sse`] | `GET /api/sse/...`: rider streams, latest-only |
//! | [`stream_signals`] | every SSE stream's heartbeat tick and drain signal, from one task |
//! | [`chat`] | `GET /ws/chat/{rideId}`: a ride's chat socket |
//! | [`websocket`] | what the driver and chat sockets share |
//! | [`rides`] | `POST /api/rides`, `DELETE /api/rides/{rideId}` |
//! | [`surge`] | `POST /api/surge/{zoneId}` (operators) |
//! | [`polling`] | `GET /api/drivers/{id}/location`, the legacy polling endpoint |
//! | [`edge_link`] | `GET /edge/v1/...`: the edge's Durable Objects following hubs |
//! | [`ops`] | health, readiness, metrics |

pub mod chat;
pub mod config;
pub mod driver_ws;
pub mod edge_link;
pub mod error;
pub mod extract;
pub mod front;
pub mod ops;
pub mod polling;
pub mod rider_sse;
pub mod rides;
pub mod state;
pub mod stream_signals;
pub mod surge;
pub mod websocket;
