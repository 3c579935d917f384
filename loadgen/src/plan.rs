//! Who connects where: riders grouped by driver, split over worker processes, and source
//! addresses chosen so that no process runs out of file descriptors or ports.
//!
//! Riders are numbered in "slots" sorted by driver (all riders of driver 0 first), and each
//! worker takes a contiguous range of slots. A driver is simulated by the worker holding its
//! first rider, so that usually a driver and all its riders share a process and latency can be
//! measured against the exact send instant rather than the millisecond `ts`.

use std::net::Ipv4Addr;
use std::ops::Range;

/// Riders spread as evenly as possible over drivers, numbered by driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub drivers: usize,
    pub riders: usize,
}

impl Layout {
    /// How many riders follow `driver`: the first `riders % drivers` drivers get one extra.
    pub fn riders_of(&self, driver: usize) -> usize {
        if self.drivers == 0 {
            return 0;
        }
        self.riders / self.drivers + usize::from(driver < self.riders % self.drivers)
    }

    /// The slot of `driver`'s first rider (equal to the next driver's when it has none).
    pub fn first_slot(&self, driver: usize) -> usize {
        if self.drivers == 0 {
            return 0;
        }
        let (base, extra) = (self.riders / self.drivers, self.riders % self.drivers);
        driver * base + driver.min(extra)
    }

    /// The driver rider `slot` follows.
    pub fn driver_of(&self, slot: usize) -> usize {
        if self.drivers == 0 {
            return 0;
        }
        let (base, extra) = (self.riders / self.drivers, self.riders % self.drivers);
        let big = extra * (base + 1);
        if slot < big { slot / (base + 1) } else { extra + (slot - big) / base.max(1) }
    }
}

/// The contiguous share of `0..total` that worker `worker` of `procs` takes.
pub fn share(total: usize, procs: usize, worker: usize) -> Range<usize> {
    let procs = procs.max(1) as u128;
    let at = |w: usize| (total as u128 * w as u128 / procs) as usize;
    at(worker)..at(worker + 1)
}

/// The worker that simulates `driver`: the one holding its first rider, or, for a driver
/// without riders, one picked round-robin.
pub fn owner_of_driver(layout: &Layout, procs: usize, driver: usize) -> usize {
    let procs = procs.max(1);
    if layout.riders_of(driver) == 0 {
        return driver % procs;
    }
    let slot = layout.first_slot(driver);
    (0..procs).find(|&w| share(layout.riders, procs, w).contains(&slot)).unwrap_or(driver % procs)
}

/// Source addresses worker `worker` binds its client sockets to.
///
/// With `addrs` addresses in use (127.0.0.2 upwards), worker `w` takes every address whose
/// number is `w` modulo `procs`; when there are fewer addresses than workers they are shared.
/// `addrs == 0` means "do not bind" (the kernel picks 127.0.0.1), signalled by an empty list.
pub fn source_ips(worker: usize, procs: usize, addrs: usize) -> Vec<Ipv4Addr> {
    let addr = |n: usize| Ipv4Addr::new(127, 0, 0, (2 + n) as u8);
    if addrs == 0 {
        return Vec::new();
    }
    let procs = procs.max(1);
    if addrs < procs {
        return vec![addr(worker % addrs)];
    }
    (worker..addrs).step_by(procs).map(addr).collect()
}

/// Most source addresses available in 127.0.0.2..=127.0.0.254.
pub const MAX_SOURCE_ADDRS: usize = 253;

/// Names of the simulated drivers and riders of one run.
///
/// The run tag keeps ids of different runs apart, so a rider never sees a location left in
/// the store by an earlier run as if it were new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str, run_tag: &str) -> Self {
        Self { prefix: format!("{prefix}{run_tag}") }
    }

    pub fn driver(&self, driver: usize) -> String {
        format!("{}-d{driver}", self.prefix)
    }

    pub fn rider(&self, slot: usize) -> String {
        format!("{}-r{slot}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use ridecast_protocol::Id;

    use super::*;

    #[test]
    fn every_slot_maps_to_its_driver_and_counts_add_up() {
        for (drivers, riders) in [(1, 1), (1, 7), (3, 10), (10, 1000), (7, 3), (19_000, 19_000), (5, 0)] {
            let layout = Layout { drivers, riders };
            let total: usize = (0..drivers).map(|d| layout.riders_of(d)).sum();
            assert_eq!(total, riders);
            for d in 0..drivers {
                let first = layout.first_slot(d);
                for slot in first..first + layout.riders_of(d) {
                    assert_eq!(layout.driver_of(slot), d, "{drivers}x{riders}: slot {slot}");
                }
            }
        }
    }

    #[test]
    fn shares_cover_everything_once() {
        for (total, procs) in [(0, 1), (10, 3), (19_000, 1), (50_000, 3), (7, 10)] {
            let mut next = 0;
            for w in 0..procs {
                let range = share(total, procs, w);
                assert_eq!(range.start, next);
                next = range.end;
            }
            assert_eq!(next, total);
        }
    }

    #[test]
    fn drivers_live_with_their_first_rider() {
        let layout = Layout { drivers: 10, riders: 1000 };
        for d in 0..10 {
            let owner = owner_of_driver(&layout, 2, d);
            assert!(share(1000, 2, owner).contains(&layout.first_slot(d)));
        }
        // Whole drivers per worker when they divide evenly.
        assert_eq!((0..10).filter(|&d| owner_of_driver(&layout, 2, d) == 0).count(), 5);
        // Drivers without riders still get a worker.
        let sparse = Layout { drivers: 5, riders: 2 };
        assert!((0..5).all(|d| owner_of_driver(&sparse, 3, d) < 3));
    }

    #[test]
    fn source_addresses_are_spread_and_distinct_per_worker() {
        assert_eq!(source_ips(0, 1, 1), vec![Ipv4Addr::new(127, 0, 0, 2)]);
        assert_eq!(source_ips(1, 3, 3), vec![Ipv4Addr::new(127, 0, 0, 3)]);
        assert_eq!(source_ips(1, 2, 5), vec![Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 5)]);
        assert_eq!(source_ips(3, 4, 2), vec![Ipv4Addr::new(127, 0, 0, 3)]);
        assert!(source_ips(0, 1, 0).is_empty());
        assert_eq!(source_ips(0, 1, MAX_SOURCE_ADDRS).last(), Some(&Ipv4Addr::new(127, 0, 0, 254)));
    }

    #[test]
    fn names_are_valid_ids() {
        let names = Names::new("lg", "a1b2c3");
        assert_eq!(names.driver(4), "lga1b2c3-d4");
        assert!(Id::parse(&names.driver(1_000_000)).is_ok());
        assert!(Id::parse(&names.rider(1_000_000)).is_ok());
    }
}
