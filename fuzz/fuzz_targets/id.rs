//! `ids::Id::parse`: driver, ride and zone ids from paths, tokens and bodies.
//!
//! Invariants:
//! - accepted exactly when the input matches `[A-Za-z0-9_-]{1,64}` (stated apart from the parser,
//!   on characters rather than bytes);
//! - a refusal names the right rule: `Empty` for "", `TooLong` past 64 bytes, `BadCharacter`
//!   otherwise;
//! - an accepted id is the input unchanged (`as_str`, `Display`), JSON deserialisation applies the
//!   same rule, the id's JSON parses back to it, and a chat channel name gives it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ridecast_fuzz::is_contract_id;
use ridecast_protocol::{Id, InvalidId, channels, ids::MAX_ID_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let parsed = Id::parse(raw);
    assert_eq!(parsed.is_ok(), is_contract_id(raw), "{raw:?}: {parsed:?}");
    let from_json = serde_json::from_str::<Id>(&serde_json::to_string(raw).expect("a string serialises"));
    assert_eq!(from_json.is_ok(), parsed.is_ok(), "{raw:?} as JSON: {from_json:?}");

    let id = match parsed {
        Ok(id) => id,
        Err(refusal) => {
            let expected = match raw.len() {
                0 => InvalidId::Empty,
                n if n > MAX_ID_LEN => InvalidId::TooLong,
                _ => InvalidId::BadCharacter,
            };
            assert_eq!(refusal, expected, "{raw:?}");
            return;
        }
    };
    assert_eq!(id.as_str(), raw);
    assert_eq!(id.to_string(), raw);
    assert_eq!(from_json.ok().as_ref(), Some(&id));
    let json = serde_json::to_string(&id).expect("an id serialises");
    assert_eq!(serde_json::from_str::<Id>(&json).ok().as_ref(), Some(&id), "{json}");
    assert_eq!(channels::chat_ride_of(&channels::chat_ride(&id)), Some(raw));
});
