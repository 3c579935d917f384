//! Who may open what: 401 for a missing or invalid token, 403 for a valid token not allowed
//! here, decided before any WebSocket upgrade, in the contract's order, with the contract's
//! error body; `?token=` where headers cannot be set; tokens kept out of logs.
//!
//! Contract: PROTOCOL.md, "Tokens", "Errors", "Precise points / WebSocket auth, Order of checks,
//! Who is who".

use ridecast_protocol::{Claims, Id, Role};
use ridecast_tests::driver::Refusal;
use ridecast_tests::http::{Auth, error_body, expect_error, get};
use ridecast_tests::rider::{location_path, polling_path};
use ridecast_tests::tokens::{
    GARBAGE_TOKEN, bad_signature_driver_token, bad_signature_rider_token, claims, driver_token, expired_driver_token,
    expired_rider_token, mint, mint_with, rider_token, rider_token_without_drv,
};
use ridecast_tests::{DriverSocket, Fix, Origin, RiderStream, Route, TsClock, wait_until_stored};

/// Asserts the WebSocket upgrade was refused with `status` and the contract's error body.
fn assert_refused(result: Result<DriverSocket, Refusal>, status: u16, what: &str) {
    match result {
        Ok(_) => panic!("{what}: the driver WebSocket was upgraded; expected HTTP {status} before any upgrade"),
        Err(refusal) => {
            assert_eq!(refusal.status, status, "{what}: body {}", refusal.body);
            error_body(&refusal.body, status, what);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_location_stream_refuses_missing_and_invalid_tokens_with_401() {
    let origin = Origin::builder().start().await;
    let url = origin.url(&location_path("d1"));
    let bad_signature = bad_signature_rider_token("r1", "d1");
    let expired = expired_rider_token("r1", "d1");
    let cases = [
        ("no token", Auth::None),
        ("a token that is not a JWT", Auth::Bearer(GARBAGE_TOKEN)),
        ("a token signed with another secret", Auth::Bearer(&bad_signature)),
        ("a token that expired two minutes ago", Auth::Bearer(&expired)),
        ("a badly signed ?token=", Auth::Query(&bad_signature)),
        ("an expired ?token=", Auth::Query(&expired)),
    ];
    for (what, auth) in cases {
        expect_error(get(&url, auth, &[]).await, 401, &format!("location stream with {what}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_location_stream_refuses_tokens_not_allowed_there_with_403() {
    let origin = Origin::builder().start().await;
    let url = origin.url(&location_path("d1"));
    let ops = mint(&claims(Role::Ops, "ops1"));
    let edge = mint(&claims(Role::Edge, "edge1"));
    let cases = [
        ("the driver's own driver token", driver_token("d1")),
        ("a rider token without drv", rider_token_without_drv("r1")),
        ("a rider token for another driver", rider_token("r1", "d2")),
        ("an ops token", ops),
        ("an edge token", edge),
    ];
    for (what, token) in &cases {
        expect_error(get(&url, Auth::Bearer(token), &[]).await, 403, &format!("location stream with {what}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_socket_decides_auth_before_the_upgrade() {
    let origin = Origin::builder().start().await;
    let bad_signature = bad_signature_driver_token("d1");
    let expired = expired_driver_token("d1");
    let rider = rider_token("r1", "d1");
    let ops = mint(&claims(Role::Ops, "ops1"));
    let cases = [
        ("no token", Auth::None, 401),
        ("a token that is not a JWT", Auth::Bearer(GARBAGE_TOKEN), 401),
        ("a token signed with another secret", Auth::Bearer(&bad_signature), 401),
        ("an expired driver token", Auth::Bearer(&expired), 401),
        ("an expired ?token=", Auth::Query(&expired), 401),
        ("a rider token", Auth::Bearer(&rider), 403),
        ("a rider ?token=", Auth::Query(&rider), 403),
        ("an ops token", Auth::Bearer(&ops), 403),
    ];
    for (what, auth, status) in cases {
        let result = DriverSocket::try_connect(&origin, auth).await;
        assert_refused(result, status, &format!("/ws/rides with {what}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_token_works_where_headers_cannot_be_set_and_never_reaches_the_log() {
    // "Tokens never appear in logs": not at any level, so the origin logs everything here.
    let origin = Origin::builder().env("RUST_LOG", "trace").start().await;
    let driver = "d-query";
    let (driver_jwt, rider_jwt) = (driver_token(driver), rider_token("r1", driver));

    let mut rider = RiderStream::open_with(&origin, &location_path(driver), Auth::Query(&rider_jwt), None).await;
    let mut socket = match DriverSocket::try_connect(&origin, Auth::Query(&driver_jwt)).await {
        Ok(socket) => socket,
        Err(refusal) => panic!("/ws/rides?token= refused with {}: {}", refusal.status, refusal.body),
    };
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick());
    socket.send_location(fix).await;
    rider.expect_location(driver, &fix, "a location, driver and rider both authenticated by ?token=").await;
    let polled = get(&origin.url(&polling_path(driver)), Auth::Query(&rider_jwt), &[]).await;
    assert_eq!(polled.status().as_u16(), 200, "polling with ?token=");

    let log = origin.log();
    for (name, token) in [("driver", &driver_jwt), ("rider", &rider_jwt)] {
        let signature = token.rsplit('.').next().unwrap_or(token);
        assert!(!log.contains(signature), "the {name}'s token appears in the origin's log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_run_in_the_contract_order_token_then_ids_then_permission_then_existence() {
    let origin = Origin::builder().start().await;
    let for_d1 = rider_token("r1", "d1");
    let for_d2 = rider_token("r1", "d2");

    let no_token_bad_id = get(&origin.url(&location_path("a.b")), Auth::None, &[]).await;
    expect_error(no_token_bad_id, 401, "no token and a malformed id: 401 comes first").await;
    let bad_token_bad_id = get(&origin.url(&polling_path("a.b")), Auth::Bearer(GARBAGE_TOKEN), &[]).await;
    expect_error(bad_token_bad_id, 401, "an invalid token and a malformed id: 401 comes first").await;

    let bad_id_other_driver = get(&origin.url(&location_path("a.b")), Auth::Bearer(&for_d1), &[]).await;
    expect_error(bad_id_other_driver, 400, "a valid token and a malformed id: 400 before 403").await;

    let unknown_not_allowed = get(&origin.url(&polling_path("d2")), Auth::Bearer(&for_d1), &[]).await;
    expect_error(unknown_not_allowed, 403, "a driver with no location, not the token's drv: 403 before 404").await;

    let unknown_allowed = get(&origin.url(&polling_path("d2")), Auth::Bearer(&for_d2), &[]).await;
    expect_error(unknown_allowed, 404, "a driver with no location, the token's drv: 404").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_signed_with_the_previous_secret_still_verify_during_rotation() {
    const PREVIOUS: &str = "the-previous-ridecast-secret";
    let origin = Origin::builder().previous_secret(PREVIOUS).start().await;
    let driver = "d-rotation";
    let old_claims = Claims { drv: Some(Id::parse(driver).expect("id")), ..claims(Role::Rider, "r1") };

    let old_rider = mint_with(PREVIOUS, &old_claims);
    let response = get(&origin.url(&polling_path(driver)), Auth::Bearer(&old_rider), &[]).await;
    expect_error(response, 404, "a rider token signed with the previous secret is accepted (no location yet)").await;
    RiderStream::open(&origin, driver, &old_rider).await;

    let old_driver = mint_with(PREVIOUS, &claims(Role::Driver, driver));
    let mut socket = DriverSocket::connect(&origin, &old_driver).await;
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick());
    socket.send_location(fix).await;
    wait_until_stored(
        &origin,
        driver,
        &old_rider,
        &fix,
        "a location from a driver token signed with the previous secret",
    )
    .await;

    let unknown = bad_signature_rider_token("r1", driver);
    let response = get(&origin.url(&polling_path(driver)), Auth::Bearer(&unknown), &[]).await;
    expect_error(response, 401, "a token signed with neither secret").await;
}
