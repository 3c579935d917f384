//! One process's chat: each ride's messages in memory, kept `--chat-ttl-secs` after the ride's
//! last message (a sweeper task drops expired rides; until it runs, they read as empty).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use ridecast_protocol::{
    Id,
    chat::{ChatMessage, ChatRole, MessageId},
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Appended, ChatStore, dedupe_key};
use crate::{base::shutdown, bus::BackendError};

#[derive(Debug)]
struct RideChat {
    messages: std::collections::VecDeque<(MessageId, ChatMessage)>,
    by_client: HashMap<String, MessageId>,
    /// `ttl` after the last message.
    expires_at: Instant,
}

impl RideChat {
    fn new(now: Instant) -> Self {
        Self { messages: Default::default(), by_client: HashMap::new(), expires_at: now }
    }
}

/// Chat in this process's memory.
#[derive(Debug, Clone)]
pub struct EmbeddedChat {
    rides: Arc<Mutex<HashMap<Id, RideChat>>>,
    max_len: usize,
    ttl: Duration,
}

impl EmbeddedChat {
    /// At most `max_len` messages per ride, each ride's chat kept `ttl` after its last message,
    /// with a sweeper task (stopped by `shutdown`) so that chats long over do not hold memory.
    pub fn new(max_len: usize, ttl: Duration, shutdown: CancellationToken) -> Self {
        let store = Self { rides: Arc::default(), max_len: max_len.max(1), ttl };
        let sweeper = store.clone();
        shutdown::sweep_until(ttl, shutdown, move || sweeper.sweep());
        store
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.rides().retain(|_, chat| chat.expires_at > now);
    }

    fn rides(&self) -> MutexGuard<'_, HashMap<Id, RideChat>> {
        // One short operation per lock; see `Hubs::lock` on poisoning.
        self.rides.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ChatStore for EmbeddedChat {
    async fn append(
        &self,
        ride: &Id,
        from: ChatRole,
        client_msg_id: &str,
        text: &str,
        now_ms: u64,
    ) -> Result<Appended, BackendError> {
        let now = Instant::now();
        let mut rides = self.rides();
        let chat = rides.entry(ride.clone()).or_insert_with(|| RideChat::new(now));
        if chat.expires_at <= now {
            // Expired, not yet swept: it starts again, as in Redis.
            *chat = RideChat::new(now);
        }
        let key = dedupe_key(from, client_msg_id);
        if let Some(id) = chat.by_client.get(&key)
            && let Some((_, earlier)) = chat.messages.iter().find(|(m, _)| m == id)
        {
            return Ok(Appended { message: earlier.clone(), new: false });
        }
        // The newest message is never trimmed (at least one is kept), so it is the last id.
        let id = MessageId::next_after(chat.messages.back().map(|(id, _)| *id), now_ms);
        let message = ChatMessage {
            id: id.to_string(),
            from,
            text: text.to_owned(),
            ts: now_ms,
            client_msg_id: client_msg_id.to_owned(),
        };
        chat.messages.push_back((id, message.clone()));
        chat.by_client.insert(key, id);
        chat.expires_at = now + self.ttl;
        while chat.messages.len() > self.max_len {
            if let Some((_, old)) = chat.messages.pop_front() {
                chat.by_client.remove(&dedupe_key(old.from, &old.client_msg_id));
            }
        }
        Ok(Appended { message, new: true })
    }

    async fn history(
        &self,
        ride: &Id,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, BackendError> {
        let rides = self.rides();
        let Some(chat) = rides.get(ride).filter(|chat| chat.expires_at > Instant::now()) else {
            return Ok(Vec::new());
        };
        Ok(chat
            .messages
            .iter()
            .filter(|(id, _)| after.is_none_or(|after| *id > after))
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn ride() -> Id {
        Id::parse("r-ttl").expect("id")
    }

    async fn said(chat: &EmbeddedChat) -> usize {
        chat.history(&ride(), None, 100).await.expect("history").len()
    }

    #[tokio::test(start_paused = true)]
    async fn a_chat_expires_ttl_after_its_last_message_and_the_sweeper_frees_it() {
        let shutdown = CancellationToken::new();
        let chat = EmbeddedChat::new(10, TTL, shutdown.clone());
        chat.append(&ride(), ChatRole::Rider, "m-1", "hello", 1).await.expect("append");
        tokio::time::advance(TTL / 2).await;
        chat.append(&ride(), ChatRole::Driver, "m-2", "hi", 2).await.expect("append");
        tokio::time::advance(TTL / 2 + Duration::from_secs(1)).await;
        assert_eq!(said(&chat).await, 2, "a message keeps the whole chat another ttl");

        tokio::time::advance(TTL).await;
        assert_eq!(said(&chat).await, 0, "expired ttl after the last message");
        // Past the sweep period: the sweeper has run and dropped the ride.
        tokio::time::advance(Duration::from_secs(31)).await;
        tokio::task::yield_now().await;
        assert!(chat.rides().is_empty(), "the sweeper frees an expired chat's memory");

        let again = chat.append(&ride(), ChatRole::Rider, "m-1", "back", 3).await.expect("append");
        assert!(again.new, "after expiry a clientMsgId is new again: nothing of the old chat is left");
        shutdown.cancel();
    }
}
