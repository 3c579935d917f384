//! Concurrent streams and sockets per token, so that one leaked or shared token cannot hold an
//! instance's connections. Counted per instance: a token spread over N instances may hold N
//! times the cap. Edge links are not counted (every Durable Object shares the edge's token).
//!
//! Tokens are counted by a keyed hash, never stored: the map holds no credentials.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, MutexGuard},
};

/// A token already holds as many streams here as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this token already has {max} streams open here (--max-streams-per-token); close one first")]
pub struct TooManyStreams {
    pub max: u32,
}

/// Open streams per token on this instance. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenStreams {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    open: Mutex<HashMap<u64, u32>>,
    max: u32,
    hasher: RandomState,
}

impl TokenStreams {
    /// At most `max` streams per token.
    pub fn new(max: u32) -> Self {
        Self { inner: Arc::new(Inner { open: Mutex::default(), max: max.max(1), hasher: RandomState::new() }) }
    }

    /// A place for one more stream of the token `key` names, held until the permit is dropped.
    ///
    /// # Errors
    /// [`TooManyStreams`] when the token already has the maximum open here.
    pub fn acquire(&self, key: StreamKey) -> Result<StreamPermit, TooManyStreams> {
        let mut open = self.inner.lock();
        let count = open.entry(key.0).or_default();
        if *count >= self.inner.max {
            return Err(TooManyStreams { max: self.inner.max });
        }
        *count += 1;
        Ok(StreamPermit { streams: self.inner.clone(), key: key.0 })
    }

    /// Tokens with at least one stream open here.
    pub fn tokens(&self) -> usize {
        self.inner.lock().len()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, u32>> {
        // Single map operations; see `Hubs::lock` on poisoning.
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Which token a request carries, as counted here (a keyed hash of it). Extract it after the
/// request's authentication, and acquire the permit once every other check has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamKey(u64);

impl TokenStreams {
    /// The key `token` is counted under: a keyed hash, so the map holds no credentials.
    pub fn key(&self, token: &str) -> StreamKey {
        StreamKey(self.inner.hasher.hash_one(token))
    }
}

/// One stream's place in its token's count. Dropping it frees the place.
#[derive(Debug)]
pub struct StreamPermit {
    streams: Arc<Inner>,
    key: u64,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.streams.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_at_most_the_cap_and_gets_places_back_as_streams_close() {
        let streams = TokenStreams::new(2);
        let (a, b) = (StreamKey(1), StreamKey(2));
        let first = streams.acquire(a).expect("first");
        let _second = streams.acquire(a).expect("second");
        assert!(matches!(streams.acquire(a), Err(TooManyStreams { max: 2 })));
        let _other = streams.acquire(b).expect("another token has its own places");
        drop(first);
        let _again = streams.acquire(a).expect("a closed stream's place is free again");
        drop(_again);
        drop(_second);
        drop(_other);
        assert_eq!(streams.tokens(), 0, "nothing is kept for tokens without streams");
    }
}
