//! Where a hub reads its key's current value: the bus for what drivers and operators publish
//! (locations, surge), the ride store for ride statuses. A hub starts from it, and recovers from
//! it whenever pub/sub may have missed a message.

use std::sync::Arc;

use bytes::Bytes;

use crate::{
    bus::{Backend, BackendError, Topic},
    rides::store::RideStore,
};

/// Reads any topic's latest stored value. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Snapshots {
    bus: Arc<dyn Backend>,
    rides: Arc<dyn RideStore>,
}

impl Snapshots {
    pub fn new(bus: Arc<dyn Backend>, rides: Arc<dyn RideStore>) -> Self {
        Self { bus, rides }
    }

    /// The latest stored value of `topic`, as its JSON (which may be newer than the last one
    /// pushed: in-cell moves are stored, not pushed).
    ///
    /// # Errors
    /// [`BackendError`] when the store is unreachable.
    pub async fn latest(&self, topic: &Topic) -> Result<Option<Bytes>, BackendError> {
        match topic {
            Topic::DriverLocation(driver) => self.bus.latest_location(driver).await,
            Topic::SurgeZone(zone) => self.bus.current_surge(zone).await,
            Topic::RideStatus(ride) => Ok(self.rides.get(ride).await?.map(|ride| ride.json)),
        }
    }
}
