//! Rides: a rider asks for one, the origin keeps its status, and the rider follows it.
//!
//! Request body of `POST /api/rides`: `{"pickup":{"lat":..,"lng":..},"dropoff":{"lat":..,"lng":..}}`.
//! Its `201` answer: `{"rideId":"...","status":"searching","token":"<ride-scoped rider token>"}`.
//! A ride's status as riders see it (SSE data of `GET /api/sse/rides/{rideId}`, the answer of
//! `DELETE /api/rides/{rideId}`):
//! `{"rideId":"...","status":"driver_assigned","driverId":"d-1","trackingToken":"...","ts":1764240000123}`.
//! `driverId` and `trackingToken` are present only while the ride is under way with its driver
//! (`driver_assigned`, `driver_arrived`, `in_progress`), and left out (never `null`) otherwise,
//! as a location's optional fields are.
//!
//! The lifecycle (v1.1): `searching` → `driver_assigned` (a driver accepted) → `driver_arrived`
//! → `in_progress` → `completed`, the last three reported by the assigned driver
//! ([`RideStep`]); steps only go forward, skipping ahead is allowed. `no_driver` ends a search,
//! `cancelled` (the rider) ends a ride at any step before `completed`.
//!
//! In a request body, fields other than `pickup` and `dropoff` (and, inside them, other than
//! `lat` and `lng`) are ignored, so that newer clients can send more; anything missing or of the
//! wrong type makes the body malformed.

use serde::{Deserialize, Serialize};

use crate::{
    Id,
    location::{InvalidLocation, LatLng},
};

/// Where a ride stands. Every ride starts `searching`; `no_driver`, `cancelled` and
/// `completed` are final (see the module docs for the order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RideStatus {
    /// Looking for a driver.
    Searching,
    /// A driver took the ride; the rider may track it.
    DriverAssigned,
    /// The driver is at the pickup.
    DriverArrived,
    /// The rider is on board.
    InProgress,
    /// The driver dropped the rider off.
    Completed,
    /// Nobody took the ride.
    NoDriver,
    /// The rider cancelled.
    Cancelled,
}

/// Every status, in the lifecycle's order (the final side-exits last).
pub const RIDE_STATUSES: [RideStatus; 7] = [
    RideStatus::Searching,
    RideStatus::DriverAssigned,
    RideStatus::DriverArrived,
    RideStatus::InProgress,
    RideStatus::Completed,
    RideStatus::NoDriver,
    RideStatus::Cancelled,
];

impl RideStatus {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Searching => "searching",
            Self::DriverAssigned => "driver_assigned",
            Self::DriverArrived => "driver_arrived",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::NoDriver => "no_driver",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether nothing can follow this status.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::NoDriver | Self::Cancelled)
    }

    /// Whether a driver has the ride and it has not ended: what a tracking token needs.
    pub fn is_under_way(self) -> bool {
        matches!(self, Self::DriverAssigned | Self::DriverArrived | Self::InProgress)
    }

    /// Whether the ride still counts as its rider's open ride (searching or under way): a rider
    /// has at most one.
    pub fn is_open(self) -> bool {
        !self.is_final()
    }
}

/// A step the assigned driver reports (`ride_progress`), in its frame's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RideStep {
    /// At the pickup: the ride becomes `driver_arrived`.
    Arrived,
    /// The rider is on board: `in_progress`.
    InProgress,
    /// Dropped off: `completed`.
    Completed,
}

impl RideStep {
    /// The ride status the step leads to.
    pub fn status(self) -> RideStatus {
        match self {
            Self::Arrived => RideStatus::DriverArrived,
            Self::InProgress => RideStatus::InProgress,
            Self::Completed => RideStatus::Completed,
        }
    }

    /// The statuses the step may be taken from: every earlier one of the ride under way
    /// (skipping ahead is allowed, going back is not). The step's own status is not among them:
    /// repeating it changes nothing (its caller answers `ok` again).
    pub fn from_statuses(self) -> &'static [RideStatus] {
        match self {
            Self::Arrived => &[RideStatus::DriverAssigned],
            Self::InProgress => &[RideStatus::DriverAssigned, RideStatus::DriverArrived],
            Self::Completed => &[RideStatus::DriverAssigned, RideStatus::DriverArrived, RideStatus::InProgress],
        }
    }
}

impl std::fmt::Display for RideStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RideStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "searching" => Ok(Self::Searching),
            "driver_assigned" => Ok(Self::DriverAssigned),
            "driver_arrived" => Ok(Self::DriverArrived),
            "in_progress" => Ok(Self::InProgress),
            "completed" => Ok(Self::Completed),
            "no_driver" => Ok(Self::NoDriver),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(format!("unknown ride status {other:?}")),
        }
    }
}

/// The body of `POST /api/rides`, validated: holding one proves both points are on the map.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RideRequest {
    pub pickup: LatLng,
    pub dropoff: LatLng,
}

/// Why a ride request body was refused: two kinds, answered with different error codes.
#[derive(Debug, thiserror::Error)]
pub enum RideRequestError {
    /// Not JSON, not an object, or `pickup`/`dropoff` missing or not `{"lat":<number>,"lng":<number>}`.
    #[error(
        "not a ride request ({0}); expected {{\"pickup\":{{\"lat\":<number>,\"lng\":<number>}},\"dropoff\":{{...}}}}"
    )]
    Malformed(#[source] serde_json::Error),
    /// Well-formed, but a point is off the map.
    #[error("{point}: {source}")]
    Invalid {
        /// `pickup` or `dropoff`.
        point: &'static str,
        #[source]
        source: InvalidLocation,
    },
}

impl RideRequest {
    /// Parses and validates a request body.
    ///
    /// # Errors
    /// [`RideRequestError::Malformed`] for anything but the contract's shape,
    /// [`RideRequestError::Invalid`] for a point that breaks the location rules.
    pub fn parse(body: &[u8]) -> Result<Self, RideRequestError> {
        // Through a `Value` because derived structs also accept arrays (`{"pickup":[1,2]}`);
        // the contract's body and points are objects.
        let value: serde_json::Value = serde_json::from_slice(body).map_err(RideRequestError::Malformed)?;
        let malformed = |why: &str| RideRequestError::Malformed(serde::de::Error::custom(why));
        let object = value.as_object().ok_or_else(|| malformed("the body must be a JSON object"))?;
        for point in ["pickup", "dropoff"] {
            if object.get(point).is_some_and(|value| !value.is_object()) {
                return Err(malformed(&format!("{point} must be an object with lat and lng")));
            }
        }
        let request = Self::deserialize(value).map_err(RideRequestError::Malformed)?;
        for (point, at) in [("pickup", request.pickup), ("dropoff", request.dropoff)] {
            at.validate().map_err(|source| RideRequestError::Invalid { point, source })?;
        }
        Ok(request)
    }
}

/// A ride's status as riders see it. `ts` (epoch milliseconds) is its SSE `id`: the origin makes
/// it strictly increasing per ride, like a surge's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RideState {
    pub ride_id: Id,
    pub status: RideStatus,
    /// The assigned driver: present only while the ride is under way
    /// ([`RideStatus::is_under_way`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_id: Option<Id>,
    /// A rider token with `drv` set to the driver (and `ride` to the ride): what opens the
    /// driver's location stream while the ride is under way. Present only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_token: Option<String>,
    pub ts: u64,
}

impl RideState {
    /// The value's JSON. Serializing validated ids, strings and a number cannot fail.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `201` answer of `POST /api/rides`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RideCreated {
    pub ride_id: Id,
    /// Always `searching`: a new ride's status.
    pub status: RideStatus,
    /// A rider token whose `ride` is this ride (same `sub` as the creator, no `drv`).
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<RideRequest, RideRequestError> {
        RideRequest::parse(body.as_bytes())
    }

    #[test]
    fn a_body_parses_to_two_validated_points() {
        let request = parse(r#"{"pickup":{"lat":37.77493,"lng":-122.41942},"dropoff":{"lat":37.8,"lng":-122.4}}"#)
            .expect("a valid request");
        assert_eq!(request.pickup, LatLng { lat: 37.77493, lng: -122.41942 });
        assert_eq!(request.dropoff, LatLng { lat: 37.8, lng: -122.4 });
        let edges = parse(r#"{"pickup":{"lat":90,"lng":-180},"dropoff":{"lat":-90,"lng":180}}"#).expect("edges");
        assert_eq!((edges.pickup.lat, edges.dropoff.lng), (90.0, 180.0), "the bounds are inclusive");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let body = r#"{"pickup":{"lat":1,"lng":2,"label":"home"},"dropoff":{"lat":3,"lng":4},"seats":2}"#;
        assert_eq!(parse(body).expect("valid").dropoff, LatLng { lat: 3.0, lng: 4.0 });
    }

    #[test]
    fn points_off_the_map_are_invalid_not_malformed() {
        for (body, point) in [
            (r#"{"pickup":{"lat":90.5,"lng":0},"dropoff":{"lat":0,"lng":0}}"#, "pickup"),
            (r#"{"pickup":{"lat":0,"lng":0},"dropoff":{"lat":0,"lng":-180.01}}"#, "dropoff"),
        ] {
            match parse(body) {
                Err(RideRequestError::Invalid { point: which, .. }) => assert_eq!(which, point, "{body}"),
                other => panic!("{body}: expected an invalid {point}, got {other:?}"),
            }
        }
    }

    #[test]
    fn bodies_that_are_not_the_contracts_json_are_malformed() {
        for body in [
            "",
            "{",
            "null",
            "[]",
            r#"{}"#,
            r#"{"pickup":{"lat":1,"lng":2}}"#,
            r#"{"pickup":{"lat":1},"dropoff":{"lat":1,"lng":2}}"#,
            r#"{"pickup":{"lat":"1","lng":2},"dropoff":{"lat":1,"lng":2}}"#,
            r#"{"pickup":[1,2],"dropoff":{"lat":1,"lng":2}}"#,
            r#"{"pickup":null,"dropoff":{"lat":1,"lng":2}}"#,
            // JSON has no NaN or infinity; a number too large for f64 is refused by the parser.
            r#"{"pickup":{"lat":NaN,"lng":2},"dropoff":{"lat":1,"lng":2}}"#,
            r#"{"pickup":{"lat":1e999,"lng":2},"dropoff":{"lat":1,"lng":2}}"#,
        ] {
            assert!(matches!(parse(body), Err(RideRequestError::Malformed(_))), "{body:?}");
        }
    }

    #[test]
    fn a_state_leaves_out_the_driver_unless_one_is_assigned() {
        let ride = Id::parse("r1").expect("id");
        let searching = RideState {
            ride_id: ride.clone(),
            status: RideStatus::Searching,
            driver_id: None,
            tracking_token: None,
            ts: 5,
        };
        assert_eq!(searching.to_json(), r#"{"rideId":"r1","status":"searching","ts":5}"#);
        let assigned = RideState {
            status: RideStatus::DriverAssigned,
            driver_id: Some(Id::parse("d-1").expect("id")),
            tracking_token: Some("a.b.c".into()),
            ts: 6,
            ..searching
        };
        let json = assigned.to_json();
        assert_eq!(
            json,
            r#"{"rideId":"r1","status":"driver_assigned","driverId":"d-1","trackingToken":"a.b.c","ts":6}"#
        );
        assert_eq!(serde_json::from_str::<RideState>(&json).expect("round trip"), assigned);
    }

    #[test]
    fn statuses_use_the_contract_spelling() {
        for status in RIDE_STATUSES {
            let json = serde_json::to_string(&status).expect("serializes");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(status.as_str().parse::<RideStatus>(), Ok(status));
        }
        assert!("assigned".parse::<RideStatus>().is_err());
    }

    #[test]
    fn steps_only_go_forward_and_lead_to_their_status() {
        for step in [RideStep::Arrived, RideStep::InProgress, RideStep::Completed] {
            let to = step.status();
            let order = |status| RIDE_STATUSES.iter().position(|s| *s == status).expect("listed");
            for from in step.from_statuses() {
                assert!(from.is_under_way() && order(*from) < order(to), "{step:?} from {from}");
            }
            assert!(!step.from_statuses().contains(&to), "{step:?}: a repeat is not a change");
        }
        assert_eq!(serde_json::to_string(&RideStep::InProgress).expect("json"), r#""in_progress""#);
        assert!(RideStatus::Completed.is_final() && !RideStatus::Completed.is_open());
        assert!(RideStatus::Searching.is_open() && !RideStatus::Searching.is_under_way());
    }

    #[test]
    fn the_created_answer_has_the_contract_fields() {
        let created =
            RideCreated { ride_id: Id::parse("r1").expect("id"), status: RideStatus::Searching, token: "t".into() };
        assert_eq!(
            serde_json::to_string(&created).expect("json"),
            r#"{"rideId":"r1","status":"searching","token":"t"}"#
        );
    }
}
