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
//! A ride is one hash, `ride:{id}` (fields `rider`, `pickup`, `dropoff` as `{"lat":..,"lng":..}`,
//! `status`, `driver` once assigned, `created`, `ts`, and `json`, the status as last published),
//! expiring `--ride-ttl-secs` after its last change. It is only ever written by the two ride
//! scripts below, each of which also publishes the new status on `ride:status:{id}`, so a
//! change and its push cannot be separated, and two instances changing one ride are ordered by
//! Redis running one script at a time.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use fred::{
    prelude::{Client, ClientLike, HashesInterface},
    types::{Builder, config::ReconnectPolicy, scripts::Script},
};
use ridecast_protocol::{Id, LatLng, Multiplier, RideState, RideStatus, Surge, channels};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{
    Backend, BackendError, IngestOutcome, LocationUpdate, Retention, Topic,
    pubsub::{PubSub, Subscriber},
};
use crate::{
    base::metrics::Metrics,
    fanout::subscriptions::Inbound,
    rides::{NewRide, Ride, RideChange, RideChangeOutcome},
};

/// Stores an update if it is newer than the stored one and publishes it if its cell changed,
/// atomically, in one round trip. Returns 0 (stale), 1 (stored) or 2 (stored and published).
///
/// KEYS[1] the driver's latest-location hash; ARGV: ts, json, cell, ttl ms, channel.
/// Timestamps are epoch milliseconds, well within the 2^53 that Lua's doubles hold exactly.
const INGEST_LUA: &str = r"
local stored = redis.call('HMGET', KEYS[1], 'ts', 'cell')
if stored[1] and tonumber(stored[1]) >= tonumber(ARGV[1]) then
  return 0
end
local outcome = 1
if stored[2] ~= ARGV[3] then
  redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'json', ARGV[2], 'cell', ARGV[3])
  redis.call(publish_command, ARGV[5], ARGV[2])
  outcome = 2
else
  redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'json', ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return outcome
";

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

/// Creates a ride in `searching` unless its key exists, with its TTL, and publishes its first
/// status, atomically. Returns `{'taken'}` (nothing written), or `{'created', <HGETALL>}`, also
/// when the ride exists because this very call ran before (same rider, same creation time: the
/// client wrote it again after losing the reply).
///
/// KEYS[1] the ride's hash; ARGV: now ms (decimal), ride id, rider, pickup JSON, dropoff JSON,
/// ttl ms, channel. Ids are validated (no character needs escaping in JSON). The JSON is the
/// shape of `ridecast_protocol::RideState`, field for field; the caller checks it.
const CREATE_RIDE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  local stored = redis.call('HMGET', KEYS[1], 'rider', 'created')
  if stored[1] == ARGV[3] and stored[2] == ARGV[1] then
    return {'created', unpack(redis.call('HGETALL', KEYS[1]))}
  end
  return {'taken'}
end
local json = '{"rideId":"' .. ARGV[2] .. '","status":"searching","ts":' .. ARGV[1] .. '}'
redis.call('HSET', KEYS[1], 'rider', ARGV[3], 'pickup', ARGV[4], 'dropoff', ARGV[5],
  'status', 'searching', 'created', ARGV[1], 'ts', ARGV[1], 'json', json)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call(publish_command, ARGV[7], json)
return {'created', unpack(redis.call('HGETALL', KEYS[1]))}
"#;

/// Changes a ride's status if its current one allows it: the new status (and driver), a `ts`
/// that only grows (the caller's clock, or the stored `ts` plus one when that is not older, as
/// for surge), the status JSON stored and published, the TTL renewed; all or nothing. Returns
/// `{'unknown'}`, `{'refused', <HGETALL>}` (unchanged) or `{'applied', <HGETALL>}`.
///
/// KEYS[1] the ride's hash; ARGV: now ms, ride id, new status, the statuses it applies to
/// (space-separated, with a space before and after each), driver id ('' for none), tracking
/// token as a JSON string ('' for none), ttl ms, channel.
const CHANGE_RIDE_LUA: &str = r#"
local stored = redis.call('HMGET', KEYS[1], 'status', 'ts')
if not stored[1] then
  return {'unknown'}
end
if not string.find(ARGV[4], ' ' .. stored[1] .. ' ', 1, true) then
  return {'refused', unpack(redis.call('HGETALL', KEYS[1]))}
end
local ts = tonumber(ARGV[1])
local last = tonumber(stored[2])
if last and last >= ts then
  ts = last + 1
end
ts = string.format('%.0f', ts)
local json = '{"rideId":"' .. ARGV[2] .. '","status":"' .. ARGV[3] .. '"'
if ARGV[5] ~= '' then
  json = json .. ',"driverId":"' .. ARGV[5] .. '","trackingToken":' .. ARGV[6]
  redis.call('HSET', KEYS[1], 'driver', ARGV[5])
end
json = json .. ',"ts":' .. ts .. '}'
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'ts', ts, 'json', json)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call(publish_command, ARGV[8], json)
return {'applied', unpack(redis.call('HGETALL', KEYS[1]))}
"#;

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
    create_ride: Arc<Script>,
    change_ride: Arc<Script>,
    location_ttl_ms: u64,
    ride_ttl_ms: u64,
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
    /// subscribed messages to `inbound`. What expires is kept for its `retention`.
    ///
    /// # Errors
    /// [`BackendError::InvalidUrl`] if the URL is invalid.
    pub async fn connect(
        url: &str,
        retention: Retention,
        inbound: Inbound,
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
            create_ride: Arc::new(pubsub.script(CREATE_RIDE_LUA)),
            change_ride: Arc::new(pubsub.script(CHANGE_RIDE_LUA)),
            location_ttl_ms: crate::base::clock::millis(retention.location),
            ride_ttl_ms: crate::base::clock::millis(retention.ride),
        };
        if pubsub == PubSub::Sharded {
            super::connection::keep_whole(&backend.commands, shutdown.clone());
        }
        backend.spawn_delivery(inbound.clone(), metrics, shutdown.clone());
        // After a reconnect or a slot move: subscribed again, then every hub reloaded, in that
        // order so that nothing published after the reload can be missed.
        backend.subscriber.keep_subscribed(shutdown, move || inbound.request_refresh_all());
        Ok(backend)
    }

    /// Hands every message on a subscribed channel to its hub.
    fn spawn_delivery(&self, inbound: Inbound, metrics: Metrics, shutdown: CancellationToken) {
        let mut messages = self.subscriber.messages();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    message = messages.recv() => message,
                };
                match message {
                    Ok(message) => match message.value.as_bytes() {
                        Some(payload) => inbound.deliver(&message.channel, payload),
                        None => tracing::warn!(channel = %message.channel, "non-binary pub/sub message ignored"),
                    },
                    Err(RecvError::Lagged(missed)) => {
                        Metrics::add(&metrics.values().backend_errors_total, missed);
                        tracing::warn!(missed, "pub/sub delivery fell behind; reloading hubs from the store");
                        inbound.request_refresh_all();
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

    /// Closes both connections.
    pub async fn quit(&self) {
        self.subscriber.quit().await;
        let _ = self.commands.quit().await;
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn ingest_location(&self, update: &LocationUpdate) -> Result<IngestOutcome, BackendError> {
        let key = channels::driver_latest_key(&update.driver);
        let channel = channels::driver_location(&update.driver);
        let args: Vec<fred::types::Value> = vec![
            update.ts.to_string().into(),
            update.json.clone().into(),
            update.cell.to_string().into(),
            self.location_ttl_ms.to_string().into(),
            channel.into(),
        ];
        let outcome: i64 = self.ingest.evalsha_with_reload(&self.commands, key, args).await?;
        match outcome {
            0 => Ok(IngestOutcome::Stale),
            1 => Ok(IngestOutcome::Stored),
            2 => Ok(IngestOutcome::Published),
            other => Err(BackendError::UnexpectedReply(other.to_string())),
        }
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

    async fn create_ride(&self, new: &NewRide, now_ms: u64) -> Result<Option<Ride>, BackendError> {
        let args: Vec<fred::types::Value> = vec![
            now_ms.to_string().into(),
            new.id.as_str().into(),
            new.rider.as_str().into(),
            point_json(&new.pickup).into(),
            point_json(&new.dropoff).into(),
            self.ride_ttl_ms.to_string().into(),
            channels::ride_status(&new.id).into(),
        ];
        let reply: Vec<String> =
            self.create_ride.evalsha_with_reload(&self.commands, channels::ride_key(&new.id), args).await?;
        match reply.split_first() {
            Some((outcome, _)) if outcome == "taken" => Ok(None),
            Some((outcome, fields)) if outcome == "created" => {
                let ride = ride_from_fields(&new.id, pairs(fields)?)?;
                expect_status(&ride, RideStatus::Searching)?;
                Ok(Some(ride))
            }
            _ => Err(BackendError::UnexpectedReply(format!("{reply:?}"))),
        }
    }

    async fn ride(&self, id: &Id) -> Result<Option<Ride>, BackendError> {
        let fields: HashMap<String, String> = self.commands.hgetall(channels::ride_key(id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(ride_from_fields(id, fields)?))
    }

    async fn change_ride(&self, id: &Id, change: &RideChange, now_ms: u64) -> Result<RideChangeOutcome, BackendError> {
        let from: String = change.from_statuses().iter().map(|status| format!(" {status} ")).collect();
        let (driver, tracking_token) = match change {
            // A JSON string, quoted and escaped by serde: the script inserts it as it is.
            RideChange::Assign { driver, tracking_token } => {
                (driver.as_str(), serde_json::to_string(tracking_token).unwrap_or_default())
            }
            RideChange::NoDriver | RideChange::Cancel => ("", String::new()),
        };
        let args: Vec<fred::types::Value> = vec![
            now_ms.to_string().into(),
            id.as_str().into(),
            change.target().as_str().into(),
            from.into(),
            driver.into(),
            tracking_token.into(),
            self.ride_ttl_ms.to_string().into(),
            channels::ride_status(id).into(),
        ];
        let reply: Vec<String> =
            self.change_ride.evalsha_with_reload(&self.commands, channels::ride_key(id), args).await?;
        match reply.split_first() {
            Some((outcome, [])) if outcome == "unknown" => Ok(RideChangeOutcome::Unknown),
            Some((outcome, fields)) if outcome == "refused" => {
                Ok(RideChangeOutcome::Refused(ride_from_fields(id, pairs(fields)?)?))
            }
            Some((outcome, fields)) if outcome == "applied" => {
                let ride = ride_from_fields(id, pairs(fields)?)?;
                expect_status(&ride, change.target())?;
                Ok(RideChangeOutcome::Applied(ride))
            }
            _ => Err(BackendError::UnexpectedReply(format!("{reply:?}"))),
        }
    }

    async fn latest(&self, topic: &Topic) -> Result<Option<Bytes>, BackendError> {
        let key = match topic {
            Topic::DriverLocation(driver) => channels::driver_latest_key(driver),
            Topic::SurgeZone(zone) => channels::surge_latest_key(zone),
            Topic::RideStatus(ride) => channels::ride_key(ride),
        };
        Ok(self.commands.hget::<Option<Bytes>, _, _>(key, "json").await?)
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

/// A point as stored in a ride's hash.
fn point_json(point: &LatLng) -> String {
    // Two finite numbers: serializing cannot fail.
    serde_json::to_string(point).unwrap_or_default()
}

/// A flat `HGETALL` reply (`field, value, field, value, ...`) as pairs.
fn pairs(flat: &[String]) -> Result<impl Iterator<Item = (String, String)>, BackendError> {
    if !flat.len().is_multiple_of(2) {
        return Err(BackendError::UnexpectedReply(format!("an odd-length hash reply: {flat:?}")));
    }
    Ok(flat.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())))
}

/// A ride from its hash's fields (see the module docs), checked: anything missing or garbled is
/// [`BackendError::UnexpectedReply`], never a half-read ride.
fn ride_from_fields(id: &Id, fields: impl IntoIterator<Item = (String, String)>) -> Result<Ride, BackendError> {
    let fields: HashMap<String, String> = fields.into_iter().collect();
    let garbled = |field: &str| BackendError::UnexpectedReply(format!("ride {id} has no valid {field:?}: {fields:?}"));
    let text = |field: &str| fields.get(field).ok_or_else(|| garbled(field));
    let id_field = |field: &str| text(field).and_then(|raw| Id::parse(raw).map_err(|_| garbled(field)));
    let point = |field: &str| text(field).and_then(|raw| serde_json::from_str(raw).map_err(|_| garbled(field)));
    let number = |field: &str| text(field).and_then(|raw| raw.parse::<u64>().map_err(|_| garbled(field)));
    let json = Bytes::from(text("json")?.clone());
    let state: RideState = serde_json::from_slice(&json).map_err(|_| garbled("json"))?;
    let ride = Ride {
        id: id.clone(),
        rider: id_field("rider")?,
        pickup: point("pickup")?,
        dropoff: point("dropoff")?,
        status: text("status")?.parse().map_err(|_| garbled("status"))?,
        driver: fields.contains_key("driver").then(|| id_field("driver")).transpose()?,
        created_ms: number("created")?,
        ts: number("ts")?,
        json,
    };
    if &state.ride_id != id || state.status != ride.status || state.ts != ride.ts {
        return Err(garbled("json"));
    }
    Ok(ride)
}

/// The script said it set `status`; the ride it returned must agree.
fn expect_status(ride: &Ride, status: RideStatus) -> Result<(), BackendError> {
    if ride.status == status {
        Ok(())
    } else {
        Err(BackendError::UnexpectedReply(format!("ride {} is {} after a change to {status}", ride.id, ride.status)))
    }
}
