//! The ride rules hold the same in both ride stores: the embedded map and the Lua scripts in a
//! real Redis. Each scenario runs against both. These are the guarantees the matcher builds on: a
//! ride is created once, an assignment happens only from `searching` and only once, only the
//! assigned driver moves a ride forward (never back), status versions only grow, and every
//! applied change is published with exactly the JSON stored. A rider has one open ride at a
//! time, decided in the same atomic step as the create.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use fred::prelude::{Builder, ClientLike, Config, EventInterface, PubsubInterface};
use ridecast_origin::{
    base::metrics::Metrics,
    bus::{Topic, embedded::EmbeddedBackend, redis::RedisBackend},
    fanout::{
        hubs::{Hubs, Subscription},
        subscriptions::Inbound,
    },
    rides::{
        CreateOutcome, NewRide, Ride, RideChange, RideChangeOutcome,
        store::{RideStore, embedded::EmbeddedRides, redis::RedisRides},
    },
};
use ridecast_protocol::{Id, LatLng, RideState, RideStatus, RideStep};
use ridecast_tests::RedisServer;
use tokio_util::sync::CancellationToken;

/// Epoch ms of the scenarios' clock: the stores keep the times they are given.
const T0: u64 = 1_764_240_000_000;
const LOCATION_TTL: Duration = Duration::from_secs(300);
const RIDE_TTL: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(5);

fn id(raw: &str) -> Id {
    Id::parse(raw).expect("a valid id")
}

fn new_ride(ride: &str) -> NewRide {
    NewRide {
        id: id(ride),
        rider: id("rider-1"),
        pickup: LatLng { lat: 37.774_93, lng: -122.419_42 },
        dropoff: LatLng { lat: 37.8, lng: -122.4 },
    }
}

fn assign(driver: &str) -> RideChange {
    RideChange::Assign { driver: id(driver), tracking_token: format!("token.for.{driver}") }
}

fn state(ride: &Ride) -> RideState {
    serde_json::from_slice(&ride.json).unwrap_or_else(|e| panic!("not a ride status ({e}): {:?}", ride.json))
}

fn created(outcome: CreateOutcome) -> Ride {
    match outcome {
        CreateOutcome::Created(ride) => ride,
        other => panic!("expected a new ride, got {other:?}"),
    }
}

fn applied(outcome: RideChangeOutcome, what: &str) -> Ride {
    match outcome {
        RideChangeOutcome::Applied(ride) => ride,
        other => panic!("{what}: expected the change to apply, got {other:?}"),
    }
}

/// Where a backend's published ride statuses can be watched.
enum Pushes {
    /// Embedded: publishing is delivering to the local hub.
    Hub(Subscription),
    /// Redis: a subscriber of the ride's channel, as another instance would be.
    Channel(fred::clients::SubscriberClient, tokio::sync::broadcast::Receiver<fred::types::Message>),
}

impl Pushes {
    async fn next(&mut self, what: &str) -> Bytes {
        let next = async {
            match self {
                Self::Hub(subscription) => subscription.next().await.map(|value| value.json.clone()),
                Self::Channel(_client, messages) => {
                    messages.recv().await.ok().and_then(|m| m.value.as_bytes().map(Bytes::copy_from_slice))
                }
            }
        };
        tokio::time::timeout(WAIT, next)
            .await
            .unwrap_or_else(|_| panic!("nothing was published within {WAIT:?}; expected {what}"))
            .unwrap_or_else(|| panic!("the push stream ended; expected {what}"))
    }
}

/// One backend under test. What it needs (a Redis server, its background tasks) is kept alive by
/// [`in_both_backends`], not here: a scenario's future captures only the fields it uses.
struct Store {
    rides: Arc<dyn RideStore>,
    hubs: Hubs,
    redis_url: Option<String>,
}

impl Store {
    /// Watches `ride`'s status channel from now on.
    async fn watch(&self, ride: &str) -> Pushes {
        let Some(url) = &self.redis_url else {
            return Pushes::Hub(self.hubs.subscribe(Topic::RideStatus(id(ride))));
        };
        let subscriber =
            Builder::from_config(Config::from_url(url).expect("url")).build_subscriber_client().expect("a subscriber");
        subscriber.init().await.expect("connecting to the test redis");
        let messages = subscriber.message_rx();
        subscriber.subscribe(Topic::RideStatus(id(ride)).channel()).await.expect("subscribing");
        Pushes::Channel(subscriber, messages)
    }
}

/// Runs `scenario` against the embedded backend and against a fresh Redis.
async fn in_both_backends<F, Fut>(scenario: F)
where
    F: Fn(Store) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (inbound, _commands) = Inbound::new(Metrics::default());
    let hubs = inbound.hubs.clone();
    let bus = Arc::new(EmbeddedBackend::new(Arc::new(inbound), LOCATION_TTL, shutdown.clone()));
    let rides = EmbeddedRides::new(bus, RIDE_TTL, shutdown.clone());
    scenario(Store { rides: Arc::new(rides), hubs, redis_url: None }).await;

    let redis = RedisServer::start().await;
    let (inbound, _commands) = Inbound::new(Metrics::default());
    let hubs = inbound.hubs.clone();
    let backend =
        RedisBackend::connect(&redis.url(), LOCATION_TTL, Arc::new(inbound), Metrics::default(), shutdown.clone())
            .await
            .expect("connecting to the test redis");
    let rides = RedisRides::new(backend.command_client(), backend.pubsub(), RIDE_TTL);
    scenario(Store { rides: Arc::new(rides), hubs, redis_url: Some(redis.url()) }).await;
    backend.quit().await;
}

#[tokio::test]
async fn a_ride_is_created_once_searching_and_reads_back_whole() {
    in_both_backends(|store| async move {
        let new = new_ride("ride-1");
        let mut pushes = store.watch("ride-1").await;
        let ride = created(store.rides.create(&new, T0).await.expect("create"));
        assert_eq!(
            (&ride.id, &ride.rider, ride.pickup, ride.dropoff, ride.status, &ride.driver, ride.created_ms, ride.ts),
            (&new.id, &new.rider, new.pickup, new.dropoff, RideStatus::Searching, &None, T0, T0)
        );
        assert_eq!(&ride.json[..], format!(r#"{{"rideId":"ride-1","status":"searching","ts":{T0}}}"#).as_bytes());
        assert_eq!(pushes.next("the new ride's status").await, ride.json);
        assert_eq!(store.rides.get(&new.id).await.expect("read"), Some(ride.clone()));
        assert_eq!(store.rides.get(&new.id).await.expect("latest").map(|ride| ride.json), Some(ride.json.clone()));

        // The same request written again after a lost reply gets its ride, not a second one.
        let replay = store.rides.create(&new, T0).await.expect("create");
        assert_eq!(replay, CreateOutcome::Created(ride.clone()), "a replay");
        let again = NewRide { rider: id("rider-2"), ..new_ride("ride-1") };
        assert_eq!(
            store.rides.create(&again, T0 + 5).await.expect("create"),
            CreateOutcome::IdTaken,
            "an id is used once"
        );
        assert_eq!(store.rides.get(&new.id).await.expect("read"), Some(ride), "the first ride is untouched");
        assert_eq!(store.rides.get(&id("ride-none")).await.expect("read"), None);
    })
    .await;
}

#[tokio::test]
async fn of_two_racing_assignments_exactly_one_wins_and_is_published_with_its_token() {
    in_both_backends(|store| async move {
        let ride = created(store.rides.create(&new_ride("ride-1"), T0).await.expect("create"));
        let mut pushes = store.watch("ride-1").await;
        let (a, b) = (assign("d-a"), assign("d-b"));
        let (first, second) = tokio::join!(
            store.rides.change(&ride.id, &a, T0 + 10),
            store.rides.change(&ride.id, &b, T0 + 10),
        );
        let (winner, loser) = match (first.expect("assign a"), second.expect("assign b")) {
            (RideChangeOutcome::Applied(won), RideChangeOutcome::Refused(lost))
            | (RideChangeOutcome::Refused(lost), RideChangeOutcome::Applied(won)) => (won, lost),
            other => panic!("expected exactly one assignment to apply, got {other:?}"),
        };
        assert_eq!(loser, winner, "the refused one sees the winner's ride, unchanged");
        let driver = winner.driver.clone().expect("the winner's driver is stored");
        assert_eq!(winner.status, RideStatus::DriverAssigned);
        assert_eq!(winner.ts, T0 + 10);
        assert_eq!(
            std::str::from_utf8(&winner.json).expect("utf-8"),
            format!(
                r#"{{"rideId":"ride-1","status":"driver_assigned","driverId":"{driver}","trackingToken":"token.for.{driver}","ts":{}}}"#,
                T0 + 10
            )
        );
        assert_eq!(pushes.next("the assignment").await, winner.json);
        assert_eq!(store.rides.get(&ride.id).await.expect("read"), Some(winner.clone()));

        let late = store.rides.change(&ride.id, &RideChange::NoDriver, T0 + 20).await.expect("no driver");
        assert_eq!(late, RideChangeOutcome::Refused(winner), "an assigned ride does not become no_driver");
    })
    .await;
}

#[tokio::test]
async fn status_versions_grow_within_one_millisecond_and_against_a_clock_behind() {
    in_both_backends(|store| async move {
        let ride = created(store.rides.create(&new_ride("ride-1"), T0).await.expect("create"));
        let same_ms = applied(store.rides.change(&ride.id, &assign("d-1"), T0).await.expect("assign"), "assign");
        assert_eq!(same_ms.ts, T0 + 1, "a change in the creation's millisecond");
        let behind =
            applied(store.rides.change(&ride.id, &RideChange::Cancel, T0 - 60_000).await.expect("cancel"), "cancel");
        assert_eq!(behind.ts, T0 + 2, "an instance whose clock is behind");
        assert_eq!(state(&behind).ts, behind.ts, "the JSON carries the stored ts");

        let other = created(store.rides.create(&new_ride("ride-2"), T0 - 60_000).await.expect("create"));
        assert_eq!(other.ts, T0 - 60_000, "versions are per ride");
        let later = applied(
            store.rides.change(&other.id, &RideChange::NoDriver, T0 + 500).await.expect("no driver"),
            "no driver",
        );
        assert_eq!(later.ts, T0 + 500, "a clock ahead of the stored ts is used as it is");
    })
    .await;
}

#[tokio::test]
async fn a_cancel_applies_to_searching_and_assigned_rides_only_and_keeps_the_driver_in_the_store() {
    in_both_backends(|store| async move {
        let ride = created(store.rides.create(&new_ride("ride-1"), T0).await.expect("create"));
        applied(store.rides.change(&ride.id, &assign("d-1"), T0 + 1).await.expect("assign"), "assign");
        let mut pushes = store.watch("ride-1").await;
        let cancelled =
            applied(store.rides.change(&ride.id, &RideChange::Cancel, T0 + 2).await.expect("cancel"), "cancel");
        assert_eq!((cancelled.status, cancelled.driver.as_ref()), (RideStatus::Cancelled, Some(&id("d-1"))));
        assert_eq!(
            &cancelled.json[..],
            format!(r#"{{"rideId":"ride-1","status":"cancelled","ts":{}}}"#, T0 + 2).as_bytes()
        );
        assert_eq!(pushes.next("the cancellation").await, cancelled.json);
        let again = store.rides.change(&ride.id, &RideChange::Cancel, T0 + 3).await.expect("cancel");
        assert_eq!(again, RideChangeOutcome::Refused(cancelled.clone()), "a second cancel changes nothing");
        let reassigned = store.rides.change(&ride.id, &assign("d-2"), T0 + 4).await.expect("assign");
        assert_eq!(reassigned, RideChangeOutcome::Refused(cancelled), "a cancelled ride is not assigned");

        let unmatched = created(store.rides.create(&new_ride("ride-2"), T0).await.expect("create"));
        let ended = applied(
            store.rides.change(&unmatched.id, &RideChange::NoDriver, T0 + 1).await.expect("no driver"),
            "no driver",
        );
        assert_eq!((ended.status, &ended.driver), (RideStatus::NoDriver, &None));
        let late_cancel = store.rides.change(&unmatched.id, &RideChange::Cancel, T0 + 2).await.expect("cancel");
        assert_eq!(late_cancel, RideChangeOutcome::Refused(ended), "a ride that ended without a driver stays so");

        let unknown = store.rides.change(&id("ride-none"), &RideChange::Cancel, T0).await.expect("cancel");
        assert_eq!(unknown, RideChangeOutcome::Unknown);
        assert_eq!(store.rides.get(&id("ride-none")).await.expect("read"), None, "nothing was created by the attempt");
    })
    .await;
}

#[tokio::test]
async fn a_tracking_token_is_stored_and_published_exactly_as_given() {
    in_both_backends(|store| async move {
        let ride = created(store.rides.create(&new_ride("ride-1"), T0).await.expect("create"));
        // Not a JWT, but a string the JSON must escape: the stores must not trust its characters.
        let token = "a\"b\\c\u{e9}".to_owned();
        let change = RideChange::Assign { driver: id("d-1"), tracking_token: token.clone() };
        let assigned = applied(store.rides.change(&ride.id, &change, T0 + 1).await.expect("assign"), "assign");
        assert_eq!(state(&assigned).tracking_token, Some(token));
        assert_eq!(assigned, store.rides.get(&ride.id).await.expect("read").expect("stored"));
    })
    .await;
}

fn step(step: RideStep, driver: &str) -> RideChange {
    RideChange::Progress { step, driver: id(driver), tracking_token: format!("token.for.{driver}") }
}

#[tokio::test]
async fn only_the_assigned_driver_moves_a_ride_forward_and_completed_drops_the_driver_from_the_json() {
    in_both_backends(|store| async move {
        let ride = created(store.rides.create(&new_ride("ride-1"), T0).await.expect("create"));
        let early = store.rides.change(&ride.id, &step(RideStep::Arrived, "d-1"), T0 + 1).await.expect("arrive");
        assert_eq!(early, RideChangeOutcome::Refused(ride.clone()), "a searching ride has no driver to arrive");
        applied(store.rides.change(&ride.id, &assign("d-1"), T0 + 1).await.expect("assign"), "assign");
        let mut pushes = store.watch("ride-1").await;

        let stranger = store.rides.change(&ride.id, &step(RideStep::Arrived, "d-2"), T0 + 2).await.expect("arrive");
        assert!(matches!(stranger, RideChangeOutcome::Refused(r) if r.status == RideStatus::DriverAssigned));
        let arrived = applied(
            store.rides.change(&ride.id, &step(RideStep::Arrived, "d-1"), T0 + 2).await.expect("arrive"),
            "arrived",
        );
        assert_eq!(
            std::str::from_utf8(&arrived.json).expect("utf-8"),
            format!(
                r#"{{"rideId":"ride-1","status":"driver_arrived","driverId":"d-1","trackingToken":"token.for.d-1","ts":{}}}"#,
                T0 + 2
            ),
            "under way, the status still names the driver and carries a tracking token"
        );
        assert_eq!(pushes.next("driver_arrived").await, arrived.json);
        let again = store.rides.change(&ride.id, &step(RideStep::Arrived, "d-1"), T0 + 3).await.expect("again");
        assert_eq!(again, RideChangeOutcome::Refused(arrived.clone()), "a repeat changes and publishes nothing");

        // Skipping ahead is allowed; going back is not.
        let completed = applied(
            store.rides.change(&ride.id, &step(RideStep::Completed, "d-1"), T0 + 4).await.expect("complete"),
            "completed",
        );
        assert_eq!((completed.status, completed.driver.as_ref()), (RideStatus::Completed, Some(&id("d-1"))));
        assert_eq!(
            &completed.json[..],
            format!(r#"{{"rideId":"ride-1","status":"completed","ts":{}}}"#, T0 + 4).as_bytes()
        );
        assert_eq!(pushes.next("completed").await, completed.json);
        let back = store.rides.change(&ride.id, &step(RideStep::InProgress, "d-1"), T0 + 5).await.expect("back");
        assert_eq!(back, RideChangeOutcome::Refused(completed.clone()), "no way back from completed");
        let cancel = store.rides.change(&ride.id, &RideChange::Cancel, T0 + 6).await.expect("cancel");
        assert_eq!(cancel, RideChangeOutcome::Refused(completed), "a completed ride is not cancelled");

        // A ride on its way may still be cancelled by its rider.
        let other = created(store.rides.create(&new_ride("ride-2"), T0).await.expect("create"));
        applied(store.rides.change(&other.id, &assign("d-3"), T0 + 1).await.expect("assign"), "assign");
        applied(store.rides.change(&other.id, &step(RideStep::InProgress, "d-3"), T0 + 2).await.expect("go"), "go");
        let cancelled = applied(store.rides.change(&other.id, &RideChange::Cancel, T0 + 3).await.expect("x"), "x");
        assert_eq!(cancelled.status, RideStatus::Cancelled);
    })
    .await;
}

fn ride_of(ride: &str, rider: &str) -> NewRide {
    NewRide { rider: id(rider), ..new_ride(ride) }
}

#[tokio::test]
async fn a_rider_has_one_open_ride_at_a_time_until_it_ends() {
    in_both_backends(|store| async move {
        let first = created(store.rides.create(&new_ride("ride-1"), T0).await.expect("create"));
        let refused = store.rides.create(&new_ride("ride-2"), T0 + 1).await.expect("create");
        assert_eq!(refused, CreateOutcome::RiderHasOpenRide(first.id.clone()), "searching is open");
        assert_eq!(store.rides.get(&id("ride-2")).await.expect("read"), None, "nothing was stored");
        created(store.rides.create(&ride_of("ride-3", "rider-2"), T0 + 1).await.expect("another rider is not held"));

        applied(store.rides.change(&first.id, &assign("d-1"), T0 + 2).await.expect("assign"), "assign");
        applied(store.rides.change(&first.id, &step(RideStep::InProgress, "d-1"), T0 + 3).await.expect("go"), "go");
        let refused = store.rides.create(&new_ride("ride-2"), T0 + 4).await.expect("create");
        assert_eq!(refused, CreateOutcome::RiderHasOpenRide(first.id.clone()), "in_progress is open");

        // Each way a ride ends frees its rider.
        applied(store.rides.change(&first.id, &step(RideStep::Completed, "d-1"), T0 + 5).await.expect("x"), "done");
        let second = created(store.rides.create(&new_ride("ride-2"), T0 + 6).await.expect("after completed"));
        applied(store.rides.change(&second.id, &RideChange::Cancel, T0 + 7).await.expect("cancel"), "cancel");
        let third = created(store.rides.create(&new_ride("ride-4"), T0 + 8).await.expect("after cancelled"));
        applied(store.rides.change(&third.id, &RideChange::NoDriver, T0 + 9).await.expect("no driver"), "none");
        created(store.rides.create(&new_ride("ride-5"), T0 + 10).await.expect("after no_driver"));

        // Two requests of one rider at once: exactly one ride.
        let (ride_a, ride_b) = (ride_of("ride-a", "rider-3"), ride_of("ride-b", "rider-3"));
        let (a, b) = tokio::join!(store.rides.create(&ride_a, T0), store.rides.create(&ride_b, T0));
        match (a.expect("create a"), b.expect("create b")) {
            (CreateOutcome::Created(won), CreateOutcome::RiderHasOpenRide(open))
            | (CreateOutcome::RiderHasOpenRide(open), CreateOutcome::Created(won)) => assert_eq!(won.id, open),
            other => panic!("expected exactly one of two racing creates to win, got {other:?}"),
        }
    })
    .await;
}
