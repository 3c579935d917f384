//! The fleet feed: once a second, one `fleet` event for everyone watching `/demo/sse/fleet`:
//! every simulated driver, the origin's own counters (the numbers `/metrics` shows) and the
//! surge of each zone.
//!
//! The frame is built once and shared through a watch cell: however many pages watch, the work
//! is one snapshot a second, a slow page only ever gets the newest frame, and with nobody
//! watching nothing is built.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use bytes::Bytes;
use ridecast_protocol::{Id, Surge, sse};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::fleet::{DriverState, Fleet};
use crate::{
    base::{
        clock,
        metrics::{MetricValues, Metrics},
    },
    bus::{Backend, Topic},
};

/// One `fleet` event this often.
pub const EVERY: Duration = Duration::from_secs(1);

/// The stream of fleet frames. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FleetFeed {
    frames: Arc<watch::Sender<Bytes>>,
}

impl FleetFeed {
    /// Starts building a frame every second while anyone watches, until `shutdown`.
    pub fn spawn(
        fleet: Fleet,
        metrics: Metrics,
        backend: Arc<dyn Backend>,
        zones: Vec<Id>,
        shutdown: CancellationToken,
    ) -> Self {
        let frames = Arc::new(watch::channel(Bytes::new()).0);
        let sender = frames.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                if sender.receiver_count() > 0 {
                    let surge = surges(backend.as_ref(), &zones).await;
                    sender.send_replace(frame(&fleet, metrics.values(), surge, clock::now_ms()));
                }
            }
        });
        Self { frames }
    }

    /// Frames from the next one on.
    pub fn watch(&self) -> watch::Receiver<Bytes> {
        self.frames.subscribe()
    }
}

/// Each zone's current multiplier (1.0 when none was ever set); zones whose surge cannot be
/// read are left out of this frame.
async fn surges(backend: &dyn Backend, zones: &[Id]) -> BTreeMap<String, f64> {
    let mut surge = BTreeMap::new();
    for zone in zones {
        match backend.latest(&Topic::SurgeZone(zone.clone())).await {
            Ok(Some(json)) => {
                if let Ok(value) = serde_json::from_slice::<Surge>(&json) {
                    surge.insert(zone.to_string(), value.multiplier.get());
                }
            }
            Ok(None) => {
                surge.insert(zone.to_string(), 1.0);
            }
            Err(error) => tracing::debug!(zone.id = %zone, %error, "fleet feed could not read a surge"),
        }
    }
    surge
}

/// The whole SSE event: `event: fleet`, `id: <ts>`, the JSON.
fn frame(fleet: &Fleet, metrics: &MetricValues, surge: BTreeMap<String, f64>, ts: u64) -> Bytes {
    let round = |value: f64, places: i32| (value * 10f64.powi(places)).round() / 10f64.powi(places);
    let drivers = fleet
        .snapshot()
        .into_iter()
        .map(|(id, driver)| Driver {
            id,
            lat: round(driver.lat, 6),
            lng: round(driver.lng, 6),
            heading: round(driver.heading, 1),
            state: driver.state,
        })
        .collect();
    let count = |metric: &std::sync::atomic::AtomicU64| metric.load(Relaxed);
    let counters = Counters {
        driver_connections: count(&metrics.driver_connections),
        rider_streams: count(&metrics.sse_connections),
        chat_connections: count(&metrics.chat_connections),
        events_pushed: count(&metrics.events_pushed_total),
        updates_received: count(&metrics.updates_received_total),
        updates_published: count(&metrics.updates_published_total),
        updates_suppressed: count(&metrics.updates_suppressed_total),
        rides_created: count(&metrics.rides_created_total),
        rides_assigned: count(&metrics.rides_assigned_total),
        offers_sent: count(&metrics.offers_sent_total),
        offers_expired: count(&metrics.offers_expired_total),
        surge,
    };
    // Plain fields and string keys: serializing cannot fail.
    let json = serde_json::to_string(&FleetFrame { ts, drivers, counters }).unwrap_or_default();
    Bytes::from(sse::event("fleet", &ts.to_string(), &json))
}

#[derive(Serialize)]
struct FleetFrame {
    ts: u64,
    drivers: Vec<Driver>,
    counters: Counters,
}

#[derive(Serialize)]
struct Driver {
    id: Id,
    lat: f64,
    lng: f64,
    heading: f64,
    state: DriverState,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Counters {
    driver_connections: u64,
    rider_streams: u64,
    chat_connections: u64,
    events_pushed: u64,
    updates_received: u64,
    updates_published: u64,
    updates_suppressed: u64,
    rides_created: u64,
    rides_assigned: u64,
    offers_sent: u64,
    offers_expired: u64,
    surge: BTreeMap<String, f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::fleet::FleetDriver;

    #[test]
    fn a_frame_is_one_fleet_event_with_the_drivers_and_the_counters_the_spec_names() {
        let fleet = Fleet::new();
        let entry = FleetDriver { lat: 37.779_312_345, lng: -122.4193, heading: 90.04, state: DriverState::ToDropoff };
        fleet.update(&Id::parse("sim-07").expect("id"), entry);
        let metrics = Metrics::default();
        Metrics::inc(&metrics.values().driver_connections);
        Metrics::add(&metrics.values().updates_received_total, 42);
        let surge = BTreeMap::from([("downtown".to_owned(), 1.4)]);
        let frame =
            String::from_utf8(frame(&fleet, metrics.values(), surge, 1_764_240_000_123).to_vec()).expect("text");
        let data = frame.strip_prefix("event: fleet\nid: 1764240000123\ndata: ").expect("event and id first");
        let json: serde_json::Value = serde_json::from_str(data.trim_end()).expect("JSON data");
        assert_eq!(
            json,
            serde_json::json!({
                "ts": 1_764_240_000_123_u64,
                "drivers": [{ "id": "sim-07", "lat": 37.779312, "lng": -122.4193, "heading": 90.0, "state": "to_dropoff" }],
                "counters": {
                    "driverConnections": 1, "riderStreams": 0, "chatConnections": 0, "eventsPushed": 0,
                    "updatesReceived": 42, "updatesPublished": 0, "updatesSuppressed": 0, "ridesCreated": 0,
                    "ridesAssigned": 0, "offersSent": 0, "offersExpired": 0, "surge": { "downtown": 1.4 }
                }
            })
        );
    }
}
