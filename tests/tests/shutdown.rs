//! SIGTERM: the origin stops being ready, ends SSE streams so riders reconnect elsewhere,
//! closes driver sockets with 1012 (service restart), and exits within its drain bound.
//!
//! Contract: PROTOCOL.md, "Operations"; CLI.md, `--drain-secs` and "SIGTERM: drain then exit 0".

use std::time::{Duration, Instant};

use ridecast_tests::driver::Ending;
use ridecast_tests::rider::location_path;
use ridecast_tests::tokens::{driver_token, rider_token};
use ridecast_tests::wait::poll_until;
use ridecast_tests::{DriverSocket, EXPECT, Fix, Origin, RawSse, Route, TsClock};

const DRAIN_SECS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_closes_sockets_with_1012_and_exits_within_the_drain_bound() {
    let mut origin = Origin::builder().drain_secs(DRAIN_SECS).start().await;
    let drain = Duration::from_secs(DRAIN_SECS);
    let driver = "d-drain";
    let auth = format!("Bearer {}", rider_token("r1", driver));
    let mut rider = RawSse::open(origin.addr(), &location_path(driver), &[("Authorization", &auth)]).await;
    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
    socket.send_location(Fix::at(Route::san_francisco().point(0), TsClock::new().tick())).await;
    rider.next_event(EXPECT, "a location before SIGTERM").await;

    origin.sigterm();
    let signalled = Instant::now();

    // Not ready any more: 503, or nobody listening.
    let readiness = poll_until(EXPECT, "/readyz to stop answering 200 after SIGTERM", || async {
        match origin.readyz().await {
            Some(200) => None,
            other => Some(other),
        }
    })
    .await;
    assert!(matches!(readiness, Some(503) | None), "/readyz after SIGTERM: 503 or closed, got {readiness:?}");

    let (_frames, clean) = rider.expect_end(drain + EXPECT, "the rider's SSE stream after SIGTERM").await;
    eprintln!("SSE stream ended {} after SIGTERM", if clean { "cleanly" } else { "by a cut connection" });

    let (_errors, ending) = socket.expect_end(drain + EXPECT, "the driver's socket after SIGTERM").await;
    assert_eq!(ending, Ending::Closed(Some(1012)), "the driver's socket is closed with 1012 (service restart)");

    // The bound is the drain time; a second of slack for process teardown.
    let status = origin.wait_exit(drain + Duration::from_secs(1)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "SIGTERM: drain then exit 0, got {status}");
    assert!(took <= drain + Duration::from_secs(1), "the origin took {took:?} to exit; the drain bound is {drain:?}");
}
