//! The edge's fan-out tree under the real Workers runtime (workerd): a key with more riders than
//! one Durable Object holds (`EDGE_MAX_RIDERS_PER_OBJECT`) spreads them over shard objects
//! `<key>#<k>`, fed by the key's root object and its one link to the origin.
//!
//! Contract: PROTOCOL.md, "The edge worker" and every SSE rule of "Rider HTTP and SSE", which
//! hold for a rider on a shard exactly as on the root. The tree's own view is the operators'
//! `GET /edge/v1/tree/{drivers|surge}/{id}` (docs/API.md).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, stream};
use ridecast_tests::http::{self, Auth, post_json};
use ridecast_tests::rider::location_path;
use ridecast_tests::tokens::{driver_token, ops_token, rider_token, rider_token_without_drv};
use ridecast_tests::wait::poll_until;
use ridecast_tests::{DriverSocket, EXPECT, Edge, Endpoint, Fix, Origin, RawSse, Route, TsClock, wait_until_stored};
use serde_json::Value;

/// Short heartbeat and grace, so that gone riders and empty shards are found quickly.
const FAST_SECS: u64 = 1;

async fn edge_with_cap(origin: &Origin, riders_per_object: u32) -> Edge {
    Edge::builder(origin)
        .direct()
        .var("EDGE_MAX_RIDERS_PER_OBJECT", riders_per_object)
        .var("EDGE_HEARTBEAT_SECS", FAST_SECS)
        .var("EDGE_LINK_GRACE_SECS", FAST_SECS)
        .start()
        .await
}

/// The operators' view of one key's tree.
async fn tree(edge: &Edge, kind: &str, key: &str) -> Value {
    let response =
        http::get(&edge.url(&format!("/edge/v1/tree/{kind}/{key}")), Auth::Bearer(&ops_token("ops")), &[]).await;
    assert_eq!(response.status().as_u16(), 200, "the tree's view answers an operator");
    serde_json::from_str(&response.text().await.expect("a body")).expect("the tree's view is JSON")
}

/// The shards of a tree view, as (k, riders).
fn shards(view: &Value) -> Vec<(u64, u64)> {
    view["shards"]
        .as_array()
        .expect("a list of shards")
        .iter()
        .map(|s| (s["shard"].as_u64().expect("k"), s["riders"].as_u64().expect("riders")))
        .collect()
}

async fn set_surge(origin: &Origin, zone: &str, multiplier: f64) -> Value {
    let body = format!(r#"{{"multiplier":{multiplier}}}"#);
    let response = post_json(&origin.url(&format!("/api/surge/{zone}")), Auth::Bearer(&ops_token("ops")), body).await;
    assert_eq!(response.status().as_u16(), 202, "surge set");
    serde_json::from_str(&response.text().await.expect("a body")).expect("the stored surge")
}

async fn open_surge(edge: &Edge, zone: &str, rider: &str) -> RawSse {
    open_surge_with(edge, zone, &rider_token_without_drv(rider)).await
}

async fn open_surge_with(edge: &Edge, zone: &str, token: &str) -> RawSse {
    let (bearer, rider) = (format!("Bearer {token}"), "a rider");
    let stream = RawSse::open(edge.addr(), &format!("/api/sse/surge/{zone}"), &[("authorization", &bearer)]).await;
    assert_eq!(stream.status(), 200, "a surge stream for {rider}");
    stream
}

/// The surge values a rider receives until `last_ts`, in order.
async fn surge_ids_until(rider: &mut RawSse, last_ts: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.last() != Some(&last_ts) {
        let frame = rider.next_event(Duration::from_secs(60), "the next surge value").await;
        assert_eq!(frame.event(), Some("surge"));
        seen.push(frame.id().and_then(|id| id.parse().ok()).expect("a numeric id"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_riders_on_one_zone_spread_over_shards_and_all_receive_each_update() {
    const RIDERS: usize = 10_000;
    const UPDATES: usize = 3;
    let origin = Origin::builder().start().await;
    // The default cap (500 riders per object): the root and 19 shards.
    let edge = Edge::builder(&origin).direct().start().await;
    let zone = "z-tree-10k";
    let first = set_surge(&origin, zone, 1.1).await;

    let riders: Vec<RawSse> = stream::iter(0..RIDERS)
        .map(|i| {
            let edge = &edge;
            async move { open_surge(edge, zone, &format!("r-tree-{i}")).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let view = tree(&edge, "surge", zone).await;
    let layout = shards(&view);
    assert!(layout.len() >= 10, "10,000 riders at 500 per object need at least 10 shards: {view}");
    assert_eq!(view["riders"], 500, "the root serves riders itself up to the cap: {view}");

    // Every rider counts each value it gets; the next value is set only once all have the
    // previous one, so each rider must see each of them (latest-only never skips here).
    let received: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let readers: Vec<_> = riders
        .into_iter()
        .map(|mut rider| {
            let received = received.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while seen.len() < UPDATES {
                    let frame = rider.next_event(Duration::from_secs(120), "the next surge value").await;
                    let id: u64 = frame.id().and_then(|id| id.parse().ok()).expect("a numeric id");
                    *received.lock().expect("counts").entry(id).or_default() += 1;
                    seen.push(id);
                }
                seen
            })
        })
        .collect();
    let mut ids = Vec::new();
    for n in 0..UPDATES {
        let value = if n == 0 { first.clone() } else { set_surge(&origin, zone, 1.1 + n as f64 / 10.0).await };
        let id = value["ts"].as_u64().expect("ts");
        ids.push(id);
        poll_until(Duration::from_secs(120), &format!("all {RIDERS} riders to receive update {n}"), || {
            let count = received.lock().expect("counts").get(&id).copied().unwrap_or(0);
            async move { (count == RIDERS).then_some(()) }
        })
        .await;
    }
    for reader in readers {
        let seen = reader.await.expect("a reader");
        assert_eq!(seen, ids, "each rider sees each value once, in order");
    }
    let view = tree(&edge, "surge", zone).await;
    assert_eq!(view["riders_in_tree"], RIDERS, "the shards' reports add up to every rider: {view}");
    assert_eq!(origin.metric("edge_links").await, 1, "the whole tree takes one link to the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_whose_riders_left_closes_and_the_root_is_told() {
    let origin = Origin::builder().start().await;
    let edge = edge_with_cap(&origin, 2).await;
    let zone = "z-tree-close";
    set_surge(&origin, zone, 1.3).await;
    let mut riders = Vec::new();
    for i in 0..6 {
        riders.push(open_surge(&edge, zone, &format!("r-close-{i}")).await);
    }
    // Two per object, in order: the root, shard 1, shard 2.
    poll_until(EXPECT, "two shards of two riders each, reported to the root", || async {
        let view = tree(&edge, "surge", zone).await;
        (shards(&view) == [(1, 2), (2, 2)] && view["riders"] == 2).then_some(())
    })
    .await;

    // Shard 2's riders leave: found by its heartbeat, it closes its link a grace time later.
    riders.truncate(4);
    poll_until(Duration::from_secs(FAST_SECS * 4 + 10), "shard 2 to leave the root's table", || async {
        (shards(&tree(&edge, "surge", zone).await) == [(1, 2)]).then_some(())
    })
    .await;
    assert_eq!(origin.metric("edge_links").await, 1, "the root keeps its link for its own riders and shard 1");

    // Its slot is free: the next rider past the root's cap lands in shard 2 again, and gets
    // the current value from it.
    let mut again = open_surge(&edge, zone, "r-close-again").await;
    let current = again.next_event(EXPECT, "the current value on a new shard").await;
    assert_eq!(current.event(), Some("surge"));
    assert_eq!(shards(&tree(&edge, "surge", zone).await).len(), 2);

    // Every rider gone: shards close, then the root's origin link.
    drop(again);
    riders.clear();
    poll_until(Duration::from_secs(FAST_SECS * 4 + 20), "the tree to close down to no link at all", || async {
        (origin.metric("edge_links").await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_with_more_riders_than_an_object_holds_is_served_by_a_tree_that_outlives_an_origin_restart() {
    let mut origin = Origin::builder().start().await;
    let edge = edge_with_cap(&origin, 2).await;
    let driver = "d-celebrity";
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
    let before = Fix::at(route.point(0), clock.tick());
    socket.send_location(before).await;
    wait_until_stored(&origin, driver, &rider_token("r0", driver), &before, "the first fix").await;

    let mut riders = Vec::new();
    for i in 0..5 {
        let bearer = format!("Bearer {}", rider_token(&format!("fan-{i}"), driver));
        let mut rider = RawSse::open(edge.addr(), &location_path(driver), &[("authorization", &bearer)]).await;
        assert_eq!(rider.status(), 200);
        let current = rider.next_event(EXPECT, "the current value, on the root or a shard").await;
        assert_eq!(current.id(), Some(before.ts.to_string().as_str()));
        riders.push(rider);
    }
    assert_eq!(shards(&tree(&edge, "drivers", driver).await).len(), 2, "five riders at two per object");

    // The origin restarts (embedded: its store starts empty); the driver reconnects and moves.
    let addr = origin.addr();
    origin.kill9().await;
    drop(socket);
    origin = Origin::builder().listen_on(addr).start().await;
    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
    let after = Fix::at(route.point(3), clock.tick());
    socket.send_location(after).await;
    for (i, rider) in riders.iter_mut().enumerate() {
        let next = rider.next_event(Duration::from_secs(30), &format!("rider {i}'s value after the restart")).await;
        assert_eq!(next.id(), Some(after.ts.to_string().as_str()), "rider {i}, on the same connection");
    }
    assert_eq!(origin.metric("edge_links").await, 1, "the root relinked, once, for the whole tree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rider_on_a_shard_gets_every_sse_rule() {
    let origin = Origin::builder().start().await;
    let edge = edge_with_cap(&origin, 1).await;
    let zone = "z-tree-rules";
    let value = set_surge(&origin, zone, 1.4).await;
    let id = value["ts"].to_string();
    let _on_root = open_surge(&edge, zone, "r-rules-root").await;

    // On shard 1: retry first, the current value, then heartbeats.
    let mut fresh = open_surge(&edge, zone, "r-rules-fresh").await;
    assert_eq!(fresh.header("content-type").as_deref(), Some("text/event-stream"));
    let first = fresh.next_frame(EXPECT, "the first frame").await;
    assert!(first.retry().is_some(), "the first frame carries retry: {first:?}");
    let current = fresh.next_event(EXPECT, "the current value").await;
    assert_eq!(current.id(), Some(id.as_str()));
    let heartbeat = fresh.next_frame(Duration::from_secs(FAST_SECS * 3), "a heartbeat").await;
    assert!(heartbeat.is_comment_only(), "{heartbeat:?}");

    // On shard 2, resuming with Last-Event-ID: the current value is not replayed.
    let bearer = format!("Bearer {}", rider_token_without_drv("r-rules-resumed"));
    let headers = [("authorization", bearer.as_str()), ("last-event-id", id.as_str())];
    let mut resumed = RawSse::open(edge.addr(), &format!("/api/sse/surge/{zone}"), &headers).await;
    for _ in 0..2 {
        let frame = resumed.next_frame(Duration::from_secs(FAST_SECS * 3), "a frame after resuming").await;
        assert!(!frame.is_event(), "Last-Event-ID equal to the current id must not replay it: {frame:?}");
    }
    assert_eq!(shards(&tree(&edge, "surge", zone).await).len(), 2, "both riders are on shards");
    let next = set_surge(&origin, zone, 1.5).await;
    for rider in [&mut fresh, &mut resumed] {
        assert_eq!(surge_ids_until(rider, next["ts"].as_u64().expect("ts")).await.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_streams_stay_on_one_object_so_its_stream_cap_holds_across_the_tree() {
    let origin = Origin::builder().start().await;
    let edge = Edge::builder(&origin)
        .direct()
        .var("EDGE_MAX_RIDERS_PER_OBJECT", 2)
        .var("EDGE_MAX_STREAMS_PER_TOKEN", 2)
        .var("EDGE_HEARTBEAT_SECS", FAST_SECS)
        .start()
        .await;
    let zone = "z-tree-cap";
    set_surge(&origin, zone, 1.2).await;
    let fills_root = open_surge(&edge, zone, "r-other-1").await;
    let _also_root = open_surge(&edge, zone, "r-other-2").await;
    // The root is full: both of this token's streams go to shard 1.
    let greedy = rider_token_without_drv("r-greedy");
    let _a1 = open_surge_with(&edge, zone, &greedy).await;
    let _a2 = open_surge_with(&edge, zone, &greedy).await;
    assert_eq!(shards(&tree(&edge, "surge", zone).await), [(1, 2)]);

    // Room on the root again; the token's third stream still goes where its others are, and is
    // refused there (sent anywhere with room, a token could hold its cap on every object).
    drop(fills_root);
    poll_until(Duration::from_secs(FAST_SECS * 4 + 5), "the root to find its gone rider", || async {
        (tree(&edge, "surge", zone).await["riders"] == 1).then_some(())
    })
    .await;
    let mut third = open_surge_with(&edge, zone, &greedy).await;
    let (frames, ended) = third.expect_end(EXPECT, "the refusal of a third stream").await;
    assert!(ended, "the refusal ends the stream");
    assert!(
        frames.iter().flat_map(|f| &f.comments).any(|c| c.contains("EDGE_MAX_STREAMS_PER_TOKEN")),
        "the third stream of a token is refused where its others are: {frames:?}"
    );
    // Another token takes the root's free place.
    let mut other = open_surge(&edge, zone, "r-other-3").await;
    assert_eq!(other.next_event(EXPECT, "the current value").await.event(), Some("surge"));
    assert_eq!(tree(&edge, "surge", zone).await["riders"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_reaches_a_shard_or_the_trees_view_without_the_right_token() {
    let origin = Origin::builder().start().await;
    let edge = edge_with_cap(&origin, 1).await;
    let rider = format!("Bearer {}", rider_token_without_drv("r-probe"));
    let auth = [("authorization", rider.as_str())];
    // Internal paths are not routes; a shard's name is not an id.
    for (path, status) in [
        ("/_tree/shard/1/api/sse/surge/z1", 404),
        ("/_tree/link/1/api/sse/surge/z1", 404),
        ("/_tree/stats/api/sse/surge/z1", 404),
        ("/api/sse/surge/z1%231", 400),
    ] {
        let response = http::get(&edge.url(path), Auth::None, &auth).await;
        assert_eq!(response.status().as_u16(), status, "GET {path}");
    }
    // The tree's view is for operators only.
    let view = edge.url("/edge/v1/tree/surge/z1");
    assert_eq!(http::get(&view, Auth::None, &[]).await.status().as_u16(), 401);
    assert_eq!(http::get(&view, Auth::Bearer(&rider_token_without_drv("r")), &[]).await.status().as_u16(), 403);
    assert_eq!(http::get(&view, Auth::Bearer(&driver_token("d1")), &[]).await.status().as_u16(), 403);
    assert_eq!(http::get(&view, Auth::Bearer(&ops_token("ops")), &[]).await.status().as_u16(), 200);
    assert_eq!(
        http::get(&edge.url("/edge/v1/tree/surge/z%231"), Auth::Bearer(&ops_token("o")), &[]).await.status().as_u16(),
        400
    );
}
