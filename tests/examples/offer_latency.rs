//! Benchmark: time from `POST /api/rides` to the offer on the chosen driver's socket.
//!
//! Starts a private redis-server (or with `REDIS=cluster` a Redis Cluster of three primaries and
//! three replicas) and two origins sharing it (release build), connects
//! `DRIVERS` drivers (half on each origin, online, scattered within 3 km of a city centre),
//! then requests `RIDES` rides on the second origin, `CONCURRENCY` at a time, each from a
//! random pickup. The driver that gets an offer accepts it; the ride is then cancelled, which
//! frees the driver again. Prints percentiles and one JSON line.
//!
//! ```sh
//! cargo run --release -p ridecast-tests --example offer_latency            # 1,000 drivers, 500 rides
//! DRIVERS=1000 RIDES=2000 CONCURRENCY=8 cargo run --release -p ridecast-tests --example offer_latency
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ridecast_protocol::Role;
use ridecast_tests::http::{Auth, delete, post_json};
use ridecast_tests::redis_cluster::AnyRedis;
use ridecast_tests::tokens::{claims, driver_token, mint};
use ridecast_tests::wait::now_ms;
use ridecast_tests::{DriverSocket, Fix, Origin};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const CENTRE: (f64, f64) = (37.7749, -122.4194);

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A deterministic scatter: point `i` of `n` within `radius_m` of the centre.
fn scatter(i: usize, n: usize, radius_m: f64, salt: f64) -> (f64, f64) {
    let golden = 2.399_963_229_728_653;
    let r = radius_m * ((i as f64 + 0.5) / n as f64).sqrt();
    let theta = i as f64 * golden + salt;
    let dlat = r * theta.cos() / 111_195.0;
    let dlng = r * theta.sin() / (111_195.0 * CENTRE.0.to_radians().cos());
    (CENTRE.0 + dlat, CENTRE.1 + dlng)
}

/// Offers seen, by ride id, under one lock: a requester waits on a oneshot, and an offer that
/// beats the requester (POST answers after offering) is kept until it asks.
#[derive(Default)]
struct Seen {
    waiters: HashMap<String, oneshot::Sender<Instant>>,
    early: HashMap<String, Instant>,
}

type Offers = Arc<Mutex<Seen>>;

#[tokio::main]
async fn main() {
    let drivers = setting("DRIVERS", 1_000);
    let rides = setting("RIDES", 500);
    let concurrency = setting("CONCURRENCY", 4).max(1);

    let redis = AnyRedis::start_from_env().await;
    let mut origins = Vec::new();
    for _ in 0..2 {
        origins.push(Origin::builder().redis_url(redis.url()).flag("--max-offer-attempts", 20).start().await);
    }
    eprintln!("[offer-latency] redis and 2 origins up; connecting {drivers} drivers");

    let offers: Offers = Arc::default();
    let mut driver_tasks = Vec::with_capacity(drivers);
    for i in 0..drivers {
        let origin = &origins[i % 2];
        let name = format!("bench-d{i}");
        let mut socket = DriverSocket::connect(origin, &driver_token(&name)).await;
        socket.send_text(json!({"type": "availability", "available": true}).to_string()).await;
        socket.send_location(Fix::at(scatter(i, drivers, 3_000.0, 0.0), now_ms())).await;
        let offers = offers.clone();
        let position = scatter(i, drivers, 3_000.0, 0.0);
        driver_tasks.push(tokio::spawn(async move {
            // Like a real app, a fix every few seconds keeps the driver from counting as stale.
            let mut keepalive = tokio::time::interval(Duration::from_secs(5));
            loop {
                let text = tokio::select! {
                    _ = keepalive.tick() => {
                        socket.send_location(Fix::at(position, now_ms())).await;
                        continue;
                    }
                    text = socket.next_text(Duration::from_secs(3_600), "driver frames") => text,
                };
                let arrived = Instant::now();
                let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                if frame["type"] != "offer" {
                    continue;
                }
                let ride = frame["rideId"].as_str().unwrap_or_default().to_owned();
                {
                    let mut seen = offers.lock().expect("offers");
                    match seen.waiters.remove(&ride) {
                        Some(waiter) => {
                            let _ = waiter.send(arrived);
                        }
                        None => {
                            seen.early.entry(ride).or_insert(arrived);
                        }
                    }
                }
                socket.send_text(json!({"type": "offer_ack", "offerId": frame["offerId"]}).to_string()).await;
                socket.send_text(json!({"type": "accept", "offerId": frame["offerId"]}).to_string()).await;
            }
        }));
    }
    // Positions reach the dispatch store as the location frames are read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("[offer-latency] {drivers} drivers online; requesting {rides} rides, {concurrency} at a time");

    let base = origins[1].url("");
    let mut latencies_us = Vec::with_capacity(rides);
    let mut missed = 0usize;
    let started = Instant::now();
    for batch in (0..rides).collect::<Vec<_>>().chunks(concurrency) {
        let requests = batch.iter().map(|&k| {
            let (base, offers) = (base.clone(), offers.clone());
            // A rider per ride: a rider has one open ride at a time (v1.1).
            let rider = mint(&claims(Role::Rider, &format!("bench-rider-{k}")));
            async move {
                let pickup = scatter(k * 7919 % rides.max(1), rides.max(1), 2_000.0, 1.0);
                let body = json!({"pickup": {"lat": pickup.0, "lng": pickup.1},
                                  "dropoff": {"lat": CENTRE.0, "lng": CENTRE.1}});
                let sent = Instant::now();
                let response = post_json(&format!("{base}/api/rides"), Auth::Bearer(&rider), body.to_string()).await;
                let created: Value = serde_json::from_str(&response.text().await.expect("body")).expect("JSON");
                let ride = created["rideId"].as_str().expect("rideId").to_owned();
                let token = created["token"].as_str().expect("token").to_owned();
                let waiting = {
                    let mut seen = offers.lock().expect("offers");
                    match seen.early.remove(&ride) {
                        Some(at) => Err(at),
                        None => {
                            let (tx, rx) = oneshot::channel();
                            seen.waiters.insert(ride.clone(), tx);
                            Ok(rx)
                        }
                    }
                };
                let arrived = match waiting {
                    Err(at) => Some(at),
                    Ok(rx) => {
                        let got = tokio::time::timeout(Duration::from_secs(5), rx).await.ok().and_then(Result::ok);
                        if got.is_none() {
                            eprintln!("[offer-latency] no offer within 5 s for ride {ride}");
                        }
                        got
                    }
                };
                // Let the accept land, then free the driver for the next rides.
                tokio::time::sleep(Duration::from_millis(20)).await;
                delete(&format!("{base}/api/rides/{ride}"), Auth::Bearer(&token)).await;
                arrived.map(|at| at.saturating_duration_since(sent))
            }
        });
        for outcome in futures_util::future::join_all(requests).await {
            match outcome {
                Some(latency) => latencies_us.push(latency.as_micros() as u64),
                None => missed += 1,
            }
        }
    }
    let elapsed = started.elapsed();
    // Before the origins go: a driver task reading a socket the shutdown resets would panic.
    for task in driver_tasks {
        task.abort();
    }
    latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * latencies_us.len() as f64).ceil() as usize;
        latencies_us[rank.clamp(1, latencies_us.len()) - 1] as f64 / 1_000.0
    };
    eprintln!(
        "offer latency (POST /api/rides -> offer on the driver's socket), {drivers} online drivers, 2 origins + {}:\n  \
         rides {rides}  offered {}  missed {missed}  concurrency {concurrency}  in {:.1} s\n  \
         p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        redis.describe(),
        latencies_us.len(),
        elapsed.as_secs_f64(),
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(100.0)
    );
    println!(
        "{}",
        json!({"bench": "offer_latency", "drivers": drivers, "rides": rides, "concurrency": concurrency,
               "offered": latencies_us.len(), "missed": missed,
               "p50_ms": pct(50.0), "p90_ms": pct(90.0), "p99_ms": pct(99.0), "max_ms": pct(100.0)})
    );
}
