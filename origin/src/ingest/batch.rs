//! The batch writer: one task per instance writes every driver's fixes to a remote store, many
//! per round trip.
//!
//! A fix that changes cell (it will be pushed) wakes the writer at once. If a batch is already
//! on its way, the fix joins the next one, which leaves as soon as the first is answered: under
//! load batches grow, and no fix waits longer than one round trip behind another. A fix that
//! stays in its cell (stored, not pushed) does not wake the writer; it leaves with the next
//! batch, or after [`BatchSettings::in_cell_delay`] (50 ms) at the latest. So a rider
//! connecting, or a client polling, may read a position up to that much older than the newest:
//! never an older cell than the one pushed.
//!
//! Order between batches does not matter for correctness: the store keeps a driver's newest
//! `ts` whatever order its updates arrive in.
//!
//! Memory is bounded: at most [`BatchSettings::max_waiting`] fixes wait. Past that (the store
//! is stalled), new fixes are dropped and counted as failed; each driver's next fix takes its
//! place.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::outcomes::{StoreUnavailable, count};
use crate::{
    base::metrics::Metrics,
    bus::{Backend, LocationUpdate},
};

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// How long a fix that stays in its cell may wait for a batch to join.
    pub in_cell_delay: Duration,
    /// How many fixes may wait for the writer; past that, new ones are dropped.
    pub max_waiting: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        // 50 ms: a rider connecting or a client polling 2 s apart cannot tell; 50,000 fixes:
        // ~10 s of 5,000 drivers at 1 Hz, ~10 MiB, while the store is stalled.
        Self { in_cell_delay: Duration::from_millis(50), max_waiting: 50_000 }
    }
}

/// The submitting side of the writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: BatchSettings,
    waiting: Mutex<Waiting>,
    /// Told when a fix that changes cell arrives, or the first in-cell fix of a batch.
    wake: Notify,
    /// Whether the last batch failed: sessions tell their drivers (once per outage).
    failing: AtomicBool,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct Waiting {
    fixes: Vec<LocationUpdate>,
    /// A fix among them changes cell: write now.
    urgent: bool,
    /// When the oldest in-cell fix among them arrived.
    since: Option<Instant>,
}

impl Waiting {
    /// When the waiting fixes are due, if any wait.
    fn due(&self, in_cell_delay: Duration) -> Option<Instant> {
        if self.urgent { Some(Instant::now()) } else { self.since.map(|since| since + in_cell_delay) }
    }
}

impl Batcher {
    /// Starts the writer for `backend`; it writes what waits one last time on `shutdown`.
    pub fn spawn(
        backend: Arc<dyn Backend>,
        settings: BatchSettings,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        let shared = Arc::new(Shared {
            settings,
            waiting: Mutex::default(),
            wake: Notify::new(),
            failing: AtomicBool::new(false),
            metrics,
        });
        tokio::spawn(write_batches(shared.clone(), backend, shutdown));
        Self { shared }
    }

    /// Queues `fix` for the writer, waking it if the fix `changes_cell`.
    ///
    /// # Errors
    /// [`StoreUnavailable`] if the last batch failed, or the queue is full (the fix is dropped).
    pub fn submit(&self, fix: LocationUpdate, changes_cell: bool) -> Result<(), StoreUnavailable> {
        let wake = {
            let mut waiting = self.shared.lock();
            if waiting.fixes.len() >= self.shared.settings.max_waiting {
                drop(waiting);
                count(&self.shared.metrics, None);
                return Err(StoreUnavailable);
            }
            let first = waiting.fixes.is_empty();
            waiting.fixes.push(fix);
            if first && !changes_cell {
                waiting.since = Some(Instant::now());
            }
            // Wake the writer only when that changes when it is due: the first fix of a batch,
            // or the first that changes cell.
            let wake = first || (changes_cell && !waiting.urgent);
            waiting.urgent |= changes_cell;
            wake
        };
        if wake {
            self.shared.wake.notify_one();
        }
        if self.shared.failing.load(Ordering::Relaxed) { Err(StoreUnavailable) } else { Ok(()) }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Critical sections are a push or a swap; see `Hubs::lock` on poisoning.
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes what waits, leaving an empty queue (with the capacity of the last batch).
    fn take(&self, spare: &mut Vec<LocationUpdate>) {
        let mut waiting = self.lock();
        std::mem::swap(&mut waiting.fixes, spare);
        waiting.urgent = false;
        waiting.since = None;
    }
}

/// The writer: waits until something is due, writes it, and again, until `shutdown`.
async fn write_batches(shared: Arc<Shared>, backend: Arc<dyn Backend>, shutdown: CancellationToken) {
    let mut batch = Vec::new();
    loop {
        let due = shared.lock().due(shared.settings.in_cell_delay);
        let now = Instant::now();
        match due {
            Some(due) if due <= now => {}
            Some(due) => {
                tokio::select! {
                    () = shared.wake.notified() => continue,
                    () = tokio::time::sleep_until(due) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            None => {
                tokio::select! {
                    () = shared.wake.notified() => continue,
                    () = shutdown.cancelled() => {}
                }
            }
        }
        shared.take(&mut batch);
        write(&shared, backend.as_ref(), &batch).await;
        batch.clear();
        if shutdown.is_cancelled() {
            // Sessions end with the drain; what they handed in last is written above.
            return;
        }
    }
}

/// Writes one batch and counts what became of each fix.
async fn write(shared: &Shared, backend: &dyn Backend, batch: &[LocationUpdate]) {
    if batch.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let results = backend.ingest_locations(batch).await;
    shared.metrics.ingest_latency().observe(started.elapsed());
    let mut first_error = None;
    let mut failed = 0_usize;
    for result in &results {
        count(&shared.metrics, result.as_ref().ok().copied());
        if let Err(error) = result {
            failed += 1;
            first_error.get_or_insert(error);
        }
    }
    if let Some(error) = first_error {
        Metrics::inc(&shared.metrics.values().backend_errors_total);
        tracing::warn!(%error, failed, of = batch.len(), "locations not stored");
    }
    shared.failing.store(failed > 0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use bytes::Bytes;
    use ridecast_protocol::{GridCell, Id, Multiplier};
    use tokio::sync::{Semaphore, mpsc};

    use super::*;
    use crate::bus::{BackendError, IngestOutcome};

    /// A store that hands each batch it is given (the fixes' `ts`) to the test, once the test
    /// lets it through the gate, and fails while told to.
    #[derive(Debug)]
    struct Recording {
        batches: mpsc::UnboundedSender<Vec<u64>>,
        gate: Semaphore,
        failing: AtomicBool,
    }

    #[async_trait]
    impl Backend for Recording {
        async fn ingest_locations(&self, updates: &[LocationUpdate]) -> Vec<Result<IngestOutcome, BackendError>> {
            self.gate.acquire().await.expect("gate open").forget();
            let _ = self.batches.send(updates.iter().map(|update| update.ts).collect());
            let failing = self.failing.load(Ordering::Relaxed);
            updates
                .iter()
                .map(|_| {
                    if failing { Err(BackendError::UnexpectedReply("down".into())) } else { Ok(IngestOutcome::Stored) }
                })
                .collect()
        }

        fn stores_in_process(&self) -> bool {
            false
        }

        async fn set_surge(&self, _: &Id, _: Multiplier, _: u64) -> Result<Bytes, BackendError> {
            unreachable!("the batcher writes locations only")
        }

        async fn latest_location(&self, _: &Id) -> Result<Option<Bytes>, BackendError> {
            unreachable!("the batcher writes locations only")
        }

        async fn current_surge(&self, _: &Id) -> Result<Option<Bytes>, BackendError> {
            unreachable!("the batcher writes locations only")
        }

        async fn publish(&self, _: &str, _: Bytes) -> Result<(), BackendError> {
            unreachable!("the batcher writes locations only")
        }

        async fn subscribe(&self, _: Vec<String>) -> Result<(), BackendError> {
            unreachable!("the batcher writes locations only")
        }

        async fn unsubscribe(&self, _: Vec<String>) -> Result<(), BackendError> {
            unreachable!("the batcher writes locations only")
        }

        fn is_ready(&self) -> bool {
            true
        }
    }

    struct Rig {
        batcher: Batcher,
        store: Arc<Recording>,
        batches: mpsc::UnboundedReceiver<Vec<u64>>,
        metrics: Metrics,
        shutdown: CancellationToken,
    }

    /// A batcher over a [`Recording`] store whose gate lets `permits` writes through.
    fn rig(settings: BatchSettings, permits: usize) -> Rig {
        let (sender, batches) = mpsc::unbounded_channel();
        let store =
            Arc::new(Recording { batches: sender, gate: Semaphore::new(permits), failing: AtomicBool::new(false) });
        let (metrics, shutdown) = (Metrics::default(), CancellationToken::new());
        let batcher = Batcher::spawn(store.clone(), settings, metrics.clone(), shutdown.clone());
        Rig { batcher, store, batches, metrics, shutdown }
    }

    fn fix(driver: &str, ts: u64) -> LocationUpdate {
        let driver = Id::parse(driver).expect("id");
        LocationUpdate { driver, ts, cell: GridCell { row: 1, col: 1 }, json: Bytes::from_static(b"{}") }
    }

    const AN_HOUR: Duration = Duration::from_secs(3600);

    fn settings(in_cell_delay: Duration) -> BatchSettings {
        BatchSettings { in_cell_delay, ..BatchSettings::default() }
    }

    impl Rig {
        async fn next_batch(&mut self, what: &str) -> Vec<u64> {
            tokio::time::timeout(Duration::from_secs(5), self.batches.recv())
                .await
                .unwrap_or_else(|_| panic!("{what}: no batch written"))
                .expect("the store lives")
        }

        /// Proving an absence: nothing is written for `quiet`.
        async fn expect_no_batch(&mut self, quiet: Duration, why: &str) {
            if let Ok(Some(batch)) = tokio::time::timeout(quiet, self.batches.recv()).await {
                panic!("{why}, but a batch was written: {batch:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_cell_change_is_written_at_once_and_takes_the_waiting_in_cell_fixes_along() {
        let mut rig = rig(settings(AN_HOUR), usize::MAX >> 4);
        rig.batcher.submit(fix("d1", 1), false).expect("queued");
        rig.batcher.submit(fix("d2", 2), false).expect("queued");
        rig.expect_no_batch(Duration::from_millis(200), "in-cell fixes wait for company").await;
        rig.batcher.submit(fix("d3", 3), true).expect("queued");
        assert_eq!(rig.next_batch("a cell change").await, vec![1, 2, 3], "one batch, in order");
    }

    #[tokio::test(start_paused = true)]
    async fn in_cell_fixes_alone_are_written_after_the_delay_and_not_before() {
        let mut rig = rig(settings(Duration::from_millis(50)), usize::MAX >> 4);
        rig.batcher.submit(fix("d1", 1), false).expect("queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
        rig.batcher.submit(fix("d2", 2), false).expect("queued");
        rig.expect_no_batch(Duration::from_millis(39), "the first fix has waited less than 50 ms").await;
        assert_eq!(rig.next_batch("50 ms after the first in-cell fix").await, vec![1, 2]);
    }

    #[tokio::test]
    async fn fixes_arriving_while_a_batch_is_on_its_way_leave_together_with_the_next() {
        let mut rig = rig(settings(AN_HOUR), 0);
        rig.batcher.submit(fix("d1", 1), true).expect("queued");
        // The first batch is held at the store; three more cell changes arrive meanwhile.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for ts in 2..=4 {
            rig.batcher.submit(fix(&format!("d{ts}"), ts), true).expect("queued");
        }
        rig.store.gate.add_permits(2);
        assert_eq!(rig.next_batch("the first").await, vec![1]);
        assert_eq!(rig.next_batch("the second").await, vec![2, 3, 4], "one round trip for all that waited");
    }

    #[tokio::test]
    async fn while_the_store_is_stalled_fixes_past_the_limit_are_refused_and_counted_as_failed() {
        let mut rig = rig(BatchSettings { in_cell_delay: AN_HOUR, max_waiting: 2 }, 0);
        rig.batcher.submit(fix("d1", 1), true).expect("queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
        rig.batcher.submit(fix("d2", 2), true).expect("queued");
        rig.batcher.submit(fix("d3", 3), true).expect("queued");
        assert_eq!(rig.batcher.submit(fix("d4", 4), true), Err(StoreUnavailable), "the limit is 2 waiting");
        assert_eq!(rig.metrics.values().updates_failed_total.load(Ordering::Relaxed), 1);
        rig.store.gate.add_permits(2);
        assert_eq!(rig.next_batch("the stalled one").await, vec![1]);
        assert_eq!(rig.next_batch("the two that waited").await, vec![2, 3]);
    }

    #[tokio::test]
    async fn a_failed_batch_is_told_to_submitters_until_a_batch_is_stored_again() {
        let mut rig = rig(settings(AN_HOUR), usize::MAX >> 4);
        rig.store.failing.store(true, Ordering::Relaxed);
        rig.batcher.submit(fix("d1", 1), true).expect("nothing has failed yet");
        rig.next_batch("the failing one").await;
        // The writer records the failure after the store answers.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(rig.batcher.submit(fix("d1", 2), true), Err(StoreUnavailable));
        rig.next_batch("failing again").await;
        rig.store.failing.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = rig.batcher.submit(fix("d1", 3), true);
        rig.next_batch("stored").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(rig.batcher.submit(fix("d1", 4), true), Ok(()), "the store is back");
        assert_eq!(rig.metrics.values().updates_failed_total.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn what_waits_is_written_when_the_instance_shuts_down() {
        let mut rig = rig(settings(AN_HOUR), usize::MAX >> 4);
        rig.batcher.submit(fix("d1", 1), false).expect("queued");
        rig.expect_no_batch(Duration::from_millis(100), "an in-cell fix waits").await;
        rig.shutdown.cancel();
        assert_eq!(rig.next_batch("on shutdown").await, vec![1]);
    }
}
