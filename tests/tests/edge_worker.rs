//! The edge worker under the real Workers runtime (`wrangler dev --local`, workerd), in front of
//! real origins sharing a real Redis: riders' streams end in one Durable Object per driver,
//! which holds one link to the origin.
//!
//! Contract: PROTOCOL.md, "The edge worker", and every SSE rule of "Rider HTTP and SSE".

use std::time::Duration;

use ridecast_protocol::Role;
use ridecast_tests::chat::AssignedRide;
use ridecast_tests::http::{self, expect_error, post_json};
use ridecast_tests::raw_sse::RawOptions;
use ridecast_tests::rider::location_path;
use ridecast_tests::tokens::{
    bad_signature_rider_token, claims, driver_token, expired_rider_token, mint, ops_token, rider_token,
    rider_token_without_drv,
};
use ridecast_tests::wait::{now_ms, poll_until};
use ridecast_tests::{
    Auth, Cluster, DriverSocket, EXPECT, Edge, Endpoint, Fix, Mode, Origin, RawSse, RiderStream, Route, SeenLocation,
    SseFrame, TsClock, wait_until_stored,
};

/// Heartbeat and link grace for tests: short, so that dead riders and idle links go quickly.
const FAST_HEARTBEAT_SECS: u64 = 1;
const FAST_GRACE_SECS: u64 = 1;
/// How long the edge may reuse a tracking token's confirmation (`tracking::CONFIRMATION_TTL`).
const CONFIRMATION_TTL: Duration = Duration::from_secs(5);

/// Redis with three origins (the driver's is the first), and an edge in front of the second:
/// every value crosses the bus before it reaches the edge.
async fn start_with_edge() -> (Cluster, Edge) {
    let cluster = Cluster::start_default(Mode::Redis).await;
    let edge = Edge::builder(cluster.rider_side())
        .var("EDGE_HEARTBEAT_SECS", FAST_HEARTBEAT_SECS)
        .var("EDGE_LINK_GRACE_SECS", FAST_GRACE_SECS)
        .start()
        .await;
    (cluster, edge)
}

/// The origin's count of open edge links.
async fn edge_links(origin: &Origin) -> u64 {
    origin.metric("edge_links").await
}

async fn wait_for_edge_links(origin: &Origin, expected: u64, limit: Duration, what: &str) {
    poll_until(limit, what, || async { (edge_links(origin).await == expected).then_some(()) }).await;
}

/// The location JSON of an SSE frame, with its id checked against its `ts`.
fn location_of(frame: &SseFrame, what: &str) -> serde_json::Value {
    assert_eq!(frame.event(), Some("location"), "event name of {what}: {frame:?}");
    let data = frame.data().unwrap_or_else(|| panic!("{what} has no data: {frame:?}"));
    let location: serde_json::Value =
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {data}"));
    assert_eq!(frame.id(), Some(location["ts"].to_string().as_str()), "a location's id is its ts ({what})");
    location
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drivers_update_on_the_origin_reaches_riders_through_the_edge() {
    let (cluster, edge) = start_with_edge().await;
    let driver = "d-edge-1";
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;
    let first = Fix::at(route.point(0), clock.tick()).moving(90.0, 8.3);
    socket.send_location(first).await;
    wait_until_stored(cluster.rider_side(), driver, &rider_token("r0", driver), &first, "the first fix").await;

    let mut riders = Vec::new();
    for i in 0..3 {
        riders.push(RiderStream::open(&edge, driver, &rider_token(&format!("r{i}"), driver)).await);
    }
    for rider in &mut riders {
        rider.expect_location(driver, &first, "the current value, sent at once on connect at the edge").await;
    }
    let moved = Fix::at(route.point(2), clock.tick());
    socket.send_location(moved).await;
    for rider in &mut riders {
        rider.expect_location(driver, &moved, "the next cell, pushed through origin, Redis and edge").await;
    }
    let headers = riders[0].headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache, no-transform");
    assert_eq!(headers["x-accel-buffering"], "no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_stream_keeps_every_sse_rule() {
    let (cluster, edge) = start_with_edge().await;
    let driver = "d-edge-rules";
    let token = rider_token("r1", driver);
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick());
    socket.send_location(fix).await;
    wait_until_stored(cluster.rider_side(), driver, &token, &fix, "the fix").await;

    let bearer = format!("Bearer {token}");
    let mut fresh = RawSse::open(edge.addr(), &location_path(driver), &[("authorization", &bearer)]).await;
    assert_eq!(fresh.status(), 200);
    let first = fresh.next_frame(EXPECT, "the first frame").await;
    assert!(first.retry().is_some(), "the first frame carries retry: {first:?}");
    let current = fresh.next_event(EXPECT, "the current value").await;
    assert_eq!(location_of(&current, "the current value")["ts"], fix.ts);
    let heartbeat = fresh.next_frame(Duration::from_secs(FAST_HEARTBEAT_SECS * 3), "a heartbeat comment").await;
    assert!(heartbeat.is_comment_only(), "between events only comments flow: {heartbeat:?}");

    // A rider that already has the current value is not sent it again.
    let id = fix.ts.to_string();
    let headers = [("authorization", bearer.as_str()), ("last-event-id", id.as_str())];
    let mut resumed = RawSse::open(edge.addr(), &location_path(driver), &headers).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(FAST_HEARTBEAT_SECS * 3);
    let mut comments = 0;
    while tokio::time::Instant::now() < deadline {
        let frame = resumed.next_frame(Duration::from_secs(FAST_HEARTBEAT_SECS * 3), "a frame after resuming").await;
        assert!(!frame.is_event(), "Last-Event-ID equal to the current id must not replay it: {frame:?}");
        comments += usize::from(frame.is_comment_only());
    }
    assert!(comments >= 1, "heartbeats keep flowing to a resumed rider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_riders_on_one_drivers_object_all_receive_each_update() {
    const RIDERS: usize = 500;
    const UPDATES: u32 = 3;
    let (cluster, edge) = start_with_edge().await;
    let driver = "d-edge-500";
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;

    // 500 riders, each with its own token (one token holds at most EDGE_MAX_STREAMS_PER_TOKEN):
    // exactly the default EDGE_MAX_RIDERS_PER_OBJECT.
    let mut riders = Vec::with_capacity(RIDERS);
    for i in 0..RIDERS {
        let bearer = format!("Bearer {}", rider_token(&format!("r-many-{i}"), driver));
        let rider = RawSse::open(edge.addr(), &location_path(driver), &[("authorization", &bearer)]).await;
        assert_eq!(rider.status(), 200);
        riders.push(rider);
    }
    // Every rider records each location it gets until it has the last one.
    let fixes: Vec<Fix> = (0..UPDATES).map(|i| Fix::at(route.point(i * 2), clock.tick())).collect();
    let last_ts = fixes[fixes.len() - 1].ts;
    let readers: Vec<_> = riders
        .into_iter()
        .map(|mut rider| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.last() != Some(&last_ts) {
                    let frame = rider.next_event(Duration::from_secs(30), "the next update").await;
                    seen.push(location_of(&frame, "an update")["ts"].as_u64().expect("a numeric ts"));
                }
                seen
            })
        })
        .collect();
    for fix in &fixes {
        socket.send_location(*fix).await;
        // Far apart enough that no rider is behind when the next one comes (latest-only would
        // rightly skip a value for a rider still busy with the previous one).
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let expected: Vec<u64> = fixes.iter().map(|f| f.ts).collect();
    for (i, reader) in readers.into_iter().enumerate() {
        let seen = reader.await.expect("a rider's reader task");
        assert_eq!(seen, expected, "rider {i} of {RIDERS} got every update, in order");
    }
    assert_eq!(edge_links(cluster.rider_side()).await, 1, "500 riders on one object share one link to the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_missing_and_wrong_driver_tokens_are_refused_at_the_edge() {
    let (cluster, edge) = start_with_edge().await;
    let path = location_path("d1");
    let expired = expired_rider_token("r1", "d1");
    let bad_signature = bad_signature_rider_token("r1", "d1");
    let other_driver = rider_token("r1", "d2");
    let no_drv = rider_token_without_drv("r1");
    let driver = driver_token("d1");
    let ops = mint(&claims(Role::Ops, "ops-1"));
    let good = rider_token("r1", "d1");
    let cases: Vec<(String, Auth<'_>, u16, &str)> = vec![
        (path.clone(), Auth::None, 401, "missing_token"),
        (path.clone(), Auth::Bearer("not-a-jwt"), 401, "invalid_token"),
        (path.clone(), Auth::Bearer(&bad_signature), 401, "invalid_token"),
        (path.clone(), Auth::Query(&expired), 401, "token_expired"),
        (path.clone(), Auth::Bearer(&other_driver), 403, "forbidden"),
        (path.clone(), Auth::Bearer(&no_drv), 403, "forbidden"),
        (path.clone(), Auth::Bearer(&driver), 403, "forbidden"),
        (path.clone(), Auth::Query(&ops), 403, "forbidden"),
        (location_path("a.b"), Auth::Bearer(&good), 400, "invalid_id"),
        ("/api/sse/surge/z1".to_owned(), Auth::Bearer(&driver), 403, "forbidden"),
        ("/api/sse/surge/z1".to_owned(), Auth::None, 401, "missing_token"),
    ];
    for (path, auth, status, code) in &cases {
        let context = format!("GET {path} at the edge with {auth:?}");
        let answer = expect_error(http::get(&edge.url(path), *auth, &[]).await, *status, &context).await;
        assert_eq!(answer.code, *code, "{context}");
    }
    // None of them reached a Durable Object: no object opened a link to the origin.
    assert_eq!(edge_links(cluster.rider_side()).await, 0, "refused requests never reach a Durable Object");

    // The same token in the query, as EventSource sends it, is let through.
    let mut rider = RiderStream::open_with(&edge, &location_path("d1"), Auth::Query(&good), None).await;
    rider.expect_quiet(Duration::from_millis(300), "nothing is known about d1 yet").await;
    wait_for_edge_links(cluster.rider_side(), 1, EXPECT, "the accepted rider's object links to the origin").await;
}

/// A ride's tracking token names the ride, which only the origin knows about: the edge asks it,
/// may reuse a confirmation for at most 5 s, and refuses the token once the ride has ended, as the
/// origin does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracking_token_is_refused_at_the_edge_once_its_ride_has_ended() {
    let (cluster, edge) = start_with_edge().await;
    let ride = AssignedRide::start(cluster.rider_side(), cluster.driver_side(), "r-edge-track", "d-edge-track").await;
    let path = location_path(&ride.driver);
    let asked = std::time::Instant::now();
    let mut rider = RiderStream::open_with(&edge, &path, Auth::Bearer(&ride.tracking_token), None).await;
    rider.next_location("the driver's location through the edge while the ride is on").await;
    drop(rider);

    let cancel = http::delete(
        &cluster.rider_side().url(&format!("/api/rides/{}", ride.ride_id)),
        Auth::Bearer(&ride.ride_token),
    )
    .await;
    assert_eq!(cancel.status().as_u16(), 200, "the rider cancels the ride");
    // The object may still reuse the confirmation it got at connect, for 5 s at most.
    let context = "the tracking token of a cancelled ride at the edge";
    let refused = poll_until(CONFIRMATION_TTL + Duration::from_secs(3), context, || async {
        let response = http::get(&edge.url(&path), Auth::Bearer(&ride.tracking_token), &[]).await;
        (response.status().as_u16() != 200).then_some(response)
    })
    .await;
    assert_eq!(expect_error(refused, 403, context).await.code, "forbidden", "{context}");
    let refused_after = asked.elapsed();
    assert!(
        refused_after <= CONFIRMATION_TTL + Duration::from_secs(2),
        "{context}: refused {refused_after:?} after the confirmation; a confirmation lives at most 5 s"
    );
    // A token naming only the driver is not tied to a ride: the edge still lets it through.
    let friend = rider_token("r-friend", &ride.driver);
    let mut rider = RiderStream::open_with(&edge, &path, Auth::Bearer(&friend), None).await;
    rider.next_location("the driver's location for a drv-only token after the cancel").await;
}

/// Old behaviour caught: a stream opened through the edge with a tracking token stayed open after
/// its ride was cancelled (the driver's object never asked the origin again), handing the rider
/// the driver's positions until it left. Now the object asks again as the 5 s confirmation runs
/// out and ends every stream of a refused token with a comment; other riders keep streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_edge_stream_of_a_tracking_token_ends_once_its_ride_is_cancelled() {
    let (cluster, edge) = start_with_edge().await;
    let mut ride = AssignedRide::start(cluster.rider_side(), cluster.driver_side(), "r-edge-end", "d-edge-end").await;
    let path = location_path(&ride.driver);
    let tracking = format!("Bearer {}", ride.tracking_token);
    let mut tracked = RawSse::open(edge.addr(), &path, &[("authorization", &tracking)]).await;
    tracked.next_event(EXPECT, "the driver's location through the edge while the ride is on").await;
    let friend = format!("Bearer {}", rider_token("r-edge-end-friend", &ride.driver));
    let mut other = RawSse::open(edge.addr(), &path, &[("authorization", &friend)]).await;
    other.next_event(EXPECT, "the driver's location for another rider of the same driver").await;

    let cancel = http::delete(
        &cluster.rider_side().url(&format!("/api/rides/{}", ride.ride_id)),
        Auth::Bearer(&ride.ride_token),
    )
    .await;
    assert_eq!(cancel.status().as_u16(), 200, "the rider cancels the ride");
    let cancelled = std::time::Instant::now();

    // At most one confirmation (5 s) is reused, then the origin is asked and refuses.
    let limit = 2 * CONFIRMATION_TTL + Duration::from_secs(2);
    let (frames, clean) = tracked.expect_end(limit, "the tracking token's stream after the cancel").await;
    let ended_after = cancelled.elapsed();
    println!("the edge ended the tracking stream {ended_after:?} after the cancel");
    assert!(clean, "the stream ends cleanly, not cut: {frames:?}");
    let why = frames.iter().flat_map(|f| f.comments.iter()).find(|c| c.contains("ride"));
    assert!(why.is_some_and(|c| c.contains("ended")), "the last comment says the ride ended: {frames:?}");
    assert!(ended_after <= 2 * CONFIRMATION_TTL, "ended {ended_after:?} after the cancel; at most ~10 s");

    // The EventSource reconnects and is refused for good.
    let context = "a reconnect with the cancelled ride's tracking token";
    let response = http::get(&edge.url(&path), Auth::Bearer(&ride.tracking_token), &[]).await;
    assert_eq!(expect_error(response, 403, context).await.code, "forbidden", "{context}");

    // The other rider of the same driver was not touched: its stream carries the next position.
    let fix = Fix::at(Route::san_francisco().point(1), now_ms());
    ride.driver_socket.send_location(fix).await;
    let next = other.next_event(EXPECT, "the next position for the other rider after the cancel").await;
    assert_eq!(location_of(&next, "the other rider's next position")["ts"], fix.ts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn riders_recover_the_latest_value_after_the_origin_restarts_without_reconnecting() {
    let (mut cluster, edge) = start_with_edge().await;
    let driver = "d-edge-restart";
    let token = rider_token("r1", driver);
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;
    let before = Fix::at(route.point(0), clock.tick());
    socket.send_location(before).await;
    wait_until_stored(cluster.driver_side(), driver, &token, &before, "the fix before the restart").await;

    let bearer = format!("Bearer {token}");
    let mut rider = RawSse::open(edge.addr(), &location_path(driver), &[("authorization", &bearer)]).await;
    let current = rider.next_event(EXPECT, "the current value").await;
    assert_eq!(location_of(&current, "the current value")["ts"], before.ts);

    // The edge's origin dies; the driver goes on through another instance meanwhile.
    let addr = cluster.rider_side().addr();
    cluster.origins[1].kill9().await;
    let during = Fix::at(route.point(2), clock.tick());
    socket.send_location(during).await;
    wait_until_stored(cluster.driver_side(), driver, &token, &during, "the fix sent while the origin is down").await;

    let redis = cluster.redis.as_ref().expect("Redis mode");
    let restarted = Origin::builder().redis(redis).listen_on(addr).start().await;
    let back = std::time::Instant::now();
    let recovered = rider.next_event(Duration::from_secs(30), "the latest value after the restart").await;
    let recovered_after = back.elapsed();
    assert_eq!(
        location_of(&recovered, "the recovered value")["ts"],
        during.ts,
        "the rider, still on the same connection, gets the value stored while the origin was down"
    );
    println!("edge link recovered the latest value {recovered_after:?} after the origin answered again");
    cluster.origins[1] = restarted;

    // And the relinked stream goes on carrying new values.
    let after = Fix::at(route.point(4), clock.tick());
    socket.send_location(after).await;
    let next = rider.next_event(EXPECT, "the next value after the restart").await;
    assert_eq!(location_of(&next, "the next value")["ts"], after.ts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_link_closes_after_the_last_rider_leaves() {
    let (cluster, edge) = start_with_edge().await;
    let driver = "d-edge-grace";
    let origin = cluster.rider_side();
    let bearer = format!("Bearer {}", rider_token("r1", driver));
    let first = RawSse::open(edge.addr(), &location_path(driver), &[("authorization", &bearer)]).await;
    let second = RawSse::open(edge.addr(), &location_path(driver), &[("authorization", &bearer)]).await;
    wait_for_edge_links(origin, 1, EXPECT, "two riders of one driver: one link").await;

    drop(first);
    // One rider left: the link stays for the other, past heartbeat and grace.
    tokio::time::sleep(Duration::from_secs(FAST_HEARTBEAT_SECS + FAST_GRACE_SECS + 2)).await;
    assert_eq!(edge_links(origin).await, 1, "the link stays while a rider remains");

    drop(second);
    // A gone rider is found by the next heartbeat write; the link closes a grace time later.
    let limit = Duration::from_secs(FAST_HEARTBEAT_SECS * 3 + FAST_GRACE_SECS + 10);
    wait_for_edge_links(origin, 0, limit, "the link closes after the last rider left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_api_requests_pass_through_to_the_origin() {
    let (cluster, edge) = start_with_edge().await;
    let origin = cluster.rider_side();
    let rider = rider_token("r-pass", "d-pass");

    // POST /api/rides: the edge answers exactly what the origin answers, body and all. Two
    // riders (one open ride each), with tokens that may request rides (no `drv`, no `ride`).
    let body = r#"{"pickup":{"lat":37.7749,"lng":-122.4194},"dropoff":{"lat":37.8044,"lng":-122.2712}}"#;
    let post = |base: String, requester: &str| {
        let requester = rider_token_without_drv(requester);
        async move {
            let response = post_json(&format!("{base}/api/rides"), Auth::Bearer(&requester), body).await;
            (response.status().as_u16(), response.text().await.expect("a body"))
        }
    };
    let direct = post(origin.url(""), "r-pass-direct").await;
    let through_edge = post(edge.url(""), "r-pass-edge").await;
    assert_eq!(through_edge.0, direct.0, "status through the edge: {through_edge:?} vs direct {direct:?}");
    if direct.0 != 201 {
        assert_eq!(through_edge.1, direct.1, "an answer that creates nothing is passed back byte for byte");
    }

    // The polling endpoint: request headers (token, If-None-Match) go up, response headers down.
    let driver = "d-pass";
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;
    let fix = Fix::at(Route::san_francisco().point(0), now_ms());
    socket.send_location(fix).await;
    wait_until_stored(origin, driver, &rider, &fix, "the fix").await;
    let polled = ridecast_tests::poll(&edge, driver, &rider, None).await;
    assert_eq!(polled.status, 200, "polling through the edge");
    polled.location().assert_is(driver, &fix, "the polled location through the edge");
    let etag = polled.etag.clone().expect("an ETag passed back through the edge");
    let again = ridecast_tests::poll(&edge, driver, &rider, Some(&etag)).await;
    assert_eq!(again.status, 304, "If-None-Match passed up through the edge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_origin_is_503_with_retry_after_at_the_edge() {
    let (mut cluster, edge) = start_with_edge().await;
    cluster.origins[1].kill9().await;
    let response = http::get(&edge.url("/api/drivers/d1/location"), Auth::Bearer(&rider_token("r1", "d1")), &[]).await;
    let retry_after = http::header(&response, "retry-after");
    let answer = expect_error(response, 503, "a passthrough to a dead origin").await;
    assert_eq!(answer.code, "unavailable");
    let secs: u64 = retry_after.expect("503 carries Retry-After").parse().expect("Retry-After in seconds");
    assert!(secs >= 1, "Retry-After asks for a real pause");
}

#[tokio::test]
async fn wrangler_deploy_dry_run_bundles_the_worker() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = ridecast_tests::edge::test_config(dir.path());
    let out = dir.path().join("bundle");
    let output = ridecast_tests::edge::wrangler_command()
        .args(["deploy", "--dry-run", "--config"])
        .arg(&config)
        .arg("--outdir")
        .arg(&out)
        .output()
        .await
        .expect("running wrangler deploy --dry-run");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "wrangler deploy --dry-run failed:\n{log}");
    let files: Vec<String> = std::fs::read_dir(&out)
        .expect("the bundle directory")
        .map(|entry| entry.expect("a bundle entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.iter().any(|f| f.ends_with(".wasm")), "the bundle holds the wasm module: {files:?}");
    assert!(files.iter().any(|f| f.ends_with(".js")), "the bundle holds the JS entry: {files:?}");
    for binding in ["DRIVER_HUB", "SURGE_HUB"] {
        assert!(log.contains(binding), "the dry run lists the {binding} binding:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_set_through_the_edge_reaches_riders_on_the_zones_object() {
    let (cluster, edge) = start_with_edge().await;
    let zone = "z-edge";
    let path = format!("/api/sse/surge/{zone}");
    let rider = rider_token_without_drv("r-surge");
    let mut riders = Vec::new();
    for _ in 0..2 {
        riders.push(RiderStream::open_with(&edge, &path, Auth::Bearer(&rider), None).await);
    }
    wait_for_edge_links(cluster.rider_side(), 1, EXPECT, "the zone's object links to the origin").await;

    // An operator sets surge through the edge: `POST /api/surge/..` is passed through to the origin.
    let ops = ops_token("ops-1");
    let response =
        post_json(&edge.url(&format!("/api/surge/{zone}")), Auth::Bearer(&ops), r#"{"multiplier":1.8}"#).await;
    assert_eq!(response.status().as_u16(), 202, "surge set through the edge");
    let stored: serde_json::Value =
        serde_json::from_str(&response.text().await.expect("a body")).expect("the stored surge as JSON");
    for rider in &mut riders {
        let event = rider.next_event(EXPECT, "the surge, pushed through the zone's object").await;
        assert_eq!(event.event, "surge");
        let surge: serde_json::Value = serde_json::from_str(&event.data).expect("surge JSON");
        assert_eq!(surge, stored, "riders get exactly the stored value");
        assert_eq!(event.id, stored["ts"].to_string(), "a surge event's id is its ts");
    }
}

/// Cell changes sent while one rider of the object stalls: ~1 MB of events, many times what
/// the kernel and workerd's pipes hold for a reader with [`RawOptions::stalling`].
const STALL_UPDATES: u32 = 4000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_rider_at_the_edge_costs_one_pending_value_and_slows_no_one() {
    // No coalescing at the origin, so every update is pushed; workerd without wrangler's dev
    // proxy, which would read the stalled rider's stream into memory without bound for it.
    let origin = Origin::builder().ingest_interval_ms(0).start().await;
    let edge = Edge::builder(&origin).direct().start().await;
    // The longest id the contract allows, so that each event is large (~250 bytes).
    let driver = format!("stall-{}", "e".repeat(58));
    let path = location_path(&driver);
    let auth = format!("Bearer {}", rider_token("r-stalled", &driver));
    let mut stalled = RawSse::open_with(edge.addr(), &path, &[("authorization", &auth)], RawOptions::stalling()).await;
    assert_eq!(stalled.status(), 200);
    let mut prompt = RiderStream::open(&edge, &driver, &rider_token("r-prompt", &driver)).await;
    let mut socket = DriverSocket::connect(&origin, &driver_token(&driver)).await;
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());

    // The stalled rider reads nothing from here on; the prompt one must see every update at once.
    let mut newest = None;
    for k in 0..STALL_UPDATES {
        let fix = Fix::at(route.point(k), clock.tick()).moving(f64::from(k % 360) + 0.123_456_789, 13.37);
        socket.send_location(fix).await;
        let what = format!("update {k} of {STALL_UPDATES} at the prompt rider, beside a stalled one");
        let event = prompt.next_event(Duration::from_secs(2), &what).await;
        SeenLocation::parse(&event.data).assert_is(&driver, &fix, &what);
        newest = Some(fix);
    }
    let newest = newest.expect("at least one update");

    // Resume: what the kernel and workerd held, then the object's one pending value, the newest.
    let mut received = 0usize;
    let mut last_ts = 0u64;
    let resumed = async {
        loop {
            let frame = stalled.next_event(EXPECT, "the stalled rider catching up").await;
            let location = location_of(&frame, "an event after resuming");
            let ts = location["ts"].as_u64().expect("a numeric ts");
            assert!(ts > last_ts, "ids only grow: {ts} after {last_ts}");
            last_ts = ts;
            received += 1;
            if ts == newest.ts {
                return;
            }
        }
    };
    ridecast_tests::wait::within(EXPECT * 4, "the stalled rider to reach the newest value", resumed).await;
    eprintln!("stalled rider at the edge: {received} events after resuming, of {STALL_UPDATES} sent");
    assert!(
        received < STALL_UPDATES as usize / 4,
        "after resuming, the stalled rider got {received} of {STALL_UPDATES} updates: the object kept a backlog \
         instead of the latest value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ride_status_stream_flows_through_the_edge_event_by_event() {
    let (_cluster, edge) = start_with_edge().await;
    let rider = rider_token_without_drv("r-edge-ride");
    let body = r#"{"pickup":{"lat":37.7749,"lng":-122.4194},"dropoff":{"lat":37.8044,"lng":-122.2712}}"#;
    let response = post_json(&edge.url("/api/rides"), Auth::Bearer(&rider), body).await;
    assert_eq!(response.status().as_u16(), 201, "a ride created through the edge");
    let created: serde_json::Value =
        serde_json::from_str(&response.text().await.expect("a body")).expect("the created ride as JSON");
    let ride = created["rideId"].as_str().expect("a ride id");
    let token = created["token"].as_str().expect("a ride token");

    // Not terminated at the edge: passed through to the origin, and must not be buffered there.
    let path = format!("/api/sse/rides/{ride}");
    let mut stream = RiderStream::open_with(&edge, &path, Auth::Bearer(token), None).await;
    let first = stream.next_event(EXPECT, "the ride's current status through the edge").await;
    assert_eq!(first.event, "ride");
    assert!(first.data.contains(r#""status":"searching""#), "{}", first.data);

    let cancel = http::delete(&edge.url(&format!("/api/rides/{ride}")), Auth::Bearer(token)).await;
    assert_eq!(cancel.status().as_u16(), 200, "DELETE through the edge");
    let next = stream.next_event(EXPECT, "the cancel, pushed through the edge while the stream stays open").await;
    assert!(next.data.contains(r#""status":"cancelled""#), "{}", next.data);
    assert!(next.id.parse::<u64>().expect("a numeric id") > first.id.parse::<u64>().expect("a numeric id"));
}
