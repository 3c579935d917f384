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
//! asks the [`SubscriptionManager`](crate::fanout::subscriptions::SubscriptionManager) to subscribe, the
//! last one leaving (its [`Subscription`] is dropped) lets it unsubscribe.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::{
    base::metrics::Metrics,
    bus::Topic,
    fanout::{requests::SubscriptionRequests, snapshots::Snapshots},
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

/// The registry of local hubs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hubs {
    inner: Arc<HubsInner>,
}

#[derive(Debug)]
struct HubsInner {
    hubs: Mutex<HashMap<String, Hub>>,
    requests: SubscriptionRequests,
    metrics: Metrics,
}

impl Hubs {
    /// An empty registry whose hubs ask `requests` for their bus subscriptions.
    pub fn new(metrics: Metrics, requests: SubscriptionRequests) -> Self {
        Self { inner: Arc::new(HubsInner { hubs: Mutex::new(HashMap::new()), requests, metrics }) }
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
                self.inner.requests.reconcile(channel);
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
            let age_ms = crate::base::clock::now_ms().saturating_sub(value.id);
            self.inner.metrics.delivery_age().observe_micros(age_ms.saturating_mul(1000));
        }
        cell.offer(value);
    }

    /// Number of hubs (channels with local subscribers).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The topic of `channel`'s hub, if the instance has one.
    pub(crate) fn topic_of(&self, channel: &str) -> Option<Topic> {
        self.lock().get(channel).map(|hub| hub.cell.topic.clone())
    }

    /// Every hub's channel and topic.
    pub(crate) fn topics(&self) -> Vec<(String, Topic)> {
        self.lock().iter().map(|(channel, hub)| (channel.clone(), hub.cell.topic.clone())).collect()
    }

    fn leave(&self, channel: &str) {
        let mut hubs = self.lock();
        let Some(hub) = hubs.get_mut(channel) else { return };
        hub.subscribers -= 1;
        if hub.subscribers == 0 {
            hubs.remove(channel);
            Metrics::dec(&self.inner.metrics.values().hubs);
            self.inner.requests.reconcile(channel.to_owned());
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
    pub async fn starting_value(&mut self, snapshots: &Snapshots) -> Latest {
        let topic = &self.cell.topic;
        let stored = match snapshots.latest(topic).await {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ridecast_protocol::Id;

    use super::*;
    use crate::fanout::requests::{self, Command, SubscriptionCommands};

    fn topic(driver: &str) -> Topic {
        Topic::DriverLocation(Id::parse(driver).expect("id"))
    }

    fn location(ts: u64) -> Vec<u8> {
        format!(r#"{{"driverId":"d1","lat":1.0,"lng":2.0,"ts":{ts}}}"#).into_bytes()
    }

    #[tokio::test]
    async fn a_subscriber_sees_only_the_newest_of_values_it_missed() {
        let hubs = Hubs::new(Metrics::default(), requests::channel().0);
        let mut rider = hubs.subscribe(topic("d1"));
        for ts in 1..=100 {
            hubs.deliver("driver:location:{d1}", &location(ts));
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
        let hubs = Hubs::new(Metrics::default(), requests::channel().0);
        let mut rider = hubs.subscribe(topic("d1"));
        hubs.deliver("driver:location:{d1}", &location(5));
        hubs.deliver("driver:location:{d1}", &location(3));
        assert_eq!(rider.next().await.expect("value").id, 5);
    }

    #[tokio::test]
    async fn the_frame_is_encoded_once_and_shared() {
        let hubs = Hubs::new(Metrics::default(), requests::channel().0);
        let mut a = hubs.subscribe(topic("d1"));
        let mut b = hubs.subscribe(topic("d1"));
        hubs.deliver("driver:location:{d1}", &location(7));
        let (va, vb) = (a.next().await.expect("a"), b.next().await.expect("b"));
        assert!(Arc::ptr_eq(&va, &vb));
        assert!(va.frame.starts_with(b"event: location\nid: 7\ndata: {"));
    }

    #[tokio::test]
    async fn the_hub_exists_while_it_has_subscribers_and_commands_follow() {
        let (requests, SubscriptionCommands(mut commands)) = requests::channel();
        let hubs = Hubs::new(Metrics::default(), requests);
        let a = hubs.subscribe(topic("d1"));
        let b = hubs.subscribe(topic("d1"));
        assert!(matches!(commands.try_recv(), Ok(Command::Reconcile(c)) if c == "driver:location:{d1}"));
        assert!(commands.try_recv().is_err(), "the second subscriber shares the first's subscription");
        drop(a);
        assert_eq!(hubs.len(), 1);
        drop(b);
        assert!(hubs.is_empty());
        assert!(matches!(commands.try_recv(), Ok(Command::Reconcile(_))));
    }

    #[tokio::test]
    async fn values_for_channels_without_hubs_are_ignored() {
        let hubs = Hubs::new(Metrics::default(), requests::channel().0);
        hubs.deliver("driver:location:{nobody}", &location(1));
        assert!(hubs.is_empty());
    }
}
