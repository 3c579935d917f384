//! The live demo (dev mode only): a small city with simulated drivers, and web pages to ride,
//! drive and watch the fleet, all through the origin's real public API.
//!
//! | module | what it holds |
//! |---|---|
//! | [`city`] | the street graph, routes along it, random walks, `city.json` |
//! | [`geometry`] | metres around the city's centre, and latitude and longitude |
//! | [`motion`] | a car following a path |
//! | [`rng`] | the simulation's seeded dice |
//! | [`driver`] | one simulated driver's behaviour, without I/O |
//! | [`chatter`] | its side of a ride's chat, without I/O |
//! | [`client`] | its WebSocket connections to this origin |
//! | [`simulator`] | the drivers' tasks, reconnects, and the surge operator |
//! | [`fleet`] | where each simulated driver is and what it does |
//! | [`feed`] | the once-a-second fleet frame for `/demo/sse/fleet` |
//! | [`http`] | the demo's routes: pages, assets, `city.json`, tokens, the fleet stream |
//!
//! The simulated drivers are ordinary clients: they connect to this origin's own listener with
//! tokens signed by its keys, so everything they do is counted, dispatched and pushed exactly
//! like a real driver's app, and the demo shows the real system, not a mock of it.

pub mod chatter;
pub mod city;
pub mod client;
pub mod driver;
pub mod feed;
pub mod fleet;
pub mod geometry;
pub mod http;
pub mod motion;
pub mod rng;
pub mod simulator;

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use ridecast_protocol::{Id, TokenKeys};

use self::{city::City, client::Connector, feed::FleetFeed, fleet::Fleet, simulator::Simulation};
use crate::{
    api::state::AppState,
    base::{metrics::Metrics, shutdown::Drain},
    bus::Backend,
};

/// What the demo's routes use. Shared behind an `Arc` in the app state.
#[derive(Debug)]
pub struct Demo {
    pub city: Arc<City>,
    /// `GET /demo/city.json`, serialized once.
    pub city_json: Bytes,
    pub fleet: Fleet,
    pub feed: FleetFeed,
    /// Signs the tokens of `POST /demo/token` (the dev secret).
    pub keys: TokenKeys,
    pub drain: Drain,
    pub sse_retry_ms: u64,
}

impl Demo {
    /// The demo's city and fleet, and its fleet feed running until the instance drains.
    pub fn start(
        keys: TokenKeys,
        sse_retry_ms: u64,
        metrics: Metrics,
        backend: Arc<dyn Backend>,
        drain: Drain,
    ) -> Self {
        let city = Arc::new(City::demo());
        let fleet = Fleet::new();
        let zones = city.zones().iter().filter_map(|zone| Id::parse(zone.id).ok()).collect();
        let feed = FleetFeed::spawn(fleet.clone(), metrics, backend, zones, drain.token().clone());
        Self { city_json: Bytes::from(city.to_json()), city, fleet, feed, keys, drain, sse_retry_ms }
    }
}

/// Starts `drivers` simulated drivers, connecting to `listening` (this origin's own address).
/// With the demo running they appear on its fleet map; without it (a secret is configured)
/// they still drive, for load and soak runs.
pub fn simulate(state: &AppState, drivers: u32, listening: SocketAddr) {
    let (city, fleet) = match &state.demo {
        Some(demo) => (demo.city.clone(), demo.fleet.clone()),
        None => (Arc::new(City::demo()), Fleet::new()),
    };
    // Different traffic every run; the seed goes in the log, for the record.
    let seed = crate::base::clock::now_nanos() as u64;
    tracing::info!(drivers, seed, "simulating drivers in the demo city");
    Simulation {
        drivers,
        seed,
        city,
        fleet,
        connector: Connector::new(listening, state.auth.keys().clone()),
        rides: state.rides.clone(),
        backend: state.backend.clone(),
        metrics: state.metrics.clone(),
        drain: state.drain.clone(),
    }
    .spawn();
}
