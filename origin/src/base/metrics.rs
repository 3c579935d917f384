//! Counters and gauges, rendered as Prometheus text on `/metrics`.
//!
//! Plain atomics rather than a metrics framework: every hot path increments one relaxed
//! counter, and the whole set renders in one pass without locks.

use std::{
    fmt::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

macro_rules! metric_set {
    ($($(#[doc = $help:literal])* $kind:ident $name:ident;)*) => {
        /// The instance's counters and gauges.
        #[derive(Debug, Default)]
        pub struct MetricValues {
            $(pub $name: AtomicU64,)*
        }

        impl MetricValues {
            fn render(&self, out: &mut String) {
                $(
                    let help = [$($help),*].join(" ");
                    let _ = writeln!(out, "# HELP ridecast_{} {}", stringify!($name), help.trim());
                    let _ = writeln!(out, "# TYPE ridecast_{} {}", stringify!($name), stringify!($kind));
                    let _ = writeln!(out, "ridecast_{} {}", stringify!($name), self.$name.load(Relaxed));
                )*
            }
        }
    };
}

metric_set! {
    /// Open rider SSE streams.
    gauge sse_connections;
    /// Open driver WebSockets.
    gauge driver_connections;
    /// Open ride chat WebSockets.
    gauge chat_connections;
    /// Open edge links (WebSockets from edge Durable Objects, one per active object).
    gauge edge_links;
    /// Open TCP connections of any kind.
    gauge tcp_connections;
    /// Connections refused because the instance was full.
    counter connections_refused_total;
    /// Location updates received from drivers and valid.
    counter updates_received_total;
    /// Location updates refused as invalid.
    counter updates_invalid_total;
    /// Location updates dropped because their ts was not newer than the stored one.
    counter updates_stale_total;
    /// Location updates replaced by a newer one from the same driver before ingest (flood coalescing).
    counter updates_coalesced_total;
    /// Location updates stored but not pushed: same grid cell as the last pushed one.
    counter updates_suppressed_total;
    /// Location updates published to the bus (grid cell changed).
    counter updates_published_total;
    /// Location updates that could not be stored (backend unavailable, or too many waiting for it).
    counter updates_failed_total;
    /// Surge multipliers set by operators through this instance (stored and published).
    counter surge_updates_total;
    /// Rides requested through this instance (stored and published as `searching`).
    counter rides_created_total;
    /// Rides cancelled through this instance (a repeated cancel of a cancelled ride is not counted).
    counter rides_cancelled_total;
    /// Values received from the bus and handed to local hubs.
    counter bus_deliveries_total;
    /// Events written to rider streams.
    counter events_pushed_total;
    /// Values a rider stream skipped because a newer one arrived first (latest-only delivery).
    counter events_superseded_total;
    /// Ride offers made to drivers by this instance.
    counter offers_sent_total;
    /// Offers this instance found past their deadline and expired.
    counter offers_expired_total;
    /// Rides a driver won through this instance.
    counter rides_assigned_total;
    /// Rides this instance gave up on: nobody (else) within the radius to offer them to.
    counter rides_unmatched_total;
    /// Chat messages stored through this instance (a retried `clientMsgId` is not counted again).
    counter chat_messages_total;
    /// Chat messages refused because their sender went over the rate.
    counter chat_refused_total;
    /// Driver positions written to the dispatch store (at most one a second per driver).
    counter dispatch_position_writes_total;
    /// Local hubs (channels with at least one local subscriber).
    gauge hubs;
    /// Backend (Redis) operations that failed.
    counter backend_errors_total;
}

/// All of the instance's metrics. Cheap to clone (one `Arc`).
#[derive(Debug, Default, Clone)]
pub struct Metrics(Arc<AllMetrics>);

#[derive(Debug, Default)]
struct AllMetrics {
    values: MetricValues,
    ingest_latency: LatencyHistogram,
    delivery_age: LatencyHistogram,
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        self.0.values.render(&mut out);
        self.0.ingest_latency.render(
            &mut out,
            "ingest_seconds",
            "Time to store (and publish) location updates in the backend: one update on the embedded store, one batch of them on Redis.",
        );
        self.0.delivery_age.render(
            &mut out,
            "delivery_age_seconds",
            "Age of a pushed location (server clock minus the device ts) when it reaches this instance's hub.",
        );
        out
    }

    /// Backend store-and-publish time of one update (embedded) or one batch of them (Redis).
    pub fn ingest_latency(&self) -> &LatencyHistogram {
        &self.0.ingest_latency
    }

    /// Device-ts-to-hub age of a pushed value.
    pub fn delivery_age(&self) -> &LatencyHistogram {
        &self.0.delivery_age
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn dec(gauge: &AtomicU64) {
        gauge.fetch_sub(1, Relaxed);
    }

    pub fn values(&self) -> &MetricValues {
        &self.0.values
    }
}

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_MICROS: [u64; 12] =
    [250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 500_000, 1_000_000];

/// A Prometheus histogram of durations with fixed buckets: one relaxed add per observation.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS_MICROS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe_micros(&self, micros: u64) {
        if let Some(bucket) = BUCKETS_MICROS.iter().position(|bound| micros <= *bound) {
            self.buckets[bucket].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    pub fn observe(&self, elapsed: std::time::Duration) {
        self.observe_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP ridecast_{name} {help}");
        let _ = writeln!(out, "# TYPE ridecast_{name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS_MICROS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "ridecast_{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "ridecast_{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "ridecast_{name}_sum {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "ridecast_{name}_count {count}");
    }
}

/// Increments a gauge now and decrements it when dropped, so early returns cannot leak a count.
#[derive(Debug)]
pub struct GaugeGuard {
    metrics: Metrics,
    gauge: fn(&MetricValues) -> &AtomicU64,
}

impl GaugeGuard {
    pub fn new(metrics: &Metrics, gauge: fn(&MetricValues) -> &AtomicU64) -> Self {
        Metrics::inc(gauge(metrics.values()));
        Self { metrics: metrics.clone(), gauge }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        Metrics::dec((self.gauge)(self.metrics.values()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_value_for_each_metric() {
        let metrics = Metrics::default();
        Metrics::inc(&metrics.values().updates_published_total);
        let text = metrics.render();
        assert!(text.contains("# TYPE ridecast_updates_published_total counter\nridecast_updates_published_total 1\n"));
        assert!(text.contains("# TYPE ridecast_sse_connections gauge\n"));
    }

    #[test]
    fn histograms_are_cumulative_with_an_inf_bucket() {
        let metrics = Metrics::default();
        metrics.ingest_latency().observe_micros(300);
        metrics.ingest_latency().observe_micros(5_000_000);
        let text = metrics.render();
        assert!(text.contains("ridecast_ingest_seconds_bucket{le=\"0.00025\"} 0\n"), "{text}");
        assert!(text.contains("ridecast_ingest_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("ridecast_ingest_seconds_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("ridecast_ingest_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("ridecast_ingest_seconds_count 2\n"));
    }

    #[test]
    fn a_gauge_guard_gives_back_what_it_took() {
        let metrics = Metrics::default();
        {
            let _guard = GaugeGuard::new(&metrics, |m| &m.sse_connections);
            assert_eq!(metrics.values().sse_connections.load(Relaxed), 1);
        }
        assert_eq!(metrics.values().sse_connections.load(Relaxed), 0);
    }
}
