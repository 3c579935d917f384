//! Names shared by every origin instance: pub/sub channels and store keys.
//!
//! Kept in one place so that an instance publishing and an instance subscribing can never
//! disagree on a spelling.

use crate::Id;

/// Channel carrying a driver's pushed (cell-changing) locations, as location JSON.
pub fn driver_location(driver: &Id) -> String {
    format!("driver:location:{driver}")
}

/// Store key holding a driver's latest accepted location and the cell last pushed.
pub fn driver_latest_key(driver: &Id) -> String {
    format!("driver:latest:{driver}")
}

/// Channel carrying a surge zone's multiplier changes, as surge JSON.
pub fn surge_zone(zone: &Id) -> String {
    format!("surge:zone:{zone}")
}

/// Store key holding a zone's current surge (its JSON and `ts`).
pub fn surge_latest_key(zone: &Id) -> String {
    format!("surge:latest:{zone}")
}

/// Channel carrying a ride's status changes, as ride status JSON.
pub fn ride_status(ride: &Id) -> String {
    format!("ride:status:{ride}")
}

/// Store key holding a ride: who asked for it, where from and to, its status (and driver), and
/// the status JSON as last published.
pub fn ride_key(ride: &Id) -> String {
    format!("ride:{ride}")
}

/// Channel carrying notices of a ride's chat (a message was stored, someone is typing). The
/// messages themselves are read from the ride's chat stream, never from the channel.
pub fn chat_ride(ride: &Id) -> String {
    format!("{CHAT_RIDE_PREFIX}{ride}")
}

/// The ride a [`chat_ride`] channel belongs to, or `None` for any other channel.
pub fn chat_ride_of(channel: &str) -> Option<&str> {
    channel.strip_prefix(CHAT_RIDE_PREFIX)
}

const CHAT_RIDE_PREFIX: &str = "chat:ride:";

/// Store key of a ride's chat: a stream of its messages in their one order.
pub fn chat_stream_key(ride: &Id) -> String {
    format!("chat:{ride}")
}

/// Store key of a ride's chat `clientMsgId`s, each mapped to its stored message id (retries).
pub fn chat_ids_key(ride: &Id) -> String {
    format!("chat:{ride}:ids")
}
