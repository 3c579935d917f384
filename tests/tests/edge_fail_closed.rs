//! The edge fails closed (issue 16): a tracking token is honoured only after the origin confirmed
//! it, a confirmation is reused for at most 5 s, no answer from the origin is a refusal with a
//! retry (never a pass), one token and one object hold bounded numbers of streams, and browsers
//! get CORS from the edge as from the origin.
//!
//! Contract: PROTOCOL.md, "v1.1 additions", "The edge"; "Errors" for the EventSource-safe form.
//! Each test runs the real worker in workerd (`wrangler dev --local`) in front of a real origin or
//! of a [`StubOrigin`] that answers what a sick origin or a load balancer answers.

use std::time::{Duration, Instant};

use ridecast_protocol::{Claims, Id, Role};
use ridecast_tests::http::{self, Auth, expect_error};
use ridecast_tests::raw_sse::Next;
use ridecast_tests::rider::{location_path, polling_path};
use ridecast_tests::tokens::{claims, mint, rider_token};
use ridecast_tests::wait::poll_until;
use ridecast_tests::{EXPECT, Edge, Endpoint, Origin, RawSse, RiderStream, StubOrigin};

/// The edge's `retry:` before jitter (`hub::RETRY_MS`); refusals spread it over ±50 %.
const EDGE_RETRY_MS: u64 = 3_000;
/// How long the edge may reuse a confirmation (`tracking::CONFIRMATION_TTL`).
const CONFIRMATION_TTL: Duration = Duration::from_secs(5);

/// A tracking token as the origin hands one out: a rider token with `drv` and `ride`.
fn tracking_token(rider: &str, driver: &str, ride: &str) -> String {
    let id = |raw: &str| Id::parse(raw).expect("a valid id");
    mint(&Claims { drv: Some(id(driver)), ride: Some(id(ride)), ..claims(Role::Rider, rider) })
}

/// Opens `path` with `token` and asserts the EventSource-safe refusal: `200 text/event-stream`,
/// a jittered `retry:`, a comment saying why, no event, and the end of the stream at once.
/// Returns the comment.
async fn expect_refusal_stream(edge: &Edge, path: &str, token: &str, what: &str) -> String {
    let bearer = format!("Bearer {token}");
    let mut stream = RawSse::open(edge.addr(), path, &[("authorization", &bearer)]).await;
    assert_eq!(stream.status(), 200, "{what}: the refusal is a 200 so that EventSource comes back");
    assert_eq!(stream.header("content-type").as_deref(), Some("text/event-stream"), "{what}");
    let (frames, clean) = stream.expect_end(EXPECT, what).await;
    assert!(clean, "{what}: the refusal stream ends cleanly, not cut");
    assert!(frames.iter().all(|f| !f.is_event()), "{what}: a refusal streams no event: {frames:?}");
    let retry = frames.iter().find_map(|f| f.retry()).unwrap_or_else(|| panic!("{what}: no retry: in {frames:?}"));
    assert!(
        (EDGE_RETRY_MS / 2..=EDGE_RETRY_MS * 3 / 2).contains(&retry),
        "{what}: retry: {retry} is the edge's {EDGE_RETRY_MS} ms with jitter"
    );
    let comment = frames.iter().flat_map(|f| f.comments.iter()).next().cloned();
    comment.unwrap_or_else(|| panic!("{what}: the refusal says why in a comment: {frames:?}"))
}

/// Opens `path` with `token` and reads it for a second: whether the stream is still open then
/// (a live stream), or ended (a refusal).
async fn open_and_watch(edge: &Edge, path: &str, token: &str) -> (RawSse, bool) {
    let bearer = format!("Bearer {token}");
    let mut stream = RawSse::open(edge.addr(), path, &[("authorization", &bearer)]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        match stream.next_within(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
            None => return (stream, true),
            Some(Next::End { .. }) => return (stream, false),
            Some(Next::Frame(_)) => {}
        }
    }
}

/// Opens `path` with `token` and asserts a live stream: 200, still open after a second.
async fn expect_live_stream(edge: &Edge, path: &str, token: &str, what: &str) -> RawSse {
    let (stream, live) = open_and_watch(edge, path, token).await;
    assert_eq!(stream.status(), 200, "{what}");
    assert!(live, "{what}: expected a live stream, but it ended at once (refused)");
    stream
}

/// Old behaviour caught: the edge let a tracking token through on every origin answer but
/// 401/403 (fail open), so a 503 from an origin whose Redis is down, a load balancer's 502, a
/// 429 or a hung origin handed out an ended ride's driver position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_cannot_confirm_a_tracking_token_gets_it_refused_with_a_retry_never_streamed() {
    let stub = StubOrigin::start(503).await;
    let edge = Edge::builder_for_url(stub.url()).start().await;
    // HANG: the stub reads the request and never answers (the edge's confirmation timeout).
    for (i, status) in [503u16, 502, 429, 500, 302, ridecast_tests::stub_origin::HANG].into_iter().enumerate() {
        stub.answer(status);
        let driver = format!("d-sick-{i}");
        let token = tracking_token(&format!("r-sick-{i}"), &driver, &format!("ride-sick-{i}"));
        let what = format!("a tracking token while the origin answers {status}");
        let started = Instant::now();
        let why = expect_refusal_stream(&edge, &location_path(&driver), &token, &what).await;
        assert!(why.contains("confirm"), "{what}: the comment says the origin could not confirm: {why:?}");
        assert!(started.elapsed() < Duration::from_secs(8), "{what}: refused within the confirmation timeout");
        assert_eq!(stub.requests_for(&polling_path(&driver)), 1, "{what}: the edge asked the origin once");
        assert_eq!(
            stub.requests_for(&format!("/edge/v1/drivers/{driver}")),
            0,
            "{what}: a refused rider never reaches the object's stream (no upstream link is opened)"
        );
    }

    // A refusal from the origin is final: 403, the JSON error, which EventSource gives up on.
    for status in [401u16, 403, 404] {
        stub.answer(status);
        let driver = format!("d-refused-{status}");
        let token = tracking_token("r-refused", &driver, "ride-refused");
        let context = format!("a tracking token the origin answers {status} for");
        let response = http::get(&edge.url(&location_path(&driver)), Auth::Bearer(&token), &[]).await;
        assert_eq!(expect_error(response, 403, &context).await.code, "forbidden", "{context}");
    }
}

/// Old behaviour caught: the edge asked the origin at every connect and let the token through
/// whenever the origin could not answer. Now one confirmation serves a reconnect for at most 5 s
/// (the origin is not asked again), and after that the origin's silence is a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_is_reused_for_at_most_five_seconds() {
    let stub = StubOrigin::start(200).await;
    let edge = Edge::builder_for_url(stub.url()).start().await;
    let driver = "d-cached";
    let path = location_path(driver);
    let polling = polling_path(driver);
    let token = tracking_token("r-cached", driver, "ride-cached");

    let asked = Instant::now();
    let mut first = expect_live_stream(&edge, &path, &token, "the first stream, confirmed by the origin").await;
    assert_eq!(stub.requests_for(&polling), 1, "the first stream asked the origin");

    // The origin goes sick; a reconnect within the window is served from the confirmation.
    stub.answer(503);
    let _second = expect_live_stream(&edge, &path, &token, "a second stream within 5 s of the confirmation").await;
    assert!(asked.elapsed() < CONFIRMATION_TTL, "the second stream was opened inside the window");
    assert_eq!(stub.requests_for(&polling), 1, "the confirmation was reused: the origin was not asked again");

    // Past the window the origin is asked again, cannot answer, and the token is refused.
    tokio::time::sleep((CONFIRMATION_TTL + Duration::from_millis(500)).saturating_sub(asked.elapsed())).await;
    expect_refusal_stream(&edge, &path, &token, "a stream 5.5 s after the confirmation, origin sick").await;
    // Asked again by the new stream, and by the object for its open streams as the confirmation
    // ran out (at 5 s): both unanswered.
    assert!(stub.requests_for(&polling) >= 3, "an expired confirmation is asked for again");

    // The streams it confirmed stay open while the origin cannot answer (an outage does not cut
    // every rider); only a refusal ends them (edge_worker.rs).
    let still_open = first.next_within(Duration::from_secs(2)).await;
    assert!(
        !matches!(still_open, Some(Next::End { .. })),
        "a confirmed stream stays open while the origin cannot answer"
    );
}

/// A real origin, and an edge with a small per-token cap so that the tests can reach it.
async fn start_with_token_cap(streams_per_token: u32) -> (Origin, Edge) {
    let origin = Origin::builder().start().await;
    let edge = Edge::builder(&origin)
        .var("EDGE_HEARTBEAT_SECS", 1)
        .var("EDGE_MAX_STREAMS_PER_TOKEN", streams_per_token)
        .start()
        .await;
    (origin, edge)
}

/// Old behaviour caught: no cap at the edge, so one leaked token could hold any number of an
/// object's streams (the third stream here was served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_holds_at_most_its_cap_of_streams_on_an_object_and_others_are_unaffected() {
    let (_origin, edge) = start_with_token_cap(2).await;
    let driver = "d-token-cap";
    let path = location_path(driver);
    let leaked = rider_token("r-leaked", driver);
    let first = expect_live_stream(&edge, &path, &leaked, "the token's first stream").await;
    let _second = expect_live_stream(&edge, &path, &leaked, "the token's second stream").await;
    let why = expect_refusal_stream(&edge, &path, &leaked, "the token's third stream, past its cap of 2").await;
    assert!(why.contains("EDGE_MAX_STREAMS_PER_TOKEN"), "the refusal names the cap: {why:?}");

    // Another rider of the same driver, and the same token on another driver, are not affected.
    let mut other = RiderStream::open(&edge, driver, &rider_token("r-other", driver)).await;
    other.expect_quiet(Duration::from_millis(300), "another token's stream stays open").await;
    let elsewhere = rider_token("r-leaked", "d-token-cap-2");
    expect_live_stream(&edge, &location_path("d-token-cap-2"), &elsewhere, "another object").await;

    // A stream that leaves frees its place (found gone by the next heartbeat).
    drop(first);
    poll_until(EXPECT, "the token's place to be freed after one of its streams left", || async {
        let (stream, live) = open_and_watch(&edge, &path, &leaked).await;
        live.then_some(stream)
    })
    .await;
}

/// Old behaviour caught: no cap on an object's riders, so enough streams on one driver would
/// exhaust the isolate's 128 MB for every object in it. Past the cap the key's fan-out tree takes
/// riders on shard objects, up to `EDGE_MAX_SHARDS_PER_KEY` of them, and no further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_objects_hold_at_most_their_cap_of_riders_each() {
    let origin = Origin::builder().start().await;
    let edge =
        Edge::builder(&origin).var("EDGE_MAX_RIDERS_PER_OBJECT", 3).var("EDGE_MAX_SHARDS_PER_KEY", 1).start().await;
    let driver = "d-object-cap";
    let path = location_path(driver);
    let mut riders = Vec::new();
    for i in 0..6 {
        let token = rider_token(&format!("r-cap-{i}"), driver);
        riders.push(
            expect_live_stream(&edge, &path, &token, &format!("rider {i} of 6: the root's 3, the shard's 3")).await,
        );
    }
    let seventh = rider_token("r-cap-6", driver);
    let why = expect_refusal_stream(&edge, &path, &seventh, "a seventh rider on a root and one shard of 3").await;
    assert!(
        why.contains("EDGE_MAX_RIDERS_PER_OBJECT") && why.contains("EDGE_MAX_SHARDS_PER_KEY"),
        "the refusal names both caps: {why:?}"
    );
    // Another driver's object has its own room.
    let other = rider_token("r-cap-other", "d-object-cap-2");
    expect_live_stream(&edge, &location_path("d-object-cap-2"), &other, "a rider of another driver").await;
}

/// Old behaviour caught: the edge had no CORS at all. A preflight went through to the origin
/// (which, not configured for CORS, answered without the headers) and neither the edge's streams
/// nor its passthrough answers carried `Access-Control-Allow-Origin`, so a browser app on another
/// host could not use the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_answers_cors_like_the_origin() {
    let origin = Origin::builder().start().await;
    // `*` is ignored: the edge runs with a real secret, as the origin ignores `*` outside dev.
    let edge = Edge::builder(&origin).var("CORS_ORIGINS", "https://app.example, *").start().await;
    let app = "https://app.example";
    let driver = "d-cors";
    let token = rider_token("r-cors", driver);

    for path in [location_path(driver), "/api/rides".to_owned()] {
        let what = format!("a preflight for {path} from {app}");
        let response = http::client()
            .request(reqwest::Method::OPTIONS, edge.url(&path))
            .header("origin", app)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization, last-event-id")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(response.status().is_success(), "{what}: {}", response.status());
        assert_eq!(http::header(&response, "access-control-allow-origin").as_deref(), Some(app), "{what}");
        let allowed = http::header(&response, "access-control-allow-headers").unwrap_or_default().to_lowercase();
        for header in ["authorization", "content-type", "last-event-id"] {
            assert!(allowed.contains(header), "{what}: {header} allowed: {allowed:?}");
        }
        let methods = http::header(&response, "access-control-allow-methods").unwrap_or_default();
        assert!(methods.contains("POST") && methods.contains("DELETE"), "{what}: methods {methods:?}");
        assert!(http::header(&response, "vary").unwrap_or_default().to_lowercase().contains("origin"), "{what}");
    }
    let evil = http::client()
        .request(reqwest::Method::OPTIONS, edge.url(&location_path(driver)))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .expect("a preflight from another origin");
    assert_eq!(
        http::header(&evil, "access-control-allow-origin"),
        None,
        "an origin not listed gets no CORS grant (and `*` counts only in dev)"
    );

    // The stream terminated at the edge carries the headers.
    let bearer = format!("Bearer {token}");
    let stream =
        RawSse::open(edge.addr(), &location_path(driver), &[("authorization", &bearer), ("origin", app)]).await;
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.header("access-control-allow-origin").as_deref(), Some(app), "on the SSE stream");
    let exposed = stream.header("access-control-expose-headers").unwrap_or_default().to_lowercase();
    assert!(exposed.contains("retry-after") && exposed.contains("etag"), "exposed on the stream: {exposed:?}");
    assert!(stream.header("vary").unwrap_or_default().to_lowercase().contains("origin"), "Vary: Origin on the stream");

    // A passthrough answer (the origin's own 404 for a driver it knows nothing of) carries them too.
    let polled = http::get(&edge.url(&polling_path(driver)), Auth::Bearer(&token), &[("origin", app)]).await;
    assert_eq!(polled.status().as_u16(), 404, "the origin's answer passed through");
    assert_eq!(http::header(&polled, "access-control-allow-origin").as_deref(), Some(app), "on a passthrough");
    let exposed = http::header(&polled, "access-control-expose-headers").unwrap_or_default().to_lowercase();
    assert!(exposed.contains("etag"), "ETag readable by the app's script: {exposed:?}");
    // And so does the edge's own refusal, so that the app can read why.
    let refused = http::get(&edge.url(&location_path(driver)), Auth::None, &[("origin", app)]).await;
    assert_eq!(refused.status().as_u16(), 401);
    assert_eq!(http::header(&refused, "access-control-allow-origin").as_deref(), Some(app), "on a 401");
    let evil =
        http::get(&edge.url(&polling_path(driver)), Auth::Bearer(&token), &[("origin", "https://evil.example")]).await;
    assert_eq!(http::header(&evil, "access-control-allow-origin"), None, "no grant for an origin not listed");
}
