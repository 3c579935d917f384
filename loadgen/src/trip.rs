//! The fixes one driver sends, whichever server it sends them to: its motion, stamped with a
//! strictly increasing `ts`, marked as changing cell or not, and as pushed or not as the server
//! under test decides (the origin pushes cell changes only; Nchan, which has no cells, every
//! fix).
//!
//! The WebSocket driver and the Nchan publisher both send from a [`Trip`], so that the two
//! servers are fed the same updates and measured the same way.

use std::time::Duration;

use ridecast_protocol::{GridCell, LocationReport};

use crate::fleet::FleetDriver;
use crate::job::{MotionKind, ServerKind};
use crate::motion::{CellCreeper, CellHopper, City, Fix, StreetWalker};

/// How a driver moves.
#[derive(Debug)]
enum Motion {
    Hop(CellHopper),
    Creep(CellCreeper),
    Walk(StreetWalker),
    Fleet(Box<FleetDriver>),
}

impl Motion {
    /// The next fix, or `None` when the driver's phone sends nothing this interval.
    fn next(&mut self, dt: f64) -> Option<Fix> {
        match self {
            Self::Hop(h) => Some(h.next_fix()),
            Self::Creep(c) => Some(c.next_fix()),
            Self::Walk(w) => Some(w.advance(dt)),
            Self::Fleet(f) => f.advance(dt),
        }
    }
}

/// What every trip of a run has in common.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TripRecipe {
    pub motion: MotionKind,
    /// Decides which fixes are pushed.
    pub server: ServerKind,
    /// Seed of the street paths and the fleet's phases.
    pub seed: u64,
    /// Time between two ticks of one driver.
    pub interval: Duration,
    /// Share of time a fleet driver stands (`MotionKind::Fleet` only).
    pub standing_share: f64,
}

/// One fix, stamped and ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    pub report: LocationReport,
    /// The send instant to record, µs (never before the `ts` millisecond).
    pub send_us: u64,
    /// The fix is in another grid cell than the driver's last fix.
    pub changed_cell: bool,
    /// The server under test pushes this fix to riders: the origin if it changed cell, Nchan
    /// always.
    pub pushed: bool,
}

/// The fixes one driver sends: its motion, with strictly increasing `ts` (the origin drops an
/// update whose `ts` is not newer) and the push decision of the server under test, from the
/// protocol's own [`GridCell`].
#[derive(Debug)]
pub struct Trip {
    motion: Motion,
    server: ServerKind,
    /// Seconds between two ticks.
    dt: f64,
    last_ts: u64,
    /// The cell of the last fix sent. The origin pushes a fix whose cell differs from its last
    /// pushed one, which is this one, since every change of it was pushed.
    last_cell: Option<GridCell>,
}

impl Trip {
    /// The trip of driver `driver`: its start and path derived from the recipe's seed and the
    /// driver.
    pub fn new(recipe: &TripRecipe, driver: usize) -> Self {
        let street_seed = recipe.seed ^ (driver as u64 + 1);
        let motion = match recipe.motion {
            MotionKind::Hop => Motion::Hop(CellHopper::new(driver as u64)),
            MotionKind::Creep => Motion::Creep(CellCreeper::new(driver as u64)),
            MotionKind::Street => Motion::Walk(StreetWalker::new(City::default(), street_seed)),
            MotionKind::Fleet => {
                Motion::Fleet(Box::new(FleetDriver::new(City::default(), street_seed, recipe.standing_share)))
            }
        };
        Self { motion, server: recipe.server, dt: recipe.interval.as_secs_f64(), last_ts: 0, last_cell: None }
    }

    /// Whether the driver's location exists before the measured window: a fleet was on the road
    /// (or parked) before anyone measured it, so its first fix is sent before `go` and counts
    /// neither as a send nor as news. Other motions start their trip at `go`.
    pub fn reports_before_go(&self) -> bool {
        matches!(self.motion, Motion::Fleet(_))
    }

    /// The fix to send at `now_us` (µs since the epoch), or `None` when the driver's phone
    /// sends nothing this tick (a standing fleet driver).
    pub fn next_at(&mut self, now_us: u64) -> Option<Stamped> {
        let fix = self.motion.next(self.dt)?;
        let ts = (now_us / 1000).max(self.last_ts + 1);
        self.last_ts = ts;
        let cell = GridCell::of(fix.lat, fix.lng);
        let changed_cell = self.last_cell != Some(cell);
        self.last_cell = Some(cell);
        let pushed = match self.server {
            ServerKind::Origin => changed_cell,
            ServerKind::Nchan => true,
        };
        let report =
            LocationReport { lat: fix.lat, lng: fix.lng, heading: Some(fix.heading), speed: Some(fix.speed), ts };
        Some(Stamped { report, send_us: now_us.max(ts * 1000), changed_cell, pushed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(motion: MotionKind, server: ServerKind, seed: u64) -> TripRecipe {
        TripRecipe { motion, server, seed, interval: Duration::from_secs(1), standing_share: 0.5 }
    }

    fn trip(motion: MotionKind, seed: u64, driver: usize) -> Trip {
        Trip::new(&recipe(motion, ServerKind::Origin, seed), driver)
    }

    /// `(changed cell, pushed)` counts over `n` one-second fixes.
    fn counts(trip: &mut Trip, n: u64) -> (usize, usize) {
        let fixes: Vec<Stamped> = (0..n).filter_map(|i| trip.next_at(1_000_000_000 + i * 1_000_000)).collect();
        (fixes.iter().filter(|f| f.changed_cell).count(), fixes.iter().filter(|f| f.pushed).count())
    }

    #[test]
    fn timestamps_grow_even_when_the_clock_does_not() {
        let mut trip = trip(MotionKind::Hop, 1, 3);
        let first = trip.next_at(1_764_240_000_123_456).expect("hoppers always send");
        let second = trip.next_at(1_764_240_000_123_900).expect("hoppers always send");
        let third = trip.next_at(1_764_240_000_100_000).expect("hoppers always send");
        assert_eq!(first.report.ts, 1_764_240_000_123);
        assert_eq!(second.report.ts, 1_764_240_000_124);
        assert_eq!(third.report.ts, 1_764_240_000_125);
        // A send is never recorded before the millisecond its `ts` names.
        assert_eq!(first.send_us, 1_764_240_000_123_456);
        assert_eq!(second.send_us, 1_764_240_000_124_000);
    }

    #[test]
    fn a_hopping_trip_pushes_every_fix_and_a_street_trip_only_some() {
        assert_eq!(counts(&mut trip(MotionKind::Hop, 1, 0), 100), (100, 100));
        let (changed, pushed) = counts(&mut trip(MotionKind::Street, 1, 0), 600);
        assert_eq!(changed, pushed, "the origin pushes exactly the cell changes");
        assert!((30..300).contains(&pushed), "{pushed} of 600 street fixes changed cell");
    }

    #[test]
    fn a_creeping_trip_changes_cell_one_fix_in_five_and_nchan_is_sent_every_fix() {
        let (changed, pushed) = counts(&mut trip(MotionKind::Creep, 1, 4), 1000);
        assert_eq!(changed, pushed);
        assert!((190..=210).contains(&changed), "{changed} of 1000 creeping fixes changed cell");
        let mut to_nchan = Trip::new(&recipe(MotionKind::Creep, ServerKind::Nchan, 1), 4);
        assert_eq!(counts(&mut to_nchan, 1000), (changed, 1000), "the same cell changes; Nchan pushes all");
    }

    #[test]
    fn a_fleet_trip_skips_the_ticks_of_a_standing_phone() {
        let mut standing =
            Trip::new(&TripRecipe { standing_share: 1.0, ..recipe(MotionKind::Fleet, ServerKind::Origin, 2) }, 0);
        assert!(standing.reports_before_go());
        let sent = (0..=120).filter_map(|i| standing.next_at(1_000_000_000 + i * 1_000_000)).count();
        assert_eq!(sent, 5, "the first fix, then one every 30 s for 120 s");
        assert!(!trip(MotionKind::Street, 1, 0).reports_before_go());
    }

    #[test]
    fn the_first_fix_is_always_pushed_and_fixes_are_valid_locations() {
        for kind in [MotionKind::Hop, MotionKind::Creep, MotionKind::Street, MotionKind::Fleet] {
            let fix = trip(kind, 7, 42).next_at(1_764_240_000_000_000).expect("the first fix is sent");
            assert!(fix.pushed && fix.changed_cell);
            assert_eq!(fix.report.validate(1_764_240_000_000), Ok(()));
        }
    }
}
