//! The fixes one driver sends, whichever server it sends them to: its motion, stamped with a
//! strictly increasing `ts`, and marked as pushed or not as the origin would decide.
//!
//! The WebSocket driver and the Nchan publisher both send from a [`Trip`], so that the two
//! servers are fed the same updates and measured the same way.

use std::time::Duration;

use ridecast_protocol::{GridCell, LocationReport};

use crate::job::MotionKind;
use crate::motion::{CellHopper, City, Fix, StreetWalker};

/// How a driver moves.
#[derive(Debug)]
enum Motion {
    Hop(CellHopper),
    Walk(StreetWalker),
}

impl Motion {
    fn next(&mut self, dt: f64) -> Fix {
        match self {
            Self::Hop(h) => h.next_fix(),
            Self::Walk(w) => w.advance(dt),
        }
    }
}

/// One fix, stamped and ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    pub report: LocationReport,
    /// The send instant to record, µs (never before the `ts` millisecond).
    pub send_us: u64,
    /// The fix is in another grid cell than the last pushed one, so the origin pushes it.
    pub pushed: bool,
}

/// The fixes one driver sends: its motion, with strictly increasing `ts` (the origin drops an
/// update whose `ts` is not newer) and the push decision the origin makes, from the protocol's
/// own [`GridCell`].
#[derive(Debug)]
pub struct Trip {
    motion: Motion,
    /// Seconds between two fixes.
    dt: f64,
    last_ts: u64,
    last_pushed: Option<GridCell>,
}

impl Trip {
    /// The trip of driver `driver`: hopping from cell to cell, or driving streets from a start
    /// derived from `seed` and the driver.
    pub fn new(kind: MotionKind, seed: u64, driver: usize, interval: Duration) -> Self {
        let motion = match kind {
            MotionKind::Hop => Motion::Hop(CellHopper::new(driver as u64)),
            MotionKind::Street => Motion::Walk(StreetWalker::new(City::default(), seed ^ (driver as u64 + 1))),
        };
        Self { motion, dt: interval.as_secs_f64(), last_ts: 0, last_pushed: None }
    }

    /// The next fix, sent at `now_us` (µs since the epoch).
    pub fn next_at(&mut self, now_us: u64) -> Stamped {
        let fix = self.motion.next(self.dt);
        let ts = (now_us / 1000).max(self.last_ts + 1);
        self.last_ts = ts;
        let cell = GridCell::of(fix.lat, fix.lng);
        let pushed = self.last_pushed != Some(cell);
        if pushed {
            self.last_pushed = Some(cell);
        }
        let report =
            LocationReport { lat: fix.lat, lng: fix.lng, heading: Some(fix.heading), speed: Some(fix.speed), ts };
        Stamped { report, send_us: now_us.max(ts * 1000), pushed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_grow_even_when_the_clock_does_not() {
        let mut trip = Trip::new(MotionKind::Hop, 1, 3, Duration::from_secs(1));
        let first = trip.next_at(1_764_240_000_123_456);
        let second = trip.next_at(1_764_240_000_123_900);
        let third = trip.next_at(1_764_240_000_100_000);
        assert_eq!(first.report.ts, 1_764_240_000_123);
        assert_eq!(second.report.ts, 1_764_240_000_124);
        assert_eq!(third.report.ts, 1_764_240_000_125);
        // A send is never recorded before the millisecond its `ts` names.
        assert_eq!(first.send_us, 1_764_240_000_123_456);
        assert_eq!(second.send_us, 1_764_240_000_124_000);
    }

    #[test]
    fn a_hopping_trip_pushes_every_fix_and_a_street_trip_only_some() {
        let mut hop = Trip::new(MotionKind::Hop, 1, 0, Duration::from_secs(1));
        assert!((0..100).all(|i| hop.next_at(1_000_000_000 + i * 1_000_000).pushed));
        let mut street = Trip::new(MotionKind::Street, 1, 0, Duration::from_secs(1));
        let pushed = (0..600).filter(|i| street.next_at(1_000_000_000 + i * 1_000_000).pushed).count();
        assert!((60..500).contains(&pushed), "{pushed} of 600 street fixes changed cell");
    }

    #[test]
    fn the_first_fix_is_always_pushed_and_fixes_are_valid_locations() {
        for kind in [MotionKind::Hop, MotionKind::Street] {
            let mut trip = Trip::new(kind, 7, 42, Duration::from_secs(1));
            let fix = trip.next_at(1_764_240_000_000_000);
            assert!(fix.pushed);
            assert_eq!(fix.report.validate(1_764_240_000_000), Ok(()));
        }
    }
}
