//! Publishing and subscribing, on one Redis or on a Redis Cluster.
//!
//! On one Redis, classic `PUBLISH`/`SUBSCRIBE`. On a cluster, a classic `PUBLISH` is broadcast
//! over the cluster bus to every node, so each message costs work on every shard and adding
//! shards adds no Pub/Sub capacity. Sharded Pub/Sub (`SPUBLISH`/`SSUBSCRIBE`, Redis 7) sends a
//! channel's messages only to the shard that owns its slot; every channel carries the hash tag
//! of the key it belongs to ([`ridecast_protocol::channels`]), so a script that stores a value
//! and publishes it runs on that one shard.
//!
//! Keeping shard subscriptions alive is the [`Subscriber`]'s job. Redis drops a shard channel's
//! subscribers when its slot moves to another node (a failover, a resharding) and tells them
//! with an unsolicited `SUNSUBSCRIBE`, which the client library drops. So the subscriber polls
//! the slot map itself, and after a change or a reconnect subscribes every kept channel again
//! (on the slots' new owners), retrying until that succeeds; then it tells its owner, which
//! recovers from the store what was published meanwhile.

use std::{collections::BTreeMap, time::Duration};

use fred::{
    clients::SubscriberClient,
    interfaces::ClusterInterface,
    prelude::{Client, ClientLike, Config as RedisConfig, EventInterface, PubsubInterface},
    types::{Builder, Message, Value, config::Server, scripts::Script},
};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::BackendError;

/// How often a sharded subscriber compares the cluster's slot map with the one it subscribed on.
const SLOT_MAP_CHECK: Duration = Duration::from_secs(1);
/// First and longest wait between attempts to subscribe everything again.
const RESUBSCRIBE_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// Which Pub/Sub a deployment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSub {
    /// `PUBLISH`/`SUBSCRIBE`: one Redis.
    Classic,
    /// `SPUBLISH`/`SSUBSCRIBE`: a Redis Cluster, each channel on its slot's shard.
    Sharded,
}

impl PubSub {
    /// Sharded on a cluster, classic otherwise.
    pub fn of(config: &RedisConfig) -> Self {
        if config.server.is_clustered() { Self::Sharded } else { Self::Classic }
    }

    /// The command that publishes.
    pub fn command(self) -> &'static str {
        match self {
            Self::Classic => "PUBLISH",
            Self::Sharded => "SPUBLISH",
        }
    }

    /// A Lua script whose `publish_command` is [`PubSub::command`]: scripts publish with
    /// `redis.call(publish_command, channel, message)`, and the channel must share the hash tag
    /// of the script's keys.
    pub fn script(self, lua: &str) -> Script {
        Script::from_lua(format!("local publish_command = '{}'\n{lua}", self.command()))
    }

    /// Publishes `payload` on `channel`; returns how many subscribers received it.
    ///
    /// # Errors
    /// [`BackendError::Redis`] if Redis fails.
    pub async fn publish(
        self,
        client: &Client,
        channel: &str,
        payload: impl Into<Value> + Send,
    ) -> Result<i64, BackendError> {
        Ok(match self {
            Self::Classic => client.publish(channel, payload).await?,
            Self::Sharded => client.spublish(channel, payload).await?,
        })
    }
}

/// A subscriber connection (one per primary on a cluster) that keeps its channels subscribed
/// across reconnects and slot moves. Cheap to clone.
///
/// What it restores is what the client library tracks: every channel whose subscribe
/// succeeded and that was not unsubscribed since. A subscribe that failed is the caller's to
/// retry ([`Subscriber::subscribe_until_done`]).
#[derive(Clone)]
pub struct Subscriber {
    client: SubscriberClient,
    pubsub: PubSub,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("pubsub", &self.pubsub).finish_non_exhaustive()
    }
}

impl Subscriber {
    /// A subscriber configured by `builder`, not connected yet.
    ///
    /// # Errors
    /// [`BackendError::Redis`] if the configuration is invalid.
    pub fn build(builder: &Builder) -> Result<Self, BackendError> {
        let config = builder.get_config().ok_or_else(|| BackendError::InvalidUrl("a client without a URL".into()))?;
        Ok(Self { client: builder.build_subscriber_client()?, pubsub: PubSub::of(config) })
    }

    /// Starts connecting (and reconnecting, until it quits or `shutdown`).
    pub fn connect(&self, shutdown: CancellationToken) {
        super::connection::keep_connecting(&self.client, shutdown);
    }

    /// Waits until connected.
    pub async fn wait_for_connect(&self) {
        let _ = self.client.wait_for_connect().await;
    }

    /// Whether every connection is up.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Messages on every subscribed channel.
    pub fn messages(&self) -> broadcast::Receiver<Message> {
        self.client.message_rx()
    }

    /// Unsubscribes `channels`.
    ///
    /// # Errors
    /// [`BackendError::Redis`] if Redis refused or is unreachable.
    pub async fn unsubscribe(&self, channels: Vec<String>) -> Result<(), BackendError> {
        match self.pubsub {
            PubSub::Classic => Ok(self.client.unsubscribe(channels).await?),
            PubSub::Sharded => {
                for group in by_slot(channels).into_values() {
                    self.client.sunsubscribe(group).await?;
                }
                Ok(())
            }
        }
    }

    /// Subscribes `channels`; kept subscribed from then on (see [`Subscriber::keep_subscribed`]).
    ///
    /// # Errors
    /// [`BackendError::Redis`] if Redis refused or is unreachable: those not subscribed are not
    /// kept either.
    pub async fn subscribe(&self, channels: Vec<String>) -> Result<(), BackendError> {
        if channels.is_empty() {
            return Ok(());
        }
        match self.pubsub {
            PubSub::Classic => Ok(self.client.subscribe(channels).await?),
            // One `SSUBSCRIBE` per slot: Redis refuses channels of different slots in one.
            PubSub::Sharded => {
                for group in by_slot(channels).into_values() {
                    self.client.ssubscribe(group).await?;
                }
                Ok(())
            }
        }
    }

    /// Subscribes `channels`, trying again with backoff until that succeeds (or `shutdown`).
    pub async fn subscribe_until_done(&self, channels: Vec<String>, shutdown: &CancellationToken) {
        let (mut backoff, longest) = RESUBSCRIBE_BACKOFF;
        loop {
            match self.subscribe(channels.clone()).await {
                Ok(()) => return,
                Err(error) => tracing::warn!(%error, ?backoff, "subscribing failed; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(longest);
            if self.pubsub == PubSub::Sharded {
                // A failed node may have been replaced meanwhile: route by the current map.
                let _ = self.client.sync_cluster().await;
            }
        }
    }

    /// The channels the client library keeps: every one subscribed and not unsubscribed since.
    fn kept(&self) -> Vec<String> {
        let kept = match self.pubsub {
            PubSub::Classic => self.client.tracked_channels(),
            PubSub::Sharded => self.client.tracked_shard_channels(),
        };
        kept.iter().map(|channel| channel.to_string()).collect()
    }

    /// Spawns the task that, after every reconnect and (sharded) every change of the slot map,
    /// subscribes every kept channel again and then calls `resynced`: messages published in
    /// between were lost, and the caller recovers them from the store.
    pub fn keep_subscribed(&self, shutdown: CancellationToken, resynced: impl Fn() + Send + 'static) {
        let subscriber = self.clone();
        let mut reconnects = self.client.reconnect_rx();
        let mut slot_check = tokio::time::interval(SLOT_MAP_CHECK);
        slot_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sharded = self.pubsub == PubSub::Sharded;
        tokio::spawn(async move {
            let mut subscribed_on = subscriber.slot_map();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = reconnects.recv() => match event {
                        Err(RecvError::Closed) => return,
                        Ok(_) | Err(RecvError::Lagged(_)) => tracing::info!("redis subscriber reconnected; resubscribing"),
                    },
                    _ = slot_check.tick(), if sharded => {
                        if subscriber.client.sync_cluster().await.is_err() {
                            continue;
                        }
                        let now = subscriber.slot_map();
                        if now == subscribed_on {
                            continue;
                        }
                        tracing::info!("redis cluster slots moved; resubscribing on their new owners");
                    }
                }
                subscriber.subscribe_until_done(subscriber.kept(), &shutdown).await;
                subscribed_on = subscriber.slot_map();
                resynced();
            }
        });
    }

    /// Which primary serves each slot range, as far as the client knows (empty off a cluster).
    fn slot_map(&self) -> Vec<(u16, u16, Server)> {
        self.client.cached_cluster_state().map_or_else(Vec::new, |state| {
            state.slots().iter().map(|range| (range.start, range.end, range.primary.clone())).collect()
        })
    }

    /// Closes the connections.
    pub async fn quit(&self) {
        let _ = self.client.quit().await;
    }
}

/// `channels` grouped by cluster slot.
fn by_slot(channels: Vec<String>) -> BTreeMap<u16, Vec<String>> {
    let mut groups: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for channel in channels {
        groups.entry(fred::util::redis_keyslot(channel.as_bytes())).or_default().push(channel);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_means_sharded_pubsub() {
        let cluster = super::super::redis_url::parse("redis-cluster://127.0.0.1:7001,127.0.0.1:7002").expect("valid");
        let single = super::super::redis_url::parse("redis://127.0.0.1:6379").expect("valid");
        assert_eq!(PubSub::of(&cluster), PubSub::Sharded);
        assert_eq!(PubSub::of(&single), PubSub::Classic);
        assert_eq!(PubSub::Sharded.command(), "SPUBLISH");
    }

    #[test]
    fn channels_of_one_ride_go_in_one_subscribe() {
        let groups = by_slot(vec!["ride:status:{r1}".into(), "chat:ride:{r1}".into(), "ride:status:{r2}".into()]);
        assert_eq!(groups.len(), 2);
        assert!(groups.values().any(|group| group.len() == 2));
    }
}
