//! Ride chat frames (`GET /ws/chat/{rideId}`): what participants send, what they receive, and
//! the rules a message must meet.
//!
//! Contract: PROTOCOL.md, "Chat WebSocket". A message's `id` is the server's, and ids order the
//! ride's messages totally (`<ms>-<seq>`, as Redis Streams number entries), so `?since=<id>`
//! resumes after any message with no gap and no duplicate.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// Longest chat text, in Unicode characters (`char`s).
pub const MAX_TEXT_CHARS: usize = 1000;
/// Longest `clientMsgId`, in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 128;

/// Who wrote a message (or is typing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    Rider,
    Driver,
}

impl ChatRole {
    /// The role as the contract spells it (`from`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rider => "rider",
            Self::Driver => "driver",
        }
    }

    /// The role spelled `raw`, if it is one.
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Rider, Self::Driver].into_iter().find(|role| role.as_str() == raw)
    }
}

/// What a participant sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatClientFrame {
    /// A message; a repeated `clientMsgId` (a retry) is stored once.
    #[serde(rename_all = "camelCase")]
    Message { client_msg_id: String, text: String },
    /// The participant is typing: relayed to the other side, never stored.
    Typing,
}

/// One stored message, as every participant receives it (history and live alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// The server's id: `<ms>-<seq>`, growing in the ride's one total order.
    pub id: String,
    pub from: ChatRole,
    pub text: String,
    /// When the server stored it, epoch ms.
    pub ts: u64,
    pub client_msg_id: String,
}

/// What a participant receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChatServerFrame {
    Message(ChatMessage),
    Typing { from: ChatRole },
    Error { code: ErrorCode, message: String },
}

impl ChatServerFrame {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error { code, message: message.into() }
    }

    /// The frame's text. These types always serialize, so this is infallible.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"type":"error","code":"internal","message":"unencodable frame"}"#.to_owned())
    }
}

/// Why a chat frame is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidChat {
    #[error("not a chat frame: {0}")]
    Unreadable(String),
    #[error("text must be 1 to {MAX_TEXT_CHARS} characters")]
    TextLength,
    #[error("clientMsgId must be 1 to {MAX_CLIENT_MSG_ID_BYTES} bytes without control characters")]
    ClientMsgId,
}

impl InvalidChat {
    /// The contract's error code for it.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidMessage
    }
}

/// Parses and validates one participant frame.
///
/// # Errors
/// [`InvalidChat`] when the text is not a chat frame, or a message breaks the length rules.
pub fn parse_chat_frame(text: &str) -> Result<ChatClientFrame, InvalidChat> {
    if !crate::is_json_object(text) {
        return Err(InvalidChat::Unreadable("frames are JSON objects".to_owned()));
    }
    let frame: ChatClientFrame = serde_json::from_str(text).map_err(|e| InvalidChat::Unreadable(e.to_string()))?;
    if let ChatClientFrame::Message { client_msg_id, text } = &frame {
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_TEXT_CHARS {
            return Err(InvalidChat::TextLength);
        }
        if client_msg_id.is_empty()
            || client_msg_id.len() > MAX_CLIENT_MSG_ID_BYTES
            || client_msg_id.chars().any(char::is_control)
        {
            return Err(InvalidChat::ClientMsgId);
        }
    }
    Ok(frame)
}

/// A message id, `<ms>-<seq>`, comparable in the ride's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    pub ms: u64,
    pub seq: u64,
}

impl MessageId {
    /// Parses `<ms>-<seq>` (both decimal); `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        let (ms, seq) = raw.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(Self { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }

    /// The id after `self` in time `now_ms`: `now-0`, or `self.ms-(seq+1)` when the clock has
    /// not moved past it (ids only grow, whatever the clock does).
    pub fn next_after(last: Option<Self>, now_ms: u64) -> Self {
        match last {
            Some(last) if last.ms >= now_ms => Self { ms: last.ms, seq: last.seq + 1 },
            _ => Self { ms: now_ms, seq: 0 },
        }
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl Ord for MessageId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ms, self.seq).cmp(&(other.ms, other.seq))
    }
}

impl PartialOrd for MessageId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_use_the_contract_names() {
        let sent = parse_chat_frame(r#"{"type":"message","clientMsgId":"c-1","text":"On my way"}"#).expect("valid");
        assert_eq!(sent, ChatClientFrame::Message { client_msg_id: "c-1".into(), text: "On my way".into() });
        assert_eq!(parse_chat_frame(r#"{"type":"typing"}"#).expect("valid"), ChatClientFrame::Typing);
        let message = ChatServerFrame::Message(ChatMessage {
            id: "1764240000123-0".into(),
            from: ChatRole::Driver,
            text: "Here".into(),
            ts: 1_764_240_000_123,
            client_msg_id: "c-9".into(),
        });
        assert_eq!(
            message.to_json(),
            r#"{"type":"message","id":"1764240000123-0","from":"driver","text":"Here","ts":1764240000123,"clientMsgId":"c-9"}"#
        );
        assert_eq!(ChatServerFrame::Typing { from: ChatRole::Rider }.to_json(), r#"{"type":"typing","from":"rider"}"#);
    }

    #[test]
    fn text_is_one_to_a_thousand_characters_counted_as_unicode() {
        let frame =
            |text: &str| format!(r#"{{"type":"message","clientMsgId":"c","text":{}}}"#, serde_json::json!(text));
        assert_eq!(parse_chat_frame(&frame("")), Err(InvalidChat::TextLength));
        assert!(parse_chat_frame(&frame(&"é".repeat(MAX_TEXT_CHARS))).is_ok(), "1000 two-byte characters are fine");
        assert_eq!(parse_chat_frame(&frame(&"a".repeat(MAX_TEXT_CHARS + 1))), Err(InvalidChat::TextLength));
    }

    #[test]
    fn client_message_ids_are_short_printable_and_present() {
        let frame = |id: &str| format!(r#"{{"type":"message","clientMsgId":{},"text":"hi"}}"#, serde_json::json!(id));
        assert_eq!(parse_chat_frame(&frame("")), Err(InvalidChat::ClientMsgId));
        assert_eq!(parse_chat_frame(&frame("a\nb")), Err(InvalidChat::ClientMsgId));
        assert_eq!(parse_chat_frame(&frame(&"x".repeat(129))), Err(InvalidChat::ClientMsgId));
        assert!(parse_chat_frame(&frame("3f2b8c1e-6a4d-4f7e-9b1a-2c3d4e5f6a7b")).is_ok());
        assert!(matches!(parse_chat_frame(r#"{"type":"message","text":"hi"}"#), Err(InvalidChat::Unreadable(_))));
        assert!(matches!(parse_chat_frame(r#"{"type":"shout"}"#), Err(InvalidChat::Unreadable(_))));
        // serde reads tagged enums from arrays too; the contract's frames are objects.
        assert!(matches!(parse_chat_frame(r#"["message","cl","c"]"#), Err(InvalidChat::Unreadable(_))));
        assert!(matches!(parse_chat_frame(r#"["typing"]"#), Err(InvalidChat::Unreadable(_))));
    }

    #[test]
    fn message_ids_order_by_time_then_sequence_and_only_grow() {
        let a = MessageId::parse("1764240000123-0").expect("valid");
        let b = MessageId::parse("1764240000123-1").expect("valid");
        let c = MessageId::parse("1764240000124-0").expect("valid");
        assert!(a < b && b < c);
        assert_eq!(a.to_string(), "1764240000123-0");
        for bad in ["", "1", "1-", "-1", "a-1", "1-1-1", "1--1", "123456789012345678901-0"] {
            assert_eq!(MessageId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(MessageId::next_after(None, 5), MessageId { ms: 5, seq: 0 });
        assert_eq!(MessageId::next_after(Some(a), a.ms), MessageId { ms: a.ms, seq: 1 }, "same millisecond");
        assert_eq!(MessageId::next_after(Some(c), a.ms), MessageId { ms: c.ms, seq: 1 }, "a clock gone back");
        assert_eq!(MessageId::next_after(Some(a), c.ms), MessageId { ms: c.ms, seq: 0 });
    }
}
