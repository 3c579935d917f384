//! The location validation path: a driver's `location` frame as the origin handles it —
//! `parse_driver_message`, `LocationReport::validate` against the receiver's clock, then
//! `attribute_to`, the location JSON riders get, its grid cell and its SSE frame.
//!
//! Every input is read twice: as a text frame (what a driver can really send; JSON cannot say
//! NaN or infinity) and as raw field values (any `f64`, including NaN, infinities, -0.0 and
//! subnormals, and any clock), so that `validate` meets every number a caller could hand it.
//!
//! Invariants:
//! - `validate` accepts exactly the contract's locations: finite lat in [-90, 90] and lng in
//!   [-180, 180], a heading (if any) finite in [0, 360], a speed (if any) finite and not
//!   negative, `ts` above 0 and at most `MAX_FUTURE_SKEW_MS` ahead of the clock;
//! - an accepted location's JSON parses back to the same bits, and its optional fields are left
//!   out (not `null`) when absent;
//! - its grid cell is the same every time and lies within the grid's bounds;
//! - its SSE frame is exactly `event:`/`id: <ts>`/`data: <json>`, and the id reads back as `ts`.
#![no_main]

use libfuzzer_sys::{
    arbitrary::{Arbitrary, Unstructured},
    fuzz_target,
};
use ridecast_fuzz::{NOW_MS, on_the_map};
use ridecast_protocol::{
    GridCell, Id, Location, LocationReport,
    location::{MAX_FUTURE_SKEW_MS, is_newer},
    messages::{DriverMessage, parse_driver_message},
    sse,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = std::str::from_utf8(data)
        && let Ok(DriverMessage::Location(report)) = parse_driver_message(frame)
    {
        check(report, NOW_MS);
    }
    if let Some((report, now_ms)) = from_values(&mut Unstructured::new(data)) {
        check(report, now_ms);
    }
});

fn from_values(u: &mut Unstructured<'_>) -> Option<(LocationReport, u64)> {
    let report = LocationReport {
        lat: f64::arbitrary(u).ok()?,
        lng: f64::arbitrary(u).ok()?,
        heading: Option::<f64>::arbitrary(u).ok()?,
        speed: Option::<f64>::arbitrary(u).ok()?,
        ts: u64::arbitrary(u).ok()?,
    };
    Some((report, u64::arbitrary(u).ok()?))
}

/// The contract's rule, stated apart from `validate`.
fn acceptable(report: &LocationReport, now_ms: u64) -> bool {
    on_the_map(report.lat, report.lng)
        && report.heading.is_none_or(|h| h.is_finite() && (0.0..=360.0).contains(&h))
        && report.speed.is_none_or(|s| s.is_finite() && s >= 0.0)
        && report.ts > 0
        && u128::from(report.ts) <= u128::from(now_ms) + u128::from(MAX_FUTURE_SKEW_MS)
}

fn check(report: LocationReport, now_ms: u64) {
    let verdict = report.validate(now_ms);
    assert_eq!(verdict.is_ok(), acceptable(&report, now_ms), "{report:?} at {now_ms}: {verdict:?}");
    if verdict.is_err() {
        return;
    }

    let location = report.attribute_to(Id::parse("d-1").expect("a valid id"));
    let json = serde_json::to_string(&location).expect("a location serialises");
    let back: Location = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json} does not parse back: {e}"));
    assert_eq!(back, location, "{json}");
    let bits =
        |l: &Location| (l.lat.to_bits(), l.lng.to_bits(), l.heading.map(f64::to_bits), l.speed.map(f64::to_bits));
    assert_eq!(bits(&back), bits(&location), "{json} changed a number's bits");
    assert_eq!(json.contains("\"heading\""), location.heading.is_some(), "{json}");
    assert_eq!(json.contains("\"speed\""), location.speed.is_some(), "{json}");

    let cell = GridCell::of(location.lat, location.lng);
    assert_eq!(cell, GridCell::of(location.lat, location.lng), "a cell is a function of the point");
    // |lat| <= 90 and |lng * cos| <= 180, in cells of 0.00045 degrees.
    assert!(cell.row.abs() <= 200_001 && cell.col.abs() <= 400_001, "{cell:?} for {json}");

    let id = location.ts.to_string();
    assert_eq!(sse::event("location", &id, &json), format!("event: location\nid: {id}\ndata: {json}\n\n"));
    assert_eq!(sse::parse_event_id(&id), Some(location.ts));
    assert!(is_newer(location.ts, None) && !is_newer(location.ts, Some(location.ts)));
}
