//! HTTP: the connection front, the router, and the one place errors become responses.
//!
//! [`front`] reads each connection's first request head itself: rider SSE streams are served
//! straight on the socket (no per-connection HTTP buffers kept for the stream's life), every
//! other connection is handed to hyper. [`router`] is the axum API both paths call.

pub mod error;
pub mod front;
pub mod router;
