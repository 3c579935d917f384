//! The polling endpoint, `GET /api/drivers/{id}/location`: 404 before anything is known, the
//! location with an `ETag`, 304 for `If-None-Match`, a new tag for a newer update, and the same
//! tokens as the location stream. A ride's tracking token works only while the ride is under way
//! (`driver_assigned`, `driver_arrived`, `in_progress`): after `completed` it is refused and the
//! streams it opened end.
//!
//! Contract: PROTOCOL.md, "Rider HTTP and SSE", "Precise points / Who is who", and the v1.1
//! "Ride lifecycle" and "Token scopes".

use ridecast_tests::chat::AssignedRide;
use ridecast_tests::http::{Auth, expect_error, get};
use ridecast_tests::rider::polling_path;
use ridecast_tests::tokens::{
    GARBAGE_TOKEN, bad_signature_rider_token, driver_token, expired_rider_token, rider_token, rider_token_without_drv,
};
use ridecast_tests::{
    Cluster, DriverSocket, EXPECT, Fix, Mode, RiderStream, Route, TsClock, in_both_modes, on_a_redis_cluster_too, poll,
    wait_until_stored,
};

in_both_modes!(
    polling_is_404_before_any_location,
    polling_answers_the_location_with_an_etag_and_304_when_it_matches,
    a_newer_update_gets_a_new_etag,
    a_tracking_token_works_through_the_trip_and_is_refused_once_the_ride_is_completed,
);

on_a_redis_cluster_too!(a_tracking_token_works_through_the_trip_and_is_refused_once_the_ride_is_completed,);

async fn polling_is_404_before_any_location(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let driver = "d-unknown";
    let response =
        get(&cluster.rider_side().url(&polling_path(driver)), Auth::Bearer(&rider_token("r1", driver)), &[]).await;
    expect_error(response, 404, "polling a driver that never reported").await;
}

async fn polling_answers_the_location_with_an_etag_and_304_when_it_matches(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let driver = "d-poll";
    let token = rider_token("r1", driver);
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick()).moving(270.0, 4.25);
    socket.send_location(fix).await;

    let polled = wait_until_stored(cluster.rider_side(), driver, &token, &fix, "the driver's location").await;
    let content_type = polled.content_type.clone().unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "the location is JSON, got Content-Type {content_type:?}");
    let etag = polled.etag.clone().unwrap_or_else(|| panic!("a 200 polling answer carries an ETag: {polled:?}"));

    let matching = poll(cluster.rider_side(), driver, &token, Some(&etag)).await;
    assert_eq!(matching.status, 304, "If-None-Match with the current ETag: {matching:?}");
    assert!(matching.body.is_empty(), "a 304 has no body, got {:?}", matching.body);

    let other = poll(cluster.rider_side(), driver, &token, Some("\"some-other-tag\"")).await;
    assert_eq!(other.status, 200, "If-None-Match with another tag: {other:?}");
    other.location().assert_is(driver, &fix, "the location for a stale If-None-Match");
    assert_eq!(other.etag.as_deref(), Some(etag.as_str()), "the same location keeps its ETag");
}

async fn a_newer_update_gets_a_new_etag(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let driver = "d-etag";
    let token = rider_token("r1", driver);
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;

    let first = Fix::at(route.point(0), clock.tick());
    socket.send_location(first).await;
    let before = wait_until_stored(cluster.rider_side(), driver, &token, &first, "the first location").await;
    let old_tag = before.etag.clone().expect("an ETag on the first answer");

    // An in-cell move: stored though not pushed, so polling must see it.
    let moved = Fix::at(route.nudge(0, 2), clock.tick());
    socket.send_location(moved).await;
    let after = wait_until_stored(cluster.rider_side(), driver, &token, &moved, "an in-cell move").await;
    let new_tag = after.etag.clone().expect("an ETag on the newer answer");
    assert_ne!(new_tag, old_tag, "a newer location has a new ETag");

    let with_old_tag = poll(cluster.rider_side(), driver, &token, Some(&old_tag)).await;
    assert_eq!(with_old_tag.status, 200, "the old ETag no longer matches: {with_old_tag:?}");
    with_old_tag.location().assert_is(driver, &moved, "the newer location for the old ETag");
    let with_new_tag = poll(cluster.rider_side(), driver, &token, Some(&new_tag)).await;
    assert_eq!(with_new_tag.status, 304, "the new ETag matches: {with_new_tag:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_takes_the_same_tokens_as_the_location_stream() {
    let cluster = Cluster::start_default(Mode::Embedded).await;
    let origin = cluster.rider_side();
    let driver = "d-poll-auth";
    let url = origin.url(&polling_path(driver));
    let token = rider_token("r1", driver);
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick());
    socket.send_location(fix).await;
    wait_until_stored(origin, driver, &token, &fix, "the driver's location").await;

    let (bad_signature, expired) = (bad_signature_rider_token("r1", driver), expired_rider_token("r1", driver));
    for (what, auth) in [
        ("no token", Auth::None),
        ("a token that is not a JWT", Auth::Bearer(GARBAGE_TOKEN)),
        ("a token signed with another secret", Auth::Bearer(&bad_signature)),
        ("an expired token", Auth::Bearer(&expired)),
    ] {
        expect_error(get(&url, auth, &[]).await, 401, &format!("polling with {what}")).await;
    }
    for (what, token) in [
        ("the driver's own token", driver_token(driver)),
        ("a rider token without drv", rider_token_without_drv("r1")),
        ("a rider token for another driver", rider_token("r1", "d-other")),
    ] {
        expect_error(get(&url, Auth::Bearer(&token), &[]).await, 403, &format!("polling with {what}")).await;
    }
    let by_query = get(&url, Auth::Query(&token), &[]).await;
    assert_eq!(by_query.status().as_u16(), 200, "polling with ?token=");
}

async fn a_tracking_token_works_through_the_trip_and_is_refused_once_the_ride_is_completed(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let mut ride = AssignedRide::start(cluster.rider_side(), cluster.driver_side(), "r-trip", "d-trip").await;
    let (ride_id, driver, tracking) = (ride.ride_id.clone(), ride.driver.clone(), ride.tracking_token.clone());
    for step in ["arrived", "in_progress"] {
        assert_eq!(ride.driver_socket.report_step(&ride_id, step).await, "ok", "the driver reports {step}");
        for origin in &cluster.origins {
            let polled = poll(origin, &driver, &tracking, None).await;
            assert_eq!(polled.status, 200, "polling with the tracking token after {step}: {polled:?}");
        }
    }
    let mut stream = RiderStream::open(cluster.rider_side(), &driver, &tracking).await;
    stream.next_location("the driver's position while the trip is on").await;

    assert_eq!(ride.driver_socket.report_step(&ride_id, "completed").await, "ok", "the drop-off");
    let _clean_or_not = stream.expect_end(EXPECT, "the tracking stream once its ride is completed").await;
    for origin in &cluster.origins {
        let refused = poll(origin, &driver, &tracking, None).await;
        assert_eq!(refused.status, 403, "polling with the tracking token of a completed ride: {refused:?}");
        let reopened = RiderStream::try_open(
            origin,
            &ridecast_tests::rider::location_path(&driver),
            Auth::Bearer(&tracking),
            None,
        )
        .await;
        assert_eq!(
            reopened.map(|_| 200).unwrap_or_else(|(status, _)| status),
            403,
            "the stream, reopened after completed"
        );
    }
}
