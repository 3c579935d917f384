//! Redis dies (SIGKILL) and comes back empty on the same port while riders and a driver are
//! connected. The origins keep their client connections, say they are not ready while Redis is
//! gone, and carry new cell changes again once it is back.
//!
//! Contract: PROTOCOL.md, "Operations" (`/readyz`: Redis reachable when configured) and "Names"
//! (Redis is the bus between instances). The contract does not say that clients are
//! disconnected when the bus fails, and SSE streams and driver sockets do not depend on Redis
//! to exist, so this test holds the origin to keeping them: the *same* rider stream and the
//! *same* driver socket must work after the restart, without reconnecting.

use std::time::Duration;

use ridecast_tests::raw_sse::Next;
use ridecast_tests::rider::location_path;
use ridecast_tests::tokens::{driver_token, rider_token};
use ridecast_tests::wait::poll_until;
use ridecast_tests::{DriverSocket, EXPECT, Fix, Origin, RawSse, RedisServer, Route, SeenLocation, TsClock};

/// How long the origins get to notice Redis going away or coming back.
const NOTICE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stay_connected_through_a_redis_restart_and_pushes_resume() {
    let mut redis = RedisServer::start().await;
    let driver_side = Origin::builder().redis(&redis).heartbeat_secs(1).start().await;
    let rider_side = Origin::builder().redis(&redis).heartbeat_secs(1).start().await;
    let driver = "d-outage";
    let auth = format!("Bearer {}", rider_token("r1", driver));
    let mut rider = RawSse::open(rider_side.addr(), &location_path(driver), &[("Authorization", &auth)]).await;
    assert_eq!(rider.status(), 200);
    let mut socket = DriverSocket::connect(&driver_side, &driver_token(driver)).await;
    let (route, mut clock) = (Route::san_francisco(), TsClock::new());

    let before = Fix::at(route.point(0), clock.tick());
    socket.send_location(before).await;
    let frame = rider.next_event(EXPECT, "a location before the outage").await;
    SeenLocation::parse(&frame.data().unwrap_or_default()).assert_is(driver, &before, "before the outage");

    redis.kill9().await;
    for (name, origin) in [("driver-side", &driver_side), ("rider-side", &rider_side)] {
        poll_until(NOTICE, format!("/readyz on the {name} origin to answer 503 while Redis is down"), || async {
            (origin.readyz().await == Some(503)).then_some(())
        })
        .await;
    }

    // The rider's stream stays open: heartbeats keep coming while Redis is down.
    match rider.next_within(Duration::from_secs(3)).await {
        Some(Next::Frame(_)) => {}
        Some(Next::End { clean }) => panic!("the rider's stream ended (clean: {clean}) when Redis went down"),
        None => panic!("no heartbeat on the rider's stream for 3 s while Redis is down (--heartbeat-secs 1)"),
    }
    // The driver's socket stays open too; a location sent now may be refused with an error
    // frame (the store is gone), but must not close the socket.
    let during = Fix::at(route.point(1), clock.tick());
    socket.send_location(during).await;
    if let Err(why) = socket.is_open_after(Duration::from_secs(1)).await {
        assert!(why.contains("\"type\":\"error\""), "the driver's socket during the outage: {why}");
    }

    redis.restart().await;
    for (name, origin) in [("driver-side", &driver_side), ("rider-side", &rider_side)] {
        poll_until(NOTICE, format!("/readyz on the {name} origin to answer 200 after Redis is back"), || async {
            (origin.readyz().await == Some(200)).then_some(())
        })
        .await;
    }

    // A cell change now reaches the rider on the same stream. Re-subscribing may trail
    // readiness by a moment, so a fresh cell change is sent every 2 s, for up to NOTICE.
    let deadline = tokio::time::Instant::now() + NOTICE;
    let mut sent_after = Vec::new();
    let arrived = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no location reached the rider within {NOTICE:?} after Redis came back; sent {} cell changes",
            sent_after.len()
        );
        let fix = Fix::at(route.point(2 + sent_after.len() as u32), clock.tick());
        socket.send_location(fix).await;
        sent_after.push(fix);
        let mut arrived = None;
        let window = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Some(next) = rider.next_within(window.saturating_duration_since(tokio::time::Instant::now())).await {
            match next {
                Next::Frame(frame) if frame.is_event() => {
                    let seen = SeenLocation::parse(&frame.data().unwrap_or_default());
                    // The update sent during the outage may legitimately show up late.
                    if seen.ts != during.ts {
                        arrived = Some(seen);
                        break;
                    }
                }
                Next::Frame(_) => {}
                Next::End { clean } => panic!("the rider's stream ended (clean: {clean}) after Redis came back"),
            }
        }
        if let Some(seen) = arrived {
            break seen;
        }
    };
    let fix =
        sent_after.iter().find(|f| f.ts == arrived.ts).unwrap_or_else(|| panic!("unexpected location {arrived:?}"));
    arrived.assert_is(driver, fix, "a cell change after Redis came back, on the same stream and socket");
    eprintln!("after the restart, the rider got a location after {} cell change(s)", sent_after.len());
}
