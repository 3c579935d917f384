//! One worker: the drivers and riders of one process, driven through phases by the coordinator.
//!
//! Phases, each started by a [`Command`]:
//! 1. *setup* (on start): connect this worker's drivers, then its riders, then report
//!    [`WorkerEvent::Ready`];
//! 2. `go`: drivers start sending, riders start counting what arrives;
//! 3. `stop`: drivers stop; after the drain time the worker reports [`WorkerEvent::Done`] with
//!    its tallies — connections stay open so the server can still be measured;
//! 4. `exit`: every connection is closed.
//!
//! The same function runs inside the coordinator's process (`--procs 1`) or in a child process
//! whose stdin and stdout carry the commands and events as JSON lines.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ridecast_protocol::TokenKeys;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::driver::{self, DriverSpec};
use crate::http::Target;
use crate::net::{Pacer, SourcePorts};
use crate::plan::{Layout, Names, owner_of_driver, share, source_ips};
use crate::publisher::{self, PublisherSpec};
use crate::report::WorkerReport;
use crate::rider::{self, RiderSpec};
use crate::stats::AtomicHistogram;

/// Wall-clock time in microseconds since the epoch.
///
/// Drivers stamp sends and riders stamp receipts with the same clock; both run on one machine,
/// so the clocks agree and `receipt - send` is the delivery latency.
pub fn epoch_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Rider streams and/or idle driver WebSockets held open; nothing is sent.
    Idle,
    /// Every driver update changes cell, so every update is pushed.
    Fanout,
    /// Drivers drive along streets; only cell changes are pushed.
    Realistic,
    /// Riders poll the location endpoint instead of streaming.
    Poll,
}

impl Mode {
    /// Whether drivers send locations (idle drivers, when there are any, only hold a socket).
    pub fn has_drivers(self) -> bool {
        self != Self::Idle
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Fanout => "fanout",
            Self::Realistic => "realistic",
            Self::Poll => "poll",
        }
    }
}

/// The kind of server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    /// A Ridecast origin: drivers on `/ws/rides`, riders on `/api/sse/drivers/{id}/location`.
    Origin,
    /// Nginx with Nchan: riders on `GET /sub/{id}` (EventSource), drivers `POST /pub/{id}`.
    Nchan,
}

impl ServerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::Nchan => "nchan",
        }
    }
}

/// How simulated drivers move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MotionKind {
    /// A new grid cell on every update, so every update is pushed.
    Hop,
    /// Along streets with GPS noise; only cell changes are pushed.
    Street,
}

impl MotionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hop => "hop",
            Self::Street => "street",
        }
    }
}

/// Everything a worker needs to know; built identically by the coordinator and each worker
/// process from the same command line.
#[derive(Debug, Clone)]
pub struct Job {
    pub mode: Mode,
    pub server: ServerKind,
    pub motion: MotionKind,
    /// Driver connections are opened (senders, or idle ones in the idle mode).
    pub connects_drivers: bool,
    pub targets: Vec<Target>,
    /// Where riders connect when not to `targets` (`--rider-url`); empty = `targets`.
    pub rider_targets: Vec<Target>,
    pub keys: TokenKeys,
    pub layout: Layout,
    pub procs: usize,
    pub worker: usize,
    /// Drivers spread over the targets too (only meaningful when the instances share a bus).
    pub drivers_round_robin: bool,
    /// Time between two updates of one driver.
    pub send_interval: Duration,
    /// Time between two polls of one rider.
    pub poll_interval: Duration,
    pub source_addrs: usize,
    pub connect_concurrency: usize,
    /// Connection attempts started per second (0 = unpaced).
    pub connect_rate: u64,
    pub connect_timeout: Duration,
    pub drain: Duration,
    pub names: Names,
    pub seed: u64,
    pub token_ttl_secs: u64,
    /// Picks where in the source-port range this run starts (the same in every worker).
    pub port_seed: u64,
}

impl Job {
    /// The instance rider `slot` connects to.
    pub fn rider_target(&self, slot: usize) -> &Target {
        let targets = if self.rider_targets.is_empty() { &self.targets } else { &self.rider_targets };
        &targets[slot % targets.len()]
    }

    /// The instance driver `driver` connects to.
    pub fn driver_target(&self, driver: usize) -> &Target {
        if self.drivers_round_robin { &self.targets[driver % self.targets.len()] } else { &self.targets[0] }
    }

    /// The drivers this worker simulates.
    pub fn owned_drivers(&self) -> Vec<usize> {
        if !self.connects_drivers {
            return Vec::new();
        }
        (0..self.layout.drivers).filter(|&d| owner_of_driver(&self.layout, self.procs, d) == self.worker).collect()
    }

    /// Sockets this worker will hold at once.
    pub fn sockets_needed(&self) -> usize {
        share(self.layout.riders, self.procs, self.worker).len() + self.owned_drivers().len()
    }
}

/// From the coordinator to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Start sending and counting; events with a `ts` before `start_ms` are not counted.
    Go { start_ms: u64 },
    /// Stop sending, drain, report.
    Stop,
    /// Close everything.
    Exit,
}

/// From a worker to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerEvent {
    Ready { worker: usize, riders_connected: u64, riders_attempted: u64, drivers_connected: u64 },
    Done { worker: usize, report: Box<WorkerReport> },
}

/// How one connection attempt ended, sent by each rider and driver task once.
#[derive(Debug)]
pub struct Outcome {
    pub driver: usize,
    pub is_driver: bool,
    /// Microseconds to connect, or the failure's kind.
    pub result: Result<u64, String>,
}

/// How many recent sends each driver remembers for latency lookups.
const RING: usize = 64;

/// A driver's recent sends: `(ts, send instant in µs, pushed)`.
#[derive(Debug)]
struct SendRing {
    entries: [(u64, u64, bool); RING],
    next: usize,
}

impl SendRing {
    fn push(&mut self, entry: (u64, u64, bool)) {
        self.entries[self.next % RING] = entry;
        self.next += 1;
    }

    fn find(&self, ts: u64) -> Option<(u64, bool)> {
        self.entries.iter().find(|e| e.0 == ts && ts != 0).map(|e| (e.1, e.2))
    }
}

/// What this worker's drivers sent, for riders to look up send instants.
#[derive(Debug)]
struct DriverRecord {
    ring: Mutex<SendRing>,
    sends: AtomicU64,
    pushes: AtomicU64,
}

/// The send records of the drivers simulated in this process, indexed by driver.
#[derive(Debug)]
pub struct DriverBook {
    records: BTreeMap<usize, DriverRecord>,
}

impl DriverBook {
    fn new(owned: &[usize]) -> Self {
        let records = owned
            .iter()
            .map(|&d| {
                let record = DriverRecord {
                    ring: Mutex::new(SendRing { entries: [(0, 0, false); RING], next: 0 }),
                    sends: AtomicU64::new(0),
                    pushes: AtomicU64::new(0),
                };
                (d, record)
            })
            .collect();
        Self { records }
    }

    /// Notes a send before it goes on the wire (a rider may see it before `send` returns).
    pub fn record_send(&self, driver: usize, ts: u64, send_us: u64, pushed: bool) {
        if let Some(record) = self.records.get(&driver) {
            record.ring.lock().unwrap_or_else(PoisonError::into_inner).push((ts, send_us, pushed));
            record.sends.fetch_add(1, Ordering::Relaxed);
            if pushed {
                record.pushes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The send instant and push flag of `driver`'s update `ts`, if this process sent it
    /// recently.
    pub fn lookup(&self, driver: usize, ts: u64) -> Option<(u64, bool)> {
        self.records.get(&driver)?.ring.lock().unwrap_or_else(PoisonError::into_inner).find(ts)
    }

    /// Calls `f` with the send instant and push flag of every update of `driver` with
    /// `after < ts <= upto` and `ts >= from`. Returns `false` when the driver is simulated
    /// elsewhere.
    pub fn each_send_between(
        &self,
        driver: usize,
        after: u64,
        upto: u64,
        from: u64,
        mut f: impl FnMut(u64, bool),
    ) -> bool {
        let Some(record) = self.records.get(&driver) else { return false };
        let ring = record.ring.lock().unwrap_or_else(PoisonError::into_inner);
        for &(ts, send_us, pushed) in &ring.entries {
            if ts > after && ts <= upto && ts >= from && ts != 0 {
                f(send_us, pushed);
            }
        }
        true
    }

    /// `(driver, sends, pushes)` of every driver of this process.
    fn tallies(&self) -> Vec<(u32, u64, u64)> {
        self.records
            .iter()
            .map(|(&d, r)| (d as u32, r.sends.load(Ordering::Relaxed), r.pushes.load(Ordering::Relaxed)))
            .collect()
    }
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

    fn new(job: &Job, owned: &[usize]) -> Self {
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

/// Tallies of the setup phase, kept by the worker loop.
#[derive(Debug, Default)]
struct SetupTally {
    riders_attempted: u64,
    riders_connected: u64,
    rider_failures: BTreeMap<String, u64>,
    riders_by_driver: BTreeMap<usize, u64>,
    drivers_attempted: u64,
    drivers_connected: u64,
    driver_failures: BTreeMap<String, u64>,
    driver_connect_us: AtomicHistogram,
}

impl SetupTally {
    fn note(&mut self, outcome: Outcome) {
        match (outcome.is_driver, outcome.result) {
            (true, Ok(us)) => {
                self.drivers_connected += 1;
                self.driver_connect_us.record(us);
            }
            (true, Err(kind)) => *self.driver_failures.entry(kind).or_default() += 1,
            (false, Ok(_)) => {
                self.riders_connected += 1;
                *self.riders_by_driver.entry(outcome.driver).or_default() += 1;
            }
            (false, Err(kind)) => *self.rider_failures.entry(kind).or_default() += 1,
        }
    }
}

/// Runs one worker until `exit` (or until the command channel closes).
pub async fn run_worker(
    job: Job,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<WorkerEvent>,
) {
    let owned = job.owned_drivers();
    let shared = Arc::new(Shared::new(&job, &owned));
    let exp = epoch_us() / 1_000_000 + job.token_ttl_secs;
    let (outcome_tx, mut outcome_rx) = mpsc::unbounded_channel();
    let mut tally = SetupTally::default();
    let tag = format!("[w{}]", job.worker);

    // Drivers first, so that riders subscribe to drivers that exist.
    for &d in &owned {
        let spawned = match job.server {
            ServerKind::Origin => DriverSpec::new(&job, d, exp).map(|spec| {
                tokio::spawn(driver::run(Arc::clone(&shared), spec, outcome_tx.clone()));
            }),
            ServerKind::Nchan => PublisherSpec::new(&job, d).map(|spec| {
                tokio::spawn(publisher::run(Arc::clone(&shared), spec, outcome_tx.clone()));
            }),
        };
        if let Err(e) = spawned {
            let _ = outcome_tx.send(Outcome { driver: d, is_driver: true, result: Err(e) });
        }
        tally.drivers_attempted += 1;
    }
    let mut progress = tokio::time::interval(Duration::from_secs(2));
    progress.tick().await;
    while tally.drivers_connected + tally.driver_failures.values().sum::<u64>() < tally.drivers_attempted {
        tokio::select! {
            outcome = outcome_rx.recv() => match outcome {
                Some(outcome) => tally.note(outcome),
                None => break,
            },
            _ = progress.tick() => eprintln!(
                "{tag} drivers connected {}/{} (failed {})",
                tally.drivers_connected,
                tally.drivers_attempted,
                tally.driver_failures.values().sum::<u64>()
            ),
        }
    }
    if tally.drivers_attempted > 0 {
        eprintln!("{tag} drivers connected {}/{}", tally.drivers_connected, tally.drivers_attempted);
    }

    let slots = share(job.layout.riders, job.procs, job.worker);
    for slot in slots {
        let spec = RiderSpec::new(&job, slot, exp);
        match spec {
            Ok(spec) => {
                if job.mode == Mode::Poll {
                    tokio::spawn(rider::poll(Arc::clone(&shared), spec, outcome_tx.clone()));
                } else {
                    tokio::spawn(rider::stream(Arc::clone(&shared), spec, outcome_tx.clone()));
                }
            }
            Err(e) => {
                let driver = job.layout.driver_of(slot);
                let _ = outcome_tx.send(Outcome { driver, is_driver: false, result: Err(e) });
            }
        }
        tally.riders_attempted += 1;
    }
    while tally.riders_connected + tally.rider_failures.values().sum::<u64>() < tally.riders_attempted {
        tokio::select! {
            outcome = outcome_rx.recv() => match outcome {
                Some(outcome) => tally.note(outcome),
                None => break,
            },
            _ = progress.tick() => eprintln!(
                "{tag} riders connected {}/{} (failed {})",
                tally.riders_connected,
                tally.riders_attempted,
                tally.rider_failures.values().sum::<u64>()
            ),
        }
    }
    if tally.riders_attempted > 0 {
        eprintln!("{tag} riders connected {}/{}", tally.riders_connected, tally.riders_attempted);
    }
    let _ = events.send(WorkerEvent::Ready {
        worker: job.worker,
        riders_connected: tally.riders_connected,
        riders_attempted: tally.riders_attempted,
        drivers_connected: tally.drivers_connected,
    });

    while let Some(command) = commands.recv().await {
        match command {
            Command::Go { start_ms } => {
                shared.window_start_ms.store(start_ms, Ordering::Relaxed);
                shared.go.cancel();
            }
            Command::Stop => {
                shared.stop.cancel();
                tokio::time::sleep(job.drain).await;
                let report = build_report(&shared, &tally);
                let _ = events.send(WorkerEvent::Done { worker: job.worker, report: Box::new(report) });
            }
            Command::Exit => break,
        }
    }
    shared.exit.cancel();
}

fn build_report(shared: &Shared, setup: &SetupTally) -> WorkerReport {
    use crate::report::{DriverTally, EventTally, GeneratorTally, PollTally, RiderTally};
    let tallies = shared.book.tallies();
    let me = crate::procfs::sample(std::process::id());
    let poll = &shared.poll;
    WorkerReport {
        riders: RiderTally {
            attempted: setup.riders_attempted,
            connected: setup.riders_connected,
            failures: setup.rider_failures.clone(),
            connect_us: shared.connect_us.snapshot(),
            open_at_end: setup.riders_connected.saturating_sub(shared.streams_closed.get()),
            closed_before_go: shared.closed_before_go.get(),
            closed_during_run: shared.closed_during_run.get(),
        },
        drivers: DriverTally {
            attempted: setup.drivers_attempted,
            connected: setup.drivers_connected,
            failures: setup.driver_failures.clone(),
            sends: tallies.iter().map(|t| t.1).sum(),
            pushes: tallies.iter().map(|t| t.2).sum(),
            send_errors: shared.driver_sends_failed.get(),
            error_frames: shared.driver_error_frames.get(),
            disconnects: shared.driver_disconnects.get(),
            reconnects: shared.driver_reconnects.get(),
            connect_us: setup.driver_connect_us.snapshot(),
        },
        events: EventTally {
            received: shared.events_received.get(),
            before_window: shared.events_before_window.get(),
            duplicate: shared.events_duplicate.get(),
            not_a_push: shared.events_not_a_push.get(),
            other: shared.events_other.get(),
            comments: shared.comments.get(),
            bytes_read: shared.stream_bytes.get(),
            latency_us: shared.latency_us.snapshot(),
            latency_estimated: shared.latency_estimated.get(),
        },
        poll: PollTally {
            requests: poll.requests.get(),
            ok: poll.ok.get(),
            not_modified: poll.not_modified.get(),
            not_found: poll.not_found.get(),
            other_status: poll.other_status.get(),
            errors: poll.errors.get(),
            reconnects: poll.reconnects.get(),
            bytes_read: poll.bytes_read.get(),
            bytes_written: poll.bytes_written.get(),
            fresh: poll.fresh.get(),
            request_us: poll.request_us.snapshot(),
            staleness_us: poll.staleness_us.snapshot(),
            staleness_cell_change_us: poll.staleness_cell_change_us.snapshot(),
            staleness_estimated: poll.staleness_estimated.get(),
        },
        riders_by_driver: setup.riders_by_driver.iter().map(|(&d, &n)| (d as u32, n)).collect(),
        pushes_by_driver: tallies.iter().map(|t| (t.0, t.2)).collect(),
        generator: GeneratorTally { rss_kb: me.rss_kb.unwrap_or(0), cpu_us: me.cpu_us.unwrap_or(0) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_finds_recent_sends_and_forgets_old_ones() {
        let book = DriverBook::new(&[3]);
        for i in 1..=100u64 {
            book.record_send(3, 1000 + i, 5_000 + i, i % 2 == 0);
        }
        assert_eq!(book.lookup(3, 1100), Some((5_100, true)));
        assert_eq!(book.lookup(3, 1099), Some((5_099, false)));
        assert_eq!(book.lookup(3, 1010), None, "evicted after {RING} newer sends");
        assert_eq!(book.lookup(4, 1100), None, "not simulated here");
        assert_eq!(book.tallies(), vec![(3, 100, 50)]);
        let mut seen = Vec::new();
        assert!(book.each_send_between(3, 1095, 1098, 1097, |us, pushed| seen.push((us, pushed))));
        seen.sort_unstable();
        assert_eq!(seen, vec![(5_097, false), (5_098, true)]);
        assert!(!book.each_send_between(9, 0, u64::MAX, 0, |_, _| {}));
    }

    #[test]
    fn commands_and_events_are_json_lines() {
        let go = serde_json::to_string(&Command::Go { start_ms: 5 }).expect("serializes");
        assert_eq!(go, r#"{"cmd":"go","start_ms":5}"#);
        assert_eq!(serde_json::from_str::<Command>(r#"{"cmd":"exit"}"#).expect("parses"), Command::Exit);
        let ready = WorkerEvent::Ready { worker: 1, riders_connected: 2, riders_attempted: 3, drivers_connected: 0 };
        let back: WorkerEvent = serde_json::from_str(&serde_json::to_string(&ready).expect("ser")).expect("de");
        assert!(matches!(back, WorkerEvent::Ready { worker: 1, riders_connected: 2, .. }));
    }
}
