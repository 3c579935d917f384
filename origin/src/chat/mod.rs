//! Ride chat (`GET /ws/chat/{rideId}`, issue 6): the store comes first; the socket follows.
//!
//! Contract: PROTOCOL.md, "Chat WebSocket".

pub mod store;
