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
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::clock::epoch_us;
use crate::driver::{self, DriverSpec};
use crate::job::{Job, Mode, ServerKind};
use crate::plan::share;
use crate::publisher::{self, PublisherSpec};
use crate::report::WorkerReport;
use crate::rider::{self, RiderSpec};
use crate::shared::{Outcome, Shared};
use crate::stats::AtomicHistogram;

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
            sends: tallies.iter().map(|t| t.sends).sum(),
            pushes: tallies.iter().map(|t| t.pushes).sum(),
            cell_changes: tallies.iter().map(|t| t.cell_changes).sum(),
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
        pushes_by_driver: tallies.iter().map(|t| (t.driver, t.pushes)).collect(),
        generator: GeneratorTally { rss_kb: me.rss_kb.unwrap_or(0), cpu_us: me.cpu_us.unwrap_or(0) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
