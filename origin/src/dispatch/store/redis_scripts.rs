//! The dispatch transitions of [`Book`](crate::dispatch::book::Book), as Lua scripts: each runs atomically in
//! Redis, so any number of instances can offer, accept and sweep the same rides at once.
//!
//! Keys (`{p}` is the prefix [`KEY_PREFIX`], `dispatch:{dispatch}:`): `{p}geo` (GEO set of online drivers' positions),
//! `{p}driver:{id}` (hash: available, seen, lat, lng, offer, ride), `{p}offer:{id}` (hash: json,
//! state, acked, driver, ride, expires), `{p}ride:{id}` (hash: closed), `{p}ride:{id}:live` and
//! `{p}ride:{id}:tried` (sets), `{p}deadlines` (sorted set of pending offers by deadline),
//! `{p}waiting` (sorted set of searching rides with nobody to ask yet, by next search).
//!
//! A transition touches keys of one ride, its offers, their drivers and the shared sets, which
//! it derives inside the script from ids. On a Redis Cluster every key a script touches must be
//! on the shard that runs it, so all of them share one hash tag, `{dispatch}`, and every script
//! is called with the prefix as its one declared key (`KEYS[1]`), which routes it there. The
//! price: dispatch state lives on one shard, whatever the cluster's size (BENCHMARKS.md,
//! capacity plan, says when that starts to matter and how to partition it by region).
//!
//! Every per-driver, per-offer and per-ride key expires `ttl` ms after the last script that
//! touched it. The shared sets have no TTL: the GEO set loses a driver when it goes offline,
//! wins a ride, or is found stale by an offer attempt; `{p}deadlines` loses an offer when it
//! ends, `{p}waiting` a ride when a sweep takes it or the ride is closed.

/// The prefix of every dispatch key; its hash tag puts them all in one cluster slot.
pub const KEY_PREFIX: &str = "dispatch:{dispatch}:";

/// Shared helpers, prepended to every script. `KEYS[1]` is [`KEY_PREFIX`].
const PRELUDE: &str = r"
local p = KEYS[1]
local function dkey(id) return p .. 'driver:' .. id end
local function okey(id) return p .. 'offer:' .. id end
local function rkey(id) return p .. 'ride:' .. id end
local function touch(key, ttl) redis.call('PEXPIRE', key, ttl) end
-- Puts an online, free driver with a known position (back) into the GEO set.
local function place(d)
  local f = redis.call('HMGET', dkey(d), 'available', 'lat', 'lng', 'ride', 'offer')
  if f[1] == '1' and f[2] and not f[4] and not f[5] then
    redis.call('GEOADD', p .. 'geo', f[3], f[2], d)
  else
    redis.call('ZREM', p .. 'geo', d)
  end
end
-- Ends a pending offer in `state`; returns its json, or false if it was not pending. An offer
-- ending without a winner puts its ride up for another search at once.
local function end_offer(oid, state, ttl)
  local o = okey(oid)
  local f = redis.call('HMGET', o, 'state', 'driver', 'ride', 'json')
  if f[1] ~= 'pending' then return false end
  redis.call('HSET', o, 'state', state)
  touch(o, ttl)
  redis.call('SREM', rkey(f[3]) .. ':live', oid)
  redis.call('ZREM', p .. 'deadlines', oid)
  if redis.call('HGET', dkey(f[2]), 'offer') == oid then
    redis.call('HDEL', dkey(f[2]), 'offer')
  end
  if state ~= 'accepted' then place(f[2]) end
  if (state == 'rejected' or state == 'expired') and redis.call('HGET', rkey(f[3]), 'closed') ~= '1' then
    redis.call('ZADD', p .. 'waiting', 0, f[3])
  end
  return f[4]
end
";

/// ARGV: driver, available (0/1), now, ttl. Going offline leaves the GEO set; going online
/// also ends the ride the driver won, if any (as `completed` does: a v1 app never sends it).
pub const SET_AVAILABLE: &str = r"
local d, available, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = dkey(d)
redis.call('HSET', k, 'available', available, 'seen', now)
if available == '1' then redis.call('HDEL', k, 'ride') end
touch(k, ttl)
place(d)
return 1
";

/// ARGV: driver, lat, lng, now, ttl. An online, free driver's position joins the GEO set.
pub const SET_POSITION: &str = r"
local d, lat, lng, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local k = dkey(d)
redis.call('HSET', k, 'lat', lat, 'lng', lng, 'seen', now)
touch(k, ttl)
place(d)
return 1
";

/// ARGV: offer id, driver, ride, offer json, expires, now, max attempts, fanout, stale ms, ttl.
/// Returns 0 created, 1 driver unavailable, 2 ride full, 3 ride closed, 4 exhausted.
pub const TRY_OFFER: &str = r"
local oid, d, r, json, expires, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local max_attempts, fanout, stale, ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local rk = rkey(r)
if redis.call('HGET', rk, 'closed') == '1' then return 3 end
if redis.call('SCARD', rk .. ':tried') >= max_attempts then return 4 end
if redis.call('SCARD', rk .. ':live') >= fanout then return 2 end
if redis.call('SISMEMBER', rk .. ':tried', d) == 1 then return 1 end
local dk = dkey(d)
local f = redis.call('HMGET', dk, 'available', 'ride', 'offer', 'seen')
if f[1] ~= '1' or f[2] or f[3] or not f[4] or now - tonumber(f[4]) > stale then
  -- Not offerable: out of the GEO set until it is again (busy drivers return when freed).
  if f[1] ~= '1' or not f[4] or now - tonumber(f[4]) > stale then redis.call('ZREM', p .. 'geo', d) end
  return 1
end
redis.call('HSET', dk, 'offer', oid)
touch(dk, ttl)
-- Holding an offer: out of the search until it ends.
redis.call('ZREM', p .. 'geo', d)
redis.call('ZREM', p .. 'waiting', r)
redis.call('SADD', rk .. ':live', oid)
redis.call('SADD', rk .. ':tried', d)
redis.call('HSET', rk, 'closed', '0')
for _, key in ipairs({rk, rk .. ':live', rk .. ':tried'}) do touch(key, ttl) end
local o = okey(oid)
redis.call('HSET', o, 'json', json, 'state', 'pending', 'acked', '0', 'driver', d, 'ride', r, 'expires', expires)
touch(o, ttl)
redis.call('ZADD', p .. 'deadlines', expires, oid)
return 0
";

/// ARGV: lng, lat, radius m, count. Online drivers nearest first (the offer attempt checks the
/// rest: free, fresh, not offered this ride).
pub const CANDIDATES: &str = r"
return redis.call('GEOSEARCH', p .. 'geo', 'FROMLONLAT', ARGV[1], ARGV[2], 'BYRADIUS', ARGV[3], 'm', 'ASC', 'COUNT', ARGV[4])
";

/// ARGV: now, limit. Pending offers whose deadline has passed, oldest first.
pub const DUE: &str = r"
return redis.call('ZRANGE', p .. 'deadlines', '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
";

/// ARGV: driver. Returns {json, acked} of the driver's pending offer, or nil.
pub const CURRENT_OFFER: &str = r"
local oid = redis.call('HGET', dkey(ARGV[1]), 'offer')
if not oid then return nil end
local f = redis.call('HMGET', okey(oid), 'state', 'json', 'acked')
if f[1] ~= 'pending' then return nil end
return {f[2], f[3]}
";

/// ARGV: offer id, driver. Returns {'acked'} | {'not_pending', state} | {'not_yours'} | {'unknown'}.
pub const ACK: &str = r"
local o = okey(ARGV[1])
local f = redis.call('HMGET', o, 'state', 'driver')
if not f[1] then return {'unknown'} end
if f[2] ~= ARGV[2] then return {'not_yours'} end
if f[1] ~= 'pending' then return {'not_pending', f[1]} end
redis.call('HSET', o, 'acked', '1')
return {'acked'}
";

/// ARGV: offer id, driver, now, ttl. Returns {'confirmed', ride, taken json...} |
/// {'expired', ride} | {'ended', state} | {'already'} | {'not_yours'} | {'unknown'}.
pub const ACCEPT: &str = r"
local oid, d, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local f = redis.call('HMGET', okey(oid), 'state', 'driver', 'ride', 'expires')
if not f[1] then return {'unknown'} end
if f[2] ~= d then return {'not_yours'} end
if f[1] == 'accepted' then return {'already'} end
if f[1] ~= 'pending' then return {'ended', f[1]} end
local r = f[3]
if now >= tonumber(f[4]) then
  end_offer(oid, 'expired', ttl)
  return {'expired', r}
end
local out = {'confirmed', r}
for _, other in ipairs(redis.call('SMEMBERS', rkey(r) .. ':live')) do
  if other ~= oid then
    local json = end_offer(other, 'taken', ttl)
    if json then table.insert(out, json) end
  end
end
end_offer(oid, 'accepted', ttl)
redis.call('HSET', rkey(r), 'closed', '1', 'driver', d, 'winner', oid)
touch(rkey(r), ttl)
redis.call('HSET', dkey(d), 'ride', r)
touch(dkey(d), ttl)
redis.call('ZREM', p .. 'geo', d)
return out
";

/// ARGV: offer id, driver, ttl. Returns {'rejected', ride} | {'not_pending', state} |
/// {'not_yours'} | {'unknown'}.
pub const REJECT: &str = r"
local f = redis.call('HMGET', okey(ARGV[1]), 'state', 'driver', 'ride')
if not f[1] then return {'unknown'} end
if f[2] ~= ARGV[2] then return {'not_yours'} end
if f[1] ~= 'pending' then return {'not_pending', f[1]} end
end_offer(ARGV[1], 'rejected', ARGV[3])
return {'rejected', f[3]}
";

/// ARGV: offer id, now, ttl. Returns the offer's json if this call expired it, else nil.
pub const EXPIRE: &str = r"
local f = redis.call('HMGET', okey(ARGV[1]), 'state', 'expires')
if f[1] ~= 'pending' or tonumber(f[2]) > tonumber(ARGV[2]) then
  if not f[1] then redis.call('ZREM', p .. 'deadlines', ARGV[1]) end
  return nil
end
return end_offer(ARGV[1], 'expired', ARGV[3])
";

/// ARGV: ride, ttl. Closes the ride for dispatch; returns the json of the offers it cancelled.
/// Its driver, if one won it, is free again (and back in the GEO set if online).
pub const CLOSE_RIDE: &str = r"
local r, ttl = ARGV[1], ARGV[2]
local rk = rkey(r)
redis.call('ZREM', p .. 'waiting', r)
redis.call('HSET', rk, 'closed', '1')
touch(rk, ttl)
local out = {}
for _, oid in ipairs(redis.call('SMEMBERS', rk .. ':live')) do
  local json = end_offer(oid, 'cancelled', ttl)
  if json then table.insert(out, json) end
end
local winner, won = redis.call('HGET', rk, 'driver'), redis.call('HGET', rk, 'winner')
if winner and redis.call('HGET', dkey(winner), 'ride') == r then
  redis.call('HDEL', dkey(winner), 'ride')
  place(winner)
  if won then
    local json = redis.call('HGET', okey(won), 'json')
    if json then table.insert(out, json) end
  end
end
return out
";

/// ARGV: ride, retry at. The ride found nobody: search again then (unless it is closed).
pub const WAIT: &str = r"
if redis.call('HGET', rkey(ARGV[1]), 'closed') == '1' then return 0 end
redis.call('ZADD', p .. 'waiting', ARGV[2], ARGV[1])
return 1
";

/// ARGV: now, limit, lease ms. The waiting rides due for another search, each handed to one
/// caller per lease: its time moves on by the lease, and only an offer made (TRY_OFFER) or the
/// ride closing takes it out, so a searcher dying loses nothing.
pub const WAITING_DUE: &str = r"
local due = redis.call('ZRANGE', p .. 'waiting', '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
local next_at = tonumber(ARGV[1]) + tonumber(ARGV[3])
for _, ride in ipairs(due) do redis.call('ZADD', p .. 'waiting', next_at, ride) end
return due
";

/// ARGV: driver. 1 if it said it is online for offers (and not otherwise since), else 0.
pub const IS_AVAILABLE: &str = r"
if redis.call('HGET', dkey(ARGV[1]), 'available') == '1' then return 1 end
return 0
";

/// ARGV: ride. How many of its offers wait for an answer.
pub const LIVE_OFFERS: &str = r"
return redis.call('SCARD', rkey(ARGV[1]) .. ':live')
";

/// A script with the prelude, ready for `Script::from_lua`.
pub fn with_prelude(body: &str) -> String {
    format!("{PRELUDE}{body}")
}
