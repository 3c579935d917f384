//! What this process's drivers sent, kept so that its riders can look up the exact send
//! instant of an update they receive (latency), or of every update a poll skipped (staleness).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// How many recent sends each driver remembers for latency lookups.
const RING: usize = 64;

/// A driver's recent sends: `(ts, send instant in µs, pushed)`.
#[derive(Debug)]
struct SendRing {
    entries: [(u64, u64, bool); RING],
    next: usize,
}

impl SendRing {
    fn push(&mut self, entry: (u64, u64, bool)) {
        self.entries[self.next % RING] = entry;
        self.next += 1;
    }

    fn find(&self, ts: u64) -> Option<(u64, bool)> {
        self.entries.iter().find(|e| e.0 == ts && ts != 0).map(|e| (e.1, e.2))
    }
}

/// What this worker's drivers sent, for riders to look up send instants.
#[derive(Debug)]
struct DriverRecord {
    ring: Mutex<SendRing>,
    sends: AtomicU64,
    pushes: AtomicU64,
    cell_changes: AtomicU64,
}

/// What one driver of this process sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverSends {
    pub driver: u32,
    pub sends: u64,
    /// Sends the server under test pushes.
    pub pushes: u64,
    /// Sends that changed grid cell (for Nchan fewer than the pushes).
    pub cell_changes: u64,
}

/// The send records of the drivers simulated in this process, indexed by driver.
#[derive(Debug)]
pub struct DriverBook {
    records: BTreeMap<usize, DriverRecord>,
}

impl DriverBook {
    /// Empty records for the drivers `owned` by this process.
    pub(crate) fn new(owned: &[usize]) -> Self {
        let records = owned
            .iter()
            .map(|&d| {
                let record = DriverRecord {
                    ring: Mutex::new(SendRing { entries: [(0, 0, false); RING], next: 0 }),
                    sends: AtomicU64::new(0),
                    pushes: AtomicU64::new(0),
                    cell_changes: AtomicU64::new(0),
                };
                (d, record)
            })
            .collect();
        Self { records }
    }

    /// Notes a send before it goes on the wire (a rider may see it before `send` returns).
    pub fn record_send(&self, driver: usize, ts: u64, send_us: u64, pushed: bool, changed_cell: bool) {
        if let Some(record) = self.records.get(&driver) {
            record.ring.lock().unwrap_or_else(PoisonError::into_inner).push((ts, send_us, pushed));
            record.sends.fetch_add(1, Ordering::Relaxed);
            if pushed {
                record.pushes.fetch_add(1, Ordering::Relaxed);
            }
            if changed_cell {
                record.cell_changes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The send instant and push flag of `driver`'s update `ts`, if this process sent it
    /// recently.
    pub fn lookup(&self, driver: usize, ts: u64) -> Option<(u64, bool)> {
        self.records.get(&driver)?.ring.lock().unwrap_or_else(PoisonError::into_inner).find(ts)
    }

    /// Calls `f` with the send instant and push flag of every update of `driver` with
    /// `after < ts <= upto` and `ts >= from`. Returns `false` when the driver is simulated
    /// elsewhere.
    pub fn each_send_between(
        &self,
        driver: usize,
        after: u64,
        upto: u64,
        from: u64,
        mut f: impl FnMut(u64, bool),
    ) -> bool {
        let Some(record) = self.records.get(&driver) else { return false };
        let ring = record.ring.lock().unwrap_or_else(PoisonError::into_inner);
        for &(ts, send_us, pushed) in &ring.entries {
            if ts > after && ts <= upto && ts >= from && ts != 0 {
                f(send_us, pushed);
            }
        }
        true
    }

    /// What every driver of this process sent.
    pub(crate) fn tallies(&self) -> Vec<DriverSends> {
        self.records
            .iter()
            .map(|(&d, r)| DriverSends {
                driver: d as u32,
                sends: r.sends.load(Ordering::Relaxed),
                pushes: r.pushes.load(Ordering::Relaxed),
                cell_changes: r.cell_changes.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_finds_recent_sends_and_forgets_old_ones() {
        let book = DriverBook::new(&[3]);
        for i in 1..=100u64 {
            book.record_send(3, 1000 + i, 5_000 + i, i % 2 == 0, i % 4 == 0);
        }
        assert_eq!(book.lookup(3, 1100), Some((5_100, true)));
        assert_eq!(book.lookup(3, 1099), Some((5_099, false)));
        assert_eq!(book.lookup(3, 1010), None, "evicted after {RING} newer sends");
        assert_eq!(book.lookup(4, 1100), None, "not simulated here");
        assert_eq!(book.tallies(), vec![DriverSends { driver: 3, sends: 100, pushes: 50, cell_changes: 25 }]);
        let mut seen = Vec::new();
        assert!(book.each_send_between(3, 1095, 1098, 1097, |us, pushed| seen.push((us, pushed))));
        seen.sort_unstable();
        assert_eq!(seen, vec![(5_097, false), (5_098, true)]);
        assert!(!book.each_send_between(9, 0, u64::MAX, 0, |_, _| {}));
    }
}
