//! One process's chat: each ride's messages in memory, for the process's life.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use ridecast_protocol::{
    Id,
    chat::{ChatMessage, ChatRole, MessageId},
};

use super::{Appended, ChatStore, dedupe_key};
use crate::bus::BackendError;

#[derive(Debug, Default)]
struct RideChat {
    messages: std::collections::VecDeque<(MessageId, ChatMessage)>,
    by_client: HashMap<String, MessageId>,
}

/// Chat in this process's memory.
#[derive(Debug, Clone)]
pub struct EmbeddedChat {
    rides: Arc<Mutex<HashMap<Id, RideChat>>>,
    max_len: usize,
}

impl EmbeddedChat {
    pub fn new(max_len: usize) -> Self {
        Self { rides: Arc::default(), max_len: max_len.max(1) }
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
        let mut rides = self.rides();
        let chat = rides.entry(ride.clone()).or_default();
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
        let Some(chat) = rides.get(ride) else { return Ok(Vec::new()) };
        Ok(chat
            .messages
            .iter()
            .filter(|(id, _)| after.is_none_or(|after| *id > after))
            .take(limit)
            .map(|(_, m)| m.clone())
            .collect())
    }
}
