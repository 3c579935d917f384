//! A minimal, incremental Server-Sent Events reader.
//!
//! Each rider holds one of these, so it owns no more than one partial line plus the fields of
//! the event being assembled, and reuses those buffers for every event. Bytes may arrive split
//! anywhere (even between the `\r` and `\n` of a line end); events come out whole.
//!
//! It follows the `EventSource` grammar for what Ridecast uses: `event`, `id`, `data` (several
//! lines joined with `\n`), `retry`, comments, and the three line endings.

/// One dispatched event, borrowing the reader's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` name; `message` when the event had none.
    pub name: &'a [u8],
    /// The `id:` given in this event, if any.
    pub id: Option<&'a [u8]>,
    pub data: &'a [u8],
}

/// Counters of what the stream held besides events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SseExtras {
    /// Comment lines (heartbeats and explanations).
    pub comments: u64,
    /// The last `retry:` value seen.
    pub retry_ms: Option<u64>,
}

/// Longest line kept; anything longer is cut (a location event is about 150 bytes).
const MAX_LINE: usize = 16 * 1024;

/// The reader's state between reads.
#[derive(Debug, Default)]
pub struct SseReader {
    line: Vec<u8>,
    /// The previous byte was a `\r`, so a following `\n` belongs to the same line end.
    after_cr: bool,
    name: Vec<u8>,
    id: Vec<u8>,
    has_id: bool,
    data: Vec<u8>,
    has_data: bool,
    pub extras: SseExtras,
}

impl SseReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the body; `on_event` is called for every complete event.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        if bytes.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = bytes.split_at(end);
            if self.line.is_empty() {
                self.process_line(head, &mut on_event);
            } else {
                self.push_line_bytes(head);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, &mut on_event);
                self.line = line;
                self.line.clear();
            }
            bytes = &tail[1..];
            if tail[0] == b'\r' {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_line_bytes(bytes);
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            self.extras.comments += 1;
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.name.clear();
                self.name.extend_from_slice(value);
            }
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"id" => {
                self.id.clear();
                self.id.extend_from_slice(value);
                self.has_id = true;
            }
            b"retry" => {
                if let Some(ms) = parse_decimal(value) {
                    self.extras.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(SseEvent<'_>)) {
        // Per the EventSource rules an event without data is not dispatched.
        if self.has_data {
            let name: &[u8] = if self.name.is_empty() { b"message" } else { &self.name };
            on_event(SseEvent { name, id: self.has_id.then_some(&self.id[..]), data: &self.data });
        }
        self.name.clear();
        self.id.clear();
        self.data.clear();
        self.has_id = false;
        self.has_data = false;
    }
}

/// A plain unsigned decimal (no sign, no spaces), as Ridecast's event ids are.
pub fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() { acc.checked_mul(10)?.checked_add(u64::from(b - b'0')) } else { None }
    })
}

/// Finds `"ts":<number>` in a location JSON without parsing all of it.
///
/// Used when an event carries no `id:`; the contract puts `ts` in every location.
pub fn find_ts(json: &[u8]) -> Option<u64> {
    let key = b"\"ts\":";
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &json[at..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    parse_decimal(&rest[..digits])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Owned {
        name: String,
        id: Option<String>,
        data: String,
    }

    fn collect(reader: &mut SseReader, bytes: &[u8], into: &mut Vec<Owned>) {
        reader.feed(bytes, |e| {
            into.push(Owned {
                name: String::from_utf8_lossy(e.name).into_owned(),
                id: e.id.map(|i| String::from_utf8_lossy(i).into_owned()),
                data: String::from_utf8_lossy(e.data).into_owned(),
            })
        });
    }

    fn events_of(chunks: &[&[u8]]) -> (Vec<Owned>, SseExtras) {
        let mut reader = SseReader::new();
        let mut out = Vec::new();
        for chunk in chunks {
            collect(&mut reader, chunk, &mut out);
        }
        (out, reader.extras)
    }

    const STREAM: &str = "retry: 2000\n\n: hello\n\nevent: location\nid: 17\ndata: {\"ts\":17}\n\n: hb\n\nevent: location\nid: 18\ndata: {\"ts\":18}\n\n";

    fn expected() -> Vec<Owned> {
        vec![
            Owned { name: "location".into(), id: Some("17".into()), data: "{\"ts\":17}".into() },
            Owned { name: "location".into(), id: Some("18".into()), data: "{\"ts\":18}".into() },
        ]
    }

    #[test]
    fn reads_a_ridecast_stream_in_one_piece() {
        let (events, extras) = events_of(&[STREAM.as_bytes()]);
        assert_eq!(events, expected());
        assert_eq!(extras, SseExtras { comments: 2, retry_ms: Some(2000) });
    }

    #[test]
    fn any_split_of_the_bytes_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let (events, _) = events_of(&[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(events, expected(), "split at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(events_of(&singles).0, expected());
    }

    #[test]
    fn crlf_and_lone_cr_line_endings_work_even_when_split() {
        let crlf = STREAM.replace('\n', "\r\n");
        let cr = STREAM.replace('\n', "\r");
        for stream in [crlf, cr] {
            let bytes = stream.as_bytes();
            for cut in 0..=bytes.len() {
                assert_eq!(events_of(&[&bytes[..cut], &bytes[cut..]]).0, expected(), "{stream:?} split at {cut}");
            }
        }
    }

    #[test]
    fn multi_line_data_is_joined_and_no_space_after_colon_is_fine() {
        let (events, _) = events_of(&[b"data:a\ndata: b\n\n"]);
        assert_eq!(events, vec![Owned { name: "message".into(), id: None, data: "a\nb".into() }]);
    }

    #[test]
    fn events_without_data_are_not_dispatched_and_fields_reset() {
        let (events, _) = events_of(&[b"event: x\nid: 1\n\ndata: y\n\n"]);
        assert_eq!(events, vec![Owned { name: "message".into(), id: None, data: "y".into() }]);
    }

    #[test]
    fn an_unfinished_event_is_held_back() {
        let (events, _) = events_of(&[b"event: location\nid: 5\ndata: {}\n"]);
        assert!(events.is_empty());
    }

    #[test]
    fn decimals_and_ts_lookup() {
        assert_eq!(parse_decimal(b"1764240000123"), Some(1_764_240_000_123));
        for bad in [&b""[..], b"-1", b"1.5", b" 1", b"99999999999999999999999"] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
        let json = br#"{"driverId":"d-1","lat":37.7,"lng":-122.4,"heading":90.0,"speed":8.3,"ts":1764240000123}"#;
        assert_eq!(find_ts(json), Some(1_764_240_000_123));
        assert_eq!(find_ts(br#"{"ts": 42}"#), Some(42));
        assert_eq!(find_ts(br#"{"lat":1}"#), None);
    }
}
