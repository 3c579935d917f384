//! Both location stores take a batch of drivers' updates at once and keep the per-driver rules:
//! a newer update is stored, a stale one (from this instance or another) dropped, and only a
//! change of grid cell published, once. On Redis the batch is one script call, not one per
//! update: the round trip is what an update used to cost.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use ridecast_origin::{
    base::metrics::Metrics,
    bus::{Backend, Deliveries, IngestOutcome, LocationUpdate, embedded::EmbeddedBackend, redis::RedisBackend},
};
use ridecast_protocol::{GridCell, Id, channels};
use ridecast_tests::RedisServer;
use tokio_util::sync::CancellationToken;

const LOCATION_TTL: Duration = Duration::from_secs(300);

/// What arrived on subscribed channels, in order.
#[derive(Debug, Default)]
struct Published(Mutex<Vec<(String, Vec<u8>)>>);

impl Deliveries for Published {
    fn deliver(&self, channel: &str, payload: &[u8]) {
        self.0.lock().expect("lock").push((channel.to_owned(), payload.to_vec()));
    }

    fn missed_messages(&self) {}
}

impl Published {
    fn on(&self, driver: &str) -> Vec<String> {
        let channel = channels::driver_location(&id(driver));
        let published = self.0.lock().expect("lock");
        published
            .iter()
            .filter(|(on, _)| *on == channel)
            .map(|(_, json)| String::from_utf8_lossy(json).into())
            .collect()
    }
}

fn id(raw: &str) -> Id {
    Id::parse(raw).expect("a valid id")
}

fn update(driver: &str, ts: u64, cell: (i64, i64)) -> LocationUpdate {
    LocationUpdate {
        driver: id(driver),
        ts,
        cell: GridCell { row: cell.0, col: cell.1 },
        json: Bytes::from(format!(r#"{{"driverId":"{driver}","ts":{ts}}}"#)),
    }
}

fn outcomes(results: Vec<Result<IngestOutcome, ridecast_origin::bus::BackendError>>) -> Vec<IngestOutcome> {
    results.into_iter().map(|result| result.expect("stored")).collect()
}

/// The embedded store and a Redis store, each with what it published.
async fn stores(
    redis: &RedisServer,
    shutdown: &CancellationToken,
) -> Vec<(&'static str, Arc<dyn Backend>, Arc<Published>)> {
    let embedded_published = Arc::new(Published::default());
    let embedded = EmbeddedBackend::new(embedded_published.clone(), LOCATION_TTL, shutdown.clone());
    let redis_published = Arc::new(Published::default());
    let on_redis = RedisBackend::connect(
        &redis.url(),
        LOCATION_TTL,
        redis_published.clone(),
        Metrics::default(),
        shutdown.clone(),
    )
    .await
    .expect("connecting to the test redis");
    vec![("embedded", Arc::new(embedded), embedded_published), ("redis", Arc::new(on_redis), redis_published)]
}

async fn settle(published: &Published, driver: &str, count: usize) -> Vec<String> {
    for _ in 0..100 {
        if published.on(driver).len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Proving an absence: nothing more arrives after what was expected.
    tokio::time::sleep(Duration::from_millis(200)).await;
    published.on(driver)
}

#[tokio::test]
async fn one_batch_keeps_each_drivers_rules_in_order_and_publishes_only_cell_changes() {
    let redis = RedisServer::start().await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    for (store, backend, published) in stores(&redis, &shutdown).await {
        for driver in ["d1", "d2"] {
            backend.subscribe(vec![channels::driver_location(&id(driver))]).await.expect("subscribed");
        }
        let batch = [
            update("d1", 10, (1, 1)),
            update("d2", 10, (5, 5)),
            update("d1", 11, (1, 1)),
            update("d1", 11, (2, 2)),
            update("d1", 9, (3, 3)),
            update("d2", 12, (5, 6)),
        ];
        use IngestOutcome::{Published as Pushed, Stale, Stored};
        assert_eq!(
            outcomes(backend.ingest_locations(&batch).await),
            vec![Pushed, Pushed, Stored, Stale, Stale, Pushed],
            "{store}: first updates and cell changes are published, in-cell moves stored, ts not newer dropped"
        );
        let d1 = settle(&published, "d1", 1).await;
        assert_eq!(d1, vec![r#"{"driverId":"d1","ts":10}"#], "{store}: d1 published once");
        let d2 = settle(&published, "d2", 2).await;
        assert_eq!(d2, vec![r#"{"driverId":"d2","ts":10}"#, r#"{"driverId":"d2","ts":12}"#], "{store}: d2 twice");
        let latest = backend.latest_location(&id("d1")).await.expect("read");
        assert_eq!(
            latest.as_deref(),
            Some(&br#"{"driverId":"d1","ts":11}"#[..]),
            "{store}: the in-cell move is stored"
        );
    }
}

#[tokio::test]
async fn on_redis_a_batch_of_three_hundred_drivers_is_two_script_calls() {
    let redis = RedisServer::start().await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let backend = RedisBackend::connect(
        &redis.url(),
        LOCATION_TTL,
        Arc::new(Published::default()),
        Metrics::default(),
        shutdown.clone(),
    )
    .await
    .expect("connecting to the test redis");
    let batch: Vec<LocationUpdate> = (0..300).map(|n| update(&format!("d{n}"), 1_000, (n, n))).collect();
    // Once first, so that loading the script is not counted.
    outcomes(backend.ingest_locations(&[update("warm-up", 1, (0, 0))]).await);
    redis.command(&["CONFIG", "RESETSTAT"]).await;
    let results = outcomes(backend.ingest_locations(&batch).await);
    assert!(results.iter().all(|outcome| *outcome == IngestOutcome::Published), "{results:?}");
    let stats = redis.command(&["INFO", "commandstats"]).await;
    let calls = stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no EVALSHA in {stats}"));
    assert_eq!(calls, "2", "256 drivers a call: {stats}");
}

#[tokio::test]
async fn an_older_update_written_by_another_instance_is_dropped() {
    let redis = RedisServer::start().await;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let url = redis.url();
    let connect = || {
        RedisBackend::connect(&url, LOCATION_TTL, Arc::new(Published::default()), Metrics::default(), shutdown.clone())
    };
    let (first, second) = (connect().await.expect("first instance"), connect().await.expect("second instance"));
    assert_eq!(outcomes(second.ingest_locations(&[update("d1", 20, (1, 1))]).await), vec![IngestOutcome::Published]);
    // The driver's old instance writes what it still held, older, in its own batch.
    let late = [update("d2", 5, (9, 9)), update("d1", 19, (4, 4))];
    assert_eq!(outcomes(first.ingest_locations(&late).await), vec![IngestOutcome::Published, IngestOutcome::Stale]);
    let latest = second.latest_location(&id("d1")).await.expect("read");
    assert_eq!(latest.as_deref(), Some(&br#"{"driverId":"d1","ts":20}"#[..]));
}
