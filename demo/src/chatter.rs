//! A simulated driver's side of its ride's chat, without I/O: the greeting, and a short canned
//! reply to every rider message, typed for a moment first.
//!
//! Every frame it sends carries a `clientMsgId` derived from what it answers, so that sending
//! it again after a reconnect is stored once (the chat's retry rule), and it resumes after the
//! last message it saw (`?since=`), so that nothing is answered twice.

use std::time::Duration;

use ridecast_protocol::{
    Id,
    chat::{ChatClientFrame, ChatRole, ChatServerFrame},
};
use tokio::time::Instant;

use ridecast_rng::Rng;

/// The first thing the driver says.
pub const GREETING: &str = "On my way!";
/// How long the driver "types" before a reply goes out.
const TYPING_S: (f64, f64) = (0.5, 1.0);

/// The chat of one ride, as its simulated driver holds it.
#[derive(Debug)]
pub struct Chatter {
    ride: Id,
    rng: Rng,
    /// The id of the newest message seen: a reconnect resumes after it.
    last_seen: Option<String>,
    /// Replies waiting for their moment, soonest first.
    replies: Vec<(Instant, ChatClientFrame)>,
}

impl Chatter {
    pub fn new(ride: Id, rng: Rng) -> Self {
        Self { ride, rng, last_seen: None, replies: Vec::new() }
    }

    pub fn ride(&self) -> &Id {
        &self.ride
    }

    /// Where a (re)connect resumes: after the newest message seen.
    pub fn since(&self) -> Option<&str> {
        self.last_seen.as_deref()
    }

    /// What to send as the chat opens: the greeting, under one `clientMsgId` per ride, so that
    /// sending it on every reconnect stores it once.
    pub fn greeting(&self) -> ChatClientFrame {
        ChatClientFrame::Message { client_msg_id: format!("hi-{}", self.ride), text: GREETING.to_owned() }
    }

    /// A frame from the server; returns what to send at once (the typing notice before a reply).
    pub fn received(&mut self, frame: ChatServerFrame, now: Instant) -> Option<ChatClientFrame> {
        let ChatServerFrame::Message(message) = frame else { return None };
        self.last_seen = Some(message.id.clone());
        if message.from != ChatRole::Rider {
            return None;
        }
        let text = reply_to(&message.text, &mut self.rng).to_owned();
        let at = now + Duration::from_secs_f64(self.rng.between(TYPING_S.0, TYPING_S.1));
        let reply = ChatClientFrame::Message { client_msg_id: format!("re-{}", message.id), text };
        let place = self.replies.partition_point(|(due, _)| *due <= at);
        self.replies.insert(place, (at, reply));
        Some(ChatClientFrame::Typing)
    }

    /// The replies whose moment has come.
    pub fn due(&mut self, now: Instant) -> Vec<ChatClientFrame> {
        let ready = self.replies.partition_point(|(due, _)| *due <= now);
        self.replies.drain(..ready).map(|(_, reply)| reply).collect()
    }

    /// When the next reply is due, if one waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.replies.first().map(|(due, _)| *due)
    }
}

/// A short answer that fits `text` well enough for a demo.
fn reply_to(text: &str, rng: &mut Rng) -> &'static str {
    let text = text.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|word| text.contains(word));
    if has(&["thank", "thx"]) {
        "You're welcome!"
    } else if has(&["where", "eta", "how long", "far"]) {
        rng.pick(&["A few blocks away, you can see me on the map.", "About two minutes away.", "Almost there!"])
    } else if has(&["hurry", "late", "quick"]) {
        "Driving as fast as the streets allow!"
    } else if text.contains('?') {
        rng.pick(&["Sure!", "Yes, no problem.", "Of course."])
    } else {
        rng.pick(&["OK, see you soon.", "Got it.", "Sounds good.", "On it!"])
    }
}

#[cfg(test)]
mod tests {
    use ridecast_protocol::chat::ChatMessage;

    use super::*;

    fn message(id: &str, from: ChatRole, text: &str) -> ChatServerFrame {
        ChatServerFrame::Message(ChatMessage {
            id: id.into(),
            from,
            text: text.into(),
            ts: 1,
            client_msg_id: format!("c-{id}"),
        })
    }

    #[test]
    fn every_rider_message_gets_typing_then_one_reply_within_a_second() {
        let start = Instant::now();
        let mut chatter = Chatter::new(Id::parse("ride-1").expect("id"), Rng::new(4));
        let greeting = chatter.greeting();
        assert_eq!(greeting, chatter.greeting(), "the same clientMsgId on every connect");
        assert!(chatter.received(message("1-0", ChatRole::Driver, GREETING), start).is_none(), "its own echo");
        assert_eq!(
            chatter.received(message("2-0", ChatRole::Rider, "Where are you?"), start),
            Some(ChatClientFrame::Typing)
        );
        assert_eq!(chatter.received(message("2-1", ChatRole::Rider, "thanks"), start), Some(ChatClientFrame::Typing));
        assert_eq!(chatter.since(), Some("2-1"));
        assert!(chatter.due(start).is_empty(), "typing first");
        let due = chatter.next_due().expect("replies wait");
        assert!(due <= start + Duration::from_secs(1));
        let replies = chatter.due(start + Duration::from_secs(1));
        let ids: Vec<&str> = replies
            .iter()
            .map(|reply| match reply {
                ChatClientFrame::Message { client_msg_id, .. } => client_msg_id.as_str(),
                ChatClientFrame::Typing => panic!("a reply is a message"),
            })
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, ["re-2-0", "re-2-1"]);
        assert!(chatter.next_due().is_none());
        for reply in &replies {
            let json = serde_json::to_string(reply).expect("a frame");
            ridecast_protocol::chat::parse_chat_frame(&json).expect("a valid chat frame");
        }
    }
}
