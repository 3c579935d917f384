//! A rider that stops reading costs the origin one value, not a queue: other riders keep
//! getting every update at once, and when the slow one reads again it gets the newest value
//! after whatever the kernel had already buffered, never a long backlog.
//!
//! Contract: PROTOCOL.md, "Every SSE stream: ... a slow reader is never buffered more than the
//! latest value per stream (older ones are dropped)".

use std::time::Duration;

use ridecast_tests::raw_sse::{CaughtUp, KernelBufferProbe, RawOptions};
use ridecast_tests::rider::location_path;
use ridecast_tests::tokens::{driver_token, rider_token};
use ridecast_tests::{DriverSocket, Fix, Origin, RawSse, RiderStream, Route, SeenLocation, TsClock};

/// Cell changes sent while one rider stalls. At ~250 bytes per event this is about 1 MB, many
/// times what the kernel buffers for a reader with [`RawOptions::stalling`] (~150 KB on loopback).
const UPDATES: u32 = 4000;

/// How long each update may take to reach the rider that keeps reading.
const PROMPT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_gets_the_newest_value_without_a_backlog_and_slows_no_one() {
    stalled_reader_scenario(RawOptions::stalling()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_on_a_reused_keep_alive_connection_gets_no_backlog_either() {
    // The stream is requested after another request on the same connection, which a server
    // may serve through a different path (an HTTP library's buffered body writer).
    stalled_reader_scenario(RawOptions::stalling().on_a_reused_connection()).await;
}

async fn stalled_reader_scenario(options: RawOptions) {
    // No coalescing, so every update is ingested and pushed and the stall really fills buffers.
    let origin = Origin::builder().ingest_interval_ms(0).start().await;
    // The longest id the contract allows, so that each event is large (~250 bytes).
    let driver = format!("stall-{}", "x".repeat(58));
    assert_eq!(driver.len(), 64);
    let path = location_path(&driver);
    let stalled_auth = format!("Bearer {}", rider_token("r-stalled", &driver));

    let mut stalled = RawSse::open_with(origin.addr(), &path, &[("Authorization", &stalled_auth)], options).await;
    assert_eq!(stalled.status(), 200, "the stalled rider's stream opens");
    let mut prompt = RiderStream::open(&origin, &driver, &rider_token("r-prompt", &driver)).await;
    let mut socket = DriverSocket::connect(&origin, &driver_token(&driver)).await;
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());
    let mut probe = KernelBufferProbe::new(RawOptions::stalling()).await;

    // The stalled rider reads nothing from here on. Each update is sent only after the
    // prompt rider got the previous one, so it must see every single one, in order.
    let mut newest = None;
    for k in 0..UPDATES {
        let heading = f64::from(k % 360) + 0.123_456_789_012;
        let fix = Fix::at(route.point(k), clock.tick()).moving(heading, 13.370_000_000_1);
        socket.send_location(fix).await;
        let event = prompt.next_event(PROMPT, &format!("update {k} of {UPDATES} at the prompt rider")).await;
        SeenLocation::parse(&event.data).assert_is(&driver, &fix, &format!("update {k} at the prompt rider"));
        // The same frame, offered to the control connection at the same moment.
        probe.offer(format!("event: location\nid: {}\ndata: {}\n\n", event.id, event.data).as_bytes());
        newest = Some(fix);
    }
    let newest = newest.expect("at least one update");

    // Resume: drain what the kernel held, then the origin's one pending value.
    let CaughtUp { events: received, bytes } = stalled.catch_up_to(&driver, &newest).await;

    // The control connection tells how much the kernel alone held for such a reader.
    let frame_bytes = bytes / received.max(1);
    let kernel_events = probe.accepted() / frame_bytes;
    eprintln!(
        "stalled reader: {received} events ({bytes} bytes) after resuming, of {UPDATES} sent; \
         a latest-only control connection had {} bytes (~{kernel_events} events) in kernel buffers",
        probe.accepted()
    );
    // Slack for timing differences and for the one frame a server may be part-way through.
    let allowed = kernel_events + kernel_events / 4 + 8;
    assert!(
        received <= allowed,
        "after resuming, the stalled rider got {received} events for {UPDATES} updates, but the kernel held \
         only ~{kernel_events} for the control connection: the origin kept a backlog of old values instead of \
         only the latest"
    );
    assert!(received < UPDATES as usize / 4, "{received} of {UPDATES} updates is a backlog, not the latest value");
}
