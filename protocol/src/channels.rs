//! Names shared by every origin instance: pub/sub channels and store keys.
//!
//! Kept in one place so that an instance publishing and an instance subscribing can never
//! disagree on a spelling.
//!
//! Every name carries its driver, zone or ride id as a Redis Cluster hash tag (`{d1}`): only
//! the part in braces picks the cluster slot, so a key and the channel its changes are published
//! on (`driver:latest:{d1}`, `driver:location:{d1}`) live on one shard. A script that stores a
//! value and publishes it (`SPUBLISH` in a cluster) then runs on that shard alone. Ids never
//! contain braces ([`crate::Id`]), so the tag is always exactly the id. On a single Redis the
//! braces are just characters.

use crate::Id;

/// Channel carrying a driver's pushed (cell-changing) locations, as location JSON.
pub fn driver_location(driver: &Id) -> String {
    format!("driver:location:{{{driver}}}")
}

/// Store key holding a driver's latest accepted location and the cell last pushed.
pub fn driver_latest_key(driver: &Id) -> String {
    format!("driver:latest:{{{driver}}}")
}

/// Channel carrying a surge zone's multiplier changes, as surge JSON.
pub fn surge_zone(zone: &Id) -> String {
    format!("surge:zone:{{{zone}}}")
}

/// Store key holding a zone's current surge (its JSON and `ts`).
pub fn surge_latest_key(zone: &Id) -> String {
    format!("surge:latest:{{{zone}}}")
}

/// Channel carrying a ride's status changes, as ride status JSON.
pub fn ride_status(ride: &Id) -> String {
    format!("ride:status:{{{ride}}}")
}

/// Store key holding a ride: who asked for it, where from and to, its status (and driver), and
/// the status JSON as last published.
pub fn ride_key(ride: &Id) -> String {
    format!("{RIDE_KEY_PREFIX}{{{ride}}}")
}

/// Store key naming a rider's open ride (`searching` or under way), if any: what keeps a rider
/// to one open ride at a time. Its hash tag is the rider's `sub`; the Redis ride store picks the
/// ids of a rider's rides in the same cluster slot, so that one script sees both.
pub fn rider_open_key(rider: &Id) -> String {
    format!("{RIDER_OPEN_PREFIX}{{{rider}}}")
}

/// What [`rider_open_key`] puts before the hash tag (a script that reads the rider of a ride
/// builds the key from it).
pub const RIDER_OPEN_PREFIX: &str = "rider:open:";

/// What [`ride_key`] puts before the hash tag (a script that reads a ride id from the rider's
/// index builds the ride's key from it).
pub const RIDE_KEY_PREFIX: &str = "ride:";

/// Channel carrying notices of a ride's chat (a message was stored, someone is typing). The
/// messages themselves are read from the ride's chat stream, never from the channel.
pub fn chat_ride(ride: &Id) -> String {
    format!("{CHAT_RIDE_PREFIX}{{{ride}}}")
}

/// The ride a [`chat_ride`] channel belongs to, or `None` for any other channel.
pub fn chat_ride_of(channel: &str) -> Option<&str> {
    channel.strip_prefix(CHAT_RIDE_PREFIX)?.strip_prefix('{')?.strip_suffix('}')
}

const CHAT_RIDE_PREFIX: &str = "chat:ride:";

/// Store key of a ride's chat: a stream of its messages in their one order.
pub fn chat_stream_key(ride: &Id) -> String {
    format!("chat:{{{ride}}}")
}

/// Store key of a ride's chat `clientMsgId`s, each mapped to its stored message id (retries).
pub fn chat_ids_key(ride: &Id) -> String {
    format!("chat:{{{ride}}}:ids")
}

/// The Redis Cluster hash tag of `name`: what its slot is computed from (the whole name when
/// it has none), as Redis defines it: the text between the first `{` and the next `}`, if
/// that is not empty.
pub fn hash_tag(name: &str) -> &str {
    let Some(open) = name.find('{') else { return name };
    match name[open + 1..].find('}') {
        Some(len) if len > 0 => &name[open + 1..open + 1 + len],
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> Id {
        Id::parse(raw).expect("valid id")
    }

    #[test]
    fn a_key_and_its_channel_share_one_slot() {
        let (driver, zone, ride) = (id("d-1"), id("z_9"), id("Ride42"));
        assert_eq!(hash_tag(&driver_latest_key(&driver)), "d-1");
        assert_eq!(hash_tag(&driver_location(&driver)), "d-1");
        assert_eq!(hash_tag(&surge_latest_key(&zone)), "z_9");
        assert_eq!(hash_tag(&surge_zone(&zone)), "z_9");
        assert_eq!(hash_tag(&rider_open_key(&id("rider-7"))), "rider-7");
        for name in [ride_key(&ride), ride_status(&ride), chat_ride(&ride), chat_stream_key(&ride), chat_ids_key(&ride)]
        {
            assert_eq!(hash_tag(&name), "Ride42", "{name}");
        }
    }

    #[test]
    fn different_ids_get_different_tags() {
        assert_ne!(hash_tag(&driver_location(&id("d1"))), hash_tag(&driver_location(&id("d2"))));
    }

    #[test]
    fn a_chat_channel_names_its_ride_and_nothing_else_does() {
        assert_eq!(chat_ride_of(&chat_ride(&id("r1"))), Some("r1"));
        assert_eq!(chat_ride_of(&ride_status(&id("r1"))), None);
        assert_eq!(chat_ride_of("chat:ride:r1"), None);
    }

    #[test]
    fn hash_tags_follow_the_redis_rule() {
        assert_eq!(hash_tag("plain"), "plain");
        assert_eq!(hash_tag("a{b}c{d}"), "b");
        assert_eq!(hash_tag("a{}b"), "a{}b");
        assert_eq!(hash_tag("a{b"), "a{b");
    }
}
