//! The limits that keep one client from taking more than its share of an instance, each run at
//! a small flag value so that it is reached in a moment:
//!
//! - a token holds at most `--max-streams-per-token` streams and sockets at once (location,
//!   surge and ride streams, driver and chat sockets, all in one count; edge links not counted);
//!   the next one gets 429 `rate_limited` with `Retry-After`, but only once the request has
//!   passed the 400/403/404 checks; a closed one gives its place back;
//! - a driver's frames other than locations beyond `--driver-rate` / `--driver-burst` get a
//!   `rate_limited` error frame and are dropped, the socket staying open; a hundred refusals in a
//!   row close it with 1008;
//! - a ride's tracking token stops tracking when the ride is cancelled: its open location
//!   streams end and it is refused 403 `forbidden` from then on, while a rider token with only a
//!   `drv` claim keeps working;
//! - a client that never finishes its request head is cut off after `--header-timeout-secs`
//!   (slowloris), a request head over 8 KiB is 431 `too_large`, a body over 16 KiB is 413
//!   `too_large` also when it comes without a `Content-Length`;
//! - a WebSocket that sends nothing, not even a pong, is closed with 1008 after `--ws-idle-secs`.
//!
//! Tested elsewhere and not repeated here: `--max-connections` (capacity.rs), the 4 KiB frame
//! limit (driver_socket.rs, chat.rs), bodies over 16 KiB with a `Content-Length` (rides.rs,
//! surge.rs), the chat rate (chat.rs), malformed ids (path_ids.rs, auth.rs).
//!
//! Contract: PROTOCOL.md, "Errors" (429 rate limited, WebSocket errors and 1008 for abuse),
//! "Tokens", "Rider HTTP and SSE" (`trackingToken`), "Driver WebSocket", "Precise points / Order
//! of checks"; docs/API.md, "Error codes", "Driver WebSocket", "Rides".

use std::net::SocketAddr;
use std::time::Duration;

use ridecast_tests::chat::{AssignedRide, DROPOFF, PICKUP, chat_path};
use ridecast_tests::driver::{Ending, Refusal};
use ridecast_tests::http::{Auth, client, delete, expect_error, get, header, post_json};
use ridecast_tests::link::open_link;
use ridecast_tests::rider::{location_path, polling_path};
use ridecast_tests::tokens::{driver_token, edge_token, rider_token, rider_token_without_drv};
use ridecast_tests::wait::{now_ms, poll_until, within};
use ridecast_tests::{
    ChatSocket, Cluster, DriverSocket, EXPECT, Fix, Mode, Origin, OriginBuilder, QUIET, RawSse, RiderStream, Route,
    TsClock, in_both_modes, poll, wait_until_stored,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// `--max-streams-per-token` for the stream tests.
const STREAM_CAP: usize = 3;

/// `--driver-rate` and `--driver-burst` for the frame-rate tests: three at once, then one a second.
const DRIVER_RATE: u32 = 1;
const DRIVER_BURST: usize = 3;
/// How many frames the driver sends at once: well past the burst.
const DRIVER_FLOOD: usize = 10;

/// Frames refused for the rate in a row after which the origin closes a driver socket (1008).
const ABUSE_STREAK: usize = 100;

/// `--header-timeout-secs`: the time a client has to send a complete request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// `--ws-ping-secs` and `--ws-idle-secs`: a ping every second, closed after two silent seconds.
const WS_PING: Duration = Duration::from_secs(1);
const WS_IDLE: Duration = Duration::from_secs(2);

/// The contract's request limits.
const MAX_HEAD: usize = 8 * 1024;
const MAX_BODY: usize = 16 * 1024;

/// WebSocket close codes.
const POLICY: u16 = 1008;

/// A ride id nobody made (it follows the id rule).
const UNKNOWN_RIDE: &str = "0123456789abcdef0123456789abcdef";

/// A ride request the contract accepts.
const RIDE_BODY: &str = r#"{"pickup":{"lat":37.77493,"lng":-122.41942},"dropoff":{"lat":37.80,"lng":-122.27}}"#;

fn capped(cap: usize) -> OriginBuilder {
    Origin::builder().flag("--max-streams-per-token", cap)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn ride_stream_path(ride: &str) -> String {
    format!("/api/sse/rides/{ride}")
}

/// `GET path` as an EventSource sends it.
async fn sse_get(origin: &Origin, path: &str, auth: Auth<'_>) -> reqwest::Response {
    get(&origin.url(path), auth, &[("accept", "text/event-stream")]).await
}

/// A WebSocket handshake on `path` with a bearer token, answered by whatever the server says
/// (a refusal is an ordinary response; an upgrade shows up as 101).
async fn websocket_handshake(origin: &Origin, path: &str, token: &str) -> reqwest::Response {
    let request = client()
        .get(origin.url(path))
        .header("authorization", bearer(token))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .timeout(Duration::from_secs(10));
    request.send().await.unwrap_or_else(|e| panic!("WebSocket handshake on {path} failed: {e}"))
}

/// Asserts the contract's 429: status first (a stream answered 200 would never end), then
/// `Retry-After` in whole seconds, then the JSON error body with code `rate_limited`.
async fn expect_rate_limited(response: reqwest::Response, what: &str) {
    let status = response.status().as_u16();
    assert_eq!(status, 429, "{what}: expected HTTP 429 rate_limited, got {status}");
    let retry_after = header(&response, "retry-after");
    let seconds = retry_after.as_deref().and_then(|value| value.trim().parse::<u64>().ok());
    assert!(seconds.is_some_and(|s| s >= 1), "{what}: a 429 carries Retry-After in seconds, got {retry_after:?}");
    let answer = expect_error(response, 429, what).await;
    assert_eq!(answer.code, "rate_limited", "{what}: error code ({})", answer.message);
}

/// Asserts an HTTP error with `status` and `code`.
async fn expect_refusal(response: reqwest::Response, status: u16, code: &str, what: &str) {
    let got = response.status().as_u16();
    assert_eq!(got, status, "{what}: expected HTTP {status} {code}, got {got}");
    let answer = expect_error(response, status, what).await;
    assert_eq!(answer.code, code, "{what}: error code ({})", answer.message);
}

fn assert_upgrade_refused(result: Result<impl std::fmt::Debug, Refusal>, status: u16, code: &str, what: &str) {
    match result {
        Ok(socket) => panic!("{what}: upgraded ({socket:?}); expected HTTP {status} {code} before any upgrade"),
        Err(refusal) => {
            assert_eq!(refusal.status, status, "{what}: expected HTTP {status}; body {}", refusal.body);
            let answer = ridecast_tests::http::error_body(&refusal.body, status, what);
            assert_eq!(answer.code, code, "{what}: error code ({})", answer.message);
        }
    }
}

/// Waits until the gauge `ridecast_<gauge>` reads `value`: the server has noticed what the
/// client did (a close, say), which it learns asynchronously.
async fn wait_for_gauge(origin: &Origin, gauge: &str, value: u64, what: &str) {
    poll_until(EXPECT, format!("ridecast_{gauge} to read {value}: {what}"), || async {
        (origin.metric(gauge).await == value).then_some(())
    })
    .await;
}

/// A location stream read off a raw socket, which the test can close (by dropping it).
async fn raw_location_stream(origin: &Origin, driver: &str, token: &str) -> RawSse {
    let authorization = bearer(token);
    let stream = RawSse::open(origin.addr(), &location_path(driver), &[("Authorization", &authorization)]).await;
    assert_eq!(stream.status(), 200, "the location stream of {driver} with a token under its cap");
    stream
}

// ---------------------------------------------------------------------------------------------
// Streams and sockets per token
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_holds_at_most_the_cap_in_streams_and_the_next_one_gets_429_rate_limited() {
    let origin = capped(STREAM_CAP).start().await;
    let driver = "d-capped";
    let token = rider_token("r-capped", driver);

    let mut held = Vec::new();
    for _ in 0..STREAM_CAP {
        held.push(RiderStream::open(&origin, driver, &token).await);
    }

    let location = location_path(driver);
    let over = "a location stream beyond the token's cap";
    expect_rate_limited(sse_get(&origin, &location, Auth::Bearer(&token)).await, over).await;
    let query = "the same token in ?token=, beyond its cap";
    expect_rate_limited(sse_get(&origin, &location, Auth::Query(&token)).await, query).await;
    let surge = "a surge stream with a token that holds its cap in location streams";
    expect_rate_limited(sse_get(&origin, "/api/sse/surge/z-1", Auth::Bearer(&token)).await, surge).await;
    // A ride's stream counts too. A token opens a ride or a driver's position, never both
    // (v1.1 token scopes): the ride's creator holds its cap in surge streams, then asks for it.
    let creator = rider_token_without_drv("r-capped");
    let created = post_json(&origin.url("/api/rides"), Auth::Bearer(&creator), RIDE_BODY).await;
    assert_eq!(created.status().as_u16(), 201, "a ride requested by the creator");
    let created: Value = serde_json::from_str(&created.text().await.unwrap_or_default()).expect("ride JSON");
    let ride = created["rideId"].as_str().expect("a rideId").to_owned();
    let mut surges = Vec::new();
    for _ in 0..STREAM_CAP {
        surges.push(RiderStream::open_with(&origin, "/api/sse/surge/z-1", Auth::Bearer(&creator), None).await);
    }
    let own_ride = "the stream of the creator's ride while its token holds its cap";
    expect_rate_limited(sse_get(&origin, &ride_stream_path(&ride), Auth::Bearer(&creator)).await, own_ride).await;

    // Polling is a request, not a stream: no cap (nothing is known of the driver yet).
    let polled = poll(&origin, driver, &token, None).await;
    assert_eq!(polled.status, 404, "polling with a token at its cap is served as usual: {}", polled.body);

    // Another rider's token has places of its own.
    let mut other = RiderStream::open(&origin, driver, &rider_token("r-other", driver)).await;

    // Refusals took nothing from the streams that were open: all of them are served.
    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick());
    socket.send_location(fix).await;
    for (k, stream) in held.iter_mut().enumerate() {
        stream.expect_location(driver, &fix, &format!("the location on held stream {k}")).await;
    }
    other.expect_location(driver, &fix, "the location on the other rider's stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stream_gives_its_place_back_and_a_refused_one_takes_none() {
    let origin = capped(STREAM_CAP).start().await;
    let driver = "d-turnover";
    let token = rider_token("r-turnover", driver);
    let mut held = Vec::new();
    for _ in 0..STREAM_CAP {
        held.push(raw_location_stream(&origin, driver, &token).await);
    }
    for attempt in 0..3 {
        let what = format!("attempt {attempt} beyond the cap");
        expect_rate_limited(sse_get(&origin, &location_path(driver), Auth::Bearer(&token)).await, &what).await;
    }

    drop(held.pop());
    let left = u64::try_from(STREAM_CAP - 1).expect("small");
    wait_for_gauge(&origin, "sse_connections", left, "one of the token's streams closed by the rider").await;
    held.push(raw_location_stream(&origin, driver, &token).await);

    // The close freed exactly one place; the refusals before it took none.
    let full_again = "a stream beyond the cap once the freed place is taken again";
    expect_rate_limited(sse_get(&origin, &location_path(driver), Auth::Bearer(&token)).await, full_again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_at_its_cap_still_gets_400_403_and_404_first() {
    let origin = capped(STREAM_CAP).start().await;
    let driver = "d-order";
    let token = rider_token("r-order", driver);
    let mut held = Vec::new();
    for _ in 0..STREAM_CAP {
        held.push(raw_location_stream(&origin, driver, &token).await);
    }
    let auth = Auth::Bearer(&token);

    let malformed = "a malformed driver id with a token at its cap";
    let response = sse_get(&origin, "/api/sse/drivers/bad.id/location", auth).await;
    expect_refusal(response, 400, "invalid_id", malformed).await;
    let not_its_driver = "another driver's stream with a token at its cap";
    expect_refusal(sse_get(&origin, &location_path("d-someone-else"), auth).await, 403, "forbidden", not_its_driver)
        .await;
    let unknown_ride = "the stream of an unknown ride with a token at its cap";
    expect_refusal(sse_get(&origin, &ride_stream_path(UNKNOWN_RIDE), auth).await, 404, "not_found", unknown_ride).await;
    let wrong_role = "the driver socket with a rider token at its cap";
    assert_upgrade_refused(DriverSocket::try_connect(&origin, auth).await, 403, "forbidden", wrong_role);
    let no_chat = "the chat of an unknown ride with a token at its cap";
    let refused = ChatSocket::try_connect(&origin, UNKNOWN_RIDE, auth, None).await;
    assert_upgrade_refused(refused, 404, "not_found", no_chat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_token_at_its_cap_is_refused_a_second_socket_with_429_before_the_upgrade() {
    let origin = capped(1).start().await;
    let driver = "d-one-socket";
    let token = driver_token(driver);
    let mut first = DriverSocket::connect(&origin, &token).await;

    let second = "a second driver socket with the same token";
    expect_rate_limited(websocket_handshake(&origin, "/ws/rides", &token).await, second).await;
    assert_upgrade_refused(DriverSocket::try_connect(&origin, Auth::Bearer(&token)).await, 429, "rate_limited", second);

    // The first socket is untouched by the refusals.
    let probe = rider_token("r-probe", driver);
    let mut clock = TsClock::new();
    let fix = Fix::at(Route::san_francisco().point(0), clock.tick());
    first.send_location(fix).await;
    wait_until_stored(&origin, driver, &probe, &fix, "a location on the first socket after the refusals").await;

    drop(first);
    wait_for_gauge(&origin, "driver_connections", 0, "the driver's first socket closed").await;
    let mut again = DriverSocket::connect(&origin, &token).await;
    let fix = Fix::at(Route::san_francisco().point(1), clock.tick());
    again.send_location(fix).await;
    wait_until_stored(&origin, driver, &probe, &fix, "a location on the socket that took the freed place").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_sockets_count_with_the_tokens_streams_and_driver_socket() {
    const CAP: usize = 2;
    let cluster = Cluster::start(Mode::Embedded, |origin| origin.flag("--max-streams-per-token", CAP)).await;
    let origin = cluster.driver_side();
    let ride = AssignedRide::start(origin, origin, "r-chat-cap", "d-chat-cap").await;
    // Making the ride followed its stream with the ride token; that stream is closed now.
    wait_for_gauge(origin, "sse_connections", 0, "the ride stream AssignedRide read").await;

    // The rider: two chats with the ride token fill its cap, whatever the kind of the third.
    let mut rider_chats = Vec::new();
    for _ in 0..CAP {
        rider_chats.push(ChatSocket::connect(origin, &ride.ride_id, &ride.ride_token, None).await);
    }
    let third = "a third chat socket with the ride token";
    expect_rate_limited(websocket_handshake(origin, &chat_path(&ride.ride_id, None), &ride.ride_token).await, third)
        .await;
    ChatSocket::expect_refused(origin, &ride.ride_id, Auth::Bearer(&ride.ride_token), None, 429, third).await;
    let stream = "the ride's stream with a ride token that holds two chats";
    let response = sse_get(origin, &ride_stream_path(&ride.ride_id), Auth::Bearer(&ride.ride_token)).await;
    expect_rate_limited(response, stream).await;

    // The driver: its `/ws/rides` socket holds one place, so one chat fills the cap.
    let mut driver_chat = ChatSocket::connect(origin, &ride.ride_id, &ride.driver_token, None).await;
    let second_chat = "a second chat of the driver, whose socket and first chat hold its cap";
    ChatSocket::expect_refused(origin, &ride.ride_id, Auth::Bearer(&ride.driver_token), None, 429, second_chat).await;
    let second_socket = "a second driver socket while the driver's socket and chat hold its cap";
    expect_rate_limited(websocket_handshake(origin, "/ws/rides", &ride.driver_token).await, second_socket).await;

    // The chats that are open still work.
    let said = rider_chats[0].say("hello-1", "on my way down").await;
    assert_eq!(driver_chat.next_message("the rider's message at the driver").await, said);

    // A closed chat gives its place back.
    rider_chats.pop().expect("a rider chat").close().await;
    wait_for_gauge(origin, "chat_connections", 2, "one rider chat closed (one rider, one driver chat left)").await;
    rider_chats.push(ChatSocket::connect(origin, &ride.ride_id, &ride.ride_token, None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_links_are_not_counted() {
    let origin = capped(1).start().await;
    let token = edge_token("edge-1");
    let mut links = Vec::new();
    for path in ["/edge/v1/drivers/d-edge-1", "/edge/v1/drivers/d-edge-2", "/edge/v1/surge/z-edge"] {
        match open_link(&origin.ws_url(path), &token).await {
            Ok(link) => links.push(link),
            Err(status) => panic!("edge link {path} refused with HTTP {status}: every Durable Object shares one token"),
        }
    }
    assert_eq!(links.len(), 3, "three links with one edge token on an instance with a cap of one");
}

// ---------------------------------------------------------------------------------------------
// Driver frames other than locations
// ---------------------------------------------------------------------------------------------

fn rated() -> OriginBuilder {
    Origin::builder().flag("--driver-rate", DRIVER_RATE).flag("--driver-burst", DRIVER_BURST)
}

fn availability(available: bool) -> String {
    json!({ "type": "availability", "available": available }).to_string()
}

/// An answer to an offer nobody made: `not_found` when processed, `rate_limited` when not.
fn answer_to_no_offer(kind: &str, k: usize) -> String {
    json!({ "type": kind, "offerId": format!("of-nobody-{k}") }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_beyond_the_burst_is_refused_and_the_socket_stays_open_for_locations() {
    let origin = rated().start().await;
    let driver = "d-flood";
    let mut rider = RiderStream::open(&origin, driver, &rider_token("r1", driver)).await;
    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;

    for k in 0..DRIVER_FLOOD {
        socket.send_text(availability(k % 2 == 0)).await;
    }
    // A processed availability is answered with nothing; each refused one with an error frame.
    for k in DRIVER_BURST..DRIVER_FLOOD {
        let error = socket.expect_error_frame(&format!("availability frame {} of {DRIVER_FLOOD} at once", k + 1)).await;
        assert_eq!(error.code, "rate_limited", "beyond the burst of {DRIVER_BURST}: {}", error.message);
    }
    socket.is_open_after(QUIET).await.unwrap_or_else(|why| {
        panic!("{DRIVER_BURST} of {DRIVER_FLOOD} frames fit the burst, so exactly the rest are refused: {why}")
    });

    // Locations are not counted: with the allowance spent, every one is taken and reaches riders.
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let first = Fix::at(route.point(0), clock.tick());
    socket.send_location(first).await;
    rider.expect_location(driver, &first, "a location after the refused availability frames").await;
    let mut last = first;
    for k in 1..=5 {
        last = Fix::at(route.point(k), clock.tick());
        socket.send_location(last).await;
    }
    socket.is_open_after(QUIET).await.unwrap_or_else(|why| panic!("locations are never rate limited: {why}"));
    wait_until_stored(&origin, driver, &rider_token("r1", driver), &last, "the last of a run of locations").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_frames_up_to_the_burst_are_processed_and_the_allowance_refills_at_the_rate() {
    let origin = rated().start().await;
    let mut socket = DriverSocket::connect(&origin, &driver_token("d-answers")).await;

    let kinds = ["offer_ack", "accept", "reject"];
    for k in 0..DRIVER_FLOOD {
        socket.send_text(answer_to_no_offer(kinds[k % kinds.len()], k)).await;
    }
    let mut codes = Vec::new();
    for k in 0..DRIVER_FLOOD {
        codes.push(socket.expect_error_frame(&format!("offer answer {} of {DRIVER_FLOOD} at once", k + 1)).await.code);
    }
    let expected: Vec<&str> =
        (0..DRIVER_FLOOD).map(|k| if k < DRIVER_BURST { "not_found" } else { "rate_limited" }).collect();
    assert_eq!(codes, expected, "the first {DRIVER_BURST} are processed (no such offer), the rest dropped, in order");

    // One frame a second comes back: a later answer is processed again.
    let deadline = Instant::now() + EXPECT;
    let mut k = DRIVER_FLOOD;
    loop {
        socket.send_text(answer_to_no_offer("offer_ack", k)).await;
        let error = socket.expect_error_frame("an offer answer sent after a pause").await;
        if error.code == "not_found" {
            break;
        }
        assert_eq!(error.code, "rate_limited", "{}", error.message);
        assert!(Instant::now() < deadline, "at {DRIVER_RATE} a second, a frame is processed again within {EXPECT:?}");
        k += 1;
        // Probing, as `poll_until` does; each refused probe is one more frame refused, far
        // fewer than the hundred in a row that would close the socket.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A rate so slow that nothing refills while a test reconnects: one frame per 20 s.
const NO_REFILL_RATE: f64 = 0.05;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_spends_its_burst_and_reconnects_at_once_is_still_refused() {
    let origin =
        Origin::builder().flag("--driver-rate", NO_REFILL_RATE).flag("--driver-burst", DRIVER_BURST).start().await;
    let token = driver_token("d-reconnects");
    let mut socket = DriverSocket::connect(&origin, &token).await;
    for k in 0..DRIVER_BURST {
        let error = {
            socket.send_text(answer_to_no_offer("offer_ack", k)).await;
            socket.expect_error_frame(&format!("offer answer {} of the burst", k + 1)).await
        };
        assert_eq!(error.code, "not_found", "within the burst the answer is processed: {}", error.message);
    }
    drop(socket);

    let mut again = DriverSocket::connect(&origin, &token).await;
    again.send_text(answer_to_no_offer("offer_ack", DRIVER_BURST)).await;
    let error = again.expect_error_frame("an offer answer on a new socket, right after spending the burst").await;
    assert_eq!(
        error.code, "rate_limited",
        "the allowance is the driver's, not the socket's: reconnecting must not refill it ({})",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_participant_that_spends_its_burst_and_reconnects_at_once_is_still_refused() {
    const BURST: usize = 2;
    let cluster =
        Cluster::start(Mode::Embedded, |origin| origin.flag("--chat-rate", NO_REFILL_RATE).flag("--chat-burst", BURST))
            .await;
    let origin = cluster.driver_side();
    let ride = AssignedRide::start(origin, origin, "r-chat-again", "d-chat-again").await;
    let mut chat = ChatSocket::connect(origin, &ride.ride_id, &ride.ride_token, None).await;
    for k in 0..BURST {
        chat.say(&format!("burst-{k}"), "where are you?").await;
    }
    chat.close().await;

    let mut again = ChatSocket::connect(origin, &ride.ride_id, &ride.ride_token, None).await;
    // The history comes first; then the answer to the new message.
    let _ = again.next_messages(BURST, "the history on reconnect").await;
    again.send_message("after-reconnect", "hello?").await;
    let refused = again.expect_error("rate_limited", "a message right after reconnecting with the burst spent").await;
    assert!(refused.message.contains("not stored"), "{}", refused.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_alternating_two_cells_writes_its_dispatch_position_once_a_second_and_the_last_one_counts() {
    const FRAMES: usize = 20;
    const GAP: Duration = Duration::from_millis(100);
    // Only a driver at the pickup is in range; 2 km north of it is not.
    let origin = Origin::builder().flag("--match-radius-m", 300).start().await;
    let driver = "d-alternates";
    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
    socket.send_text(availability(true)).await;
    let far = (PICKUP.0 + 2_000.0 / 111_195.0, PICKUP.1);
    let before = origin.metric("dispatch_position_writes_total").await;

    // Far, pickup, far, ..., pickup: every frame changes cell, and the last one is at the pickup.
    let mut clock = TsClock::new();
    let started = Instant::now();
    for k in 0..FRAMES {
        socket.send_location(Fix::at(if k % 2 == 0 { far } else { PICKUP }, clock.tick())).await;
        tokio::time::sleep(GAP).await;
    }
    let took = started.elapsed();
    // The last position waits at most a second for its write; then nothing more is written.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let writes = origin.metric("dispatch_position_writes_total").await - before;
    // One write at once, then at most one a second, the last one included.
    let most = took.as_secs() + 2;
    assert!(
        (1..=most).contains(&writes),
        "{FRAMES} cell changes in {took:?} must write the dispatch position at most once a second \
         ({most} writes), not once per frame; wrote {writes}"
    );

    // The last position was written, though it came less than a second after the one before.
    let rider = rider_token_without_drv("r-alternates");
    let body = json!({
        "pickup": { "lat": PICKUP.0, "lng": PICKUP.1 },
        "dropoff": { "lat": DROPOFF.0, "lng": DROPOFF.1 },
    });
    let response = post_json(&origin.url("/api/rides"), Auth::Bearer(&rider), body.to_string()).await;
    assert_eq!(response.status().as_u16(), 201, "{}", response.text().await.unwrap_or_default());
    socket.next_frame_of("offer", EXPECT, "an offer for a ride at the driver's last position").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_refused_a_hundred_times_in_a_row_is_closed_with_1008() {
    // One frame, and then (practically) none: 0.01 a second is the slowest rate the flag takes.
    let origin = Origin::builder().flag("--driver-rate", 0.01).flag("--driver-burst", 1).start().await;
    let mut socket = DriverSocket::connect(&origin, &driver_token("d-abuse")).await;
    socket.send_text(answer_to_no_offer("offer_ack", 0)).await;
    let processed = socket.expect_error_frame("the one frame the burst allows").await;
    assert_eq!(processed.code, "not_found", "the first frame fits the burst: {}", processed.message);

    // In lockstep: each answer is read before the next frame goes, so that the close is not
    // lost behind frames the origin never read.
    for k in 1..ABUSE_STREAK {
        socket.send_text(answer_to_no_offer("offer_ack", k)).await;
        let refused = socket.expect_error_frame(&format!("refused frame {k} in a row (still open)")).await;
        assert_eq!(refused.code, "rate_limited", "{}", refused.message);
    }
    socket.send_text(answer_to_no_offer("offer_ack", ABUSE_STREAK)).await;
    let what = format!("refused frame {ABUSE_STREAK} in a row");
    let (errors, ending) = socket.expect_end(EXPECT, &what).await;
    let codes: Vec<&str> = errors.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(codes, ["rate_limited"], "{what} is refused like the others before the close");
    assert_eq!(ending, Ending::Closed(Some(POLICY)), "{what} closes the socket with 1008 (policy)");
}

// ---------------------------------------------------------------------------------------------
// A ride's tracking token
// ---------------------------------------------------------------------------------------------

in_both_modes!(a_tracking_token_stops_tracking_when_its_ride_is_cancelled);

async fn a_tracking_token_stops_tracking_when_its_ride_is_cancelled(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let mut ride = AssignedRide::start(cluster.rider_side(), cluster.driver_side(), "r-track", "d-track").await;
    let driver = ride.driver.clone();
    let tracking = ride.tracking_token.clone();
    let drv_only = rider_token("r-friend", &driver);

    // While the ride is on, the tracking token follows its driver on every instance.
    let mut tracked = Vec::new();
    for (k, origin) in cluster.origins.iter().enumerate() {
        let polled = poll(origin, &driver, &tracking, None).await;
        assert_eq!(polled.status, 200, "polling instance {k} with the tracking token of a live ride: {}", polled.body);
        let mut stream = raw_location_stream(origin, &driver, &tracking).await;
        let first = stream.next_event(EXPECT, "the driver's current location on the tracking stream").await;
        assert_eq!(first.event(), Some("location"), "instance {k}: {first:?}");
        tracked.push(stream);
    }
    let mut friend = RiderStream::open(cluster.rider_side(), &driver, &drv_only).await;
    friend.next_location("the driver's current location for a drv-only token").await;

    // The creator cancels, on yet another instance in Redis mode.
    let canceller = cluster.origins.last().expect("an origin");
    let response =
        delete(&canceller.url(&format!("/api/rides/{}", ride.ride_id)), Auth::Bearer(&ride.ride_token)).await;
    assert_eq!(response.status().as_u16(), 200, "the creator cancels the ride: {:?}", response.text().await);

    // Every open tracking stream ends, saying why in a comment, with no further event.
    for (k, stream) in tracked.iter_mut().enumerate() {
        let what = format!("the tracking stream on instance {k} once the ride is cancelled");
        let (frames, clean) = stream.expect_end(EXPECT, &what).await;
        assert!(frames.iter().all(|f| !f.is_event()), "{what}: no event before the end, got {frames:?}");
        let said_why = frames.iter().flat_map(|f| &f.comments).any(|c| !c.trim().is_empty() && c.trim() != "hb");
        assert!(said_why, "{what}: a comment says why the stream ends, got {frames:?}");
        assert!(clean, "{what}: the stream ends cleanly, not cut");
    }

    // From now on the tracking token is refused everywhere, for streams and polling alike.
    for (k, origin) in cluster.origins.iter().enumerate() {
        let what = format!("a new location stream with the ride's tracking token on instance {k}");
        let response = sse_get(origin, &location_path(&driver), Auth::Bearer(&tracking)).await;
        expect_refusal(response, 403, "forbidden", &what).await;
        let what = format!("polling with the ride's tracking token on instance {k}");
        let response = get(&origin.url(&polling_path(&driver)), Auth::Bearer(&tracking), &[]).await;
        expect_refusal(response, 403, "forbidden", &what).await;
    }

    // A token that names only the driver is not tied to the ride: it keeps following.
    let moved = Fix::at((ridecast_tests::chat::PICKUP.0 + 0.005, ridecast_tests::chat::PICKUP.1), now_ms());
    ride.driver_socket.send_location(moved).await;
    friend.expect_location(&driver, &moved, "a location after the cancel, on the drv-only stream").await;
    for (k, origin) in cluster.origins.iter().enumerate() {
        wait_until_stored(origin, &driver, &drv_only, &moved, &format!("polling instance {k} with a drv-only token"))
            .await;
        let mut fresh = RiderStream::open(origin, &driver, &drv_only).await;
        let what = format!("a new drv-only stream on instance {k} after the cancel");
        fresh.expect_location(&driver, &moved, &what).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Request heads and bodies
// ---------------------------------------------------------------------------------------------

/// One HTTP/1.1 response read off a raw socket.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    head: String,
    body: String,
}

/// Reads until the server closes the connection (or `limit` passes) and cuts what came into
/// responses (`Content-Length` framed; a last one without it runs to the end).
async fn read_answers(tcp: &mut TcpStream, limit: Duration, what: &str) -> Vec<RawAnswer> {
    let mut bytes = Vec::new();
    within(limit, format!("the server to answer and close the connection: {what}"), async {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    let mut answers = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("{what}: an incomplete response head: {:?}", String::from_utf8_lossy(rest)));
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = &rest[end + 4..];
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: not an HTTP status line: {head:?}"));
        let length = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        });
        let length = length.unwrap_or(rest.len()).min(rest.len());
        answers.push(RawAnswer { status, head, body: String::from_utf8_lossy(&rest[..length]).into_owned() });
        rest = &rest[length..];
    }
    answers
}

fn assert_too_large(answer: &RawAnswer, status: u16, what: &str) {
    assert_eq!(answer.status, status, "{what}: expected HTTP {status} too_large, got {answer:?}");
    let content_type = answer.head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-type").then(|| value.trim().to_owned())
    });
    assert!(
        content_type.as_deref().is_some_and(|t| t.starts_with("application/json")),
        "{what}: HTTP errors are JSON, got {answer:?}"
    );
    let error = ridecast_tests::http::error_body(&answer.body, status, what);
    assert_eq!(error.code, "too_large", "{what}: error code ({})", error.message);
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

/// `GET /healthz` whose head is `size` bytes long, padded with one long header.
fn healthz_head(addr: SocketAddr, size: usize, close: bool) -> Vec<u8> {
    let start =
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n{}X-Pad: ", if close { "Connection: close\r\n" } else { "" });
    let end = "\r\n\r\n";
    let pad = size.checked_sub(start.len() + end.len()).expect("a head long enough for its start");
    format!("{start}{}{end}", "p".repeat(pad)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_8_kib_is_refused_431_too_large() {
    let origin = Origin::builder().start().await;
    let addr = origin.addr();

    let mut tcp = connect(addr).await;
    tcp.write_all(&healthz_head(addr, MAX_HEAD - 512, true)).await.expect("sending a 7.5 KiB head");
    let answers = read_answers(&mut tcp, EXPECT, "a 7.5 KiB request head").await;
    assert_eq!(answers.first().map(|a| a.status), Some(200), "a head under 8 KiB is served: {answers:?}");

    let mut tcp = connect(addr).await;
    tcp.write_all(&healthz_head(addr, MAX_HEAD + 1024, true)).await.expect("sending a 9 KiB head");
    let answers = read_answers(&mut tcp, EXPECT, "a 9 KiB request head").await;
    assert_eq!(answers.len(), 1, "one answer to a 9 KiB head: {answers:?}");
    assert_too_large(&answers[0], 431, "a 9 KiB request head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_8_kib_on_a_kept_alive_connection_is_refused_431_too_large_too() {
    let origin = Origin::builder().start().await;
    let addr = origin.addr();
    let mut tcp = connect(addr).await;
    tcp.write_all(&healthz_head(addr, 256, false)).await.expect("sending a first request");
    let mut first = [0u8; 1024];
    let n = within(EXPECT, "the answer to the first request", tcp.read(&mut first)).await.expect("reading");
    let first = String::from_utf8_lossy(&first[..n]);
    assert!(first.starts_with("HTTP/1.1 200"), "the first request on the connection is served: {first:?}");

    tcp.write_all(&healthz_head(addr, MAX_HEAD + 1024, true)).await.expect("sending a 9 KiB head");
    let answers = read_answers(&mut tcp, EXPECT, "a 9 KiB head after a served request").await;
    assert_eq!(answers.len(), 1, "one answer to the 9 KiB head: {answers:?}");
    assert_too_large(&answers[0], 431, "a 9 KiB request head on a kept-alive connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_over_8_kib_pipelined_behind_another_is_refused_431_too_large_too() {
    let origin = Origin::builder().start().await;
    let addr = origin.addr();
    let mut tcp = connect(addr).await;
    let mut requests = healthz_head(addr, 256, false);
    requests.extend(healthz_head(addr, MAX_HEAD + 1024, true));
    tcp.write_all(&requests).await.expect("sending two requests at once");
    let answers = read_answers(&mut tcp, EXPECT, "a 9 KiB head pipelined behind a small request").await;
    assert_eq!(answers.len(), 2, "two answers on the connection: {answers:?}");
    assert_eq!(answers[0].status, 200, "the first request is served: {answers:?}");
    assert_too_large(&answers[1], 431, "a 9 KiB request head pipelined behind a small request");
}

/// A ride request padded (with a field the origin ignores) to exactly `size` bytes.
fn ride_body_of(size: usize) -> String {
    let start = r#"{"pickup":{"lat":37.77493,"lng":-122.41942},"dropoff":{"lat":37.80,"lng":-122.27},"note":""#;
    let end = r#""}"#;
    let body = format!("{start}{}{end}", "n".repeat(size - start.len() - end.len()));
    assert_eq!(body.len(), size);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_16_kib_is_read_and_one_byte_more_is_413_too_large() {
    let origin = Origin::builder().start().await;
    let token = rider_token_without_drv("r-body");
    let url = origin.url("/api/rides");

    let response = post_json(&url, Auth::Bearer(&token), ride_body_of(MAX_BODY)).await;
    let status = response.status().as_u16();
    assert_eq!(status, 201, "a 16384-byte ride request is read: {:?}", response.text().await);

    let response = post_json(&url, Auth::Bearer(&token), ride_body_of(MAX_BODY + 1)).await;
    let answer = expect_error(response, 413, "a 16385-byte ride request").await;
    assert_eq!(answer.code, "too_large", "{}", answer.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_16_kib_without_a_content_length_is_413_too_large() {
    let origin = Origin::builder().start().await;
    let addr = origin.addr();
    let token = rider_token_without_drv("r-chunked");
    let body = ride_body_of(MAX_BODY + 4 * 1024);
    let mut request = format!(
        "POST /api/rides HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.as_bytes().chunks(1024) {
        request.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut tcp = connect(addr).await;
    // The server may answer and close before it has read everything; only the answer matters.
    let _ = tcp.write_all(&request).await;
    let answers = read_answers(&mut tcp, EXPECT, "a 20 KiB chunked ride request").await;
    assert_eq!(answers.len(), 1, "one answer to a 20 KiB chunked body: {answers:?}");
    assert_too_large(&answers[0], 413, "a 20 KiB ride request in chunks, without Content-Length");
}

// ---------------------------------------------------------------------------------------------
// Slow request heads
// ---------------------------------------------------------------------------------------------

fn slow_heads_timed_out() -> OriginBuilder {
    Origin::builder().flag("--header-timeout-secs", HEADER_TIMEOUT.as_secs())
}

/// Reads until the connection ends, returning what came; fails past `limit`.
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration, what: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    within(limit, format!("the server to close the connection: {what}"), async {
        let mut buffer = [0u8; 4096];
        loop {
            match tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    bytes
}

fn assert_not_served(bytes: &[u8], what: &str) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.starts_with("HTTP/1.1 200"), "{what}: an unfinished request is never served, got {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_request_head_is_disconnected_at_the_header_timeout() {
    let origin = slow_heads_timed_out().start().await;
    let addr = origin.addr();
    let started = Instant::now();
    let mut tcp = connect(addr).await;
    tcp.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes()).await.expect("half a head");
    let what = "a connection whose request head stops half way";
    let bytes = read_until_closed(&mut tcp, HEADER_TIMEOUT + EXPECT, what).await;
    assert_not_served(&bytes, what);
    let lasted = started.elapsed();
    assert!(lasted >= HEADER_TIMEOUT, "{what}: closed after {lasted:?}, before the {HEADER_TIMEOUT:?} it may take");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_request_head_is_disconnected_although_it_never_falls_silent() {
    let origin = slow_heads_timed_out().start().await;
    let addr = origin.addr();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}\r\n\r\n", "s".repeat(1000));
    let started = Instant::now();
    let mut tcp = connect(addr).await;
    let what = "a client sending its head a byte every 100 ms";
    let limit = HEADER_TIMEOUT + EXPECT;
    let mut sent = 0;
    let mut received = Vec::new();
    let closed = loop {
        assert!(started.elapsed() < limit, "{what}: still connected after {limit:?}");
        if tcp.write_all(&head.as_bytes()[sent..=sent]).await.is_err() {
            break true;
        }
        sent += 1;
        let mut buffer = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => {}
        }
    };
    assert!(closed && sent < head.len(), "{what}: cut off before the head was complete");
    assert_not_served(&received, what);
    let lasted = started.elapsed();
    assert!(lasted >= HEADER_TIMEOUT, "{what}: cut after {lasted:?}, before the {HEADER_TIMEOUT:?} it may take");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_arrives_in_pieces_within_the_timeout_is_served() {
    let origin = slow_heads_timed_out().start().await;
    let addr = origin.addr();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (first, rest) = head.as_bytes().split_at(10);
    let (second, third) = rest.split_at(20);
    let mut tcp = connect(addr).await;
    for piece in [first, second, third] {
        tcp.write_all(piece).await.expect("a piece of the head");
        // A pause well inside the header timeout, as on a slow mobile link.
        tokio::time::sleep(HEADER_TIMEOUT / 5).await;
    }
    let answers = read_answers(&mut tcp, EXPECT, "a head sent in three pieces").await;
    assert_eq!(answers.first().map(|a| a.status), Some(200), "a head complete within the timeout: {answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_second_request_on_a_kept_alive_connection_is_disconnected_too() {
    let origin = slow_heads_timed_out().start().await;
    let addr = origin.addr();
    let mut tcp = connect(addr).await;
    let mut bytes = healthz_head(addr, 256, false);
    bytes.extend(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").into_bytes());
    let started = Instant::now();
    tcp.write_all(&bytes).await.expect("a request and half of another");
    let what = "a kept-alive connection whose second request head stops half way";
    let received = read_until_closed(&mut tcp, HEADER_TIMEOUT + EXPECT, what).await;
    let text = String::from_utf8_lossy(&received);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 1, "{what}: only the first request is served: {text:?}");
    let lasted = started.elapsed();
    assert!(lasted >= HEADER_TIMEOUT, "{what}: closed after {lasted:?}, before the {HEADER_TIMEOUT:?} it may take");
}

// ---------------------------------------------------------------------------------------------
// Silent WebSockets
// ---------------------------------------------------------------------------------------------

fn short_idle(origin: OriginBuilder) -> OriginBuilder {
    origin.flag("--ws-ping-secs", WS_PING.as_secs()).flag("--ws-idle-secs", WS_IDLE.as_secs())
}

/// A WebSocket client that never writes after its handshake: no pongs, no close reply. Every
/// client library answers pings by itself, so this one is written by hand.
struct SilentSocket {
    tcp: TcpStream,
    buffer: Vec<u8>,
}

/// What a [`SilentSocket`] saw until the server closed it.
#[derive(Debug)]
struct Silenced {
    pings: usize,
    close_code: Option<u16>,
}

impl SilentSocket {
    async fn open(origin: &Origin, path: &str, token: &str) -> Self {
        let addr = origin.addr();
        let mut tcp = connect(addr).await;
        let handshake = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tcp.write_all(handshake.as_bytes()).await.expect("sending the WebSocket handshake");
        let mut this = Self { tcp, buffer: Vec::new() };
        let head = within(EXPECT, format!("the answer to the handshake on {path}"), async {
            loop {
                if let Some(end) = this.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&this.buffer[..end]).into_owned();
                    this.buffer.drain(..end + 4);
                    return head;
                }
                assert!(this.fill().await, "the connection closed during the handshake on {path}");
            }
        })
        .await;
        assert!(head.starts_with("HTTP/1.1 101"), "the WebSocket on {path} is upgraded: {head}");
        this
    }

    async fn fill(&mut self) -> bool {
        let mut buffer = [0u8; 4096];
        match self.tcp.read(&mut buffer).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&buffer[..n]);
                true
            }
        }
    }

    /// The next frame as `(opcode, payload)`, or `None` when the connection ends.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((frame, used)) = parse_websocket_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads (without ever answering) until the server closes the socket.
    async fn until_closed(&mut self, limit: Duration, what: &str) -> Silenced {
        within(limit, format!("the server to close {what}"), async {
            let mut pings = 0;
            loop {
                match self.next_frame().await {
                    Some((0x9, _)) => pings += 1,
                    Some((0x8, payload)) => {
                        let close_code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        return Silenced { pings, close_code };
                    }
                    Some(_) => {}
                    None => return Silenced { pings, close_code: None },
                }
            }
        })
        .await
    }
}

/// One unmasked server frame at the start of `bytes`: `((opcode, payload), bytes used)`.
fn parse_websocket_frame(bytes: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    assert_eq!(second & 0x80, 0, "frames from a server are never masked");
    let (length, start) = match second & 0x7f {
        126 => (usize::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)), 4),
        127 => (usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok()?, 10),
        short => (usize::from(short), 2),
    };
    let payload = bytes.get(start..start + length)?.to_vec();
    Some(((first & 0x0f, payload), start + length))
}

async fn assert_closed_for_silence(socket: &mut SilentSocket, what: &str) {
    let started = Instant::now();
    let silenced = socket.until_closed(WS_IDLE + WS_PING + EXPECT, what).await;
    let lasted = started.elapsed();
    assert!(silenced.pings >= 1, "{what}: pinged before it is given up, got {silenced:?}");
    assert_eq!(silenced.close_code, Some(POLICY), "{what}: closed with 1008 (policy) after {lasted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_sends_nothing_not_even_pongs_is_closed_with_1008_after_the_idle_limit() {
    let cluster = Cluster::start(Mode::Embedded, short_idle).await;
    let origin = cluster.driver_side();
    let ride = AssignedRide::start(origin, origin, "r-silent", "d-on-ride").await;

    let started = Instant::now();
    let mut driver = SilentSocket::open(origin, "/ws/rides", &driver_token("d-silent")).await;
    let mut chat = SilentSocket::open(origin, &chat_path(&ride.ride_id, None), &ride.ride_token).await;
    assert_closed_for_silence(&mut driver, "a driver socket that never answers").await;
    assert_closed_for_silence(&mut chat, "a chat socket that never answers").await;
    let lasted = started.elapsed();
    assert!(lasted >= WS_IDLE, "silent sockets closed after {lasted:?}, before the idle limit of {WS_IDLE:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_answers_pings_stays_connected_past_the_idle_limit() {
    let origin = short_idle(Origin::builder()).start().await;
    let driver = "d-quiet-but-alive";
    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
    // Reading answers each ping with a pong, as every client library does; nothing else is sent.
    let watch = WS_IDLE * 2 + WS_PING;
    socket.is_open_after(watch).await.unwrap_or_else(|why| panic!("a socket answering pings lasts {watch:?}: {why}"));
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick());
    socket.send_location(fix).await;
    let what = "a location after a long quiet spell";
    wait_until_stored(&origin, driver, &rider_token("r1", driver), &fix, what).await;
}

/// Each `POST /api/rides` sends real offers to real drivers, so a rider's requests are limited
/// per `sub` on an instance: past `--ride-create-burst` it gets 429 with `Retry-After`, also
/// with a freshly minted token and also when the requests were refused for its open ride.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rider_requesting_rides_past_its_burst_gets_429_even_with_a_new_token() {
    let origin = Origin::builder().flag("--ride-create-burst", 3).flag("--ride-create-rate", 0.01).start().await;
    let url = origin.url("/api/rides");
    let first = post_json(&url, Auth::Bearer(&rider_token_without_drv("r-spam")), RIDE_BODY).await;
    assert_eq!(first.status().as_u16(), 201, "the first request is served");
    for k in 2..=3 {
        let again = post_json(&url, Auth::Bearer(&rider_token_without_drv("r-spam")), RIDE_BODY).await;
        expect_refusal(again, 409, "conflict", &format!("request {k} while the first ride is open")).await;
    }
    // Another token of the same rider: the allowance is the rider's, not the token's.
    let fresh = post_json(&url, Auth::Bearer(&rider_token_without_drv("r-spam")), RIDE_BODY).await;
    expect_rate_limited(fresh, "the fourth request of one rider, with a new token").await;
    let other = post_json(&url, Auth::Bearer(&rider_token_without_drv("r-other")), RIDE_BODY).await;
    assert_eq!(other.status().as_u16(), 201, "another rider is not held back");
}

/// The embedded store keeps a ride's chat `--chat-ttl-secs` after its last message, as
/// SECURITY.md promises, then forgets it: a participant connecting afterwards gets no history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_chat_is_forgotten_its_ttl_after_the_last_message() {
    const TTL: Duration = Duration::from_secs(2);
    let cluster = Cluster::start(Mode::Embedded, |origin| origin.flag("--chat-ttl-secs", TTL.as_secs())).await;
    let origin = cluster.driver_side();
    let ride = AssignedRide::start(origin, origin, "r-forget", "d-forget").await;
    let mut chat = ChatSocket::connect(origin, &ride.ride_id, &ride.ride_token, None).await;
    chat.say("kept-for-a-while", "I'm at the corner").await;
    chat.close().await;

    let mut soon = ChatSocket::connect(origin, &ride.ride_id, &ride.ride_token, None).await;
    let kept = soon.next_messages(1, "the history within the TTL").await;
    assert_eq!(kept[0].text, "I'm at the corner");
    soon.close().await;

    // The sweeper runs every min(TTL, 30 s): past TTL plus one sweep the chat must be gone.
    tokio::time::sleep(TTL * 2 + Duration::from_millis(500)).await;
    let mut late = ChatSocket::connect(origin, &ride.ride_id, &ride.ride_token, None).await;
    late.expect_quiet(Duration::from_millis(500), "no history once the chat's TTL has passed").await;
}
