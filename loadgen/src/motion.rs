//! How simulated drivers move.
//!
//! * [`CellHopper`] (fan-out mode) jumps to a new ~50 m grid cell on every update, so that every
//!   update is pushed and the expected number of deliveries is exact.
//! * [`CellCreeper`] (fan-out mode, `--motion creep`) moves 10 m north per fix, so about one fix
//!   in five changes cell: the origin pushes those, Nchan (which has no cells) every fix.
//! * [`StreetWalker`] (realistic mode) drives along a Manhattan grid of streets at 8–14 m/s,
//!   turning at intersections and waiting at some of them (lights, traffic), with ~5 m of GPS
//!   noise that drifts slowly as phones' fixes do; only some fixes change cell.
//!
//! All are pure and seeded, so a run can be repeated and the paths can be tested.

use ridecast_protocol::grid::CELL_DEGREES;
use ridecast_rng::Rng;

/// Metres per degree of latitude (and of longitude at the equator).
const METRES_PER_DEGREE: f64 = 111_320.0;

/// One position report to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub lat: f64,
    pub lng: f64,
    /// Degrees clockwise from north, in `[0, 360)`.
    pub heading: f64,
    /// Metres per second.
    pub speed: f64,
}

/// Fan-out motion: every call lands 1.5 cells further north, so every fix is in a new cell.
#[derive(Debug, Clone)]
pub struct CellHopper {
    start_lat: f64,
    lng: f64,
    step: u64,
}

impl CellHopper {
    /// Steps before jumping back to the start (still a cell change), to stay near the city.
    const WRAP: u64 = 2000;

    /// A hopper starting at a spot of its own, derived from the driver's index.
    pub fn new(driver_index: u64) -> Self {
        let start_lat = 37.60 + (driver_index % 200) as f64 * 0.002;
        let lng = -122.50 + (driver_index / 200 % 200) as f64 * 0.002;
        Self { start_lat, lng, step: 0 }
    }

    pub fn next_fix(&mut self) -> Fix {
        let lat = self.start_lat + (self.step % Self::WRAP) as f64 * CELL_DEGREES * 1.5 + CELL_DEGREES / 2.0;
        self.step += 1;
        Fix { lat, lng: self.lng, heading: 0.0, speed: CELL_DEGREES * 1.5 * METRES_PER_DEGREE }
    }
}

/// Fan-out motion at crawling-traffic pace: 10 m north per fix along a straight line, so
/// that a fix changes its ~50 m cell about once in five and the generator knows which ones do.
#[derive(Debug, Clone)]
pub struct CellCreeper {
    start_lat: f64,
    lng: f64,
    step: u64,
}

impl CellCreeper {
    /// Metres moved per fix.
    pub const STEP_M: f64 = 10.0;
    /// Steps before jumping back to the start (about 20 km), to stay near the city.
    const WRAP: u64 = 2000;

    /// A creeper starting at a spot of its own, derived from the driver's index like the
    /// hopper's, so that the two motions cover the same ground.
    pub fn new(driver_index: u64) -> Self {
        let CellHopper { start_lat, lng, .. } = CellHopper::new(driver_index);
        Self { start_lat, lng, step: 0 }
    }

    pub fn next_fix(&mut self) -> Fix {
        let lat = self.start_lat + (self.step % Self::WRAP) as f64 * Self::STEP_M / METRES_PER_DEGREE;
        self.step += 1;
        Fix { lat, lng: self.lng, heading: 0.0, speed: Self::STEP_M }
    }
}

/// The four directions a street runs in, as unit steps in (east, north).
const DIRECTIONS: [(i64, i64); 4] = [(0, 1), (1, 0), (0, -1), (-1, 0)];

/// Shape of the street grid a [`StreetWalker`] drives on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct City {
    pub center_lat: f64,
    pub center_lng: f64,
    /// Distance between parallel streets, metres.
    pub block_m: f64,
    /// Blocks from the center to the edge; walkers turn back at the edge.
    pub radius_blocks: i64,
    pub min_speed: f64,
    pub max_speed: f64,
    /// Standard deviation of GPS noise per axis, metres.
    pub gps_sigma_m: f64,
    /// How long GPS error takes to wander off, seconds: a phone's consecutive fixes err in
    /// nearly the same direction, so a car at a standstill does not jump between cells on
    /// every fix, as independent noise would make it do about one fix in five.
    pub gps_drift_secs: f64,
    /// Share of intersections where a driver waits (a red light, a jam).
    pub stop_share: f64,
    /// Shortest and longest wait at such an intersection, seconds.
    pub stop_secs: (f64, f64),
}

impl Default for City {
    /// San Francisco-ish: 100 m blocks, 6 km across.
    fn default() -> Self {
        Self {
            center_lat: 37.7749,
            center_lng: -122.4194,
            block_m: 100.0,
            radius_blocks: 30,
            min_speed: 8.0,
            max_speed: 14.0,
            gps_sigma_m: 5.0,
            gps_drift_secs: 10.0,
            stop_share: 0.3,
            stop_secs: (20.0, 60.0),
        }
    }
}

/// Realistic motion: along streets, turning at intersections, waiting at some, with GPS noise.
#[derive(Debug, Clone)]
pub struct StreetWalker {
    city: City,
    rng: Rng,
    /// The intersection last passed, in blocks east and north of the center.
    from: (i64, i64),
    /// Index into [`DIRECTIONS`].
    dir: usize,
    /// Metres driven past `from` towards the next intersection.
    along: f64,
    speed: f64,
    /// Seconds still to wait at the intersection `from` (0 while driving).
    waiting: f64,
    /// The current GPS error, metres east and north.
    gps_error: (f64, f64),
}

impl StreetWalker {
    pub fn new(city: City, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let span = (2 * city.radius_blocks + 1) as usize;
        let from = (rng.below(span) as i64 - city.radius_blocks, rng.below(span) as i64 - city.radius_blocks);
        let dir = rng.below(DIRECTIONS.len());
        let along = rng.between(0.0, city.block_m);
        let speed = rng.between(city.min_speed, city.max_speed);
        let gps_error = (rng.normal() * city.gps_sigma_m, rng.normal() * city.gps_sigma_m);
        let mut walker = Self { city, rng, from, dir, along, speed, waiting: 0.0, gps_error };
        walker.keep_inside();
        walker
    }

    /// Position on the street (no noise) in metres east and north of the center.
    pub fn true_position_m(&self) -> (f64, f64) {
        let (dx, dy) = DIRECTIONS[self.dir];
        let block = self.city.block_m;
        (self.from.0 as f64 * block + dx as f64 * self.along, self.from.1 as f64 * block + dy as f64 * self.along)
    }

    /// Whether the walker is waiting at an intersection.
    pub fn is_waiting(&self) -> bool {
        self.waiting > 0.0
    }

    /// Drives (or waits) for `dt` seconds and returns the (noisy) fix at the end.
    pub fn advance(&mut self, dt: f64) -> Fix {
        let mut time = dt;
        loop {
            let waited = self.waiting.min(time);
            self.waiting -= waited;
            time -= waited;
            let to_corner = self.city.block_m - self.along;
            if time <= 0.0 || self.speed * time < to_corner {
                self.along += self.speed * time.max(0.0);
                break;
            }
            time -= to_corner / self.speed;
            let (dx, dy) = DIRECTIONS[self.dir];
            self.from = (self.from.0 + dx, self.from.1 + dy);
            self.along = 0.0;
            self.turn();
            if self.rng.unit() < self.city.stop_share {
                self.waiting = self.rng.between(self.city.stop_secs.0, self.city.stop_secs.1);
            }
        }
        // Speed drifts a little from second to second, as traffic does.
        self.speed = (self.speed + self.rng.normal() * 0.5).clamp(self.city.min_speed, self.city.max_speed);
        self.fix(dt)
    }

    /// Stays where it is for `dt` seconds (parked, or at a pickup) and returns the fix there:
    /// GPS noise goes on.
    pub fn stand(&mut self, dt: f64) -> Fix {
        let fix = self.fix(dt);
        Fix { speed: 0.0, ..fix }
    }

    /// The fix at the true position plus GPS error, which has drifted for `dt` seconds (an
    /// AR(1) process whose spread stays `gps_sigma_m`).
    fn fix(&mut self, dt: f64) -> Fix {
        let keep = (-dt / self.city.gps_drift_secs.max(1e-9)).exp();
        let fresh = (1.0 - keep * keep).sqrt() * self.city.gps_sigma_m;
        self.gps_error.0 = self.gps_error.0 * keep + self.rng.normal() * fresh;
        self.gps_error.1 = self.gps_error.1 * keep + self.rng.normal() * fresh;
        let (x, y) = self.true_position_m();
        let x = x + self.gps_error.0;
        let y = y + self.gps_error.1;
        let lat = self.city.center_lat + y / METRES_PER_DEGREE;
        let lng = self.city.center_lng + x / (METRES_PER_DEGREE * self.city.center_lat.to_radians().cos());
        let speed = if self.is_waiting() { 0.0 } else { self.speed };
        Fix { lat, lng, heading: self.dir as f64 * 90.0, speed }
    }

    /// At an intersection: mostly straight on, sometimes left or right, never a U-turn unless
    /// the city's edge leaves no other way.
    fn turn(&mut self) {
        let roll = self.rng.unit();
        self.dir = if roll < 0.6 {
            self.dir
        } else if roll < 0.8 {
            (self.dir + 1) % 4
        } else {
            (self.dir + 3) % 4
        };
        self.keep_inside();
    }

    /// Points the walker at a street that stays inside the city.
    fn keep_inside(&mut self) {
        let r = self.city.radius_blocks;
        let inside = |from: (i64, i64), dir: usize| {
            let (dx, dy) = DIRECTIONS[dir];
            (from.0 + dx).abs() <= r && (from.1 + dy).abs() <= r
        };
        if inside(self.from, self.dir) {
            return;
        }
        for turn in [1, 3, 2] {
            let dir = (self.dir + turn) % 4;
            if inside(self.from, dir) {
                self.dir = dir;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ridecast_protocol::GridCell;

    use super::*;

    #[test]
    fn a_hopper_changes_cell_on_every_fix() {
        for driver in [0, 1, 199, 200, 12_345] {
            let mut hopper = CellHopper::new(driver);
            let mut last = None;
            for _ in 0..CellHopper::WRAP * 2 + 5 {
                let fix = hopper.next_fix();
                let cell = GridCell::of(fix.lat, fix.lng);
                assert_ne!(Some(cell), last, "driver {driver} stayed in {cell:?}");
                last = Some(cell);
            }
        }
    }

    #[test]
    fn hoppers_of_different_drivers_start_apart() {
        let a = CellHopper::new(0).next_fix();
        let b = CellHopper::new(1).next_fix();
        assert_ne!(GridCell::of(a.lat, a.lng), GridCell::of(b.lat, b.lng));
    }

    #[test]
    fn a_walker_stays_on_streets_inside_the_city_at_street_speeds() {
        let city = City::default();
        for seed in 0..50 {
            let mut walker = StreetWalker::new(city, seed);
            for _ in 0..2000 {
                let fix = walker.advance(1.0);
                let (x, y) = walker.true_position_m();
                let on_ns_street = (x / city.block_m - (x / city.block_m).round()).abs() < 1e-6;
                let on_ew_street = (y / city.block_m - (y / city.block_m).round()).abs() < 1e-6;
                assert!(on_ns_street || on_ew_street, "seed {seed}: ({x}, {y}) is off-street");
                let edge = city.block_m * city.radius_blocks as f64 + 1e-6;
                assert!(x.abs() <= edge && y.abs() <= edge, "seed {seed}: ({x}, {y}) left the city");
                let moving = (city.min_speed..=city.max_speed).contains(&fix.speed);
                assert!(moving || (walker.is_waiting() && fix.speed == 0.0), "seed {seed}: speed {}", fix.speed);
                assert!((0.0..360.0).contains(&fix.heading));
            }
        }
    }

    #[test]
    fn gps_noise_is_about_five_metres() {
        let city = City::default();
        let mut walker = StreetWalker::new(city, 3);
        let mut squares = 0.0;
        let n = 5000;
        let metres_per_lng = METRES_PER_DEGREE * city.center_lat.to_radians().cos();
        for _ in 0..n {
            let fix = walker.advance(1.0);
            let (x, y) = walker.true_position_m();
            let ex = (fix.lng - city.center_lng) * metres_per_lng - x;
            let ey = (fix.lat - city.center_lat) * METRES_PER_DEGREE - y;
            squares += ex * ex + ey * ey;
        }
        let per_axis_sd = (squares / (2.0 * n as f64)).sqrt();
        assert!((per_axis_sd - 5.0).abs() < 0.3, "{per_axis_sd}");
    }

    /// Share of `n` one-second fixes that changed cell, and share spent waiting, over `seeds`.
    fn cell_changes_and_waits(city: City, seeds: std::ops::Range<u64>, n: usize) -> (f64, f64) {
        let (mut changes, mut waits, mut total) = (0, 0, 0);
        for seed in seeds {
            let mut walker = StreetWalker::new(city, seed);
            let mut last = None;
            for _ in 0..n {
                let fix = walker.advance(1.0);
                let cell = GridCell::of(fix.lat, fix.lng);
                changes += usize::from(last.is_some_and(|l| l != cell));
                waits += usize::from(walker.is_waiting());
                total += 1;
                last = Some(cell);
            }
        }
        (changes as f64 / total as f64, waits as f64 / total as f64)
    }

    #[test]
    fn most_fixes_stay_in_their_cell_because_drivers_wait_at_lights() {
        let (changes, waits) = cell_changes_and_waits(City::default(), 0..20, 3600);
        // About 9 s of driving per 100 m block, then 30 % of the time 20-60 s of waiting: more
        // than half the time at a standstill, where drifting GPS error rarely crosses a border.
        assert!((0.45..0.7).contains(&waits), "{waits} of the time waiting");
        assert!((0.08..0.2).contains(&changes), "{changes} of the fixes changed cell");
    }

    #[test]
    fn without_stops_a_driver_changes_cell_every_few_seconds() {
        let city = City { stop_share: 0.0, ..City::default() };
        let (changes, waits) = cell_changes_and_waits(city, 0..5, 3600);
        assert_eq!(waits, 0.0);
        // At ~11 m/s a 50 m cell is crossed every ~4.5 s; GPS noise near borders adds flips.
        assert!((0.18..0.4).contains(&changes), "{changes}");
    }

    #[test]
    fn a_waiting_walker_stays_put_while_its_fix_wanders() {
        let mut walker = StreetWalker::new(City { stop_share: 1.0, ..City::default() }, 5);
        while !walker.is_waiting() {
            walker.advance(1.0);
        }
        let spot = walker.true_position_m();
        let fixes: Vec<Fix> = (0..15).map(|_| walker.advance(1.0)).collect();
        assert_eq!(walker.true_position_m(), spot);
        assert!(fixes.iter().all(|f| f.speed == 0.0));
        assert!(fixes.windows(2).any(|w| w[0] != w[1]), "GPS noise goes on while waiting");
    }

    #[test]
    fn a_creeper_changes_cell_about_once_in_five_fixes() {
        for driver in [0, 7, 12_345] {
            let mut creeper = CellCreeper::new(driver);
            let mut last = None;
            let mut changes = 0;
            let n = 5000;
            for _ in 0..n {
                let fix = creeper.next_fix();
                let cell = GridCell::of(fix.lat, fix.lng);
                changes += usize::from(last.is_some_and(|l| l != cell));
                last = Some(cell);
            }
            let share = changes as f64 / n as f64;
            assert!((0.18..0.22).contains(&share), "driver {driver}: {share}");
        }
    }

    #[test]
    fn walkers_are_reproducible_from_their_seed() {
        let mut a = StreetWalker::new(City::default(), 99);
        let mut b = StreetWalker::new(City::default(), 99);
        for _ in 0..100 {
            assert_eq!(a.advance(1.0), b.advance(1.0));
        }
    }
}
