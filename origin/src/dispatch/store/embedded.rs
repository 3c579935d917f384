//! One process's dispatch state: the [`Book`] behind a mutex.

use std::{
    fmt::Debug,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use ridecast_protocol::{Id, messages::LatLng};

use super::DispatchStore;
use crate::{
    base::clock::millis,
    bus::BackendError,
    dispatch::{AcceptOutcome, AckOutcome, Offer, OfferAttempt, OfferLimits, RejectOutcome, book::Book},
};

/// How often the embedded book forgets what ended long ago.
const PRUNE_EVERY_MS: u64 = 60_000;

/// One process's dispatch state.
#[derive(Debug, Clone)]
pub struct EmbeddedDispatch {
    book: Arc<Mutex<Book>>,
    /// Ended offers and closed rides are forgotten this long after they ended.
    keep_ms: u64,
    last_prune: Arc<std::sync::atomic::AtomicU64>,
}

impl EmbeddedDispatch {
    /// A book that forgets ended offers, closed rides and idle offline drivers `keep` after
    /// they ended (the Redis store's keys expire after the same time).
    pub fn new(keep: Duration) -> Self {
        Self { book: Arc::default(), keep_ms: millis(keep), last_prune: Arc::default() }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // Every critical section is one book transition; see `Hubs::lock` on poisoning.
        self.book.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl DispatchStore for EmbeddedDispatch {
    async fn set_available(&self, driver: &Id, available: bool, now: u64) -> Result<(), BackendError> {
        self.book().set_available(driver, available, now);
        Ok(())
    }

    async fn set_position(&self, driver: &Id, at: LatLng, now: u64) -> Result<(), BackendError> {
        self.book().set_position(driver, at, now);
        Ok(())
    }

    async fn is_available(&self, driver: &Id) -> Result<bool, BackendError> {
        Ok(self.book().is_available(driver))
    }

    async fn candidates(
        &self,
        pickup: LatLng,
        radius_m: f64,
        now: u64,
        limits: OfferLimits,
        count: usize,
    ) -> Result<Vec<Id>, BackendError> {
        Ok(self.book().candidates(pickup, radius_m, now, limits.stale_ms, count))
    }

    async fn try_offer(&self, offer: &Offer, now: u64, limits: OfferLimits) -> Result<OfferAttempt, BackendError> {
        Ok(self.book().try_offer(offer, now, limits))
    }

    async fn current_offer(&self, driver: &Id) -> Result<Option<(Offer, bool)>, BackendError> {
        Ok(self.book().current_offer(driver))
    }

    async fn ack(&self, offer_id: &str, driver: &Id) -> Result<AckOutcome, BackendError> {
        Ok(self.book().ack(offer_id, driver))
    }

    async fn accept(&self, offer_id: &str, driver: &Id, now: u64) -> Result<AcceptOutcome, BackendError> {
        Ok(self.book().accept(offer_id, driver, now))
    }

    async fn reject(&self, offer_id: &str, driver: &Id) -> Result<RejectOutcome, BackendError> {
        Ok(self.book().reject(offer_id, driver))
    }

    async fn due(&self, now: u64, limit: usize) -> Result<Vec<String>, BackendError> {
        let mut book = self.book();
        // Every instance sweeps often, so the sweep is where the book is kept small.
        let last = self.last_prune.load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= PRUNE_EVERY_MS {
            self.last_prune.store(now, std::sync::atomic::Ordering::Relaxed);
            book.prune(now, self.keep_ms);
        }
        Ok(book.due(now, limit))
    }

    async fn expire(&self, offer_id: &str, now: u64) -> Result<Option<Offer>, BackendError> {
        Ok(self.book().expire(offer_id, now))
    }

    async fn close_ride(&self, ride: &Id, now: u64) -> Result<Vec<Offer>, BackendError> {
        Ok(self.book().close_ride(ride, now))
    }

    async fn has_live_offers(&self, ride: &Id) -> Result<bool, BackendError> {
        Ok(self.book().has_live_offers(ride))
    }

    async fn wait(&self, ride: &Id, retry_at: u64) -> Result<(), BackendError> {
        self.book().wait(ride, retry_at);
        Ok(())
    }

    async fn waiting_due(&self, now: u64, limit: usize, lease: Duration) -> Result<Vec<Id>, BackendError> {
        Ok(self.book().waiting_due(now, limit, millis(lease)))
    }
}
