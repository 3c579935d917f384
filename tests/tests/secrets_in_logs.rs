//! Nothing secret in logs: after auth, rides, chat and Redis failures against real origins, no line
//! any of them logged carries a token it minted or was sent (whole, or its signature, which is
//! what makes it usable), a tracking token, the Redis password or the token secret.
//!
//! Logs are shipped, kept and read by more people than the secrets are meant for; the contract
//! says "tokens never appear in logs". A container's stdout is shipped as well, so for origins
//! with a secret both streams are searched; a dev-mode origin prints its ready-made tokens on
//! stdout on purpose (for the person at the console, and it can only run on loopback), and its
//! log lines are searched.

use std::time::Duration;

use ridecast_tests::chat::{AssignedRide, ChatSocket, message_frame};
use ridecast_tests::http::{Auth, delete, get, post_json, send};
use ridecast_tests::rider::{location_path, polling_path};
use ridecast_tests::tokens::{
    GARBAGE_TOKEN, TEST_SECRET, bad_signature_driver_token, bad_signature_rider_token, edge_token,
    expired_driver_token, expired_rider_token, ops_token, rider_token, rider_token_without_drv,
};
use ridecast_tests::{DriverSocket, Fix, Origin, RedisServer, Route, TsClock};
use serde_json::json;

/// The origin's own crate at debug level, everything else at the default: what an operator
/// chasing a problem would turn on.
const LOG_FILTER: &str = "info,ridecast_origin=debug";

/// The password the misconfigured Redis URLs carry.
const REDIS_PASSWORD: &str = "redis-pw-7f3a9c2e51";

/// The public dev secret (`ridecast_origin::app::config::DEV_SECRET`).
const DEV_SECRET: &str = "ridecast-dev-secret";

/// What must never be logged, each with a name for the failure message.
#[derive(Debug, Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn value(&mut self, name: &str, value: &str) {
        self.0.push((name.to_owned(), value.to_owned()));
    }

    /// A JWT: whole, and its signature alone (a log line that cut the token still leaks it).
    fn token(&mut self, name: &str, token: &str) {
        self.value(name, token);
        if let Some((_, signature)) = token.rsplit_once('.') {
            self.value(&format!("{name} (signature)"), signature);
        }
    }
}

/// What was written where, by which process.
#[derive(Debug, Default)]
struct Logs(Vec<(String, String)>);

impl Logs {
    fn add(&mut self, name: &str, text: String) {
        self.0.push((name.to_owned(), text));
    }

    fn of(&mut self, name: &str, origin: &Origin) {
        self.add(&format!("{name} log"), origin.log());
        self.add(&format!("{name} stdout"), origin.stdout());
    }
}

fn origin_with_logs() -> ridecast_tests::OriginBuilder {
    Origin::builder().env("RUST_LOG", LOG_FILTER)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_carries_a_secret() {
    let mut secrets = Secrets::default();
    let mut logs = Logs::default();
    secrets.value("the token secret", TEST_SECRET);
    secrets.value("the Redis password", REDIS_PASSWORD);

    // Dev mode: the tokens of its banner, minted by the origin, used once.
    let dev = origin_with_logs().dev_mode().start().await;
    let banner = dev_banner(&dev).await;
    for (name, token) in banner_tokens(&banner) {
        secrets.token(&format!("the dev banner's {name} token"), &token);
        let _socket = DriverSocket::try_connect(&dev, Auth::Query(&token)).await;
        let _ = get(&dev.url(&polling_path("d-1")), Auth::Query(&token), &[]).await;
    }
    secrets.value("the dev secret", DEV_SECRET);

    let mut redis = RedisServer::start().await;
    let a = origin_with_logs().redis(&redis).start().await;
    let b = origin_with_logs().redis(&redis).start().await;

    // Auth: good tokens and refused ones, in headers and queries, on every kind of endpoint.
    let tried = [
        ("rider", rider_token("r-auth", "d-auth")),
        ("driver", ridecast_tests::tokens::driver_token("d-auth")),
        ("ops", ops_token("ops-auth")),
        ("edge", edge_token("edge-auth")),
        ("expired rider", expired_rider_token("r-auth", "d-auth")),
        ("expired driver", expired_driver_token("d-auth")),
        ("wrongly signed rider", bad_signature_rider_token("r-auth", "d-auth")),
        ("wrongly signed driver", bad_signature_driver_token("d-auth")),
    ];
    for (name, token) in &tried {
        secrets.token(&format!("the {name} token"), token);
        for auth in [Auth::Bearer(token), Auth::Query(token)] {
            let _ = get(&a.url(&polling_path("d-auth")), auth, &[]).await;
            let _ = get(&b.url("/ws/rides"), auth, &[]).await;
            let _ = get(&a.url("/edge/v1/drivers/d-auth"), auth, &[]).await;
            let _ = post_json(&b.url("/api/surge/zone-auth"), auth, r#"{"multiplier":1.5}"#).await;
            let _ = DriverSocket::try_connect(&a, auth).await;
        }
    }
    let _ = get(&a.url(&location_path("d-auth")), Auth::Bearer(GARBAGE_TOKEN), &[]).await;

    // A ride: requested on a, accepted by a driver on b, its tracking token used, its chat.
    let mut ride = AssignedRide::start(&a, &b, "r-secret", "d-secret").await;
    secrets.token("the rider's token", &ride.rider_token);
    secrets.token("the ride token", &ride.ride_token);
    secrets.token("the ride's driver token", &ride.driver_token);
    secrets.token("the tracking token", &ride.tracking_token);
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick());
    ride.driver_socket.send_location(fix).await;
    for origin in [&a, &b] {
        let _ = get(&origin.url(&polling_path(&ride.driver)), Auth::Query(&ride.tracking_token), &[]).await;
    }
    let mut rider_chat = ChatSocket::connect(&a, &ride.ride_id, &ride.ride_token, None).await;
    let mut driver_chat = ChatSocket::connect(&b, &ride.ride_id, &ride.driver_token, None).await;
    rider_chat.say("m-1", "I am by the red door").await;
    driver_chat.next_message("the rider's message").await;

    // Redis garbles the ride while it carries the tracking token: the store must refuse it (503)
    // without writing its fields into the log.
    let key = format!("ride:{{{}}}", ride.ride_id);
    redis.command(&["HSET", &key, "status", "garbled"]).await;
    let stream = format!("/api/sse/rides/{}", ride.ride_id);
    // The stream answers the EventSource-safe way (200, a `retry:` and an end); `DELETE` 503.
    let _ = get(&a.url(&stream), Auth::Query(&ride.ride_token), &[]).await;
    let refused = delete(&b.url(&format!("/api/rides/{}", ride.ride_id)), Auth::Bearer(&ride.ride_token)).await;
    assert_eq!(refused.status().as_u16(), 503, "a garbled ride in Redis is the store failing");
    redis.command(&["HSET", &key, "status", "driver_assigned"]).await;
    let cancelled = delete(&a.url(&format!("/api/rides/{}", ride.ride_id)), Auth::Bearer(&ride.ride_token)).await;
    assert_eq!(cancelled.status().as_u16(), 200, "the ride is cancelled once Redis holds it intact again");

    // Redis dies mid-run: every kind of request meets the failure.
    redis.kill9().await;
    let new_rider = rider_token_without_drv("r-outage");
    secrets.token("the rider's token during the outage", &new_rider);
    let body =
        json!({ "pickup": { "lat": 37.7749, "lng": -122.4194 }, "dropoff": { "lat": 37.8044, "lng": -122.2712 } });
    let _ = post_json(&a.url("/api/rides"), Auth::Bearer(&new_rider), body.to_string()).await;
    let _ = get(&b.url(&stream), Auth::Query(&ride.ride_token), &[]).await;
    let _ = get(&a.url(&polling_path(&ride.driver)), Auth::Query(&ride.tracking_token), &[]).await;
    let _ = send(
        reqwest::Method::DELETE,
        &b.url(&format!("/api/rides/{}", ride.ride_id)),
        Auth::Query(&ride.ride_token),
        None,
    )
    .await;
    let _ = ride.driver_socket.try_send_location(Fix::at(Route::san_francisco().point(1), TsClock::new().tick())).await;
    let _ = rider_chat.try_send_raw(message_frame("m-2", "still there?")).await;
    // Long enough for reconnect attempts and failed sweeps to be logged.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A Redis URL with a password, given wrongly: malformed (the origin stops), or pointing at a
    // Redis that takes no password (the origin serves and keeps failing).
    for (name, url) in [
        (
            "a cluster URL with an empty node",
            format!("redis-cluster://ridecast:{REDIS_PASSWORD}@127.0.0.1:7001,,127.0.0.1:7002"),
        ),
        ("a URL without a scheme", format!("ridecast:{REDIS_PASSWORD}@127.0.0.1:6379")),
        ("a URL with another scheme", format!("http://ridecast:{REDIS_PASSWORD}@127.0.0.1:6379")),
        ("a URL with a bad port", format!("redis://ridecast:{REDIS_PASSWORD}@127.0.0.1:port")),
    ] {
        let run = origin_with_logs().redis_url(url).run_to_exit(Duration::from_secs(15)).await;
        assert!(!run.status.success(), "{name}: the origin stops");
        logs.add(&format!("the origin given {name} (stderr)"), run.log);
        logs.add(&format!("the origin given {name} (stdout)"), run.stdout);
    }
    let unprotected = RedisServer::start().await;
    let wrong_password = format!("redis://ridecast:{REDIS_PASSWORD}@127.0.0.1:{}", unprotected.port());
    let c = origin_with_logs().redis_url(wrong_password).without_waiting_for_ready().start().await;
    let _ = get(&c.url(&polling_path("d-auth")), Auth::Bearer(&tried[0].1), &[]).await;
    let _ = post_json(&c.url("/api/rides"), Auth::Bearer(&new_rider), body.to_string()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    logs.add("the dev-mode origin log", dev.log());
    logs.of("origin a", &a);
    logs.of("origin b", &b);
    logs.of("origin c (a password Redis does not take)", &c);

    let mut leaks = Vec::new();
    for (where_, text) in &logs.0 {
        for line in text.lines() {
            for (name, secret) in &secrets.0 {
                if line.contains(secret.as_str()) {
                    let shown: String = line.chars().take(240).collect();
                    leaks.push(format!("{where_}: {name} in: {shown}"));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "{} log lines carry a secret:\n{}", leaks.len(), leaks.join("\n"));
}

/// The dev-mode origin's stdout once its banner is complete.
async fn dev_banner(origin: &Origin) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stdout = origin.stdout();
        let log = origin.log();
        // Today's banner goes on stdout; older builds logged it: either way, take its tokens.
        for text in [stdout, log] {
            if text.contains("rider URL following d-1") && text.contains("token=") {
                return text;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no dev banner from the dev-mode origin");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The driver and rider tokens in the dev banner.
fn banner_tokens(banner: &str) -> Vec<(&'static str, String)> {
    let token_after = |marker: &str| {
        let start = banner.find(marker).map(|at| at + marker.len()).expect("a token in the dev banner");
        banner[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).collect::<String>()
    };
    vec![("driver", token_after("/ws/rides?token=")), ("rider", token_after("/location?token="))]
}
