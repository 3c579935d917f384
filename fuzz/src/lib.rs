//! What the fuzz targets in `fuzz_targets/` share: a fixed clock and independent statements of the
//! contract's rules (`shared/PROTOCOL.md`), written apart from `ridecast-protocol`'s own code so
//! that a target checks the parser against the rule, not against itself.
//!
//! See `docs/FUZZING.md` for what each target covers.
#![forbid(unsafe_code)]

use std::cmp::Ordering;

/// The receiver's clock in every target, epoch milliseconds (the contract's example `ts`).
pub const NOW_MS: u64 = 1_764_240_000_123;
/// The same instant in epoch seconds, for tokens.
pub const NOW_SECS: u64 = NOW_MS / 1000;

/// The id rule: 1 to 64 characters, each one of `A-Z a-z 0-9 _ -`.
pub fn is_contract_id(raw: &str) -> bool {
    let count = raw.chars().count();
    (1..=64).contains(&count) && raw.chars().all(|c| matches!(c, 'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-'))
}

/// Whether `raw` is one or more ASCII digits (leading zeros allowed).
pub fn is_digits(raw: &str) -> bool {
    !raw.is_empty() && raw.chars().all(|c| c.is_ascii_digit())
}

/// A digit string without its leading zeros (`"0"` for zero).
pub fn canonical_decimal(digits: &str) -> &str {
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() { "0" } else { trimmed }
}

/// Compares two digit strings by value, whatever their length (no integer type involved).
pub fn cmp_decimal(a: &str, b: &str) -> Ordering {
    let (a, b) = (canonical_decimal(a), canonical_decimal(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Whether a digit string's value fits in a `u64`.
pub fn decimal_fits_u64(digits: &str) -> bool {
    is_digits(digits) && cmp_decimal(digits, "18446744073709551615") != Ordering::Greater
}

/// A point on the map: finite, lat within [-90, 90], lng within [-180, 180], ends included.
pub fn on_the_map(lat: f64, lng: f64) -> bool {
    lat.is_finite() && lng.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lng)
}

/// Whether a frame opens as a JSON object: after JSON's own whitespace (RFC 8259: space, tab, line
/// feed, carriage return), a `{`. Frames of the contract are objects; serde would read a tagged
/// enum from an array too.
pub fn opens_as_object(frame: &str) -> bool {
    frame.chars().find(|c| !matches!(c, ' ' | '\t' | '\n' | '\r')) == Some('{')
}

/// The `type` tag of a JSON object frame, read with the generic JSON parser.
pub fn type_tag(frame: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(frame).ok()?.get("type")? {
        serde_json::Value::String(tag) => Some(tag.clone()),
        _ => None,
    }
}
