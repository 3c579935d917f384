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
