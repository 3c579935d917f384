//! The instance's bus subscriptions, and where what arrives on them goes.
//!
//! Two kinds of local interest in a bus channel: a latest-value hub ([`Hubs`], driver
//! locations, surge zones, ride statuses) and a chat room ([`ChatRooms`], a ride's chat
//! participants on this instance). [`Inbound`] routes each arriving message to the one that wants
//! it, by channel name. Either registry asks for a channel when its first local subscriber comes
//! and lets it go when its last one leaves, through [`SubscriptionRequests`]; the
//! [`SubscriptionManager`] is one task that applies these requests in order, so a quick
//! leave-then-join can never end with the bus unsubscribed from a channel that is wanted, and
//! each instance subscribes once per channel however many local subscribers it has.
//!
//! Pub/sub can lose messages (a reconnect, a lagging reader). Both registries recover from the
//! store: after a channel is subscribed and after every bus reconnect, hubs reload their key's
//! latest value and chat rooms have their participants read the ride's history again.

use std::{collections::HashSet, sync::Arc, time::Duration};

use ridecast_protocol::channels;
use tokio_util::sync::CancellationToken;

use super::{
    chat_rooms::ChatRooms,
    hubs::Hubs,
    requests::{self, Command, SubscriptionCommands, SubscriptionRequests},
    snapshots::Snapshots,
};
use crate::{
    base::metrics::Metrics,
    bus::{Backend, Deliveries, Topic},
};

/// Which local registry wants a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Interest {
    Hub(Topic),
    ChatRoom,
}

/// What this instance does with bus messages: hands them to the hub or chat room of their
/// channel. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub hubs: Hubs,
    pub chat: ChatRooms,
    requests: SubscriptionRequests,
}

impl Inbound {
    /// Empty registries and the receiving end of their requests, for a [`SubscriptionManager`].
    pub fn new(metrics: Metrics) -> (Self, SubscriptionCommands) {
        let (requests, commands) = requests::channel();
        let hubs = Hubs::new(metrics, requests.clone());
        let chat = ChatRooms::new(requests.clone());
        (Self { hubs, chat, requests }, commands)
    }

    /// Hands a message that arrived on `channel` to whoever wants it here; ignored otherwise.
    pub fn deliver(&self, channel: &str, payload: &[u8]) {
        match channels::chat_ride_of(channel) {
            Some(ride) => self.chat.deliver(ride, payload),
            None => self.hubs.deliver(channel, payload),
        }
    }

    /// Asks for every channel to be recovered from the store (after a bus reconnect or lag).
    pub fn request_refresh_all(&self) {
        self.requests.refresh_all();
    }

    fn interest(&self, channel: &str) -> Option<Interest> {
        match channels::chat_ride_of(channel) {
            Some(ride) => self.chat.has(ride).then_some(Interest::ChatRoom),
            None => self.hubs.topic_of(channel).map(Interest::Hub),
        }
    }
}

impl Deliveries for Inbound {
    fn deliver(&self, channel: &str, payload: &[u8]) {
        Inbound::deliver(self, channel, payload);
    }

    fn missed_messages(&self) {
        self.request_refresh_all();
    }
}

/// Keeps the backend's subscriptions equal to the set of local hubs and chat rooms.
#[derive(Debug)]
pub struct SubscriptionManager {
    inbound: Inbound,
    backend: Arc<dyn Backend>,
    snapshots: Snapshots,
    subscribed: HashSet<String>,
}

/// Most channels changed in one SUBSCRIBE or UNSUBSCRIBE command.
const BATCH: usize = 512;
/// Wait before retrying a subscription the backend refused (Redis down).
const RETRY_DELAY: Duration = Duration::from_millis(500);

impl SubscriptionManager {
    /// Subscribes through `backend`; recovers hubs from `snapshots`.
    pub fn new(inbound: Inbound, backend: Arc<dyn Backend>, snapshots: Snapshots) -> Self {
        Self { inbound, backend, snapshots, subscribed: HashSet::new() }
    }

    /// Applies commands until `shutdown` fires.
    pub async fn run(mut self, SubscriptionCommands(mut commands): SubscriptionCommands, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                n = commands.recv_many(&mut batch, BATCH) => n,
            };
            if received == 0 {
                return;
            }
            let mut refresh_all = false;
            let mut channels = HashSet::new();
            for command in batch.drain(..) {
                match command {
                    Command::Reconcile(channel) => {
                        channels.insert(channel);
                    }
                    Command::RefreshAll => refresh_all = true,
                }
            }
            self.reconcile(channels).await;
            if refresh_all {
                for (channel, topic) in self.inbound.hubs.topics() {
                    self.refresh(&channel, &Interest::Hub(topic)).await;
                }
                self.inbound.chat.wake_all();
            }
        }
    }

    async fn reconcile(&mut self, channels: HashSet<String>) {
        let mut join = Vec::new();
        let mut leave = Vec::new();
        for channel in channels {
            let wanted = self.inbound.interest(&channel);
            let have = self.subscribed.contains(&channel);
            match (wanted, have) {
                (Some(interest), false) => join.push((channel, interest)),
                (None, true) => leave.push(channel),
                _ => {}
            }
        }
        if !leave.is_empty() {
            // Even if the backend failed to unsubscribe, messages on these channels now find no
            // hub or room and are ignored, so forgetting them is safe.
            if let Err(error) = self.backend.unsubscribe(leave.clone()).await {
                tracing::warn!(%error, "bus unsubscribe failed");
            }
            for channel in &leave {
                self.subscribed.remove(channel);
            }
        }
        if !join.is_empty() {
            let names: Vec<String> = join.iter().map(|(channel, _)| channel.clone()).collect();
            match self.backend.subscribe(names).await {
                Ok(()) => {
                    for (channel, interest) in join {
                        self.subscribed.insert(channel.clone());
                        // Anything published between a subscriber's own read of the store and
                        // this subscription taking effect is in the store: recover it.
                        self.refresh(&channel, &interest).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "bus subscribe failed; retrying");
                    let requests = self.inbound.requests.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(RETRY_DELAY).await;
                        for (channel, _) in join {
                            requests.reconcile(channel);
                        }
                    });
                }
            }
        }
    }

    async fn refresh(&self, channel: &str, interest: &Interest) {
        match interest {
            Interest::Hub(topic) => match self.snapshots.latest(topic).await {
                Ok(Some(json)) => self.inbound.hubs.deliver(channel, &json),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, channel, "could not reload a hub from the store"),
            },
            Interest::ChatRoom => {
                if let Some(ride) = channels::chat_ride_of(channel) {
                    self.inbound.chat.wake(ride);
                }
            }
        }
    }
}
