//! `chat::parse_chat_frame`: every text frame a ride's rider or driver sends on `/ws/chat/{rideId}`.
//!
//! Invariants:
//! - the verdict matches the rules, in their order: a frame that does not open as a JSON object
//!   (serde alone would read an array as a frame) or that the generic serde reading refuses is
//!   `Unreadable`; then a text of 0 or more than 1000 characters is `TextLength`; then a
//!   `clientMsgId` that is empty, over 128 bytes or has a control character is `ClientMsgId`;
//! - an accepted frame's `type` is its variant's tag, it serialises and parses back to itself;
//! - the message it becomes (`ChatServerFrame::Message`, as echoed and delivered) serialises and
//!   parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ridecast_fuzz::{NOW_MS, opens_as_object, type_tag};
use ridecast_protocol::chat::{
    ChatClientFrame, ChatMessage, ChatRole, ChatServerFrame, InvalidChat, MAX_CLIENT_MSG_ID_BYTES, MAX_TEXT_CHARS,
    parse_chat_frame,
};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else { return };
    let verdict = parse_chat_frame(frame);
    let text_ok = |text: &str| (1..=MAX_TEXT_CHARS).contains(&text.chars().count());
    let id_ok = |id: &str| (1..=MAX_CLIENT_MSG_ID_BYTES).contains(&id.len()) && !id.chars().any(|c| c.is_control());
    if !opens_as_object(frame) {
        assert!(matches!(verdict, Err(InvalidChat::Unreadable(_))), "{frame:?} is no object: {verdict:?}");
        return;
    }
    match (&verdict, serde_json::from_str::<ChatClientFrame>(frame)) {
        (Err(InvalidChat::Unreadable(_)), Err(_)) => {}
        (_, Err(e)) => panic!("{frame:?}: serde refuses it ({e}) but the verdict is {verdict:?}"),
        (Err(InvalidChat::Unreadable(e)), Ok(read)) => panic!("{frame:?} reads as {read:?} but is unreadable: {e}"),
        (Ok(accepted), Ok(read)) => assert_eq!(accepted, &read),
        (Err(InvalidChat::TextLength), Ok(ChatClientFrame::Message { text, .. })) => {
            assert!(!text_ok(&text), "{frame:?}: text of {} chars refused", text.chars().count());
        }
        (Err(InvalidChat::ClientMsgId), Ok(ChatClientFrame::Message { client_msg_id, text })) => {
            assert!(text_ok(&text) && !id_ok(&client_msg_id), "{frame:?}: refused for its clientMsgId");
        }
        (Err(refused), Ok(read)) => panic!("{frame:?} reads as {read:?} and was refused: {refused:?}"),
    }
    let Ok(accepted) = verdict else { return };

    let tag = match &accepted {
        ChatClientFrame::Message { .. } => "message",
        ChatClientFrame::Typing => "typing",
    };
    assert_eq!(type_tag(frame).as_deref(), Some(tag), "accepted {frame:?} as {accepted:?}");
    let json = serde_json::to_string(&accepted).expect("a frame serialises");
    assert_eq!(parse_chat_frame(&json).as_ref(), Ok(&accepted), "{frame:?} -> {json}");

    if let ChatClientFrame::Message { client_msg_id, text } = accepted {
        assert!(text_ok(&text) && id_ok(&client_msg_id), "accepted {frame:?}");
        let delivered = ChatServerFrame::Message(ChatMessage {
            id: format!("{NOW_MS}-0"),
            from: ChatRole::Rider,
            text,
            ts: NOW_MS,
            client_msg_id,
        });
        let json = delivered.to_json();
        let back: ChatServerFrame =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json} does not parse back: {e}"));
        assert_eq!(back, delivered, "{json}");
    }
});
