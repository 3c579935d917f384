//! The command line: one subcommand per mode, shared connection flags, and the translation of
//! both into a worker's [`Job`].

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ridecast_protocol::{Id, TokenError, TokenKeys};
use serde_json::json;

use crate::http::{Target, UrlError};
use crate::plan::{Layout, MAX_SOURCE_ADDRS, Names};
use crate::worker::{Job, Mode};

/// The origin's dev-mode secret, used when neither `--secret` nor the env var is set.
pub const DEV_SECRET: &str = "ridecast-dev-secret";

/// Env var holding the token secret (the origin reads the same one).
pub const SECRET_ENV: &str = "RIDECAST_TOKEN_SECRET";

#[derive(Debug, Parser)]
#[command(
    name = "ridecast-loadgen",
    version,
    about = "Load generator for Ridecast origins: prints a table to stderr and one JSON line to stdout."
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: ModeArgs,
}

#[derive(Debug, Subcommand)]
pub enum ModeArgs {
    /// Open rider SSE streams and hold them: connection capacity and memory per connection.
    Idle(IdleArgs),
    /// Drivers move to a new cell on every update; measure push latency and delivery.
    Fanout(FanoutArgs),
    /// Drivers drive along streets with GPS noise; only cell changes are pushed.
    Realistic(RealisticArgs),
    /// Riders poll the location endpoint with If-None-Match instead of streaming.
    Poll(PollArgs),
}

/// Flags every mode takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Origin base URL (repeat for several instances; riders are spread round-robin).
    #[arg(long = "url", default_value = "http://127.0.0.1:8080")]
    pub urls: Vec<String>,
    /// Token secret of the origin.
    #[arg(long, env = SECRET_ENV, default_value = DEV_SECRET, hide_env_values = true, hide_default_value = true)]
    pub secret: String,
    /// Worker processes to split the connections over (each holds at most ~19,900 sockets).
    #[arg(long, default_value_t = 1)]
    pub procs: usize,
    /// A server process to measure (RSS, CPU); repeat for several.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Source addresses 127.0.0.2.. to spread client sockets over [default: one per process];
    /// 0 = let the kernel choose (127.0.0.1).
    #[arg(long)]
    pub source_addrs: Option<usize>,
    /// Connection attempts in flight at once, per process.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Give up on a connection (or a poll request) after this long.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Spread drivers over the URLs too, instead of sending them all to the first.
    #[arg(long)]
    pub drivers_round_robin: bool,
    /// Prefix of generated driver and rider ids (a per-run tag is appended).
    #[arg(long, default_value = "lg")]
    pub id_prefix: String,
    /// Internal: run as worker N of --procs.
    #[arg(long, hide = true)]
    pub worker_index: Option<usize>,
    /// Internal: the run tag chosen by the coordinator.
    #[arg(long, hide = true)]
    pub run_tag: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Rider streams to open.
    #[arg(long)]
    pub riders: usize,
    /// How long to hold them open once all are connected.
    #[arg(long, default_value_t = 30)]
    pub hold_secs: u64,
    /// Every stream follows the same driver (default: one driver id per stream).
    #[arg(long)]
    pub shared_driver: bool,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub drivers: usize,
    #[arg(long)]
    pub riders_per_driver: usize,
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Time between two updates of one driver.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// After the drivers stop, how long to wait for events still in flight.
    #[arg(long, default_value_t = 3000)]
    pub drain_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct RealisticArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub drivers: usize,
    /// Riders in all, spread evenly over the drivers.
    #[arg(long)]
    pub riders: usize,
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Time between two fixes of one driver (1 Hz GPS by default).
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    #[arg(long, default_value_t = 3000)]
    pub drain_ms: u64,
    /// Seed of the street paths.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct PollArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub riders: usize,
    #[arg(long)]
    pub drivers: usize,
    /// Time between two polls of one rider.
    #[arg(long, default_value_t = 2000)]
    pub interval_ms: u64,
    /// Time between two updates of one driver.
    #[arg(long, default_value_t = 1000)]
    pub driver_interval_ms: u64,
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
}

/// Why the command line cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("bad --url")]
    Url(#[from] UrlError),
    #[error("bad token secret")]
    Secret(#[source] TokenError),
    #[error("{0}")]
    Invalid(String),
}

impl ModeArgs {
    pub fn common(&self) -> &Common {
        match self {
            Self::Idle(a) => &a.common,
            Self::Fanout(a) => &a.common,
            Self::Realistic(a) => &a.common,
            Self::Poll(a) => &a.common,
        }
    }

    pub fn mode(&self) -> Mode {
        match self {
            Self::Idle(_) => Mode::Idle,
            Self::Fanout(_) => Mode::Fanout,
            Self::Realistic(_) => Mode::Realistic,
            Self::Poll(_) => Mode::Poll,
        }
    }

    pub fn layout(&self) -> Layout {
        match self {
            Self::Idle(a) => Layout { drivers: if a.shared_driver { 1 } else { a.riders }, riders: a.riders },
            Self::Fanout(a) => Layout { drivers: a.drivers, riders: a.drivers * a.riders_per_driver },
            Self::Realistic(a) => Layout { drivers: a.drivers, riders: a.riders },
            Self::Poll(a) => Layout { drivers: a.drivers, riders: a.riders },
        }
    }

    /// How long the measured window lasts: the hold (idle) or the duration.
    pub fn window(&self) -> Duration {
        Duration::from_secs(match self {
            Self::Idle(a) => a.hold_secs,
            Self::Fanout(a) => a.duration_secs,
            Self::Realistic(a) => a.duration_secs,
            Self::Poll(a) => a.duration_secs,
        })
    }

    /// The mode's parameters, for the report.
    pub fn params(&self) -> serde_json::Value {
        match self {
            Self::Idle(a) => json!({"riders": a.riders, "hold_secs": a.hold_secs, "shared_driver": a.shared_driver}),
            Self::Fanout(a) => json!({
                "drivers": a.drivers, "riders_per_driver": a.riders_per_driver,
                "duration_secs": a.duration_secs, "interval_ms": a.interval_ms, "drain_ms": a.drain_ms,
            }),
            Self::Realistic(a) => json!({
                "drivers": a.drivers, "riders": a.riders, "duration_secs": a.duration_secs,
                "interval_ms": a.interval_ms, "drain_ms": a.drain_ms, "seed": a.seed,
            }),
            Self::Poll(a) => json!({
                "riders": a.riders, "drivers": a.drivers, "interval_ms": a.interval_ms,
                "driver_interval_ms": a.driver_interval_ms, "duration_secs": a.duration_secs,
            }),
        }
    }

    /// The job of worker `worker` in a run tagged `run_tag`.
    ///
    /// # Errors
    /// [`CliError`] for unusable URLs, secrets or numbers.
    pub fn job(&self, worker: usize, run_tag: &str) -> Result<Job, CliError> {
        let common = self.common();
        let layout = self.layout();
        if layout.riders == 0 {
            return Err(CliError::Invalid("there must be at least one rider".into()));
        }
        if self.mode().has_drivers() && layout.drivers == 0 {
            return Err(CliError::Invalid("there must be at least one driver".into()));
        }
        if common.procs == 0 {
            return Err(CliError::Invalid("--procs must be at least 1".into()));
        }
        let source_addrs = common.source_addrs.unwrap_or(common.procs);
        if source_addrs > MAX_SOURCE_ADDRS {
            return Err(CliError::Invalid(format!("--source-addrs is at most {MAX_SOURCE_ADDRS}")));
        }
        let names = Names::new(&common.id_prefix, run_tag);
        if Id::parse(&names.driver(layout.drivers)).is_err() || Id::parse(&names.rider(layout.riders)).is_err() {
            return Err(CliError::Invalid("--id-prefix makes ids that break the id rule ([A-Za-z0-9_-], 1-64)".into()));
        }
        let targets = common.urls.iter().map(|u| Target::parse(u)).collect::<Result<Vec<_>, _>>()?;
        let keys = TokenKeys::new(common.secret.as_bytes(), None).map_err(CliError::Secret)?;
        let (send_interval, poll_interval, drain, seed) = match self {
            Self::Idle(_) => (Duration::from_secs(1), Duration::from_secs(1), Duration::ZERO, 0),
            Self::Fanout(a) => {
                (Duration::from_millis(a.interval_ms), Duration::ZERO, Duration::from_millis(a.drain_ms), 0)
            }
            Self::Realistic(a) => {
                (Duration::from_millis(a.interval_ms), Duration::ZERO, Duration::from_millis(a.drain_ms), a.seed)
            }
            Self::Poll(a) => (
                Duration::from_millis(a.driver_interval_ms),
                Duration::from_millis(a.interval_ms),
                // One poll interval lets the last requests in flight finish.
                Duration::from_millis(a.interval_ms.min(common.connect_timeout_ms)),
                0,
            ),
        };
        Ok(Job {
            mode: self.mode(),
            targets,
            keys,
            layout,
            procs: common.procs,
            worker,
            drivers_round_robin: common.drivers_round_robin,
            send_interval,
            poll_interval,
            source_addrs,
            connect_concurrency: common.connect_concurrency,
            connect_timeout: Duration::from_millis(common.connect_timeout_ms),
            drain,
            names,
            seed,
            // Long enough for any connect phase plus the window.
            token_ttl_secs: self.window().as_secs() + 3600,
            port_seed: run_tag.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fanout_parses_into_a_job() {
        let cli = Cli::try_parse_from([
            "ridecast-loadgen",
            "fanout",
            "--url",
            "http://127.0.0.1:18080",
            "--url",
            "http://127.0.0.1:18081",
            "--drivers",
            "10",
            "--riders-per-driver",
            "100",
            "--procs",
            "2",
            "--secret",
            "s",
        ])
        .expect("parses");
        let job = cli.mode.job(1, "abc").expect("valid");
        assert_eq!(job.layout, Layout { drivers: 10, riders: 1000 });
        assert_eq!(job.targets.len(), 2);
        assert_eq!(job.source_addrs, 2);
        assert_eq!(job.owned_drivers(), vec![5, 6, 7, 8, 9]);
        assert_eq!(job.sockets_needed(), 505);
        assert_eq!(job.rider_target(1).authority, "127.0.0.1:18081");
        assert_eq!(job.driver_target(1).authority, "127.0.0.1:18080");
    }

    #[test]
    fn idle_has_no_drivers_to_simulate() {
        let cli = Cli::try_parse_from(["x", "idle", "--riders", "19000", "--hold-secs", "5"]).expect("parses");
        let job = cli.mode.job(0, "t").expect("valid");
        assert_eq!(job.layout, Layout { drivers: 19_000, riders: 19_000 });
        assert!(job.owned_drivers().is_empty());
        assert_eq!(job.sockets_needed(), 19_000);
    }

    #[test]
    fn bad_input_is_refused() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).expect("parses").mode.job(0, "t");
        assert!(parse(&["x", "idle", "--riders", "0"]).is_err());
        assert!(parse(&["x", "idle", "--riders", "1", "--url", "https://a"]).is_err());
        assert!(parse(&["x", "idle", "--riders", "1", "--id-prefix", "a b"]).is_err());
        assert!(parse(&["x", "idle", "--riders", "1", "--source-addrs", "300"]).is_err());
        assert!(parse(&["x", "fanout", "--drivers", "0", "--riders-per-driver", "1"]).is_err());
    }
}
