//! `SurgeRequest::parse`: the body of `POST /api/surge/{zoneId}` (any bytes, not only UTF-8).
//!
//! Invariants:
//! - the verdict matches the contract, worked out from the generic JSON reading of the body: not
//!   an object with a numeric `multiplier` is `Malformed`; a number outside [1.0, 10.0] is
//!   `Invalid(OutOfRange)` (JSON cannot say NaN or infinity, so never `NotFinite`); otherwise that
//!   exact number is accepted;
//! - the pushed value (`Surge`, SSE data and edge link) serialises to non-empty JSON that parses
//!   back to itself, and the request re-serialised parses to the same multiplier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ridecast_fuzz::NOW_MS;
use ridecast_protocol::{
    Id, InvalidSurge, Surge, SurgeRequest,
    surge::{MAX_MULTIPLIER, MIN_MULTIPLIER, SurgeRequestError},
};
use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Expected {
    Malformed,
    OutOfRange,
    Accepted(f64),
}

fn expected(body: &[u8]) -> Expected {
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else { return Expected::Malformed };
    match request.get("multiplier").and_then(Value::as_f64) {
        None => Expected::Malformed,
        Some(m) if (MIN_MULTIPLIER..=MAX_MULTIPLIER).contains(&m) => Expected::Accepted(m),
        Some(_) => Expected::OutOfRange,
    }
}

fuzz_target!(|body: &[u8]| {
    let verdict = SurgeRequest::parse(body);
    let got = match &verdict {
        Err(SurgeRequestError::Malformed(_)) => Expected::Malformed,
        Err(SurgeRequestError::Invalid(InvalidSurge::OutOfRange)) => Expected::OutOfRange,
        Err(SurgeRequestError::Invalid(InvalidSurge::NotFinite)) => panic!("JSON has no non-finite numbers"),
        Ok(multiplier) => Expected::Accepted(multiplier.get()),
    };
    assert_eq!(got, expected(body), "{:?}: {verdict:?}", String::from_utf8_lossy(body));
    let Ok(multiplier) = verdict else { return };

    let surge = Surge { zone_id: Id::parse("z-1").expect("a valid id"), multiplier, ts: NOW_MS };
    let json = surge.to_json();
    assert!(!json.is_empty(), "{surge:?} did not serialise");
    let back: Surge = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json} does not parse back: {e}"));
    assert_eq!(back, surge, "{json}");

    let again = serde_json::to_vec(&SurgeRequest { multiplier: multiplier.get() }).expect("serialises");
    assert_eq!(SurgeRequest::parse(&again).ok(), Some(multiplier));
});
