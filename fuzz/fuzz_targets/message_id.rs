//! `chat::MessageId::parse`: the `?since=<messageId>` a chat client resumes from.
//!
//! The input is one id, or two separated by a newline (to compare them).
//!
//! Invariants:
//! - an id is accepted exactly when it is `<ms>-<seq>`, each 1 to 20 ASCII digits whose value fits
//!   a `u64` (checked on the digits as text, with no integer parsing);
//! - `Display` gives the canonical form (no leading zeros) and parses back to the same id;
//! - two ids order as their `(ms, seq)` values do, compared as decimal text; `==`, `cmp` and
//!   `partial_cmp` agree;
//! - `next_after` only grows: the id after `a` at any clock is above `a` and not before the clock.
#![no_main]

use std::cmp::Ordering;

use libfuzzer_sys::fuzz_target;
use ridecast_fuzz::{canonical_decimal, cmp_decimal, decimal_fits_u64};
use ridecast_protocol::chat::MessageId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (first, second) = match text.split_once('\n') {
        Some((first, second)) => (first, Some(second)),
        None => (text, None),
    };
    let a = check(first);
    let b = second.and_then(check);
    if let (Some((a, a_ms, a_seq)), Some((b, b_ms, b_seq))) = (a, b) {
        let expected = cmp_decimal(a_ms, b_ms).then_with(|| cmp_decimal(a_seq, b_seq));
        assert_eq!(a.cmp(&b), expected, "{a} vs {b}");
        assert_eq!(a.partial_cmp(&b), Some(expected));
        assert_eq!(a == b, expected == Ordering::Equal);
        assert_eq!(b.cmp(&a), expected.reverse());
        // The clock of `next_after` is the other id's `ms`: earlier, equal or later than `a.ms`.
        // `a.seq == u64::MAX` would overflow `seq + 1`; stored ids are the server's own, counted
        // up from 0 within one millisecond, so they never get there.
        if a.seq < u64::MAX {
            let next = MessageId::next_after(Some(a), b.ms);
            assert!(next > a && next.ms >= b.ms, "next_after({a}, {}) = {next}", b.ms);
        }
        assert_eq!(MessageId::next_after(None, b.ms), MessageId { ms: b.ms, seq: 0 });
    }
});

/// Parses `raw` and checks it against the rule; the id and its two digit runs when accepted.
fn check(raw: &str) -> Option<(MessageId, &str, &str)> {
    let parsed = MessageId::parse(raw);
    let part = |digits: &str| digits.len() <= 20 && decimal_fits_u64(digits);
    let expected = raw.split_once('-').filter(|(ms, seq)| part(ms) && part(seq));
    assert_eq!(parsed.is_some(), expected.is_some(), "{raw:?} parsed as {parsed:?}");
    let (id, (ms, seq)) = (parsed?, expected?);
    let shown = id.to_string();
    assert_eq!(shown, format!("{}-{}", canonical_decimal(ms), canonical_decimal(seq)), "{raw:?}");
    assert_eq!(MessageId::parse(&shown), Some(id), "{shown}");
    Some((id, ms, seq))
}
