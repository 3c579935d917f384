//! A driver's position as drivers send it and as riders receive it.
//!
//! The same JSON shape appears everywhere (SSE data, the polling body, the edge link):
//! `{"driverId":"d-1","lat":37.77493,"lng":-122.41942,"heading":90.0,"speed":8.3,"ts":1764240000123}`.

use serde::{Deserialize, Serialize};

use crate::Id;

/// A point on the map, as used by pickups and drop-offs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatLng {
    pub lat: f64,
    pub lng: f64,
}

/// How far ahead of the receiver's clock a device timestamp may be, in milliseconds.
///
/// A phone whose clock runs far ahead would otherwise make every later, honest update look
/// stale until its stored location expired.
pub const MAX_FUTURE_SKEW_MS: u64 = 5 * 60 * 1000;

/// A position as a driver reports it on its WebSocket: the driver is whoever holds the socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocationReport {
    pub lat: f64,
    pub lng: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// The device's clock, epoch milliseconds.
    pub ts: u64,
}

/// A driver's position as riders see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    pub driver_id: Id,
    pub lat: f64,
    pub lng: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    pub ts: u64,
}

/// Why a reported position was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidLocation {
    #[error("{field} must be a finite number")]
    NotFinite { field: &'static str },
    #[error("lat must be within [-90, 90]")]
    LatOutOfRange,
    #[error("lng must be within [-180, 180]")]
    LngOutOfRange,
    #[error("heading must be within [0, 360]")]
    HeadingOutOfRange,
    #[error("speed must not be negative")]
    NegativeSpeed,
    #[error("ts must be a positive epoch time in milliseconds")]
    MissingTimestamp,
    #[error("ts is more than {} s ahead of the server's clock", MAX_FUTURE_SKEW_MS / 1000)]
    FromTheFuture,
}

impl LocationReport {
    /// Checks the report against the contract, with `now_ms` as the receiver's clock.
    ///
    /// # Errors
    /// [`InvalidLocation`] names the first field that breaks the rules.
    pub fn validate(&self, now_ms: u64) -> Result<(), InvalidLocation> {
        LatLng { lat: self.lat, lng: self.lng }.validate()?;
        if let Some(heading) = self.heading {
            finite("heading", heading)?;
            if !(0.0..=360.0).contains(&heading) {
                return Err(InvalidLocation::HeadingOutOfRange);
            }
        }
        if let Some(speed) = self.speed {
            finite("speed", speed)?;
            if speed < 0.0 {
                return Err(InvalidLocation::NegativeSpeed);
            }
        }
        if self.ts == 0 {
            return Err(InvalidLocation::MissingTimestamp);
        }
        if self.ts > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
            return Err(InvalidLocation::FromTheFuture);
        }
        Ok(())
    }

    /// The rider-facing form of this report, attributed to `driver_id`.
    pub fn attribute_to(self, driver_id: Id) -> Location {
        Location { driver_id, lat: self.lat, lng: self.lng, heading: self.heading, speed: self.speed, ts: self.ts }
    }
}

impl LatLng {
    /// Checks a point (a driver's position, a ride's pickup or drop-off) against the contract:
    /// finite numbers, lat within [-90, 90], lng within [-180, 180], both ends included.
    ///
    /// # Errors
    /// [`InvalidLocation`] names the first coordinate that breaks the rules.
    pub fn validate(&self) -> Result<(), InvalidLocation> {
        finite("lat", self.lat)?;
        finite("lng", self.lng)?;
        if !(-90.0..=90.0).contains(&self.lat) {
            return Err(InvalidLocation::LatOutOfRange);
        }
        if !(-180.0..=180.0).contains(&self.lng) {
            return Err(InvalidLocation::LngOutOfRange);
        }
        Ok(())
    }
}

fn finite(field: &'static str, value: f64) -> Result<(), InvalidLocation> {
    if value.is_finite() { Ok(()) } else { Err(InvalidLocation::NotFinite { field }) }
}

/// Whether an update with timestamp `incoming_ts` replaces one with `current_ts`: only newer ones do.
pub fn is_newer(incoming_ts: u64, current_ts: Option<u64>) -> bool {
    current_ts.is_none_or(|current| incoming_ts > current)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_764_240_000_000;

    fn report(lat: f64, lng: f64) -> LocationReport {
        LocationReport { lat, lng, heading: Some(90.0), speed: Some(8.3), ts: NOW }
    }

    #[test]
    fn the_contract_example_round_trips() {
        let json =
            r#"{"driverId":"d-1","lat":37.77493,"lng":-122.41942,"heading":90.0,"speed":8.3,"ts":1764240000123}"#;
        let location: Location = serde_json::from_str(json).expect("parses");
        assert_eq!(serde_json::to_string(&location).expect("serializes"), json);
    }

    #[test]
    fn optional_fields_are_left_out_not_null() {
        let location = LocationReport { heading: None, speed: None, ..report(1.0, 2.0) }
            .attribute_to(Id::parse("d1").expect("valid"));
        let json = serde_json::to_string(&location).expect("serializes");
        assert!(!json.contains("heading") && !json.contains("speed"), "{json}");
    }

    #[test]
    fn ranges_are_inclusive_and_enforced() {
        assert_eq!(report(90.0, 180.0).validate(NOW), Ok(()));
        assert_eq!(report(-90.0, -180.0).validate(NOW), Ok(()));
        assert_eq!(report(90.0001, 0.0).validate(NOW), Err(InvalidLocation::LatOutOfRange));
        assert_eq!(report(0.0, -180.5).validate(NOW), Err(InvalidLocation::LngOutOfRange));
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        assert!(matches!(report(f64::NAN, 0.0).validate(NOW), Err(InvalidLocation::NotFinite { field: "lat" })));
        assert!(matches!(report(0.0, f64::INFINITY).validate(NOW), Err(InvalidLocation::NotFinite { field: "lng" })));
        let bad_speed = LocationReport { speed: Some(f64::NAN), ..report(0.0, 0.0) };
        assert!(matches!(bad_speed.validate(NOW), Err(InvalidLocation::NotFinite { field: "speed" })));
    }

    #[test]
    fn timestamps_must_exist_and_not_run_ahead() {
        let zero = LocationReport { ts: 0, ..report(0.0, 0.0) };
        assert_eq!(zero.validate(NOW), Err(InvalidLocation::MissingTimestamp));
        let future = LocationReport { ts: NOW + MAX_FUTURE_SKEW_MS + 1, ..report(0.0, 0.0) };
        assert_eq!(future.validate(NOW), Err(InvalidLocation::FromTheFuture));
    }

    #[test]
    fn only_strictly_newer_updates_replace_the_current_one() {
        assert!(is_newer(5, None));
        assert!(is_newer(6, Some(5)));
        assert!(!is_newer(5, Some(5)));
        assert!(!is_newer(4, Some(5)));
    }
}
