//! Waiting on events with a bound, and saying what was expected when the bound is hit.
//!
//! Nothing in the suite synchronises by sleeping. The one exception is proving that something
//! does *not* happen: then a test watches for a bounded [`QUIET`] period and says so.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long anything the contract promises may take to show up. Generous because the suite
/// runs debug builds of several processes in parallel on small machines.
pub const EXPECT: Duration = Duration::from_secs(5);

/// How long a test watches to conclude that nothing arrives. Longer than the origin's default
/// ingest interval (200 ms), so a coalesced update would have been processed by then.
pub const QUIET: Duration = Duration::from_millis(800);

/// Awaits `fut`, failing the test with "timed out after .. waiting for `what`" past `limit`.
pub async fn within<F: Future>(limit: Duration, what: impl Display, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Re-runs `probe` (every 50 ms) until it returns `Some`, failing the test past `limit`.
///
/// For state that can only be observed by asking (`/readyz`, the polling endpoint).
pub async fn poll_until<T, F, Fut>(limit: Duration, what: impl Display, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The wall clock in epoch milliseconds, the unit of a location's `ts`.
pub fn now_ms() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// The wall clock in epoch seconds, the unit of a token's `exp`.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Device timestamps for one driver: strictly increasing, close to now (the origin refuses
/// timestamps far in the future).
#[derive(Debug)]
pub struct TsClock {
    last: u64,
}

impl TsClock {
    /// Starts a little in the past so that thousands of 1 ms steps stay behind the real clock.
    pub fn new() -> Self {
        Self { last: now_ms() - 60_000 }
    }

    /// The next timestamp, 1 ms after the previous one.
    pub fn tick(&mut self) -> u64 {
        self.last += 1;
        self.last
    }

    /// The last timestamp handed out.
    pub fn last(&self) -> u64 {
        self.last
    }
}

impl Default for TsClock {
    fn default() -> Self {
        Self::new()
    }
}
