//! `sse::parse_event_id`: the `Last-Event-ID` header a reconnecting EventSource sends (at the
//! origin and at the edge).
//!
//! Invariants:
//! - accepted exactly when, with surrounding whitespace removed, it is one or more ASCII digits
//!   whose value fits a `u64` (checked on the digits as text, with no integer parsing): an
//!   accepted event id is digits only;
//! - the value is the digits' value: its decimal form is the digits without leading zeros;
//! - the id Ridecast sends for that value (`sse::event`'s `id:` line) reads back as the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ridecast_fuzz::{canonical_decimal, decimal_fits_u64};
use ridecast_protocol::sse;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let parsed = sse::parse_event_id(raw);
    let digits = raw.trim_matches(char::is_whitespace);
    assert_eq!(parsed.is_some(), decimal_fits_u64(digits), "{raw:?}: {parsed:?}");
    let Some(value) = parsed else { return };

    assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{raw:?}");
    let sent = value.to_string();
    assert_eq!(sent, canonical_decimal(digits), "{raw:?}");
    let frame = sse::event("location", &sent, "{}");
    let id_line = frame.lines().find_map(|line| line.strip_prefix("id: ")).expect("an id line");
    assert_eq!(sse::parse_event_id(id_line), Some(value), "{frame:?}");
});
