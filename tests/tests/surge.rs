//! Surge zones: an operator sets a zone's multiplier on any instance; it is stored as the zone's
//! current value and pushed to every rider stream and edge link for the zone, on every instance,
//! with everything the location stream promises (current value on connect, `Last-Event-ID`,
//! ids that only grow). Only `ops` tokens set surge, only `rider` tokens follow it.
//!
//! Contract: PROTOCOL.md, "Surge (role `ops`)", "Rider HTTP and SSE" (`/api/sse/surge/{zoneId}`),
//! "The edge worker" (edge link), "Errors" and "Precise points / Order of checks, Numbers".

use std::process::Command;
use std::time::Duration;

use ridecast_protocol::{Role, TokenKeys};
use ridecast_tests::http::{Auth, expect_error, get, post_json};
use ridecast_tests::link::{Link, next_text, open_link};
use ridecast_tests::origin::origin_binary;
use ridecast_tests::raw_sse::Next;
use ridecast_tests::tokens::{
    GARBAGE_TOKEN, TEST_SECRET, driver_token, edge_token, expired_rider_token, ops_token, rider_token,
    rider_token_without_drv,
};
use ridecast_tests::wait::{now_ms, now_secs, poll_until};
use ridecast_tests::{
    Cluster, EXPECT, Mode, Origin, QUIET, RawSse, RedisServer, RiderStream, in_both_modes, on_a_redis_cluster_too,
};
use serde::Deserialize;

/// A surge value as the contract spells it. Unknown fields are refused: the contract lists them all.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SeenSurge {
    zone_id: String,
    multiplier: f64,
    ts: u64,
}

impl SeenSurge {
    fn parse(json: &str, what: &str) -> Self {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{what}: not a contract surge value ({e}): {json}"))
    }
}

/// The rider's surge stream of `zone`.
fn stream_path(zone: &str) -> String {
    format!("/api/sse/surge/{zone}")
}

/// The operator's endpoint for `zone`.
fn set_path(zone: &str) -> String {
    format!("/api/surge/{zone}")
}

/// `POST /api/surge/{zone}` with `body` as it is.
async fn post_surge(origin: &Origin, zone: &str, auth: Auth<'_>, body: impl Into<reqwest::Body>) -> reqwest::Response {
    post_json(&origin.url(&set_path(zone)), auth, body).await
}

/// Sets `zone`'s surge with an ops token and checks the 202 and the stored value it answers with.
async fn set_surge(origin: &Origin, zone: &str, multiplier: f64) -> SeenSurge {
    let body = format!(r#"{{"multiplier":{multiplier:?}}}"#);
    let response = post_surge(origin, zone, Auth::Bearer(&ops_token("ops-1")), body.clone()).await;
    let status = response.status().as_u16();
    let content_type = ridecast_tests::http::header(&response, "content-type").unwrap_or_default();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 202, "POST {} {body}: expected 202, got {status}: {text}", set_path(zone));
    assert!(content_type.starts_with("application/json"), "the 202 answer is JSON, got {content_type:?}");
    let stored = SeenSurge::parse(&text, "the 202 answer");
    assert_eq!((stored.zone_id.as_str(), stored.multiplier), (zone, multiplier), "the stored value: {text}");
    assert!(stored.ts.abs_diff(now_ms()) < 60_000, "ts is the server's epoch ms, got {}", stored.ts);
    stored
}

/// Opens `zone`'s surge stream as a rider, sending `Last-Event-ID` when given.
async fn follow(origin: &Origin, zone: &str, token: &str, last_event_id: Option<&str>) -> RiderStream {
    RiderStream::open_with(origin, &stream_path(zone), Auth::Bearer(token), last_event_id).await
}

/// The next event, which must be a `surge` whose `id` is its `ts`.
async fn next_surge(rider: &mut RiderStream, what: &str) -> SeenSurge {
    let event = rider.next_event(EXPECT, what).await;
    assert_eq!(event.event, "surge", "event name of {what}");
    let surge = SeenSurge::parse(&event.data, what);
    assert_eq!(event.id, surge.ts.to_string(), "a surge event's id is its ts ({what})");
    surge
}

async fn next_on_link(link: &mut Link, what: &str) -> SeenSurge {
    SeenSurge::parse(&next_text(link, what).await, what)
}

in_both_modes!(
    a_surge_set_on_one_instance_reaches_riders_and_edge_links_on_every_instance,
    the_current_surge_is_sent_at_once_on_connect,
    a_last_event_id_equal_to_the_current_surge_suppresses_the_replay,
    surge_ids_strictly_grow_even_for_posts_in_the_same_millisecond,
    malformed_zone_ids_and_bodies_are_400_and_change_nothing,
    only_ops_tokens_set_surge_and_only_rider_tokens_follow_it,
);

on_a_redis_cluster_too!(
    a_surge_set_on_one_instance_reaches_riders_and_edge_links_on_every_instance,
    surge_ids_strictly_grow_even_for_posts_in_the_same_millisecond,
);

async fn a_surge_set_on_one_instance_reaches_riders_and_edge_links_on_every_instance(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let zone = "z-downtown";
    // Any rider token follows any zone: with a `drv` or without.
    let mut riders = Vec::new();
    for (i, origin) in cluster.origins.iter().enumerate() {
        riders.push(follow(origin, zone, &rider_token(&format!("r{i}"), "d-any"), None).await);
        riders.push(follow(origin, zone, &rider_token_without_drv(&format!("r{i}-plain")), None).await);
    }
    let mut links = Vec::new();
    for origin in cluster.rider_sides() {
        let url = origin.ws_url(&format!("/edge/v1/surge/{zone}"));
        links.push(open_link(&url, &edge_token("edge-1")).await.expect("an edge token opens the surge link"));
    }

    // In Redis mode the set happens on the driver-side origin, so every other delivery crosses the bus.
    let first = set_surge(cluster.driver_side(), zone, 1.8).await;
    for (i, rider) in riders.iter_mut().enumerate() {
        assert_eq!(next_surge(rider, &format!("the first surge, rider {i}")).await, first);
    }
    for link in &mut links {
        assert_eq!(next_on_link(link, "the first surge on the edge link").await, first);
    }

    let last_origin = cluster.origins.last().expect("an origin");
    let second = set_surge(last_origin, zone, 3.5).await;
    assert!(second.ts > first.ts, "ids only grow: {} after {}", second.ts, first.ts);
    for (i, rider) in riders.iter_mut().enumerate() {
        assert_eq!(next_surge(rider, &format!("the second surge, rider {i}")).await, second);
    }
    for link in &mut links {
        assert_eq!(next_on_link(link, "the second surge on the edge link").await, second);
    }

    let mut counted = 0;
    for origin in &cluster.origins {
        counted += origin.metric("surge_updates_total").await;
    }
    assert_eq!(counted, 2, "each set is counted once, by the instance that took it");
}

async fn the_current_surge_is_sent_at_once_on_connect(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let zone = "z-current";
    set_surge(cluster.driver_side(), zone, 1.5).await;
    let current = set_surge(cluster.driver_side(), zone, 2.5).await;

    let mut rider = follow(cluster.rider_side(), zone, &rider_token_without_drv("r1"), None).await;
    assert_eq!(next_surge(&mut rider, "the current surge, sent at once on connect").await, current);
    // Proving an absence: the older value is never replayed.
    rider.expect_quiet(QUIET, "only the current surge is sent on connect").await;

    let auth = format!("Bearer {}", rider_token_without_drv("r2"));
    let mut raw = RawSse::open(cluster.rider_side().addr(), &stream_path(zone), &[("Authorization", &auth)]).await;
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.header("content-type").as_deref(), Some("text/event-stream"));
    let first = raw.next_frame(EXPECT, "the first frame").await;
    assert!(first.retry().is_some(), "the first frame carries retry:, got {first:?}");
    let event = if first.is_event() { first } else { raw.next_event(EXPECT, "the current surge").await };
    assert_eq!(event.event(), Some("surge"), "event name in {event:?}");
    assert_eq!(event.id(), Some(current.ts.to_string().as_str()), "the id is the surge's ts, in {event:?}");
    assert_eq!(SeenSurge::parse(&event.data().unwrap_or_default(), "the raw event"), current);

    let url = cluster.rider_side().ws_url(&format!("/edge/v1/surge/{zone}"));
    let mut link = open_link(&url, &edge_token("edge-1")).await.expect("an edge token opens the surge link");
    assert_eq!(next_on_link(&mut link, "the current surge on a new edge link").await, current);
}

async fn a_last_event_id_equal_to_the_current_surge_suppresses_the_replay(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let zone = "z-resume";
    let token = rider_token_without_drv("r1");
    let current = set_surge(cluster.driver_side(), zone, 1.7).await;

    let id = current.ts.to_string();
    let mut resumed = follow(cluster.rider_side(), zone, &token, Some(&id)).await;
    // Proving an absence: the rider already has the current value.
    resumed.expect_quiet(QUIET, "Last-Event-ID equal to the current surge's ts: no replay").await;

    let older = (current.ts - 1).to_string();
    let mut behind = follow(cluster.rider_side(), zone, &token, Some(&older)).await;
    assert_eq!(next_surge(&mut behind, "the current surge for an older Last-Event-ID").await, current);

    let next = set_surge(cluster.driver_side(), zone, 1.9).await;
    assert_eq!(next_surge(&mut resumed, "the next surge after resuming").await, next);
    assert_eq!(next_surge(&mut behind, "the next surge").await, next);
}

async fn surge_ids_strictly_grow_even_for_posts_in_the_same_millisecond(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let zone = "z-burst";
    let mut rider = follow(cluster.rider_side(), zone, &rider_token_without_drv("r1"), None).await;

    // Two quick posts, on two instances in Redis mode.
    let first = set_surge(cluster.driver_side(), zone, 1.1).await;
    let second = set_surge(cluster.origins.last().expect("an origin"), zone, 1.2).await;
    assert!(second.ts > first.ts, "the second post's id {} is after the first's {}", second.ts, first.ts);

    // A burst spread over every instance: several land in one millisecond, yet no two share an id.
    let sets = (0..12u32).map(|k| {
        let origin = &cluster.origins[k as usize % cluster.origins.len()];
        set_surge(origin, zone, f64::from(20 + k) / 10.0)
    });
    let mut burst = futures_util::future::join_all(sets).await;
    burst.sort_by_key(|surge| surge.ts);
    for pair in burst.windows(2) {
        assert!(pair[1].ts > pair[0].ts, "every set gets its own id: {:?} and {:?}", pair[0], pair[1]);
    }
    assert!(burst[0].ts > second.ts, "ids keep growing after earlier sets");
    let newest = burst.last().expect("a burst").clone();

    // Latest-only: the rider may skip values, but every id it sees is greater than the last.
    let mut last_id = 0;
    loop {
        let seen = next_surge(&mut rider, "surges, up to the newest of the burst").await;
        assert!(seen.ts > last_id, "ids only grow on a stream: {} after {last_id}", seen.ts);
        last_id = seen.ts;
        if seen.ts == newest.ts {
            assert_eq!(seen, newest, "the stream ends up on the burst's newest value");
            break;
        }
        assert!(seen.ts < newest.ts, "nothing newer than {newest:?} was set, got {seen:?}");
    }
    let mut late = follow(cluster.rider_side(), zone, &rider_token_without_drv("r2"), None).await;
    assert_eq!(next_surge(&mut late, "the stored value after the burst").await, newest);
}

async fn malformed_zone_ids_and_bodies_are_400_and_change_nothing(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let (zone, origin) = ("z-valid", cluster.rider_side());
    let ops = ops_token("ops-1");
    let current = set_surge(cluster.driver_side(), zone, 2.0).await;

    let too_long = "z".repeat(65);
    let cases: [(&str, &str, &str, &str); 11] = [
        ("a multiplier just below 1.0", zone, r#"{"multiplier":0.99}"#, "invalid_surge"),
        ("a multiplier just above 10.0", zone, r#"{"multiplier":10.01}"#, "invalid_surge"),
        ("a negative multiplier", zone, r#"{"multiplier":-2}"#, "invalid_surge"),
        ("a multiplier that is a string", zone, r#"{"multiplier":"x"}"#, "invalid_message"),
        ("a multiplier that is a numeric string", zone, r#"{"multiplier":"1.8"}"#, "invalid_message"),
        ("no multiplier", zone, r#"{}"#, "invalid_message"),
        ("a truncated JSON body", zone, r#"{"multiplier":"#, "invalid_message"),
        ("an empty body", zone, "", "invalid_message"),
        ("a body that is not an object", zone, "[1.8]", "invalid_message"),
        ("a zone id with a dot", "a.b", r#"{"multiplier":1.8}"#, "invalid_id"),
        ("a zone id of 65 characters", &too_long, r#"{"multiplier":1.8}"#, "invalid_id"),
    ];
    for (what, zone_id, body, code) in cases {
        let response = post_surge(origin, zone_id, Auth::Bearer(&ops), body.to_owned()).await;
        let answer = expect_error(response, 400, what).await;
        assert_eq!(answer.code, code, "{what}: error code ({})", answer.message);
    }
    let big = format!(r#"{{"multiplier":1.8,"padding":"{}"}}"#, "x".repeat(20 * 1024));
    let answer = expect_error(post_surge(origin, zone, Auth::Bearer(&ops), big).await, 413, "a 20 KiB body").await;
    assert_eq!(answer.code, "too_large");

    let mut rider = follow(origin, zone, &rider_token_without_drv("r1"), None).await;
    assert_eq!(next_surge(&mut rider, "the surge set before the refused posts").await, current);

    // The bounds themselves are allowed.
    let lowest = set_surge(origin, zone, 1.0).await;
    assert_eq!(next_surge(&mut rider, "a multiplier of exactly 1.0").await, lowest);
    let highest = set_surge(origin, zone, 10.0).await;
    assert_eq!(next_surge(&mut rider, "a multiplier of exactly 10.0").await, highest);
}

async fn only_ops_tokens_set_surge_and_only_rider_tokens_follow_it(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let (zone, origin) = ("z-auth", cluster.rider_side());
    let body = r#"{"multiplier":1.8}"#;
    let expired = expired_rider_token("r1", "d1");

    for (what, auth) in [
        ("no token", Auth::None),
        ("a garbage token", Auth::Bearer(GARBAGE_TOKEN)),
        ("an expired ?token=", Auth::Query(&expired)),
    ] {
        expect_error(post_surge(origin, zone, auth, body).await, 401, &format!("POST surge with {what}")).await;
        let stream = get(&origin.url(&stream_path(zone)), auth, &[]).await;
        expect_error(stream, 401, &format!("surge stream with {what}")).await;
    }
    let no_token_bad_id = post_surge(origin, "a.b", Auth::None, "{").await;
    expect_error(no_token_bad_id, 401, "no token, a bad zone id and a bad body: 401 comes first").await;

    let (rider, driver, edge) = (rider_token("r1", "d1"), driver_token("d1"), edge_token("edge-1"));
    let bad_body =
        expect_error(post_surge(origin, zone, Auth::Bearer(&rider), "{").await, 400, "rider, bad JSON").await;
    assert_eq!(bad_body.code, "invalid_message", "a bad body is 400 before the role's 403");
    let bad_id = expect_error(post_surge(origin, "a.b", Auth::Bearer(&rider), body).await, 400, "rider, bad id").await;
    assert_eq!(bad_id.code, "invalid_id", "a bad zone id is 400 before the role's 403");

    for (what, token) in [("a rider token", &rider), ("a driver token", &driver), ("an edge token", &edge)] {
        let answer = expect_error(post_surge(origin, zone, Auth::Bearer(token), body).await, 403, what).await;
        assert_eq!(answer.code, "forbidden", "POST surge with {what}");
    }
    let ops = ops_token("ops-1");
    for (what, token) in [("a driver token", &driver), ("an ops token", &ops), ("an edge token", &edge)] {
        let stream = get(&origin.url(&stream_path(zone)), Auth::Bearer(token), &[]).await;
        let answer = expect_error(stream, 403, &format!("surge stream with {what}")).await;
        assert_eq!(answer.code, "forbidden", "surge stream with {what}");
    }
    let bad_stream_id = get(&origin.url(&stream_path("a.b")), Auth::Bearer(&rider), &[]).await;
    expect_error(bad_stream_id, 400, "a rider token and a bad zone id on the stream").await;

    let link = |path: &str| origin.ws_url(path);
    let surge_link = link(&format!("/edge/v1/surge/{zone}"));
    assert_eq!(open_link(&surge_link, GARBAGE_TOKEN).await.err(), Some(401), "a garbage token on the surge link");
    assert_eq!(open_link(&surge_link, &rider).await.err(), Some(403), "a rider token on the surge link");
    assert_eq!(open_link(&surge_link, &ops).await.err(), Some(403), "an ops token on the surge link");
    assert_eq!(open_link(&link("/edge/v1/surge/a.b"), &edge).await.err(), Some(400), "a bad zone id on the link");

    // None of the refused posts stored anything.
    let mut follower = follow(origin, zone, &rider, None).await;
    follower.expect_quiet(QUIET, "refused posts set no surge").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_surge_stream_keeps_the_sse_contract_byte_for_byte() {
    const RETRY_MS: u64 = 1500;
    let origin = Origin::builder().sse_retry_ms(RETRY_MS).heartbeat_secs(1).start().await;
    let zone = "z-bytes";
    let auth = format!("Bearer {}", rider_token_without_drv("r1"));
    let mut raw = RawSse::open(origin.addr(), &stream_path(zone), &[("Authorization", &auth)]).await;

    assert_eq!(raw.status(), 200);
    assert_eq!(raw.header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(raw.header("cache-control").as_deref(), Some("no-cache, no-transform"));
    assert_eq!(raw.header("x-accel-buffering").as_deref(), Some("no"));
    let first = raw.next_frame(EXPECT, "the first frame").await;
    assert_eq!(first.retry(), Some(RETRY_MS), "the first frame carries retry: <--sse-retry-ms>, got {first:?}");
    assert!(!first.is_event(), "a zone never set has no current value, got {first:?}");

    let set = set_surge(&origin, zone, 4.2).await;
    let event = raw.next_event(EXPECT, "the surge").await;
    assert_eq!(event.event(), Some("surge"));
    assert_eq!(event.id(), Some(set.ts.to_string().as_str()));
    assert_eq!(
        event.data().as_deref(),
        Some(format!(r#"{{"zoneId":"{zone}","multiplier":4.2,"ts":{}}}"#, set.ts).as_str())
    );

    // With --heartbeat-secs 1 a comment comes within 2.5 s.
    match raw.next_within(Duration::from_millis(2500)).await {
        Some(Next::Frame(frame)) if frame.is_comment_only() => {}
        other => panic!("expected a heartbeat comment within 2.5 s, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_subcommand_prints_an_ops_token_that_sets_surge() {
    let mut command = Command::new(origin_binary());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RIDECAST_") {
            command.env_remove(key);
        }
    }
    let output = command
        .args(["token", "--role", "ops", "--sub", "ops-cli"])
        .env("RIDECAST_TOKEN_SECRET", TEST_SECRET)
        .output()
        .expect("running ridecast-origin token");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`ridecast-origin token --role ops` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = stdout.trim_end();
    let claims = TokenKeys::new(TEST_SECRET.as_bytes(), None)
        .expect("keys")
        .verify(token, now_secs())
        .unwrap_or_else(|e| panic!("the printed token does not verify with the secret: {e}"));
    assert_eq!((claims.sub.as_str(), claims.role), ("ops-cli", Role::Ops));

    let origin = Origin::builder().start().await;
    let response = post_surge(&origin, "z-cli", Auth::Bearer(token), r#"{"multiplier":1.25}"#).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 202, "the printed ops token sets surge: {text}");
    assert_eq!(SeenSurge::parse(&text, "the 202 answer").multiplier, 1.25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_surge_while_redis_is_down_is_503_and_works_again_once_it_is_back() {
    const NOTICE: Duration = Duration::from_secs(15);
    let mut redis = RedisServer::start().await;
    let origin = Origin::builder().redis(&redis).start().await;
    let zone = "z-outage";
    set_surge(&origin, zone, 1.5).await;

    redis.kill9().await;
    poll_until(NOTICE, "/readyz to answer 503 while Redis is down", || async {
        (origin.readyz().await == Some(503)).then_some(())
    })
    .await;
    let response = post_surge(&origin, zone, Auth::Bearer(&ops_token("ops-1")), r#"{"multiplier":2.0}"#).await;
    let answer = expect_error(response, 503, "a surge set while the store is unreachable").await;
    assert_eq!(answer.code, "unavailable");

    redis.restart().await;
    poll_until(NOTICE, "/readyz to answer 200 once Redis is back", || async {
        (origin.readyz().await == Some(200)).then_some(())
    })
    .await;
    set_surge(&origin, zone, 2.0).await;
}
