//! Configuration: command-line flags, each also readable from a `RIDECAST_*` variable.
//!
//! Secrets are read from the environment only, never from flags, so they do not show up in
//! `ps` output or shell history.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand};
use ridecast_protocol::{Role, TokenError, TokenKeys};

use crate::{
    api::config::ApiConfig,
    chat::ChatConfig,
    dispatch::{OfferLimits, dispatcher::DispatchConfig},
    limits::allowance::RateLimit,
};

/// Environment variable names, in one place.
pub mod env {
    pub const TOKEN_SECRET: &str = "RIDECAST_TOKEN_SECRET";
    pub const TOKEN_SECRET_PREVIOUS: &str = "RIDECAST_TOKEN_SECRET_PREVIOUS";
}

/// The secret used when none is configured. Public on purpose: dev mode is for one laptop.
pub const DEV_SECRET: &str = "ridecast-dev-secret";

#[derive(Debug, Parser)]
#[command(name = "ridecast-origin", version, about = "Ridecast origin: driver WebSockets in, rider SSE out.")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    // Boxed: the server's flags are hundreds of bytes, the token's a few dozen.
    Serve(Box<ServeArgs>),
    /// Print a signed token (uses RIDECAST_TOKEN_SECRET, or the dev secret when unset).
    Token(TokenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Port 0 picks a free port (printed as `RIDECAST_LISTENING <addr>`).
    #[arg(long, env = "RIDECAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Redis URL: one Redis (redis://host:port/db) or a Redis Cluster, given by some of its
    /// nodes (redis-cluster://host:port,host:port,...; Redis 7+, sharded Pub/Sub). Unset:
    /// embedded in-process bus and store, one instance only.
    #[arg(long, env = "RIDECAST_REDIS_URL")]
    pub redis_url: Option<RedisUrl>,

    /// Browser origins allowed by CORS, comma-separated. Default: `*` in dev mode, none otherwise.
    #[arg(long, env = "RIDECAST_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// On SIGTERM, longest time to wait for connections to finish before exiting.
    #[arg(long, env = "RIDECAST_DRAIN_SECS", default_value_t = 30)]
    pub drain_secs: u64,

    /// Interval between SSE heartbeat comments. The contract requires at most 15.
    #[arg(long, env = "RIDECAST_HEARTBEAT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=15))]
    pub heartbeat_secs: u64,

    /// `retry:` (reconnect delay, ms) announced at the start of every SSE stream.
    #[arg(long, env = "RIDECAST_SSE_RETRY_MS", default_value_t = 2000)]
    pub sse_retry_ms: u64,

    /// How long a driver's latest location is kept after its last update.
    #[arg(long, env = "RIDECAST_LOCATION_TTL_SECS", default_value_t = 300)]
    pub location_ttl_secs: u64,

    /// How long a ride is kept after its last change (status, driver); then it is gone: its
    /// stream and `DELETE` answer 404.
    #[arg(long, env = "RIDECAST_RIDE_TTL_SECS", default_value_t = 86_400)]
    pub ride_ttl_secs: u64,

    /// Lifetime of the ride-scoped rider token `POST /api/rides` answers with, and of the
    /// tracking token a ride's status under way carries.
    #[arg(long, env = "RIDECAST_RIDE_TOKEN_TTL_SECS", default_value_t = 7_200)]
    pub ride_token_ttl_secs: u64,

    /// Only drivers within this distance of a ride's pickup are offered it, in metres.
    #[arg(long, env = "RIDECAST_MATCH_RADIUS_M", default_value_t = 5_000.0)]
    pub match_radius_m: f64,

    /// How long a driver has to accept an offer before the ride moves on, in ms.
    #[arg(long, env = "RIDECAST_OFFER_EXPIRY_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub offer_expiry_ms: u64,

    /// How often an offer is sent again until the driver acknowledges it, in ms.
    #[arg(long, env = "RIDECAST_OFFER_RESEND_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub offer_resend_ms: u64,

    /// Drivers offered one ride at once (1: one at a time, nearest first; more: the first
    /// accept wins and the others are told `taken`).
    #[arg(long, env = "RIDECAST_OFFER_FANOUT", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub offer_fanout: u32,

    /// Drivers offered one ride in all before it ends as `no_driver`.
    #[arg(long, env = "RIDECAST_MAX_OFFER_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_offer_attempts: u32,

    /// How often each instance looks for offers past their deadline, in ms.
    #[arg(long, env = "RIDECAST_OFFER_SWEEP_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub offer_sweep_ms: u64,

    /// How long a ride keeps searching while no driver is available before it ends as
    /// `no_driver`, in seconds (it is searched again every second meanwhile).
    #[arg(long, env = "RIDECAST_SEARCH_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub search_timeout_secs: u64,

    /// A driver not heard from (location or availability) for this long gets no offers.
    #[arg(long, env = "RIDECAST_DRIVER_STALE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub driver_stale_secs: u64,

    /// Largest request body accepted, in bytes (413 `too_large` beyond). Every body the API
    /// takes is a few hundred bytes.
    #[arg(long, env = "RIDECAST_MAX_BODY_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(256..=1_048_576))]
    pub max_body_bytes: u64,

    /// Streams and sockets one token may hold open on an instance at once (SSE streams, driver
    /// and chat sockets; edge links are not counted); beyond it: 429 `rate_limited`.
    #[arg(long, env = "RIDECAST_MAX_STREAMS_PER_TOKEN", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams_per_token: u32,

    /// Driver frames other than locations (availability, offer answers) per second, sustained;
    /// over it a frame is refused with `rate_limited`. Locations are coalesced instead
    /// (`--ingest-interval-ms`).
    #[arg(long, env = "RIDECAST_DRIVER_RATE", default_value_t = 10.0, value_parser = rate)]
    pub driver_rate: f64,

    /// Driver frames other than locations that may come at once after a quiet spell.
    #[arg(long, env = "RIDECAST_DRIVER_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub driver_burst: u32,

    /// Rides one rider (token `sub`) may request per second on an instance, sustained; over it
    /// `POST /api/rides` answers 429 `rate_limited` with `Retry-After`. Default: one per 10 s.
    #[arg(long, env = "RIDECAST_RIDE_CREATE_RATE", default_value_t = 0.1, value_parser = rate)]
    pub ride_create_rate: f64,

    /// Rides one rider may request at once after a quiet spell.
    #[arg(long, env = "RIDECAST_RIDE_CREATE_BURST", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub ride_create_burst: u32,

    /// Messages per second each side of a ride's chat may send (sustained); over it a message
    /// is refused with `rate_limited` and not stored.
    #[arg(long, env = "RIDECAST_CHAT_RATE", default_value_t = 5.0, value_parser = rate)]
    pub chat_rate: f64,

    /// Chat messages one side may send at once after a quiet spell.
    #[arg(long, env = "RIDECAST_CHAT_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub chat_burst: u32,

    /// Most messages kept per ride's chat; older ones are dropped, with their `clientMsgId`s.
    #[arg(long, env = "RIDECAST_CHAT_HISTORY_MAX", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub chat_history_max: u64,

    /// How long a ride's chat is kept (in Redis or in memory) after its last message, in seconds.
    #[arg(long, env = "RIDECAST_CHAT_TTL_SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub chat_ttl_secs: u64,

    /// Per driver, the minimum time between two ingested updates; faster updates are
    /// coalesced and only the newest is kept. 0 ingests every update.
    #[arg(long, env = "RIDECAST_INGEST_INTERVAL_MS", default_value_t = 200)]
    pub ingest_interval_ms: u64,

    /// Interval between pings on WebSockets.
    #[arg(long, env = "RIDECAST_WS_PING_SECS", default_value_t = 20)]
    pub ws_ping_secs: u64,

    /// Close a WebSocket that sent nothing, not even a pong, for this long.
    #[arg(long, env = "RIDECAST_WS_IDLE_SECS", default_value_t = 60)]
    pub ws_idle_secs: u64,

    /// Most concurrent connections; beyond it requests get 503 (SSE: a `retry:` and an end).
    /// Default: the process's file-descriptor limit minus a reserve.
    #[arg(long, env = "RIDECAST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Set SO_REUSEPORT so several processes can share one port.
    #[arg(long, env = "RIDECAST_REUSE_PORT")]
    pub reuse_port: bool,

    /// Threads that serve connections; 0 = one per core. With 1, everything runs on one
    /// thread: no event is handed from one thread to another, which is the least CPU per event.
    /// To use more cores that way, run one process per core on one port (`--reuse-port`).
    /// At most 1,024: a typo such as `10000` would otherwise start that many threads.
    #[arg(long, env = "RIDECAST_THREADS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub threads: u16,

    /// Time a client has to send a complete request head.
    #[arg(long, env = "RIDECAST_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Log format: `text` or `json`.
    #[arg(long, env = "RIDECAST_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// driver, rider, ops or edge.
    #[arg(long)]
    pub role: Role,
    /// The principal: a driver's id for drivers.
    #[arg(long)]
    pub sub: String,
    /// For riders: the one driver they may track.
    #[arg(long)]
    pub driver: Option<String>,
    /// The ride this token is scoped to.
    #[arg(long)]
    pub ride: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
}

/// Where the token secrets came from.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub keys: TokenKeys,
    /// No secret was configured: the public dev secret is in use.
    pub dev_mode: bool,
}

impl Secrets {
    /// Reads the secrets through `lookup` (the process environment in production, a map in tests).
    ///
    /// # Errors
    /// [`TokenError::EmptySecret`] when a variable is set but empty.
    pub fn load(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, TokenError> {
        let previous = lookup(env::TOKEN_SECRET_PREVIOUS);
        match lookup(env::TOKEN_SECRET) {
            Some(current) => Ok(Self {
                keys: TokenKeys::new(current.as_bytes(), previous.as_deref().map(str::as_bytes))?,
                dev_mode: false,
            }),
            None => Ok(Self { keys: TokenKeys::new(DEV_SECRET.as_bytes(), None)?, dev_mode: true }),
        }
    }

    pub fn from_env() -> Result<Self, TokenError> {
        Self::load(|name| std::env::var(name).ok())
    }
}

/// A rate: a finite number of messages per second, from 0.01 to 1000.
fn rate(raw: &str) -> Result<f64, String> {
    let rate: f64 = raw.parse().map_err(|_| format!("{raw:?} is not a number"))?;
    if rate.is_finite() && (0.01..=1_000.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{raw} is not between 0.01 and 1000 messages per second"))
    }
}

/// A configuration the origin refuses to serve with: each would let anyone in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeConfig {
    /// Dev mode signs with a secret printed in this source code: anyone who can reach the
    /// listener could mint any token.
    #[error(
        "{} is not set, so tokens would be signed with the public dev secret, and dev mode only runs on a \
         loopback address; --listen {listen} can be reached from other machines. Set {} (a long random \
         secret), or listen on 127.0.0.1",
        env::TOKEN_SECRET,
        env::TOKEN_SECRET
    )]
    DevModeNotLoopback { listen: SocketAddr },
    /// Dev mode with Redis means instances that share riders and drivers with others, all
    /// trusting the public dev secret.
    #[error(
        "{} is not set, so tokens would be signed with the public dev secret, and dev mode only runs \
         without Redis (one local instance); a Redis URL is set. Set {} on every instance",
        env::TOKEN_SECRET,
        env::TOKEN_SECRET
    )]
    DevModeWithRedis,
    /// `*` lets every web page on the internet call the API with a user's tokens.
    #[error(
        "--cors-origins '*' (or RIDECAST_CORS_ORIGINS) lets any web page call this API, and is accepted in dev \
         mode only; with {} set, list the browser origins of your web apps instead",
        env::TOKEN_SECRET
    )]
    OpenCorsWithSecret,
}

/// A Redis URL as given. It may carry a password, so its `Debug` form leaves out everything
/// before an `@` (a `?config` in a log line must not print it).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for RedisUrl {
    type Err = std::convert::Infallible;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(Self(raw.to_owned()))
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        match rest.rsplit_once('@') {
            Some((_credentials, hosts)) => write!(f, "\"{scheme}://<credentials>@{hosts}\""),
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// Everything the server needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub redis_url: Option<RedisUrl>,
    pub drain: Duration,
    pub location_ttl: Duration,
    pub ride_ttl: Duration,
    pub ride_token_ttl: Duration,
    pub max_connections: Option<usize>,
    pub reuse_port: bool,
    /// Runtime threads; 0 = one per core.
    pub threads: usize,
    pub secrets: Secrets,
    /// What the handlers need: streams, sockets, limits per connection.
    pub api: ApiConfig,
    pub dispatch: DispatchConfig,
    pub chat: ChatConfig,
}

impl Config {
    /// Whether it is safe to serve with this configuration (PROTOCOL v1.1: dev mode is local
    /// only, and `*` as a CORS origin is for dev mode only).
    ///
    /// # Errors
    /// [`UnsafeConfig`] names what is wrong and what to set instead.
    pub fn check_safe(&self) -> Result<(), UnsafeConfig> {
        if self.secrets.dev_mode {
            if !self.listen.ip().is_loopback() {
                return Err(UnsafeConfig::DevModeNotLoopback { listen: self.listen });
            }
            if self.redis_url.is_some() {
                return Err(UnsafeConfig::DevModeWithRedis);
            }
        } else if self.api.cors_origins.iter().any(|origin| origin == "*") {
            return Err(UnsafeConfig::OpenCorsWithSecret);
        }
        Ok(())
    }

    pub fn new(args: ServeArgs, secrets: Secrets) -> Self {
        let cors_origins = if args.cors_origins.is_empty() && secrets.dev_mode {
            vec!["*".to_owned()]
        } else {
            args.cors_origins.into_iter().map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect()
        };
        let redis_url = args.redis_url.filter(|u| !u.as_str().is_empty());
        let api = ApiConfig {
            cors_origins,
            heartbeat: Duration::from_secs(args.heartbeat_secs),
            sse_retry_ms: args.sse_retry_ms,
            max_streams_per_token: args.max_streams_per_token,
            max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
            driver_rate: RateLimit { per_second: args.driver_rate, burst: args.driver_burst },
            ride_create_rate: RateLimit { per_second: args.ride_create_rate, burst: args.ride_create_burst },
            ingest_interval: Duration::from_millis(args.ingest_interval_ms),
            ws_ping: Duration::from_secs(args.ws_ping_secs.max(1)),
            ws_idle: Duration::from_secs(args.ws_idle_secs.max(2)),
            header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        };
        Self {
            listen: args.listen,
            redis_url,
            drain: Duration::from_secs(args.drain_secs),
            location_ttl: Duration::from_secs(args.location_ttl_secs.max(1)),
            ride_ttl: Duration::from_secs(args.ride_ttl_secs.max(1)),
            ride_token_ttl: Duration::from_secs(args.ride_token_ttl_secs.max(1)),
            dispatch: DispatchConfig {
                // Half the Earth's circumference at most: beyond it every driver is in range anyway.
                radius_m: if args.match_radius_m.is_finite() {
                    args.match_radius_m.clamp(1.0, 20_000_000.0)
                } else {
                    5_000.0
                },
                offer_ttl: Duration::from_millis(args.offer_expiry_ms.max(100)),
                resend: Duration::from_millis(args.offer_resend_ms.max(50)),
                sweep: Duration::from_millis(args.offer_sweep_ms.max(10)),
                search_timeout: Duration::from_secs(args.search_timeout_secs),
                search_retry: Duration::from_secs(1),
                limits: OfferLimits {
                    max_attempts: args.max_offer_attempts as usize,
                    fanout: args.offer_fanout as usize,
                    stale_ms: args.driver_stale_secs.max(1) * 1_000,
                },
            },
            chat: ChatConfig {
                rate: RateLimit { per_second: args.chat_rate, burst: args.chat_burst },
                history_max: usize::try_from(args.chat_history_max).unwrap_or(usize::MAX),
                ttl: Duration::from_secs(args.chat_ttl_secs),
            },
            max_connections: args.max_connections,
            reuse_port: args.reuse_port,
            threads: usize::from(args.threads),
            secrets,
            api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_never_shows_in_the_debug_form() {
        let url: RedisUrl = "redis://user:hunter2@10.0.0.1:6379/0".parse().expect("any text");
        let shown = format!("{url:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("user"), "{shown}");
        assert!(shown.contains("10.0.0.1:6379"), "the host is still shown: {shown}");
        let config = Config::new(
            Cli::parse_from(["ridecast-origin", "--redis-url", "redis://:hunter2@h:1"]).serve,
            Secrets::load(|_| Some("a-real-secret-of-enough-length".to_owned())).expect("secrets"),
        );
        assert!(!format!("{config:?}").contains("hunter2"), "{config:?}");
    }

    #[test]
    fn without_a_secret_the_origin_is_in_dev_mode_with_open_cors() {
        let secrets = Secrets::load(|_| None).expect("dev secret");
        assert!(secrets.dev_mode);
        let config = Config::new(Cli::parse_from(["ridecast-origin"]).serve, secrets);
        assert_eq!(config.api.cors_origins, vec!["*"]);
    }

    #[test]
    fn a_configured_secret_leaves_dev_mode_and_cors_closed() {
        let secrets = Secrets::load(|n| (n == env::TOKEN_SECRET).then(|| "s".to_owned())).expect("secret");
        assert!(!secrets.dev_mode);
        let config = Config::new(Cli::parse_from(["ridecast-origin"]).serve, secrets);
        assert!(config.api.cors_origins.is_empty());
    }

    fn config(secret: Option<&str>, args: &[&str]) -> Config {
        let secrets =
            Secrets::load(|n| (n == env::TOKEN_SECRET).then(|| secret.map(str::to_owned)).flatten()).expect("secrets");
        let args = std::iter::once("ridecast-origin").chain(args.iter().copied());
        Config::new(Cli::parse_from(args).serve, secrets)
    }

    #[test]
    fn dev_mode_runs_on_loopback_without_redis_only() {
        assert_eq!(config(None, &[]).check_safe(), Ok(()));
        assert_eq!(config(None, &["--listen", "[::1]:0"]).check_safe(), Ok(()));
        let anywhere = config(None, &["--listen", "0.0.0.0:8080"]).check_safe();
        assert!(matches!(anywhere, Err(UnsafeConfig::DevModeNotLoopback { .. })), "{anywhere:?}");
        let lan = config(None, &["--listen", "192.168.1.5:8080"]).check_safe();
        assert!(matches!(lan, Err(UnsafeConfig::DevModeNotLoopback { .. })), "{lan:?}");
        let redis = config(None, &["--redis-url", "redis://127.0.0.1:6379"]).check_safe();
        assert_eq!(redis, Err(UnsafeConfig::DevModeWithRedis));
        let message = UnsafeConfig::DevModeWithRedis.to_string();
        assert!(message.contains(env::TOKEN_SECRET), "{message}");
    }

    #[test]
    fn a_secret_makes_any_address_and_redis_fine_but_refuses_open_cors() {
        let production = ["--listen", "0.0.0.0:8080", "--redis-url", "redis://r:6379", "--cors-origins", "https://a"];
        assert_eq!(config(Some("s"), &production).check_safe(), Ok(()));
        for origins in ["*", "https://a,*", " * "] {
            let open = config(Some("s"), &["--cors-origins", origins]).check_safe();
            assert_eq!(open, Err(UnsafeConfig::OpenCorsWithSecret), "{origins}");
        }
        assert_eq!(config(None, &["--cors-origins", "*"]).check_safe(), Ok(()), "dev mode may open CORS");
    }

    #[test]
    fn the_origin_takes_no_simulate_flag() {
        // Simulated drivers are the live demo's (`ridecast-demo --simulate`).
        assert!(Cli::try_parse_from(["ridecast-origin", "--simulate", "8"]).is_err());
    }

    #[test]
    fn an_empty_secret_is_an_error_not_dev_mode() {
        assert!(Secrets::load(|n| (n == env::TOKEN_SECRET).then(String::new)).is_err());
    }

    #[test]
    fn flags_parse_with_their_documented_defaults() {
        let cli = Cli::parse_from(["ridecast-origin", "--listen", "127.0.0.1:0", "--cors-origins", "a,b"]);
        assert_eq!(cli.serve.listen.port(), 0);
        assert_eq!(cli.serve.cors_origins, vec!["a", "b"]);
        assert_eq!(cli.serve.drain_secs, 30);
        assert_eq!(cli.serve.heartbeat_secs, 15);
        assert_eq!((cli.serve.ride_ttl_secs, cli.serve.ride_token_ttl_secs), (86_400, 7_200));
        assert!(Cli::try_parse_from(["ridecast-origin", "--heartbeat-secs", "16"]).is_err());
        assert_eq!(cli.serve.threads, 0, "one thread per core");
        assert_eq!(Cli::parse_from(["ridecast-origin", "--threads", "1"]).serve.threads, 1);
        let too_many = Cli::try_parse_from(["ridecast-origin", "--threads", "10000"]).expect_err("past 1,024");
        assert!(too_many.to_string().contains("--threads"), "{too_many}");
    }

    #[test]
    fn the_token_subcommand_parses() {
        let cli = Cli::parse_from(["ridecast-origin", "token", "--role", "rider", "--sub", "r1", "--driver", "d1"]);
        assert!(matches!(cli.command, Some(Command::Token(TokenArgs { role: Role::Rider, ttl: 3600, .. }))));
        let cli = Cli::parse_from(["ridecast-origin", "token", "--role", "ops", "--sub", "ops-1"]);
        assert!(matches!(cli.command, Some(Command::Token(TokenArgs { role: Role::Ops, driver: None, .. }))));
    }
}
