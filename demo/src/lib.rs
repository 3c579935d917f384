//! `ridecast-demo`: the origin with a live demo. A small city with simulated drivers, and web
//! pages to ride, drive and watch the fleet, all through the origin's public API: HTTP, SSE and
//! WebSockets, exactly as any app would use them.
//!
//! | module | what it holds |
//! |---|---|
//! | [`cli`] | the binary's flags: the origin's, and `--simulate` |
//! | [`city`] | the street graph, routes along it, random walks, `city.json` |
//! | [`geometry`] | metres around the city's centre, and latitude and longitude |
//! | [`motion`] | a car following a path |
//! | [`driver`] | one simulated driver's behaviour, without I/O |
//! | [`chatter`] | its side of a ride's chat, without I/O |
//! | [`client`] | the demo's connections to the origin: WebSockets, SSE streams, HTTP requests |
//! | [`simulator`] | the drivers' tasks, reconnects, their rides' status, and the surge operator |
//! | [`fleet`] | where each simulated driver is and what it does |
//! | [`feed`] | the once-a-second fleet frame for `/demo/sse/fleet`, from `/metrics` and surge streams |
//! | [`http`] | the demo's routes: pages, assets, `city.json`, tokens, the fleet stream |
//!
//! The demo joins the origin through its [`Extension`] point only: [`extension`] hands it the
//! demo's routes (in dev mode: they hand out tokens to anyone) and a hook that, once the
//! instance listens, starts the fleet feed and the simulated drivers. These connect to the
//! instance's own listener with tokens signed by its keys, so everything they do is counted,
//! dispatched and pushed exactly like a real driver's app, and the demo shows the real system,
//! not a mock of it.
#![forbid(unsafe_code)]

pub mod chatter;
pub mod city;
pub mod cli;
pub mod client;
pub mod driver;
pub mod feed;
pub mod fleet;
pub mod geometry;
pub mod http;
pub mod motion;
pub mod simulator;

use std::sync::Arc;

use bytes::Bytes;
use ridecast_origin::{Config, Extension, Listening, base::clock};
use ridecast_protocol::Id;
use tokio_util::sync::CancellationToken;

use self::{
    city::City, cli::DemoArgs, client::OriginClient, feed::FleetFeed, fleet::Fleet, http::Demo, simulator::Simulation,
};

/// The demo for one instance configured by `config`: its routes in dev mode only (they hand out
/// tokens to anyone), and the fleet feed and `args`' simulated drivers once it listens. With a
/// secret configured, simulated drivers still drive when asked for (load and soak runs), but
/// nothing is served.
pub fn extension(config: &Config, args: &DemoArgs) -> Extension {
    let drivers = args.drivers(config);
    let dev_mode = config.secrets.dev_mode;
    if !dev_mode && drivers == 0 {
        return Extension::default();
    }
    let keys = config.secrets.keys.clone();
    let city = Arc::new(City::demo());
    let fleet = Fleet::new();
    let shutdown = CancellationToken::new();
    let demo = dev_mode.then(|| {
        Arc::new(Demo {
            city_json: Bytes::from(city.to_json()),
            city: city.clone(),
            fleet: fleet.clone(),
            feed: FleetFeed::new(),
            keys: keys.clone(),
            shutdown: shutdown.clone(),
            sse_retry_ms: config.api.sse_retry_ms,
        })
    });
    let mut extension = Extension::new();
    if let Some(demo) = &demo {
        extension = extension.routes(http::routes(demo.clone()));
    }
    extension.on_listening(move |listening: Listening| {
        // The routes were built before the instance had a drain signal; pass it on.
        let drain = listening.shutdown.clone();
        listening.tracker.spawn(async move {
            drain.cancelled().await;
            shutdown.cancel();
        });
        let client = match OriginClient::new(listening.addr, keys) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "the demo cannot make HTTP requests; it does not start");
                return;
            }
        };
        if let Some(demo) = demo {
            let zones = city.zones().iter().filter_map(|zone| Id::parse(zone.id).ok()).collect();
            let feed = demo.feed.run(fleet.clone(), client.clone(), zones, listening.shutdown.clone());
            listening.tracker.spawn(feed);
            let addr = client.base_url();
            tracing::warn!("live demo (rider, driver and fleet pages): {addr}/demo/");
        }
        if drivers > 0 {
            // Different traffic every run; the seed goes in the log, for the record.
            let seed = clock::now_nanos() as u64;
            tracing::info!(drivers, seed, "simulating drivers in the demo city");
            Simulation { drivers, seed, city, fleet, client, shutdown: listening.shutdown, tracker: listening.tracker }
                .spawn();
        }
    })
}
