//! Server-Sent Events framing.
//!
//! Every function here produces a complete, self-delimiting frame. Nothing a caller passes can
//! end a line early or start a field: `\r` and `\n` are removed from single-line fields, and
//! multi-line data is split into one `data:` line per line, as the SSE grammar requires.

/// A `retry:` frame telling the client how long to wait before reconnecting.
pub fn retry(millis: u64) -> String {
    format!("retry: {millis}\n\n")
}

/// A comment frame (`: text`), used as heartbeat and to say why a stream ends.
pub fn comment(text: &str) -> String {
    format!(": {}\n\n", single_line(text))
}

/// An event frame: `event:`, `id:` and `data:` lines, then a blank line.
pub fn event(name: &str, id: &str, data: &str) -> String {
    let mut frame = String::with_capacity(name.len() + id.len() + data.len() + 24);
    frame.push_str("event: ");
    frame.push_str(&single_line(name));
    frame.push_str("\nid: ");
    frame.push_str(&single_line(id));
    frame.push('\n');
    for line in data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        frame.push_str("data: ");
        frame.push_str(line);
        frame.push('\n');
    }
    frame.push('\n');
    frame
}

/// Reads a `Last-Event-ID` value: Ridecast's ids are decimal integers that only grow.
///
/// Anything else (empty, signed, too large, text) is `None`: the client is treated as new.
pub fn parse_event_id(raw: &str) -> Option<u64> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    trimmed.parse().ok()
}

fn single_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) { text.replace(['\r', '\n'], "").into() } else { text.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_event_has_name_id_and_data_lines() {
        assert_eq!(event("location", "17", r#"{"a":1}"#), "event: location\nid: 17\ndata: {\"a\":1}\n\n");
    }

    #[test]
    fn retry_and_comment_frames() {
        assert_eq!(retry(3000), "retry: 3000\n\n");
        assert_eq!(comment("hb"), ": hb\n\n");
    }

    #[test]
    fn last_event_id_accepts_only_plain_decimals() {
        assert_eq!(parse_event_id("1764240000123"), Some(1_764_240_000_123));
        assert_eq!(parse_event_id(" 5 "), Some(5));
        for bad in ["", "-1", "+1", "1e3", "abc", "99999999999999999999999"] {
            assert_eq!(parse_event_id(bad), None, "{bad:?}");
        }
    }

    /// Splits a stream into (field, value) lines the way a browser's EventSource does.
    fn fields(stream: &str) -> Vec<(String, String)> {
        stream
            .split("\r\n")
            .flat_map(|l| l.split(['\r', '\n']))
            .filter(|l| !l.is_empty() && !l.starts_with(':'))
            .map(|l| match l.split_once(':') {
                Some((f, v)) => (f.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
                None => (l.to_owned(), String::new()),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn no_input_can_inject_a_field(name in ".*", id in ".*", data in ".*") {
            let frame = event(&name, &id, &data);
            prop_assert!(frame.ends_with("\n\n"));
            let parsed = fields(&frame);
            prop_assert_eq!(&parsed[0].0, "event");
            prop_assert_eq!(&parsed[1].0, "id");
            for (field, _) in &parsed[2..] {
                prop_assert_eq!(field, "data");
            }
            // The frame is one event: no blank line before its end.
            prop_assert!(!frame[..frame.len() - 2].contains("\n\n"));
        }

        #[test]
        fn data_survives_framing(data in "[^\r]*") {
            let frame = event("e", "1", &data);
            let joined: Vec<String> = fields(&frame).into_iter().skip(2).map(|(_, v)| v).collect();
            prop_assert_eq!(joined.join("\n"), data);
        }

        #[test]
        fn comments_stay_one_frame(text in ".*") {
            let frame = comment(&text);
            prop_assert!(frame.starts_with(": "));
            prop_assert!(!frame[..frame.len() - 2].contains(['\n', '\r']));
        }
    }
}
