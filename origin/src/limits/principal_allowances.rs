//! Rate allowances kept per principal on this instance (a driver, one side of a ride's chat, a
//! rider creating rides), not per connection: a client that reconnects finds its allowance as
//! it left it, so reconnecting does not refill it.
//!
//! Principals are kept by a keyed hash, never stored. Memory is bounded by use: an entry whose
//! bucket has refilled to full is the same as no entry, so such entries are dropped whenever the
//! map has doubled since the last sweep (at least [`SWEEP_FLOOR`] entries). The map therefore
//! holds at most `max(SWEEP_FLOOR, 2 × n)` entries of ~32 bytes, where `n` is the number of
//! principals that used the allowance within the last `burst / per_second` seconds (the time a
//! bucket takes to refill). Per instance: a principal spread over N instances gets N allowances.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::time::Instant;

use super::allowance::{Allowance, RateLimit};

/// Entries below which the map is never swept.
pub const SWEEP_FLOOR: usize = 1_024;

/// One limit's allowances, by principal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PrincipalAllowances {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: RateLimit,
    hasher: RandomState,
    map: Mutex<Allowances>,
}

#[derive(Debug)]
struct Allowances {
    by_key: HashMap<u64, Allowance>,
    sweep_at: usize,
}

impl PrincipalAllowances {
    /// Every principal gets `limit`, starting full.
    pub fn new(limit: RateLimit) -> Self {
        let map = Mutex::new(Allowances { by_key: HashMap::new(), sweep_at: SWEEP_FLOOR });
        Self { inner: Arc::new(Inner { limit, hasher: RandomState::new(), map }) }
    }

    /// The limit each principal gets.
    pub fn limit(&self) -> RateLimit {
        self.inner.limit
    }

    /// Takes one from `principal`'s allowance at `now`.
    ///
    /// # Errors
    /// The time until one more would be allowed, when the allowance is spent (nothing taken).
    pub fn take(&self, principal: &impl Hash, now: Instant) -> Result<(), Duration> {
        let key = self.inner.hasher.hash_one(principal);
        let limit = self.inner.limit;
        let mut map = self.inner.lock();
        if map.by_key.len() >= map.sweep_at {
            map.by_key.retain(|_, allowance| !allowance.is_full(limit, now));
            map.sweep_at = (map.by_key.len() * 2).max(SWEEP_FLOOR);
        }
        map.by_key.entry(key).or_insert_with(|| Allowance::full(limit, now)).take_or_wait(limit, now)
    }

    /// Principals with an entry (for tests and the memory bound).
    pub fn len(&self) -> usize {
        self.inner.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Allowances> {
        // One map operation (or one sweep) per lock, never across an await; see `Hubs::lock` on
        // poisoning.
        self.map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit { per_second: 1.0, burst: 2 };

    #[test]
    fn a_principal_keeps_its_allowance_and_others_have_their_own() {
        let allowances = PrincipalAllowances::new(LIMIT);
        let now = Instant::now();
        assert!(allowances.take(&"d-1", now).is_ok());
        assert!(allowances.take(&"d-1", now).is_ok());
        let wait = allowances.take(&"d-1", now).expect_err("spent");
        assert_eq!(wait, Duration::from_secs(1), "one refills in a second");
        assert!(allowances.take(&"d-2", now).is_ok(), "another principal");
        assert!(allowances.take(&"d-1", now + Duration::from_secs(1)).is_ok(), "refilled at the rate");
    }

    #[test]
    fn refilled_entries_are_dropped_so_memory_follows_recent_use() {
        let allowances = PrincipalAllowances::new(LIMIT);
        let start = Instant::now();
        for k in 0..SWEEP_FLOOR {
            let _ = allowances.take(&k, start);
        }
        assert_eq!(allowances.len(), SWEEP_FLOOR);
        // Two seconds later every bucket is full again: the next take sweeps them all.
        let later = start + Duration::from_secs(2);
        assert!(allowances.take(&"new", later).is_ok());
        assert_eq!(allowances.len(), 1, "only the principal just seen is kept");
    }
}
