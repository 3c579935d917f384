//! The live demo (`ridecast-demo`, dev mode only): simulated drivers are real WebSocket clients
//! of the origin, so a ride requested through the public API is offered to them, driven, tracked
//! and chatted about like any other; the fleet stream shows them move. With a real secret none
//! of the demo's routes exist: they hand out tokens to anyone. `ridecast-origin` has no demo at
//! all, not even in dev mode.
//!
//! Spec: `docs/API.md`, "Demo mode".

use std::time::Duration;

use ridecast_protocol::chat::{ChatRole, ChatServerFrame};
use ridecast_tests::driver::DriverSocket;
use ridecast_tests::http::{Auth, delete, expect_error, get, header, post_json};
use ridecast_tests::wait::within;
use ridecast_tests::{ChatSocket, Origin, QUIET, RiderStream};
use serde_json::{Value, json};

/// Simulated drivers in these tests.
const DRIVERS: usize = 8;
/// Long enough for one fleet frame after another, and for a slow debug build.
const FLEET_FRAME: Duration = Duration::from_secs(5);
/// How long a ride may take to be assigned: with offers expiring after 3 s, a few drivers
/// saying no or nothing first take seconds each.
const ASSIGNED_WITHIN: Duration = Duration::from_secs(60);
/// How long a tracked driver may take to cross into another ~50 m cell: at 7 m/s, with a 5 s
/// stop at the pickup, about 12 s.
const MOVES_WITHIN: Duration = Duration::from_secs(30);

/// A dev-mode origin with [`DRIVERS`] simulated drivers and quick offer expiry. Up to 20
/// drivers are asked per ride (the default is 5), so that one in four saying no or nothing
/// cannot leave a ride without a driver.
async fn demo_origin() -> Origin {
    Origin::builder()
        .demo()
        .dev_mode()
        .flag("--simulate", DRIVERS)
        .flag("--offer-expiry-ms", 3_000)
        .flag("--max-offer-attempts", 20)
        .start()
        .await
}

/// Metres between two points a few hundred metres apart.
fn metres((lat1, lng1): (f64, f64), (lat2, lng2): (f64, f64)) -> f64 {
    let y = (lat2 - lat1) * 111_195.0;
    let x = (lng2 - lng1) * 111_195.0 * lat1.to_radians().cos();
    x.hypot(y)
}

fn lat_lng(point: &Value) -> (f64, f64) {
    match (point["lat"].as_f64(), point["lng"].as_f64()) {
        (Some(lat), Some(lng)) => (lat, lng),
        _ => panic!("not a point with numeric lat and lng: {point}"),
    }
}

/// The next `fleet` event's data, checked: `event: fleet`, `id` its `ts`.
async fn next_fleet(stream: &mut RiderStream, what: &str) -> Value {
    let event = stream.next_event(FLEET_FRAME, what).await;
    assert_eq!(event.event, "fleet", "{what}: the event name");
    let frame: Value = serde_json::from_str(&event.data).unwrap_or_else(|e| panic!("{what}: not JSON ({e})"));
    assert_eq!(event.id, frame["ts"].to_string(), "{what}: a fleet event's id is its ts");
    frame
}

/// `POST /demo/token` with `body`, answered 200 with `{"token","sub"}`.
async fn demo_token(origin: &Origin, body: Value) -> (String, String) {
    let response = post_json(&origin.url("/demo/token"), Auth::None, body.to_string()).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "POST /demo/token {body}: {text}");
    let issued: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST /demo/token: not JSON ({e})"));
    match (issued["token"].as_str(), issued["sub"].as_str()) {
        (Some(token), Some(sub)) => (token.to_owned(), sub.to_owned()),
        _ => panic!("POST /demo/token answers {{\"token\",\"sub\"}}, got {text}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_stream_shows_every_simulated_driver_moving() {
    let origin = demo_origin().await;
    let mut fleet = RiderStream::open_with(&origin, "/demo/sse/fleet", Auth::None, None).await;
    assert_eq!(fleet.headers()["content-type"], "text/event-stream");

    let first = within(Duration::from_secs(20), "all simulated drivers online on the fleet stream", async {
        loop {
            let frame = next_fleet(&mut fleet, "a fleet frame").await;
            let drivers = frame["drivers"].as_array().expect("drivers");
            if drivers.len() == DRIVERS && drivers.iter().all(|d| d["state"] != "offline") {
                return frame;
            }
        }
    })
    .await;
    let ids: Vec<&str> =
        first["drivers"].as_array().expect("drivers").iter().filter_map(|d| d["id"].as_str()).collect();
    let expected: Vec<String> = (1..=DRIVERS).map(|n| format!("sim-{n:02}")).collect();
    assert_eq!(ids, expected, "the drivers, by id");
    let counters = &first["counters"];
    assert_eq!(counters["driverConnections"], DRIVERS, "the origin's own gauge counts them: {counters}");
    let surge = counters["surge"]["downtown"].as_f64().unwrap_or_else(|| panic!("downtown's surge in {counters}"));
    assert!((1.0..=2.5).contains(&surge), "the simulated operator's surge is 1.0 to 2.5: {surge}");

    let start: Vec<(f64, f64)> = first["drivers"].as_array().expect("drivers").iter().map(lat_lng).collect();
    within(Duration::from_secs(20), "every simulated driver 30 m or more from where it was", async {
        loop {
            let frame = next_fleet(&mut fleet, "a later fleet frame").await;
            let now: Vec<(f64, f64)> = frame["drivers"].as_array().expect("drivers").iter().map(lat_lng).collect();
            if now.len() == start.len() && now.iter().zip(&start).all(|(now, then)| metres(*then, *now) >= 30.0) {
                let counters = &frame["counters"];
                let received = counters["updatesReceived"].as_u64().expect("updatesReceived");
                assert!(received >= DRIVERS as u64, "their fixes are counted as received: {counters}");
                return;
            }
        }
    })
    .await;
}

/// A ride a demo rider requested and a simulated driver took.
struct AssignedRide {
    ride: String,
    /// The rider's token scoped to the ride.
    ride_token: String,
    driver: String,
    tracking: String,
}

/// Requests a ride across a few blocks as a fresh demo rider, and waits until a simulated driver
/// has it.
async fn assigned_ride(origin: &Origin) -> AssignedRide {
    let city = get(&origin.url("/demo/city.json"), Auth::None, &[]).await.text().await.expect("city.json");
    let city: Value = serde_json::from_str(&city).expect("city.json is JSON");
    let streets = city["streets"].as_array().expect("streets in city.json");
    let pickup = streets[3]["points"][4].clone();
    let dropoff = streets[20]["points"][9].clone();
    assert!(metres(lat_lng(&pickup), lat_lng(&dropoff)) > 300.0, "a ride worth driving");

    let (rider_token, rider) = demo_token(origin, json!({ "role": "rider" })).await;
    assert!(rider.starts_with("web-"), "a random rider id: {rider}");
    let body = json!({ "pickup": pickup, "dropoff": dropoff }).to_string();
    let response = post_json(&origin.url("/api/rides"), Auth::Bearer(&rider_token), body).await;
    assert_eq!(response.status().as_u16(), 201, "a demo rider token requests rides");
    let created: Value = serde_json::from_str(&response.text().await.expect("the ride")).expect("the ride is JSON");
    let ride = created["rideId"].as_str().expect("rideId").to_owned();
    let ride_token = created["token"].as_str().expect("token").to_owned();

    let path = format!("/api/sse/rides/{ride}");
    let mut status = RiderStream::open_with(origin, &path, Auth::Bearer(&ride_token), None).await;
    let assigned = within(ASSIGNED_WITHIN, "the ride assigned to a simulated driver", async {
        loop {
            let event = status.next_event(ASSIGNED_WITHIN, "the ride's status").await;
            let state: Value = serde_json::from_str(&event.data).expect("a ride status");
            match state["status"].as_str() {
                Some("searching") => continue,
                Some("driver_assigned") => return state,
                _ => panic!("expected the ride to be assigned, got {state}"),
            }
        }
    })
    .await;
    let driver = assigned["driverId"].as_str().expect("driverId").to_owned();
    let tracking = assigned["trackingToken"].as_str().expect("trackingToken").to_owned();
    assert!(driver.starts_with("sim-"), "a simulated driver took it: {driver}");
    AssignedRide { ride, ride_token, driver, tracking }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ride_is_taken_driven_and_answered_by_a_simulated_driver() {
    let origin = demo_origin().await;
    let AssignedRide { ride, ride_token, driver, tracking } = assigned_ride(&origin).await;

    // The rider follows the driver with the tracking token, as the rider page does.
    let mut location = RiderStream::open(&origin, &driver, &tracking).await;
    let first = location.next_location("the driver's current position").await;
    within(MOVES_WITHIN, format!("{driver} pushed at least 40 m from where it was"), async {
        loop {
            let event = location.next_event(MOVES_WITHIN, "the driver's next position").await;
            let seen: Value = serde_json::from_str(&event.data).expect("a location");
            assert_eq!(seen["driverId"], driver.as_str());
            assert!(seen["speed"].is_number() && seen["heading"].is_number(), "fixes carry speed and heading: {seen}");
            if metres((first.lat, first.lng), lat_lng(&seen)) >= 40.0 {
                return;
            }
        }
    })
    .await;

    // The rider writes; the driver greets, and answers.
    let mut chat = ChatSocket::connect(&origin, &ride, &ride_token, None).await;
    chat.send_message("c-1", "Where are you?").await;
    let (mut greeted, mut answered) = (false, false);
    within(Duration::from_secs(15), "the driver's greeting and its answer on the chat", async {
        while !(greeted && answered) {
            match chat.next_server_frame("the chat").await {
                ChatServerFrame::Message(message) if message.from == ChatRole::Driver => {
                    if message.text == "On my way!" {
                        greeted = true;
                    } else {
                        answered = true;
                    }
                }
                ChatServerFrame::Message(_) | ChatServerFrame::Typing { .. } => {}
                ChatServerFrame::Error { code, message } => panic!("chat error {code:?}: {message}"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_driver_whose_rider_cancels_is_free_again_within_seconds() {
    let origin = demo_origin().await;
    let AssignedRide { ride, ride_token, driver, .. } = assigned_ride(&origin).await;
    let mut fleet = RiderStream::open_with(&origin, "/demo/sse/fleet", Auth::None, None).await;
    let response = delete(&origin.url(&format!("/api/rides/{ride}")), Auth::Bearer(&ride_token)).await;
    assert_eq!(response.status().as_u16(), 200, "the rider cancels");
    // The driver follows its ride's status stream: it hears of the cancel as it is pushed.
    within(Duration::from_secs(10), format!("{driver} free on the fleet stream after the cancel"), async {
        loop {
            let frame = next_fleet(&mut fleet, "a fleet frame").await;
            let drivers = frame["drivers"].as_array().expect("drivers");
            let state = drivers.iter().find(|d| d["id"] == driver.as_str()).map(|d| d["state"].clone());
            if state.as_ref().and_then(Value::as_str) == Some("free") {
                return;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_its_pages_and_hands_out_tokens_that_work() {
    let origin = Origin::builder().demo().dev_mode().flag("--simulate", 0).start().await;
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client");
    for path in ["/", "/demo"] {
        let response = no_redirects.get(origin.url(path)).send().await.expect("GET");
        assert_eq!(response.status().as_u16(), 302, "GET {path}");
        assert_eq!(header(&response, "location").as_deref(), Some("/demo/"), "GET {path}");
    }
    let served = [
        ("/demo/", "text/html"),
        ("/demo/rider", "text/html"),
        ("/demo/driver", "text/html"),
        ("/demo/fleet", "text/html"),
        ("/demo/assets/app.js", "text/javascript"),
        ("/demo/assets/style.css", "text/css"),
        ("/demo/city.json", "application/json"),
    ];
    for (path, content_type) in served {
        let response = get(&origin.url(path), Auth::None, &[]).await;
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        let got = header(&response, "content-type").unwrap_or_default();
        assert!(got.starts_with(content_type), "GET {path}: Content-Type {got}, expected {content_type}");
    }
    expect_error(get(&origin.url("/demo/assets/nope.js"), Auth::None, &[]).await, 404, "an unknown asset").await;

    let (token, sub) = demo_token(&origin, json!({ "role": "driver", "sub": "web-d1" })).await;
    assert_eq!(sub, "web-d1");
    let mut socket = DriverSocket::connect(&origin, &token).await;
    socket.is_open_after(Duration::from_millis(300)).await.expect("a demo driver token opens the driver socket");

    for (body, code) in [
        (r#"{"role":"ops"}"#, "invalid_message"),
        (r#"{"sub":"x"}"#, "invalid_message"),
        (r#"["rider"]"#, "invalid_message"),
        ("{", "invalid_message"),
        (r#"{"role":"rider","sub":"not an id"}"#, "invalid_id"),
    ] {
        let response = post_json(&origin.url("/demo/token"), Auth::None, body).await;
        let error = expect_error(response, 400, &format!("POST /demo/token {body}")).await;
        assert_eq!(error.code, code, "POST /demo/token {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_real_secret_there_is_no_demo_and_no_simulated_driver() {
    let origin = Origin::builder().demo().start().await;
    expect_no_demo(&origin, "ridecast-demo with a secret").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_has_no_demo_and_no_simulated_driver_even_in_dev_mode() {
    let origin = Origin::builder().dev_mode().start().await;
    expect_no_demo(&origin, "ridecast-origin in dev mode").await;
}

/// None of the demo's routes answer on `origin`, and no simulated driver connects to it.
async fn expect_no_demo(origin: &Origin, what: &str) {
    for path in ["/", "/demo", "/demo/", "/demo/rider", "/demo/city.json", "/demo/sse/fleet", "/demo/assets/app.js"] {
        expect_error(get(&origin.url(path), Auth::None, &[]).await, 404, &format!("GET {path}, {what}")).await;
    }
    let response = post_json(&origin.url("/demo/token"), Auth::None, r#"{"role":"rider"}"#).await;
    expect_error(response, 404, &format!("POST /demo/token, {what}")).await;
    // Proving an absence: simulated drivers, were any started, would have connected by now.
    tokio::time::sleep(QUIET).await;
    assert_eq!(origin.metric("driver_connections").await, 0, "no simulated driver unless asked for, {what}");
}
