//! Draining: stop taking work, tell every open stream and socket to wrap up, wait a bounded time.
//!
//! Upgraded WebSockets and hand-served SSE streams live outside any HTTP server's own graceful
//! shutdown, so every long-lived loop watches this one [`Drain`] and holds a tracker token.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The instance's drain signal and the set of work it waits for. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    token: CancellationToken,
    tracker: TaskTracker,
    draining: Arc<AtomicBool>,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires when draining starts.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Work that draining waits for.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts draining: readiness turns false and every stream is told to end.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.token.cancel();
    }

    /// Waits until all tracked work has ended or `grace` has passed; returns whether it all ended.
    pub async fn wait(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }
}

/// Runs `sweep` until `shutdown` fires, often enough that what expires `ttl` after its last
/// change is forgotten soon after: every `ttl`, but at least every 30 s (a long TTL must not
/// leave expired entries for hours) and at most every 10 ms. How each embedded store forgets
/// what has expired, without a task that outlives the instance.
pub fn sweep_until(ttl: Duration, shutdown: CancellationToken, mut sweep: impl FnMut() + Send + 'static) {
    let period = ttl.clamp(Duration::from_millis(10), Duration::from_secs(30));
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => sweep(),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiting_gives_up_after_the_grace_period() {
        let drain = Drain::new();
        let _stuck = drain.tracker().token();
        drain.begin();
        assert!(drain.is_draining());
        assert!(!drain.wait(Duration::from_secs(30)).await);
    }

    #[tokio::test]
    async fn waiting_ends_as_soon_as_the_work_does() {
        let drain = Drain::new();
        let token = drain.token().clone();
        drain.tracker().spawn(async move { token.cancelled().await });
        drain.begin();
        assert!(drain.wait(Duration::from_secs(5)).await);
    }
}
