//! `TokenKeys::verify`: bearer tokens from `Authorization` and `?token=`, at the origin and the
//! edge, with fixed secrets and a fixed clock.
//!
//! A fuzzer cannot forge an HMAC, so most inputs are signed here, and the fuzzer explores what
//! lies behind a good signature (header and claims). The first byte picks how the rest is used:
//! - `0 mod 4`: the rest is the token text, as a client would send it;
//! - `1 mod 4`: the rest is the payload, signed with the current secret under an HS256 header;
//! - `2 mod 4`: the same, signed with the previous secret (rotation);
//! - `3 mod 4`: the rest is `<header JSON>\n<payload JSON>`, signed with the current secret.
//!
//! Invariants:
//! - no token verifies under keys that do not hold the secret that signed it: a stranger's keys
//!   never accept anything, and keys without the previous secret never accept what it signed;
//! - keys with and without the previous secret agree on what the current secret signed;
//! - verified claims have ids that match the id rule, a role that spells and parses back, and an
//!   `exp` not more than the leeway behind the clock; they are what the payload says, and the
//!   header said HS256;
//! - whatever verifies re-mints: minting its claims gives a token that verifies (with and without
//!   the previous secret) to the same claims, and that a stranger refuses as badly signed;
//! - the same token is `Expired` one second past `exp` plus the leeway.
#![no_main]

use std::sync::LazyLock;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use ridecast_fuzz::{NOW_SECS, is_contract_id};
use ridecast_protocol::{Claims, Role, TokenError, TokenKeys, token::EXP_LEEWAY_SECS};
use serde_json::Value;

const CURRENT: &[u8] = b"fuzz-current-secret";
const PREVIOUS: &[u8] = b"fuzz-previous-secret";
const STRANGER: &[u8] = b"fuzz-stranger-secret";
const HS256_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;

struct Keys {
    rotating: TokenKeys,
    current_only: TokenKeys,
    stranger: TokenKeys,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let keys = |current, previous| TokenKeys::new(current, previous).expect("non-empty secrets");
    Keys { rotating: keys(CURRENT, Some(PREVIOUS)), current_only: keys(CURRENT, None), stranger: keys(STRANGER, None) }
});

#[derive(Clone, Copy, PartialEq)]
enum Signer {
    /// The fuzzer's own text: a valid signature only if it came from a seed.
    Input,
    Current,
    Previous,
}

/// `base64url(header).base64url(payload).base64url(HMAC-SHA256)`, as any JWT library signs.
fn sign(header: &[u8], payload: &[u8], secret: &[u8]) -> String {
    let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let key = EncodingKey::from_secret(secret).expect("a non-empty secret");
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("HMAC signs anything");
    format!("{message}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (header, payload): (&[u8], &[u8]) = match mode % 4 {
        3 => match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, b""),
        },
        _ => (HS256_HEADER, rest),
    };
    let (token, signer) = match mode % 4 {
        0 => match std::str::from_utf8(rest) {
            Ok(text) => (text.to_owned(), Signer::Input),
            Err(_) => return,
        },
        2 => (sign(header, payload, PREVIOUS), Signer::Previous),
        _ => (sign(header, payload, CURRENT), Signer::Current),
    };
    let keys = &*KEYS;

    let verdict = keys.rotating.verify(&token, NOW_SECS);
    assert!(keys.stranger.verify(&token, NOW_SECS).is_err(), "a stranger's keys accepted {token}");
    match signer {
        Signer::Previous => {
            assert!(keys.current_only.verify(&token, NOW_SECS).is_err(), "accepted without its secret: {token}");
        }
        Signer::Current => {
            let alone = keys.current_only.verify(&token, NOW_SECS);
            assert_eq!(alone.as_ref().ok(), verdict.as_ref().ok(), "{token}: {alone:?} vs {verdict:?}");
        }
        Signer::Input => {}
    }
    let Ok(claims) = verdict else { return };

    for id in [Some(&claims.sub), claims.drv.as_ref(), claims.ride.as_ref()].into_iter().flatten() {
        assert!(is_contract_id(id.as_str()), "{token}: id {id:?}");
    }
    assert_eq!(claims.role.as_str().parse::<Role>(), Ok(claims.role));
    assert!(u128::from(claims.exp) + u128::from(EXP_LEEWAY_SECS) >= u128::from(NOW_SECS), "{claims:?}");
    // What the target signed reads the same as generic JSON, when it reads as such. serde_json
    // skips the fields it ignores without checking all of them (the UTF-8 of their strings, the
    // range of their numbers: `"x":1e999` is skipped, not refused), so a payload that generic JSON
    // refuses can still verify. That is harmless (only a holder of the secret can sign one, and
    // every claim Ridecast reads is checked), and such payloads are left out of this comparison.
    let generic = |part: &[u8]| serde_json::from_slice::<Value>(part).ok();
    if signer != Signer::Input {
        if let Some(read) = generic(payload) {
            assert_eq!(read.get("role").and_then(Value::as_str), Some(claims.role.as_str()), "{read}");
            assert_eq!(serde_json::from_value::<Claims>(read.clone()).ok().as_ref(), Some(&claims), "{read}");
        }
        if let Some(header) = generic(header) {
            assert_eq!(header.get("alg").and_then(Value::as_str), Some("HS256"), "{header}");
        }
    }

    let minted = keys.rotating.mint(&claims).expect("verified claims can be signed");
    for verifier in [&keys.rotating, &keys.current_only] {
        let again = verifier.verify(&minted, NOW_SECS);
        assert_eq!(again.as_ref().ok(), Some(&claims), "{minted}: {again:?}");
    }
    assert!(matches!(keys.stranger.verify(&minted, NOW_SECS), Err(TokenError::BadSignature)));
    if let Some(late) = claims.exp.checked_add(EXP_LEEWAY_SECS + 1) {
        let verdict = keys.rotating.verify(&token, late);
        assert!(matches!(verdict, Err(TokenError::Expired)), "{token} at {late}: {verdict:?}");
    }
});
