//! The coordinator: starts the workers (in this process, or as child processes re-executing
//! this binary), walks them through the phases, samples the server, and prints the report.
//!
//! Child processes exist because one process may hold at most ~20,000 file descriptors here.
//! A child receives the same command line plus `--worker-index N --run-tag T`; commands go to
//! its stdin and events come back on its stdout, one JSON object per line. Its stderr is
//! passed through for progress messages.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cli::{CliError, ModeArgs};
use crate::clock::epoch_us;
use crate::job::{Job, Mode};
use crate::procfs::ServerSample;
use crate::report::{RunFacts, RunReport, ServerReadings, WorkerReport};
use crate::worker::{Command, WorkerEvent, run_worker};

/// Sockets kept free in each process for stdio, the runtime and the unexpected.
const FD_RESERVE: u64 = 100;

/// Most client sockets one process holds, whatever its fd limit: a margin under this machine's
/// 20,000-file hard limit for sockets in TIME_WAIT-reuse retries and the unexpected.
pub const MAX_SOCKETS_PER_PROCESS: u64 = 19_500;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Cli(#[from] CliError),
    #[error("worker {worker} would hold {sockets} sockets but a process may hold {limit}; use more --procs")]
    TooManySockets { worker: usize, sockets: usize, limit: u64 },
    #[error("could not start worker process {worker}")]
    Spawn {
        worker: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("worker {worker} ended before reporting ({phase})")]
    WorkerGone { worker: usize, phase: &'static str },
    #[error("workers did not connect within {0:?}")]
    SetupTimeout(Duration),
}

/// A message from a worker, or the news that it is gone.
#[derive(Debug)]
enum Incoming {
    Event(WorkerEvent),
    Gone(usize),
}

/// How the coordinator talks to one worker.
#[derive(Debug)]
enum WorkerLink {
    InProcess { commands: mpsc::UnboundedSender<Command>, task: JoinHandle<()> },
    Child { worker: usize, child: Box<Child>, stdin: Option<ChildStdin> },
}

impl WorkerLink {
    async fn send(&mut self, command: Command) {
        match self {
            Self::InProcess { commands, .. } => {
                let _ = commands.send(command);
            }
            Self::Child { stdin, worker, .. } => {
                let Some(pipe) = stdin else { return };
                let mut line = serde_json::to_string(&command).unwrap_or_default();
                line.push('\n');
                if pipe.write_all(line.as_bytes()).await.is_err() || pipe.flush().await.is_err() {
                    eprintln!("[coordinator] worker {worker} no longer reads commands");
                    *stdin = None;
                }
            }
        }
    }

    async fn finish(self) {
        match self {
            Self::InProcess { task, .. } => {
                let _ = task.await;
            }
            Self::Child { mut child, stdin, worker } => {
                drop(stdin);
                match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
                    Ok(Ok(status)) if status.success() => {}
                    Ok(Ok(status)) => eprintln!("[coordinator] worker {worker} exited with {status}"),
                    Ok(Err(e)) => eprintln!("[coordinator] waiting for worker {worker} failed: {e}"),
                    Err(_) => {
                        eprintln!("[coordinator] worker {worker} did not exit; killing it");
                        let _ = child.kill().await;
                    }
                }
            }
        }
    }
}

fn new_run_tag() -> String {
    // Six hex digits of time mixed with the pid: distinct between runs minutes apart.
    let mixed = (epoch_us() / 1000) ^ (u64::from(std::process::id()) << 20);
    format!("{:06x}", mixed & 0xFF_FFFF)
}

/// Runs the whole load test, or one worker of it when `--worker-index` is given.
///
/// # Errors
/// [`RunError`] when the command line is unusable or a worker fails.
pub async fn run(args: ModeArgs, fd_limit: u64) -> Result<(), RunError> {
    let common = args.common().clone();
    if let Some(worker) = common.worker_index {
        let job = args.job(worker, common.run_tag.as_deref().unwrap_or("x"))?;
        check_sockets(&job, fd_limit)?;
        run_worker_process(job).await;
        return Ok(());
    }

    let run_tag = new_run_tag();
    let jobs = (0..common.procs).map(|w| args.job(w, &run_tag)).collect::<Result<Vec<_>, _>>()?;
    for job in &jobs {
        check_sockets(job, fd_limit)?;
    }
    if jobs.len() > 1 {
        for job in &jobs {
            eprintln!(
                "[coordinator] worker {}: {} sockets ({} riders, {} drivers)",
                job.worker,
                job.sockets_needed(),
                job.sockets_needed() - job.owned_drivers().len(),
                job.owned_drivers().len()
            );
        }
    }
    let mode = args.mode();
    let pids = common.server_pids.clone();
    let mut readings = ServerReadings { pids: pids.clone(), before: ServerSample::take(&pids), ..Default::default() };

    let (incoming_tx, mut incoming) = mpsc::unbounded_channel();
    let mut links = Vec::with_capacity(jobs.len());
    if jobs.len() == 1 {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, mut event_rx) = mpsc::unbounded_channel();
        let job = jobs.into_iter().next().ok_or(CliError::Invalid("no worker".into()))?;
        let task = tokio::spawn(run_worker(job, command_rx, event_tx));
        let forward = incoming_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = event_rx.recv().await {
                let _ = forward.send(Incoming::Event(event));
            }
            let _ = forward.send(Incoming::Gone(0));
        });
        links.push(WorkerLink::InProcess { commands, task });
    } else {
        for worker in 0..jobs.len() {
            links.push(spawn_child(worker, &run_tag, incoming_tx.clone())?);
        }
    }
    drop(incoming_tx);

    let result = drive(&args, mode, &mut links, &mut incoming, &mut readings).await;
    for link in &mut links {
        link.send(Command::Exit).await;
    }
    for link in links {
        link.finish().await;
    }
    let (merged, window_secs) = result?;

    let facts =
        RunFacts { mode, procs: common.procs, urls: common.urls.clone(), run_tag, params: args.params(), window_secs };
    let report = RunReport::new(facts, &merged, &readings);
    eprint!("{}", report.table());
    println!("{}", report.to_json_line());
    Ok(())
}

fn check_sockets(job: &Job, fd_limit: u64) -> Result<(), RunError> {
    let sockets = job.sockets_needed();
    let limit = socket_limit(fd_limit);
    if sockets as u64 > limit {
        return Err(RunError::TooManySockets { worker: job.worker, sockets, limit });
    }
    Ok(())
}

/// Sockets one process may hold under an fd limit of `fd_limit`.
fn socket_limit(fd_limit: u64) -> u64 {
    fd_limit.saturating_sub(FD_RESERVE).min(MAX_SOCKETS_PER_PROCESS)
}

/// The phases, from waiting for `ready` to collecting `done`. Returns the merged tallies and
/// the measured window in seconds.
async fn drive(
    args: &ModeArgs,
    mode: Mode,
    links: &mut [WorkerLink],
    incoming: &mut mpsc::UnboundedReceiver<Incoming>,
    readings: &mut ServerReadings,
) -> Result<(WorkerReport, f64), RunError> {
    let common = args.common();
    let layout = args.layout();
    let sockets = layout.riders + if args.connects_drivers() { layout.drivers } else { 0 };
    let waves = (sockets / (common.connect_concurrency.max(1) * links.len()) + 1) as u64;
    let paced_secs = match common.connect_rate {
        0 => 0,
        rate => sockets as u64 / (rate * links.len() as u64),
    };
    let setup_limit = Duration::from_millis(waves * common.connect_timeout_ms) + Duration::from_secs(60 + paced_secs);
    let setup_started = Instant::now();

    let mut ready = 0;
    let mut connected = 0;
    let mut drivers_connected = 0;
    while ready < links.len() {
        let next = tokio::time::timeout_at((setup_started + setup_limit).into(), incoming.recv())
            .await
            .map_err(|_| RunError::SetupTimeout(setup_limit))?;
        match next {
            Some(Incoming::Event(WorkerEvent::Ready { riders_connected, drivers_connected: drivers, .. })) => {
                ready += 1;
                connected += riders_connected;
                drivers_connected += drivers;
            }
            Some(Incoming::Event(WorkerEvent::Done { .. })) => {}
            Some(Incoming::Gone(worker)) => return Err(RunError::WorkerGone { worker, phase: "setup" }),
            None => return Err(RunError::WorkerGone { worker: 0, phase: "setup" }),
        }
    }
    eprintln!(
        "[coordinator] all {} worker(s) ready in {:.1} s: {connected}/{} riders and {drivers_connected} drivers connected; measuring for {:?}",
        links.len(),
        setup_started.elapsed().as_secs_f64(),
        layout.riders,
        args.window()
    );

    readings.at_go = ServerSample::take(&readings.pids);
    let go_at = Instant::now();
    let start_ms = epoch_us() / 1000;
    for link in links.iter_mut() {
        link.send(Command::Go { start_ms }).await;
    }
    tokio::time::sleep(args.window()).await;
    let window_secs = go_at.elapsed().as_secs_f64();
    if mode == Mode::Idle {
        // Memory is read while every stream is still open.
        readings.at_end = ServerSample::take(&readings.pids);
    }
    for link in links.iter_mut() {
        link.send(Command::Stop).await;
    }

    let mut merged = WorkerReport::default();
    let mut done = 0;
    while done < links.len() {
        match incoming.recv().await {
            Some(Incoming::Event(WorkerEvent::Done { report, .. })) => {
                merged.merge(&report);
                done += 1;
            }
            Some(Incoming::Event(WorkerEvent::Ready { .. })) => {}
            Some(Incoming::Gone(worker)) => return Err(RunError::WorkerGone { worker, phase: "run" }),
            None => return Err(RunError::WorkerGone { worker: 0, phase: "run" }),
        }
    }
    if mode != Mode::Idle {
        readings.at_end = ServerSample::take(&readings.pids);
    }
    Ok((merged, window_secs))
}

fn spawn_child(
    worker: usize,
    run_tag: &str,
    incoming: mpsc::UnboundedSender<Incoming>,
) -> Result<WorkerLink, RunError> {
    let spawn_error = |source| RunError::Spawn { worker, source };
    let exe = std::env::current_exe().map_err(spawn_error)?;
    let mut child = tokio::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .args(["--worker-index", &worker.to_string(), "--run-tag", run_tag])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    tokio::spawn(async move {
        if let Some(stdout) = stdout {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<WorkerEvent>(&line) {
                    Ok(event) => {
                        let _ = incoming.send(Incoming::Event(event));
                    }
                    Err(e) => eprintln!("[coordinator] worker {worker} said something unreadable ({e}): {line}"),
                }
            }
        }
        let _ = incoming.send(Incoming::Gone(worker));
    });
    Ok(WorkerLink::Child { worker, child: Box::new(child), stdin })
}

/// The body of a worker process: commands from stdin, events to stdout.
async fn run_worker_process(job: Job) {
    let (command_tx, command_rx) = mpsc::unbounded_channel();
    let (event_tx, mut event_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Command>(&line) {
                Ok(command) => {
                    let _ = command_tx.send(command);
                }
                Err(e) => eprintln!("[worker] unreadable command ({e}): {line}"),
            }
        }
        // The coordinator is gone: close everything.
        let _ = command_tx.send(Command::Exit);
    });
    let worker = tokio::spawn(run_worker(job, command_rx, event_tx));
    let mut stdout = tokio::io::stdout();
    while let Some(event) = event_rx.recv().await {
        let mut line = serde_json::to_string(&event).unwrap_or_default();
        line.push('\n');
        if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
            break;
        }
    }
    let _ = worker.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_holds_at_most_19500_sockets_and_less_under_a_low_fd_limit() {
        assert_eq!(socket_limit(20_000), MAX_SOCKETS_PER_PROCESS);
        assert_eq!(socket_limit(1_048_576), MAX_SOCKETS_PER_PROCESS);
        assert_eq!(socket_limit(1024), 1024 - FD_RESERVE);
        assert_eq!(socket_limit(50), 0);
    }
}
