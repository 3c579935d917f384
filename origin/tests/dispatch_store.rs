//! The dispatch rules hold the same in both stores: the in-process book and the Lua scripts in
//! a real Redis. Each scenario runs against both.

use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config};
use ridecast_origin::dispatch::{
    AcceptOutcome, AckOutcome, Offer, OfferAttempt, OfferLimits, OfferState, RejectOutcome,
    store::{DispatchStore, embedded::EmbeddedDispatch, redis::RedisDispatch},
};
use ridecast_protocol::{Id, messages::LatLng};
use ridecast_tests::RedisServer;

const STALE_MS: u64 = 30_000;
const ONE_AT_A_TIME: OfferLimits = OfferLimits { max_attempts: 3, fanout: 1, stale_ms: STALE_MS };
const TWO_AT_ONCE: OfferLimits = OfferLimits { max_attempts: 3, fanout: 2, stale_ms: STALE_MS };
const PICKUP: LatLng = LatLng { lat: 37.7749, lng: -122.4194 };
/// Epoch ms of the scenarios' clock: Redis keeps the stores' times as given.
const T0: u64 = 1_764_240_000_000;
/// How long a ride handed out for another search is its searcher's.
const LEASE: Duration = Duration::from_secs(5);

fn id(raw: &str) -> Id {
    Id::parse(raw).expect("a valid id")
}

fn north(metres: f64) -> LatLng {
    LatLng { lat: PICKUP.lat + metres / 111_195.0, lng: PICKUP.lng }
}

fn offer(n: u32, ride: &str, driver: &str) -> Offer {
    Offer {
        offer_id: format!("o{n}"),
        ride_id: id(ride),
        driver: id(driver),
        pickup: PICKUP,
        dropoff: north(5_000.0),
        expires_at: T0 + 15_000,
    }
}

async fn online(store: &dyn DispatchStore, driver: &str, metres: f64) {
    store.set_available(&id(driver), true, T0).await.expect("availability");
    store.set_position(&id(driver), north(metres), T0).await.expect("position");
}

/// Runs `scenario` against the embedded store and against a fresh Redis.
async fn in_both_stores<F, Fut>(scenario: F)
where
    F: Fn(Box<dyn DispatchStore>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    scenario(Box::new(EmbeddedDispatch::new(Duration::from_secs(3600)))).await;
    let redis = RedisServer::start().await;
    let client = Builder::from_config(Config::from_url(&redis.url()).expect("url")).build().expect("client");
    client.init().await.expect("connecting to the test redis");
    scenario(Box::new(RedisDispatch::new(client, Duration::from_secs(3600)))).await;
}

#[tokio::test]
async fn candidates_are_online_drivers_nearest_first_within_the_radius() {
    in_both_stores(|store| async move {
        online(&*store, "far", 2_000.0).await;
        online(&*store, "near", 100.0).await;
        online(&*store, "mid", 500.0).await;
        online(&*store, "outside", 6_000.0).await;
        online(&*store, "gone", 50.0).await;
        store.set_available(&id("gone"), false, T0).await.expect("offline");
        let found = store.candidates(PICKUP, 5_000.0, T0, ONE_AT_A_TIME, 10).await.expect("candidates");
        assert_eq!(found, vec![id("near"), id("mid"), id("far")]);
    })
    .await;
}

#[tokio::test]
async fn one_offer_per_driver_one_live_offer_per_ride_and_a_reconnecting_driver_finds_its_offer() {
    in_both_stores(|store| async move {
        online(&*store, "a", 100.0).await;
        online(&*store, "b", 200.0).await;
        let created = store.try_offer(&offer(1, "r1", "a"), T0, ONE_AT_A_TIME).await.expect("offer");
        assert_eq!(created, OfferAttempt::Created);
        let second = store.try_offer(&offer(2, "r2", "a"), T0, ONE_AT_A_TIME).await.expect("offer");
        assert_eq!(second, OfferAttempt::DriverUnavailable, "a driver holds one offer at a time");
        let full = store.try_offer(&offer(3, "r1", "b"), T0, ONE_AT_A_TIME).await.expect("offer");
        assert_eq!(full, OfferAttempt::RideFull, "one live offer per ride by default");
        let current = store.current_offer(&id("a")).await.expect("current");
        assert_eq!(current, Some((offer(1, "r1", "a"), false)), "the same offer, not yet acknowledged");
        assert_eq!(store.ack("o1", &id("b")).await.expect("ack"), AckOutcome::NotYours);
        assert_eq!(store.ack("o9", &id("a")).await.expect("ack"), AckOutcome::Unknown);
        assert_eq!(store.ack("o1", &id("a")).await.expect("ack"), AckOutcome::Acked);
        assert_eq!(store.current_offer(&id("a")).await.expect("current").map(|(_, acked)| acked), Some(true));
    })
    .await;
}

#[tokio::test]
async fn the_first_accept_wins_the_ride_and_the_other_live_offer_is_taken() {
    in_both_stores(|store| async move {
        online(&*store, "a", 100.0).await;
        online(&*store, "b", 200.0).await;
        for (n, driver) in [(1, "a"), (2, "b")] {
            let made = store.try_offer(&offer(n, "r1", driver), T0, TWO_AT_ONCE).await.expect("offer");
            assert_eq!(made, OfferAttempt::Created);
        }
        let won = store.accept("o2", &id("b"), T0 + 1_000).await.expect("accept");
        assert_eq!(won, AcceptOutcome::Confirmed { ride: id("r1"), taken: vec![offer(1, "r1", "a")] });
        let late = store.accept("o1", &id("a"), T0 + 1_001).await.expect("accept");
        assert_eq!(late, AcceptOutcome::Ended(OfferState::Taken));
        assert_eq!(store.accept("o2", &id("b"), T0 + 1_002).await.expect("accept"), AcceptOutcome::AlreadyAccepted);
        let again = store.try_offer(&offer(3, "r1", "a"), T0, TWO_AT_ONCE).await.expect("offer");
        assert_eq!(again, OfferAttempt::RideClosed);
        let free = store.candidates(PICKUP, 1_000.0, T0, TWO_AT_ONCE, 10).await.expect("candidates");
        assert_eq!(free, vec![id("a")], "the winner is on a ride");
    })
    .await;
}

#[tokio::test]
async fn late_accepts_expire_rejects_move_on_and_a_deadline_is_swept_once() {
    in_both_stores(|store| async move {
        online(&*store, "a", 100.0).await;
        online(&*store, "b", 200.0).await;
        store.try_offer(&offer(1, "r1", "a"), T0, ONE_AT_A_TIME).await.expect("offer");
        assert_eq!(store.accept("o1", &id("b"), T0).await.expect("accept"), AcceptOutcome::NotYours);
        assert_eq!(store.reject("o1", &id("a")).await.expect("reject"), RejectOutcome::Rejected { ride: id("r1") });
        assert_eq!(
            store.reject("o1", &id("a")).await.expect("reject"),
            RejectOutcome::NotPending(OfferState::Rejected)
        );
        let same = store.try_offer(&offer(2, "r1", "a"), T0, ONE_AT_A_TIME).await.expect("offer");
        assert_eq!(same, OfferAttempt::DriverUnavailable, "never offered the same ride twice");
        store.try_offer(&offer(3, "r1", "b"), T0, ONE_AT_A_TIME).await.expect("offer");
        assert!(store.due(T0 + 14_999, 10).await.expect("due").is_empty());
        assert_eq!(store.due(T0 + 15_000, 10).await.expect("due"), vec!["o3".to_owned()]);
        let swept = store.expire("o3", T0 + 15_000).await.expect("expire");
        assert_eq!(swept, Some(offer(3, "r1", "b")), "the first sweeper expires it");
        assert_eq!(store.expire("o3", T0 + 15_000).await.expect("expire"), None, "a second finds nothing");
        assert!(store.due(T0 + 20_000, 10).await.expect("due").is_empty());
        let late = store.accept("o3", &id("b"), T0 + 16_000).await.expect("accept");
        assert_eq!(late, AcceptOutcome::Ended(OfferState::Expired));
    })
    .await;
}

#[tokio::test]
async fn an_accept_past_the_deadline_is_expired_even_before_a_sweeper_came() {
    in_both_stores(|store| async move {
        online(&*store, "a", 100.0).await;
        store.try_offer(&offer(1, "r1", "a"), T0, ONE_AT_A_TIME).await.expect("offer");
        let late = store.accept("o1", &id("a"), T0 + 15_000).await.expect("accept");
        assert_eq!(late, AcceptOutcome::Expired { ride: id("r1") });
        assert_eq!(store.current_offer(&id("a")).await.expect("current"), None);
    })
    .await;
}

#[tokio::test]
async fn stale_drivers_get_no_offers_and_rides_stop_after_max_attempts() {
    in_both_stores(|store| async move {
        online(&*store, "stale", 100.0).await;
        let later = T0 + STALE_MS + 1;
        let stale = store.try_offer(&offer(1, "r1", "stale"), later, ONE_AT_A_TIME).await.expect("offer");
        assert_eq!(stale, OfferAttempt::DriverUnavailable);
        for (n, driver) in [(2, "a"), (3, "b"), (4, "c")] {
            online(&*store, driver, 100.0 * f64::from(n)).await;
            let made = store.try_offer(&offer(n, "r2", driver), T0, ONE_AT_A_TIME).await.expect("offer");
            assert_eq!(made, OfferAttempt::Created);
            store.reject(&format!("o{n}"), &id(driver)).await.expect("reject");
        }
        online(&*store, "d", 50.0).await;
        let fourth = store.try_offer(&offer(5, "r2", "d"), T0, ONE_AT_A_TIME).await.expect("offer");
        assert_eq!(fourth, OfferAttempt::Exhausted);
    })
    .await;
}

#[tokio::test]
async fn closing_a_ride_cancels_its_offers_and_frees_its_driver() {
    in_both_stores(|store| async move {
        online(&*store, "a", 100.0).await;
        online(&*store, "b", 200.0).await;
        store.try_offer(&offer(1, "r1", "a"), T0, ONE_AT_A_TIME).await.expect("offer");
        assert_eq!(store.close_ride(&id("r1"), T0).await.expect("close"), vec![offer(1, "r1", "a")]);
        let after = store.accept("o1", &id("a"), T0 + 1).await.expect("accept");
        assert_eq!(after, AcceptOutcome::Ended(OfferState::Cancelled));
        store.try_offer(&offer(2, "r2", "b"), T0, ONE_AT_A_TIME).await.expect("offer");
        assert!(matches!(store.accept("o2", &id("b"), T0 + 1).await.expect("accept"), AcceptOutcome::Confirmed { .. }));
        let told = store.close_ride(&id("r2"), T0).await.expect("close");
        assert_eq!(told, vec![offer(2, "r2", "b")], "the driver who won a cancelled ride is told");
        let free = store.candidates(PICKUP, 1_000.0, T0, ONE_AT_A_TIME, 10).await.expect("candidates");
        assert_eq!(free, vec![id("a"), id("b")], "the winner of a cancelled ride is free again");
    })
    .await;
}

#[tokio::test]
async fn a_ride_with_nobody_to_ask_waits_is_handed_out_once_and_not_after_it_closed() {
    in_both_stores(|store| async move {
        store.wait(&id("r1"), T0 + 1_000).await.expect("wait");
        store.wait(&id("r2"), T0 + 2_000).await.expect("wait");
        assert!(store.waiting_due(T0 + 999, 10, LEASE).await.expect("due").is_empty());
        assert_eq!(store.waiting_due(T0 + 1_000, 10, LEASE).await.expect("due"), vec![id("r1")]);
        assert!(store.waiting_due(T0 + 1_000, 10, LEASE).await.expect("due").is_empty(), "handed out once");
        let again = store.waiting_due(T0 + 1_000 + 5_000, 10, LEASE).await.expect("due");
        assert_eq!(again, vec![id("r2"), id("r1")], "r1 again after its lease (its searcher may have died)");
        store.close_ride(&id("r2"), T0).await.expect("close");
        online(&*store, "a", 100.0).await;
        store.try_offer(&offer(1, "r1", "a"), T0, ONE_AT_A_TIME).await.expect("offer");
        let after = store.waiting_due(T0 + 60_000, 10, LEASE).await.expect("due");
        assert!(after.is_empty(), "an offer made or the ride closed takes a ride off the list: {after:?}");
        store.wait(&id("r2"), T0 + 6_000).await.expect("wait");
        assert!(store.waiting_due(T0 + 70_000, 10, LEASE).await.expect("due").is_empty(), "a closed ride cannot wait");

        // An offer ending without a winner puts its ride up for another search at once.
        assert!(matches!(store.reject("o1", &id("a")).await.expect("reject"), RejectOutcome::Rejected { .. }));
        assert_eq!(store.waiting_due(T0 + 70_000, 10, LEASE).await.expect("due"), vec![id("r1")]);
    })
    .await;
}
