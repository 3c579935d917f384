//! The Redis backend: many instances share stores and channels through one Redis.
//!
//! Two connections per instance (two per primary on a Redis Cluster): one for commands (store,
//! ingest script) and one subscriber connection that carries every channel this instance has
//! local riders or chat participants for. Both reconnect with backoff on their own; after the
//! subscriber reconnects (or, on a cluster, a slot moves to another node) it resubscribes and
//! then asks the hubs and chat rooms to recover from the store, since anything published
//! meanwhile was lost. On a cluster, publishing is sharded ([`super::pubsub`]).
//!
//! Keys (`{id}` is the id in braces, a cluster hash tag shared with the key's channel): a
//! driver's latest location (`driver:latest:{id}`, a hash that expires
//! `--location-ttl-secs` after the driver's last update) and a zone's current surge
//! (`surge:latest:{id}`, a hash with no expiry). A surge is an operator's decision that stays in force until the next one, however
//! long that takes; expiring it would make new riders see no surge while riders already
//! connected still see one. The number of zones is set by operators, not by traffic, so keeping
//! them costs a few bytes each.
//!
//! Rides, dispatch and chat keep their own keys through their own stores (`rides::store`,
//! `dispatch::store`, `chat::store`), on this backend's command connection.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use fred::{
    prelude::{Client, ClientLike, HashesInterface},
    types::{Builder, Value, config::ReconnectPolicy, scripts::Script},
};
use ridecast_protocol::{Id, Multiplier, Surge, channels};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{
    Backend, BackendError, Deliveries, IngestOutcome, LocationUpdate,
    pubsub::{PubSub, Subscriber},
};
use crate::base::{clock, metrics::Metrics};

/// Stores each update if it is newer than the stored one and publishes it if its cell changed,
/// atomically per driver, for many drivers in one call: what a call costs (a round trip, a
/// wake-up on both sides, starting the script) is most of what one driver's update cost when
/// each went alone. Returns one outcome per key: 0 (stale), 1 (stored), 2 (stored and
/// published).
///
/// KEYS: the drivers' latest-location hashes, `driver:latest:{id}` (on a cluster, all in one
/// slot); a key's channel, `driver:location:{id}`, is derived from it here rather than sent.
/// ARGV[1] the TTL in ms, then three per key, in order: ts, json, cell. Timestamps are epoch
/// milliseconds, well within the 2^53 that Lua's doubles hold exactly.
const INGEST_LUA: &str = r"
local outcomes = {}
for i, key in ipairs(KEYS) do
  local at = 3 * i - 1
  local ts, json, cell = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local stored = redis.call('HMGET', key, 'ts', 'cell')
  if stored[1] and tonumber(stored[1]) >= tonumber(ts) then
    outcomes[i] = 0
  else
    if stored[2] ~= cell then
      redis.call('HSET', key, 'ts', ts, 'json', json, 'cell', cell)
      redis.call(publish_command, 'driver:location:' .. string.sub(key, 15), json)
      outcomes[i] = 2
    else
      redis.call('HSET', key, 'ts', ts, 'json', json)
      outcomes[i] = 1
    end
    redis.call('PEXPIRE', key, ARGV[1])
  end
end
return outcomes
";

/// Most drivers in one ingest call: a call holds Redis for its whole run (~2 µs a driver).
const MAX_DRIVERS_PER_CALL: usize = 256;

/// Stores a zone's surge and publishes it, atomically, in one round trip; returns its JSON.
///
/// Its `ts` is the calling instance's clock, or one more than the stored `ts` when that is not
/// older (`ridecast_protocol::surge::next_ts`): Redis runs scripts one at a time, so two
/// instances setting one zone within a millisecond still get distinct, growing ids.
///
/// KEYS[1] the zone's surge hash; ARGV: now ms, zone id, multiplier (as a JSON number), channel.
/// The zone id is a validated id (no character needs escaping in JSON) and `%.0f` prints the
/// millisecond timestamp, exact in Lua's doubles, without an exponent. The JSON is the shape of
/// `ridecast_protocol::Surge`, field for field; the caller checks the reply against it.
const SET_SURGE_LUA: &str = r#"
local ts = tonumber(ARGV[1])
local stored = tonumber(redis.call('HGET', KEYS[1], 'ts'))
if stored and stored >= ts then
  ts = stored + 1
end
local json = string.format('{"zoneId":"%s","multiplier":%s,"ts":%.0f}', ARGV[2], ARGV[3], ts)
redis.call('HSET', KEYS[1], 'ts', string.format('%.0f', ts), 'json', json)
redis.call(publish_command, ARGV[4], json)
return json
"#;

/// Splits a batch of updates (by index) into ingest calls: in order, at most
/// [`MAX_DRIVERS_PER_CALL`] each, and on a cluster one slot per call (a script's keys must
/// share a slot). A driver's updates stay in one call, in their order.
fn ingest_calls(updates: &[LocationUpdate], pubsub: PubSub) -> Vec<Vec<usize>> {
    let mut calls: Vec<Vec<usize>> = Vec::new();
    match pubsub {
        PubSub::Classic => {
            let indexes: Vec<usize> = (0..updates.len()).collect();
            calls.extend(indexes.chunks(MAX_DRIVERS_PER_CALL).map(<[usize]>::to_vec));
        }
        PubSub::Sharded => {
            let mut by_slot: HashMap<u16, Vec<usize>> = HashMap::new();
            for (index, update) in updates.iter().enumerate() {
                let slot = fred::util::redis_keyslot(channels::driver_latest_key(&update.driver).as_bytes());
                by_slot.entry(slot).or_default().push(index);
            }
            for indexes in by_slot.into_values() {
                calls.extend(indexes.chunks(MAX_DRIVERS_PER_CALL).map(<[usize]>::to_vec));
            }
        }
    }
    calls
}

/// How often one command may be written. Once on one Redis: a command that fails is answered
/// as failed at once (the caller degrades or the client retries), never run twice by the
/// library. Twice on a cluster, since after a failover or resharding a command reaches the old
/// owner of its slot first and must be written again where `MOVED` points (it did not run the
/// first time). The second write can also follow a connection lost mid-command, which may have
/// run: every script tolerates running twice (ingest and chat deduplicate, ride and dispatch
/// changes are conditional, creating a ride recognises its own retry).
fn max_command_attempts(pubsub: PubSub) -> u32 {
    match pubsub {
        PubSub::Classic => 1,
        PubSub::Sharded => 2,
    }
}

/// How long one Redis command may take before it fails (and the caller degrades).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How many pub/sub messages may wait for the delivery task before it counts as lagging (and
/// the hubs are reloaded from the store). fred preallocates this for each of its event
/// channels, so it is also a fixed memory cost: 16 Ki slots cost ~25 MiB per instance.
const MESSAGE_BUFFER: usize = 4 * 1024;

/// Redis-backed store and bus. Cheap to clone.
#[derive(Clone)]
pub struct RedisBackend {
    commands: Client,
    subscriber: Subscriber,
    pubsub: PubSub,
    /// How the instance's other Redis clients are configured (the driver inbox's subscriber).
    builder: Arc<Builder>,
    ingest: Arc<Script>,
    set_surge: Arc<Script>,
    location_ttl_ms: u64,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("pubsub", &self.pubsub)
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to `url` (one Redis or a cluster, see [`super::redis_url`]; waiting up to a few
    /// seconds, then carrying on and reconnecting in the background) and starts delivering
    /// subscribed messages to `deliveries`. A driver's location is kept `location_ttl` after its
    /// last update.
    ///
    /// # Errors
    /// [`BackendError::InvalidUrl`] if the URL is invalid.
    pub async fn connect(
        url: &str,
        location_ttl: Duration,
        deliveries: Arc<dyn Deliveries>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Result<Self, BackendError> {
        let config = super::redis_url::parse(url)?;
        let pubsub = PubSub::of(&config);
        let mut builder = Builder::from_config(config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .with_performance_config(|performance| {
                performance.default_command_timeout = COMMAND_TIMEOUT;
                performance.broadcast_channel_capacity = MESSAGE_BUFFER;
            })
            .with_connection_config(|connection| {
                connection.connection_timeout = Duration::from_secs(2);
                connection.max_command_attempts = max_command_attempts(pubsub);
            });
        let commands = builder.build()?;
        let subscriber = Subscriber::build(&builder)?;
        super::connection::keep_connecting(&commands, shutdown.clone());
        subscriber.connect(shutdown.clone());
        if tokio::time::timeout(Duration::from_secs(5), async {
            let _ = commands.wait_for_connect().await;
            subscriber.wait_for_connect().await;
        })
        .await
        .is_err()
        {
            tracing::error!("redis is not reachable yet; serving anyway and reconnecting in the background");
        }
        let backend = Self {
            commands,
            subscriber,
            pubsub,
            builder: Arc::new(builder),
            ingest: Arc::new(pubsub.script(INGEST_LUA)),
            set_surge: Arc::new(pubsub.script(SET_SURGE_LUA)),
            location_ttl_ms: clock::millis(location_ttl),
        };
        if pubsub == PubSub::Sharded {
            super::connection::keep_whole(&backend.commands, shutdown.clone());
        }
        backend.spawn_delivery(deliveries.clone(), metrics, shutdown.clone());
        // After a reconnect or a slot move: subscribed again, then every hub reloaded, in that
        // order so that nothing published after the reload can be missed.
        backend.subscriber.keep_subscribed(shutdown, move || deliveries.missed_messages());
        Ok(backend)
    }

    /// Hands every message on a subscribed channel up to `deliveries`.
    fn spawn_delivery(&self, deliveries: Arc<dyn Deliveries>, metrics: Metrics, shutdown: CancellationToken) {
        let mut messages = self.subscriber.messages();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    message = messages.recv() => message,
                };
                match message {
                    Ok(message) => match message.value.as_bytes() {
                        Some(payload) => deliveries.deliver(&message.channel, payload),
                        None => tracing::warn!(channel = %message.channel, "non-binary pub/sub message ignored"),
                    },
                    Err(RecvError::Lagged(missed)) => {
                        Metrics::add(&metrics.values().backend_errors_total, missed);
                        tracing::warn!(missed, "pub/sub delivery fell behind; reloading hubs from the store");
                        deliveries.missed_messages();
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// The command connection, for other stores that share this Redis (dispatch, chat).
    pub fn command_client(&self) -> Client {
        self.commands.clone()
    }

    /// The Pub/Sub this deployment uses: sharded on a cluster.
    pub fn pubsub(&self) -> PubSub {
        self.pubsub
    }

    /// A new subscriber on the same Redis, configured like this backend's but with its own
    /// connections and `buffer` messages of room (the driver inbox).
    ///
    /// # Errors
    /// [`BackendError::Redis`] if the client cannot be built.
    pub fn new_subscriber(&self, buffer: usize) -> Result<Subscriber, BackendError> {
        let mut builder = (*self.builder).clone();
        builder.with_performance_config(|performance| performance.broadcast_channel_capacity = buffer);
        Subscriber::build(&builder)
    }

    /// The keys and arguments of one ingest call: the updates at `call`'s indexes.
    fn ingest_arguments(&self, updates: &[LocationUpdate], call: &[usize]) -> (Vec<String>, Vec<Value>) {
        let mut keys = Vec::with_capacity(call.len());
        let mut args = Vec::with_capacity(1 + 3 * call.len());
        args.push(Value::Integer(self.location_ttl_ms.try_into().unwrap_or(i64::MAX)));
        for &index in call {
            let update = &updates[index];
            keys.push(channels::driver_latest_key(&update.driver));
            args.push(Value::Integer(update.ts.try_into().unwrap_or(i64::MAX)));
            args.push(Value::Bytes(update.json.clone()));
            args.push(Value::from(update.cell.to_string()));
        }
        (keys, args)
    }

    /// Closes both connections.
    pub async fn quit(&self) {
        self.subscriber.quit().await;
        let _ = self.commands.quit().await;
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn ingest_locations(&self, updates: &[LocationUpdate]) -> Vec<Result<IngestOutcome, BackendError>> {
        let calls = ingest_calls(updates, self.pubsub).into_iter().map(|call| async move {
            let (keys, args) = self.ingest_arguments(updates, &call);
            let reply = self.ingest.evalsha_with_reload::<Vec<i64>, _, _>(&self.commands, keys, args).await;
            (call, reply)
        });
        // Every update is in exactly one call, so each slot is filled below.
        let mut results: Vec<Option<Result<IngestOutcome, BackendError>>> = vec![None; updates.len()];
        for (call, reply) in futures_util::future::join_all(calls).await {
            let outcomes = match reply {
                Ok(outcomes) if outcomes.len() == call.len() => {
                    outcomes.into_iter().map(IngestOutcome::from_code).collect()
                }
                Ok(outcomes) => {
                    let error = format!("{} outcomes for {} drivers", outcomes.len(), call.len());
                    vec![Err(BackendError::UnexpectedReply(error)); call.len()]
                }
                Err(error) => vec![Err(BackendError::from(error)); call.len()],
            };
            for (index, outcome) in call.into_iter().zip(outcomes) {
                results[index] = Some(outcome);
            }
        }
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(BackendError::UnexpectedReply("no reply".into()))))
            .collect()
    }

    fn stores_in_process(&self) -> bool {
        false
    }

    async fn set_surge(&self, zone: &Id, multiplier: Multiplier, now_ms: u64) -> Result<Bytes, BackendError> {
        let key = channels::surge_latest_key(zone);
        // Serializing a finite f64 cannot fail; it prints as JSON prints it (`2.0`, `1.8`).
        let multiplier = serde_json::to_string(&multiplier).unwrap_or_default();
        let args: Vec<fred::types::Value> =
            vec![now_ms.to_string().into(), zone.as_str().into(), multiplier.into(), channels::surge_zone(zone).into()];
        let json: String = self.set_surge.evalsha_with_reload(&self.commands, key, args).await?;
        match serde_json::from_str::<Surge>(&json) {
            Ok(surge) if &surge.zone_id == zone => Ok(Bytes::from(json)),
            _ => Err(BackendError::UnexpectedReply(json)),
        }
    }

    async fn latest_location(&self, driver: &Id) -> Result<Option<Bytes>, BackendError> {
        Ok(self.commands.hget::<Option<Bytes>, _, _>(channels::driver_latest_key(driver), "json").await?)
    }

    async fn current_surge(&self, zone: &Id) -> Result<Option<Bytes>, BackendError> {
        Ok(self.commands.hget::<Option<Bytes>, _, _>(channels::surge_latest_key(zone), "json").await?)
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> Result<(), BackendError> {
        self.pubsub.publish(&self.commands, channel, payload).await.map(drop)
    }

    async fn subscribe(&self, channels: Vec<String>) -> Result<(), BackendError> {
        self.subscriber.subscribe(channels).await
    }

    async fn unsubscribe(&self, channels: Vec<String>) -> Result<(), BackendError> {
        self.subscriber.unsubscribe(channels).await
    }

    fn is_ready(&self) -> bool {
        let routed = self.pubsub == PubSub::Classic || super::connection::covers_every_slot(&self.commands);
        self.commands.is_connected() && self.subscriber.is_connected() && routed
    }
}

#[cfg(test)]
mod tests {
    use ridecast_protocol::GridCell;

    use super::*;

    fn update(driver: &str, ts: u64) -> LocationUpdate {
        let driver = Id::parse(driver).expect("id");
        LocationUpdate { driver, ts, cell: GridCell { row: 0, col: 0 }, json: Bytes::new() }
    }

    fn slot(update: &LocationUpdate) -> u16 {
        fred::util::redis_keyslot(channels::driver_latest_key(&update.driver).as_bytes())
    }

    #[test]
    fn on_one_redis_a_batch_is_cut_only_by_size_in_order() {
        let updates: Vec<LocationUpdate> = (0..600).map(|n| update(&format!("d{n}"), n)).collect();
        let calls = ingest_calls(&updates, PubSub::Classic);
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), vec![256, 256, 88]);
        assert_eq!(calls.concat(), (0..600).collect::<Vec<_>>(), "every update once, in order");
    }

    #[test]
    fn on_a_cluster_each_call_is_one_slot_and_a_drivers_updates_stay_in_order() {
        let mut updates: Vec<LocationUpdate> = (0..100).map(|n| update(&format!("d{n}"), 1)).collect();
        updates.push(update("d7", 2));
        updates.push(update("d7", 3));
        let calls = ingest_calls(&updates, PubSub::Sharded);
        let mut seen: Vec<usize> = calls.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..102).collect::<Vec<_>>(), "every update once");
        for call in &calls {
            assert!(call.iter().all(|&index| slot(&updates[index]) == slot(&updates[call[0]])), "one slot per call");
            assert!(call.windows(2).all(|pair| pair[0] < pair[1]), "in their order");
        }
        let with_d7 = calls.iter().filter(|call| call.contains(&7)).count();
        assert_eq!(with_d7, 1);
        assert!(calls.iter().any(|call| call.contains(&7) && call.contains(&100) && call.contains(&101)));
    }
}
