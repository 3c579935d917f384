//! Ride chat (`GET /ws/chat/{rideId}`): the ride's rider and its assigned driver, wherever
//! each is connected.
//!
//! Contract: PROTOCOL.md, "Chat WebSocket". How a message travels:
//!
//! 1. [`api::chat`](crate::api::chat) reads a participant's frame, checks it and the sender's allowance.
//! 2. [`Chat::post`] stores it in the ride's [`store`] (a Redis Stream, or memory when embedded),
//!    which gives it its id in the ride's one total order and stores a retried `clientMsgId`
//!    once, then publishes a notice on the ride's chat channel through the [`bus`](crate::bus).
//! 3. Every instance with participants of the ride has a room ([`fanout::chat_rooms`](crate::fanout::chat_rooms)) subscribed to that
//!    channel; the notice wakes its sessions, and each reads the store after the last message
//!    it sent. The sender's own session does the same at once: the echo is its acknowledgement.
//!
//! Because sessions deliver from the store, never from the notice, nothing is acknowledged
//! before it is stored, and a lost notice, a reconnect (`?since=<id>`) or an instance dying
//! loses nothing and repeats nothing.

pub mod store;

use std::{sync::Arc, time::Duration};

use ridecast_protocol::{
    Id, channels,
    chat::{ChatMessage, ChatRole, MessageId},
};
use tokio::time::Instant;

use self::store::{Appended, ChatStore};
use crate::{
    base::{clock, metrics::Metrics},
    bus::{Backend, BackendError},
    fanout::chat_rooms::{ChatRooms, Notice, Seat},
    limits::{allowance::RateLimit, principal_allowances::PrincipalAllowances},
};

/// A ride chat's limits and retention.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChatConfig {
    /// Each side's message rate.
    pub rate: RateLimit,
    /// Most messages kept per ride.
    pub history_max: usize,
    /// How long a ride's chat is kept after its last message (either store).
    pub ttl: Duration,
}

/// The chat of every ride, as this instance serves it.
#[derive(Debug)]
pub struct Chat {
    store: Arc<dyn ChatStore>,
    rooms: ChatRooms,
    backend: Arc<dyn Backend>,
    config: ChatConfig,
    /// Each side of each ride's message allowance on this instance, kept across reconnects.
    allowances: PrincipalAllowances,
    metrics: Metrics,
}

impl Chat {
    pub fn new(
        store: Arc<dyn ChatStore>,
        rooms: ChatRooms,
        backend: Arc<dyn Backend>,
        config: ChatConfig,
        metrics: Metrics,
    ) -> Self {
        let allowances = PrincipalAllowances::new(config.rate);
        Self { store, rooms, backend, config, allowances, metrics }
    }

    /// A seat in `ride`'s room: wakes on its notices.
    pub fn join(&self, ride: &Id) -> Seat {
        self.rooms.join(ride)
    }

    /// Each side's message rate.
    pub fn rate(&self) -> RateLimit {
        self.config.rate
    }

    /// Whether `from` may send another message in `ride` now (its allowance on this instance,
    /// which a reconnect does not refill).
    pub fn allow_message(&self, ride: &Id, from: ChatRole) -> bool {
        let allowed = self.allowances.take(&(ride, from), Instant::now()).is_ok();
        if !allowed {
            Metrics::inc(&self.metrics.values().chat_refused_total);
        }
        allowed
    }

    /// Stores a message (once per sender and `clientMsgId`) and tells every instance. A notice
    /// that cannot be published is only logged: the message is stored, and participants read
    /// the store on their next wake-up or ping.
    ///
    /// # Errors
    /// [`BackendError`] when the message could not be stored (nothing was).
    pub async fn post(
        &self,
        ride: &Id,
        from: ChatRole,
        client_msg_id: &str,
        text: &str,
    ) -> Result<Appended, BackendError> {
        let appended = self.store.append(ride, from, client_msg_id, text, clock::now_ms()).await?;
        if appended.new {
            Metrics::inc(&self.metrics.values().chat_messages_total);
            let notice = Notice::Stored { id: appended.message.id.clone() };
            if let Err(error) = self.backend.publish(&channels::chat_ride(ride), notice.to_bytes()).await {
                tracing::warn!(ride.id = %ride, %error, "chat notice not published; participants catch up on ping");
            }
        }
        Ok(appended)
    }

    /// Tells the ride's other participants that `from` is typing (best effort).
    pub async fn typing(&self, ride: &Id, from: ChatRole) {
        let notice = Notice::Typing { from };
        if let Err(error) = self.backend.publish(&channels::chat_ride(ride), notice.to_bytes()).await {
            tracing::debug!(ride.id = %ride, %error, "typing notice not published");
        }
    }

    /// Up to `limit` messages of `ride` after `after`, oldest first.
    ///
    /// # Errors
    /// [`BackendError`] when the store cannot be read.
    pub async fn history(
        &self,
        ride: &Id,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, BackendError> {
        self.store.history(ride, after, limit).await
    }
}
