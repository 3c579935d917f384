//! One simulated driver's behaviour, without any I/O: what it sends on its `/ws/rides` socket
//! and when, where it drives, when it opens and closes its ride's chat. The simulator feeds it
//! the server's frames and the time, and carries out the [`Action`]s it returns.
//!
//! The life of a driver: online and cruising the streets at random, sending a GPS fix every
//! second; an offer is acknowledged at once and, 1 to 3 s later, accepted (75 %), rejected
//! (15 %) or left to expire (10 %); a confirmed ride is driven along the streets to the pickup
//! (`ride_progress` `arrived`), a wait of 5 s (`in_progress` as the rider gets in), on to the
//! drop-off (`completed`), and then the driver is online for offers again.

use ridecast_rng::Rng;
use std::{sync::Arc, time::Duration};

use ridecast_protocol::{
    Id, LocationReport, RideStep,
    messages::{DriverMessage, LatLng, OfferResult, ServerMessage},
};
use tokio::time::Instant;

use super::{
    city::{City, Walk},
    fleet::{DriverState, FleetDriver},
    geometry::Point,
    motion::Motion,
};

/// A GPS fix this often.
pub const FIX_INTERVAL: Duration = Duration::from_secs(1);
/// Cruising speeds, m/s (25 to 50 km/h).
const SPEED_M_S: (f64, f64) = (7.0, 14.0);
/// GPS noise: the standard deviation of each axis, in metres (about 4 m off on average).
const GPS_NOISE_M: f64 = 3.0;
/// How long an offer is thought about before the answer.
const THINKING_S: (f64, f64) = (1.0, 3.0);
/// How long the driver waits at the pickup for the rider to get in.
const BOARDING: Duration = Duration::from_secs(5);
/// A cruising driver keeps this much of its random walk planned ahead.
const PLANNED_AHEAD_M: f64 = 300.0;
/// Movement per poll is capped, so that a stalled task does not teleport its car.
const LONGEST_STEP: Duration = Duration::from_secs(2);
/// After this long past an offer's deadline without a result, the driver stops waiting for one.
const RESULT_PATIENCE: Duration = Duration::from_secs(5);

/// What the simulator does for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A frame on the driver's `/ws/rides` socket.
    Send(DriverMessage),
    /// Open this ride's chat as its driver.
    OpenChat(Id),
    /// The ride is over: close its chat.
    CloseChat,
}

/// The `ride_progress` frame reporting `step` of the trip's ride.
fn progress(trip: &Trip, step: RideStep) -> Action {
    Action::Send(DriverMessage::RideProgress { ride_id: trip.ride.to_string(), status: step })
}

/// The moment a driver acts at: the runtime's clock for timers, the wall clock for `ts`.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    pub now: Instant,
    pub epoch_ms: u64,
}

impl Tick {
    pub fn now() -> Self {
        Self { now: Instant::now(), epoch_ms: ridecast_origin::base::clock::now_ms() }
    }
}

/// How the driver will answer an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accept,
    Reject,
    /// Say nothing: the offer expires and the ride moves on.
    Ignore,
}

#[derive(Debug, Clone)]
struct HeldOffer {
    offer_id: String,
    ride: Id,
    pickup: Point,
    dropoff: Point,
    answer: Answer,
    answer_at: Instant,
    /// Given (sent, or for `Ignore` decided): now waiting for the result.
    answered: bool,
    give_up_at: Instant,
}

#[derive(Debug, Clone)]
struct Trip {
    ride: Id,
    pickup: Point,
    dropoff: Point,
}

#[derive(Debug, Clone)]
enum Phase {
    Cruising,
    /// Still cruising while it thinks about the offer.
    Offered(HeldOffer),
    ToPickup(Trip),
    Boarding {
        trip: Trip,
        until: Instant,
    },
    ToDropoff(Trip),
}

/// One simulated driver.
#[derive(Debug)]
pub struct SimDriver {
    id: Id,
    city: Arc<City>,
    rng: Rng,
    motion: Motion,
    walk: Walk,
    /// Current speed and the speed it is heading for, m/s.
    speed: f64,
    cruise: f64,
    phase: Phase,
    moved_at: Instant,
    next_fix: Instant,
    last_ts: u64,
    /// The last position sent (with its noise): what riders and the fleet map see.
    reported: Option<LatLng>,
    /// The offer last answered, whose resends are not answered again.
    answered_offer: Option<String>,
}

impl SimDriver {
    /// A driver somewhere on the streets of `city`, about to cruise.
    pub fn new(id: Id, city: Arc<City>, mut rng: Rng, now: Instant) -> Self {
        let start = city.random_street_point(&mut rng);
        let (walk, first_corner) = city.start_walk(start, &mut rng);
        let mut motion = Motion::new(start);
        motion.follow([first_corner]);
        let cruise = rng.between(SPEED_M_S.0, SPEED_M_S.1);
        Self {
            id,
            city,
            rng,
            motion,
            walk,
            speed: cruise,
            cruise,
            phase: Phase::Cruising,
            moved_at: now,
            next_fix: now,
            last_ts: 0,
            reported: None,
            answered_offer: None,
        }
    }

    pub fn id(&self) -> &Id {
        &self.id
    }

    /// The ride it is on, if any.
    pub fn ride(&self) -> Option<&Id> {
        match &self.phase {
            Phase::ToPickup(trip) | Phase::Boarding { trip, .. } | Phase::ToDropoff(trip) => Some(&trip.ride),
            Phase::Cruising | Phase::Offered(_) => None,
        }
    }

    /// Its entry on the fleet map (`online`: whether its socket is open).
    pub fn view(&self, online: bool) -> FleetDriver {
        let at = self.reported.unwrap_or_else(|| self.city.projection().to_lat_lng(self.motion.at()));
        let state = match (&self.phase, online) {
            (_, false) => DriverState::Offline,
            (Phase::Cruising, true) => DriverState::Free,
            (Phase::Offered(_), true) => DriverState::Offered,
            (Phase::ToPickup(_) | Phase::Boarding { .. }, true) => DriverState::ToPickup,
            (Phase::ToDropoff(_), true) => DriverState::ToDropoff,
        };
        FleetDriver { lat: at.lat, lng: at.lng, heading: self.motion.heading(), state }
    }

    /// The socket just opened: online for offers unless on a ride (saying so then would end the
    /// ride in dispatch), and a fix at once.
    pub fn connected(&mut self, tick: Tick) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.ride().is_none() {
            actions.push(Action::Send(DriverMessage::Availability { available: true }));
        }
        self.next_fix = tick.now;
        actions.extend(self.poll(tick));
        actions
    }

    /// A frame from the server.
    pub fn received(&mut self, frame: ServerMessage, tick: Tick) -> Vec<Action> {
        match frame {
            ServerMessage::Offer { offer_id, ride_id, pickup, dropoff, expires_at } => {
                self.offered(offer_id, &ride_id, pickup, dropoff, expires_at, tick)
            }
            ServerMessage::OfferResult { offer_id, result } => self.settled(&offer_id, result, tick),
            // A step's answer: `ok`, or the ride ended otherwise, which its watch reports.
            ServerMessage::RideProgressResult { .. } | ServerMessage::Error { .. } => Vec::new(),
        }
    }

    fn offered(
        &mut self,
        offer_id: String,
        ride_id: &str,
        pickup: LatLng,
        dropoff: LatLng,
        expires_at: u64,
        tick: Tick,
    ) -> Vec<Action> {
        if self.answered_offer.as_ref() == Some(&offer_id) {
            return Vec::new();
        }
        let ack = Action::Send(DriverMessage::OfferAck { offer_id: offer_id.clone() });
        let (held, busy) = match &self.phase {
            Phase::Offered(held) => (held.offer_id == offer_id, true),
            Phase::Cruising => (false, false),
            _ => (false, true),
        };
        if held {
            // A resend: the ack was lost or is on its way.
            return vec![ack];
        }
        let Ok(ride) = Id::parse(ride_id) else { return Vec::new() };
        if busy {
            self.answered_offer = Some(offer_id.clone());
            return vec![ack, Action::Send(DriverMessage::Reject { offer_id })];
        }
        let dice = self.rng.unit();
        let answer = if dice < 0.75 {
            Answer::Accept
        } else if dice < 0.90 {
            Answer::Reject
        } else {
            Answer::Ignore
        };
        let thinking = Duration::from_secs_f64(self.rng.between(THINKING_S.0, THINKING_S.1));
        let until_deadline = Duration::from_millis(expires_at.saturating_sub(tick.epoch_ms));
        let projection = self.city.projection();
        self.phase = Phase::Offered(HeldOffer {
            offer_id,
            ride,
            pickup: projection.to_point(pickup),
            dropoff: projection.to_point(dropoff),
            answer,
            answer_at: tick.now + thinking,
            answered: false,
            give_up_at: tick.now + until_deadline.max(thinking) + RESULT_PATIENCE,
        });
        vec![ack]
    }

    fn settled(&mut self, offer_id: &str, result: OfferResult, tick: Tick) -> Vec<Action> {
        let Phase::Offered(held) = &self.phase else { return Vec::new() };
        if held.offer_id != offer_id {
            return Vec::new();
        }
        self.answered_offer = Some(held.offer_id.clone());
        if result != OfferResult::Confirmed {
            self.phase = Phase::Cruising;
            return Vec::new();
        }
        let trip = Trip { ride: held.ride.clone(), pickup: held.pickup, dropoff: held.dropoff };
        self.motion.follow(self.city.route(self.motion.at(), trip.pickup));
        self.cruise = self.rng.between(SPEED_M_S.0, SPEED_M_S.1);
        let open = Action::OpenChat(trip.ride.clone());
        self.phase = Phase::ToPickup(trip);
        self.moved_at = tick.now;
        vec![open]
    }

    /// The ride ended other than by driving it (the rider cancelled it): cruise again.
    pub fn ride_ended(&mut self) -> Vec<Action> {
        if self.ride().is_none() {
            return Vec::new();
        }
        self.cruise_again();
        vec![Action::CloseChat, Action::Send(DriverMessage::Availability { available: true })]
    }

    /// When [`SimDriver::poll`] next has something to do.
    pub fn next_wakeup(&self) -> Instant {
        let phase_deadline = match &self.phase {
            Phase::Offered(held) if !held.answered => Some(held.answer_at),
            Phase::Offered(held) => Some(held.give_up_at),
            Phase::Boarding { until, .. } => Some(*until),
            _ => None,
        };
        phase_deadline.map_or(self.next_fix, |deadline| deadline.min(self.next_fix))
    }

    /// Moves the car, takes the steps that are due, and sends the fix when one is due.
    pub fn poll(&mut self, tick: Tick) -> Vec<Action> {
        self.drive(tick.now);
        let mut actions = self.step_phase(tick.now);
        if tick.now >= self.next_fix {
            actions.push(self.fix(tick.epoch_ms));
            // Keeps a steady rhythm, without a burst of catch-up fixes after a stall.
            self.next_fix = (self.next_fix + FIX_INTERVAL).max(tick.now);
        }
        actions
    }

    fn drive(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.moved_at).min(LONGEST_STEP).as_secs_f64();
        self.moved_at = now;
        let target = if matches!(self.phase, Phase::Boarding { .. }) { 0.0 } else { self.cruise };
        // Eases towards the target over a few seconds rather than jumping.
        self.speed += (target - self.speed) * (elapsed / 3.0).min(1.0);
        self.motion.advance(self.speed * elapsed);
        if self.motion.arrived() {
            // Parked (at the pickup, or at the drop-off for an instant): the fix says 0 m/s.
            self.speed = 0.0;
        }
        if matches!(self.phase, Phase::Cruising | Phase::Offered(_)) {
            while self.motion.remaining() < PLANNED_AHEAD_M {
                let corner = self.city.step(&mut self.walk, &mut self.rng);
                self.motion.then(corner);
                if self.rng.unit() < 0.3 {
                    self.cruise = self.rng.between(SPEED_M_S.0, SPEED_M_S.1);
                }
            }
        }
    }

    fn step_phase(&mut self, now: Instant) -> Vec<Action> {
        match &mut self.phase {
            Phase::Offered(held) if !held.answered && now >= held.answer_at => {
                held.answered = true;
                let (offer_id, answer) = (held.offer_id.clone(), held.answer);
                match answer {
                    Answer::Accept => vec![Action::Send(DriverMessage::Accept { offer_id })],
                    Answer::Reject => {
                        self.answered_offer = Some(offer_id.clone());
                        self.phase = Phase::Cruising;
                        vec![Action::Send(DriverMessage::Reject { offer_id })]
                    }
                    Answer::Ignore => Vec::new(),
                }
            }
            Phase::Offered(held) if held.answered && now >= held.give_up_at => {
                // No result came (lost with a dropped socket): free again, and saying so also
                // frees the driver in dispatch should the accept have won after all.
                self.answered_offer = Some(held.offer_id.clone());
                self.phase = Phase::Cruising;
                vec![Action::Send(DriverMessage::Availability { available: true })]
            }
            Phase::ToPickup(trip) if self.motion.arrived() => {
                let trip = trip.clone();
                let arrived = progress(&trip, RideStep::Arrived);
                self.phase = Phase::Boarding { trip, until: now + BOARDING };
                vec![arrived]
            }
            Phase::Boarding { trip, until } if now >= *until => {
                let trip = trip.clone();
                let on_board = progress(&trip, RideStep::InProgress);
                self.motion.follow(self.city.route(self.motion.at(), trip.dropoff));
                self.cruise = self.rng.between(SPEED_M_S.0, SPEED_M_S.1);
                self.phase = Phase::ToDropoff(trip);
                vec![on_board]
            }
            Phase::ToDropoff(trip) if self.motion.arrived() => {
                let completed = progress(trip, RideStep::Completed);
                self.cruise_again();
                // `completed` also frees the driver for offers: no `availability` needed.
                vec![Action::CloseChat, completed]
            }
            _ => Vec::new(),
        }
    }

    fn cruise_again(&mut self) {
        let (walk, first_corner) = self.city.start_walk(self.motion.at(), &mut self.rng);
        self.walk = walk;
        self.motion.follow([first_corner]);
        self.phase = Phase::Cruising;
    }

    /// A GPS fix: the true position with noise, heading and speed, and a `ts` that only grows.
    fn fix(&mut self, epoch_ms: u64) -> Action {
        let at = self.motion.at();
        let noisy = Point::new(at.x + GPS_NOISE_M * self.rng.normal(), at.y + GPS_NOISE_M * self.rng.normal());
        let reported = self.city.projection().to_lat_lng(noisy);
        self.reported = Some(reported);
        self.last_ts = epoch_ms.max(self.last_ts + 1);
        Action::Send(DriverMessage::Location(LocationReport {
            lat: reported.lat,
            lng: reported.lng,
            heading: Some((self.motion.heading() * 10.0).round() / 10.0 % 360.0),
            speed: Some((self.speed * 10.0).round() / 10.0),
            ts: self.last_ts,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{super::geometry::Projection, *};

    fn driver(seed: u64, now: Instant) -> SimDriver {
        SimDriver::new(Id::parse("sim-01").expect("id"), Arc::new(City::demo()), Rng::new(seed), now)
    }

    fn tick(start: Instant, after: Duration) -> Tick {
        Tick { now: start + after, epoch_ms: 1_764_240_000_000 + after.as_millis() as u64 }
    }

    fn offer(id: &str, pickup: LatLng, dropoff: LatLng, expires_at: u64) -> ServerMessage {
        ServerMessage::Offer { offer_id: id.into(), ride_id: "ride-1".into(), pickup, dropoff, expires_at }
    }

    fn fixes(actions: &[Action]) -> Vec<&LocationReport> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::Send(DriverMessage::Location(report)) => Some(report),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_connected_driver_goes_online_and_sends_a_valid_moving_fix_every_second() {
        let start = Instant::now();
        let mut driver = driver(3, start);
        let first = driver.connected(tick(start, Duration::ZERO));
        assert_eq!(first[0], Action::Send(DriverMessage::Availability { available: true }));
        let mut reports: Vec<LocationReport> = fixes(&first).into_iter().cloned().collect();
        for second in 1..=30 {
            let now = tick(start, Duration::from_secs(second));
            assert_eq!(driver.next_wakeup(), now.now, "the next fix is due a second later");
            reports.extend(fixes(&driver.poll(now)).into_iter().cloned());
        }
        assert_eq!(reports.len(), 31);
        for pair in reports.windows(2) {
            assert!(pair[1].ts > pair[0].ts, "ts only grows");
        }
        for report in &reports {
            report.validate(report.ts).expect("a contract location");
            let speed = report.speed.expect("speed");
            assert!((SPEED_M_S.0 - 0.1..=SPEED_M_S.1 + 0.1).contains(&speed), "{speed} m/s");
        }
        let projection = Projection::new(crate::city::CENTRE);
        let (a, b) = (&reports[0], &reports[30]);
        let moved = projection
            .to_point(LatLng { lat: a.lat, lng: a.lng })
            .distance(projection.to_point(LatLng { lat: b.lat, lng: b.lng }));
        assert!(moved > 50.0, "30 s of driving at 7 to 14 m/s, at most 300 m, moved {moved} m (in a straight line)");
        assert_eq!(driver.view(true).state, DriverState::Free);
        assert_eq!(driver.view(false).state, DriverState::Offline);
    }

    #[test]
    fn offers_are_acked_at_once_and_answered_within_three_seconds_in_the_promised_proportions() {
        let city = City::demo();
        let to = |p: Point| city.projection().to_lat_lng(p);
        let (mut accepted, mut rejected, mut ignored) = (0, 0, 0);
        for seed in 0..1_000 {
            let start = Instant::now();
            let mut driver = driver(seed, start);
            driver.connected(tick(start, Duration::ZERO));
            let frame = offer("of-1", to(Point::new(0.0, 0.0)), to(Point::new(330.0, 330.0)), u64::MAX);
            let actions = driver.received(frame.clone(), tick(start, Duration::from_millis(10)));
            assert_eq!(actions, vec![Action::Send(DriverMessage::OfferAck { offer_id: "of-1".into() })]);
            assert_eq!(driver.view(true).state, DriverState::Offered);
            assert!(driver.next_wakeup() <= start + Duration::from_secs(1), "the next fix or the answer");
            let resent = driver.received(frame, tick(start, Duration::from_millis(900)));
            assert_eq!(resent, actions, "a resend is acked again, not answered");
            let mut answers = Vec::new();
            for tenth in 1..=31 {
                for action in driver.poll(tick(start, Duration::from_millis(100 * tenth))) {
                    if let Action::Send(DriverMessage::Accept { .. } | DriverMessage::Reject { .. }) = action {
                        answers.push(action);
                    }
                }
            }
            match answers.as_slice() {
                [Action::Send(DriverMessage::Accept { offer_id })] => {
                    accepted += 1;
                    assert_eq!(offer_id, "of-1");
                    assert_eq!(driver.view(true).state, DriverState::Offered, "waiting for the result");
                }
                [Action::Send(DriverMessage::Reject { .. })] => {
                    rejected += 1;
                    assert_eq!(driver.view(true).state, DriverState::Free);
                }
                [] => ignored += 1,
                other => panic!("one answer at most, got {other:?}"),
            }
        }
        assert!((700..=800).contains(&accepted), "~75 % accepted: {accepted}");
        assert!((110..=190).contains(&rejected), "~15 % rejected: {rejected}");
        assert!((60..=140).contains(&ignored), "~10 % ignored: {ignored}");
    }

    #[test]
    fn a_confirmed_ride_is_driven_to_the_pickup_and_the_dropoff_then_the_driver_is_free() {
        let city = City::demo();
        let (pickup, dropoff) = (Point::new(110.0, 55.0), Point::new(-330.0, -220.0));
        let to = |p: Point| city.projection().to_lat_lng(p);
        let start = Instant::now();
        let mut driver = driver(5, start);
        driver.connected(tick(start, Duration::ZERO));
        driver.received(offer("of-9", to(pickup), to(dropoff), u64::MAX), tick(start, Duration::ZERO));
        driver.phase = match driver.phase.clone() {
            Phase::Offered(held) => Phase::Offered(HeldOffer { answer: Answer::Accept, ..held }),
            other => panic!("offered, got {other:?}"),
        };
        let mut log = Vec::new();
        let mut states = Vec::new();
        for second in 1..=900 {
            let now = tick(start, Duration::from_secs(second));
            let mut actions = driver.poll(now);
            if actions.iter().any(|a| matches!(a, Action::Send(DriverMessage::Accept { .. }))) {
                actions.extend(driver.received(
                    ServerMessage::OfferResult { offer_id: "of-9".into(), result: OfferResult::Confirmed },
                    now,
                ));
            }
            let state = driver.view(true).state;
            if states.last() != Some(&state) {
                states.push(state);
            }
            log.extend(actions.into_iter().filter(|a| !matches!(a, Action::Send(DriverMessage::Location(_)))));
            if matches!(log.last(), Some(Action::Send(DriverMessage::RideProgress { status: RideStep::Completed, .. })))
            {
                break;
            }
        }
        assert_eq!(states, [DriverState::Offered, DriverState::ToPickup, DriverState::ToDropoff, DriverState::Free]);
        let ride = Id::parse("ride-1").expect("id");
        let step = |status| Action::Send(DriverMessage::RideProgress { ride_id: "ride-1".into(), status });
        assert_eq!(
            log,
            [
                Action::Send(DriverMessage::Accept { offer_id: "of-9".into() }),
                Action::OpenChat(ride),
                step(RideStep::Arrived),
                step(RideStep::InProgress),
                Action::CloseChat,
                step(RideStep::Completed),
            ]
        );
        assert!(driver.motion.at().distance(city.snap(dropoff).point) < 1e-6, "left at the drop-off");
    }

    #[test]
    fn an_offer_that_is_not_confirmed_or_comes_mid_ride_leaves_the_driver_free_or_busy() {
        let start = Instant::now();
        let mut driver = driver(8, start);
        let at = LatLng { lat: 37.7793, lng: -122.4193 };
        driver.received(offer("of-1", at, at, u64::MAX), tick(start, Duration::ZERO));
        let expired = ServerMessage::OfferResult { offer_id: "of-1".into(), result: OfferResult::Expired };
        assert_eq!(driver.received(expired, tick(start, Duration::from_secs(1))), vec![]);
        assert_eq!(driver.view(true).state, DriverState::Free);

        let origin = Point::new(0.0, 0.0);
        driver.phase = Phase::ToPickup(Trip { ride: Id::parse("r").expect("id"), pickup: origin, dropoff: origin });
        let busy = driver.received(offer("of-2", at, at, u64::MAX), tick(start, Duration::from_secs(2)));
        assert_eq!(busy[1], Action::Send(DriverMessage::Reject { offer_id: "of-2".into() }), "busy: {busy:?}");
        let online = Action::Send(DriverMessage::Availability { available: true });
        let reconnected = driver.connected(tick(start, Duration::from_secs(3)));
        assert!(!reconnected.contains(&online), "saying it is online mid-ride would end the ride: {reconnected:?}");
        assert_eq!(driver.ride_ended(), vec![Action::CloseChat, online]);
        assert_eq!(driver.view(true).state, DriverState::Free);
    }
}
