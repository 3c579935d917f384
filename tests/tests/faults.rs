//! Faults against real processes, under load: Redis killed with SIGKILL and started again, one of
//! three origins killed with SIGKILL, a rider that stops reading for a minute while its driver
//! floods, and ten thousand connections opened and then dropped without a goodbye.
//!
//! Each scenario says what must hold *through* the fault (who stays connected, what is still
//! delivered) and *after* it (what comes back, what the origin gives back). The origin's own
//! process is the witness: `/healthz`, `/readyz` and `/metrics`, its open file descriptors and
//! resident memory in `/proc/<pid>`, and its log, which must not show a panic (a panicking task
//! does not take a tokio process down, so "nothing crashed" is read from the log).
//!
//! Contract: PROTOCOL.md, "Operations" (`/healthz`, `/readyz`), "Rider HTTP and SSE" (`retry:`,
//! `id:`, the current value on connect unless `Last-Event-ID` has it, latest value only for a
//! slow reader), "Driver WebSocket" (an offer is sent again after the driver reconnects to any
//! instance), "Chat WebSocket" (messages survive any origin instance); docs/API.md, "What
//! survives an instance, and where it is kept".

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use ridecast_protocol::chat::ChatMessage;
use ridecast_tests::chat::{AssignedRide, DROPOFF, PICKUP};
use ridecast_tests::http::{Auth, get, post_json, status_of};
use ridecast_tests::process::{Bytes, RssPeak, fd_count, rss};
use ridecast_tests::raw_sse::{CaughtUp, KernelBufferProbe, Next, RawOptions};
use ridecast_tests::rider::location_path;
use ridecast_tests::tokens::{driver_token, rider_token, rider_token_without_drv};
use ridecast_tests::wait::{now_ms, poll_until, within};
use ridecast_tests::{
    ChatSocket, Cluster, DriverSocket, EXPECT, Fix, Mode, Origin, QUIET, RawSse, RedisServer, RiderStream, Route,
    SeenLocation, TsClock,
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

/// How long an origin gets to notice Redis going away or coming back (its reconnect backoff).
const NOTICE: Duration = Duration::from_secs(15);

/// Time between two locations of one driver under load; every location is in a new grid cell,
/// so every one is stored and (after the origin's 200 ms coalescing) pushed.
const PACE: Duration = Duration::from_millis(50);

/// Cells a route goes through before it starts again: each step is ~150 m north of the last,
/// so a flood of many thousands would otherwise walk off the map.
const ROUTE_CELLS: u32 = 1_000;

/// Events every rider must have seen for the load to count as flowing (a couple of seconds' worth
/// after the origin's 200 ms coalescing).
const FLOWING: u64 = 5;

/// `--sse-retry-ms` of the origins whose riders are expected to reconnect: short, so that the
/// EventSource-like riders below come back quickly.
const RETRY_MS: u64 = 500;

// ---------------------------------------------------------------------------------------------
// 1. Redis killed with SIGKILL under load, then started again on its port.
// ---------------------------------------------------------------------------------------------

/// Redis dies while eight drivers stream locations into two origins and sixteen riders (each
/// driver followed on both origins) read them. It then comes back *empty* (no persistence):
/// the origins must not depend on anything they stored before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_and_restarted_empty_leaves_origins_up_and_riders_get_the_newest_locations() {
    redis_killed_under_load(RedisServer::start().await).await;
}

/// The same with Redis as production should run it (append-only file): it comes back with its
/// data, the drivers' stored locations included, which the new, newer locations must replace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_and_restarted_from_its_append_only_file_changes_nothing_for_riders() {
    redis_killed_under_load(RedisServer::start_persistent().await).await;
}

async fn redis_killed_under_load(mut redis: RedisServer) {
    const DRIVERS: usize = 8;
    let mut origins = Vec::new();
    for _ in 0..2 {
        origins.push(Origin::builder().redis(&redis).sse_retry_ms(RETRY_MS).start().await);
    }
    let mut drivers = Vec::new();
    for i in 0..DRIVERS {
        drivers.push(LoadDriver::connect(&origins[i % 2], &format!("d-redis-{i}"), i).await);
    }
    // Each driver followed on both origins, so every delivery is checked locally and across Redis.
    let mut followers = Vec::new();
    for driver in &drivers {
        for (j, origin) in origins.iter().enumerate() {
            let name = format!("{} on origin {j}", driver.id);
            followers.push(Follower::start(name, &driver.id, origin.addr(), origin.addr()));
        }
    }

    let mut statuses: Vec<_> = drivers.iter().map(|driver| (driver.id.clone(), driver.status.subscribe())).collect();
    let (stop, stopped) = watch::channel(false);
    let load =
        join_all(drivers.iter_mut().enumerate().map(|(i, driver)| driver.drive(&origins[i % 2], stopped.clone())));
    let scenario = async {
        for follower in &mut followers {
            follower.wait_until(EXPECT, "locations flowing before the fault", |seen| seen.events >= FLOWING).await;
        }

        redis.kill9().await;
        let killed = Instant::now();
        for (j, origin) in origins.iter().enumerate() {
            poll_until(NOTICE, format!("/readyz of origin {j} to answer 503 while Redis is down"), || async {
                (origin.readyz().await == Some(503)).then_some(())
            })
            .await;
            assert_eq!(status_of(&origin.url("/healthz")).await, Some(200), "/healthz of origin {j}: still alive");
        }
        let not_ready_after = killed.elapsed();
        // The outage reaches the drivers: each is told once that its locations are not stored
        // (docs/API.md, "Driver WebSocket"), and keeps sending.
        for (id, status) in &mut statuses {
            let what = format!("{id} to be told `unavailable` while Redis is down");
            let told = within(NOTICE, &what, status.wait_for(|s| s.errors.iter().any(|code| code == "unavailable")));
            told.await.unwrap_or_else(|_| panic!("{id} stopped driving"));
        }
        for (j, origin) in origins.iter().enumerate() {
            assert_eq!(status_of(&origin.url("/healthz")).await, Some(200), "/healthz of origin {j} during the outage");
        }
        let outage = killed.elapsed();

        redis.restart().await;
        let restarted = Instant::now();
        for (j, origin) in origins.iter().enumerate() {
            poll_until(NOTICE, format!("/readyz of origin {j} to answer 200 after Redis is back"), || async {
                (origin.readyz().await == Some(200)).then_some(())
            })
            .await;
        }
        let ready_after = restarted.elapsed();
        // Pushes resume on every rider's stream: locations the driver sent after both origins
        // were ready again reach each rider (re-subscribing may trail readiness a little).
        let back = now_ms();
        let mut resumed = Vec::new();
        for follower in &mut followers {
            let what = "a location sent after Redis came back";
            resumed.push(follower.wait_until(NOTICE, what, |s| s.last.as_ref().is_some_and(|l| l.ts > back)).await);
        }
        let resumed_after = restarted.elapsed();
        for (follower, resumed) in followers.iter_mut().zip(resumed) {
            let what = "locations flowing again after Redis came back";
            follower.wait_until(EXPECT, what, |seen| seen.events >= resumed.events + FLOWING).await;
        }
        eprintln!(
            "redis outage: /readyz 503 on both origins {not_ready_after:?} after the kill, every driver told \
             `unavailable` after {outage:?}; /readyz 200 again {ready_after:?} after the restart; pushes \
             reached every rider {resumed_after:?} after the restart, {FLOWING} more each by {:?}",
            restarted.elapsed()
        );
        stop.send_replace(true);
    };
    tokio::join!(load, scenario);

    newest_location_of_every_driver_reaches_every_rider(&mut drivers, &mut followers).await;

    for (j, origin) in origins.iter().enumerate() {
        assert_eq!(status_of(&origin.url("/healthz")).await, Some(200), "/healthz of origin {j} at the end");
        assert_eq!(origin.readyz().await, Some(200), "/readyz of origin {j} at the end");
        assert_no_panic(origin, &format!("origin {j}"));
    }
    for driver in &drivers {
        let status = driver.status.borrow();
        eprintln!(
            "{}: {} locations sent, {} reconnects, errors {:?}",
            driver.id, status.sent, status.reconnects, status.errors
        );
    }
    for follower in followers {
        let name = follower.name.clone();
        let seen = follower.finish().await;
        eprintln!("rider of {name}: {} events, {} stream ends (each followed by a reconnect)", seen.events, seen.ends);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. One of three origins killed with SIGKILL under load.
// ---------------------------------------------------------------------------------------------

/// Three origins and Redis, nine drivers streaming locations (three into each origin), each
/// followed on every origin. On the instance that dies: riders of every driver, three of the load
/// drivers, a driver holding an acknowledged ride offer, and a rider's chat. After the kill its
/// riders' streams end and they come back elsewhere with `Last-Event-ID` (as EventSource does
/// after `retry:`) to the newest value and never an older one; its load drivers reconnect
/// elsewhere and are followed again; the offer is delivered again on the driver's new instance
/// with the same `offerId` and can be accepted; the chat's history is complete on another
/// instance. Riders on the surviving instances are not disturbed at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_origins_under_load_moves_its_riders_drivers_offer_and_chat_to_the_others() {
    const DRIVERS: usize = 9;
    const VICTIM: usize = 2;
    let mut cluster = Cluster::start(Mode::Redis, |origin| {
        origin
            .sse_retry_ms(RETRY_MS)
            // Long enough that no step of the test, however slow the machine, outlives the offer.
            .flag("--offer-expiry-ms", 60_000)
            .flag("--offer-resend-ms", 500)
            .flag("--chat-rate", 1_000)
            .flag("--chat-burst", 1_000)
    })
    .await;

    // A ride with a chat: its rider talks on the instance that will die, its driver elsewhere.
    let ride = AssignedRide::start(&cluster.origins[VICTIM], &cluster.origins[0], "r-chat", "d-chat").await;
    let mut rider_chat = ChatSocket::connect(&cluster.origins[VICTIM], &ride.ride_id, &ride.ride_token, None).await;
    let mut driver_chat = ChatSocket::connect(&cluster.origins[1], &ride.ride_id, &ride.driver_token, None).await;
    let mut said: Vec<ChatMessage> = Vec::new();
    for k in 0..3 {
        let line = rider_chat.say(&format!("r-{k}"), &format!("rider line {k}")).await;
        assert_eq!(driver_chat.next_message("the rider's line").await, line);
        said.push(line);
        let line = driver_chat.say(&format!("d-{k}"), &format!("driver line {k}")).await;
        assert_eq!(rider_chat.next_message("the driver's line").await, line);
        said.push(line);
    }

    // A driver on the doomed instance holds an offer it has acknowledged but not answered. The
    // chat's driver is on its ride and the load drivers never go online, so it is the only
    // candidate.
    let offer_driver = "d-offer";
    let mut offer_socket = DriverSocket::connect(&cluster.origins[VICTIM], &driver_token(offer_driver)).await;
    offer_socket.send_text(json!({"type": "availability", "available": true}).to_string()).await;
    let near_pickup = Fix::at((PICKUP.0 + 200.0 / 111_195.0, PICKUP.1), now_ms());
    offer_socket.send_location(near_pickup).await;
    let probe = rider_token("r-probe", offer_driver);
    let victim = &cluster.origins[VICTIM];
    ridecast_tests::wait_until_stored(victim, offer_driver, &probe, &near_pickup, "the offer driver's position").await;
    let (ride_id, mut ride_status) = request_ride(&cluster.origins[0], "r-offer").await;
    let offer = offer_socket.next_frame_of("offer", EXPECT, "the offer, on the instance about to die").await;
    assert_eq!(offer["rideId"], ride_id.as_str(), "the offer is for the ride just requested: {offer}");
    offer_socket.send_text(json!({"type": "offer_ack", "offerId": offer["offerId"]}).to_string()).await;

    // Load: drivers connected to every instance, each followed on every instance. Riders and
    // drivers of the doomed instance fall back to a survivor, as a load balancer would send them.
    let mut drivers = Vec::new();
    for i in 0..DRIVERS {
        drivers.push(LoadDriver::connect(&cluster.origins[i % 3], &format!("d-kill-{i}"), i).await);
    }
    let mut followers = Vec::new();
    for (i, driver) in drivers.iter().enumerate() {
        for (j, origin) in cluster.origins.iter().enumerate() {
            let fallback = if j == VICTIM { cluster.origins[i % VICTIM].addr() } else { origin.addr() };
            let name = format!("{} on origin {j}", driver.id);
            followers.push(Follower::start(name, &driver.id, origin.addr(), fallback));
        }
    }
    let on_victim = |follower: &Follower| follower.first == cluster.origins[VICTIM].addr();
    let victim_followers: Vec<bool> = followers.iter().map(on_victim).collect();

    let (survivors, doomed) = cluster.origins.split_at_mut(VICTIM);
    let (survivors, victim) = (&*survivors, &mut doomed[0]);
    let victim_pid = victim.pid().expect("the victim runs");
    let (stop, stopped) = watch::channel(false);
    let load = join_all(
        drivers.iter_mut().enumerate().map(|(i, driver)| driver.drive(&survivors[i % VICTIM], stopped.clone())),
    );
    let scenario = async {
        for follower in &mut followers {
            follower.wait_until(EXPECT, "locations flowing before the kill", |seen| seen.events >= FLOWING).await;
        }
        victim.kill9().await;
        let killed = now_ms();
        let killed_at = Instant::now();
        eprintln!("killed origin {VICTIM} (pid {victim_pid}) under load");

        // Its riders' streams end; each comes back on a survivor with Last-Event-ID and gets a
        // location newer than any it had (the follower asserts ids only grow).
        for (follower, _) in followers.iter_mut().zip(&victim_followers).filter(|(_, on_victim)| **on_victim) {
            let what = "its stream to end, a reconnect elsewhere, and a location sent after the kill";
            follower
                .wait_until(EXPECT * 2, what, |seen| {
                    seen.ends >= 1 && seen.last.as_ref().is_some_and(|l| l.ts > killed)
                })
                .await;
        }
        let riders_back_after = killed_at.elapsed();

        // Its drivers' sockets end (no close frame: the process is gone).
        expect_driver_socket_end(&mut offer_socket, "the offer driver's socket on the killed instance").await;
        let (_frames, _ending) = rider_chat.expect_end(EXPECT, "the rider's chat on the killed instance").await;

        // The offer driver reconnects elsewhere: the same offer comes again and can be accepted.
        let mut again = DriverSocket::connect(&survivors[1], &driver_token(offer_driver)).await;
        let resent = again.next_frame_of("offer", EXPECT, "the offer again, after reconnecting elsewhere").await;
        assert_eq!(resent["offerId"], offer["offerId"], "the same offerId, so the app can de-duplicate: {resent}");
        assert_eq!(resent["rideId"], offer["rideId"], "{resent}");
        again.send_text(json!({"type": "accept", "offerId": resent["offerId"]}).to_string()).await;
        let result = again.next_frame_of("offer_result", EXPECT, "the accept on the new instance").await;
        assert_eq!(result["offerId"], offer["offerId"], "{result}");
        assert_eq!(result["result"], "confirmed", "the reconnected driver wins the ride: {result}");
        loop {
            let event = ride_status.next_event(EXPECT, "the assignment on the ride's stream").await;
            let state: Value = serde_json::from_str(&event.data).expect("a ride status is JSON");
            if state["status"] == "searching" {
                continue;
            }
            assert_eq!(state["status"], "driver_assigned", "{state}");
            assert_eq!(state["driverId"], offer_driver, "{state}");
            break;
        }

        // Every chat message sent before the kill is in the history on another instance.
        let mut late = ChatSocket::connect(&survivors[0], &ride.ride_id, &ride.ride_token, None).await;
        let history = late.next_messages(said.len(), "the chat history on a surviving instance").await;
        assert_eq!(history, said, "the whole conversation from before the kill, in order");
        late.expect_quiet(QUIET, "nothing beyond the stored conversation").await;
        eprintln!(
            "riders of the killed instance were back with newer locations {riders_back_after:?} after the kill; \
             offer {} delivered again and confirmed, {} chat messages in the history",
            offer["offerId"],
            said.len()
        );
        stop.send_replace(true);
    };
    tokio::join!(load, scenario);

    // Riders and drivers that moved off the killed instance included.
    newest_location_of_every_driver_reaches_every_rider(&mut drivers, &mut followers).await;
    for (i, driver) in drivers.iter().enumerate() {
        let status = driver.status.borrow();
        let expected = u32::from(i % 3 == VICTIM);
        assert_eq!(status.reconnects, expected, "reconnects of {} (first on origin {}): {status:?}", driver.id, i % 3);
    }
    for (follower, on_victim) in followers.into_iter().zip(victim_followers) {
        let name = follower.name.clone();
        let seen = follower.finish().await;
        let expected_ends = u32::from(on_victim);
        assert_eq!(seen.ends, expected_ends, "stream ends of the rider of {name}");
        eprintln!("rider of {name}: {} events, {} stream ends", seen.events, seen.ends);
    }
    for (j, origin) in survivors.iter().enumerate() {
        assert_eq!(status_of(&origin.url("/healthz")).await, Some(200), "/healthz of surviving origin {j}");
        assert_eq!(origin.readyz().await, Some(200), "/readyz of surviving origin {j}");
        assert_no_panic(origin, &format!("surviving origin {j}"));
    }
}

/// `POST /api/rides` from the pickup every chat ride uses; returns the ride id and its status
/// stream, opened at once.
async fn request_ride(origin: &Origin, rider: &str) -> (String, RiderStream) {
    let body = json!({
        "pickup": {"lat": PICKUP.0, "lng": PICKUP.1},
        "dropoff": {"lat": DROPOFF.0, "lng": DROPOFF.1},
    });
    let response =
        post_json(&origin.url("/api/rides"), Auth::Bearer(&rider_token_without_drv(rider)), body.to_string()).await;
    assert_eq!(response.status().as_u16(), 201, "a ride is created");
    let created: Value = serde_json::from_str(&response.text().await.unwrap_or_default()).expect("a JSON body");
    let id = created["rideId"].as_str().expect("a rideId").to_owned();
    let token = created["token"].as_str().expect("a ride token").to_owned();
    let stream = RiderStream::open_with(origin, &format!("/api/sse/rides/{id}"), Auth::Bearer(&token), None).await;
    (id, stream)
}

/// Waits for a driver's socket to end, skipping offers resent before the end.
async fn expect_driver_socket_end(socket: &mut DriverSocket, what: &str) {
    let deadline = tokio::time::Instant::now() + EXPECT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match socket.is_open_after(left).await {
            Ok(()) => panic!("{what}: still open after {EXPECT:?}"),
            Err(why) if why.starts_with("unexpected text frame") && why.contains(r#""type":"offer""#) => {}
            Err(why) if why.starts_with("socket ended") => return,
            Err(why) => panic!("{what}: expected the end, got {why}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A rider that stops reading for a minute while its driver floods.
// ---------------------------------------------------------------------------------------------

/// How long the stalled rider reads nothing. Below the origin's 120 s limit after which a rider
/// whose socket takes nothing is dropped (docs/API.md, "SSE streams").
const STALL: Duration = Duration::from_secs(60);

/// The longest the stall may be drawn out on a slow machine, for the flood to be big enough (see
/// [`STALL_RSS_BOUND`]): still well below the origin's 120 s limit.
const STALL_CAP: Duration = Duration::from_secs(100);

/// How much the origin's resident memory may grow while the rider stalls, over a baseline taken
/// after a warm-up flood: allocator and runtime noise (measured: well under 1 MiB). A queue of
/// the events the stalled rider did not take (≈250 bytes each) would pass it after ~17,000
/// events; the flood goes on until it is at least twice that big (the test fails if it cannot
/// be, within [`STALL_CAP`]; an idle machine sends ~2,000 a second), so such a queue could not
/// hide under the bound.
const STALL_RSS_BOUND: Bytes = Bytes::mib(4);

/// Updates sent before the baseline is taken: the allocator and every buffer warmed, the
/// stalled rider's kernel buffers full.
const WARM_UP: u32 = 1_000;

/// How long each update may take to reach the riders that keep reading.
const PROMPT: Duration = Duration::from_secs(2);

/// Riders of the flooding driver that keep reading.
const PROMPT_RIDERS: usize = 2;

/// One rider's socket takes nothing for a minute while its driver floods cell changes,
/// uncoalesced. The origin keeps only the latest value for that rider, so its resident memory
/// stays where it was; the riders that keep reading get every update, in order, as it comes; and
/// the stalled rider, reading again, gets what the kernel had buffered and then the newest value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rider_that_stops_reading_for_a_minute_costs_the_origin_no_memory_slows_no_one_and_gets_the_newest_value() {
    // No coalescing: every update is stored and pushed, so the stall really has a flood to hold.
    let origin = Origin::builder().ingest_interval_ms(0).start().await;
    let pid = origin.pid().expect("the origin runs");
    // The longest id the contract allows, so that each event is large (~250 bytes).
    let driver = format!("flood-{}", "x".repeat(58));
    let auth = format!("Bearer {}", rider_token("r-stalled", &driver));
    let mut stalled =
        RawSse::open_with(origin.addr(), &location_path(&driver), &[("Authorization", &auth)], RawOptions::stalling())
            .await;
    assert_eq!(stalled.status(), 200, "the stalled rider's stream opens");
    let stalled_since = Instant::now();
    let mut prompt = Vec::new();
    for k in 0..PROMPT_RIDERS {
        prompt.push(RiderStream::open(&origin, &driver, &rider_token(&format!("r-prompt-{k}"), &driver)).await);
    }
    let mut socket = DriverSocket::connect(&origin, &driver_token(&driver)).await;
    let mut flood =
        Flood { route: Route::san_francisco(), clock: TsClock::new(), step: 0, newest: None, frame_bytes: 0 };
    // What the kernel alone holds for a reader like the stalled one (see stalled_reader.rs).
    let mut probe = KernelBufferProbe::new(RawOptions::stalling()).await;

    for _ in 0..WARM_UP {
        flood.push(&driver, &mut socket, &mut prompt, &mut probe).await;
    }
    let baseline = rss(pid);
    let mut peak = RssPeak::new(pid);
    let flood_started = Instant::now();
    let big_enough = |flood: &Flood| u64::from(flood.step) * flood.frame_bytes as u64 >= 2 * STALL_RSS_BOUND.0;
    while stalled_since.elapsed() < STALL || (!big_enough(&flood) && stalled_since.elapsed() < STALL_CAP) {
        for _ in 0..100 {
            flood.push(&driver, &mut socket, &mut prompt, &mut probe).await;
        }
        peak.sample();
    }
    let flood_took = flood_started.elapsed();
    let updates = flood.step;
    let newest = flood.newest.expect("the flood sent updates");
    let unread = Bytes(u64::from(updates) * flood.frame_bytes as u64);
    eprintln!(
        "stall: {updates} updates ({} per s after the warm-up) while one rider read nothing for {:?}; every \
         prompt rider got each within {PROMPT:?}. Origin RSS: baseline {baseline}, peak {} over {} samples \
         (+{}); the stalled rider was sent {unread} it did not read",
        f64::from(updates - WARM_UP) / flood_took.as_secs_f64(),
        stalled_since.elapsed(),
        peak.peak(),
        peak.samples(),
        peak.peak().above(baseline),
    );
    assert!(
        unread.0 >= 2 * STALL_RSS_BOUND.0,
        "the flood was too small to tell a queue from noise: {unread} of events is less than twice the bound \
         {STALL_RSS_BOUND}"
    );
    assert!(
        peak.peak() <= baseline + STALL_RSS_BOUND,
        "the origin's RSS grew from {baseline} to {} (more than {STALL_RSS_BOUND}) while one rider stalled: it \
         keeps what the stalled rider did not read instead of only the latest value",
        peak.peak()
    );

    // Resume: what the kernel held, then the origin's one pending value, which is the newest.
    let CaughtUp { events: received, bytes } = stalled.catch_up_to(&driver, &newest).await;
    let kernel_events = probe.accepted() / (bytes / received.max(1)).max(1);
    eprintln!(
        "stall: on resuming the rider got {received} events ({bytes} bytes) of {updates}; the kernel held ~{} bytes \
         (~{kernel_events} events) for a latest-only control connection",
        probe.accepted()
    );
    // Slack for timing differences and the one frame a server may be part-way through.
    let allowed = kernel_events + kernel_events / 4 + 8;
    assert!(
        received <= allowed,
        "after a minute's stall the rider got {received} events, but the kernel held only ~{kernel_events}: the \
         origin kept a backlog instead of only the latest value"
    );
    assert_no_panic(&origin, "the origin");
}

/// The flooding driver: each update a new cell, sent only when every prompt rider has the last.
struct Flood {
    route: Route,
    clock: TsClock,
    step: u32,
    newest: Option<Fix>,
    /// Size of one event on the wire, as the prompt riders saw it.
    frame_bytes: usize,
}

impl Flood {
    /// Sends one update and waits until every prompt rider has it: they must see every single
    /// one, in order, within [`PROMPT`].
    async fn push(
        &mut self,
        driver: &str,
        socket: &mut DriverSocket,
        prompt: &mut [RiderStream],
        probe: &mut KernelBufferProbe,
    ) {
        let heading = f64::from(self.step % 360) + 0.123_456_789_012;
        let at = self.route.point(self.step % ROUTE_CELLS);
        let fix = Fix::at(at, self.clock.tick()).moving(heading, 13.370_000_000_1);
        socket.send_location(fix).await;
        for (k, rider) in prompt.iter_mut().enumerate() {
            let what = format!("update {} at prompt rider {k}", self.step);
            let event = rider.next_event(PROMPT, &what).await;
            SeenLocation::parse(&event.data).assert_is(driver, &fix, &what);
            if k == 0 {
                let frame = format!("event: location\nid: {}\ndata: {}\n\n", event.id, event.data);
                self.frame_bytes = frame.len();
                // The same frame, offered to the control connection at the same moment.
                probe.offer(frame.as_bytes());
            }
        }
        self.step += 1;
        self.newest = Some(fix);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Ten thousand connections opened, then dropped abruptly.
// ---------------------------------------------------------------------------------------------

/// Rider SSE streams in the crowd, spread over [`FOLLOWED`] drivers.
const CROWD_STREAMS: usize = 5_000;
/// Driver WebSockets in the crowd, each its own driver.
const CROWD_DRIVERS: usize = 3_000;
/// Connections that send half a request head and then nothing.
const CROWD_IDLE: usize = 2_000;
const CROWD: usize = CROWD_STREAMS + CROWD_DRIVERS + CROWD_IDLE;
/// Drivers the crowd's streams follow: ten streams share each hub.
const FOLLOWED: usize = 500;
/// Connections being opened at once: enough to be quick on two cores, few enough that the
/// origin's accept queue never overflows.
const OPENING_AT_ONCE: usize = 200;
/// Descriptors the origin may hold beyond (or below) a fresh origin's count: a health check's
/// or `/metrics` request's connection still open, or one more than when the baseline was read.
const FD_SLACK: usize = 4;
/// Resident memory the origin may keep, over its baseline, once the crowd is gone and the
/// allocator has had time to return freed pages. The crowd costs ~28 MiB (~2.9 KB per
/// connection) and the origin measured gives all of it back; 420 bytes leaked per connection
/// would exceed this.
const CROWD_RSS_BOUND: Bytes = Bytes::mib(4);

/// Ten thousand connections to one instance (rider streams, driver sockets, and clients that
/// never finish their request head) are dropped at once without a goodbye: no WebSocket close,
/// no end of request; half of them reset (RST), half closed (FIN). Everything they cost must
/// come back: every file descriptor, every gauge (`ridecast_sse_connections`,
/// `ridecast_driver_connections`, `ridecast_tcp_connections`, `ridecast_hubs`), and the memory.
/// A connection whose end goes unnoticed, or whose state outlives it, shows up in one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_dropped_abruptly_give_back_every_descriptor_gauge_and_the_memory() {
    // Room for the crowd; idle heads and silent sockets are kept open by the origin for the
    // whole test, so that only the abrupt drop can end them.
    let origin = Origin::builder()
        .flag("--max-connections", CROWD + 1_000)
        .flag("--header-timeout-secs", 600)
        .flag("--ws-idle-secs", 600)
        .start()
        .await;
    let pid = origin.pid().expect("the origin runs");
    // A fresh origin's descriptors (maybe with a start-up health check's connection still open,
    // hence the slack both ways below).
    let baseline_fds = fd_count(pid);
    // A token per stream, as every rider has its own (the origin caps the streams one token holds).
    let rider_tokens: Vec<String> = (0..CROWD_STREAMS)
        .map(|n| format!("Bearer {}", rider_token(&format!("r-crowd-{n}"), &followed(n % FOLLOWED))))
        .collect();

    // A small crowd first, so that the baseline is an origin that has served connections.
    let warm_up = open_crowd(&origin, 0..500, &rider_tokens).await;
    drop_abruptly(warm_up);
    wait_for_gauges(&origin, EXPECT * 2, "the warm-up crowd to be gone", 0, 0, 0).await;
    poll_until(EXPECT, "the origin's descriptors back to a fresh origin's after the warm-up", || async {
        (fd_count(pid) <= baseline_fds + FD_SLACK).then_some(())
    })
    .await;
    let baseline_rss = rss(pid);

    let opening = Instant::now();
    let crowd = open_crowd(&origin, 0..CROWD, &rider_tokens).await;
    let opened_in = opening.elapsed();
    let gauges =
        wait_for_gauges(&origin, EXPECT * 2, "the gauges to count the crowd", CROWD_STREAMS, CROWD_DRIVERS, CROWD)
            .await;
    assert_eq!(gauges.hubs, FOLLOWED as u64, "one hub per followed driver: {gauges:?}");
    let crowd_fds = fd_count(pid);
    assert!(
        crowd_fds + FD_SLACK >= baseline_fds + CROWD,
        "the origin holds {crowd_fds} descriptors with {CROWD} connections open; baseline {baseline_fds}"
    );
    let crowd_rss = rss(pid);

    let dropping = Instant::now();
    drop_abruptly(crowd);
    let drain_limit = Duration::from_secs(30);
    wait_for_gauges(&origin, drain_limit, "every gauge back to nothing after the crowd dropped", 0, 0, 0).await;
    let gauges_back_in = dropping.elapsed();
    let fds = poll_until(drain_limit, "the origin's descriptors back to a fresh origin's", || async {
        let fds = fd_count(pid);
        (fds <= baseline_fds + FD_SLACK).then_some(fds)
    })
    .await;
    let fds_back_in = dropping.elapsed();
    // The allocator (jemalloc, without background threads) returns freed pages over seconds, and
    // only as the threads that freed them allocate again. So while waiting the origin serves a
    // trickle of the same kinds of connections, opened and dropped, as it would in real life.
    let rss_limit = Duration::from_secs(60);
    let deadline = Instant::now() + rss_limit;
    let after_rss = loop {
        let now = rss(pid);
        if now <= baseline_rss + CROWD_RSS_BOUND || Instant::now() >= deadline {
            break now;
        }
        drop_abruptly(open_crowd(&origin, 0..20, &rider_tokens).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rss_settled_in = dropping.elapsed();
    let growth = crowd_rss.above(baseline_rss);
    eprintln!(
        "crowd: {CROWD} connections ({CROWD_STREAMS} SSE, {CROWD_DRIVERS} driver sockets, {CROWD_IDLE} idle heads) \
         opened in {opened_in:?}; origin fds {baseline_fds} -> {crowd_fds} -> {fds} (gauges at zero after \
         {gauges_back_in:?}, fds after {fds_back_in:?}); RSS {baseline_rss} -> {crowd_rss} (+{growth}, {} bytes per \
         connection) -> {after_rss} after {rss_settled_in:?}",
        growth.0 / CROWD as u64
    );
    assert!(
        after_rss <= baseline_rss + CROWD_RSS_BOUND,
        "the origin kept {} of the {growth} the crowd cost it, {rss_limit:?} after the crowd left (bound \
         {CROWD_RSS_BOUND}): a leak of ~{} bytes per connection",
        after_rss.above(baseline_rss),
        after_rss.above(baseline_rss).0 / CROWD as u64
    );
    assert_no_panic(&origin, "the origin");
}

/// The id of the `d`-th driver the crowd follows.
fn followed(d: usize) -> String {
    format!("d-crowd-{d}")
}

/// One connection of the crowd.
enum Held {
    Stream(RawSse),
    Driver(Box<DriverSocket>),
    /// Half a request head, then silence.
    Idle(tokio::net::TcpStream),
}

/// Opens connections `range` of the crowd, [`OPENING_AT_ONCE`] at a time: of every ten, five
/// SSE streams, three driver sockets and two idle heads.
async fn open_crowd(origin: &Origin, range: std::ops::Range<usize>, rider_tokens: &[String]) -> Vec<Held> {
    futures_util::stream::iter(range)
        .map(|i| open_one(origin, i, rider_tokens))
        .buffer_unordered(OPENING_AT_ONCE)
        .collect()
        .await
}

async fn open_one(origin: &Origin, i: usize, rider_tokens: &[String]) -> Held {
    match i % 10 {
        0..5 => {
            // The stream's number among the streams: every followed driver gets ten.
            let n = i / 10 * 5 + i % 10;
            let headers = [("Authorization", rider_tokens[n].as_str())];
            let stream = RawSse::open(origin.addr(), &location_path(&followed(n % FOLLOWED)), &headers).await;
            assert_eq!(stream.status(), 200, "crowd stream {i}");
            Held::Stream(stream)
        }
        5..8 => {
            let socket = DriverSocket::connect(origin, &driver_token(&format!("d-crowd-socket-{i}"))).await;
            Held::Driver(Box::new(socket))
        }
        _ => {
            let mut tcp = tokio::net::TcpStream::connect(origin.addr())
                .await
                .unwrap_or_else(|e| panic!("connecting idle connection {i}: {e}"));
            let half_head = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", location_path(&followed(0)), origin.addr());
            tcp.write_all(half_head.as_bytes()).await.unwrap_or_else(|e| panic!("writing idle connection {i}: {e}"));
            Held::Idle(tcp)
        }
    }
}

/// Drops every connection without a goodbye: no WebSocket close, no end of request. Every
/// other one is reset (`SO_LINGER` 0: a RST), the rest closed with a plain FIN.
fn drop_abruptly(crowd: Vec<Held>) {
    for (i, held) in crowd.into_iter().enumerate() {
        let reset = i % 2 == 0;
        match held {
            Held::Stream(stream) if reset => stream.reset(),
            Held::Driver(socket) if reset => (*socket).reset(),
            Held::Idle(tcp) if reset => {
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
            }
            Held::Stream(_) | Held::Driver(_) | Held::Idle(_) => {}
        }
    }
}

/// The connection gauges and the hub count, read from one `/metrics` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gauges {
    sse: u64,
    drivers: u64,
    tcp: u64,
    hubs: u64,
}

/// Every `ridecast_*` sample of one `GET /metrics`.
async fn metrics(origin: &Origin) -> Vec<(String, u64)> {
    let response = get(&origin.url("/metrics"), Auth::None, &[]).await;
    let text = response.text().await.expect("reading /metrics");
    text.lines()
        .filter_map(|line| line.strip_prefix("ridecast_"))
        .filter_map(|line| line.split_once(' '))
        .filter_map(|(name, value)| Some((name.to_owned(), value.trim().parse().ok()?)))
        .collect()
}

async fn gauges(origin: &Origin) -> Gauges {
    let samples = metrics(origin).await;
    let value = |name: &str| {
        samples
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("/metrics has no ridecast_{name}"))
    };
    Gauges {
        sse: value("sse_connections"),
        drivers: value("driver_connections"),
        tcp: value("tcp_connections"),
        hubs: value("hubs"),
    }
}

/// Waits until the gauges show `sse` streams, `drivers` driver sockets and `tcp` connections
/// besides the `/metrics` request's own; with no streams, also no hubs.
async fn wait_for_gauges(
    origin: &Origin,
    limit: Duration,
    what: &str,
    sse: usize,
    drivers: usize,
    tcp: usize,
) -> Gauges {
    let deadline = Instant::now() + limit;
    loop {
        let now = gauges(origin).await;
        let expected = now.sse == sse as u64
            && now.drivers == drivers as u64
            && now.tcp == tcp as u64 + 1
            && (sse > 0 || now.hubs == 0);
        if expected {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what} ({sse} SSE, {drivers} driver sockets, {tcp} TCP besides \
             /metrics' own): the gauges stay at {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Riders and drivers under load, shared by the scenarios above.
// ---------------------------------------------------------------------------------------------

/// What one rider has seen of one driver, across reconnects.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// The newest location received.
    last: Option<SeenLocation>,
    /// Events received.
    events: u64,
    /// Times the stream ended under the rider; each was followed by a reconnect.
    ends: u32,
}

impl Seen {
    fn last_ts(&self) -> u64 {
        self.last.as_ref().map_or(0, |l| l.ts)
    }
}

/// A rider following one driver's location the way a browser's EventSource does: it reads
/// events and remembers the last `id`; when the stream ends it waits the `retry:` the stream
/// gave and opens it again with `Last-Event-ID`, on `fallback` (where a load balancer sends it
/// once its instance is gone). It asserts that ids only grow, across reconnects too: an origin
/// that ignored `Last-Event-ID` and re-sent a value the rider has would fail it.
struct Follower {
    name: String,
    driver: String,
    first: SocketAddr,
    seen: watch::Receiver<Seen>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    fn start(name: String, driver: &str, first: SocketAddr, fallback: SocketAddr) -> Self {
        let (seen_tx, seen) = watch::channel(Seen::default());
        let (stop, stopped) = watch::channel(false);
        let auth = format!("Bearer {}", rider_token(&format!("r-of-{driver}"), driver));
        let task = tokio::spawn(follow(name.clone(), location_path(driver), auth, first, fallback, seen_tx, stopped));
        Self { name, driver: driver.to_owned(), first, seen, stop, task }
    }

    /// Waits until what the rider has seen satisfies `done`, and returns it.
    async fn wait_until(&mut self, limit: Duration, what: &str, done: impl FnMut(&Seen) -> bool) -> Seen {
        let name = &self.name;
        let waited = tokio::time::timeout(limit, self.seen.wait_for(done)).await.map(|seen| seen.map(|s| s.clone()));
        match waited {
            Ok(Ok(seen)) => seen,
            Ok(Err(_)) => panic!("the rider of {name} stopped (see its panic above) while waiting for {what}"),
            Err(_) => {
                let seen = self.seen.borrow().clone();
                panic!("timed out after {limit:?} waiting for {what} at the rider of {name}; it has seen {seen:?}")
            }
        }
    }

    /// Stops following and returns what the rider saw.
    ///
    /// # Panics
    /// If the rider's task panicked (a contract violation it saw).
    async fn finish(self) -> Seen {
        self.stop.send_replace(true);
        if let Err(e) = self.task.await {
            panic!("the rider of {} failed: {e}", self.name);
        }
        self.seen.borrow().clone()
    }
}

async fn follow(
    name: String,
    path: String,
    auth: String,
    first: SocketAddr,
    fallback: SocketAddr,
    seen: watch::Sender<Seen>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut addr = first;
    let mut last_id: Option<u64> = None;
    let mut retry = None;
    loop {
        let last_event_id = last_id.map(|id| id.to_string());
        let mut headers = vec![("Authorization", auth.as_str())];
        if let Some(id) = &last_event_id {
            headers.push(("Last-Event-ID", id.as_str()));
        }
        let mut stream = RawSse::open(addr, &path, &headers).await;
        assert_eq!(stream.status(), 200, "the rider of {name}: an EventSource gives up for good on anything but 200");
        loop {
            let next = tokio::select! {
                _ = stopped.changed() => return,
                next = stream.next_within(Duration::from_secs(3_600)) => next,
            };
            match next {
                Some(Next::Frame(frame)) => {
                    retry = frame.retry().or(retry);
                    let Some(data) = frame.data() else { continue };
                    let location = SeenLocation::parse(&data);
                    let id = location.ts;
                    assert_eq!(
                        frame.id(),
                        Some(id.to_string().as_str()),
                        "the rider of {name}: a location's id is its ts"
                    );
                    if let Some(last) = last_id {
                        assert!(
                            id > last,
                            "the rider of {name}: ids only grow, also across reconnects with Last-Event-ID; got \
                             {id} after {last}"
                        );
                    }
                    last_id = Some(id);
                    seen.send_modify(|s| {
                        s.last = Some(location);
                        s.events += 1;
                    });
                }
                Some(Next::End { .. }) | None => break,
            }
        }
        // EventSource waits `retry:` before it reconnects.
        seen.send_modify(|s| s.ends += 1);
        let retry = retry.unwrap_or_else(|| panic!("the rider of {name}: the stream ended without a retry: first"));
        tokio::time::sleep(Duration::from_millis(retry)).await;
        addr = fallback;
    }
}

/// What a driver under load has done, for the test to watch while it drives.
#[derive(Debug, Clone, Default)]
struct DriverStatus {
    /// Locations sent.
    sent: u64,
    /// Connections opened again after one ended.
    reconnects: u32,
    /// Codes of the error frames received.
    errors: Vec<String>,
}

/// A driver's app under load: a location in a new grid cell every [`PACE`], its `ts` the wall
/// clock. When its connection ends it connects again (to a fallback instance given by the
/// test, as a load balancer would choose), and carries on.
struct LoadDriver {
    id: String,
    token: String,
    route: Route,
    step: u32,
    last_ts: u64,
    socket: DriverSocket,
    status: watch::Sender<DriverStatus>,
}

impl LoadDriver {
    /// Connects driver `id`, whose route starts in a place of its own (`n`-th).
    async fn connect(origin: &Origin, id: &str, n: usize) -> Self {
        let token = driver_token(id);
        let socket = DriverSocket::connect(origin, &token).await;
        let route = Route::from(37.70 + 0.01 * n as f64, -122.45);
        let status = watch::channel(DriverStatus::default()).0;
        Self { id: id.to_owned(), token, route, step: 0, last_ts: 0, socket, status }
    }

    fn next_fix(&mut self) -> Fix {
        self.step += 1;
        self.last_ts = now_ms().max(self.last_ts + 1);
        Fix::at(self.route.point(self.step % ROUTE_CELLS), self.last_ts)
    }

    /// Sends locations until `stopped` turns true, reconnecting to `fallback` when the
    /// connection ends. Between two locations it reads: error frames are recorded, and the end
    /// of the connection is noticed at once.
    async fn drive(&mut self, fallback: &Origin, mut stopped: watch::Receiver<bool>) {
        while !*stopped.borrow_and_update() {
            let fix = self.next_fix();
            if self.socket.try_send_location(fix).await.is_err() {
                self.reconnect(fallback).await;
                continue;
            }
            self.status.send_modify(|s| s.sent += 1);
            match self.socket.is_open_after(PACE).await {
                Ok(()) => {}
                Err(why) => match why.strip_prefix("unexpected text frame ") {
                    Some(text) => {
                        let frame: Value = serde_json::from_str(text)
                            .unwrap_or_else(|e| panic!("{}: a server frame is JSON ({e}): {text}", self.id));
                        assert_eq!(
                            frame["type"], "error",
                            "{}: only error frames come to a load driver: {text}",
                            self.id
                        );
                        let code = frame["code"].as_str().unwrap_or_default().to_owned();
                        self.status.send_modify(|s| s.errors.push(code));
                    }
                    None => self.reconnect(fallback).await,
                },
            }
        }
    }

    async fn reconnect(&mut self, origin: &Origin) {
        self.socket = DriverSocket::connect(origin, &self.token).await;
        self.status.send_modify(|s| s.reconnects += 1);
    }

    /// Sends one more location, in a new cell: the newest every rider must end up with.
    async fn send_final(&mut self) -> Fix {
        let fix = self.next_fix();
        self.socket.send_location(fix).await;
        fix
    }
}

/// Each driver sends one more location, in a new cell, and every rider must end up with the
/// newest location of the driver it follows.
async fn newest_location_of_every_driver_reaches_every_rider(drivers: &mut [LoadDriver], followers: &mut [Follower]) {
    let mut finals = Vec::new();
    for driver in drivers {
        finals.push((driver.id.clone(), driver.send_final().await));
    }
    for follower in followers {
        let (driver, fix) = finals.iter().find(|(id, _)| *id == follower.driver).expect("the follower's driver");
        let seen = follower.wait_until(EXPECT, "the driver's newest location", |s| s.last_ts() == fix.ts).await;
        seen.last.expect("a location").assert_is(driver, fix, &format!("the newest location at {}", follower.name));
    }
}

/// Fails the test if the origin's log shows a panic: a panicking task does not end a tokio
/// process, so a crash inside the origin can only be seen there.
fn assert_no_panic(origin: &Origin, name: &str) {
    let log = origin.log();
    let panics: Vec<&str> = log.lines().filter(|line| line.contains("panicked at")).collect();
    assert!(panics.is_empty(), "{name} panicked: {panics:#?}");
}
