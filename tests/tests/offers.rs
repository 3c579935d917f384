//! Ride offers over the driver WebSocket: the nearest available driver gets an offer, which is
//! resent until acknowledged; the first accept wins the ride; rejects, silence and late accepts
//! move the ride on; a cancel reaches the offered driver; and no single process dying strands
//! a ride. The assigned driver then reports the ride's steps (v1.1 lifecycle), forward only and
//! only its own ride's, and is offered rides again once it is `completed`. Matching runs on
//! several origin processes sharing one real Redis (and embedded).
//!
//! Contract: PROTOCOL.md, "Driver WebSocket", "Rider HTTP and SSE", "Precise points" and the
//! v1.1 "Ride lifecycle".

use std::time::Duration;

use ridecast_tests::http::{delete, post_json};
use ridecast_tests::tokens::{claims, driver_token, mint, rider_token};
use ridecast_tests::wait::now_ms;
use ridecast_tests::{
    Auth, Cluster, DriverSocket, EXPECT, Fix, Mode, Origin, QUIET, RedisServer, RiderStream, in_both_modes,
    on_a_redis_cluster_too, wait_until_stored,
};
use serde_json::{Value, json};

/// Offer deadline in the tests that wait for one: short, so that silence takes a second and a
/// half, not fifteen.
const EXPIRY_MS: u64 = 1_500;
/// Offer deadline everywhere else: long enough that no answer, however slow the machine, is
/// overtaken by it.
const PATIENT_EXPIRY_MS: u64 = 20_000;
const RESEND_MS: u64 = 300;
/// How long a ride with nobody to ask keeps searching.
const SEARCH_TIMEOUT_SECS: u64 = 2;

/// The pickup of every ride here, and where drivers stand relative to it.
const PICKUP: (f64, f64) = (37.7749, -122.4194);
const DROPOFF: (f64, f64) = (37.8044, -122.2712);

fn metres_north(metres: f64) -> (f64, f64) {
    (PICKUP.0 + metres / 111_195.0, PICKUP.1)
}

async fn start(mode: Mode, fanout: u32) -> Cluster {
    start_with_expiry(mode, fanout, PATIENT_EXPIRY_MS).await
}

async fn start_with_expiry(mode: Mode, fanout: u32, expiry_ms: u64) -> Cluster {
    Cluster::start(mode, |origin| {
        origin
            .flag("--offer-expiry-ms", expiry_ms)
            .flag("--offer-resend-ms", RESEND_MS)
            .flag("--offer-sweep-ms", 100)
            .flag("--offer-fanout", fanout)
            .flag("--match-radius-m", 5_000)
            .flag("--search-timeout-secs", SEARCH_TIMEOUT_SECS)
    })
    .await
}

/// A driver online for offers at `at`. Returns once the origin stored the location, which it
/// does after handing the availability and the position to dispatch (one socket's frames are
/// handled in order), so a ride requested next finds the driver.
async fn online_driver(origin: &Origin, driver: &str, at: (f64, f64)) -> DriverSocket {
    let mut socket = DriverSocket::connect(origin, &driver_token(driver)).await;
    socket.send_text(json!({"type": "availability", "available": true}).to_string()).await;
    let fix = Fix::at(at, now_ms());
    socket.send_location(fix).await;
    wait_until_stored(origin, driver, &rider_token("r-probe", driver), &fix, "the driver's position").await;
    socket
}

async fn expect_offer(socket: &mut DriverSocket, what: &str) -> Value {
    let offer = socket.next_frame_of("offer", EXPECT, what).await;
    for field in ["offerId", "rideId", "pickup", "dropoff", "expiresAt"] {
        assert!(!offer[field].is_null(), "{what}: the offer has {field}: {offer}");
    }
    offer
}

async fn answer(socket: &mut DriverSocket, kind: &str, offer: &Value) {
    socket.send_text(json!({"type": kind, "offerId": offer["offerId"]}).to_string()).await;
}

async fn expect_result(socket: &mut DriverSocket, offer: &Value, result: &str, what: &str) {
    let frame = socket.next_frame_of("offer_result", EXPECT, what).await;
    assert_eq!(frame["offerId"], offer["offerId"], "{what}: {frame}");
    assert_eq!(frame["result"], result, "{what}: {frame}");
}

/// Asserts the driver gets no offer for `quiet`.
async fn expect_no_offer(socket: &mut DriverSocket, quiet: Duration, why: &str) {
    if let Err(frame) = socket.is_open_after(quiet).await {
        panic!("expected nothing ({why}), got {frame}");
    }
}

/// A rider's ride: its id, ride-scoped token and status stream.
struct RiderRide {
    id: String,
    token: String,
    stream: RiderStream,
}

async fn request_ride(origin: &Origin, rider: &str) -> RiderRide {
    let token = mint(&claims(ridecast_protocol::Role::Rider, rider));
    let body = json!({"pickup": {"lat": PICKUP.0, "lng": PICKUP.1}, "dropoff": {"lat": DROPOFF.0, "lng": DROPOFF.1}});
    let response = post_json(&origin.url("/api/rides"), Auth::Bearer(&token), body.to_string()).await;
    assert_eq!(response.status().as_u16(), 201, "a ride is created");
    let created: Value = serde_json::from_str(&response.text().await.expect("a body")).expect("JSON");
    let id = created["rideId"].as_str().expect("a rideId").to_owned();
    let token = created["token"].as_str().expect("a ride token").to_owned();
    let stream = RiderStream::open_with(origin, &format!("/api/sse/rides/{id}"), Auth::Bearer(&token), None).await;
    RiderRide { id, token, stream }
}

impl RiderRide {
    /// The next status on the ride stream.
    async fn expect_status(&mut self, status: &str, what: &str) -> Value {
        loop {
            let event = self.stream.next_event(EXPECT * 2, what).await;
            assert_eq!(event.event, "ride", "{what}");
            let state: Value = serde_json::from_str(&event.data).expect("ride JSON");
            if state["status"] == "searching" && status != "searching" {
                continue;
            }
            assert_eq!(state["status"], status, "{what}: {state}");
            return state;
        }
    }
}

in_both_modes!(
    the_nearest_driver_gets_the_offer_accepts_and_the_rider_can_track_them,
    a_rejected_offer_goes_to_the_next_nearest_driver,
    an_unanswered_offer_expires_moves_on_and_a_late_accept_is_expired,
    a_riders_cancel_reaches_the_offered_driver,
    with_nobody_nearby_the_ride_has_no_driver,
    a_driver_coming_online_while_a_ride_searches_gets_its_offer,
    a_driver_who_won_a_ride_is_told_when_the_rider_cancels_and_is_free_again,
    an_offer_is_sent_again_until_acknowledged,
    bad_answers_to_offers_get_contract_errors,
    the_assigned_drivers_steps_reach_the_ride_stream_on_another_instance,
    a_step_back_is_a_conflict_and_changes_nothing,
    a_driver_not_assigned_to_the_ride_is_forbidden_its_steps,
    a_step_of_an_unknown_ride_is_not_found,
    after_completed_the_driver_is_offered_rides_again_without_saying_it_is_available,
);

on_a_redis_cluster_too!(
    the_nearest_driver_gets_the_offer_accepts_and_the_rider_can_track_them,
    a_rejected_offer_goes_to_the_next_nearest_driver,
    an_unanswered_offer_expires_moves_on_and_a_late_accept_is_expired,
    a_riders_cancel_reaches_the_offered_driver,
    a_driver_who_won_a_ride_is_told_when_the_rider_cancels_and_is_free_again,
    the_assigned_drivers_steps_reach_the_ride_stream_on_another_instance,
    after_completed_the_driver_is_offered_rides_again_without_saying_it_is_available,
);

async fn the_nearest_driver_gets_the_offer_accepts_and_the_rider_can_track_them(mode: Mode) {
    let cluster = start(mode, 1).await;
    let mut near = online_driver(cluster.driver_side(), "d-near", metres_north(200.0)).await;
    let mut far = online_driver(cluster.driver_side(), "d-far", metres_north(900.0)).await;
    let mut ride = request_ride(cluster.rider_side(), "r-happy").await;
    ride.expect_status("searching", "the new ride").await;

    let offer = expect_offer(&mut near, "the nearest driver's offer").await;
    assert_eq!(offer["rideId"], ride.id.as_str());
    assert_eq!(offer["pickup"], json!({"lat": PICKUP.0, "lng": PICKUP.1}));
    answer(&mut near, "offer_ack", &offer).await;
    answer(&mut near, "accept", &offer).await;
    expect_result(&mut near, &offer, "confirmed", "the accept").await;
    expect_no_offer(&mut far, Duration::from_millis(500), "the farther driver is not needed").await;

    let assigned = ride.expect_status("driver_assigned", "the assignment on the ride stream").await;
    assert_eq!(assigned["driverId"], "d-near");
    let tracking = assigned["trackingToken"].as_str().expect("a tracking token");
    let path = "/api/sse/drivers/d-near/location";
    let mut tracked = RiderStream::open_with(cluster.rider_side(), path, Auth::Bearer(tracking), None).await;
    let event = tracked.next_event(EXPECT, "the assigned driver's location through the tracking token").await;
    assert_eq!(event.event, "location");
}

async fn a_rejected_offer_goes_to_the_next_nearest_driver(mode: Mode) {
    let cluster = start(mode, 1).await;
    let mut first = online_driver(cluster.driver_side(), "d-first", metres_north(100.0)).await;
    let mut second = online_driver(cluster.rider_side(), "d-second", metres_north(300.0)).await;
    let mut ride = request_ride(cluster.rider_side(), "r-reject").await;
    let offer = expect_offer(&mut first, "the nearest driver's offer").await;
    answer(&mut first, "reject", &offer).await;
    let next = expect_offer(&mut second, "the next nearest driver's offer").await;
    assert_eq!(next["rideId"], offer["rideId"], "the same ride, reassigned");
    assert_ne!(next["offerId"], offer["offerId"], "a new offer");
    answer(&mut second, "accept", &next).await;
    expect_result(&mut second, &next, "confirmed", "the second driver's accept").await;
    let assigned = ride.expect_status("driver_assigned", "the ride after a reject").await;
    assert_eq!(assigned["driverId"], "d-second");
}

async fn an_unanswered_offer_expires_moves_on_and_a_late_accept_is_expired(mode: Mode) {
    let cluster = start_with_expiry(mode, 1, EXPIRY_MS).await;
    let mut silent = online_driver(cluster.driver_side(), "d-silent", metres_north(100.0)).await;
    let mut next = online_driver(cluster.driver_side(), "d-next", metres_north(300.0)).await;
    let _ride = request_ride(cluster.rider_side(), "r-expiry").await;
    let offer = expect_offer(&mut silent, "the offer nobody answers").await;
    let expired_after = now_ms();
    let moved = expect_offer(&mut next, "the offer after the first expired").await;
    assert!(now_ms() + 100 >= expired_after + EXPIRY_MS / 2, "the ride moved on only after the deadline");
    expect_result(&mut silent, &offer, "expired", "the silent driver is told").await;
    answer(&mut silent, "accept", &offer).await;
    expect_result(&mut silent, &offer, "expired", "a late accept").await;
    answer(&mut next, "accept", &moved).await;
    expect_result(&mut next, &moved, "confirmed", "the next driver's accept").await;
}

async fn a_riders_cancel_reaches_the_offered_driver(mode: Mode) {
    let cluster = start(mode, 1).await;
    let mut driver = online_driver(cluster.driver_side(), "d-cancel", metres_north(100.0)).await;
    let mut ride = request_ride(cluster.rider_side(), "r-cancel").await;
    let offer = expect_offer(&mut driver, "the offer").await;
    answer(&mut driver, "offer_ack", &offer).await;
    let response =
        delete(&cluster.rider_side().url(&format!("/api/rides/{}", ride.id)), Auth::Bearer(&ride.token)).await;
    assert_eq!(response.status().as_u16(), 200);
    expect_result(&mut driver, &offer, "cancelled", "the rider's cancel").await;
    ride.expect_status("cancelled", "the cancelled ride").await;
    answer(&mut driver, "accept", &offer).await;
    expect_result(&mut driver, &offer, "cancelled", "an accept after the cancel").await;
}

async fn with_nobody_nearby_the_ride_has_no_driver(mode: Mode) {
    let cluster = start(mode, 1).await;
    let mut far = online_driver(cluster.driver_side(), "d-too-far", metres_north(50_000.0)).await;
    let started = now_ms();
    let mut ride = request_ride(cluster.rider_side(), "r-lonely").await;
    ride.expect_status("no_driver", "a ride with nobody within the radius").await;
    assert!(now_ms() - started >= SEARCH_TIMEOUT_SECS * 1_000 - 100, "it kept searching for the search timeout");
    expect_no_offer(&mut far, Duration::from_millis(300), "outside the radius").await;
}

async fn a_driver_coming_online_while_a_ride_searches_gets_its_offer(mode: Mode) {
    let cluster = start(mode, 1).await;
    let mut ride = request_ride(cluster.rider_side(), "r-patient").await;
    ride.expect_status("searching", "a ride nobody can take yet").await;
    let mut late = online_driver(cluster.driver_side(), "d-late", metres_north(100.0)).await;
    let offer = expect_offer(&mut late, "the offer once a driver is online").await;
    assert_eq!(offer["rideId"], ride.id.as_str());
}

async fn an_offer_is_sent_again_until_acknowledged(mode: Mode) {
    // The patient deadline is far beyond the quiet period watched below: only a resend breaks it.
    let cluster = start(mode, 1).await;
    let mut driver = online_driver(cluster.driver_side(), "d-resend", metres_north(100.0)).await;
    let _ride = request_ride(cluster.rider_side(), "r-resend").await;
    let offer = expect_offer(&mut driver, "the offer").await;
    let again = expect_offer(&mut driver, "the offer, sent again before any ack").await;
    assert_eq!(again["offerId"], offer["offerId"], "resent with the same id");
    answer(&mut driver, "offer_ack", &offer).await;
    // Allow one resend that crossed the ack on the wire, then silence.
    let _ = driver.is_open_after(Duration::from_millis(RESEND_MS)).await;
    expect_no_offer(&mut driver, Duration::from_millis(RESEND_MS * 3), "acknowledged: no more resends").await;
}

async fn bad_answers_to_offers_get_contract_errors(mode: Mode) {
    let cluster = start(mode, 1).await;
    let mut holder = online_driver(cluster.driver_side(), "d-holder", metres_north(100.0)).await;
    let mut other = DriverSocket::connect(cluster.driver_side(), &driver_token("d-other")).await;
    let _ride = request_ride(cluster.rider_side(), "r-bad").await;
    let offer = expect_offer(&mut holder, "the offer").await;

    other.send_text(json!({"type": "accept", "offerId": "of-does-not-exist"}).to_string()).await;
    assert_eq!(other.expect_error_frame("an accept of an unknown offer").await.code, "not_found");
    answer(&mut other, "accept", &offer).await;
    assert_eq!(other.expect_error_frame("an accept of someone else's offer").await.code, "forbidden");
    answer(&mut other, "offer_ack", &offer).await;
    assert_eq!(other.expect_error_frame("an ack of someone else's offer").await.code, "forbidden");

    answer(&mut holder, "accept", &offer).await;
    expect_result(&mut holder, &offer, "confirmed", "the holder's accept").await;
    answer(&mut holder, "accept", &offer).await;
    let twice = holder.next_frame_of("error", EXPECT, "a second accept").await;
    assert_eq!(twice["code"], "conflict", "accepting twice: {twice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_drivers_accepting_the_same_ride_at_once_one_is_confirmed_one_taken() {
    // Two live offers per ride, so that two drivers really hold the same ride at once; each on
    // its own instance.
    let cluster = start(Mode::Redis, 2).await;
    let mut a = online_driver(&cluster.origins[0], "d-a", metres_north(100.0)).await;
    let mut b = online_driver(&cluster.origins[1], "d-b", metres_north(150.0)).await;
    let mut ride = request_ride(&cluster.origins[2], "r-race").await;
    let offer_a = expect_offer(&mut a, "a's offer").await;
    let offer_b = expect_offer(&mut b, "b's offer").await;
    assert_eq!(offer_a["rideId"], offer_b["rideId"]);
    tokio::join!(answer(&mut a, "accept", &offer_a), answer(&mut b, "accept", &offer_b));
    let result_a = a.next_frame_of("offer_result", EXPECT, "a's result").await;
    let result_b = b.next_frame_of("offer_result", EXPECT, "b's result").await;
    let mut results = [result_a["result"].as_str().unwrap_or(""), result_b["result"].as_str().unwrap_or("")];
    results.sort_unstable();
    assert_eq!(results, ["confirmed", "taken"], "exactly one wins: {result_a} {result_b}");
    let winner = if result_a["result"] == "confirmed" { "d-a" } else { "d-b" };
    let assigned = ride.expect_status("driver_assigned", "the race's winner on the ride stream").await;
    assert_eq!(assigned["driverId"], winner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_offering_instance_mid_offer_does_not_strand_the_ride() {
    let mut cluster = start_with_expiry(Mode::Redis, 1, EXPIRY_MS).await;
    // The ride is requested on origin 2, which makes the first offer and then dies.
    let mut silent = online_driver(&cluster.origins[0], "d-k-silent", metres_north(100.0)).await;
    let mut next = online_driver(&cluster.origins[1], "d-k-next", metres_north(300.0)).await;
    let ride = request_ride(&cluster.origins[2], "r-kill").await;
    let offer = expect_offer(&mut silent, "the offer from the instance about to die").await;
    cluster.origins[2].kill9().await;
    drop(ride);
    // Nobody answers; a surviving instance sweeps the deadline and moves the ride on.
    let moved = expect_offer(&mut next, "the next offer, made by a surviving instance").await;
    assert_eq!(moved["rideId"], offer["rideId"]);
    answer(&mut next, "accept", &moved).await;
    expect_result(&mut next, &moved, "confirmed", "the accept handled by a survivor").await;
    let rider_side = &cluster.origins[1];
    let ride_id = moved["rideId"].as_str().expect("a ride id");
    let token = mint(&ridecast_protocol::Claims {
        ride: Some(ridecast_protocol::Id::parse(ride_id).expect("id")),
        ..claims(ridecast_protocol::Role::Rider, "r-kill")
    });
    let path = format!("/api/sse/rides/{ride_id}");
    let mut stream = RiderStream::open_with(rider_side, &path, Auth::Bearer(&token), None).await;
    let event = stream.next_event(EXPECT, "the ride's status on a surviving instance").await;
    let state: Value = serde_json::from_str(&event.data).expect("ride JSON");
    assert_eq!(state["status"], "driver_assigned", "the ride was resolved: {state}");
    assert_eq!(state["driverId"], "d-k-next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_reconnecting_to_another_instance_gets_the_same_offer_again() {
    let cluster = Cluster::start(Mode::Redis, |origin| {
        origin.flag("--offer-expiry-ms", 10_000).flag("--offer-resend-ms", RESEND_MS).flag("--match-radius-m", 5_000)
    })
    .await;
    let mut driver = online_driver(&cluster.origins[0], "d-roam", metres_north(100.0)).await;
    let _ride = request_ride(&cluster.origins[2], "r-roam").await;
    let offer = expect_offer(&mut driver, "the offer on the first instance").await;
    answer(&mut driver, "offer_ack", &offer).await;
    drop(driver);
    let mut again = DriverSocket::connect(&cluster.origins[1], &driver_token("d-roam")).await;
    let resent = expect_offer(&mut again, "the offer after reconnecting elsewhere").await;
    assert_eq!(resent["offerId"], offer["offerId"], "the same offer id, so the app can de-duplicate");
    answer(&mut again, "accept", &resent).await;
    expect_result(&mut again, &resent, "confirmed", "accepting on the new instance").await;
}

async fn a_driver_who_won_a_ride_is_told_when_the_rider_cancels_and_is_free_again(mode: Mode) {
    let cluster = start(mode, 1).await;
    let mut driver = online_driver(cluster.driver_side(), "d-won", metres_north(100.0)).await;
    let mut ride = request_ride(cluster.rider_side(), "r-change-of-mind").await;
    let offer = expect_offer(&mut driver, "the offer").await;
    answer(&mut driver, "accept", &offer).await;
    expect_result(&mut driver, &offer, "confirmed", "the accept").await;
    ride.expect_status("driver_assigned", "the assignment").await;

    // On a ride: no offers for another one.
    let mut other = request_ride(cluster.rider_side(), "r-meanwhile").await;
    expect_no_offer(&mut driver, Duration::from_millis(500), "a driver on a ride gets no offers").await;
    let response =
        delete(&cluster.rider_side().url(&format!("/api/rides/{}", other.id)), Auth::Bearer(&other.token)).await;
    assert_eq!(response.status().as_u16(), 200);
    other.expect_status("cancelled", "the other ride, withdrawn").await;

    let response =
        delete(&cluster.rider_side().url(&format!("/api/rides/{}", ride.id)), Auth::Bearer(&ride.token)).await;
    assert_eq!(response.status().as_u16(), 200);
    expect_result(&mut driver, &offer, "cancelled", "the rider cancelled the ride the driver won").await;

    // Free again: the next ride is offered to it.
    let next = request_ride(cluster.rider_side(), "r-next").await;
    let offer = expect_offer(&mut driver, "an offer once the won ride was cancelled").await;
    assert_eq!(offer["rideId"], next.id.as_str());
}

/// Redis restarts under an offer a driver holds: two origins, a driver online on one, a ride
/// requested on the other, then Redis killed -9 and started again on its port.
async fn offer_then_restart_redis(redis: &mut RedisServer) -> (Vec<Origin>, DriverSocket, Value, RiderRide) {
    let mut origins = Vec::new();
    for _ in 0..2 {
        origins.push(
            Origin::builder()
                .redis(redis)
                .flag("--offer-expiry-ms", 30_000)
                .flag("--offer-resend-ms", RESEND_MS)
                .flag("--match-radius-m", 5_000)
                .start()
                .await,
        );
    }
    let mut driver = online_driver(&origins[0], "d-restart", metres_north(100.0)).await;
    let ride = request_ride(&origins[1], "r-restart").await;
    let offer = expect_offer(&mut driver, "the offer before Redis restarts").await;
    answer(&mut driver, "offer_ack", &offer).await;
    redis.kill9().await;
    redis.restart().await;
    (origins, driver, offer, ride)
}

/// Sends `accept` until the origin answers something other than `unavailable` (it reconnects
/// to Redis on its own a moment after the restart) and returns that answer.
async fn accept_once_redis_is_back(driver: &mut DriverSocket, offer: &Value) -> Value {
    let deadline = tokio::time::Instant::now() + EXPECT * 2;
    loop {
        answer(driver, "accept", offer).await;
        let text = driver.next_text(EXPECT, "the answer to an accept after the Redis restart").await;
        let frame: Value = serde_json::from_str(&text).expect("JSON");
        let retry = frame["type"] == "offer" || frame["code"] == "unavailable";
        if !retry || tokio::time::Instant::now() >= deadline {
            return frame;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_in_flight_survives_a_redis_restart_when_redis_persists() {
    let mut redis = RedisServer::start_persistent().await;
    let (_origins, mut driver, offer, mut ride) = offer_then_restart_redis(&mut redis).await;
    let answer = accept_once_redis_is_back(&mut driver, &offer).await;
    assert_eq!(answer["type"], "offer_result", "the stored offer answers after the restart: {answer}");
    assert_eq!(answer["result"], "confirmed", "{answer}");
    let assigned = ride.expect_status("driver_assigned", "the ride, assigned after the restart").await;
    assert_eq!(assigned["driverId"], "d-restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persistence_a_redis_restart_forgets_offers_in_flight_and_says_so() {
    let mut redis = RedisServer::start().await;
    let (_origins, mut driver, offer, _ride) = offer_then_restart_redis(&mut redis).await;
    let answer = accept_once_redis_is_back(&mut driver, &offer).await;
    assert_eq!(answer["type"], "error", "an empty Redis knows no offer: {answer}");
    assert_eq!(answer["code"], "not_found", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_reconnecting_elsewhere_stays_online_without_saying_so_again() {
    let cluster = start(Mode::Redis, 1).await;
    drop(online_driver(&cluster.origins[0], "d-back", metres_north(50_000.0)).await);
    // Back on another instance, nearer: only a location, no `availability` this time.
    let mut back = DriverSocket::connect(&cluster.origins[1], &driver_token("d-back")).await;
    let fix = Fix::at(metres_north(100.0), now_ms());
    back.send_location(fix).await;
    wait_until_stored(&cluster.origins[1], "d-back", &rider_token("r-probe", "d-back"), &fix, "the new position").await;
    let ride = request_ride(&cluster.origins[2], "r-back").await;
    let offer = expect_offer(&mut back, "an offer for the driver who came back").await;
    assert_eq!(offer["rideId"], ride.id.as_str());
}

/// A ride requested by `rider` (on the rider side) and won by `driver` (online on the driver
/// side), its stream read up to `driver_assigned`, which is returned.
async fn won_ride(cluster: &Cluster, rider: &str, driver: &str) -> (DriverSocket, RiderRide, Value) {
    let mut socket = online_driver(cluster.driver_side(), driver, metres_north(100.0)).await;
    let mut ride = request_ride(cluster.rider_side(), rider).await;
    let offer = expect_offer(&mut socket, "the offer").await;
    answer(&mut socket, "accept", &offer).await;
    expect_result(&mut socket, &offer, "confirmed", "the accept").await;
    let assigned = ride.expect_status("driver_assigned", "the assignment").await;
    (socket, ride, assigned)
}

/// A ride id nobody made (it follows the id rule).
const UNKNOWN_RIDE: &str = "0123456789abcdef0123456789abcdef";

async fn the_assigned_drivers_steps_reach_the_ride_stream_on_another_instance(mode: Mode) {
    let cluster = start(mode, 1).await;
    let (mut driver, mut ride, assigned) = won_ride(&cluster, "r-steps", "d-steps").await;
    let mut last_ts = assigned["ts"].as_u64().expect("a ts");
    for (step, status) in [("arrived", "driver_arrived"), ("in_progress", "in_progress"), ("completed", "completed")] {
        assert_eq!(driver.report_step(&ride.id, step).await, "ok", "the assigned driver reports {step}");
        let seen = ride.expect_status(status, &format!("{status} on the rider's instance")).await;
        let ts = seen["ts"].as_u64().expect("a ts");
        assert!(ts > last_ts, "ids only grow: {ts} after {last_ts}");
        last_ts = ts;
        if status == "completed" {
            assert!(seen.get("driverId").is_none() && seen.get("trackingToken").is_none(), "over: {seen}");
        } else {
            assert_eq!(seen["driverId"], "d-steps", "under way, the status names its driver: {seen}");
            assert!(seen["trackingToken"].is_string(), "under way, the status carries a tracking token: {seen}");
        }
    }
    // Retry-safe: the same step again (its answer was lost, say) is `ok` and publishes nothing.
    assert_eq!(driver.report_step(&ride.id, "completed").await, "ok", "completed, repeated");
    ride.stream.expect_quiet(QUIET, "a repeated step changes nothing").await;
}

async fn a_step_back_is_a_conflict_and_changes_nothing(mode: Mode) {
    let cluster = start(mode, 1).await;
    let (mut driver, mut ride, _) = won_ride(&cluster, "r-back", "d-back-step").await;
    // Skipping `arrived` is allowed.
    assert_eq!(driver.report_step(&ride.id, "in_progress").await, "ok", "straight to in_progress");
    ride.expect_status("in_progress", "the trip").await;
    assert_eq!(driver.report_step(&ride.id, "arrived").await, "conflict", "arrived after in_progress");
    ride.stream.expect_quiet(QUIET, "a refused step publishes nothing").await;
    assert_eq!(driver.report_step(&ride.id, "completed").await, "ok", "forward again");
    ride.expect_status("completed", "the end").await;
    assert_eq!(driver.report_step(&ride.id, "in_progress").await, "conflict", "in_progress after completed");
}

async fn a_driver_not_assigned_to_the_ride_is_forbidden_its_steps(mode: Mode) {
    let cluster = start(mode, 1).await;
    let (mut driver, mut ride, _) = won_ride(&cluster, "r-mine", "d-mine").await;
    let mut stranger = DriverSocket::connect(cluster.rider_side(), &driver_token("d-stranger")).await;
    for step in ["arrived", "in_progress", "completed"] {
        assert_eq!(stranger.report_step(&ride.id, step).await, "forbidden", "another driver reports {step}");
    }
    ride.stream.expect_quiet(QUIET, "nothing a stranger says moves the ride").await;
    // A ride still searching has no driver yet: nobody's step.
    let searching = request_ride(cluster.rider_side(), "r-unmatched").await;
    assert_eq!(stranger.report_step(&searching.id, "arrived").await, "forbidden", "a searching ride");
    assert_eq!(driver.report_step(&ride.id, "arrived").await, "ok", "its own driver still may");
    ride.expect_status("driver_arrived", "the real driver's step").await;
}

async fn a_step_of_an_unknown_ride_is_not_found(mode: Mode) {
    let cluster = start(mode, 1).await;
    let mut driver = DriverSocket::connect(cluster.driver_side(), &driver_token("d-lost")).await;
    for step in ["arrived", "in_progress", "completed"] {
        assert_eq!(driver.report_step(UNKNOWN_RIDE, step).await, "not_found", "{step} of a ride nobody made");
    }
    driver.send_text(json!({"type": "ride_progress", "rideId": "a.b", "status": "arrived"}).to_string()).await;
    assert_eq!(driver.expect_error_frame("a step of a malformed ride id").await.code, "invalid_id");
    driver.send_text(json!({"type": "ride_progress", "rideId": UNKNOWN_RIDE, "status": "cancelled"}).to_string()).await;
    assert_eq!(driver.expect_error_frame("a status a driver cannot report").await.code, "invalid_message");
}

async fn after_completed_the_driver_is_offered_rides_again_without_saying_it_is_available(mode: Mode) {
    let cluster = start(mode, 1).await;
    let (mut driver, mut ride, _) = won_ride(&cluster, "r-first-trip", "d-shift").await;
    assert_eq!(driver.report_step(&ride.id, "completed").await, "ok", "the drop-off");
    ride.expect_status("completed", "the first trip's end").await;
    // No `availability` sent since the accept (the session sends only what the test writes).
    let next = request_ride(cluster.rider_side(), "r-second-trip").await;
    let offer = expect_offer(&mut driver, "an offer after completing, with no new availability").await;
    assert_eq!(offer["rideId"], next.id.as_str());
}
