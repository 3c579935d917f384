//! `RideRequest::parse`: the body of `POST /api/rides` (any bytes, not only UTF-8).
//!
//! Invariants:
//! - the verdict matches the contract, worked out from the generic JSON reading of the body: a
//!   body that is not an object whose `pickup` and `dropoff` are objects with numeric `lat` and
//!   `lng` is `Malformed` (400 `invalid_message`); otherwise the first point off the map (pickup
//!   before dropoff) is `Invalid` (400 `invalid_location`); otherwise it is accepted with exactly
//!   those numbers;
//! - an accepted request serialises and parses back to itself, and its points have grid cells.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ridecast_fuzz::on_the_map;
use ridecast_protocol::{GridCell, LatLng, RideRequest, ride::RideRequestError};
use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Expected {
    Malformed,
    Invalid(&'static str),
    Accepted(LatLng, LatLng),
}

fn expected(body: &[u8]) -> Expected {
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else { return Expected::Malformed };
    let point = |name: &str| -> Option<LatLng> {
        let Value::Object(point) = request.get(name)? else { return None };
        Some(LatLng { lat: point.get("lat")?.as_f64()?, lng: point.get("lng")?.as_f64()? })
    };
    let (Some(pickup), Some(dropoff)) = (point("pickup"), point("dropoff")) else { return Expected::Malformed };
    match [("pickup", pickup), ("dropoff", dropoff)].into_iter().find(|(_, at)| !on_the_map(at.lat, at.lng)) {
        Some((name, _)) => Expected::Invalid(name),
        None => Expected::Accepted(pickup, dropoff),
    }
}

fuzz_target!(|body: &[u8]| {
    let verdict = RideRequest::parse(body);
    let got = match &verdict {
        Err(RideRequestError::Malformed(_)) => Expected::Malformed,
        Err(RideRequestError::Invalid { point, .. }) => Expected::Invalid(point),
        Ok(request) => Expected::Accepted(request.pickup, request.dropoff),
    };
    assert_eq!(got, expected(body), "{:?}: {verdict:?}", String::from_utf8_lossy(body));
    let Ok(request) = verdict else { return };

    let json = serde_json::to_vec(&request).expect("a request serialises");
    let back = RideRequest::parse(&json).unwrap_or_else(|e| panic!("{request:?} does not parse back: {e}"));
    assert_eq!(back, request);
    for at in [request.pickup, request.dropoff] {
        assert_eq!(GridCell::of(at.lat, at.lng), GridCell::of(at.lat, at.lng));
    }
});
