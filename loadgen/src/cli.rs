//! The command line: one subcommand per mode, shared connection flags, and the translation of
//! both into a worker's [`Job`].

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ridecast_protocol::{Id, TokenError, TokenKeys};
use serde_json::json;

use crate::fleet::DEFAULT_STANDING_SHARE;
use crate::http::{Target, UrlError};
use crate::job::{Job, Mode, MotionKind, ServerKind};
use crate::plan::{Layout, MAX_SOURCE_ADDRS, Names};

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
    /// Open rider SSE streams and/or idle driver WebSockets and hold them: connection capacity
    /// and memory per connection.
    Idle(IdleArgs),
    /// Drivers move to a new cell on every update (or every fifth, `--motion creep`); measure
    /// push latency and delivery.
    Fanout(FanoutArgs),
    /// Drivers drive along streets with GPS noise (or as a fleet that mostly stands); only cell
    /// changes are pushed.
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
    /// Where riders connect instead of `--url` (repeatable, round-robin): an edge worker in
    /// front of the origins, say. Drivers still use `--url`.
    #[arg(long = "rider-url")]
    pub rider_urls: Vec<String>,
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
    /// Most connection attempts started per second, per process (0 = no pacing).
    #[arg(long, default_value_t = 0)]
    pub connect_rate: u64,
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
    #[arg(long, default_value_t = 0)]
    pub riders: usize,
    /// Driver WebSockets to open and keep idle (they only answer pings); riders, if any, then
    /// follow these drivers evenly.
    #[arg(long, default_value_t = 0)]
    pub drivers: usize,
    /// How long to hold them open once all are connected.
    #[arg(long, default_value_t = 30)]
    pub hold_secs: u64,
    /// Every stream follows the same driver (default: one driver id per stream).
    #[arg(long, conflicts_with = "drivers")]
    pub shared_driver: bool,
    /// The server under test: a Ridecast origin, or Nchan (riders on `/sub/<driver>`).
    #[arg(long, value_enum, default_value_t = ServerKind::Origin)]
    pub target: ServerKind,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// The server under test: a Ridecast origin, or Nchan (riders on `/sub/<driver>`, drivers
    /// `POST /pub/<driver>` on keep-alive connections).
    #[arg(long, value_enum, default_value_t = ServerKind::Origin)]
    pub target: ServerKind,
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
    /// How drivers move: `hop` (a new cell every update) or `creep` (10 m per update, about one
    /// in five changes cell; Nchan is still sent, and pushes, every update).
    #[arg(long, value_enum, default_value_t = MotionKind::Hop)]
    pub motion: MotionKind,
}

/// Also the mixed scale run: `--riders 50000 --drivers 50000 --procs 6` holds 100,000
/// connections, every driver sending a fix per second and every rider following one driver.
#[derive(Debug, Clone, Args)]
pub struct RealisticArgs {
    #[command(flatten)]
    pub common: Common,
    /// Driver WebSockets, each sending one fix per interval.
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
    /// How drivers move: `street` (driving, waiting at some lights) or `fleet` (driving as
    /// `street`, or standing for minutes and sending a fix every 30 s only).
    #[arg(long, value_enum, default_value_t = MotionKind::Street)]
    pub motion: MotionKind,
    /// Share of time fleet drivers stand (`--motion fleet`).
    #[arg(long, default_value_t = DEFAULT_STANDING_SHARE)]
    pub standing_share: f64,
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
    /// How drivers move: `hop` (a new cell every update), `creep`, `street` or `fleet` (as in
    /// `fanout` and `realistic`).
    #[arg(long, value_enum, default_value_t = MotionKind::Hop)]
    pub motion: MotionKind,
    /// Seed of the street paths (`--motion street` or `fleet`).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of time fleet drivers stand (`--motion fleet`).
    #[arg(long, default_value_t = DEFAULT_STANDING_SHARE)]
    pub standing_share: f64,
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
            Self::Idle(a) if a.drivers > 0 => Layout { drivers: a.drivers, riders: a.riders },
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
            Self::Idle(a) => json!({
                "riders": a.riders, "drivers": a.drivers, "hold_secs": a.hold_secs,
                "shared_driver": a.shared_driver, "target": a.target.as_str(),
            }),
            Self::Fanout(a) => json!({
                "target": a.target.as_str(), "drivers": a.drivers, "riders_per_driver": a.riders_per_driver,
                "duration_secs": a.duration_secs, "interval_ms": a.interval_ms, "drain_ms": a.drain_ms,
                "motion": a.motion.as_str(),
            }),
            Self::Realistic(a) => json!({
                "drivers": a.drivers, "riders": a.riders, "duration_secs": a.duration_secs,
                "interval_ms": a.interval_ms, "drain_ms": a.drain_ms, "seed": a.seed,
                "motion": a.motion.as_str(), "standing_share": a.standing_share,
            }),
            Self::Poll(a) => json!({
                "riders": a.riders, "drivers": a.drivers, "interval_ms": a.interval_ms,
                "driver_interval_ms": a.driver_interval_ms, "duration_secs": a.duration_secs,
                "motion": a.motion.as_str(), "seed": a.seed, "standing_share": a.standing_share,
            }),
        }
    }

    /// The server under test.
    pub fn server(&self) -> ServerKind {
        match self {
            Self::Idle(a) => a.target,
            Self::Fanout(a) => a.target,
            Self::Realistic(_) | Self::Poll(_) => ServerKind::Origin,
        }
    }

    /// Whether driver connections are opened: drivers that send, or idle ones.
    pub fn connects_drivers(&self) -> bool {
        match self {
            Self::Idle(a) => a.drivers > 0,
            _ => true,
        }
    }

    /// How the simulated drivers move.
    pub fn motion(&self) -> MotionKind {
        match self {
            Self::Idle(_) => MotionKind::Hop,
            Self::Fanout(a) => a.motion,
            Self::Realistic(a) => a.motion,
            Self::Poll(a) => a.motion,
        }
    }

    /// Share of time fleet drivers stand.
    pub fn standing_share(&self) -> f64 {
        match self {
            Self::Realistic(a) => a.standing_share,
            Self::Poll(a) => a.standing_share,
            Self::Idle(_) | Self::Fanout(_) => DEFAULT_STANDING_SHARE,
        }
    }

    /// Refuses a motion the mode does not measure well: fan-out's delivery counts rely on a
    /// motion without GPS noise, and streaming riders of a fleet are `realistic`'s.
    fn check_motion(&self) -> Result<(), CliError> {
        let allowed: &[MotionKind] = match self {
            Self::Idle(_) => return Ok(()),
            Self::Fanout(_) => &[MotionKind::Hop, MotionKind::Creep],
            Self::Realistic(_) => &[MotionKind::Street, MotionKind::Fleet],
            Self::Poll(_) => &[MotionKind::Hop, MotionKind::Creep, MotionKind::Street, MotionKind::Fleet],
        };
        if !allowed.contains(&self.motion()) {
            let names: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
            return Err(CliError::Invalid(format!(
                "{} takes --motion {}, not {}",
                self.mode().as_str(),
                names.join("|"),
                self.motion().as_str()
            )));
        }
        if !(0.0..=1.0).contains(&self.standing_share()) {
            return Err(CliError::Invalid("--standing-share is a share, from 0 to 1".into()));
        }
        Ok(())
    }

    /// The job of worker `worker` in a run tagged `run_tag`.
    ///
    /// # Errors
    /// [`CliError`] for unusable URLs, secrets or numbers.
    pub fn job(&self, worker: usize, run_tag: &str) -> Result<Job, CliError> {
        let common = self.common();
        let layout = self.layout();
        match self {
            Self::Idle(a) if a.riders == 0 && a.drivers == 0 => {
                return Err(CliError::Invalid("idle needs --riders, --drivers or both".into()));
            }
            Self::Idle(a) if a.drivers > 0 && a.target == ServerKind::Nchan => {
                return Err(CliError::Invalid(
                    "idle --drivers opens driver WebSockets, which Nchan does not have; use --target origin".into(),
                ));
            }
            Self::Idle(_) => {}
            _ if layout.riders == 0 => {
                return Err(CliError::Invalid("there must be at least one rider".into()));
            }
            _ => {}
        }
        if self.mode().has_drivers() && layout.drivers == 0 {
            return Err(CliError::Invalid("there must be at least one driver".into()));
        }
        if common.procs == 0 {
            return Err(CliError::Invalid("--procs must be at least 1".into()));
        }
        self.check_motion()?;
        let source_addrs = common.source_addrs.unwrap_or(common.procs);
        if source_addrs > MAX_SOURCE_ADDRS {
            return Err(CliError::Invalid(format!("--source-addrs is at most {MAX_SOURCE_ADDRS}")));
        }
        let names = Names::new(&common.id_prefix, run_tag);
        if Id::parse(&names.driver(layout.drivers)).is_err() || Id::parse(&names.rider(layout.riders)).is_err() {
            return Err(CliError::Invalid("--id-prefix makes ids that break the id rule ([A-Za-z0-9_-], 1-64)".into()));
        }
        let targets = common.urls.iter().map(|u| Target::parse(u)).collect::<Result<Vec<_>, _>>()?;
        let rider_targets = common.rider_urls.iter().map(|u| Target::parse(u)).collect::<Result<Vec<_>, _>>()?;
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
                a.seed,
            ),
        };
        Ok(Job {
            mode: self.mode(),
            server: self.server(),
            motion: self.motion(),
            connects_drivers: self.connects_drivers(),
            targets,
            rider_targets,
            keys,
            layout,
            procs: common.procs,
            worker,
            drivers_round_robin: common.drivers_round_robin,
            send_interval,
            poll_interval,
            source_addrs,
            connect_concurrency: common.connect_concurrency,
            connect_rate: common.connect_rate,
            connect_timeout: Duration::from_millis(common.connect_timeout_ms),
            drain,
            names,
            seed,
            standing_share: self.standing_share(),
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
    fn riders_can_go_to_an_edge_while_drivers_stay_on_the_origin() {
        let cli = Cli::try_parse_from([
            "x",
            "fanout",
            "--url",
            "http://127.0.0.1:8080",
            "--rider-url",
            "http://127.0.0.1:8787",
            "--drivers",
            "1",
            "--riders-per-driver",
            "500",
        ])
        .expect("parses");
        let job = cli.mode.job(0, "t").expect("valid");
        assert_eq!(job.rider_target(0).authority, "127.0.0.1:8787");
        assert_eq!(job.rider_target(499).authority, "127.0.0.1:8787");
        assert_eq!(job.driver_target(0).authority, "127.0.0.1:8080");
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
    fn idle_drivers_are_connected_and_riders_follow_them() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).expect("parses").mode;
        let only_drivers = parse(&["x", "idle", "--drivers", "15000"]).job(0, "t").expect("valid");
        assert_eq!(only_drivers.layout, Layout { drivers: 15_000, riders: 0 });
        assert_eq!(only_drivers.owned_drivers().len(), 15_000);
        assert_eq!(only_drivers.sockets_needed(), 15_000);
        let mixed = parse(&["x", "idle", "--drivers", "10", "--riders", "100", "--procs", "2"]);
        let job = mixed.job(1, "t").expect("valid");
        assert_eq!(job.layout, Layout { drivers: 10, riders: 100 });
        assert_eq!(job.owned_drivers(), vec![5, 6, 7, 8, 9]);
        assert_eq!(job.sockets_needed(), 55);
        assert_eq!(mixed.params()["drivers"], 10);
    }

    #[test]
    fn nchan_is_a_target_of_fanout_and_idle_riders() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).expect("parses").mode;
        let fanout = parse(&["x", "fanout", "--target", "nchan", "--drivers", "20", "--riders-per-driver", "500"]);
        let job = fanout.job(0, "t").expect("valid");
        assert_eq!((job.server, job.motion), (ServerKind::Nchan, MotionKind::Hop));
        assert_eq!(job.sockets_needed(), 10_020);
        assert_eq!(fanout.params()["target"], "nchan");
        assert!(parse(&["x", "idle", "--target", "nchan", "--riders", "5"]).job(0, "t").is_ok());
        assert!(parse(&["x", "idle", "--target", "nchan", "--drivers", "5"]).job(0, "t").is_err());
        assert!(
            Cli::try_parse_from(["x", "realistic", "--target", "nchan", "--drivers", "1", "--riders", "1"]).is_err()
        );
    }

    #[test]
    fn the_scale_run_fits_six_processes_and_polling_can_drive_streets() {
        let cli = Cli::try_parse_from([
            "x",
            "realistic",
            "--riders",
            "50000",
            "--drivers",
            "50000",
            "--procs",
            "6",
            "--connect-rate",
            "500",
        ])
        .expect("parses");
        let jobs: Vec<Job> = (0..6).map(|w| cli.mode.job(w, "t").expect("valid")).collect();
        assert_eq!(jobs.iter().map(Job::sockets_needed).sum::<usize>(), 100_000);
        assert!(jobs.iter().all(|j| j.sockets_needed() <= 19_500), "every worker under 19,500 sockets");
        assert!(jobs.iter().all(|j| j.connect_rate == 500 && j.motion == MotionKind::Street));
        let poll =
            Cli::try_parse_from(["x", "poll", "--riders", "10", "--drivers", "2", "--motion", "street", "--seed", "9"])
                .expect("parses");
        let job = poll.mode.job(0, "t").expect("valid");
        assert_eq!((job.motion, job.seed), (MotionKind::Street, 9));
    }

    #[test]
    fn each_mode_takes_the_motions_it_can_measure() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).expect("parses").mode;
        let creep = parse(&["x", "fanout", "--drivers", "2", "--riders-per-driver", "1", "--motion", "creep"]);
        assert_eq!(creep.job(0, "t").expect("valid").motion, MotionKind::Creep);
        assert_eq!(creep.params()["motion"], "creep");
        let fleet = parse(&["x", "realistic", "--drivers", "2", "--riders", "2", "--motion", "fleet"]);
        let job = fleet.job(0, "t").expect("valid");
        assert_eq!((job.motion, job.standing_share), (MotionKind::Fleet, DEFAULT_STANDING_SHARE));
        let poll =
            parse(&["x", "poll", "--drivers", "2", "--riders", "2", "--motion", "fleet", "--standing-share", "0.5"]);
        assert_eq!(poll.job(0, "t").expect("valid").standing_share, 0.5);
        assert!(
            parse(&["x", "fanout", "--drivers", "2", "--riders-per-driver", "1", "--motion", "street"])
                .job(0, "t")
                .is_err()
        );
        assert!(parse(&["x", "realistic", "--drivers", "2", "--riders", "2", "--motion", "hop"]).job(0, "t").is_err());
        assert!(
            parse(&["x", "poll", "--drivers", "2", "--riders", "2", "--standing-share", "1.5"]).job(0, "t").is_err()
        );
    }

    #[test]
    fn bad_input_is_refused() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).expect("parses").mode.job(0, "t");
        assert!(parse(&["x", "idle", "--riders", "0"]).is_err());
        assert!(parse(&["x", "idle"]).is_err());
        assert!(Cli::try_parse_from(["x", "idle", "--drivers", "2", "--shared-driver"]).is_err());
        assert!(parse(&["x", "idle", "--riders", "1", "--url", "https://a"]).is_err());
        assert!(parse(&["x", "idle", "--riders", "1", "--id-prefix", "a b"]).is_err());
        assert!(parse(&["x", "idle", "--riders", "1", "--source-addrs", "300"]).is_err());
        assert!(parse(&["x", "fanout", "--drivers", "0", "--riders-per-driver", "1"]).is_err());
    }
}
