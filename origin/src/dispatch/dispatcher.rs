//! The matcher: turns ride requests into offers, drivers' answers into assignments, and
//! deadlines into reassignments. Every instance runs one; they coordinate only through the
//! [`DispatchStore`], whose transitions are atomic, so any instance may handle any step of any
//! ride, including the steps of an instance that died.

use std::{sync::Arc, time::Duration};

use ridecast_protocol::{
    ErrorCode, Id, RideStatus, RideStep,
    messages::{OfferResult, ProgressResult, ServerMessage},
};
use tokio_util::sync::CancellationToken;

use super::{
    AcceptOutcome, AckOutcome, Offer, OfferAttempt, OfferLimits, RejectOutcome, post::DriverPost, result_of,
    store::DispatchStore,
};
use crate::{
    base::{
        clock::{self, millis},
        metrics::{MetricValues, Metrics},
    },
    bus::BackendError,
    rides::{Ride, RideChangeOutcome, RideError, Rides},
};

/// How candidates are found and offers made.
#[derive(Debug, Clone, Copy)]
pub struct DispatchConfig {
    /// Only drivers this close to the pickup are offered a ride.
    pub radius_m: f64,
    /// How long a driver has to accept.
    pub offer_ttl: Duration,
    /// How often an offer is sent again until the driver acknowledges it.
    pub resend: Duration,
    pub limits: OfferLimits,
    /// How often each instance looks for offers past their deadline and rides to search again.
    pub sweep: Duration,
    /// How long a ride keeps searching while nobody is available before it ends `no_driver`.
    pub search_timeout: Duration,
    /// How often a ride with nobody to ask is searched again.
    pub search_retry: Duration,
}

/// Candidates fetched per search, nearest first. No more are fetched when all of these turn
/// out unavailable: the ride then waits for its next search.
const CANDIDATES_PER_SEARCH: usize = 16;
/// Offers expired per sweep at most; the next sweep takes the rest.
const SWEEP_BATCH: usize = 256;
/// How long a ride handed out for another search is left to its searcher before any instance
/// searches it again (so a searcher dying mid-search loses nothing).
const SEARCH_LEASE: Duration = Duration::from_secs(5);

/// What a driver's answer to an offer gets back on its socket, besides effects elsewhere.
pub type Reply = Option<ServerMessage>;

/// Matches rides to drivers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: Arc<dyn DispatchStore>,
    rides: Rides,
    post: DriverPost,
    config: DispatchConfig,
    metrics: Metrics,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn DispatchStore>,
        rides: Rides,
        post: DriverPost,
        config: DispatchConfig,
        metrics: Metrics,
    ) -> Self {
        Self { store, rides, post, config, metrics }
    }

    /// The post drivers' sessions register with.
    pub fn post(&self) -> &DriverPost {
        &self.post
    }

    /// The store, for the sessions' availability and positions.
    pub fn store(&self) -> &dyn DispatchStore {
        self.store.as_ref()
    }

    /// How often a session resends an unacknowledged offer.
    pub fn resend_interval(&self) -> Duration {
        self.config.resend
    }

    fn values(&self) -> &MetricValues {
        self.metrics.values()
    }

    /// A new ride: offer it to the nearest available driver(s), or have it searched again.
    pub async fn ride_created(&self, ride: &Ride) {
        // First on the waiting list (taken off by the first offer made): if this instance dies
        // before offering, another one searches it after the lease.
        let first = async {
            self.store.wait(&ride.id, clock::now_ms() + millis(SEARCH_LEASE)).await?;
            self.offer_next(ride).await
        };
        if let Err(error) = first.await {
            // Neither offered nor waiting: give up on it rather than leave it searching with
            // nothing that will ever look at it again.
            tracing::warn!(ride.id = %ride.id, %error, "could not offer a new ride");
            let _ = self.give_up(&ride.id).await;
        }
    }

    /// Offers `ride` to further drivers until it has its number of live offers. With nobody to
    /// ask and no offer open, it waits for another search, or gives up once it has searched
    /// for [`DispatchConfig::search_timeout`].
    async fn offer_next(&self, ride: &Ride) -> Result<(), BackendError> {
        let now = clock::now_ms();
        let limits = self.config.limits;
        let mut made = 0;
        let candidates =
            self.store.candidates(ride.pickup, self.config.radius_m, now, limits, CANDIDATES_PER_SEARCH).await?;
        for driver in candidates {
            let offer = Offer {
                offer_id: new_offer_id(),
                ride_id: ride.id.clone(),
                driver: driver.clone(),
                pickup: ride.pickup,
                dropoff: ride.dropoff,
                expires_at: now + millis(self.config.offer_ttl),
            };
            match self.store.try_offer(&offer, now, limits).await? {
                OfferAttempt::Created => {
                    Metrics::inc(&self.values().offers_sent_total);
                    made += 1;
                    if let Err(error) = self.post.send(&driver, offer.frame()).await {
                        // Stored: the driver gets it on (re)connect or the deadline moves on.
                        tracing::warn!(%error, offer.id = %offer.offer_id, "offer stored but not delivered now");
                    }
                    if made >= limits.fanout {
                        return Ok(());
                    }
                }
                OfferAttempt::DriverUnavailable => {}
                OfferAttempt::RideFull | OfferAttempt::RideClosed => return Ok(()),
                OfferAttempt::Exhausted => {
                    // Asked as many drivers as it may: over as soon as no offer is open.
                    if !self.store.has_live_offers(&ride.id).await? {
                        self.give_up(&ride.id).await?;
                    }
                    return Ok(());
                }
            }
        }
        if made == 0 && !self.store.has_live_offers(&ride.id).await? {
            let searching_for = now.saturating_sub(ride.created_ms);
            if searching_for >= millis(self.config.search_timeout) {
                self.give_up(&ride.id).await?;
            } else {
                let retry = millis(self.config.search_retry).min(millis(self.config.search_timeout) - searching_for);
                self.store.wait(&ride.id, now + retry).await?;
            }
        }
        Ok(())
    }

    /// Nobody (else) to offer the ride to: `no_driver`.
    async fn give_up(&self, ride: &Id) -> Result<(), BackendError> {
        // An offer another instance made meanwhile ends too, and its driver is told.
        for offer in self.store.close_ride(ride, clock::now_ms()).await? {
            let _ = self.post.send(&offer.driver, offer.result(OfferResult::Cancelled)).await;
        }
        if matches!(self.rides.no_driver(ride).await?, RideChangeOutcome::Applied(_)) {
            Metrics::inc(&self.values().rides_unmatched_total);
        }
        Ok(())
    }

    /// Goes on with `ride` after one of its offers ended without a winner.
    async fn move_on(&self, ride: &Id) {
        let result = async {
            match self.rides.get(ride).await? {
                Some(ride) if ride.status == RideStatus::Searching => self.offer_next(&ride).await,
                _ => Ok(()),
            }
        };
        if let Err(error) = result.await {
            // Still on the waiting list (an offer ending puts it there; only an offer made or
            // the ride closing takes it off): a sweep searches it again.
            tracing::warn!(ride.id = %ride, %error, "could not move a ride on; a sweep retries");
        }
    }

    /// `offer_ack` from `driver`.
    pub async fn ack(&self, driver: &Id, offer_id: &str) -> Result<Reply, BackendError> {
        Ok(match self.store.ack(offer_id, driver).await? {
            AckOutcome::Acked => None,
            AckOutcome::NotPending(state) => result_of(state).map(|r| result_frame(offer_id, r)),
            AckOutcome::NotYours => Some(not_yours(offer_id)),
            AckOutcome::Unknown => Some(unknown(offer_id)),
        })
    }

    /// `accept` from `driver`.
    pub async fn accept(&self, driver: &Id, offer_id: &str) -> Result<Reply, BackendError> {
        let outcome = self.store.accept(offer_id, driver, clock::now_ms()).await?;
        Ok(match outcome {
            AcceptOutcome::Confirmed { ride, taken } => {
                for offer in taken {
                    let _ = self.post.send(&offer.driver, offer.result(OfferResult::Taken)).await;
                }
                Some(self.assign(&ride, driver, offer_id).await?)
            }
            AcceptOutcome::Expired { ride } => {
                self.move_on(&ride).await;
                Some(result_frame(offer_id, OfferResult::Expired))
            }
            AcceptOutcome::Ended(state) => {
                Some(result_frame(offer_id, result_of(state).unwrap_or(OfferResult::Expired)))
            }
            AcceptOutcome::AlreadyAccepted => {
                Some(ServerMessage::error(ErrorCode::Conflict, format!("offer {offer_id:?} is already accepted")))
            }
            AcceptOutcome::NotYours => Some(not_yours(offer_id)),
            AcceptOutcome::Unknown => Some(unknown(offer_id)),
        })
    }

    /// The driver won the ride in the dispatch store; now the ride itself.
    async fn assign(&self, ride_id: &Id, driver: &Id, offer_id: &str) -> Result<ServerMessage, BackendError> {
        let assigned = match self.rides.get(ride_id).await? {
            Some(ride) => match self.rides.assign(&ride, driver).await {
                Ok(outcome) => matches!(outcome, RideChangeOutcome::Applied(_)),
                Err(RideError::Backend(error)) => return Err(error),
                Err(other) => {
                    tracing::error!(error = %other, ride.id = %ride_id, "could not assign a ride");
                    false
                }
            },
            None => false,
        };
        if assigned {
            Metrics::inc(&self.values().rides_assigned_total);
            Ok(result_frame(offer_id, OfferResult::Confirmed))
        } else {
            // Cancelled between the accept and now: the driver is free again.
            self.store.close_ride(ride_id, clock::now_ms()).await?;
            Ok(result_frame(offer_id, OfferResult::Cancelled))
        }
    }

    /// `reject` from `driver`.
    pub async fn reject(&self, driver: &Id, offer_id: &str) -> Result<Reply, BackendError> {
        Ok(match self.store.reject(offer_id, driver).await? {
            RejectOutcome::Rejected { ride } => {
                self.move_on(&ride).await;
                None
            }
            RejectOutcome::NotPending(state) => result_of(state).map(|r| result_frame(offer_id, r)),
            RejectOutcome::NotYours => Some(not_yours(offer_id)),
            RejectOutcome::Unknown => Some(unknown(offer_id)),
        })
    }

    /// The rider cancelled: the drivers holding offers of the ride are told.
    pub async fn ride_cancelled(&self, ride: &Id) -> Result<(), BackendError> {
        for offer in self.store.close_ride(ride, clock::now_ms()).await? {
            let _ = self.post.send(&offer.driver, offer.result(OfferResult::Cancelled)).await;
        }
        Ok(())
    }

    /// `ride_progress` from `driver`: the step goes to the ride ([`Rides::progress`]), and once
    /// the ride is `completed` the driver is free for offers again, without a new
    /// `availability` (it said it was online before it won the ride). Freeing is repeated with
    /// every `ok` to `completed`, so a driver retrying after a failure here is freed then.
    ///
    /// # Errors
    /// [`BackendError`] when a store is unreachable.
    pub async fn ride_progress(&self, driver: &Id, ride: &Id, step: RideStep) -> Result<Reply, BackendError> {
        let result = match self.rides.progress(driver, ride, step).await {
            Ok(result) => result,
            Err(RideError::Backend(error)) => return Err(error),
            Err(other) => {
                tracing::error!(error = %other, ride.id = %ride, "could not record a ride's step");
                let message = "the step could not be recorded; send it again";
                return Ok(Some(ServerMessage::error(ErrorCode::Internal, message)));
            }
        };
        if result == ProgressResult::Ok && step == RideStep::Completed {
            // No offer of a ride under way is live; should one be (a race with its accept), its
            // driver hears the ride is off. The winner is the one completing: nothing to tell it.
            for offer in self.store.close_ride(ride, clock::now_ms()).await? {
                if &offer.driver != driver {
                    let _ = self.post.send(&offer.driver, offer.result(OfferResult::Cancelled)).await;
                }
            }
        }
        let answer = ServerMessage::RideProgressResult { ride_id: ride.to_string(), status: step, result };
        Ok(Some(answer))
    }

    /// Expires the offers past their deadline (exactly one instance wins each), tells their
    /// drivers and moves their rides on; searches again for the rides that had nobody to ask.
    pub async fn sweep(&self) -> Result<usize, BackendError> {
        let now = clock::now_ms();
        for ride in self.store.waiting_due(now, SWEEP_BATCH, SEARCH_LEASE).await? {
            self.move_on(&ride).await;
        }
        let due = self.store.due(now, SWEEP_BATCH).await?;
        let mut expired = 0;
        for offer_id in due {
            if let Some(offer) = self.store.expire(&offer_id, now).await? {
                expired += 1;
                Metrics::inc(&self.values().offers_expired_total);
                let _ = self.post.send(&offer.driver, offer.result(OfferResult::Expired)).await;
                self.move_on(&offer.ride_id).await;
            }
        }
        Ok(expired)
    }

    /// Sweeps every [`DispatchConfig::sweep`] until `shutdown`.
    pub async fn run_sweeper(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.config.sweep);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if let Err(error) = self.sweep().await {
                tracing::warn!(%error, "offer sweep failed; retrying");
            }
        }
    }
}

/// A new offer id: unguessable, so one driver cannot answer another's offer by guessing.
fn new_offer_id() -> String {
    format!("of-{}", crate::base::random::hex_or_clock::<12>())
}

fn result_frame(offer_id: &str, result: OfferResult) -> ServerMessage {
    ServerMessage::OfferResult { offer_id: offer_id.to_owned(), result }
}

fn not_yours(offer_id: &str) -> ServerMessage {
    ServerMessage::error(ErrorCode::Forbidden, format!("offer {offer_id:?} is another driver's"))
}

fn unknown(offer_id: &str) -> ServerMessage {
    ServerMessage::error(ErrorCode::NotFound, format!("no offer {offer_id:?}"))
}
