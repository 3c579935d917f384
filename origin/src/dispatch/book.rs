//! The dispatch rules as one in-memory state machine: who is available where, which offers are
//! live, who wins a ride. The embedded store is this book behind a mutex; the Redis store runs
//! the same transitions as Lua scripts, one script per transition, so each is atomic across
//! instances. Every method takes `now` (epoch ms) so the rules are tested without a clock.

use std::collections::{BTreeSet, HashMap, HashSet};

use ridecast_protocol::{Id, messages::LatLng};

use super::{AcceptOutcome, AckOutcome, Offer, OfferAttempt, OfferLimits, OfferState, RejectOutcome, distance_m};

#[derive(Debug, Default)]
struct DriverEntry {
    available: bool,
    position: Option<LatLng>,
    /// Last location or availability heard, epoch ms.
    seen: u64,
    /// The one offer this driver holds.
    offer: Option<String>,
    /// The ride this driver won, until it ends.
    ride: Option<Id>,
}

#[derive(Debug)]
struct OfferEntry {
    offer: Offer,
    state: OfferState,
    acked: bool,
}

#[derive(Debug, Default)]
struct RideEntry {
    /// Offers sent and not yet answered or expired.
    live: HashSet<String>,
    /// Drivers already offered this ride (never offered it twice).
    tried: HashSet<Id>,
    /// Assigned, cancelled or given up: no more offers.
    closed: bool,
    /// The accepted offer, once a driver won the ride.
    winner: Option<String>,
    /// Last change, epoch ms (what pruning goes by).
    touched: u64,
}

/// All dispatch state of one embedded instance.
#[derive(Debug, Default)]
pub struct Book {
    drivers: HashMap<Id, DriverEntry>,
    offers: HashMap<String, OfferEntry>,
    rides: HashMap<Id, RideEntry>,
    /// Rides to search again, and when: those with nobody to ask yet, and those whose offer
    /// just ended without a winner. A lease: handing a ride out moves its time on, and only an
    /// offer made or the ride closing takes it out, so a searcher dying loses nothing.
    waiting: HashMap<Id, u64>,
    /// Pending offers by deadline.
    deadlines: BTreeSet<(u64, String)>,
}

impl Book {
    /// The driver went online for offers (or offline). Going online also ends the ride it
    /// won, if any: a v1 app never sends `ride_progress` `completed`, and a driver asking for
    /// offers is free by its own word.
    pub fn set_available(&mut self, driver: &Id, available: bool, now: u64) {
        let entry = self.drivers.entry(driver.clone()).or_default();
        entry.available = available;
        entry.seen = now;
        if available {
            entry.ride = None;
        }
    }

    /// Whether the driver said it is online for offers (and has not said otherwise since).
    pub fn is_available(&self, driver: &Id) -> bool {
        self.drivers.get(driver).is_some_and(|d| d.available)
    }

    /// The driver's position, from its location updates.
    pub fn set_position(&mut self, driver: &Id, position: LatLng, now: u64) {
        let entry = self.drivers.entry(driver.clone()).or_default();
        entry.position = Some(position);
        entry.seen = now;
    }

    /// Drivers who could take an offer now, nearest first, within `radius_m` of `pickup`:
    /// online, heard from within `stale_ms`, not on a ride and not holding an offer.
    pub fn candidates(&self, pickup: LatLng, radius_m: f64, now: u64, stale_ms: u64, count: usize) -> Vec<Id> {
        let mut near: Vec<(f64, &Id)> = self
            .drivers
            .iter()
            .filter(|(_, d)| {
                d.available && d.ride.is_none() && d.offer.is_none() && now.saturating_sub(d.seen) <= stale_ms
            })
            .filter_map(|(id, d)| Some((distance_m(pickup, d.position?), id)))
            .filter(|(distance, _)| *distance <= radius_m)
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        near.into_iter().take(count).map(|(_, id)| id.clone()).collect()
    }

    /// Records `offer` if its ride and driver still allow it.
    pub fn try_offer(&mut self, offer: &Offer, now: u64, limits: OfferLimits) -> OfferAttempt {
        let ride = self.rides.entry(offer.ride_id.clone()).or_default();
        if ride.closed {
            return OfferAttempt::RideClosed;
        }
        if ride.tried.len() >= limits.max_attempts {
            return OfferAttempt::Exhausted;
        }
        if ride.live.len() >= limits.fanout {
            return OfferAttempt::RideFull;
        }
        if ride.tried.contains(&offer.driver) {
            return OfferAttempt::DriverUnavailable;
        }
        let Some(driver) = self.drivers.get_mut(&offer.driver) else {
            return OfferAttempt::DriverUnavailable;
        };
        if !driver.available
            || driver.ride.is_some()
            || driver.offer.is_some()
            || now.saturating_sub(driver.seen) > limits.stale_ms
        {
            return OfferAttempt::DriverUnavailable;
        }
        driver.offer = Some(offer.offer_id.clone());
        ride.live.insert(offer.offer_id.clone());
        ride.tried.insert(offer.driver.clone());
        ride.touched = now;
        self.waiting.remove(&offer.ride_id);
        self.deadlines.insert((offer.expires_at, offer.offer_id.clone()));
        let entry = OfferEntry { offer: offer.clone(), state: OfferState::Pending, acked: false };
        self.offers.insert(offer.offer_id.clone(), entry);
        OfferAttempt::Created
    }

    /// The offer `driver` holds and whether it acknowledged it: what a reconnecting driver gets.
    pub fn current_offer(&self, driver: &Id) -> Option<(Offer, bool)> {
        let id = self.drivers.get(driver)?.offer.as_ref()?;
        let entry = self.offers.get(id)?;
        (entry.state == OfferState::Pending).then(|| (entry.offer.clone(), entry.acked))
    }

    /// `offer_ack`: stop resending.
    pub fn ack(&mut self, offer_id: &str, driver: &Id) -> AckOutcome {
        match self.offers.get_mut(offer_id) {
            None => AckOutcome::Unknown,
            Some(entry) if &entry.offer.driver != driver => AckOutcome::NotYours,
            Some(entry) if entry.state != OfferState::Pending => AckOutcome::NotPending(entry.state),
            Some(entry) => {
                entry.acked = true;
                AckOutcome::Acked
            }
        }
    }

    /// `accept`: the first accept of a ride wins it; every other live offer of it is taken.
    pub fn accept(&mut self, offer_id: &str, driver: &Id, now: u64) -> AcceptOutcome {
        let Some(entry) = self.offers.get(offer_id) else { return AcceptOutcome::Unknown };
        if &entry.offer.driver != driver {
            return AcceptOutcome::NotYours;
        }
        match entry.state {
            OfferState::Accepted => return AcceptOutcome::AlreadyAccepted,
            OfferState::Pending if now >= entry.offer.expires_at => {
                let ride = entry.offer.ride_id.clone();
                self.end_offer(offer_id, OfferState::Expired);
                self.search_again(&ride);
                return AcceptOutcome::Expired { ride };
            }
            OfferState::Pending => {}
            other => return AcceptOutcome::Ended(other),
        }
        let ride_id = entry.offer.ride_id.clone();
        let others: Vec<String> = self
            .rides
            .get(&ride_id)
            .map(|ride| ride.live.iter().filter(|id| id.as_str() != offer_id).cloned().collect())
            .unwrap_or_default();
        let taken = others.iter().filter_map(|id| self.end_offer(id, OfferState::Taken)).collect();
        self.end_offer(offer_id, OfferState::Accepted);
        if let Some(ride) = self.rides.get_mut(&ride_id) {
            ride.closed = true;
            ride.winner = Some(offer_id.to_owned());
            ride.touched = now;
        }
        if let Some(d) = self.drivers.get_mut(driver) {
            d.ride = Some(ride_id.clone());
        }
        AcceptOutcome::Confirmed { ride: ride_id, taken }
    }

    /// `reject`: the offer ends; the ride goes on to the next driver.
    pub fn reject(&mut self, offer_id: &str, driver: &Id) -> RejectOutcome {
        let Some(entry) = self.offers.get(offer_id) else { return RejectOutcome::Unknown };
        if &entry.offer.driver != driver {
            return RejectOutcome::NotYours;
        }
        if entry.state != OfferState::Pending {
            return RejectOutcome::NotPending(entry.state);
        }
        let ride = entry.offer.ride_id.clone();
        self.end_offer(offer_id, OfferState::Rejected);
        self.search_again(&ride);
        RejectOutcome::Rejected { ride }
    }

    /// Offers whose deadline has passed, oldest first.
    pub fn due(&self, now: u64, limit: usize) -> Vec<String> {
        self.deadlines.iter().take_while(|(at, _)| *at <= now).take(limit).map(|(_, id)| id.clone()).collect()
    }

    /// Expires `offer_id` if it is still pending past its deadline; `Some` only for the call that
    /// expired it (so of several sweepers exactly one goes on to reassign).
    pub fn expire(&mut self, offer_id: &str, now: u64) -> Option<Offer> {
        let entry = self.offers.get(offer_id)?;
        if entry.state != OfferState::Pending || entry.offer.expires_at > now {
            return None;
        }
        let expired = self.end_offer(offer_id, OfferState::Expired)?;
        self.search_again(&expired.ride_id);
        Some(expired)
    }

    /// An offer of `ride` ended without a winner: search again at once (unless it is closed).
    fn search_again(&mut self, ride: &Id) {
        self.wait(ride, 0);
    }

    /// `ride` found nobody to offer it to: search again at `retry_at`.
    pub fn wait(&mut self, ride: &Id, retry_at: u64) {
        if !self.rides.get(ride).is_some_and(|r| r.closed) {
            self.waiting.insert(ride.clone(), retry_at);
        }
    }

    /// The waiting rides due for another search; each is handed out once per `lease_ms` (its
    /// time moves on by that much), so if its searcher dies it comes due again.
    pub fn waiting_due(&mut self, now: u64, limit: usize, lease_ms: u64) -> Vec<Id> {
        let mut due: Vec<(u64, Id)> =
            self.waiting.iter().filter(|(_, at)| **at <= now).map(|(id, at)| (*at, id.clone())).collect();
        due.sort();
        due.truncate(limit);
        for (_, ride) in &due {
            self.waiting.insert(ride.clone(), now + lease_ms);
        }
        due.into_iter().map(|(_, ride)| ride).collect()
    }

    /// Whether the ride has offers still waiting for an answer.
    pub fn has_live_offers(&self, ride: &Id) -> bool {
        self.rides.get(ride).is_some_and(|r| !r.live.is_empty())
    }

    /// The ride is over for dispatch (cancelled, or given up): its live offers end as
    /// `cancelled` and come back so their drivers can be told, and so does the accepted offer
    /// of the driver who won it, if that driver is still on it (it is free again).
    pub fn close_ride(&mut self, ride_id: &Id, now: u64) -> Vec<Offer> {
        self.waiting.remove(ride_id);
        let ride = self.rides.entry(ride_id.clone()).or_default();
        ride.closed = true;
        ride.touched = now;
        let live: Vec<String> = ride.live.iter().cloned().collect();
        let winner = ride.winner.clone();
        let mut told: Vec<Offer> = live.iter().filter_map(|id| self.end_offer(id, OfferState::Cancelled)).collect();
        if let Some(offer) = winner.and_then(|id| self.offers.get(&id)).map(|e| e.offer.clone())
            && let Some(driver) = self.drivers.get_mut(&offer.driver)
            && driver.ride.as_ref() == Some(ride_id)
        {
            driver.ride = None;
            told.push(offer);
        }
        told
    }

    /// Forgets what ended more than `keep_ms` ago: answered or expired offers, closed rides,
    /// and drivers offline with nothing in hand. Bounds the embedded store's memory; the Redis
    /// store lets keys expire instead.
    pub fn prune(&mut self, now: u64, keep_ms: u64) {
        let old = |at: u64| at.saturating_add(keep_ms) < now;
        self.offers.retain(|_, e| e.state == OfferState::Pending || !old(e.offer.expires_at));
        self.rides.retain(|_, r| !(r.closed && r.live.is_empty() && old(r.touched)));
        self.drivers.retain(|_, d| d.available || d.offer.is_some() || d.ride.is_some() || !old(d.seen));
    }

    /// Ends a pending offer in `state`: off the ride's live set and out of the driver's hand.
    fn end_offer(&mut self, offer_id: &str, state: OfferState) -> Option<Offer> {
        let entry = self.offers.get_mut(offer_id)?;
        if entry.state != OfferState::Pending {
            return None;
        }
        entry.state = state;
        let offer = entry.offer.clone();
        self.deadlines.remove(&(offer.expires_at, offer_id.to_owned()));
        if let Some(ride) = self.rides.get_mut(&offer.ride_id) {
            ride.live.remove(offer_id);
        }
        if let Some(driver) = self.drivers.get_mut(&offer.driver)
            && driver.offer.as_deref() == Some(offer_id)
        {
            driver.offer = None;
        }
        Some(offer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE_MS: u64 = 30_000;
    const LIMITS: OfferLimits = OfferLimits { max_attempts: 3, fanout: 1, stale_ms: STALE_MS };
    const PICKUP: LatLng = LatLng { lat: 37.7749, lng: -122.4194 };

    fn id(raw: &str) -> Id {
        Id::parse(raw).expect("a valid id")
    }

    /// A point `metres` north of the pickup.
    fn north(metres: f64) -> LatLng {
        LatLng { lat: PICKUP.lat + metres / 111_195.0, lng: PICKUP.lng }
    }

    fn online(book: &mut Book, driver: &str, metres: f64, now: u64) {
        book.set_available(&id(driver), true, now);
        book.set_position(&id(driver), north(metres), now);
    }

    fn offer(n: u32, ride: &str, driver: &str, expires_at: u64) -> Offer {
        Offer {
            offer_id: format!("o{n}"),
            ride_id: id(ride),
            driver: id(driver),
            pickup: PICKUP,
            dropoff: north(5_000.0),
            expires_at,
        }
    }

    #[test]
    fn candidates_are_the_nearest_fresh_free_online_drivers_within_the_radius() {
        let mut book = Book::default();
        online(&mut book, "far", 2_000.0, 1_000);
        online(&mut book, "near", 100.0, 1_000);
        online(&mut book, "mid", 500.0, 1_000);
        online(&mut book, "outside", 6_000.0, 1_000);
        online(&mut book, "stale", 50.0, 1_000);
        book.set_position(&id("stale"), north(50.0), 1_000);
        online(&mut book, "offline", 10.0, 1_000 + STALE_MS);
        book.set_available(&id("offline"), false, 1_000 + STALE_MS);
        let now = 1_000 + STALE_MS;
        for d in ["far", "near", "mid", "outside"] {
            book.set_position(&id(d), book.drivers[&id(d)].position.expect("set"), now);
        }
        assert_eq!(book.candidates(PICKUP, 5_000.0, now + 1, STALE_MS, 10), vec![id("near"), id("mid"), id("far")]);
        assert_eq!(book.candidates(PICKUP, 5_000.0, now + 1, STALE_MS, 1), vec![id("near")]);
    }

    #[test]
    fn a_driver_holds_one_offer_and_a_ride_one_live_offer_at_a_time() {
        let mut book = Book::default();
        online(&mut book, "a", 100.0, 0);
        online(&mut book, "b", 200.0, 0);
        assert_eq!(book.try_offer(&offer(1, "r1", "a", 15_000), 0, LIMITS), OfferAttempt::Created);
        assert_eq!(book.try_offer(&offer(2, "r2", "a", 15_000), 0, LIMITS), OfferAttempt::DriverUnavailable);
        assert_eq!(book.try_offer(&offer(3, "r1", "b", 15_000), 0, LIMITS), OfferAttempt::RideFull);
        assert_eq!(book.candidates(PICKUP, 1_000.0, 0, STALE_MS, 10), vec![id("b")], "a holds an offer");
        assert_eq!(book.current_offer(&id("a")).map(|(o, acked)| (o.offer_id, acked)), Some(("o1".into(), false)));
        assert_eq!(book.ack("o1", &id("a")), AckOutcome::Acked);
        assert_eq!(book.current_offer(&id("a")).map(|(_, acked)| acked), Some(true));
    }

    #[test]
    fn the_first_accept_wins_and_the_other_live_offers_are_taken() {
        let mut book = Book::default();
        online(&mut book, "a", 100.0, 0);
        online(&mut book, "b", 200.0, 0);
        let two_at_once = OfferLimits { fanout: 2, ..LIMITS };
        assert_eq!(book.try_offer(&offer(1, "r1", "a", 15_000), 0, two_at_once), OfferAttempt::Created);
        assert_eq!(book.try_offer(&offer(2, "r1", "b", 15_000), 0, two_at_once), OfferAttempt::Created);
        let AcceptOutcome::Confirmed { ride, taken } = book.accept("o2", &id("b"), 1_000) else {
            panic!("the first accept wins");
        };
        assert_eq!(ride, id("r1"));
        assert_eq!(taken.iter().map(|o| o.offer_id.as_str()).collect::<Vec<_>>(), vec!["o1"]);
        assert_eq!(book.accept("o1", &id("a"), 1_001), AcceptOutcome::Ended(OfferState::Taken));
        assert_eq!(book.accept("o2", &id("b"), 1_002), AcceptOutcome::AlreadyAccepted);
        assert_eq!(book.try_offer(&offer(3, "r1", "a", 15_000), 0, two_at_once), OfferAttempt::RideClosed);
        assert!(book.candidates(PICKUP, 1_000.0, 2_000, STALE_MS, 10) == vec![id("a")], "b is on a ride now");
    }

    #[test]
    fn a_late_accept_is_expired_and_someone_elses_offer_is_not_yours() {
        let mut book = Book::default();
        online(&mut book, "a", 100.0, 0);
        assert_eq!(book.try_offer(&offer(1, "r1", "a", 15_000), 0, LIMITS), OfferAttempt::Created);
        assert_eq!(book.accept("o1", &id("b"), 1_000), AcceptOutcome::NotYours);
        assert_eq!(book.ack("o1", &id("b")), AckOutcome::NotYours);
        assert_eq!(book.accept("nope", &id("a"), 1_000), AcceptOutcome::Unknown);
        assert_eq!(book.accept("o1", &id("a"), 15_000), AcceptOutcome::Expired { ride: id("r1") });
        assert_eq!(book.accept("o1", &id("a"), 15_001), AcceptOutcome::Ended(OfferState::Expired));
        assert!(!book.has_live_offers(&id("r1")), "the ride moves on");
    }

    #[test]
    fn reject_and_expiry_free_the_ride_for_the_next_driver_never_the_same_one() {
        let mut book = Book::default();
        online(&mut book, "a", 100.0, 0);
        online(&mut book, "b", 200.0, 0);
        assert_eq!(book.try_offer(&offer(1, "r1", "a", 15_000), 0, LIMITS), OfferAttempt::Created);
        assert_eq!(book.reject("o1", &id("a")), RejectOutcome::Rejected { ride: id("r1") });
        assert_eq!(book.reject("o1", &id("a")), RejectOutcome::NotPending(OfferState::Rejected));
        assert_eq!(book.try_offer(&offer(2, "r1", "a", 15_000), 0, LIMITS), OfferAttempt::DriverUnavailable);
        assert_eq!(book.try_offer(&offer(3, "r1", "b", 16_000), 1, LIMITS), OfferAttempt::Created);
        assert_eq!(book.due(15_999, 10), Vec::<String>::new());
        assert_eq!(book.due(16_000, 10), vec!["o3".to_owned()]);
        assert_eq!(book.expire("o3", 16_000).map(|o| o.offer_id), Some("o3".into()), "the first sweeper expires it");
        assert_eq!(book.expire("o3", 16_000), None, "a second sweeper finds nothing to do");
    }

    #[test]
    fn a_ride_is_offered_to_at_most_max_attempts_drivers() {
        let mut book = Book::default();
        for (n, d) in ["a", "b", "c", "d"].iter().enumerate() {
            online(&mut book, d, 100.0 * (n as f64 + 1.0), 0);
        }
        for (n, d) in ["a", "b", "c"].iter().enumerate() {
            let n = u32::try_from(n).expect("small");
            assert_eq!(book.try_offer(&offer(n, "r1", d, 15_000), 0, LIMITS), OfferAttempt::Created);
            assert!(matches!(book.reject(&format!("o{n}"), &id(d)), RejectOutcome::Rejected { .. }));
        }
        assert_eq!(book.try_offer(&offer(9, "r1", "d", 15_000), 0, LIMITS), OfferAttempt::Exhausted);
    }

    #[test]
    fn closing_a_ride_cancels_its_live_offers_and_frees_its_driver() {
        let mut book = Book::default();
        online(&mut book, "a", 100.0, 0);
        online(&mut book, "b", 200.0, 0);
        assert_eq!(book.try_offer(&offer(1, "r1", "a", 15_000), 0, LIMITS), OfferAttempt::Created);
        let cancelled = book.close_ride(&id("r1"), 2);
        assert_eq!(cancelled.iter().map(|o| o.offer_id.as_str()).collect::<Vec<_>>(), vec!["o1"]);
        assert_eq!(book.accept("o1", &id("a"), 1), AcceptOutcome::Ended(OfferState::Cancelled));
        assert_eq!(book.current_offer(&id("a")), None);

        assert_eq!(book.try_offer(&offer(2, "r2", "b", 15_000), 0, LIMITS), OfferAttempt::Created);
        assert!(matches!(book.accept("o2", &id("b"), 1), AcceptOutcome::Confirmed { .. }));
        let told = book.close_ride(&id("r2"), 3);
        assert_eq!(told.iter().map(|o| o.offer_id.as_str()).collect::<Vec<_>>(), vec!["o2"], "the winner is told");
        assert_eq!(book.candidates(PICKUP, 1_000.0, 2, STALE_MS, 10), vec![id("a"), id("b")], "b is free again");
    }

    #[test]
    fn a_driver_going_online_again_after_winning_a_ride_is_free() {
        let mut book = Book::default();
        online(&mut book, "a", 100.0, 0);
        assert_eq!(book.try_offer(&offer(1, "r1", "a", 15_000), 0, LIMITS), OfferAttempt::Created);
        assert!(matches!(book.accept("o1", &id("a"), 1), AcceptOutcome::Confirmed { .. }));
        assert!(book.candidates(PICKUP, 1_000.0, 2, STALE_MS, 10).is_empty(), "on a ride");
        book.set_available(&id("a"), true, 3);
        assert_eq!(book.candidates(PICKUP, 1_000.0, 3, STALE_MS, 10), vec![id("a")], "free by its own word");
    }

    #[test]
    fn pruning_forgets_what_ended_long_ago_and_keeps_what_is_live() {
        let mut book = Book::default();
        online(&mut book, "a", 100.0, 0);
        online(&mut book, "b", 200.0, 0);
        assert_eq!(book.try_offer(&offer(1, "r1", "a", 15_000), 0, LIMITS), OfferAttempt::Created);
        assert_eq!(book.try_offer(&offer(2, "r2", "b", 15_000), 0, LIMITS), OfferAttempt::Created);
        book.reject("o1", &id("a"));
        book.close_ride(&id("r1"), 1);
        book.set_available(&id("a"), false, 1);
        book.prune(1_000_000, 60_000);
        assert_eq!(book.accept("o1", &id("a"), 1_000_000), AcceptOutcome::Unknown, "the ended offer is forgotten");
        assert!(book.current_offer(&id("b")).is_some(), "a pending offer stays, however old");
        assert!(!book.drivers.contains_key(&id("a")), "an offline driver with nothing in hand is forgotten");
    }
}
