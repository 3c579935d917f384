//! A driver's location reaches riders: on every instance through Redis, on the one instance
//! when embedded. Only grid-cell changes are pushed; in-cell moves are stored (polling sees
//! them); stale updates are neither pushed nor stored.
//!
//! Contract: PROTOCOL.md, "Location" and "Precise points / Grid cell".

use ridecast_tests::geo::{CELL, cell_of, same_cell_pair_that_cos_lat_would_split};
use ridecast_tests::tokens::{driver_token, rider_token};
use ridecast_tests::{
    Cluster, DriverSocket, Fix, Mode, QUIET, RiderStream, Route, TsClock, in_both_modes, on_a_redis_cluster_too,
    wait_until_stored,
};

in_both_modes!(
    a_driver_on_one_instance_reaches_riders_on_every_instance,
    in_cell_moves_are_stored_but_only_cell_changes_are_pushed,
    a_move_along_a_row_keeps_the_column_of_the_rows_latitude,
    stale_updates_are_neither_pushed_nor_stored,
);

on_a_redis_cluster_too!(
    a_driver_on_one_instance_reaches_riders_on_every_instance,
    in_cell_moves_are_stored_but_only_cell_changes_are_pushed,
);

async fn a_driver_on_one_instance_reaches_riders_on_every_instance(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let driver = "d-fanout";
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());

    // Two riders per rider-side instance: in Redis mode every delivery crosses the bus.
    let mut riders = Vec::new();
    for (i, origin) in cluster.rider_sides().iter().enumerate() {
        for j in 0..2 {
            riders.push(RiderStream::open(origin, driver, &rider_token(&format!("r{i}-{j}"), driver)).await);
        }
    }
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;

    let first = Fix::at(route.point(0), clock.tick()).moving(90.0, 8.3);
    socket.send_location(first).await;
    for rider in &mut riders {
        rider.expect_location(driver, &first, "the driver's first location, with heading and speed").await;
    }

    let second = Fix::at(route.point(1), clock.tick());
    socket.send_location(second).await;
    for rider in &mut riders {
        rider.expect_location(driver, &second, "the driver's next cell, without heading or speed").await;
    }
}

async fn in_cell_moves_are_stored_but_only_cell_changes_are_pushed(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let driver = "d-cells";
    let token = rider_token("r1", driver);
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let mut rider = RiderStream::open(cluster.rider_side(), driver, &token).await;
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;

    let start = Fix::at(route.point(0), clock.tick());
    socket.send_location(start).await;
    rider.expect_location(driver, &start, "the first location").await;

    for nudge in 1..=2 {
        let in_cell = Fix::at(route.nudge(0, nudge), clock.tick());
        assert_eq!(cell_of(in_cell.lat, in_cell.lng), cell_of(start.lat, start.lng));
        socket.send_location(in_cell).await;
        wait_until_stored(cluster.rider_side(), driver, &token, &in_cell, "an in-cell move").await;
        // Proving an absence: the move is stored, and must not be pushed within the quiet period.
        rider.expect_quiet(QUIET, "a move inside the same grid cell is stored but not pushed").await;
    }

    let next_column = Fix::at(route.east_of(0), clock.tick());
    let (start_row, start_col) = cell_of(start.lat, start.lng);
    assert_eq!(cell_of(next_column.lat, next_column.lng), (start_row, start_col + 1));
    socket.send_location(next_column).await;
    rider.expect_location(driver, &next_column, "a move to the next column of the same row").await;

    let next_row = Fix::at(route.point(1), clock.tick());
    socket.send_location(next_row).await;
    rider.expect_location(driver, &next_row, "a move to another row").await;
}

async fn a_move_along_a_row_keeps_the_column_of_the_rows_latitude(mode: Mode) {
    // The column uses cos(φ) of the *row's* latitude. Near 37.77° N, taking cos of the raw
    // latitude instead shifts columns by about one, so this south-to-north move inside one row
    // would look like a cell change to an origin that gets the formula wrong.
    let cluster = Cluster::start_default(mode).await;
    let driver = "d-row";
    let token = rider_token("r1", driver);
    let mut clock = TsClock::new();
    let (south, north) = same_cell_pair_that_cos_lat_would_split(37.7749, -122.4194);
    let mut rider = RiderStream::open(cluster.rider_side(), driver, &token).await;
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;

    let first = Fix::at(south, clock.tick());
    socket.send_location(first).await;
    rider.expect_location(driver, &first, "the first location, at the south edge of its row").await;

    let same_cell = Fix::at(north, clock.tick());
    socket.send_location(same_cell).await;
    wait_until_stored(cluster.rider_side(), driver, &token, &same_cell, "the move to the north edge of the row").await;
    // Proving an absence, as above.
    rider.expect_quiet(QUIET, "a move within one row and column (by cos φ of the row) is not pushed").await;

    let elsewhere = Fix::at((north.0 + 2.0 * CELL, north.1), clock.tick());
    socket.send_location(elsewhere).await;
    rider.expect_location(driver, &elsewhere, "the next real cell change").await;
}

async fn stale_updates_are_neither_pushed_nor_stored(mode: Mode) {
    let cluster = Cluster::start_default(mode).await;
    let driver = "d-stale";
    let token = rider_token("r1", driver);
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let mut rider = RiderStream::open(cluster.rider_side(), driver, &token).await;
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;

    let older = Fix::at(route.point(0), clock.tick());
    socket.send_location(older).await;
    rider.expect_location(driver, &older, "the first location").await;
    let current = Fix::at(route.point(1), clock.tick());
    socket.send_location(current).await;
    rider.expect_location(driver, &current, "the second location").await;
    wait_until_stored(cluster.rider_side(), driver, &token, &current, "the second location").await;

    // Both are cell changes, so only their timestamps can stop them.
    let same_ts = Fix::at(route.point(2), current.ts);
    let older_ts = Fix::at(route.point(3), older.ts);
    socket.send_location(same_ts).await;
    socket.send_location(older_ts).await;
    // Proving an absence: neither stale update is pushed...
    rider.expect_quiet(QUIET, "updates whose ts is not newer than the last accepted one are dropped").await;
    // ...nor stored.
    let polled = ridecast_tests::poll(cluster.rider_side(), driver, &token, None).await;
    polled.location().assert_is(driver, &current, "the stored location after stale updates");

    let newer = Fix::at(route.point(4), clock.tick());
    socket.send_location(newer).await;
    rider.expect_location(driver, &newer, "a newer update after the stale ones").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinates_reach_riders_and_polling_exactly_as_the_driver_sent_them() {
    // JSON numbers printed by a correct formatter round-trip exactly; an origin that parses
    // them with a fast, inexact float parser moves them by a unit in the last place.
    let cluster = Cluster::start_default(Mode::Embedded).await;
    let driver = "d-exact";
    let token = rider_token("r1", driver);
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let mut rider = RiderStream::open(cluster.rider_side(), driver, &token).await;
    let mut socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;

    for k in 0..4 {
        let fix = Fix::at(route.point(k), clock.tick()).moving(123.456_789_012_345_67, 13.370_000_000_000_01);
        socket.send_location(fix).await;
        let seen = rider.next_location(&format!("cell change {k}")).await;
        seen.assert_exactly(driver, &fix, &format!("cell change {k} on the SSE stream, bit for bit"));
        let polled = wait_until_stored(cluster.rider_side(), driver, &token, &fix, "the same location").await;
        polled.location().assert_exactly(
            driver,
            &fix,
            &format!("cell change {k} on the polling endpoint, bit for bit"),
        );
    }
}

/// `--threads 1` runs the origin on one thread (a current-thread runtime), the Redis client's
/// tasks included: a task that blocked it, or one that needed another thread to make progress,
/// would stall everything here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_origin_thread_carries_drivers_riders_and_redis_alike() {
    let redis = ridecast_tests::RedisServer::start().await;
    for with_redis in [false, true] {
        let builder = ridecast_tests::Origin::builder().flag("--threads", 1);
        let origin = if with_redis { builder.redis(&redis).start().await } else { builder.start().await };
        let driver = if with_redis { "d-one-thread-redis" } else { "d-one-thread" };
        let token = rider_token("r1", driver);
        let (route, mut clock) = (Route::san_francisco(), TsClock::new());
        let mut rider = RiderStream::open(&origin, driver, &token).await;
        let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
        for k in 0..3 {
            let fix = Fix::at(route.point(k), clock.tick());
            socket.send_location(fix).await;
            rider.expect_location(driver, &fix, &format!("cell change {k} on one thread (redis: {with_redis})")).await;
        }
        let in_cell = Fix::at(route.nudge(2, 1), clock.tick());
        socket.send_location(in_cell).await;
        wait_until_stored(&origin, driver, &token, &in_cell, "an in-cell move on one thread").await;
    }
}
