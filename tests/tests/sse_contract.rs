//! What every SSE stream promises, checked on the location stream byte by byte: headers,
//! `retry:` first, `event:`/`id:` on each event, the current value on connect, `Last-Event-ID`,
//! comment heartbeats.
//!
//! Contract: PROTOCOL.md, "Rider HTTP and SSE" (the "Every SSE stream" paragraph) and
//! "Precise points / Current value on connect".

use std::time::{Duration, Instant};

use ridecast_tests::raw_sse::{Next, RawOptions, SseFrame};
use ridecast_tests::rider::location_path;
use ridecast_tests::tokens::{driver_token, rider_token};
use ridecast_tests::{
    Cluster, DriverSocket, EXPECT, Fix, Mode, Origin, QUIET, RawSse, RiderStream, Route, SeenLocation, TsClock,
    in_both_modes, wait_until_stored,
};

/// The `--sse-retry-ms` the header test configures, to see that `retry:` follows it.
const RETRY_MS: u64 = 1500;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts the three headers every SSE stream carries.
fn assert_sse_headers(stream: &RawSse, what: &str) {
    assert_eq!(stream.status(), 200, "{what}: status");
    let content_type = stream.header("content-type").unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    assert_eq!(media_type, "text/event-stream", "{what}: Content-Type was {content_type:?}");
    let cache_control = stream.header("cache-control").unwrap_or_default().to_ascii_lowercase();
    let mut directives: Vec<&str> = cache_control.split(',').map(str::trim).collect();
    directives.sort_unstable();
    assert_eq!(directives, ["no-cache", "no-transform"], "{what}: Cache-Control was {cache_control:?}");
    assert_eq!(stream.header("x-accel-buffering").as_deref(), Some("no"), "{what}: X-Accel-Buffering");
}

/// Asserts an event frame is exactly a location event for `fix`: `event: location`, `id: <ts>`.
fn assert_location_frame(frame: &SseFrame, driver: &str, fix: &Fix, what: &str) {
    assert_eq!(frame.event(), Some("location"), "{what}: event name in {frame:?}");
    assert_eq!(frame.id(), Some(fix.ts.to_string().as_str()), "{what}: the id is the location's ts, in {frame:?}");
    let data = frame.data().unwrap_or_else(|| panic!("{what}: event without data: {frame:?}"));
    SeenLocation::parse(&data).assert_is(driver, fix, what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_has_the_contract_headers_and_starts_with_retry() {
    headers_retry_and_events(RawOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_requested_on_a_reused_keep_alive_connection_keeps_the_same_contract() {
    headers_retry_and_events(RawOptions::default().on_a_reused_connection()).await;
}

async fn headers_retry_and_events(options: RawOptions) {
    let origin = Origin::builder().sse_retry_ms(RETRY_MS).start().await;
    let driver = "d-headers";
    let auth = bearer(&rider_token("r1", driver));

    let mut stream =
        RawSse::open_with(origin.addr(), &location_path(driver), &[("Authorization", &auth)], options).await;

    assert_sse_headers(&stream, "a location stream");
    let first = stream.next_frame(EXPECT, "the first frame").await;
    assert_eq!(first.retry(), Some(RETRY_MS), "the first frame carries retry: <--sse-retry-ms>, got {first:?}");
    // Proving an absence: a driver that never reported has no current value to send.
    let next = stream.next_within(QUIET).await;
    assert!(
        next.as_ref().is_none_or(|n| matches!(n, Next::Frame(f) if !f.is_event())),
        "no event is sent for a driver with no location, got {next:?}"
    );

    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick());
    socket.send_location(fix).await;
    let event = stream.next_event(EXPECT, "the driver's first location").await;
    assert_location_frame(&event, driver, &fix, "the first location event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_events_are_named_location_and_their_ids_are_growing_timestamps() {
    let origin = Origin::builder().start().await;
    let driver = "d-ids";
    let auth = bearer(&rider_token("r1", driver));
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let mut stream = RawSse::open(origin.addr(), &location_path(driver), &[("Authorization", &auth)]).await;
    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;

    let mut last_id = 0u64;
    for k in 0..5 {
        let fix = Fix::at(route.point(k), clock.tick()).moving(45.0, 3.5);
        socket.send_location(fix).await;
        let frame = stream.next_event(EXPECT, &format!("location event {k}")).await;
        assert_location_frame(&frame, driver, &fix, &format!("location event {k}"));
        let id: u64 = frame.id().and_then(|id| id.parse().ok()).expect("a numeric id");
        assert!(id > last_id, "ids only grow: {id} after {last_id}");
        last_id = id;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_comments_arrive_at_the_configured_interval() {
    let origin = Origin::builder().heartbeat_secs(1).start().await;
    let driver = "d-heartbeat";
    let auth = bearer(&rider_token("r1", driver));
    let mut stream = RawSse::open(origin.addr(), &location_path(driver), &[("Authorization", &auth)]).await;
    stream.next_frame(EXPECT, "the first (retry) frame").await;

    // With --heartbeat-secs 1, three comment frames must come within about 3 s, none more
    // than 2.5 s after the previous one.
    let mut previous = Instant::now();
    for n in 1..=3 {
        let frame = stream.next_frame(Duration::from_millis(2500), &format!("heartbeat comment {n}")).await;
        assert!(frame.is_comment_only(), "heartbeat {n} should be a comment-only frame (': ...'), got {frame:?}");
        let gap = previous.elapsed();
        assert!(gap <= Duration::from_millis(2500), "heartbeat {n} came {gap:?} after the previous frame");
        previous = Instant::now();
    }
}

in_both_modes!(
    the_latest_stored_value_is_sent_at_once_on_connect,
    a_last_event_id_equal_to_the_current_value_suppresses_the_replay,
    an_older_or_unreadable_last_event_id_gets_the_current_value,
);

/// Reports `pushed` (a cell change) and then `stored` (an in-cell move, newer, not pushed), and
/// waits until both are in the store. Returns `stored`, the current value.
async fn report_pushed_then_in_cell(cluster: &Cluster, driver: &str, socket: &mut DriverSocket) -> Fix {
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let token = rider_token("r-setup", driver);
    let pushed = Fix::at(route.point(0), clock.tick());
    socket.send_location(pushed).await;
    wait_until_stored(cluster.rider_side(), driver, &token, &pushed, "the first location").await;
    let stored = Fix::at(route.nudge(0, 1), clock.tick()).moving(180.0, 1.5);
    socket.send_location(stored).await;
    wait_until_stored(cluster.rider_side(), driver, &token, &stored, "an in-cell move").await;
    stored
}

async fn the_latest_stored_value_is_sent_at_once_on_connect(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let driver = "d-current";
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;
    let current = report_pushed_then_in_cell(&cluster, driver, &mut socket).await;

    // The current value is the latest *stored* one, newer than the last pushed one.
    let mut rider = RiderStream::open(cluster.rider_side(), driver, &rider_token("r1", driver)).await;
    rider.expect_location(driver, &current, "the current value, sent at once on connect").await;

    let auth = bearer(&rider_token("r2", driver));
    let mut raw = RawSse::open(cluster.rider_side().addr(), &location_path(driver), &[("Authorization", &auth)]).await;
    let first = raw.next_frame(EXPECT, "the first frame").await;
    assert!(first.retry().is_some(), "the first frame carries retry:, got {first:?}");
    let event = if first.is_event() { first } else { raw.next_event(EXPECT, "the current value").await };
    assert_location_frame(&event, driver, &current, "the current value on connect, byte level");
}

async fn a_last_event_id_equal_to_the_current_value_suppresses_the_replay(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let driver = "d-resume";
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;
    let current = report_pushed_then_in_cell(&cluster, driver, &mut socket).await;

    let token = rider_token("r1", driver);
    let auth = ridecast_tests::Auth::Bearer(&token);
    let id = current.ts.to_string();
    let mut rider = RiderStream::open_with(cluster.rider_side(), &location_path(driver), auth, Some(&id)).await;
    // Proving an absence: the rider already has the current value.
    rider.expect_quiet(QUIET, "Last-Event-ID equal to the current ts: no replay").await;

    let next = Fix::at(Route::san_francisco().point(1), current.ts + 1);
    socket.send_location(next).await;
    rider.expect_location(driver, &next, "the next cell change after resuming").await;
}

async fn an_older_or_unreadable_last_event_id_gets_the_current_value(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let driver = "d-behind";
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;
    let current = report_pushed_then_in_cell(&cluster, driver, &mut socket).await;

    let token = rider_token("r1", driver);
    let older = (current.ts - 1).to_string();
    for last_event_id in [older.as_str(), "not-a-number"] {
        let auth = ridecast_tests::Auth::Bearer(&token);
        let mut rider =
            RiderStream::open_with(cluster.rider_side(), &location_path(driver), auth, Some(last_event_id)).await;
        rider
            .expect_location(driver, &current, &format!("the current value for Last-Event-ID {last_event_id:?}"))
            .await;
    }
}
