//! `messages::parse_driver_message`: every text frame a driver's app sends on `/ws/rides`.
//!
//! Invariants:
//! - a frame that does not open as a JSON object is `NotAnObject` (serde alone would read an
//!   array as a message); otherwise the verdict is `Unreadable` exactly when the generic serde
//!   reading refuses the frame, `OfferId` exactly when it reads but its `offerId` breaks the id
//!   rule (offer ids are ids), and `RideId` exactly when its `rideId` does;
//! - an accepted frame is what serde reads, and its `offerId` or `rideId`, if any, follows the
//!   id rule;
//! - its `type`, read by a generic JSON parser, is the variant's tag (no duplicate or shadowed tag);
//! - it serialises, the result parses back to the same message, and serialising that again gives
//!   the same text (one canonical form);
//! - a location in it can be validated without panicking (the `location` target goes further).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ridecast_fuzz::{NOW_MS, is_contract_id, opens_as_object, type_tag};
use ridecast_protocol::messages::{DriverMessage, MessageError, parse_driver_message};

/// The offer a frame answers, if it answers one.
fn offer_id(message: &DriverMessage) -> Option<&str> {
    match message {
        DriverMessage::OfferAck { offer_id }
        | DriverMessage::Accept { offer_id }
        | DriverMessage::Reject { offer_id } => Some(offer_id),
        DriverMessage::Location(_) | DriverMessage::Availability { .. } | DriverMessage::RideProgress { .. } => None,
    }
}

/// The ride a frame reports a step of, if it reports one.
fn ride_id(message: &DriverMessage) -> Option<&str> {
    match message {
        DriverMessage::RideProgress { ride_id, .. } => Some(ride_id),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else { return };
    let verdict = parse_driver_message(frame);
    if !opens_as_object(frame) {
        assert!(matches!(verdict, Err(MessageError::NotAnObject)), "{frame:?} is no object: {verdict:?}");
        return;
    }
    match (&verdict, serde_json::from_str::<DriverMessage>(frame)) {
        (Err(MessageError::Unreadable(_)), Err(_)) => {}
        (_, Err(e)) => panic!("{frame:?}: serde refuses it ({e}) but the verdict is {verdict:?}"),
        (Err(MessageError::Unreadable(e)), Ok(read)) => panic!("{frame:?} reads as {read:?} but is unreadable: {e}"),
        (Err(MessageError::NotAnObject), Ok(read)) => panic!("{frame:?} opens as an object, reads as {read:?}"),
        (Err(MessageError::OfferId(_)), Ok(read)) => {
            assert!(offer_id(&read).is_some_and(|id| !is_contract_id(id)), "{frame:?} refused for its offerId");
        }
        (Err(MessageError::RideId(_)), Ok(read)) => {
            assert!(ride_id(&read).is_some_and(|id| !is_contract_id(id)), "{frame:?} refused for its rideId");
        }
        (Ok(accepted), Ok(read)) => assert_eq!(accepted, &read, "{frame:?}"),
    }
    let Ok(message) = verdict else { return };
    if let Some(id) = offer_id(&message) {
        assert!(is_contract_id(id), "accepted {frame:?} with offerId {id:?}");
    }
    if let Some(id) = ride_id(&message) {
        assert!(is_contract_id(id), "accepted {frame:?} with rideId {id:?}");
    }

    let tag = match &message {
        DriverMessage::Location(_) => "location",
        DriverMessage::Availability { .. } => "availability",
        DriverMessage::OfferAck { .. } => "offer_ack",
        DriverMessage::Accept { .. } => "accept",
        DriverMessage::Reject { .. } => "reject",
        DriverMessage::RideProgress { .. } => "ride_progress",
    };
    assert_eq!(type_tag(frame).as_deref(), Some(tag), "accepted {frame:?} as {message:?}");

    let json = serde_json::to_string(&message).expect("a parsed message serialises");
    let again =
        parse_driver_message(&json).unwrap_or_else(|e| panic!("{json} (from {frame:?}) does not parse back: {e}"));
    assert_eq!(again, message, "{frame:?} -> {json}");
    assert_eq!(serde_json::to_string(&again).expect("serialises"), json, "the serialised form is canonical");

    if let DriverMessage::Location(report) = &message {
        let _ = report.validate(NOW_MS);
    }
});
