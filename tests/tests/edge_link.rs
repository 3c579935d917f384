//! The origin's side of the edge link, `GET /edge/v1/drivers/{driverId}`: a WebSocket that an
//! edge Durable Object holds, carrying the current value first and then each pushed value, as
//! the same JSON as SSE `data:`. Only `edge` tokens open it, and auth is decided before any
//! upgrade.
//!
//! Contract: PROTOCOL.md, "The edge worker" (edge link).

use ridecast_protocol::Role;
use ridecast_tests::link::{Link, next_text, open_link};
use ridecast_tests::tokens::{claims, driver_token, mint, rider_token};
use ridecast_tests::{Cluster, DriverSocket, Fix, Mode, Route, TsClock, in_both_modes, wait_until_stored};

in_both_modes!(an_edge_link_gets_the_current_value_then_each_cell_change,);

async fn next_location(link: &mut Link, what: &str) -> serde_json::Value {
    let text = next_text(link, what).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {text}"))
}

async fn an_edge_link_gets_the_current_value_then_each_cell_change(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let driver = "d-edge";
    let route = Route::san_francisco();
    let mut clock = TsClock::new();
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;
    let first = Fix::at(route.point(0), clock.tick());
    socket.send_location(first).await;
    wait_until_stored(cluster.rider_side(), driver, &rider_token("r1", driver), &first, "the first fix").await;

    let edge = mint(&claims(Role::Edge, "edge-1"));
    let url = cluster.rider_side().ws_url(&format!("/edge/v1/drivers/{driver}"));
    let mut link = open_link(&url, &edge).await.expect("an edge token opens the link");
    let current = next_location(&mut link, "the current value").await;
    assert_eq!(current["driverId"], driver, "the link carries location JSON: {current}");
    assert_eq!(current["ts"], first.ts, "the current value comes first: {current}");

    let moved = Fix::at(route.point(3), clock.tick());
    socket.send_location(moved).await;
    let pushed = next_location(&mut link, "the cell change").await;
    assert_eq!(pushed["ts"], moved.ts, "each pushed value follows: {pushed}");
}

#[tokio::test]
async fn only_edge_tokens_open_the_link_and_bad_ids_are_400() {
    let cluster = Cluster::start_default(Mode::Embedded).await;
    let origin = cluster.rider_side();
    let url = origin.ws_url("/edge/v1/drivers/d1");
    assert_eq!(open_link(&url, "not-a-token").await.err(), Some(401), "a garbage token is 401 before any upgrade");
    assert_eq!(open_link(&url, &rider_token("r1", "d1")).await.err(), Some(403), "a rider token is 403");
    assert_eq!(open_link(&url, &driver_token("d1")).await.err(), Some(403), "a driver token is 403");
    let bad = origin.ws_url("/edge/v1/drivers/a.b");
    assert_eq!(open_link(&bad, &mint(&claims(Role::Edge, "edge-1"))).await.err(), Some(400), "a bad driver id is 400");
}

/// Links per edge token are not capped on the origin (an edge holds one per object), so what
/// one open link costs the origin is what thousands of trips cost it. A link holds a small read
/// buffer, not tungstenite's 128 KiB default, which alone made each cost ~130 KB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_edge_link_costs_the_origin_kilobytes_not_a_default_sized_buffer() {
    const LINKS: usize = 300;
    let origin = ridecast_tests::Origin::builder().start().await;
    let pid = origin.pid().expect("the origin runs");
    let edge = mint(&claims(Role::Edge, "edge-memory"));
    // Warm up: the first links pay for the allocator's and the runtime's own growth.
    let mut warm_up = Vec::new();
    for n in 0..50 {
        warm_up.push(open_link(&origin.ws_url(&format!("/edge/v1/drivers/warm-{n}")), &edge).await.expect("opens"));
    }
    let before = ridecast_tests::process::rss(pid);
    let mut links = Vec::new();
    for n in 0..LINKS {
        let url = origin.ws_url(&format!("/edge/v1/drivers/d-mem-{n}"));
        links.push(open_link(&url, &edge).await.expect("an edge token opens the link"));
    }
    // Every link served: its session is up and has read from its socket (a ping goes both ways).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = ridecast_tests::process::rss(pid);
    let per_link = after.0.saturating_sub(before.0) / LINKS as u64;
    assert!(per_link < 40_000, "{per_link} B of origin memory per open edge link ({LINKS} links)");
    drop((warm_up, links));
}
