//! Rides in Redis, shared by every instance.
//!
//! A ride is one hash, `ride:{id}` (fields `rider`, `pickup`, `dropoff` as `{"lat":..,"lng":..}`,
//! `status`, `driver` once assigned, `created`, `ts`, `json`, the status as last published, and
//! `indexed`, see below), expiring `--ride-ttl-secs` after its last change. It is only ever
//! written by the two scripts below, each of which also publishes the new status on
//! `ride:status:{id}` (the same hash tag, so on a cluster both live on one shard), so a change
//! and its push cannot be separated, and two instances changing one ride are ordered by Redis
//! running one script at a time.
//!
//! # One open ride per rider, on a cluster
//!
//! `rider:open:{sub}` holds the id of the rider's open ride. The create script reads it (and
//! the ride it names) and writes it in the same step as the new ride, and the change script
//! that ends a ride deletes it, so two racing requests of one rider cannot both create a ride,
//! and a ride's end frees the rider at once. It expires with the ride (its TTL is renewed with
//! every change of the ride), and an entry naming a ride that has ended or expired counts for
//! nothing.
//!
//! A script may only touch keys of one cluster slot, and `ride:{id}` is in the slot of the ride
//! id while `rider:open:{sub}` is in the slot of the rider. The two are made to meet by the id:
//! [`RedisRides::new_id`] picks a ride's random id among those whose slot is the rider's (about
//! 16 384 tries of a 6-digit tail after a 26-digit prefix hashed once, about 0.3 ms
//! in a release build here, against 3.2 ms when each try hashed the whole id;
//! 104 of its 128 bits stay random). A single Redis has one slot for all and takes plain
//! random ids.
//! A rider's rides, their channels and chats then live on the rider's shard; rides still spread
//! over the cluster as riders do. The alternatives were worse: a second, non-atomic round trip
//! for the index (two racing requests could both pass), or ride keys tagged with the rider
//! (every id would have to carry its rider). Rides created before the index existed (no
//! `indexed` field) are never looked up through it, so a change to one never reaches across
//! slots.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use fred::{
    prelude::{Client, HashesInterface},
    types::scripts::Script,
};
use ridecast_protocol::{Id, LatLng, RideState, RideStatus, channels, ride::RIDE_STATUSES};

use super::RideStore;
use crate::{
    base::clock,
    bus::{BackendError, pubsub::PubSub, reply_shape},
    rides::ride::{CreateOutcome, NewRide, Ride, RideChange, RideChangeOutcome},
};

/// Creates a ride in `searching` unless its key exists or its rider has another ride open,
/// makes it the rider's open ride, with its TTL, and publishes its first status, atomically.
/// Returns `{'taken'}` (nothing written), `{'open', <ride id>}` (nothing written: the rider's
/// open ride), or `{'created', <HGETALL>}`, also when the ride exists because this very call
/// ran before (same rider, same creation time: the client wrote it again after losing the
/// reply).
///
/// KEYS[1] the ride's hash, KEYS[2] the rider's open-ride key (the same slot: see the module
/// docs); ARGV: now ms (decimal), ride id, rider, pickup JSON, dropoff JSON, ttl ms, channel,
/// the prefix of ride keys, the open statuses (space-separated, with a space before and after
/// each). Ids are validated (no character needs escaping in JSON). The JSON is the shape of
/// `ridecast_protocol::RideState`, field for field; the caller checks it.
const CREATE_RIDE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  local stored = redis.call('HMGET', KEYS[1], 'rider', 'created')
  if stored[1] == ARGV[3] and stored[2] == ARGV[1] then
    return {'created', unpack(redis.call('HGETALL', KEYS[1]))}
  end
  return {'taken'}
end
local open = redis.call('GET', KEYS[2])
if open then
  -- The rider's earlier ride: its id was picked in this slot too.
  local status = redis.call('HGET', ARGV[8] .. '{' .. open .. '}', 'status')
  if status and string.find(ARGV[9], ' ' .. status .. ' ', 1, true) then
    return {'open', open}
  end
end
local json = '{"rideId":"' .. ARGV[2] .. '","status":"searching","ts":' .. ARGV[1] .. '}'
redis.call('HSET', KEYS[1], 'rider', ARGV[3], 'pickup', ARGV[4], 'dropoff', ARGV[5],
  'status', 'searching', 'created', ARGV[1], 'ts', ARGV[1], 'json', json, 'indexed', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[6])
redis.call(publish_command, ARGV[7], json)
return {'created', unpack(redis.call('HGETALL', KEYS[1]))}
"#;

/// Changes a ride's status if its current one allows it: the new status (and driver), a `ts`
/// that only grows (the caller's clock, or the stored `ts` plus one when that is not older, as
/// for surge), the status JSON stored and published, the TTL renewed; all or nothing. Returns
/// `{'unknown'}`, `{'refused', <HGETALL>}` (unchanged) or `{'applied', <HGETALL>}`.
///
/// The rider's open-ride key, if it names this ride, is cleared when the new status is final
/// and has its TTL renewed with the ride's otherwise (only for rides created with the index:
/// `indexed`; its key is in this slot, see the module docs).
///
/// KEYS[1] the ride's hash; ARGV: now ms, ride id, new status, the statuses it applies to
/// (space-separated, with a space before and after each), driver id to publish and store (''
/// for none), tracking token as a JSON string ('' for none), ttl ms, channel, the driver the
/// ride must be assigned to ('' for any: only a driver's own steps need one), '1' if the new
/// status is final, the prefix of open-ride keys.
const CHANGE_RIDE_LUA: &str = r#"
local stored = redis.call('HMGET', KEYS[1], 'status', 'ts', 'driver', 'rider', 'indexed')
if not stored[1] then
  return {'unknown'}
end
if not string.find(ARGV[4], ' ' .. stored[1] .. ' ', 1, true) or (ARGV[9] ~= '' and stored[3] ~= ARGV[9]) then
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
if stored[5] == '1' then
  local index = ARGV[11] .. '{' .. stored[4] .. '}'
  if redis.call('GET', index) == ARGV[2] then
    if ARGV[10] == '1' then
      redis.call('DEL', index)
    else
      redis.call('PEXPIRE', index, ARGV[7])
    end
  end
end
redis.call(publish_command, ARGV[8], json)
return {'applied', unpack(redis.call('HGETALL', KEYS[1]))}
"#;

/// Rides in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisRides {
    commands: Client,
    create: Arc<Script>,
    change: Arc<Script>,
    ttl_ms: u64,
    /// On a cluster, ride ids are picked in their rider's slot (see the module docs); a single
    /// Redis has one slot for all, and takes plain random ids.
    clustered: bool,
}

impl std::fmt::Debug for RedisRides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRides").field("ttl_ms", &self.ttl_ms).finish_non_exhaustive()
    }
}

impl RedisRides {
    /// Rides kept `ttl` after their last change, through `commands` (the instance's command
    /// connection), publishing as `pubsub` says (sharded on a cluster).
    pub fn new(commands: Client, pubsub: PubSub, ttl: Duration) -> Self {
        Self {
            commands,
            create: Arc::new(pubsub.script(CREATE_RIDE_LUA)),
            change: Arc::new(pubsub.script(CHANGE_RIDE_LUA)),
            ttl_ms: clock::millis(ttl),
            clustered: pubsub == PubSub::Sharded,
        }
    }
}

#[async_trait]
impl RideStore for RedisRides {
    /// A random id, in `rider`'s slot on a cluster (see the module docs).
    fn new_id(&self, rider: &Id) -> Result<Id, getrandom::Error> {
        if self.clustered { id_in_slot_of(rider) } else { crate::rides::ride::new_ride_id() }
    }

    async fn create(&self, new: &NewRide, now_ms: u64) -> Result<CreateOutcome, BackendError> {
        // On a cluster the two keys must share a slot, as ids from `new_id` make them; any other
        // id is refused there by Redis (CROSSSLOT), and works on a single Redis.
        let (ride_key, index_key) = (channels::ride_key(&new.id), channels::rider_open_key(&new.rider));
        let args: Vec<fred::types::Value> = vec![
            now_ms.to_string().into(),
            new.id.as_str().into(),
            new.rider.as_str().into(),
            point_json(&new.pickup).into(),
            point_json(&new.dropoff).into(),
            self.ttl_ms.to_string().into(),
            channels::ride_status(&new.id).into(),
            channels::RIDE_KEY_PREFIX.into(),
            spaced(RIDE_STATUSES.into_iter().filter(|status| status.is_open())).into(),
        ];
        let reply: Vec<String> =
            self.create.evalsha_with_reload(&self.commands, vec![ride_key, index_key], args).await?;
        match reply.split_first() {
            Some((outcome, _)) if outcome == "taken" => Ok(CreateOutcome::IdTaken),
            Some((outcome, [open])) if outcome == "open" => match Id::parse(open) {
                Ok(open) => Ok(CreateOutcome::RiderHasOpenRide(open)),
                Err(_) => Err(BackendError::UnexpectedReply(reply_shape(&reply))),
            },
            Some((outcome, fields)) if outcome == "created" => {
                let ride = ride_from_fields(&new.id, pairs(fields)?)?;
                expect_status(&ride, RideStatus::Searching)?;
                Ok(CreateOutcome::Created(ride))
            }
            _ => Err(BackendError::UnexpectedReply(reply_shape(&reply))),
        }
    }

    async fn get(&self, id: &Id) -> Result<Option<Ride>, BackendError> {
        let fields: HashMap<String, String> = self.commands.hgetall(channels::ride_key(id)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(ride_from_fields(id, fields)?))
    }

    async fn change(&self, id: &Id, change: &RideChange, now_ms: u64) -> Result<RideChangeOutcome, BackendError> {
        let from = spaced(change.from_statuses().iter().copied());
        // What the change publishes (the `ts` is the script's): its driver and tracking token.
        let published = change.state(id, 0);
        let driver = published.driver_id.as_ref().map_or("", Id::as_str);
        // A JSON string, quoted and escaped by serde: the script inserts it as it is.
        let tracking_token = published
            .tracking_token
            .as_ref()
            .map(|token| serde_json::to_string(token).unwrap_or_default())
            .unwrap_or_default();
        let required_driver = change.required_driver().map_or("", Id::as_str);
        let args: Vec<fred::types::Value> = vec![
            now_ms.to_string().into(),
            id.as_str().into(),
            change.target().as_str().into(),
            from.into(),
            driver.into(),
            tracking_token.into(),
            self.ttl_ms.to_string().into(),
            channels::ride_status(id).into(),
            required_driver.into(),
            if change.target().is_final() { "1" } else { "0" }.into(),
            channels::RIDER_OPEN_PREFIX.into(),
        ];
        let reply: Vec<String> = self.change.evalsha_with_reload(&self.commands, channels::ride_key(id), args).await?;
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
            _ => Err(BackendError::UnexpectedReply(reply_shape(&reply))),
        }
    }
}

/// Statuses as a script matches them: each with a space before and after.
fn spaced(statuses: impl IntoIterator<Item = RideStatus>) -> String {
    statuses.into_iter().map(|status| format!(" {status} ")).collect()
}

/// A fresh ride id whose cluster slot is `rider`'s: 26 random hex digits, then 6 more counted
/// up from a random start until the slot matches (expected 16 384 tries; a 24-bit counter
/// covers every slot many times over).
///
/// # Errors
/// When the host has no entropy source.
pub fn id_in_slot_of(rider: &Id) -> Result<Id, getrandom::Error> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let target = fred::util::redis_keyslot(channels::rider_open_key(rider).as_bytes());
    let mut random = [0u8; 16];
    getrandom::fill(&mut random)?;
    let mut id = [0u8; 32];
    for (at, byte) in random.iter().enumerate() {
        id[2 * at] = HEX[usize::from(byte >> 4)];
        id[2 * at + 1] = HEX[usize::from(byte & 0x0f)];
    }
    // The id has no braces: its slot is the CRC16 of all of it, as in `ride:{id}`. The first 26
    // digits are fixed, so their CRC is taken once and each try adds only the last 6.
    let prefix = id[..26].iter().fold(0, |crc, &byte| crc16_step(crc, byte));
    let start = u32::from_be_bytes([0, random[13], random[14], random[15]]);
    for step in 0..(1u32 << 24) {
        let counter = (start.wrapping_add(step)) & 0x00ff_ffff;
        for (k, slot) in id[26..].iter_mut().enumerate() {
            *slot = HEX[((counter >> (20 - 4 * k)) & 0xf) as usize];
        }
        if id[26..].iter().fold(prefix, |crc, &byte| crc16_step(crc, byte)) & SLOT_MASK == target {
            break;
        }
    }
    let hex = std::str::from_utf8(&id).expect("hex digits are ASCII");
    Ok(Id::parse(hex).expect("32 hex digits are a valid id"))
}

/// Redis Cluster has 16 384 slots: a key's slot is the low 14 bits of its CRC16.
const SLOT_MASK: u16 = 0x3fff;

/// CRC16/XMODEM (polynomial 0x1021, initial 0), Redis Cluster's key hash, by table.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

/// The CRC16 after one more byte.
fn crc16_step(crc: u16, byte: u8) -> u16 {
    (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)]
}

/// A point as stored in a ride's hash.
fn point_json(point: &LatLng) -> String {
    // Two finite numbers: serializing cannot fail.
    serde_json::to_string(point).unwrap_or_default()
}

/// A flat `HGETALL` reply (`field, value, field, value, ...`) as pairs.
fn pairs(flat: &[String]) -> Result<impl Iterator<Item = (String, String)>, BackendError> {
    if !flat.len().is_multiple_of(2) {
        return Err(BackendError::UnexpectedReply(format!("a hash of an odd length ({})", flat.len())));
    }
    Ok(flat.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())))
}

/// A ride from its hash's fields (see the module docs), checked: anything missing or garbled is
/// [`BackendError::UnexpectedReply`], never a half-read ride. The error names the field, not
/// the values: `json` carries the ride's tracking token, and server failures are logged.
fn ride_from_fields(id: &Id, fields: impl IntoIterator<Item = (String, String)>) -> Result<Ride, BackendError> {
    let fields: HashMap<String, String> = fields.into_iter().collect();
    let garbled = |field: &str| BackendError::UnexpectedReply(format!("ride {id} with no valid field {field:?}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rides_id_is_in_its_riders_slot_and_still_random() {
        for rider in ["r1", "rider-with-a-longer-name", "web-0123456789"] {
            let rider = Id::parse(rider).expect("id");
            let (a, b) = (id_in_slot_of(&rider).expect("random"), id_in_slot_of(&rider).expect("random"));
            assert_ne!(a, b);
            for id in [&a, &b] {
                assert_eq!(id.as_str().len(), 32, "{id}");
                assert!(id.as_str().bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
                assert_eq!(
                    fred::util::redis_keyslot(channels::ride_key(id).as_bytes()),
                    fred::util::redis_keyslot(channels::rider_open_key(&rider).as_bytes()),
                    "ride {id} of {rider}"
                );
            }
        }
    }

    #[test]
    fn the_scripts_build_keys_as_channels_names_them() {
        let (ride, rider) = (Id::parse("ride-1").expect("id"), Id::parse("rider-1").expect("id"));
        assert_eq!(format!("{}{{{ride}}}", channels::RIDE_KEY_PREFIX), channels::ride_key(&ride));
        assert_eq!(format!("{}{{{rider}}}", channels::RIDER_OPEN_PREFIX), channels::rider_open_key(&rider));
    }
}
