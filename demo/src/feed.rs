//! The fleet feed: once a second, one `fleet` event for everyone watching `/demo/sse/fleet`:
//! every simulated driver, the origin's own counters and the surge of each zone, all read
//! through the public API as any dashboard would: the counters from `GET /metrics`, the surges
//! from each zone's `/api/sse/surge/{zone}` stream.
//!
//! The frame is built once and shared through a watch cell: however many pages watch, the work
//! is one snapshot a second, a slow page only ever gets the newest frame, and with nobody
//! watching nothing is built.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use ridecast_protocol::{Id, Role, Surge, sse};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    client::OriginClient,
    fleet::{DriverState, Fleet},
};
use ridecast_origin::base::clock;

/// One `fleet` event this often.
pub const EVERY: Duration = Duration::from_secs(1);
/// A surge stream that dropped is opened again after this long.
const SURGE_RETRY: Duration = Duration::from_secs(2);
/// The rider the feed follows the zones' surge as.
const FEED_RIDER: &str = "demo-fleet";

/// The stream of fleet frames. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FleetFeed {
    frames: Arc<watch::Sender<Bytes>>,
}

impl Default for FleetFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl FleetFeed {
    /// A feed with no frame yet: [`FleetFeed::run`] builds them.
    pub fn new() -> Self {
        Self { frames: Arc::new(watch::channel(Bytes::new()).0) }
    }

    /// Builds a frame every second while anyone watches, until `shutdown`, and follows each of
    /// `zones`' surge meanwhile.
    pub fn run(
        &self,
        fleet: Fleet,
        client: OriginClient,
        zones: Vec<Id>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let sender = self.frames.clone();
        async move {
            let surges = Surges::default();
            for zone in zones {
                surges.set(&zone, 1.0);
                tokio::spawn(follow_surge(client.clone(), zone, surges.clone(), shutdown.clone()));
            }
            let mut every = tokio::time::interval(EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => {}
                }
                if sender.receiver_count() == 0 {
                    continue;
                }
                match client.metrics().await {
                    Ok(text) => {
                        let counters = Counters::read(&text, client.own_streams(), surges.snapshot());
                        sender.send_replace(frame(&fleet, counters, clock::now_ms()));
                    }
                    Err(error) => tracing::debug!(%error, "fleet feed could not read /metrics"),
                }
            }
        }
    }

    /// Frames from the next one on.
    pub fn watch(&self) -> watch::Receiver<Bytes> {
        self.frames.subscribe()
    }
}

/// Each zone's latest multiplier, as its surge stream last said. Cheap to clone.
#[derive(Debug, Clone, Default)]
struct Surges(Arc<Mutex<BTreeMap<String, f64>>>);

impl Surges {
    fn set(&self, zone: &Id, multiplier: f64) {
        self.lock().insert(zone.to_string(), multiplier);
    }

    fn snapshot(&self) -> BTreeMap<String, f64> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, f64>> {
        // A std mutex: one insert or one copy of a few entries, never across an await. A
        // poisoned lock only means a task panicked mid-insert; the map is still sound.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Follows `zone`'s surge stream until `shutdown`, reopening it when it drops. A zone whose
/// surge was never set sends nothing, and stays at 1.0.
async fn follow_surge(client: OriginClient, zone: Id, surges: Surges, shutdown: CancellationToken) {
    let Ok(rider) = Id::parse(FEED_RIDER) else { return };
    let path = format!("/api/sse/surge/{zone}");
    loop {
        let opened = match client.token(Role::Rider, &rider, None) {
            Ok(token) => tokio::select! {
                () = shutdown.cancelled() => return,
                opened = client.events(&path, &token) => opened,
            },
            Err(error) => Err(error.into()),
        };
        match opened {
            Ok(mut events) => loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                let Some(event) = event else { break };
                if event.event == "surge"
                    && let Ok(surge) = serde_json::from_str::<Surge>(&event.data)
                {
                    surges.set(&zone, surge.multiplier.get());
                }
            },
            Err(error) => tracing::debug!(zone.id = %zone, %error, "fleet feed could not follow a surge"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SURGE_RETRY) => {}
        }
    }
}

/// The whole SSE event: `event: fleet`, `id: <ts>`, the JSON.
fn frame(fleet: &Fleet, counters: Counters, ts: u64) -> Bytes {
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

/// The origin's counters the fleet page shows, named as it spells them.
#[derive(Debug, PartialEq, Serialize)]
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

impl Counters {
    /// The counters in `metrics` (Prometheus text; a missing one reads 0) and the zones' `surge`.
    /// `riderStreams` leaves out the `own_streams` the demo itself holds open (its surge and
    /// ride-status streams), so that it counts riders.
    fn read(metrics: &str, own_streams: u64, surge: BTreeMap<String, f64>) -> Self {
        let values: BTreeMap<&str, u64> = metrics
            .lines()
            .filter_map(|line| line.strip_prefix("ridecast_")?.split_once(' '))
            .filter_map(|(name, value)| Some((name, value.trim().parse().ok()?)))
            .collect();
        let count = |name: &str| values.get(name).copied().unwrap_or(0);
        Self {
            driver_connections: count("driver_connections"),
            rider_streams: count("sse_connections").saturating_sub(own_streams),
            chat_connections: count("chat_connections"),
            events_pushed: count("events_pushed_total"),
            updates_received: count("updates_received_total"),
            updates_published: count("updates_published_total"),
            updates_suppressed: count("updates_suppressed_total"),
            rides_created: count("rides_created_total"),
            rides_assigned: count("rides_assigned_total"),
            offers_sent: count("offers_sent_total"),
            offers_expired: count("offers_expired_total"),
            surge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FleetDriver;

    /// A few lines of `/metrics` as the origin writes them, histograms and all.
    const METRICS: &str = "\
# HELP ridecast_driver_connections Open driver WebSockets.
# TYPE ridecast_driver_connections gauge
ridecast_driver_connections 1
# TYPE ridecast_sse_connections gauge
ridecast_sse_connections 3
ridecast_updates_received_total 42
ridecast_ingest_seconds_bucket{le=\"0.00025\"} 7
ridecast_ingest_seconds_sum 0.002
";

    #[test]
    fn a_frame_is_one_fleet_event_with_the_drivers_and_the_counters_the_spec_names() {
        // Rider streams: three open, two of them the demo's own.
        let fleet = Fleet::new();
        let entry = FleetDriver { lat: 37.779_312_345, lng: -122.4193, heading: 90.04, state: DriverState::ToDropoff };
        fleet.update(&Id::parse("sim-07").expect("id"), entry);
        let surge = BTreeMap::from([("downtown".to_owned(), 1.4)]);
        let counters = Counters::read(METRICS, 2, surge);
        let frame = String::from_utf8(frame(&fleet, counters, 1_764_240_000_123).to_vec()).expect("text");
        let data = frame.strip_prefix("event: fleet\nid: 1764240000123\ndata: ").expect("event and id first");
        let json: serde_json::Value = serde_json::from_str(data.trim_end()).expect("JSON data");
        assert_eq!(
            json,
            serde_json::json!({
                "ts": 1_764_240_000_123_u64,
                "drivers": [{ "id": "sim-07", "lat": 37.779312, "lng": -122.4193, "heading": 90.0, "state": "to_dropoff" }],
                "counters": {
                    "driverConnections": 1, "riderStreams": 1, "chatConnections": 0, "eventsPushed": 0,
                    "updatesReceived": 42, "updatesPublished": 0, "updatesSuppressed": 0, "ridesCreated": 0,
                    "ridesAssigned": 0, "offersSent": 0, "offersExpired": 0, "surge": { "downtown": 1.4 }
                }
            })
        );
    }
}
