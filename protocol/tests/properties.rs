//! Properties of the contract's encodings and rules, for every value rather than for examples.
//!
//! They extend the unit tests and the `proptest!` blocks inside the modules (`grid.rs`,
//! `sse.rs`) without repeating them: what is encoded decodes to itself (driver and server frames,
//! chat frames, locations, token claims, ids, message ids), grid cells are boxes whose eight
//! neighbours are other cells, and SSE framing holds for any mix of `\r`, `\n` and `\r\n` read
//! the way a browser's EventSource reads it. The fuzz targets in `fuzz/` (docs/FUZZING.md) come
//! at the same parsers from the other side, with arbitrary bytes.

use proptest::prelude::*;
use ridecast_protocol::{
    Claims, ErrorCode, GridCell, Id, InvalidId, LatLng, Location, LocationReport, Role, TokenError, TokenKeys,
    chat::{
        ChatClientFrame, ChatMessage, ChatRole, ChatServerFrame, InvalidChat, MAX_CLIENT_MSG_ID_BYTES, MAX_TEXT_CHARS,
        MessageId, parse_chat_frame,
    },
    grid::CELL_DEGREES,
    ids::MAX_ID_LEN,
    messages::{DriverMessage, OfferResult, ServerMessage, parse_driver_message},
    sse,
    token::EXP_LEEWAY_SECS,
};

// ---------------------------------------------------------------------------------------------
// Strategies

/// Every finite `f64`, both signs, subnormals and zeros included (what JSON can carry).
fn finite() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

/// Any text, control characters, quotes, backslashes and astral characters included.
fn text(len: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), len).prop_map(String::from_iter)
}

fn id() -> impl Strategy<Value = Id> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|raw| Id::parse(&raw).expect("the strategy follows the id rule"))
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Driver), Just(Role::Rider), Just(Role::Ops), Just(Role::Edge)]
}

fn chat_role() -> impl Strategy<Value = ChatRole> {
    prop_oneof![Just(ChatRole::Rider), Just(ChatRole::Driver)]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::MissingToken,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::Forbidden,
        ErrorCode::InvalidId,
        ErrorCode::InvalidMessage,
        ErrorCode::InvalidLocation,
        ErrorCode::InvalidSurge,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ])
}

fn lat_lng() -> impl Strategy<Value = LatLng> {
    (finite(), finite()).prop_map(|(lat, lng)| LatLng { lat, lng })
}

fn report() -> impl Strategy<Value = LocationReport> {
    (finite(), finite(), proptest::option::of(finite()), proptest::option::of(finite()), any::<u64>())
        .prop_map(|(lat, lng, heading, speed, ts)| LocationReport { lat, lng, heading, speed, ts })
}

fn driver_message() -> impl Strategy<Value = DriverMessage> {
    prop_oneof![
        report().prop_map(DriverMessage::Location),
        any::<bool>().prop_map(|available| DriverMessage::Availability { available }),
        id().prop_map(|offer_id| DriverMessage::OfferAck { offer_id: offer_id.into_string() }),
        id().prop_map(|offer_id| DriverMessage::Accept { offer_id: offer_id.into_string() }),
        id().prop_map(|offer_id| DriverMessage::Reject { offer_id: offer_id.into_string() }),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    let result = prop_oneof![
        Just(OfferResult::Confirmed),
        Just(OfferResult::Expired),
        Just(OfferResult::Taken),
        Just(OfferResult::Cancelled),
    ];
    prop_oneof![
        (text(0..=40), text(0..=40), lat_lng(), lat_lng(), any::<u64>()).prop_map(
            |(offer_id, ride_id, pickup, dropoff, expires_at)| ServerMessage::Offer {
                offer_id,
                ride_id,
                pickup,
                dropoff,
                expires_at
            }
        ),
        (text(0..=40), result).prop_map(|(offer_id, result)| ServerMessage::OfferResult { offer_id, result }),
        (error_code(), text(0..=80)).prop_map(|(code, message)| ServerMessage::Error { code, message }),
    ]
}

/// A `clientMsgId` the rule accepts: 1 to 32 printable characters is at most 128 bytes.
fn client_msg_id() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>().prop_filter("not a control character", |c| !c.is_control()), 1..=32)
        .prop_map(String::from_iter)
}

fn message_id() -> impl Strategy<Value = MessageId> {
    (any::<u64>(), any::<u64>()).prop_map(|(ms, seq)| MessageId { ms, seq })
}

fn claims() -> impl Strategy<Value = Claims> {
    (id(), role(), any::<u64>(), proptest::option::of(id()), proptest::option::of(id()))
        .prop_map(|(sub, role, exp, drv, ride)| Claims { sub, role, exp, drv, ride })
}

/// The bits of a location's numbers: `==` on floats would let `-0.0` pass for `0.0`.
fn bits(lat: f64, lng: f64, heading: Option<f64>, speed: Option<f64>) -> [Option<u64>; 4] {
    [Some(lat.to_bits()), Some(lng.to_bits()), heading.map(f64::to_bits), speed.map(f64::to_bits)]
}

// ---------------------------------------------------------------------------------------------
// WebSocket frames

proptest! {
    #[test]
    fn every_driver_message_round_trips_through_its_frame(message in driver_message()) {
        let frame = serde_json::to_string(&message).expect("serializes");
        let parsed = parse_driver_message(&frame).expect("a frame we wrote parses");
        if let (DriverMessage::Location(sent), DriverMessage::Location(got)) = (&message, &parsed) {
            let bits_of = |r: &LocationReport| bits(r.lat, r.lng, r.heading, r.speed);
            prop_assert_eq!(bits_of(sent), bits_of(got), "{}", frame);
        }
        prop_assert_eq!(parsed, message);
    }

    #[test]
    fn every_server_message_round_trips_through_its_frame(message in server_message()) {
        let frame = message.to_json();
        let parsed: ServerMessage = serde_json::from_str(&frame).expect("a frame we wrote parses");
        prop_assert_eq!(parsed, message);
    }

    #[test]
    fn every_valid_chat_frame_round_trips(
        client_msg_id in client_msg_id(),
        text in text(1..=MAX_TEXT_CHARS),
        typing in any::<bool>(),
    ) {
        let frame = if typing { ChatClientFrame::Typing } else { ChatClientFrame::Message { client_msg_id, text } };
        let json = serde_json::to_string(&frame).expect("serializes");
        prop_assert_eq!(parse_chat_frame(&json), Ok(frame));
    }

    #[test]
    fn chat_text_length_is_counted_in_characters_at_both_ends(text in text(0..=MAX_TEXT_CHARS + 50)) {
        let json = serde_json::json!({"type": "message", "clientMsgId": "c", "text": text}).to_string();
        let chars = text.chars().count();
        if (1..=MAX_TEXT_CHARS).contains(&chars) {
            prop_assert!(parse_chat_frame(&json).is_ok(), "{} chars refused", chars);
        } else {
            prop_assert_eq!(parse_chat_frame(&json), Err(InvalidChat::TextLength));
        }
    }

    #[test]
    fn a_client_msg_id_with_a_control_character_or_over_128_bytes_is_refused(
        before in "\\PC{0,8}",
        control in prop::char::ranges(vec!['\0'..='\u{1f}', '\u{7f}'..='\u{9f}'].into()),
        after in "\\PC{0,8}",
        filler in any::<char>().prop_filter("not a control character", |c| !c.is_control()),
    ) {
        let frame = |id: &str| serde_json::json!({"type": "message", "clientMsgId": id, "text": "hi"}).to_string();
        prop_assert_eq!(parse_chat_frame(&frame(&format!("{before}{control}{after}"))), Err(InvalidChat::ClientMsgId));
        let long = filler.to_string().repeat(MAX_CLIENT_MSG_ID_BYTES / filler.len_utf8() + 1);
        prop_assert!(long.len() > MAX_CLIENT_MSG_ID_BYTES);
        prop_assert_eq!(parse_chat_frame(&frame(&long)), Err(InvalidChat::ClientMsgId));
    }

    #[test]
    fn every_chat_server_frame_round_trips(
        id in message_id(),
        from in chat_role(),
        text in text(0..=200),
        ts in any::<u64>(),
        client_msg_id in text(0..=40),
        code in error_code(),
        pick in 0..3u8,
    ) {
        let frame = match pick {
            0 => ChatServerFrame::Message(ChatMessage { id: id.to_string(), from, text, ts, client_msg_id }),
            1 => ChatServerFrame::Typing { from },
            _ => ChatServerFrame::Error { code, message: text },
        };
        let json = frame.to_json();
        let parsed: ChatServerFrame = serde_json::from_str(&json).expect("a frame we wrote parses");
        prop_assert_eq!(parsed, frame);
    }
}

// ---------------------------------------------------------------------------------------------
// Locations, tokens and ids

proptest! {
    #[test]
    fn every_location_round_trips_through_its_json(
        driver_id in id(),
        lat in -90.0f64..=90.0,
        lng in -180.0f64..=180.0,
        heading in proptest::option::of(0.0f64..=360.0),
        speed in proptest::option::of(finite()),
        ts in any::<u64>(),
    ) {
        let location = Location { driver_id, lat, lng, heading, speed, ts };
        let json = serde_json::to_string(&location).expect("serializes");
        prop_assert_eq!(json.contains("\"heading\""), heading.is_some(), "absent fields are left out: {}", &json);
        prop_assert_eq!(json.contains("\"speed\""), speed.is_some(), "absent fields are left out: {}", &json);
        let parsed: Location = serde_json::from_str(&json).expect("parses");
        let bits_of = |l: &Location| bits(l.lat, l.lng, l.heading, l.speed);
        prop_assert_eq!(bits_of(&parsed), bits_of(&location), "{}", &json);
        prop_assert_eq!(parsed, location);
    }

    #[test]
    fn minted_claims_verify_to_themselves_until_exp_plus_leeway(
        claims in claims(),
        secret in prop::collection::vec(any::<u8>(), 1..48),
        before in 0..=EXP_LEEWAY_SECS + 3600,
    ) {
        let keys = TokenKeys::new(&secret, None).expect("a non-empty secret");
        let token = keys.mint(&claims).expect("mints");
        let now = claims.exp.saturating_add(EXP_LEEWAY_SECS).saturating_sub(before);
        prop_assert_eq!(keys.verify(&token, now).expect("verifies before exp plus leeway"), claims.clone());
        if let Some(late) = claims.exp.checked_add(EXP_LEEWAY_SECS + 1) {
            prop_assert!(matches!(keys.verify(&token, late), Err(TokenError::Expired)));
        }
    }

    #[test]
    fn tokens_verify_only_under_a_secret_that_signed_them(
        claims in claims(),
        old in prop::collection::vec(any::<u8>(), 1..32),
        new in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        prop_assume!(old != new);
        let now = claims.exp.saturating_sub(1);
        let token = TokenKeys::new(&old, None).expect("keys").mint(&claims).expect("mints");
        let rotated = TokenKeys::new(&new, Some(&old)).expect("keys");
        prop_assert_eq!(rotated.verify(&token, now).expect("the previous secret still verifies"), claims.clone());
        let after_rotation = TokenKeys::new(&new, None).expect("keys");
        prop_assert!(matches!(after_rotation.verify(&token, now), Err(TokenError::BadSignature)));
    }

    #[test]
    fn valid_ids_round_trip_through_parse_display_and_json(id in id()) {
        prop_assert_eq!(Id::parse(&format!("{id}")), Ok(id.clone()), "Display is the id itself");
        let json = serde_json::to_string(&id).expect("serializes");
        prop_assert_eq!(json.clone(), format!("\"{id}\""));
        prop_assert_eq!(serde_json::from_str::<Id>(&json).expect("parses"), id);
    }

    #[test]
    fn the_id_rule_is_the_same_through_parse_and_json(raw in "[A-Za-z0-9_\\-. /:äé\u{1F697}\n\"\\\\]{0,70}") {
        let rule = (1..=MAX_ID_LEN).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let parsed = Id::parse(&raw);
        prop_assert_eq!(parsed.is_ok(), rule, "{:?}", raw);
        if raw.len() > MAX_ID_LEN {
            prop_assert_eq!(parsed.clone(), Err(InvalidId::TooLong));
        }
        let json = serde_json::to_string(&raw).expect("serializes");
        prop_assert_eq!(serde_json::from_str::<Id>(&json).ok(), parsed.ok());
    }
}

// ---------------------------------------------------------------------------------------------
// Chat message ids

proptest! {
    #[test]
    fn message_ids_round_trip_through_display_with_or_without_leading_zeros(id in message_id()) {
        let shown = id.to_string();
        prop_assert_eq!(MessageId::parse(&shown), Some(id));
        let padded = format!("{:0>20}-{:0>20}", id.ms, id.seq);
        prop_assert_eq!(MessageId::parse(&padded), Some(id), "{}", padded);
    }

    #[test]
    fn message_id_order_is_the_order_of_ms_then_seq_and_survives_display(a in message_id(), b in message_id()) {
        let expected = (a.ms, a.seq).cmp(&(b.ms, b.seq));
        prop_assert_eq!(a.cmp(&b), expected);
        prop_assert_eq!(a.partial_cmp(&b), Some(expected));
        prop_assert_eq!(a == b, expected.is_eq());
        let reparsed = |id: MessageId| MessageId::parse(&id.to_string()).expect("parses");
        prop_assert_eq!(reparsed(a).cmp(&reparsed(b)), expected);
    }

    #[test]
    fn ids_made_one_after_another_only_grow_whatever_the_clock_does(
        start in 0u64..1 << 60,
        steps in prop::collection::vec(-5_000i64..5_000, 1..64),
    ) {
        let mut clock = start;
        let mut last: Option<MessageId> = None;
        for step in steps {
            clock = clock.saturating_add_signed(step);
            let next = MessageId::next_after(last, clock);
            if let Some(last) = last {
                prop_assert!(next > last, "{} after {}", next, last);
            }
            prop_assert!(next.ms >= clock, "{} at clock {}", next, clock);
            prop_assert_eq!(MessageId::parse(&next.to_string()), Some(next));
            last = Some(next);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Grid cells (grid.rs already checks that a point always gets the same cell and that a step of a
// cell north leaves it)

/// The latitude, in degrees, whose cosine scales a row's columns.
fn row_phi(cell: GridCell) -> f64 {
    (cell.row as f64 * CELL_DEGREES).to_radians()
}

proptest! {
    #[test]
    fn a_step_of_a_cell_in_any_of_the_eight_directions_leaves_the_cell(
        lat in -89.0f64..89.0,
        lng in -179.0f64..179.0,
        dy in -1i64..=1,
        dx in -1i64..=1,
    ) {
        prop_assume!((dy, dx) != (0, 0));
        let cell = GridCell::of(lat, lng);
        // A column is CELL_DEGREES / cos(φ) degrees of longitude wide in this row.
        let step_lat = dy as f64 * CELL_DEGREES * 1.01;
        let step_lng = dx as f64 * CELL_DEGREES * 1.01 / row_phi(cell).cos();
        let neighbour = GridCell::of(lat + step_lat, lng + step_lng);
        prop_assert_ne!(neighbour, cell, "step ({}, {}) from ({}, {})", dy, dx, lat, lng);
        let rows = neighbour.row - cell.row;
        if dy == 0 {
            prop_assert_eq!(rows, 0);
            let cols = (neighbour.col - cell.col) * dx;
            prop_assert!(cols == 1 || cols == 2, "a step east or west moves one or two columns, not {}", cols);
        } else {
            prop_assert!(rows * dy == 1 || rows * dy == 2, "a step north or south moves one or two rows, not {}", rows);
        }
    }

    #[test]
    fn every_point_inside_a_cells_box_is_in_that_cell(
        lat in -89.0f64..89.0,
        lng in -179.0f64..179.0,
        fy in 0.001f64..0.999,
        fx in 0.001f64..0.999,
    ) {
        let cell = GridCell::of(lat, lng);
        let inside_lat = (cell.row as f64 + fy) * CELL_DEGREES;
        let inside_lng = (cell.col as f64 + fx) * CELL_DEGREES / row_phi(cell).cos();
        prop_assert_eq!(GridCell::of(inside_lat, inside_lng), cell, "({}, {})", inside_lat, inside_lng);
    }
}

// ---------------------------------------------------------------------------------------------
// SSE framing, read as a browser reads it. sse.rs's own properties draw their text from `.*`,
// which never yields `\n` (so never `\r\n`) in the event name, id or data, and from `[^\r]*` for
// data that must survive, which never yields `\r`: these cover every line ending everywhere.

/// What an EventSource dispatches, per the HTML standard's "interpret an event stream".
#[derive(Debug, Clone, PartialEq)]
struct Dispatched {
    event: String,
    data: String,
    last_event_id: String,
}

#[derive(Debug, Default)]
struct EventSourceReader {
    dispatched: Vec<Dispatched>,
    retry: Option<u64>,
    event: String,
    data: String,
    last_event_id: String,
}

impl EventSourceReader {
    /// Reads a stream: lines end at `\r\n`, `\r` or `\n`; an unterminated last line is kept back.
    fn read(stream: &str) -> Self {
        let mut reader = Self::default();
        let mut rest = stream;
        while let Some(end) = rest.find(['\r', '\n']) {
            reader.line(&rest[..end]);
            rest = &rest[end + if rest[end..].starts_with("\r\n") { 2 } else { 1 }..];
        }
        reader
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.last_event_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return;
        }
        data.pop();
        let event = if event.is_empty() { "message".to_owned() } else { event };
        self.dispatched.push(Dispatched { event, data, last_event_id: self.last_event_id.clone() });
    }

    /// Whether nothing is half-read: no field waits for a blank line.
    fn is_between_events(&self) -> bool {
        self.event.is_empty() && self.data.is_empty()
    }
}

/// Text thick with line endings and with lines that look like SSE fields.
fn sse_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => Just("\r".to_owned()),
        3 => Just("\n".to_owned()),
        3 => Just("\r\n".to_owned()),
        1 => Just("\n\n".to_owned()),
        1 => Just(":".to_owned()),
        1 => Just(" ".to_owned()),
        1 => Just("data: x".to_owned()),
        1 => Just("id: 7".to_owned()),
        1 => Just("event: e".to_owned()),
        1 => Just("retry: 1".to_owned()),
        6 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

/// What a single-line field becomes: Ridecast drops its line breaks.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], "")
}

/// What a browser makes of data lines: every line ending becomes `\n`.
fn normalised(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

proptest! {
    #[test]
    fn an_event_is_read_back_as_exactly_one_event_whatever_its_line_endings(
        name in sse_text(),
        id in sse_text(),
        data in sse_text(),
    ) {
        let frame = sse::event(&name, &id, &data);
        let reader = EventSourceReader::read(&frame);
        prop_assert!(reader.is_between_events(), "{:?} leaves a half-read event", frame);
        let event = if one_line(&name).is_empty() { "message".to_owned() } else { one_line(&name) };
        let last_event_id = if one_line(&id).contains('\0') { String::new() } else { one_line(&id) };
        prop_assert_eq!(reader.dispatched, vec![Dispatched { event, data: normalised(&data), last_event_id }]);
        prop_assert_eq!(reader.retry, None, "{:?}", frame);
    }

    #[test]
    fn frames_in_a_row_stay_apart(
        first in (sse_text(), sse_text(), sse_text()),
        note in sse_text(),
        second in (sse_text(), sse_text(), sse_text()),
        retry in any::<u64>(),
    ) {
        let stream = [
            sse::retry(retry),
            sse::event(&first.0, &first.1, &first.2),
            sse::comment(&note),
            sse::event(&second.0, &second.1, &second.2),
        ]
        .concat();
        let reader = EventSourceReader::read(&stream);
        prop_assert_eq!(reader.retry, Some(retry));
        let data: Vec<String> = reader.dispatched.iter().map(|d| d.data.clone()).collect();
        prop_assert_eq!(data, vec![normalised(&first.2), normalised(&second.2)], "{:?}", stream);
        prop_assert!(reader.is_between_events());
    }

    #[test]
    fn a_comment_is_one_line_that_a_reader_ignores(note in sse_text()) {
        let frame = sse::comment(&note);
        prop_assert!(frame.starts_with(':') && frame.ends_with("\n\n"));
        prop_assert!(!frame[..frame.len() - 2].contains(['\r', '\n']), "{:?}", frame);
        let reader = EventSourceReader::read(&frame);
        prop_assert!(reader.dispatched.is_empty() && reader.is_between_events() && reader.retry.is_none());
    }

    #[test]
    fn the_id_we_send_is_the_last_event_id_we_read_back(ts in any::<u64>(), pad in "[ \t]{0,3}") {
        let frame = sse::event("location", &ts.to_string(), "{}");
        let reader = EventSourceReader::read(&frame);
        let sent_back = format!("{pad}{}{pad}", reader.dispatched[0].last_event_id);
        prop_assert_eq!(sse::parse_event_id(&sent_back), Some(ts));
    }
}
