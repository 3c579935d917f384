//! How simulated drivers move.
//!
//! * [`CellHopper`] (fan-out mode) jumps to a new ~50 m grid cell on every update, so that every
//!   update is pushed and the expected number of deliveries is exact.
//! * [`StreetWalker`] (realistic mode) drives along a Manhattan grid of streets at 8–14 m/s,
//!   turning at intersections, with ~5 m of GPS noise on each fix; only some fixes change cell.
//!
//! Both are pure and seeded, so a run can be repeated and the paths can be tested.

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
        }
    }
}

/// Realistic motion: along streets, turning at intersections, with GPS noise.
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
}

impl StreetWalker {
    pub fn new(city: City, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let span = (2 * city.radius_blocks + 1) as usize;
        let from = (rng.below(span) as i64 - city.radius_blocks, rng.below(span) as i64 - city.radius_blocks);
        let dir = rng.below(DIRECTIONS.len());
        let along = rng.between(0.0, city.block_m);
        let speed = rng.between(city.min_speed, city.max_speed);
        let mut walker = Self { city, rng, from, dir, along, speed };
        walker.keep_inside();
        walker
    }

    /// Position on the street (no noise) in metres east and north of the center.
    pub fn true_position_m(&self) -> (f64, f64) {
        let (dx, dy) = DIRECTIONS[self.dir];
        let block = self.city.block_m;
        (self.from.0 as f64 * block + dx as f64 * self.along, self.from.1 as f64 * block + dy as f64 * self.along)
    }

    /// Drives for `dt` seconds and returns the (noisy) fix at the end.
    pub fn advance(&mut self, dt: f64) -> Fix {
        let mut left = self.speed * dt;
        while self.along + left >= self.city.block_m {
            left -= self.city.block_m - self.along;
            let (dx, dy) = DIRECTIONS[self.dir];
            self.from = (self.from.0 + dx, self.from.1 + dy);
            self.along = 0.0;
            self.turn();
        }
        self.along += left;
        // Speed drifts a little from second to second, as traffic does.
        self.speed = (self.speed + self.rng.normal() * 0.5).clamp(self.city.min_speed, self.city.max_speed);
        self.fix()
    }

    fn fix(&mut self) -> Fix {
        let (x, y) = self.true_position_m();
        let x = x + self.rng.normal() * self.city.gps_sigma_m;
        let y = y + self.rng.normal() * self.city.gps_sigma_m;
        let lat = self.city.center_lat + y / METRES_PER_DEGREE;
        let lng = self.city.center_lng + x / (METRES_PER_DEGREE * self.city.center_lat.to_radians().cos());
        Fix { lat, lng, heading: self.dir as f64 * 90.0, speed: self.speed }
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
                assert!((city.min_speed..=city.max_speed).contains(&fix.speed));
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

    #[test]
    fn only_some_fixes_change_cell() {
        let mut walker = StreetWalker::new(City::default(), 11);
        let mut last = None;
        let mut changes = 0;
        let n = 3600;
        for _ in 0..n {
            let fix = walker.advance(1.0);
            let cell = GridCell::of(fix.lat, fix.lng);
            if Some(cell) != last {
                changes += 1;
            }
            last = Some(cell);
        }
        let ratio = changes as f64 / n as f64;
        // At ~11 m/s a 50 m cell is crossed every ~4.5 s; GPS noise near borders adds flips.
        assert!((0.15..0.7).contains(&ratio), "{ratio}");
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
