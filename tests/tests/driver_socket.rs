//! The driver WebSocket's manners: a bad message earns an error frame and the socket stays
//! open; a frame over 4 KiB is abuse and closes it with 1009; 4 KiB itself is allowed.
//!
//! Contract: PROTOCOL.md, "Errors" (WebSocket errors), "Location" (validity), "Driver
//! WebSocket" (at most 4 KiB per frame), "Precise points / Numbers".

use ridecast_tests::driver::Ending;
use ridecast_tests::tokens::{driver_token, rider_token};
use ridecast_tests::{DriverSocket, EXPECT, Fix, Origin, Route, TsClock, poll, wait_until_stored};

/// The contract's frame limit.
const MAX_FRAME: usize = 4 * 1024;

/// A valid location frame padded with whitespace (still valid JSON) to exactly `size` bytes.
fn padded_location_frame(fix: &Fix, size: usize) -> String {
    let compact = fix.frame();
    assert!(compact.len() < size, "the compact frame must be shorter than {size}");
    let body = compact.strip_suffix('}').expect("a JSON object");
    let frame = format!("{body}{}}}", " ".repeat(size - compact.len()));
    assert_eq!(frame.len(), size);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_an_error_frame_and_the_socket_stays_open() {
    let origin = Origin::builder().start().await;
    let driver = "d-bad-input";
    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let (lat, lng) = route.point(0);
    let location = |fields: &str| format!(r#"{{"type":"location",{fields}}}"#);

    let bad_messages = [
        ("malformed JSON", r#"{"type":"location","lat":"#.to_owned()),
        ("text that is not JSON", "hello".to_owned()),
        ("JSON that is not an object", "[1,2,3]".to_owned()),
        ("an unknown type", format!(r#"{{"type":"teleport","lat":{lat},"lng":{lng},"ts":{}}}"#, clock.tick())),
        ("a message without a type", format!(r#"{{"lat":{lat},"lng":{lng},"ts":{}}}"#, clock.tick())),
        ("lat above 90", location(&format!(r#""lat":90.5,"lng":{lng},"ts":{}"#, clock.tick()))),
        ("lat below -90", location(&format!(r#""lat":-91,"lng":{lng},"ts":{}"#, clock.tick()))),
        ("lng beyond 180", location(&format!(r#""lat":{lat},"lng":180.5,"ts":{}"#, clock.tick()))),
        ("a number too large for a double", location(&format!(r#""lat":1e999,"lng":{lng},"ts":{}"#, clock.tick()))),
        ("a non-finite number (NaN)", location(&format!(r#""lat":NaN,"lng":{lng},"ts":{}"#, clock.tick()))),
        ("a non-finite number (Infinity)", location(&format!(r#""lat":{lat},"lng":Infinity,"ts":{}"#, clock.tick()))),
        ("lat given as a string", location(&format!(r#""lat":"{lat}","lng":{lng},"ts":{}"#, clock.tick()))),
        ("a location without ts", location(&format!(r#""lat":{lat},"lng":{lng}"#))),
        ("a location without lat", location(&format!(r#""lng":{lng},"ts":{}"#, clock.tick()))),
    ];
    for (what, frame) in &bad_messages {
        socket.send_text(frame.clone()).await;
        socket.expect_error_frame(&format!("{what}: {frame}")).await;
    }

    // Still open and still listening: a valid location after all that is accepted.
    let good = Fix::at((lat, lng), clock.tick());
    socket.send_location(good).await;
    wait_until_stored(&origin, driver, &rider_token("r1", driver), &good, "a valid location after bad ones").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_of_exactly_4_kib_is_accepted() {
    let origin = Origin::builder().start().await;
    let driver = "d-4kib";
    let token = rider_token("r1", driver);
    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());

    let at_limit = Fix::at(route.point(0), clock.tick());
    socket.send_text(padded_location_frame(&at_limit, MAX_FRAME)).await;
    wait_until_stored(&origin, driver, &token, &at_limit, "a location in a frame of exactly 4096 bytes").await;

    let after = Fix::at(route.point(1), clock.tick());
    socket.send_location(after).await;
    wait_until_stored(&origin, driver, &token, &after, "the next location on the same socket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_4_kib_closes_the_socket_with_1009() {
    let origin = Origin::builder().start().await;
    let driver = "d-too-big";
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());

    for size in [MAX_FRAME + 1, 64 * 1024] {
        let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
        let fix = Fix::at(route.point(0), clock.tick());
        socket.send_text(padded_location_frame(&fix, size)).await;
        let what = format!("a {size}-byte frame");
        // An error frame may precede the close; `expect_end` checks its shape.
        let (_errors, ending) = socket.expect_end(EXPECT, &what).await;
        assert_eq!(ending, Ending::Closed(Some(1009)), "{what} closes the socket with 1009 (message too big)");
    }

    // The sockets are closed, so nothing more can come of the oversized frames: none was stored.
    let polled = poll(&origin, driver, &rider_token("r1", driver), None).await;
    assert_eq!(polled.status, 404, "an oversized frame is not processed; polling found {}", polled.body);
}
