//! Where a ride's chat lives: [`EmbeddedChat`](embedded::EmbeddedChat) (in memory, for the
//! process's life) or [`RedisChat`](redis::RedisChat) (a Redis Stream per ride, one total order
//! for every instance). Both store a
//! message before anyone is told of it, store a retried `clientMsgId` once, and keep at most
//! `max_len` messages per ride.

pub mod embedded;
pub mod redis;

use std::fmt::Debug;

use async_trait::async_trait;
use ridecast_protocol::{
    Id,
    chat::{ChatMessage, ChatRole, MessageId},
};

use crate::bus::BackendError;

/// A message as `append` left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub message: ChatMessage,
    /// `false` when the `clientMsgId` was stored before: this is that earlier message.
    pub new: bool,
}

/// A ride's chat history, shared by its participants on every instance.
#[async_trait]
pub trait ChatStore: Send + Sync + Debug + 'static {
    /// Stores a message (once per sender and `clientMsgId`) and returns it with its id.
    async fn append(
        &self,
        ride: &Id,
        from: ChatRole,
        client_msg_id: &str,
        text: &str,
        now_ms: u64,
    ) -> Result<Appended, BackendError>;

    /// Up to `limit` messages after `after` (all from the start without it), oldest first.
    async fn history(
        &self,
        ride: &Id,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, BackendError>;
}

/// `<side>:<clientMsgId>`; the Redis script builds the same key from an entry's fields.
pub(super) fn dedupe_key(from: ChatRole, client_msg_id: &str) -> String {
    format!("{}:{client_msg_id}", from.as_str())
}
