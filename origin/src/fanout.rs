//! Latest-value hubs: "the latest value of a key, pushed to every local subscriber", for every
//! [`Topic`] alike (driver locations, surge zones).
//!
//! One hub per channel that has local subscribers. A hub is a latest-value cell: writing
//! replaces the value, so a subscriber that is busy (a stalled rider) finds only the newest
//! value when it comes back, and nothing ever queues behind it. (A `tokio::sync::watch` has
//! these semantics too, but its eight-way sharded notifier costs ~380 bytes per channel; with
//! about one rider per driver that is memory per rider, so the cell here is a mutex-guarded
//! slot and one `Notify`.) Each value is encoded as an SSE frame once,
//! when it arrives, and the same bytes are shared by every subscriber.
//!
//! The instance's bus subscriptions follow the hubs: the first local subscriber of a channel
//! makes the [`SubscriptionManager`] subscribe, the last one leaving (its [`Subscription`] is
//! dropped) makes it unsubscribe. The manager is one task that applies these changes in order,
//! so a quick leave-then-join can never end with the bus unsubscribed from a channel that has
//! subscribers.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    bus::{Backend, Topic},
    metrics::Metrics,
};

/// One value of a topic, ready to write.
#[derive(Debug)]
pub struct HubValue {
    /// The SSE id: the value's `ts`. Ids only grow.
    pub id: u64,
    /// Position in the hub's sequence of values (1, 2, ...); gaps seen by a subscriber are
    /// values it skipped because a newer one replaced them first.
    pub seq: u64,
    /// The complete SSE event frame.
    pub frame: Bytes,
    /// The value's JSON, as sent on edge links.
    pub json: Bytes,
}

impl HubValue {
    /// Builds the value from its JSON, or `None` if the JSON carries no numeric `ts`.
    pub fn from_json(topic: &Topic, json: &[u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Stamp {
            ts: u64,
        }
        let Stamp { ts } = serde_json::from_slice(json).ok()?;
        let data = std::str::from_utf8(json).ok()?;
        let frame = ridecast_protocol::sse::event(topic.event_name(), &ts.to_string(), data);
        Some(Self { id: ts, seq: 0, frame: Bytes::from(frame), json: Bytes::copy_from_slice(json) })
    }
}

/// The latest value of a hub, shared.
pub type Latest = Option<Arc<HubValue>>;

/// One channel's latest value, shared by its local subscribers.
#[derive(Debug)]
struct HubCell {
    channel: String,
    topic: Topic,
    latest: Mutex<Latest>,
    changed: Notify,
}

impl HubCell {
    fn current(&self) -> Latest {
        self.latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Stores `value` if it is newer than the current one (ids only grow) and wakes every
    /// waiting subscriber.
    fn offer(&self, value: HubValue) {
        {
            let mut latest = self.latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if latest.as_ref().is_some_and(|existing| existing.id >= value.id) {
                return;
            }
            let seq = latest.as_ref().map_or(1, |existing| existing.seq + 1);
            *latest = Some(Arc::new(HubValue { seq, ..value }));
        }
        self.changed.notify_waiters();
    }
}

#[derive(Debug)]
struct Hub {
    cell: Arc<HubCell>,
    subscribers: usize,
}

#[derive(Debug)]
enum Command {
    /// The set of hubs changed for this channel: subscribe or unsubscribe to match.
    Reconcile(String),
    /// The bus may have missed messages (reconnect, lag): reload every hub from the store.
    RefreshAll,
}

/// The registry of local hubs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hubs {
    inner: Arc<HubsInner>,
}

#[derive(Debug)]
struct HubsInner {
    hubs: Mutex<HashMap<String, Hub>>,
    // Unbounded on purpose: commands are sent from `Drop`, which cannot wait, and there is at
    // most one per hub created or removed, so the queue is bounded by connection churn.
    commands: mpsc::UnboundedSender<Command>,
    metrics: Metrics,
}

impl Hubs {
    /// A registry and the receiving end the [`SubscriptionManager`] needs.
    pub fn new(metrics: Metrics) -> (Self, SubscriptionCommands) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let inner = HubsInner { hubs: Mutex::new(HashMap::new()), commands, metrics };
        (Self { inner: Arc::new(inner) }, SubscriptionCommands(receiver))
    }

    /// Joins `topic`'s hub, creating it (and the bus subscription) if this is its first subscriber.
    pub fn subscribe(&self, topic: Topic) -> Subscription {
        let channel = topic.channel();
        let mut hubs = self.lock();
        let cell = match hubs.get_mut(&channel) {
            Some(hub) => {
                hub.subscribers += 1;
                hub.cell.clone()
            }
            None => {
                let cell = Arc::new(HubCell {
                    channel: channel.clone(),
                    topic,
                    latest: Mutex::new(None),
                    changed: Notify::new(),
                });
                hubs.insert(channel.clone(), Hub { cell: cell.clone(), subscribers: 1 });
                Metrics::inc(&self.inner.metrics.values().hubs);
                let _ = self.inner.commands.send(Command::Reconcile(channel));
                cell
            }
        };
        drop(hubs);
        let seen = cell.current().map_or(0, |value| value.seq);
        Subscription { hubs: self.clone(), cell, seen }
    }

    /// Hands a value that arrived on `channel` to its hub, if the instance still has one.
    /// Values not newer than the hub's current one are ignored: ids only grow.
    pub fn deliver(&self, channel: &str, json: &[u8]) {
        let Some(cell) = self.lock().get(channel).map(|hub| hub.cell.clone()) else {
            return;
        };
        let Some(value) = HubValue::from_json(&cell.topic, json) else {
            tracing::warn!(channel, "dropping a bus value without a numeric ts");
            return;
        };
        Metrics::inc(&self.inner.metrics.values().bus_deliveries_total);
        // The device clock stands in for the publish time: exact in benchmarks (one machine),
        // skewed by the phone's clock error in production, where the trend is what matters.
        // Only locations: a surge's ts is set by the server, and the histogram is about drivers.
        if let Topic::DriverLocation(_) = cell.topic {
            let age_ms = crate::clock::now_ms().saturating_sub(value.id);
            self.inner.metrics.delivery_age().observe_micros(age_ms.saturating_mul(1000));
        }
        cell.offer(value);
    }

    /// Asks for every hub to be reloaded from the store (after a bus reconnect).
    pub fn request_refresh_all(&self) {
        let _ = self.inner.commands.send(Command::RefreshAll);
    }

    /// Number of hubs (channels with local subscribers).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn has(&self, channel: &str) -> Option<Topic> {
        self.lock().get(channel).map(|hub| hub.cell.topic.clone())
    }

    fn topics(&self) -> Vec<(String, Topic)> {
        self.lock().iter().map(|(channel, hub)| (channel.clone(), hub.cell.topic.clone())).collect()
    }

    fn leave(&self, channel: &str) {
        let mut hubs = self.lock();
        let Some(hub) = hubs.get_mut(channel) else { return };
        hub.subscribers -= 1;
        if hub.subscribers == 0 {
            hubs.remove(channel);
            Metrics::dec(&self.inner.metrics.values().hubs);
            let _ = self.inner.commands.send(Command::Reconcile(channel.to_owned()));
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Hub>> {
        // A std mutex: critical sections are a map lookup, never held across an await. A
        // poisoned lock only means another thread panicked mid-lookup; the map is still sound.
        self.inner.hubs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A local subscriber's place in a hub. Dropping it leaves the hub.
#[derive(Debug)]
pub struct Subscription {
    hubs: Hubs,
    cell: Arc<HubCell>,
    /// `seq` of the newest value this subscriber has taken.
    seen: u64,
}

impl Subscription {
    /// Waits until the hub holds a value this subscriber has not seen, and returns it.
    ///
    /// Values that were replaced before this subscriber looked are skipped: latest only.
    /// Always `Some` while the subscription lives; `Option` leaves room for hubs that close.
    pub async fn next(&mut self) -> Option<Arc<HubValue>> {
        loop {
            // Register for the wake-up before looking, so that a value stored between the
            // look and the wait still wakes us.
            let notified = self.cell.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = self.cell.current().filter(|value| value.seq > self.seen) {
                self.seen = value.seq;
                return Some(value);
            }
            notified.await;
        }
    }

    /// The value a new subscriber starts from, marking it seen: the newer of the stored value
    /// (which may be newer than the last pushed one: in-cell moves are stored, not pushed) and
    /// the hub's. A store that cannot be read leaves the hub's value, with a warning.
    pub async fn starting_value(&mut self, backend: &dyn Backend) -> Latest {
        let topic = &self.cell.topic;
        let stored = match backend.latest(topic).await {
            Ok(json) => json.and_then(|json| HubValue::from_json(topic, &json)),
            Err(error) => {
                tracing::warn!(%error, channel = %self.cell.channel, "could not read the current value; starting without it");
                None
            }
        };
        match (stored, self.current()) {
            (Some(stored), Some(pushed)) if pushed.id >= stored.id => Some(pushed),
            (Some(stored), _) => Some(Arc::new(stored)),
            (None, pushed) => pushed,
        }
    }

    /// The hub's current value, if any, marking it seen.
    pub fn current(&mut self) -> Latest {
        let value = self.cell.current();
        if let Some(value) = &value {
            self.seen = self.seen.max(value.seq);
        }
        value
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hubs.leave(&self.cell.channel);
    }
}

/// The receiving end of the hubs' subscription commands.
#[derive(Debug)]
pub struct SubscriptionCommands(mpsc::UnboundedReceiver<Command>);

/// Keeps the backend's subscriptions equal to the set of local hubs.
#[derive(Debug)]
pub struct SubscriptionManager {
    hubs: Hubs,
    backend: Arc<dyn Backend>,
    subscribed: HashSet<String>,
}

/// Most channels changed in one SUBSCRIBE or UNSUBSCRIBE command.
const BATCH: usize = 512;
/// Wait before retrying a subscription the backend refused (Redis down).
const RETRY_DELAY: Duration = Duration::from_millis(500);

impl SubscriptionManager {
    pub fn new(hubs: Hubs, backend: Arc<dyn Backend>) -> Self {
        Self { hubs, backend, subscribed: HashSet::new() }
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
                for (channel, topic) in self.hubs.topics() {
                    self.refresh(&channel, &topic).await;
                }
            }
        }
    }

    async fn reconcile(&mut self, channels: HashSet<String>) {
        let mut join = Vec::new();
        let mut leave = Vec::new();
        for channel in channels {
            let wanted = self.hubs.has(&channel);
            let have = self.subscribed.contains(&channel);
            match (wanted, have) {
                (Some(topic), false) => join.push((channel, topic)),
                (None, true) => leave.push(channel),
                _ => {}
            }
        }
        if !leave.is_empty() {
            // Even if the backend failed to unsubscribe, messages on these channels now find no
            // hub and are ignored, so forgetting them is safe.
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
                    for (channel, topic) in join {
                        self.subscribed.insert(channel.clone());
                        // Anything published between a rider's own read of the store and this
                        // subscription taking effect is in the store: load it into the hub.
                        self.refresh(&channel, &topic).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "bus subscribe failed; retrying");
                    let hubs = self.hubs.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(RETRY_DELAY).await;
                        for (channel, _) in join {
                            let _ = hubs.inner.commands.send(Command::Reconcile(channel));
                        }
                    });
                }
            }
        }
    }

    async fn refresh(&self, channel: &str, topic: &Topic) {
        match self.backend.latest(topic).await {
            Ok(Some(json)) => self.hubs.deliver(channel, &json),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, channel, "could not reload a hub from the store"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridecast_protocol::Id;

    fn topic(driver: &str) -> Topic {
        Topic::DriverLocation(Id::parse(driver).expect("id"))
    }

    fn location(ts: u64) -> Vec<u8> {
        format!(r#"{{"driverId":"d1","lat":1.0,"lng":2.0,"ts":{ts}}}"#).into_bytes()
    }

    #[tokio::test]
    async fn a_subscriber_sees_only_the_newest_of_values_it_missed() {
        let (hubs, _commands) = Hubs::new(Metrics::default());
        let mut rider = hubs.subscribe(topic("d1"));
        for ts in 1..=100 {
            hubs.deliver("driver:location:d1", &location(ts));
        }
        let value = rider.next().await.expect("a value");
        assert_eq!(value.id, 100);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), rider.next()).await.is_err(),
            "nothing queued behind it"
        );
    }

    #[tokio::test]
    async fn older_values_never_replace_newer_ones() {
        let (hubs, _commands) = Hubs::new(Metrics::default());
        let mut rider = hubs.subscribe(topic("d1"));
        hubs.deliver("driver:location:d1", &location(5));
        hubs.deliver("driver:location:d1", &location(3));
        assert_eq!(rider.next().await.expect("value").id, 5);
    }

    #[tokio::test]
    async fn the_frame_is_encoded_once_and_shared() {
        let (hubs, _commands) = Hubs::new(Metrics::default());
        let mut a = hubs.subscribe(topic("d1"));
        let mut b = hubs.subscribe(topic("d1"));
        hubs.deliver("driver:location:d1", &location(7));
        let (va, vb) = (a.next().await.expect("a"), b.next().await.expect("b"));
        assert!(Arc::ptr_eq(&va, &vb));
        assert!(va.frame.starts_with(b"event: location\nid: 7\ndata: {"));
    }

    #[tokio::test]
    async fn the_hub_exists_while_it_has_subscribers_and_commands_follow() {
        let (hubs, SubscriptionCommands(mut commands)) = Hubs::new(Metrics::default());
        let a = hubs.subscribe(topic("d1"));
        let b = hubs.subscribe(topic("d1"));
        assert!(matches!(commands.try_recv(), Ok(Command::Reconcile(c)) if c == "driver:location:d1"));
        assert!(commands.try_recv().is_err(), "the second subscriber shares the first's subscription");
        drop(a);
        assert_eq!(hubs.len(), 1);
        drop(b);
        assert!(hubs.is_empty());
        assert!(matches!(commands.try_recv(), Ok(Command::Reconcile(_))));
    }

    #[tokio::test]
    async fn values_for_channels_without_hubs_are_ignored() {
        let (hubs, _commands) = Hubs::new(Metrics::default());
        hubs.deliver("driver:location:nobody", &location(1));
        assert!(hubs.is_empty());
    }
}
