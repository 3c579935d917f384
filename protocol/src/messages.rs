//! WebSocket frames: JSON text with a `type` tag.

use serde::{Deserialize, Serialize};

pub use crate::location::LatLng;
use crate::{ErrorCode, location::LocationReport, ride::RideStep};

/// What a driver's app sends on `/ws/rides`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DriverMessage {
    /// The driver's position; the driver is the socket's token holder.
    Location(LocationReport),
    /// Online for offers, or not.
    Availability { available: bool },
    /// The offer arrived; stop resending it.
    #[serde(rename_all = "camelCase")]
    OfferAck { offer_id: String },
    #[serde(rename_all = "camelCase")]
    Accept { offer_id: String },
    #[serde(rename_all = "camelCase")]
    Reject { offer_id: String },
    /// The assigned driver reports a step of its ride (v1.1 lifecycle).
    #[serde(rename_all = "camelCase")]
    RideProgress { ride_id: String, status: RideStep },
}

/// How an offer ended, from the offered driver's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferResult {
    Confirmed,
    Expired,
    Taken,
    Cancelled,
}

/// How a `ride_progress` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressResult {
    /// The ride is at that step now (also when it already was: a repeat is answered `ok`).
    Ok,
    /// The ride is past that step, or has ended otherwise (cancelled).
    Conflict,
    /// The ride is not this driver's.
    Forbidden,
    /// No such ride (never created, or expired).
    NotFound,
}

/// What the server sends to a driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    #[serde(rename_all = "camelCase")]
    Offer {
        offer_id: String,
        ride_id: String,
        pickup: LatLng,
        dropoff: LatLng,
        expires_at: u64,
    },
    #[serde(rename_all = "camelCase")]
    OfferResult {
        offer_id: String,
        result: OfferResult,
    },
    /// The answer to a `ride_progress`.
    #[serde(rename_all = "camelCase")]
    RideProgressResult {
        ride_id: String,
        status: RideStep,
        result: ProgressResult,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error { code, message: message.into() }
    }

    /// The frame's text. Serializing these types cannot fail (no maps with non-string keys,
    /// no foreign `Serialize` impls), so this is infallible.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"type":"error","code":"internal","message":"unencodable frame"}"#.to_owned())
    }
}

/// Why a driver frame could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not a valid driver message: {0}")]
    Unreadable(#[from] serde_json::Error),
    /// serde reads a tagged enum from an array too (`["accept","o1"]`): not the contract's shape.
    #[error("not a valid driver message: frames are JSON objects")]
    NotAnObject,
    /// Offer ids are the server's, and follow the id rule; anything else is no offer.
    #[error("offerId is not a valid id: {0}")]
    OfferId(#[source] crate::InvalidId),
    /// Ride ids follow the id rule too.
    #[error("rideId is not a valid id: {0}")]
    RideId(#[source] crate::InvalidId),
}

impl MessageError {
    /// The contract's error code for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unreadable(_) | Self::NotAnObject => ErrorCode::InvalidMessage,
            Self::OfferId(_) | Self::RideId(_) => ErrorCode::InvalidId,
        }
    }
}

/// Parses one text frame from a driver.
///
/// # Errors
/// [`MessageError`] when the text is not JSON, has no known `type`, misses a field, or names
/// an offer or a ride with something that is not an id.
pub fn parse_driver_message(text: &str) -> Result<DriverMessage, MessageError> {
    if !crate::is_json_object(text) {
        return Err(MessageError::NotAnObject);
    }
    if let Some(report) = parse_location_directly(text) {
        return Ok(DriverMessage::Location(report));
    }
    let message: DriverMessage = serde_json::from_str(text)?;
    if let DriverMessage::OfferAck { offer_id }
    | DriverMessage::Accept { offer_id }
    | DriverMessage::Reject { offer_id } = &message
    {
        crate::Id::parse(offer_id).map_err(MessageError::OfferId)?;
    }
    if let DriverMessage::RideProgress { ride_id, .. } = &message {
        crate::Id::parse(ride_id).map_err(MessageError::RideId)?;
    }
    Ok(message)
}

/// A location frame read straight into its fields, or `None` for anything else (another
/// `type`, a field missing, unknown or of the wrong kind, a `type` with escapes), which the
/// general parser then reads and, if it must, explains. Unknown fields go the general way too:
/// it reads every number it meets, so an unknown field holding one out of range (`1e999`) is an
/// error there, while a direct read would skip it. Locations are nearly every frame a driver sends, and an
/// internally tagged enum makes serde buffer the whole object before it reads a field.
fn parse_location_directly(text: &str) -> Option<LocationReport> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Flat<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        lat: f64,
        lng: f64,
        #[serde(default)]
        heading: Option<f64>,
        #[serde(default)]
        speed: Option<f64>,
        ts: u64,
    }
    let Flat { kind, lat, lng, heading, speed, ts } = serde_json::from_str(text).ok()?;
    (kind == "location").then_some(LocationReport { lat, lng, heading, speed, ts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_ids_follow_the_id_rule() {
        for bad in ["", "a:b", "o 1", "{o1}", &"x".repeat(65)] {
            for kind in ["offer_ack", "accept", "reject"] {
                let frame = format!(r#"{{"type":"{kind}","offerId":{}}}"#, serde_json::json!(bad));
                let error = parse_driver_message(&frame).expect_err(&frame);
                assert_eq!(error.code(), ErrorCode::InvalidId, "{frame}");
            }
        }
        for array in [r#"["accept","o1"]"#, r#"["availability",true]"#, r#"["location",1.5,2.5,null,null,7]"#] {
            let error = parse_driver_message(array).expect_err(array);
            assert_eq!(error.code(), ErrorCode::InvalidMessage, "{array}: frames are objects");
        }
        let unreadable = parse_driver_message(r#"{"type":"accept"}"#).expect_err("no offerId");
        assert_eq!(unreadable.code(), ErrorCode::InvalidMessage);
    }

    #[test]
    fn a_location_read_directly_is_what_the_general_parser_reads_and_nothing_else_is_read_directly() {
        let frames = [
            r#"{"type":"location","lat":1.5,"lng":2.5,"ts":7}"#,
            r#"{"lat":1.5,"lng":2.5,"ts":7,"type":"location"}"#,
            r#"{"type":"location","lat":-90,"lng":180,"heading":null,"speed":3,"ts":1764240000123}"#,
            r#"{"type":"location","lat":1.5,"lng":2.5,"heading":90.5,"ts":7,"extra":{"a":[1,2]}}"#,
            r#"{"type":"location","lat":1.5,"lng":2.5,"ts":7.5}"#,
            r#"{"type":"location","lat":"1.5","lng":2.5,"ts":7}"#,
            r#"{"type":"location","lng":2.5,"ts":7}"#,
            r#"{"type":"location","lat":1.5,"lng":2.5,"ts":7}"#,
            r#"{"type":"availability","available":true,"lat":1.5,"lng":2.5,"ts":7}"#,
            r#"{"type":"location","type":"accept","lat":1.5,"lng":2.5,"ts":7}"#,
            r#"{"type":"location","lat":1.5,"lat":2.5,"lng":2.5,"ts":7}"#,
            r#"{"type":"location","lat":1.5,"lng":2.5,"ts":-7}"#,
            // Found by the driver_message fuzzer: an unknown field with a number out of range.
            r#"{"type":"location","lat":1.5,"lng":2.5,"heng":90.77E7777770,"ts":7}"#,
            r#"{"type":"location","lat":1.5,"lng":2.5,"heading":1e999,"ts":7}"#,
        ];
        for frame in frames {
            let general: Result<DriverMessage, _> = serde_json::from_str(frame);
            // The direct read may leave a frame to the general parser, never read it otherwise.
            if let Some(report) = parse_location_directly(frame) {
                assert_eq!(general.as_ref().ok(), Some(&DriverMessage::Location(report)), "{frame}");
            }
            let parsed = parse_driver_message(frame).map_err(|error| error.to_string());
            let expected = general.map_err(|error| MessageError::from(error).to_string());
            assert_eq!(parsed, expected, "{frame}: the same answer either way");
        }
        // What apps send is read directly (the point of the shortcut), in any field order.
        for frame in &frames[..3] {
            assert!(parse_location_directly(frame).is_some(), "{frame}");
        }
    }

    #[test]
    fn parses_every_driver_message_of_the_contract() {
        let location = parse_driver_message(r#"{"type":"location","lat":1.5,"lng":2.5,"ts":7}"#).expect("location");
        assert_eq!(
            location,
            DriverMessage::Location(LocationReport { lat: 1.5, lng: 2.5, heading: None, speed: None, ts: 7 })
        );
        assert_eq!(
            parse_driver_message(r#"{"type":"availability","available":true}"#).expect("availability"),
            DriverMessage::Availability { available: true }
        );
        assert_eq!(
            parse_driver_message(r#"{"type":"offer_ack","offerId":"o1"}"#).expect("ack"),
            DriverMessage::OfferAck { offer_id: "o1".into() }
        );
        assert!(matches!(
            parse_driver_message(r#"{"type":"accept","offerId":"o1"}"#),
            Ok(DriverMessage::Accept { .. })
        ));
        assert!(matches!(
            parse_driver_message(r#"{"type":"reject","offerId":"o1"}"#),
            Ok(DriverMessage::Reject { .. })
        ));
        assert_eq!(
            parse_driver_message(r#"{"type":"ride_progress","rideId":"r1","status":"in_progress"}"#).expect("progress"),
            DriverMessage::RideProgress { ride_id: "r1".into(), status: RideStep::InProgress }
        );
    }

    #[test]
    fn ride_progress_names_a_valid_ride_and_a_known_step() {
        let bad_id = parse_driver_message(r#"{"type":"ride_progress","rideId":"a.b","status":"arrived"}"#);
        assert_eq!(bad_id.expect_err("a bad ride id").code(), ErrorCode::InvalidId);
        for status in ["driver_arrived", "searching", "cancelled", "done"] {
            let frame = format!(r#"{{"type":"ride_progress","rideId":"r1","status":"{status}"}}"#);
            let error = parse_driver_message(&frame).expect_err(&frame);
            assert_eq!(error.code(), ErrorCode::InvalidMessage, "{frame}: not a driver's step");
        }
        let answer = ServerMessage::RideProgressResult {
            ride_id: "r1".into(),
            status: RideStep::Completed,
            result: ProgressResult::NotFound,
        };
        assert_eq!(
            answer.to_json(),
            r#"{"type":"ride_progress_result","rideId":"r1","status":"completed","result":"not_found"}"#
        );
    }

    #[test]
    fn refuses_garbage_unknown_types_and_missing_fields() {
        for bad in
            ["", "{", "null", r#"{"type":"teleport"}"#, r#"{"type":"location","lat":1}"#, r#"{"lat":1,"lng":2,"ts":3}"#]
        {
            assert!(parse_driver_message(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn server_frames_use_the_contract_field_names() {
        let offer = ServerMessage::Offer {
            offer_id: "o1".into(),
            ride_id: "r1".into(),
            pickup: LatLng { lat: 1.0, lng: 2.0 },
            dropoff: LatLng { lat: 3.0, lng: 4.0 },
            expires_at: 99,
        };
        assert_eq!(
            offer.to_json(),
            r#"{"type":"offer","offerId":"o1","rideId":"r1","pickup":{"lat":1.0,"lng":2.0},"dropoff":{"lat":3.0,"lng":4.0},"expiresAt":99}"#
        );
        assert_eq!(
            ServerMessage::error(ErrorCode::InvalidLocation, "lat").to_json(),
            r#"{"type":"error","code":"invalid_location","message":"lat"}"#
        );
    }
}
