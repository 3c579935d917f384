//! The fleet: where each simulated driver is and what it is doing, as the fleet stream shows
//! it. Drivers write their own entry as they go; the fleet feed reads all of them once a second.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use ridecast_protocol::Id;
use serde::Serialize;

/// What a simulated driver is doing, as the fleet stream spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverState {
    /// Not connected (yet, or reconnecting).
    Offline,
    /// Online for offers, cruising.
    Free,
    /// Holding an offer.
    Offered,
    /// On a ride, on the way to the pickup (or waiting there).
    ToPickup,
    /// On a ride, on the way to the drop-off.
    ToDropoff,
}

/// One driver as the fleet stream shows it: its last reported position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetDriver {
    pub lat: f64,
    pub lng: f64,
    pub heading: f64,
    pub state: DriverState,
}

/// Every simulated driver's entry. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    // A std mutex: each critical section is one map insert or one copy of ~30 entries, never
    // across an await.
    drivers: Arc<Mutex<BTreeMap<Id, FleetDriver>>>,
}

impl Fleet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `driver`'s current entry.
    pub fn update(&self, driver: &Id, entry: FleetDriver) {
        let mut drivers = self.lock();
        match drivers.get_mut(driver) {
            Some(current) => *current = entry,
            None => {
                drivers.insert(driver.clone(), entry);
            }
        }
    }

    /// Every driver, by id.
    pub fn snapshot(&self) -> Vec<(Id, FleetDriver)> {
        self.lock().iter().map(|(id, entry)| (id.clone(), *entry)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Id, FleetDriver>> {
        // A poisoned lock only means a driver task panicked mid-insert; the map is still sound.
        self.drivers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_holds_each_drivers_latest_entry_in_id_order() {
        let fleet = Fleet::new();
        let entry = |lat, state| FleetDriver { lat, lng: -122.4, heading: 90.0, state };
        let (a, b) = (Id::parse("sim-02").expect("id"), Id::parse("sim-01").expect("id"));
        fleet.update(&a, entry(37.1, DriverState::Offline));
        fleet.update(&b, entry(37.2, DriverState::Free));
        fleet.update(&a, entry(37.3, DriverState::ToPickup));
        assert_eq!(
            fleet.snapshot(),
            vec![(b, entry(37.2, DriverState::Free)), (a, entry(37.3, DriverState::ToPickup))]
        );
    }
}
