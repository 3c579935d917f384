//! Surge pricing: an operator sets a zone's multiplier, and riders following the zone get it.
//!
//! Request body of `POST /api/surge/{zoneId}`: `{"multiplier":1.8}`. Pushed value (SSE data,
//! edge link, the POST's answer): `{"zoneId":"z-1","multiplier":1.8,"ts":1764240000123}`.
//!
//! A multiplier is valid when it is a finite number within `[1.0, 10.0]`, both ends included.
//! In a request body, fields other than `multiplier` are ignored (as in driver frames, so that
//! newer clients can send more); a missing or non-numeric `multiplier` is malformed.

use serde::{Deserialize, Deserializer, Serialize};

use crate::Id;

/// Smallest multiplier accepted: 1.0 means no surge.
pub const MIN_MULTIPLIER: f64 = 1.0;
/// Largest multiplier accepted.
pub const MAX_MULTIPLIER: f64 = 10.0;

/// A surge multiplier within [`MIN_MULTIPLIER`]..=[`MAX_MULTIPLIER`]. Construct it with
/// [`Multiplier::new`]; holding one proves it is valid.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Multiplier(f64);

/// Why a multiplier was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSurge {
    #[error("multiplier must be a finite number")]
    NotFinite,
    #[error("multiplier must be within [{MIN_MULTIPLIER:.1}, {MAX_MULTIPLIER:.1}]")]
    OutOfRange,
}

impl Multiplier {
    /// Checks `value` against the rule.
    ///
    /// # Errors
    /// [`InvalidSurge`] says which part of the rule `value` breaks.
    pub fn new(value: f64) -> Result<Self, InvalidSurge> {
        if !value.is_finite() {
            return Err(InvalidSurge::NotFinite);
        }
        if !(MIN_MULTIPLIER..=MAX_MULTIPLIER).contains(&value) {
            return Err(InvalidSurge::OutOfRange);
        }
        Ok(Self(value))
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Multiplier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Multiplier::new(f64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// The body of `POST /api/surge/{zoneId}`, before validation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SurgeRequest {
    pub multiplier: f64,
}

/// Why a surge request body was refused: two kinds, answered with different error codes.
#[derive(Debug, thiserror::Error)]
pub enum SurgeRequestError {
    /// Not JSON, not an object, or `multiplier` missing or not a number.
    #[error("not a surge request ({0}); expected {{\"multiplier\":<number>}}")]
    Malformed(#[source] serde_json::Error),
    /// Well-formed, but the multiplier breaks the rule.
    #[error(transparent)]
    Invalid(#[from] InvalidSurge),
}

impl SurgeRequest {
    /// Parses and validates a request body.
    ///
    /// # Errors
    /// [`SurgeRequestError::Malformed`] for anything but `{"multiplier":<number>, ...}`,
    /// [`SurgeRequestError::Invalid`] for a number outside the rule.
    pub fn parse(body: &[u8]) -> Result<Multiplier, SurgeRequestError> {
        // Through a `Value` because a derived struct would also accept `[1.8]`; the contract's
        // body is an object.
        let value: serde_json::Value = serde_json::from_slice(body).map_err(SurgeRequestError::Malformed)?;
        if !value.is_object() {
            return Err(SurgeRequestError::Malformed(serde::de::Error::custom("the body must be a JSON object")));
        }
        let request = Self::deserialize(value).map_err(SurgeRequestError::Malformed)?;
        Ok(Multiplier::new(request.multiplier)?)
    }
}

/// A zone's surge as riders, edges and operators see it. `ts` (epoch milliseconds) is its SSE
/// `id`: the origin makes it strictly increasing per zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Surge {
    pub zone_id: Id,
    pub multiplier: Multiplier,
    pub ts: u64,
}

impl Surge {
    /// The value's JSON. Serializing a validated id and plain numbers cannot fail.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The `ts` of a zone's next surge: the clock, unless the last one (set through any instance, on
/// any clock) is not older, in which case one millisecond after it. Ids only grow.
pub fn next_ts(now_ms: u64, last_ts: Option<u64>) -> u64 {
    match last_ts {
        Some(last) if last >= now_ms => last + 1,
        _ => now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<f64, SurgeRequestError> {
        SurgeRequest::parse(body.as_bytes()).map(Multiplier::get)
    }

    #[test]
    fn the_bounds_are_inclusive() {
        assert_eq!(Multiplier::new(1.0).map(Multiplier::get), Ok(1.0));
        assert_eq!(Multiplier::new(10.0).map(Multiplier::get), Ok(10.0));
        assert_eq!(Multiplier::new(1.8).map(Multiplier::get), Ok(1.8));
    }

    #[test]
    fn values_just_outside_the_bounds_are_refused() {
        for value in [0.99, 0.999_999_999, 10.01, 10.000_000_001, 0.0, -1.0, -0.0, 100.0] {
            assert_eq!(Multiplier::new(value), Err(InvalidSurge::OutOfRange), "{value}");
        }
    }

    #[test]
    fn non_finite_values_are_refused() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(Multiplier::new(value), Err(InvalidSurge::NotFinite), "{value}");
        }
    }

    #[test]
    fn a_body_parses_to_a_validated_multiplier() {
        assert_eq!(parse(r#"{"multiplier":1.8}"#).ok(), Some(1.8));
        assert_eq!(parse(r#"{"multiplier":2}"#).ok(), Some(2.0), "integers are numbers too");
        assert_eq!(parse(r#" { "multiplier" : 10.0 } "#).ok(), Some(10.0));
    }

    #[test]
    fn out_of_range_bodies_are_invalid_not_malformed() {
        for body in [r#"{"multiplier":0.99}"#, r#"{"multiplier":10.01}"#, r#"{"multiplier":-2}"#] {
            assert!(matches!(parse(body), Err(SurgeRequestError::Invalid(InvalidSurge::OutOfRange))), "{body}");
        }
    }

    #[test]
    fn bodies_that_are_not_the_contracts_json_are_malformed() {
        for body in [
            r#"{"multiplier":"x"}"#,
            r#"{"multiplier":"1.8"}"#,
            r#"{"multiplier":null}"#,
            r#"{"multiplier":[1.8]}"#,
            r#"{"multipler":1.8}"#,
            r#"{}"#,
            r#"{"multiplier":"#,
            r#"1.8"#,
            r#"[1.8]"#,
            "",
            "multiplier=1.8",
            // JSON has no NaN or infinity; a number too large for f64 is refused by the parser.
            r#"{"multiplier":NaN}"#,
            r#"{"multiplier":1e999}"#,
        ] {
            assert!(matches!(parse(body), Err(SurgeRequestError::Malformed(_))), "{body:?}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(parse(r#"{"multiplier":1.5,"reason":"concert"}"#).ok(), Some(1.5));
    }

    #[test]
    fn the_contract_example_round_trips() {
        let json = r#"{"zoneId":"z-1","multiplier":1.8,"ts":1764240000123}"#;
        let surge: Surge = serde_json::from_str(json).expect("parses");
        assert_eq!(surge.multiplier.get(), 1.8);
        assert_eq!(surge.to_json(), json);
    }

    #[test]
    fn a_pushed_value_with_an_invalid_multiplier_does_not_parse() {
        assert!(serde_json::from_str::<Surge>(r#"{"zoneId":"z","multiplier":11.0,"ts":1}"#).is_err());
        assert!(serde_json::from_str::<Surge>(r#"{"zoneId":"a b","multiplier":2.0,"ts":1}"#).is_err());
    }

    #[test]
    fn whole_multipliers_keep_their_decimal_point() {
        let surge = Surge { zone_id: Id::parse("z").expect("id"), multiplier: Multiplier(2.0), ts: 5 };
        assert_eq!(surge.to_json(), r#"{"zoneId":"z","multiplier":2.0,"ts":5}"#);
    }

    #[test]
    fn the_next_ts_is_the_clock_unless_that_would_not_grow() {
        assert_eq!(next_ts(100, None), 100);
        assert_eq!(next_ts(100, Some(99)), 100);
        assert_eq!(next_ts(100, Some(100)), 101, "two surges in one millisecond");
        assert_eq!(next_ts(100, Some(250)), 251, "a clock behind the last surge's");
    }
}
