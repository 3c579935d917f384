//! Chat in Redis: a Stream per ride (one total order for every instance) and a hash of the
//! `clientMsgId`s it holds, both changed by one script.
//!
//! The hash is trimmed with the stream: the script removes the oldest entries itself (instead of
//! `XADD MAXLEN ~`, which drops entries the script never sees) and deletes each one's dedupe
//! entry with it, so the hash names exactly the messages the stream holds, at most `max_len`.
//! Once a chat is full that is one entry out per entry in, O(1) per message, where sweeping the
//! hash for ids older than the oldest kept entry would cost O(`max_len`) per message. A lowered
//! `--chat-history-max` is caught up [`TRIM_BATCH`] entries per message, so no single script
//! blocks Redis for long.

use std::{collections::HashMap, fmt::Debug, sync::Arc, time::Duration};

use async_trait::async_trait;
use fred::{
    prelude::{Client, ClientLike},
    types::{Value, scripts::Script},
};
use ridecast_protocol::{
    Id,
    channels::{chat_ids_key, chat_stream_key},
    chat::{ChatMessage, ChatRole, MessageId},
};

use super::{Appended, ChatStore, dedupe_key};
use crate::bus::BackendError;

/// Most old entries one append removes (see the module docs).
pub const TRIM_BATCH: usize = 100;

/// Appends once per sender and `clientMsgId`: KEYS stream, dedupe hash; ARGV dedupe key, from,
/// text, clientMsgId, ts, max len, ttl ms, trim batch. Returns {new (0/1), id, fields}. Before
/// adding, removes the oldest entries beyond `max len - 1` (at most `trim batch`) and their dedupe
/// entries (`<from>:<cid>`, the key `dedupe_key` builds, when it still names that entry).
const APPEND_LUA: &str = r"
local earlier = redis.call('HGET', KEYS[2], ARGV[1])
if earlier then
  local entry = redis.call('XRANGE', KEYS[1], earlier, earlier)
  if entry[1] then return {0, entry[1][1], entry[1][2]} end
end
local excess = redis.call('XLEN', KEYS[1]) + 1 - tonumber(ARGV[6])
if excess > 0 then
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, tonumber(ARGV[8])))
  for _, e in ipairs(old) do
    local f, from, cid = e[2], nil, nil
    for i = 1, #f, 2 do
      if f[i] == 'from' then from = f[i + 1] elseif f[i] == 'cid' then cid = f[i + 1] end
    end
    if from and cid then
      local key = from .. ':' .. cid
      if redis.call('HGET', KEYS[2], key) == e[1] then redis.call('HDEL', KEYS[2], key) end
    end
    redis.call('XDEL', KEYS[1], e[1])
  end
end
local fields = {'from', ARGV[2], 'text', ARGV[3], 'cid', ARGV[4], 'ts', ARGV[5]}
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('HSET', KEYS[2], ARGV[1], id)
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return {1, id, fields}
";

/// Chat in Redis Streams (`chat:{rideId}`, and `chat:{rideId}:ids` for retries).
#[derive(Clone)]
pub struct RedisChat {
    client: Client,
    append: Arc<Script>,
    max_len: usize,
    ttl_ms: u64,
}

impl Debug for RedisChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChat")
            .field("max_len", &self.max_len)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl RedisChat {
    /// Chat through `client`; a ride's history lives `ttl` after its last message.
    pub fn new(client: Client, max_len: usize, ttl: Duration) -> Self {
        Self {
            client,
            append: Arc::new(Script::from_lua(APPEND_LUA)),
            max_len: max_len.max(1),
            ttl_ms: crate::base::clock::millis(ttl),
        }
    }
}

/// Names what was expected and the kind of value found, not the value: chat text is private.
fn unexpected(what: &str, value: &Value) -> BackendError {
    BackendError::UnexpectedReply(format!("{what} as a {:?}", value.kind()))
}

/// A stream entry (`[id, [field, value, ...]]` parts) as a message.
fn entry(id: &Value, fields: &Value) -> Result<ChatMessage, BackendError> {
    let id = id.as_string().ok_or_else(|| unexpected("entry id", id))?;
    let Value::Array(fields) = fields else { return Err(unexpected("entry fields", fields)) };
    let mut map = HashMap::new();
    for pair in fields.chunks(2) {
        if let [name, value] = pair {
            map.insert(name.as_string().unwrap_or_default(), value.as_string().unwrap_or_default());
        }
    }
    let from = map
        .get("from")
        .and_then(|raw| ChatRole::parse(raw))
        .ok_or_else(|| BackendError::UnexpectedReply("a chat entry without a valid sender".into()))?;
    Ok(ChatMessage {
        id,
        from,
        text: map.remove("text").unwrap_or_default(),
        ts: map.get("ts").and_then(|ts| ts.parse().ok()).unwrap_or_default(),
        client_msg_id: map.remove("cid").unwrap_or_default(),
    })
}

#[async_trait]
impl ChatStore for RedisChat {
    async fn append(
        &self,
        ride: &Id,
        from: ChatRole,
        client_msg_id: &str,
        text: &str,
        now_ms: u64,
    ) -> Result<Appended, BackendError> {
        let args: Vec<String> = vec![
            dedupe_key(from, client_msg_id),
            from.as_str().to_owned(),
            text.to_owned(),
            client_msg_id.to_owned(),
            now_ms.to_string(),
            self.max_len.to_string(),
            self.ttl_ms.to_string(),
            TRIM_BATCH.to_string(),
        ];
        let reply: Value = self
            .append
            .evalsha_with_reload(&self.client, vec![chat_stream_key(ride), chat_ids_key(ride)], args)
            .await?;
        let Value::Array(parts) = &reply else { return Err(unexpected("chat append", &reply)) };
        let [new, id, fields] = parts.as_slice() else { return Err(unexpected("chat append", &reply)) };
        Ok(Appended { message: entry(id, fields)?, new: new.as_i64() == Some(1) })
    }

    async fn history(
        &self,
        ride: &Id,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, BackendError> {
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let args: Vec<Value> = vec![
            chat_stream_key(ride).into(),
            start.into(),
            "+".into(),
            "COUNT".into(),
            Value::from(i64::try_from(limit).unwrap_or(i64::MAX)),
        ];
        let reply: Value = self.client.custom(fred::cmd!("XRANGE"), args).await?;
        let Value::Array(entries) = &reply else {
            return if reply.is_null() { Ok(Vec::new()) } else { Err(unexpected("XRANGE", &reply)) };
        };
        entries
            .iter()
            .map(|e| match e {
                Value::Array(pair) => match pair.as_slice() {
                    [id, fields] => entry(id, fields),
                    _ => Err(unexpected("XRANGE entry", e)),
                },
                other => Err(unexpected("XRANGE entry", other)),
            })
            .collect()
    }
}
