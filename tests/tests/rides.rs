//! Rides on the origin: a rider requests a ride on any instance, follows its status on any
//! other, and cancels it on a third. The status stream keeps everything the other streams promise
//! (current value on connect, `Last-Event-ID`, ids that only grow). Only the ride's creator, or
//! a token scoped to the ride, may follow or cancel it; a token is exactly as wide as its claims
//! say (a ride's token opens that ride only and requests none, a tracking token opens no ride).
//! A rider has one open ride at a time: another request while one is `searching` or under way
//! is 409, naming it.
//!
//! Contract: PROTOCOL.md, "Rider HTTP and SSE" (`POST /api/rides`, `DELETE /api/rides/{rideId}`,
//! `GET /api/sse/rides/{rideId}`), "Tokens", "Errors", "Precise points / Who is who, Order of
//! checks, Numbers" and the v1.1 "Token scopes".

use std::time::Duration;

use ridecast_protocol::{Claims, Id, Role, TokenKeys};
use ridecast_tests::chat::AssignedRide;
use ridecast_tests::http::{Auth, delete, expect_error, get, header, post_json};
use ridecast_tests::rider::location_path;
use ridecast_tests::tokens::{
    GARBAGE_TOKEN, TEST_SECRET, driver_token, edge_token, expired_rider_token, ops_token, ride_token,
    rider_token_without_drv,
};
use ridecast_tests::wait::{now_ms, now_secs, poll_until};
use ridecast_tests::{
    ChatSocket, Cluster, EXPECT, Mode, Origin, QUIET, RawSse, RedisServer, RiderStream, in_both_modes,
    on_a_redis_cluster_too,
};
use serde::Deserialize;

/// A body the contract accepts.
const BODY: &str = r#"{"pickup":{"lat":37.77493,"lng":-122.41942},"dropoff":{"lat":37.80,"lng":-122.27}}"#;

/// The `--ride-token-ttl-secs` the clusters here run with, to see that the flag is used.
const RIDE_TOKEN_TTL_SECS: u64 = 900;

/// The answer to `POST /api/rides`. Unknown fields are refused: the contract lists them all.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Created {
    ride_id: String,
    status: String,
    token: String,
}

/// A ride's status as riders see it (SSE data and the `DELETE` answer).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SeenRide {
    ride_id: String,
    status: String,
    #[serde(default)]
    driver_id: Option<String>,
    #[serde(default)]
    tracking_token: Option<String>,
    ts: u64,
}

impl SeenRide {
    fn parse(json: &str, what: &str) -> Self {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{what}: not a contract ride status ({e}): {json}"))
    }
}

fn stream_path(ride: &str) -> String {
    format!("/api/sse/rides/{ride}")
}

fn ride_path(ride: &str) -> String {
    format!("/api/rides/{ride}")
}

/// These tests request more rides per rider than the default `--ride-create-burst` (3) allows
/// on one instance; that limit has its own test (`origin/tests/api.rs`).
async fn cluster(mode: Mode) -> Cluster {
    Cluster::start(mode, |origin| {
        origin.flag("--ride-token-ttl-secs", RIDE_TOKEN_TTL_SECS).flag("--ride-create-burst", 20)
    })
    .await
}

/// `POST /api/rides` with `body`.
async fn post_ride(origin: &Origin, auth: Auth<'_>, body: &str) -> reqwest::Response {
    post_json(&origin.url("/api/rides"), auth, body.to_owned()).await
}

/// `DELETE /api/rides/{ride}`.
async fn delete_ride(origin: &Origin, ride: &str, auth: Auth<'_>) -> reqwest::Response {
    delete(&origin.url(&ride_path(ride)), auth).await
}

/// Requests a ride with `token` and checks the 201, its shape and its ride-scoped token.
async fn request_ride(origin: &Origin, token: &str) -> Created {
    let response = post_ride(origin, Auth::Bearer(token), BODY).await;
    let status = response.status().as_u16();
    let content_type = header(&response, "content-type").unwrap_or_default();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 201, "POST /api/rides: expected 201, got {status}: {text}");
    assert!(content_type.starts_with("application/json"), "the 201 answer is JSON, got {content_type:?}");
    let created: Created =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("the 201 answer is not the contract's ({e}): {text}"));
    assert_eq!(created.status, "searching", "a new ride is searching: {text}");
    assert!(Id::parse(&created.ride_id).is_ok(), "the ride id follows the id rule: {:?}", created.ride_id);
    assert!(created.ride_id.len() >= 16, "a ride id is long enough not to be guessed: {:?}", created.ride_id);

    let creator = keys().verify(token, now_secs()).expect("the creator's token");
    let claims = claims_of(&created.token, "the ride token");
    assert_eq!(
        (&claims.sub, claims.role, &claims.drv, claims.ride.as_ref().map(Id::as_str)),
        (&creator.sub, Role::Rider, &None, Some(created.ride_id.as_str())),
        "the ride token is a rider token for the creator, scoped to the ride, tracking nobody"
    );
    let expected_exp = now_secs() + RIDE_TOKEN_TTL_SECS;
    assert!(
        claims.exp.abs_diff(expected_exp) <= 5,
        "exp {} is --ride-token-ttl-secs from now ({expected_exp})",
        claims.exp
    );
    created
}

fn keys() -> TokenKeys {
    TokenKeys::new(TEST_SECRET.as_bytes(), None).expect("keys")
}

fn claims_of(token: &str, what: &str) -> Claims {
    keys().verify(token, now_secs()).unwrap_or_else(|e| panic!("{what} does not verify with the origin's secret: {e}"))
}

/// Cancels `ride` and checks the 200 and the ride it answers with.
async fn cancel(origin: &Origin, ride: &str, token: &str) -> SeenRide {
    let response = delete_ride(origin, ride, Auth::Bearer(token)).await;
    let status = response.status().as_u16();
    let content_type = header(&response, "content-type").unwrap_or_default();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "DELETE {}: expected 200, got {status}: {text}", ride_path(ride));
    assert!(content_type.starts_with("application/json"), "the 200 answer is JSON, got {content_type:?}");
    let seen = SeenRide::parse(&text, "the DELETE answer");
    assert_eq!((seen.ride_id.as_str(), seen.status.as_str()), (ride, "cancelled"), "the DELETE answer: {text}");
    assert_eq!((&seen.driver_id, &seen.tracking_token), (&None, &None), "a cancelled ride names no driver: {text}");
    seen
}

async fn follow(origin: &Origin, ride: &str, auth: Auth<'_>, last_event_id: Option<&str>) -> RiderStream {
    RiderStream::open_with(origin, &stream_path(ride), auth, last_event_id).await
}

/// The next event, which must be a `ride` of `ride` whose `id` is its `ts`.
async fn next_ride(stream: &mut RiderStream, ride: &str, what: &str) -> SeenRide {
    let event = stream.next_event(EXPECT, what).await;
    assert_eq!(event.event, "ride", "event name of {what}");
    let seen = SeenRide::parse(&event.data, what);
    assert_eq!(event.id, seen.ts.to_string(), "a ride event's id is its ts ({what})");
    assert_eq!(seen.ride_id, ride, "{what}: the ride's own id");
    seen
}

/// The sum of counter `name` over `origins`.
async fn counted(origins: &[Origin], name: &str) -> u64 {
    let mut total = 0;
    for origin in origins {
        let text = get(&origin.url("/metrics"), Auth::None, &[]).await.text().await.unwrap_or_default();
        total += text
            .lines()
            .find_map(|line| line.strip_prefix(&format!("ridecast_{name} ")))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("/metrics has no ridecast_{name}:\n{text}"));
    }
    total
}

in_both_modes!(
    a_requested_ride_is_searching_at_once_on_its_stream_with_the_returned_token,
    a_cancel_on_another_instance_reaches_the_stream_and_a_second_cancel_changes_nothing,
    a_last_event_id_equal_to_the_current_status_suppresses_the_replay,
    ride_requests_are_checked_in_the_contracts_order,
    only_the_creator_or_a_token_scoped_to_the_ride_follows_or_cancels_it,
    a_ride_token_requests_no_ride_and_opens_none_of_the_riders_other_rides,
    a_tracking_token_opens_its_drivers_position_but_not_the_ride_stream_cancel_or_chat,
    a_second_ride_while_one_is_open_is_409_naming_it_and_requesting_works_again_once_it_ends,
);

on_a_redis_cluster_too!(
    a_cancel_on_another_instance_reaches_the_stream_and_a_second_cancel_changes_nothing,
    a_second_ride_while_one_is_open_is_409_naming_it_and_requesting_works_again_once_it_ends,
);

async fn a_requested_ride_is_searching_at_once_on_its_stream_with_the_returned_token(mode: Mode) {
    let cluster = cluster(mode).await;
    let before = now_ms();
    // In Redis mode the ride is requested on one instance and followed on another.
    let created = request_ride(cluster.driver_side(), &rider_token_without_drv("r1")).await;
    let ride = created.ride_id.as_str();

    let mut with_ride_token = follow(cluster.rider_side(), ride, Auth::Bearer(&created.token), None).await;
    let first = next_ride(&mut with_ride_token, ride, "the ride's status on connect").await;
    assert_eq!((first.status.as_str(), &first.driver_id, &first.tracking_token), ("searching", &None, &None));
    assert!(first.ts >= before && first.ts <= now_ms(), "ts is the creation's epoch ms, got {}", first.ts);
    with_ride_token.expect_quiet(QUIET, "nothing but the current status is sent").await;

    // The creator's own token, without a `ride` claim, in the query as EventSource sends it.
    let creator = rider_token_without_drv("r1");
    let mut with_creator_token = follow(cluster.rider_side(), ride, Auth::Query(&creator), None).await;
    assert_eq!(next_ride(&mut with_creator_token, ride, "the status for the creator").await, first);

    // Byte for byte: the SSE headers, `retry:` first, then `event: ride`, `id: <ts>`.
    let auth = format!("Bearer {}", created.token);
    let mut raw = RawSse::open(cluster.rider_side().addr(), &stream_path(ride), &[("Authorization", &auth)]).await;
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(raw.header("cache-control").as_deref(), Some("no-cache, no-transform"));
    assert_eq!(raw.header("x-accel-buffering").as_deref(), Some("no"));
    let frame = raw.next_frame(EXPECT, "the first frame").await;
    assert!(frame.retry().is_some(), "the first frame carries retry:, got {frame:?}");
    let event = if frame.is_event() { frame } else { raw.next_event(EXPECT, "the current status").await };
    assert_eq!(event.event(), Some("ride"), "event name in {event:?}");
    assert_eq!(event.id(), Some(first.ts.to_string().as_str()));
    assert_eq!(
        event.data().as_deref(),
        Some(format!(r#"{{"rideId":"{ride}","status":"searching","ts":{}}}"#, first.ts).as_str())
    );

    assert_eq!(counted(&cluster.origins, "rides_created_total").await, 1, "counted once, where it was requested");
}

async fn a_cancel_on_another_instance_reaches_the_stream_and_a_second_cancel_changes_nothing(mode: Mode) {
    let cluster = cluster(mode).await;
    let created = request_ride(cluster.driver_side(), &rider_token_without_drv("r1")).await;
    let ride = created.ride_id.as_str();
    let mut stream = follow(cluster.rider_side(), ride, Auth::Bearer(&created.token), None).await;
    let searching = next_ride(&mut stream, ride, "searching").await;

    // A third instance in Redis mode: the change crosses the bus to the stream's instance.
    let third = cluster.origins.last().expect("an origin");
    let cancelled = cancel(third, ride, &created.token).await;
    assert!(cancelled.ts > searching.ts, "ids only grow: {} after {}", cancelled.ts, searching.ts);
    assert_eq!(
        next_ride(&mut stream, ride, "the cancellation").await,
        cancelled,
        "the stream shows what DELETE answered"
    );

    // The creator's own token cancels too; the ride already is cancelled: the same answer, nothing pushed.
    let again = cancel(cluster.driver_side(), ride, &rider_token_without_drv("r1")).await;
    assert_eq!(again, cancelled, "a second DELETE answers the ride as it is");
    stream.expect_quiet(QUIET, "a second cancel publishes nothing").await;

    let mut late = follow(cluster.rider_side(), ride, Auth::Bearer(&created.token), None).await;
    assert_eq!(next_ride(&mut late, ride, "the stored status for a late follower").await, cancelled);
    assert_eq!(counted(&cluster.origins, "rides_cancelled_total").await, 1, "one cancellation, counted once");
}

async fn a_last_event_id_equal_to_the_current_status_suppresses_the_replay(mode: Mode) {
    let cluster = cluster(mode).await;
    let created = request_ride(cluster.driver_side(), &rider_token_without_drv("r1")).await;
    let ride = created.ride_id.as_str();
    let auth = Auth::Bearer(&created.token);
    let mut first = follow(cluster.rider_side(), ride, auth, None).await;
    let searching = next_ride(&mut first, ride, "searching").await;

    let current = searching.ts.to_string();
    let mut resumed = follow(cluster.rider_side(), ride, auth, Some(&current)).await;
    resumed.expect_quiet(QUIET, "Last-Event-ID equal to the current status's ts: no replay").await;
    let older = (searching.ts - 1).to_string();
    let mut behind = follow(cluster.rider_side(), ride, auth, Some(&older)).await;
    assert_eq!(next_ride(&mut behind, ride, "the current status for an older Last-Event-ID").await, searching);

    let cancelled = cancel(cluster.driver_side(), ride, &created.token).await;
    assert_eq!(next_ride(&mut resumed, ride, "the cancellation after resuming").await, cancelled);
    assert_eq!(next_ride(&mut behind, ride, "the cancellation").await, cancelled);
}

async fn ride_requests_are_checked_in_the_contracts_order(mode: Mode) {
    let cluster = cluster(mode).await;
    let origin = cluster.rider_side();
    let expired = expired_rider_token("r1", "d1");
    for (what, auth) in [
        ("no token", Auth::None),
        ("a garbage token", Auth::Bearer(GARBAGE_TOKEN)),
        ("an expired ?token=", Auth::Query(&expired)),
    ] {
        expect_error(post_ride(origin, auth, BODY).await, 401, &format!("POST /api/rides with {what}")).await;
    }
    expect_error(post_ride(origin, Auth::None, "{").await, 401, "no token and a bad body: 401 comes first").await;

    let rider = rider_token_without_drv("r1");
    let cases: [(&str, &str, &str); 12] = [
        ("a truncated JSON body", "{", "invalid_message"),
        ("an empty body", "", "invalid_message"),
        ("a body that is not an object", "[1,2]", "invalid_message"),
        ("no dropoff", r#"{"pickup":{"lat":1,"lng":2}}"#, "invalid_message"),
        ("a pickup without lng", r#"{"pickup":{"lat":1},"dropoff":{"lat":1,"lng":2}}"#, "invalid_message"),
        ("a lat that is a string", r#"{"pickup":{"lat":"1","lng":2},"dropoff":{"lat":1,"lng":2}}"#, "invalid_message"),
        ("a pickup that is an array", r#"{"pickup":[1,2],"dropoff":{"lat":1,"lng":2}}"#, "invalid_message"),
        (
            "a number too large for an f64",
            r#"{"pickup":{"lat":1e999,"lng":2},"dropoff":{"lat":1,"lng":2}}"#,
            "invalid_message",
        ),
        (
            "a pickup lat above 90",
            r#"{"pickup":{"lat":90.01,"lng":2},"dropoff":{"lat":1,"lng":2}}"#,
            "invalid_location",
        ),
        ("a pickup lat below -90", r#"{"pickup":{"lat":-91,"lng":2},"dropoff":{"lat":1,"lng":2}}"#, "invalid_location"),
        (
            "a dropoff lng above 180",
            r#"{"pickup":{"lat":1,"lng":2},"dropoff":{"lat":1,"lng":180.5}}"#,
            "invalid_location",
        ),
        (
            "a dropoff lng below -180",
            r#"{"pickup":{"lat":1,"lng":2},"dropoff":{"lat":1,"lng":-181}}"#,
            "invalid_location",
        ),
    ];
    for (what, body, code) in cases {
        let answer = expect_error(post_ride(origin, Auth::Bearer(&rider), body).await, 400, what).await;
        assert_eq!(answer.code, code, "{what}: error code ({})", answer.message);
    }
    let big =
        format!(r#"{{"pickup":{{"lat":1,"lng":2}},"dropoff":{{"lat":1,"lng":2}},"note":"{}"}}"#, "x".repeat(20 * 1024));
    let answer = expect_error(post_ride(origin, Auth::Bearer(&rider), &big).await, 413, "a 20 KiB body").await;
    assert_eq!(answer.code, "too_large");

    let driver = driver_token("d1");
    let bad_body = expect_error(post_ride(origin, Auth::Bearer(&driver), "{").await, 400, "driver, bad JSON").await;
    assert_eq!(bad_body.code, "invalid_message", "a bad body is 400 before the role's 403");
    let (ops, edge) = (ops_token("ops-1"), edge_token("edge-1"));
    for (what, token) in [("a driver token", &driver), ("an ops token", &ops), ("an edge token", &edge)] {
        let answer = expect_error(post_ride(origin, Auth::Bearer(token), BODY).await, 403, what).await;
        assert_eq!(answer.code, "forbidden", "POST /api/rides with {what}");
    }
    assert_eq!(counted(&cluster.origins, "rides_created_total").await, 0, "no refused request created a ride");

    // The bounds themselves are on the map, and fields the contract does not name are ignored.
    let edges = r#"{"pickup":{"lat":90,"lng":-180,"label":"pole"},"dropoff":{"lat":-90,"lng":180},"seats":2}"#;
    let response = post_ride(origin, Auth::Bearer(&rider), edges).await;
    assert_eq!(response.status().as_u16(), 201, "points on the bounds, extra fields: {:?}", response.text().await);
}

async fn only_the_creator_or_a_token_scoped_to_the_ride_follows_or_cancels_it(mode: Mode) {
    let cluster = cluster(mode).await;
    let origin = cluster.rider_side();
    let created = request_ride(cluster.driver_side(), &rider_token_without_drv("r1")).await;
    let ride = created.ride_id.as_str();
    let others_ride = request_ride(cluster.driver_side(), &rider_token_without_drv("r2")).await;
    let stream_url = origin.url(&stream_path(ride));

    for (what, auth) in [("no token", Auth::None), ("a garbage token", Auth::Bearer(GARBAGE_TOKEN))] {
        expect_error(get(&stream_url, auth, &[]).await, 401, &format!("the ride stream with {what}")).await;
        expect_error(delete_ride(origin, ride, auth).await, 401, &format!("DELETE with {what}")).await;
    }
    expect_error(delete_ride(origin, "a.b", Auth::None).await, 401, "no token and a bad ride id: 401 first").await;

    let too_long = "r".repeat(65);
    for bad in ["a.b", too_long.as_str()] {
        let stream = get(&origin.url(&stream_path(bad)), Auth::Bearer(&created.token), &[]).await;
        let answer = expect_error(stream, 400, &format!("the stream of ride {bad:?}")).await;
        assert_eq!(answer.code, "invalid_id");
        let answer =
            expect_error(delete_ride(origin, bad, Auth::Bearer(&created.token)).await, 400, "DELETE a bad id").await;
        assert_eq!(answer.code, "invalid_id");
    }
    let driver_bad_id = delete_ride(origin, "a.b", Auth::Bearer(&driver_token("d1"))).await;
    expect_error(driver_bad_id, 400, "a driver token and a bad ride id: 400 before 403").await;

    let another_rider = rider_token_without_drv("r2");
    let (driver, ops, edge) = (driver_token("r1"), ops_token("r1"), edge_token("r1"));
    for (what, token) in [
        ("another rider's token", &another_rider),
        ("a token scoped to another ride", &others_ride.token),
        ("a token for another ride, minted elsewhere", &ride_token("r3", &others_ride.ride_id)),
        ("a driver token", &driver),
        ("an ops token", &ops),
        ("an edge token", &edge),
    ] {
        let answer =
            expect_error(get(&stream_url, Auth::Bearer(token), &[]).await, 403, &format!("stream, {what}")).await;
        assert_eq!(answer.code, "forbidden", "the ride stream with {what}");
        let answer =
            expect_error(delete_ride(origin, ride, Auth::Bearer(token)).await, 403, &format!("DELETE, {what}")).await;
        assert_eq!(answer.code, "forbidden", "DELETE with {what}");
    }

    let unknown = "0123456789abcdef0123456789abcdef";
    for (what, token) in
        [("the creator's token", rider_token_without_drv("r1")), ("a token scoped to it", ride_token("r1", unknown))]
    {
        let stream = get(&origin.url(&stream_path(unknown)), Auth::Bearer(&token), &[]).await;
        let answer = expect_error(stream, 404, &format!("the stream of an unknown ride, {what}")).await;
        assert_eq!(answer.code, "not_found");
        let answer =
            expect_error(delete_ride(origin, unknown, Auth::Bearer(&token)).await, 404, "DELETE unknown").await;
        assert_eq!(answer.code, "not_found");
    }

    // None of that changed the ride; a token whose `ride` is the ride may follow it whatever its `sub`.
    let scoped_elsewhere = ride_token("r-shared", ride);
    let mut stream = follow(origin, ride, Auth::Bearer(&scoped_elsewhere), None).await;
    let searching = next_ride(&mut stream, ride, "the status, still searching").await;
    assert_eq!(searching.status, "searching");
    let cancelled = cancel(origin, ride, &scoped_elsewhere).await;
    assert_eq!(next_ride(&mut stream, ride, "the cancellation by a scoped token").await, cancelled);
    let mut others = follow(origin, &others_ride.ride_id, Auth::Bearer(&others_ride.token), None).await;
    let other_status = next_ride(&mut others, &others_ride.ride_id, "the other ride's status").await;
    assert_eq!(other_status.status, "searching", "the other ride is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_rides_are_503_and_their_streams_ask_to_come_back() {
    const NOTICE: Duration = Duration::from_secs(15);
    let mut redis = RedisServer::start().await;
    let origin = Origin::builder().redis(&redis).flag("--ride-token-ttl-secs", RIDE_TOKEN_TTL_SECS).start().await;
    let created = request_ride(&origin, &rider_token_without_drv("r1")).await;
    let ride = created.ride_id.as_str();

    redis.kill9().await;
    poll_until(NOTICE, "/readyz to answer 503 while Redis is down", || async {
        (origin.readyz().await == Some(503)).then_some(())
    })
    .await;
    let creator = rider_token_without_drv("r1");
    let answer = expect_error(post_ride(&origin, Auth::Bearer(&creator), BODY).await, 503, "POST, no store").await;
    assert_eq!(answer.code, "unavailable");
    let answer =
        expect_error(delete_ride(&origin, ride, Auth::Bearer(&created.token)).await, 503, "DELETE, no store").await;
    assert_eq!(answer.code, "unavailable");

    // EventSource gives up on a 503: the stream is a 200 that asks the browser to come back.
    let auth = format!("Bearer {}", created.token);
    let mut raw = RawSse::open(origin.addr(), &stream_path(ride), &[("Authorization", &auth)]).await;
    assert_eq!(raw.status(), 200, "an SSE request that cannot be served now is still a 200");
    assert_eq!(raw.header("content-type").as_deref(), Some("text/event-stream"));
    let (frames, _clean) = raw.expect_end(EXPECT, "the refusal stream to end at once").await;
    assert!(frames.iter().any(|frame| frame.retry().is_some()), "it carries retry:, got {frames:?}");
    assert!(frames.iter().all(|frame| !frame.is_event()), "and no event, got {frames:?}");

    redis.restart().await;
    poll_until(NOTICE, "/readyz to answer 200 once Redis is back", || async {
        (origin.readyz().await == Some(200)).then_some(())
    })
    .await;
    // The restarted Redis is empty: the ride is gone, and a new one can be requested.
    let answer = expect_error(delete_ride(&origin, ride, Auth::Bearer(&created.token)).await, 404, "a lost ride").await;
    assert_eq!(answer.code, "not_found");
    request_ride(&origin, &rider_token_without_drv("r1")).await;
}

/// Asserts `auth` is refused with 403 `forbidden` by the stream, `DELETE` and chat of `ride`.
async fn refused_everywhere(origin: &Origin, ride: &str, token: &str, what: &str) {
    let stream = get(&origin.url(&stream_path(ride)), Auth::Bearer(token), &[]).await;
    assert_eq!(expect_error(stream, 403, &format!("the ride stream, {what}")).await.code, "forbidden");
    let cancel = delete_ride(origin, ride, Auth::Bearer(token)).await;
    assert_eq!(expect_error(cancel, 403, &format!("DELETE, {what}")).await.code, "forbidden");
    match ChatSocket::try_connect(origin, ride, Auth::Bearer(token), None).await {
        Ok(_) => panic!("the ride's chat opened, {what}"),
        Err(refusal) => assert_eq!(refusal.status, 403, "the ride's chat, {what}: {}", refusal.body),
    }
}

async fn a_ride_token_requests_no_ride_and_opens_none_of_the_riders_other_rides(mode: Mode) {
    let cluster = cluster(mode).await;
    let origin = cluster.rider_side();
    let creator = rider_token_without_drv("r1");
    let first = request_ride(cluster.driver_side(), &creator).await;
    // A rider has one open ride at a time: the first ends before the second is requested.
    cancel(cluster.driver_side(), &first.ride_id, &first.token).await;
    let second = request_ride(cluster.driver_side(), &creator).await;

    let answer = expect_error(post_ride(origin, Auth::Bearer(&first.token), BODY).await, 403, "a ride token").await;
    assert_eq!(answer.code, "forbidden", "a ride-scoped token requests no ride: {}", answer.message);
    refused_everywhere(origin, &second.ride_id, &first.token, "with the token of the rider's other ride").await;

    // Its own ride it still opens; the creator's unscoped token opens both.
    let mut own = follow(origin, &first.ride_id, Auth::Bearer(&first.token), None).await;
    assert_eq!(next_ride(&mut own, &first.ride_id, "its own ride").await.status, "cancelled");
    let mut by_creator = follow(origin, &second.ride_id, Auth::Bearer(&creator), None).await;
    assert_eq!(next_ride(&mut by_creator, &second.ride_id, "the creator's").await.status, "searching");
    assert_eq!(counted(&cluster.origins, "rides_created_total").await, 2, "the refused request created nothing");
}

async fn a_tracking_token_opens_its_drivers_position_but_not_the_ride_stream_cancel_or_chat(mode: Mode) {
    let cluster = cluster(mode).await;
    let origin = cluster.rider_side();
    let ride = AssignedRide::start(origin, cluster.driver_side(), "r-tracked", "d-tracked").await;
    let tracking = ride.tracking_token.as_str();

    refused_everywhere(origin, &ride.ride_id, tracking, "with the ride's tracking token").await;
    let answer = expect_error(post_ride(origin, Auth::Bearer(tracking), BODY).await, 403, "a tracking token").await;
    assert_eq!(answer.code, "forbidden", "a tracking token requests no ride: {}", answer.message);

    // What it is for: the driver's position.
    let mut position = RiderStream::open(origin, &ride.driver, tracking).await;
    position.next_location("the driver's position through the tracking token").await;
    let other = RiderStream::try_open(origin, &location_path("d-someone-else"), Auth::Bearer(tracking), None).await;
    assert_eq!(other.err().map(|(status, _)| status), Some(403), "another driver's position");
    // And the ride is untouched by the refusals.
    let mut status = follow(origin, &ride.ride_id, Auth::Bearer(&ride.ride_token), None).await;
    assert_eq!(next_ride(&mut status, &ride.ride_id, "the ride, still assigned").await.status, "driver_assigned");
}

/// Asserts that `token`'s rider may not request a ride on `origin` now: 409 `conflict`, the
/// message naming `open`.
async fn expect_open_ride(origin: &Origin, token: &str, open: &str, what: &str) {
    let answer = expect_error(post_ride(origin, Auth::Bearer(token), BODY).await, 409, what).await;
    assert_eq!(answer.code, "conflict", "{what}: {}", answer.message);
    assert!(answer.message.contains(open), "{what}: the message names the open ride {open}: {}", answer.message);
}

async fn a_second_ride_while_one_is_open_is_409_naming_it_and_requesting_works_again_once_it_ends(mode: Mode) {
    let cluster = cluster(mode).await;
    let third = cluster.origins.last().expect("an origin");
    let creator = rider_token_without_drv("r1");
    let first = request_ride(cluster.driver_side(), &creator).await;
    // The same rider, on every instance, while the first is searching.
    for origin in &cluster.origins {
        expect_open_ride(origin, &creator, &first.ride_id, "a second request while the first searches").await;
    }
    let other_rider = request_ride(cluster.rider_side(), &rider_token_without_drv("r2")).await;
    assert_ne!(other_rider.ride_id, first.ride_id, "another rider is not held back");
    cancel(third, &first.ride_id, &first.token).await;
    let second = request_ride(cluster.rider_side(), &creator).await;
    assert_ne!(second.ride_id, first.ride_id, "a new ride once the first was cancelled");
    cancel(cluster.rider_side(), &second.ride_id, &second.token).await;

    // Under way counts as open too; `completed` ends it.
    let mut ride = AssignedRide::start(cluster.rider_side(), cluster.driver_side(), "r-busy", "d-busy").await;
    let busy = rider_token_without_drv("r-busy");
    expect_open_ride(third, &busy, &ride.ride_id, "a request while a driver is assigned").await;
    let ride_id = ride.ride_id.clone();
    assert_eq!(ride.driver_socket.report_step(&ride_id, "in_progress").await, "ok", "the trip starts");
    expect_open_ride(third, &busy, &ride_id, "a request during the trip").await;
    assert_eq!(ride.driver_socket.report_step(&ride_id, "completed").await, "ok", "the drop-off");
    request_ride(third, &busy).await;
    assert_eq!(counted(&cluster.origins, "rides_created_total").await, 5, "no refused request created a ride");
}
