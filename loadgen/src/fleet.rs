//! A fleet's day: drivers alternate between driving (as [`StreetWalker`] drives, lights
//! included) and standing for minutes at a pickup or parked, and a standing driver's phone
//! reports far less often.
//!
//! Phones' location services stop reporting when nothing moves, and the reference design's
//! apps sent a location on change only, so a standing driver sends one fix every
//! [`STANDING_REPORT_SECS`] while a driving one sends one per interval. What share of the fleet
//! stands is what makes most of a rider's polls find nothing new; see [`DEFAULT_STANDING_SHARE`].

use ridecast_rng::Rng;

use crate::motion::{City, Fix, StreetWalker};

/// Seconds between two fixes of a standing driver.
pub const STANDING_REPORT_SECS: f64 = 30.0;

/// Share of time drivers stand, by default.
///
/// With riders polling every 2 s and driving drivers sending every second, a driving driver's
/// rider finds something new on every poll and a standing one's on one poll in 15 (2 s / 30 s).
/// For about 85 % of polls to find nothing new (304), `d + (1 - d) / 15 = 0.15` gives a driving
/// share `d` of about 0.09.
pub const DEFAULT_STANDING_SHARE: f64 = 0.91;

/// Shortest and longest stand, seconds (a pickup, a wait at a rank, a break).
const STAND_SECS: (f64, f64) = (120.0, 600.0);

/// A driver of the fleet: its streets, whether it stands, and when its phone last reported.
#[derive(Debug, Clone)]
pub struct FleetDriver {
    walker: StreetWalker,
    rng: Rng,
    standing_share: f64,
    standing: bool,
    /// Seconds left in the current phase (standing or driving).
    phase_left: f64,
    /// Seconds since the last fix was sent.
    quiet_for: f64,
    sent_any: bool,
}

impl FleetDriver {
    /// A driver that stands `standing_share` (in `[0, 1]`) of the time, caught at a random point
    /// of its current phase, so that a short run sees the fleet's steady mix.
    pub fn new(city: City, seed: u64, standing_share: f64) -> Self {
        let standing_share = standing_share.clamp(0.0, 1.0);
        let mut rng = Rng::new(seed ^ 0x5eed_f1ee_7000_0000);
        let standing = rng.unit() < standing_share;
        let mut driver = Self {
            walker: StreetWalker::new(city, seed),
            rng,
            standing_share,
            standing,
            phase_left: 0.0,
            quiet_for: 0.0,
            sent_any: false,
        };
        driver.phase_left = driver.phase_secs() * driver.rng.unit();
        driver.quiet_for = driver.rng.between(0.0, STANDING_REPORT_SECS);
        driver
    }

    /// Whether the driver stands (parked or at a pickup) at the moment.
    pub fn is_standing(&self) -> bool {
        self.standing
    }

    /// How long a new phase lasts: stands of 2-10 min, and drives long enough that standing
    /// takes `standing_share` of the time.
    fn phase_secs(&mut self) -> f64 {
        let stand_mean = (STAND_SECS.0 + STAND_SECS.1) / 2.0;
        if self.standing {
            self.rng.between(STAND_SECS.0, STAND_SECS.1)
        } else if self.standing_share >= 1.0 {
            0.0
        } else {
            let drive_mean = stand_mean * (1.0 - self.standing_share) / self.standing_share.max(1e-6);
            self.rng.between(0.5, 1.5) * drive_mean
        }
    }

    /// Moves on by `dt` seconds; the fix the phone sends then, if it sends one. The first call
    /// always sends, so that every rider has a location to see from the start.
    pub fn advance(&mut self, dt: f64) -> Option<Fix> {
        self.phase_left -= dt;
        while self.phase_left <= 0.0 {
            self.standing = if self.standing_share <= 0.0 {
                false
            } else if self.standing_share >= 1.0 {
                true
            } else {
                !self.standing
            };
            self.phase_left += self.phase_secs().max(dt);
        }
        self.quiet_for += dt;
        let fix = if self.standing { self.walker.stand(dt) } else { self.walker.advance(dt) };
        if !self.sent_any {
            // The clock of the 30 s reports keeps its random start: standing phones of a
            // fleet report at spread-out moments, not all in the same second.
            self.sent_any = true;
            return Some(fix);
        }
        if self.standing && self.quiet_for < STANDING_REPORT_SECS - 1e-9 {
            return None;
        }
        self.quiet_for = 0.0;
        Some(fix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over `drivers` drivers and `secs` one-second ticks: (share of ticks standing, share of
    /// ticks that sent a fix).
    fn standing_and_sending(share: f64, drivers: u64, secs: usize) -> (f64, f64) {
        let (mut standing, mut sent, mut total) = (0, 0, 0);
        for seed in 0..drivers {
            let mut driver = FleetDriver::new(City::default(), seed, share);
            for _ in 0..secs {
                sent += usize::from(driver.advance(1.0).is_some());
                standing += usize::from(driver.is_standing());
                total += 1;
            }
        }
        (standing as f64 / total as f64, sent as f64 / total as f64)
    }

    #[test]
    fn drivers_stand_about_the_share_asked_for() {
        for share in [0.5, DEFAULT_STANDING_SHARE] {
            let (standing, _) = standing_and_sending(share, 400, 600);
            assert!((standing - share).abs() < 0.05, "asked {share}, stood {standing}");
        }
    }

    #[test]
    fn by_default_about_one_poll_in_seven_can_find_something_new() {
        // A 2 s poll finds something new if a fix was sent in the 2 s before it: for a driver
        // sending every second that is every poll, for a standing one one poll in 15.
        let (mut fresh, mut polls) = (0, 0);
        for seed in 0..400 {
            let mut driver = FleetDriver::new(City::default(), seed, DEFAULT_STANDING_SHARE);
            let mut since_poll = false;
            for second in 1..=600 {
                since_poll |= driver.advance(1.0).is_some();
                if second % 2 == 0 {
                    fresh += usize::from(since_poll);
                    polls += 1;
                    since_poll = false;
                }
            }
        }
        let share = fresh as f64 / polls as f64;
        assert!((0.11..0.19).contains(&share), "{share} of polls would find a new fix");
    }

    #[test]
    fn the_first_fix_is_sent_and_standing_phones_report_every_30_s() {
        let mut driver = FleetDriver::new(City::default(), 3, 1.0);
        assert!(driver.advance(1.0).is_some());
        let sent: Vec<usize> = (1..=120).filter(|_| driver.advance(1.0).is_some()).collect();
        assert_eq!(sent.len(), 4, "a standing phone sends every 30 s: {sent:?}");
        let mut driving = FleetDriver::new(City::default(), 3, 0.0);
        assert!((0..60).all(|_| driving.advance(1.0).is_some()));
    }

    #[test]
    fn a_fleet_is_reproducible_from_its_seed() {
        let mut a = FleetDriver::new(City::default(), 42, 0.7);
        let mut b = FleetDriver::new(City::default(), 42, 0.7);
        for _ in 0..900 {
            assert_eq!(a.advance(1.0), b.advance(1.0));
        }
    }
}
