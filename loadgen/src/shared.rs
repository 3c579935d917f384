//! What every task of one worker shares: the phase signals, connection pacing, the drivers'
//! send records, and the counters the worker's report is built from; and the [`Outcome`] each
//! rider and driver task reports once it has connected, or failed to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::book::DriverBook;
use crate::job::{Job, Mode, MotionKind, ServerKind};
use crate::net::{Pacer, SourcePorts};
use crate::plan::source_ips;
use crate::stats::AtomicHistogram;
use crate::trip::TripRecipe;

/// How one connection attempt ended, sent by each rider and driver task once.
#[derive(Debug)]
pub struct Outcome {
    pub driver: usize,
    pub is_driver: bool,
    /// Microseconds to connect, or the failure's kind.
    pub result: Result<u64, String>,
}

/// Relaxed counter shorthand.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of the poll mode.
#[derive(Debug, Default)]
pub struct PollCounters {
    pub requests: Counter,
    pub ok: Counter,
    pub not_modified: Counter,
    pub not_found: Counter,
    pub other_status: Counter,
    pub errors: Counter,
    pub reconnects: Counter,
    pub bytes_read: Counter,
    pub bytes_written: Counter,
    /// 200 responses showing a newer location than the rider had: the useful ones.
    pub fresh: Counter,
    pub request_us: AtomicHistogram,
    pub staleness_us: AtomicHistogram,
    /// Staleness of the updates that changed cell (the ones push would deliver).
    pub staleness_cell_change_us: AtomicHistogram,
    pub staleness_estimated: Counter,
}

/// State shared by every task of a worker: phase signals, counters, histograms.
#[derive(Debug)]
pub struct Shared {
    pub mode: Mode,
    pub server: ServerKind,
    pub motion: MotionKind,
    pub connect_limit: Semaphore,
    /// Spaces connection attempts in time (`--connect-rate`).
    pub pacer: Pacer,
    pub connect_timeout: Duration,
    pub send_interval: Duration,
    pub poll_interval: Duration,
    pub total_drivers: usize,
    pub seed: u64,
    /// Share of time fleet drivers stand.
    pub standing_share: f64,
    /// Cancelled at `go`.
    pub go: CancellationToken,
    /// Cancelled at `stop`.
    pub stop: CancellationToken,
    /// Cancelled at `exit`.
    pub exit: CancellationToken,
    /// `ts` (ms) from which events count; 0 before `go`.
    pub window_start_ms: AtomicU64,
    pub book: DriverBook,
    /// Source (address, port) pairs for every client socket of this worker.
    pub sources: SourcePorts,

    pub streams_closed: Counter,
    pub closed_before_go: Counter,
    pub closed_during_run: Counter,
    pub connect_us: AtomicHistogram,

    pub events_received: Counter,
    pub events_before_window: Counter,
    pub events_duplicate: Counter,
    pub events_not_a_push: Counter,
    pub events_other: Counter,
    pub comments: Counter,
    /// Bytes the rider streams read from `go` on (events, heartbeats and framing).
    pub stream_bytes: Counter,
    pub latency_us: AtomicHistogram,
    pub latency_estimated: Counter,

    pub driver_sends_failed: Counter,
    pub driver_error_frames: Counter,
    pub driver_disconnects: Counter,
    /// Connections a driver opened again after losing one (Nchan publishers).
    pub driver_reconnects: Counter,

    pub poll: PollCounters,
}

impl Shared {
    /// Opens a TCP connection to `addr` once a connect permit is held and the pacer lets the
    /// attempt go, and returns it (or the failure's kind) with the time the attempt started:
    /// connect time excludes waiting for a permit, which is not the server's doing.
    pub async fn connect_paced(&self, addr: std::net::SocketAddr) -> (Result<tokio::net::TcpStream, String>, Instant) {
        let _permit = self.connect_limit.acquire().await;
        self.pacer.wait().await;
        let started = Instant::now();
        let result = match tokio::time::timeout(self.connect_timeout, crate::net::connect(addr, &self.sources)).await {
            Ok(Ok(socket)) => Ok(socket),
            Ok(Err(e)) => Err(crate::http::HttpError::Io(e).kind()),
            Err(_) => Err("timeout".to_owned()),
        };
        (result, started)
    }

    /// What every driver trip of this run shares.
    pub fn trip_recipe(&self) -> TripRecipe {
        TripRecipe {
            motion: self.motion,
            server: self.server,
            seed: self.seed,
            interval: self.send_interval.max(Duration::from_millis(1)),
            standing_share: self.standing_share,
        }
    }

    /// The state of a worker running `job`, whose drivers are `owned`.
    pub(crate) fn new(job: &Job, owned: &[usize]) -> Self {
        Self {
            mode: job.mode,
            server: job.server,
            motion: job.motion,
            connect_limit: Semaphore::new(job.connect_concurrency.max(1)),
            pacer: Pacer::new(job.connect_rate),
            connect_timeout: job.connect_timeout,
            send_interval: job.send_interval,
            poll_interval: job.poll_interval,
            total_drivers: job.layout.drivers,
            seed: job.seed,
            standing_share: job.standing_share,
            go: CancellationToken::new(),
            stop: CancellationToken::new(),
            exit: CancellationToken::new(),
            window_start_ms: AtomicU64::new(0),
            book: DriverBook::new(owned),
            sources: SourcePorts::new(source_ips(job.worker, job.procs, job.source_addrs), job.port_seed),
            streams_closed: Counter::default(),
            closed_before_go: Counter::default(),
            closed_during_run: Counter::default(),
            connect_us: AtomicHistogram::new(),
            events_received: Counter::default(),
            events_before_window: Counter::default(),
            events_duplicate: Counter::default(),
            events_not_a_push: Counter::default(),
            events_other: Counter::default(),
            comments: Counter::default(),
            stream_bytes: Counter::default(),
            latency_us: AtomicHistogram::new(),
            latency_estimated: Counter::default(),
            driver_sends_failed: Counter::default(),
            driver_error_frames: Counter::default(),
            driver_disconnects: Counter::default(),
            driver_reconnects: Counter::default(),
            poll: PollCounters::default(),
        }
    }

    /// `ts` from which events count, or `None` before `go`.
    pub fn window_start(&self) -> Option<u64> {
        match self.window_start_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// Notes that a rider's stream ended on the server's (or network's) initiative.
    pub fn stream_ended(&self) {
        self.streams_closed.inc();
        if self.go.is_cancelled() {
            self.closed_during_run.inc();
        } else {
            self.closed_before_go.inc();
        }
    }
}
