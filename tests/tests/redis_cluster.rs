//! Ridecast on a Redis Cluster (three primaries, three replicas) when a shard's primary goes
//! away mid-stream: by a planned `CLUSTER FAILOVER`, or killed with SIGKILL and replaced by its
//! replica. Riders, drivers and chat participants stay connected to their origins throughout;
//! what they are owed keeps arriving once the replica serves the slot.
//!
//! Shows on the way that a cluster carries location updates over sharded Pub/Sub: each rider-
//! side instance subscribes once, with `SSUBSCRIBE`, on the shard that owns the driver's slot,
//! and nothing subscribes with a classic `SUBSCRIBE`.

use std::time::Duration;

use ridecast_protocol::{Id, channels};
use ridecast_tests::chat::AssignedRide;
use ridecast_tests::http::status_of;
use ridecast_tests::tokens::{driver_token, rider_token};
use ridecast_tests::wait::poll_until;
use ridecast_tests::{
    ChatSocket, Cluster, DriverSocket, EXPECT, Fix, Mode, Origin, RedisCluster, RiderStream, Route, TsClock,
};

/// Riders per rider-side instance.
const RIDERS_PER_INSTANCE: usize = 2;
/// Rider-side instances: every origin but the driver's.
const RIDER_SIDES: u64 = 2;

fn location_channel(driver: &str) -> String {
    channels::driver_location(&Id::parse(driver).expect("a valid driver id"))
}

/// A driver on the first origin, followed by riders on the other two.
struct Following {
    cluster: Cluster,
    driver: &'static str,
    socket: DriverSocket,
    riders: Vec<RiderStream>,
    route: Route,
    clock: TsClock,
    /// Route points used so far (each move goes to the next one: a new cell every time).
    moves: u32,
}

impl Following {
    async fn start(driver: &'static str) -> Self {
        let cluster = Cluster::start(Mode::RedisCluster, |origin| origin.sse_retry_ms(500)).await;
        let mut riders = Vec::new();
        for (i, origin) in cluster.rider_sides().iter().enumerate() {
            for j in 0..RIDERS_PER_INSTANCE {
                riders.push(RiderStream::open(origin, driver, &rider_token(&format!("r{i}-{j}"), driver)).await);
            }
        }
        let socket = DriverSocket::connect(cluster.driver_side(), &driver_token(driver)).await;
        let mut following =
            Self { cluster, driver, socket, riders, route: Route::san_francisco(), clock: TsClock::new(), moves: 0 };
        following.move_and_expect_everyone_to_see_it("the first location").await;
        following
    }

    /// The driver moves to a new cell; every rider gets exactly that location next.
    async fn move_and_expect_everyone_to_see_it(&mut self, what: &str) {
        let fix = Fix::at(self.route.point(self.moves), self.clock.tick());
        self.moves += 1;
        self.socket.send_location(fix).await;
        for rider in &mut self.riders {
            rider.expect_location(self.driver, &fix, what).await;
        }
    }

    /// The driver keeps moving (a new cell every 200 ms, as the redis outage may refuse some)
    /// until every rider has seen a location sent after `since_ts`.
    async fn move_until_everyone_sees_a_location_after(&mut self, since_ts: u64, what: &str) {
        let mut fresh = vec![false; self.riders.len()];
        let deadline = tokio::time::Instant::now() + EXPECT * 4;
        while fresh.iter().any(|seen| !seen) {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            let fix = Fix::at(self.route.point(self.moves), self.clock.tick());
            self.moves += 1;
            let _ = self.socket.try_send_location(fix).await;
            for (rider, seen) in self.riders.iter_mut().zip(&mut fresh) {
                while let Some(location) = rider.location_within(Duration::from_millis(50), what).await {
                    *seen |= location.ts > since_ts;
                }
            }
        }
    }

    /// The driver moves to a new cell; every rider gets that location, after any older ones
    /// still on their way.
    async fn move_and_let_everyone_catch_up(&mut self, what: &str) {
        let fix = Fix::at(self.route.point(self.moves), self.clock.tick());
        self.moves += 1;
        self.socket.send_location(fix).await;
        for rider in &mut self.riders {
            loop {
                let location = rider.next_location(what).await;
                if location.ts == fix.ts {
                    location.assert_is(self.driver, &fix, what);
                    break;
                }
                assert!(location.ts < fix.ts, "{what}: nothing newer than the last move exists: {location:?}");
            }
        }
    }

    /// Asserts the cluster carries the driver's channel over sharded Pub/Sub only: one
    /// `SSUBSCRIBE` per rider-side instance on the slot's primary, no classic subscriber.
    async fn expect_sharded_subscriptions(&self, when: &str) {
        let redis = self.cluster.redis_cluster.as_ref().expect("a redis cluster");
        let channel = location_channel(self.driver);
        assert_eq!(
            redis.shard_subscribers(&channel).await,
            RIDER_SIDES,
            "{when}: each rider-side instance subscribes once to {channel} on its shard"
        );
        assert_eq!(redis.classic_subscribers(&channel).await, 0, "{when}: no classic subscription to {channel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn riders_keep_following_a_driver_through_a_planned_failover_of_its_shard() {
    let mut following = Following::start("d-failover").await;
    following.expect_sharded_subscriptions("before the failover").await;

    let channel = location_channel(following.driver);
    let redis = following.cluster.redis_cluster.as_ref().expect("a redis cluster");
    let (old, new) = redis.fail_over(&channel).await;
    eprintln!("{channel}'s slot moved from {old} to {new}");

    // Live delivery again, every move, in order: the instances resubscribed on the new primary.
    for k in 0..5 {
        following.move_and_expect_everyone_to_see_it(&format!("move {k} after the failover")).await;
    }
    following.expect_sharded_subscriptions("after the failover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn riders_keep_following_a_driver_when_its_shards_primary_is_killed() {
    let mut following = Following::start("d-killed").await;
    let channel = location_channel(following.driver);
    let redis = following.cluster.redis_cluster.as_mut().expect("a redis cluster");
    let (killed, promoted) = redis.kill_primary_of(&channel).await;
    eprintln!("killed {killed}; {promoted} now serves {channel}");
    let after_kill = following.clock.tick();

    following.move_until_everyone_sees_a_location_after(after_kill, "a location sent after the kill").await;
    following.move_and_let_everyone_catch_up("the moves made while the replica took over").await;
    for k in 0..3 {
        following.move_and_expect_everyone_to_see_it(&format!("move {k} once the replica took over")).await;
    }
    following.expect_sharded_subscriptions("after the replica took over").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_reach_drivers_after_the_dispatch_shard_fails_over() {
    let cluster = Cluster::start_default(Mode::RedisCluster).await;
    let redis = cluster.redis_cluster.as_ref().expect("a redis cluster");
    // A first ride, then every dispatch key moves to another node, then a second ride: the
    // dispatch scripts find their state (and load themselves) on the new primary.
    let first = AssignedRide::start(cluster.rider_side(), cluster.driver_side(), "r-before", "d-before").await;
    let (old, new) = redis.fail_over("dispatch:{dispatch}:").await;
    eprintln!("the dispatch slot moved from {old} to {new}");
    let second = AssignedRide::start(&cluster.origins[2], cluster.driver_side(), "r-after", "d-after").await;
    assert_ne!(first.ride_id, second.ride_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_loses_nothing_through_a_failover_of_its_rides_shard_mid_conversation() {
    const LINES: usize = 12;
    let cluster =
        Cluster::start(Mode::RedisCluster, |origin| origin.flag("--chat-rate", 1_000).flag("--chat-burst", 1_000))
            .await;
    let redis = cluster.redis_cluster.as_ref().expect("a redis cluster");
    let ride = AssignedRide::start(&cluster.origins[1], cluster.driver_side(), "r-talk", "d-talk").await;
    let mut rider = ChatSocket::connect(&cluster.origins[1], &ride.ride_id, &ride.ride_token, None).await;
    let mut driver = ChatSocket::connect(&cluster.origins[2], &ride.ride_id, &ride.driver_token, None).await;
    let ride_channel = channels::chat_ride(&Id::parse(&ride.ride_id).expect("a valid ride id"));

    // The two talk in turns while the ride's slot moves under them.
    let conversation = async {
        let (mut said, mut refused) = (Vec::new(), 0);
        for k in 0..LINES {
            // While the slot moves a message may be refused (`unavailable`, nothing stored); the
            // app sends it again with the same clientMsgId, as the contract asks.
            // The side waiting may be told `unavailable` when a read fails; the line still comes.
            let (line, retries) = rider.say_retrying(&format!("r-{k}"), &format!("rider line {k}")).await;
            let (heard, unavailable) = driver.next_message_through_outage("the rider's line").await;
            assert_eq!(heard, line, "line {k}");
            said.push(line);
            let (line, more) = driver.say_retrying(&format!("d-{k}"), &format!("driver line {k}")).await;
            let (heard, also_unavailable) = rider.next_message_through_outage("the driver's line").await;
            assert_eq!(heard, line, "line {k}");
            said.push(line);
            refused += retries + more + unavailable + also_unavailable;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("{refused} unavailable answers while the slot moved (sends retried, reads caught up)");
        said
    };
    let failover = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.fail_over(&ride_channel).await
    };
    let (said, (old, new)) = tokio::join!(conversation, failover);
    eprintln!("{ride_channel}'s slot moved from {old} to {new} mid-conversation");

    // The stored history, read afresh on a third instance, is exactly what both sides saw.
    let mut reader = ChatSocket::connect(&cluster.origins[0], &ride.ride_id, &ride.driver_token, None).await;
    let history = reader.next_messages(said.len(), "the whole history").await;
    assert_eq!(history, said, "the history after the failover is the conversation, nothing lost or doubled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_started_before_its_cluster_formed_is_ready_once_it_has() {
    // Every node restarted at once, say: the origin comes up first and finds no slot map.
    let mut redis = RedisCluster::start_unformed().await;
    let origin = Origin::builder().redis_url(redis.url()).without_waiting_for_ready().start().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status_of(&origin.url("/readyz")).await, Some(503), "not ready without a cluster to serve it");

    redis.form().await;
    poll_until(EXPECT * 2, "/readyz to answer 200 once the cluster serves every slot", || async {
        (status_of(&origin.url("/readyz")).await == Some(200)).then_some(())
    })
    .await;

    // And it works: a rider follows a driver through it.
    let driver = "d-late";
    let mut rider = RiderStream::open(&origin, driver, &rider_token("r-late", driver)).await;
    let mut socket = DriverSocket::connect(&origin, &driver_token(driver)).await;
    let fix = Fix::at(Route::san_francisco().point(0), TsClock::new().tick());
    socket.send_location(fix).await;
    rider.expect_location(driver, &fix, "the first location through the late-formed cluster").await;
}
