//! A full instance turns requests away in a way clients recover from: an SSE request gets
//! `200 text/event-stream` with a jittered `retry:`, a comment saying why, and an immediate end
//! (a browser's EventSource gives up for good on any non-200); anything else gets 503 with
//! `Retry-After`.
//!
//! Contract: PROTOCOL.md, "Errors" (503 full or draining, the SSE exception); CLI.md,
//! `--max-connections`.

use std::collections::BTreeSet;
use std::time::Duration;

use ridecast_tests::http::{Auth, expect_error, get};
use ridecast_tests::raw_sse::Next;
use ridecast_tests::rider::{location_path, polling_path};
use ridecast_tests::tokens::rider_token;
use ridecast_tests::{EXPECT, Origin, QUIET, RawSse};

const MAX_CONNECTIONS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_tells_sse_clients_to_retry_later_and_answers_others_503() {
    let origin = Origin::builder().flag("--max-connections", MAX_CONNECTIONS).start().await;
    let driver = "d-full";
    let auth = format!("Bearer {}", rider_token("r1", driver));
    let headers = [("Authorization", auth.as_str())];

    // Fill the instance with streams that stay open. The start-up health checks' connections
    // may still hold a slot for a moment, so a stream turned away now is simply opened again.
    let mut open_streams = Vec::new();
    let deadline = tokio::time::Instant::now() + EXPECT;
    while open_streams.len() < MAX_CONNECTIONS {
        assert!(tokio::time::Instant::now() < deadline, "could not open {MAX_CONNECTIONS} streams on an idle instance");
        let mut stream = RawSse::open(origin.addr(), &location_path(driver), &headers).await;
        stream.next_frame(EXPECT, "the first frame of a filler stream").await;
        // Proving an absence: a stream that is really open does not end.
        match stream.next_within(QUIET).await {
            None | Some(Next::Frame(_)) => open_streams.push(stream),
            Some(Next::End { .. }) => {}
        }
    }

    let mut retries = BTreeSet::new();
    for attempt in 0..5 {
        let what = format!("SSE request {attempt} to a full instance");
        let mut turned_away = RawSse::open(origin.addr(), &location_path(driver), &headers).await;
        assert_eq!(turned_away.status(), 200, "{what}: an EventSource must get 200, or it never comes back");
        let content_type = turned_away.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("text/event-stream"), "{what}: Content-Type {content_type:?}");
        let (frames, _clean) = turned_away.expect_end(Duration::from_secs(2), &format!("{what} to end at once")).await;
        let retry = frames.iter().find_map(|f| f.retry()).unwrap_or_else(|| panic!("{what}: no retry: in {frames:?}"));
        assert!(frames.iter().any(|f| !f.comments.is_empty()), "{what}: a comment says why, got {frames:?}");
        assert!(frames.iter().all(|f| !f.is_event()), "{what}: no events on a refusal, got {frames:?}");
        retries.insert(retry);
    }
    assert!(retries.len() > 1, "the retry: of refused SSE requests is jittered, but all five were {retries:?}");

    let token = rider_token("r1", driver);
    let response = get(&origin.url(&polling_path(driver)), Auth::Bearer(&token), &[]).await;
    expect_error(response, 503, "a polling request to a full instance").await;
    drop(open_streams);
}

/// A driver WebSocket outlives the HTTP connection that carried its upgrade; it must keep its
/// place in the limit for its whole life, or a "full" instance would take unlimited sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_driver_sockets_count_against_the_connection_limit() {
    let origin = Origin::builder().flag("--max-connections", MAX_CONNECTIONS).start().await;
    let mut sockets = Vec::new();
    let deadline = tokio::time::Instant::now() + EXPECT;
    while sockets.len() < MAX_CONNECTIONS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "could not open {MAX_CONNECTIONS} driver sockets on an idle instance"
        );
        let driver = format!("d-slot-{}", sockets.len());
        let token = ridecast_tests::tokens::driver_token(&driver);
        if let Ok(socket) = ridecast_tests::DriverSocket::try_connect(&origin, Auth::Bearer(&token)).await {
            sockets.push(socket);
        }
    }
    let token = rider_token("r1", "d-slot-0");
    let response = get(&origin.url(&polling_path("d-slot-0")), Auth::Bearer(&token), &[]).await;
    expect_error(response, 503, "a request while driver sockets fill the instance").await;
    drop(sockets);
}
