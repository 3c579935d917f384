//! `ridecast-origin` (or `ridecast-demo`, the origin with the live demo) as a child process:
//! built once, started on a free port, stopped for sure; or run until it exits by itself
//! ([`OriginBuilder::run_to_exit`]), for configurations it must refuse.
//!
//! Its stdout (`RIDECAST_LISTENING <addr>`, the dev banner) and its stderr (the log lines) go to
//! two files, so tests can tell what was printed for a person at the console from what the log
//! pipeline would ship: [`Origin::stdout`] and [`Origin::log`].
//!
//! ```no_run
//! # async fn demo(redis: &ridecast_tests::RedisServer) {
//! let origin = ridecast_tests::Origin::builder().redis(redis).heartbeat_secs(1).start().await;
//! # }
//! ```

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::net::free_port;
use crate::redis::{RedisServer, tail};
use crate::tokens::TEST_SECRET;

/// How long a fresh origin gets to answer `/healthz` and then `/readyz` with 200.
const STARTUP_LIMIT: Duration = Duration::from_secs(20);

/// Environment variable naming an already built `ridecast-origin` to use instead of building.
pub const ORIGIN_BIN_ENV: &str = "RIDECAST_TESTS_ORIGIN_BIN";
/// Environment variable naming an already built `ridecast-demo` to use instead of building.
pub const DEMO_BIN_ENV: &str = "RIDECAST_TESTS_DEMO_BIN";

/// The `ridecast-origin` executable, built on first use (once per test binary).
///
/// # Panics
/// If the build fails; the panic carries cargo's error.
pub fn origin_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| built("ridecast-origin", ORIGIN_BIN_ENV))
}

/// The `ridecast-demo` executable (the origin with the live demo), built on first use.
///
/// # Panics
/// If the build fails; the panic carries cargo's error.
pub fn demo_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| built("ridecast-demo", DEMO_BIN_ENV))
}

/// The binary `package` builds (named like it), or the one the variable `env` names.
fn built(package: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let workspace_manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    // No `current_target()`: passing `--target` would build into a second target directory.
    let built = escargot::CargoBuild::new()
        .package(package)
        .bin(package)
        .manifest_path(workspace_manifest)
        .current_release()
        .run()
        .unwrap_or_else(|e| panic!("building {package} failed: {e}"));
    built.path().to_owned()
}

/// Configures an [`Origin`] before starting it.
#[derive(Debug, Clone)]
pub struct OriginBuilder {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    secret: Option<String>,
    wait_ready: bool,
    addr: Option<SocketAddr>,
    demo: bool,
}

impl OriginBuilder {
    fn new() -> Self {
        Self {
            args: Vec::new(),
            envs: Vec::new(),
            secret: Some(TEST_SECRET.to_owned()),
            wait_ready: true,
            addr: None,
            demo: false,
        }
    }

    /// Runs `ridecast-demo` (the origin with the live demo, which also takes `--simulate`)
    /// instead of `ridecast-origin`.
    pub fn demo(mut self) -> Self {
        self.demo = true;
        self
    }

    /// Uses `redis` for the bus and store (`--redis-url`); without it the origin is embedded.
    pub fn redis(self, redis: &RedisServer) -> Self {
        self.redis_url(redis.url())
    }

    /// `--redis-url`: any Redis or Redis Cluster URL.
    pub fn redis_url(self, url: impl Into<String>) -> Self {
        self.flag("--redis-url", url.into())
    }

    /// `--heartbeat-secs`: the SSE comment heartbeat interval.
    pub fn heartbeat_secs(self, secs: u64) -> Self {
        self.flag("--heartbeat-secs", secs)
    }

    /// `--ingest-interval-ms`: per-driver coalescing of location floods (0 = none).
    pub fn ingest_interval_ms(self, millis: u64) -> Self {
        self.flag("--ingest-interval-ms", millis)
    }

    /// `--drain-secs`: the bound on the SIGTERM drain.
    pub fn drain_secs(self, secs: u64) -> Self {
        self.flag("--drain-secs", secs)
    }

    /// `--sse-retry-ms`: the `retry:` sent first on every SSE stream.
    pub fn sse_retry_ms(self, millis: u64) -> Self {
        self.flag("--sse-retry-ms", millis)
    }

    /// Any other `--name value` flag.
    pub fn flag(mut self, name: &str, value: impl ToString) -> Self {
        self.args.push(name.to_owned());
        self.args.push(value.to_string());
        self
    }

    /// Sets an environment variable for the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `RIDECAST_TOKEN_SECRET_PREVIOUS`: a retired secret whose tokens still verify.
    pub fn previous_secret(self, secret: &str) -> Self {
        self.env("RIDECAST_TOKEN_SECRET_PREVIOUS", secret)
    }

    /// Dev mode: no `RIDECAST_TOKEN_SECRET` at all, so the origin signs with its public dev secret
    /// (and, with [`OriginBuilder::demo`], serves the live demo, `/demo/...`). Tokens minted by
    /// [`crate::tokens`] do not verify there; get them from `POST /demo/token`.
    pub fn dev_mode(mut self) -> Self {
        self.secret = None;
        self
    }

    /// Returns once `/healthz` is 200 without waiting for `/readyz`.
    pub fn without_waiting_for_ready(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// Listens on `addr` instead of a free port: to restart an origin where clients (an edge
    /// worker's `ORIGIN_URL`, say) expect it.
    pub fn listen_on(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// Runs the process (on a free loopback port unless [`OriginBuilder::listen_on`] says otherwise)
    /// until it exits by itself, probing `/readyz` on its port meanwhile.
    ///
    /// # Panics
    /// If it is still running after `limit`; the panic carries its output.
    pub async fn run_to_exit(self, limit: Duration) -> Exited {
        let binary = if self.demo { demo_binary() } else { origin_binary() };
        let dir = tempfile::Builder::new().prefix("ridecast-origin-").tempdir().expect("temp dir for the origin log");
        let addr = self.addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let mut origin = self.spawn(binary, addr, dir);
        origin.quiet_on_drop = true;
        // An unspecified address (0.0.0.0) is reached through loopback too.
        let probe = format!("http://127.0.0.1:{}/readyz", addr.port());
        let deadline = tokio::time::Instant::now() + limit;
        let mut readyz_answered = false;
        let status = loop {
            if let Some(status) = origin.child.try_wait().expect("polling the origin process") {
                break status;
            }
            readyz_answered |= crate::http::status_of(&probe).await.is_some();
            if tokio::time::Instant::now() >= deadline {
                let _ = origin.child.start_kill();
                panic!(
                    "ridecast-origin was expected to exit by itself, and still ran after {limit:?}; stdout:\n{}\nlog:\n{}",
                    origin.stdout(),
                    origin.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        Exited { status, stdout: origin.stdout(), log: origin.log(), readyz_answered }
    }

    /// Starts the origin on a free port and waits until `/healthz` (and `/readyz`) answer 200.
    ///
    /// # Panics
    /// If the process dies or never becomes healthy; the panic carries its log.
    pub async fn start(self) -> Origin {
        let binary = if self.demo { demo_binary() } else { origin_binary() };
        let mut last_failure = String::new();
        // A port found free can be taken before the origin binds it; try a few.
        for _ in 0..3 {
            let dir =
                tempfile::Builder::new().prefix("ridecast-origin-").tempdir().expect("temp dir for the origin log");
            let addr = self.addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
            let mut origin = self.spawn(binary, addr, dir);
            match origin.wait_healthy(self.wait_ready).await {
                Ok(()) => return origin,
                Err(why) => {
                    last_failure =
                        format!("{why}; stdout:\n{}\nlog:\n{}", tail(&origin.stdout(), 20), tail(&origin.log(), 60));
                    let _ = origin.child.start_kill();
                    origin.quiet_on_drop = true;
                }
            }
        }
        panic!("ridecast-origin did not become healthy: {last_failure}");
    }

    fn spawn(&self, binary: &Path, addr: SocketAddr, dir: TempDir) -> Origin {
        let log_path = dir.path().join("origin.log");
        let stdout_path = dir.path().join("origin.stdout");
        let log = File::create(&log_path).expect("creating the origin log file");
        let stdout = File::create(&stdout_path).expect("creating the origin stdout file");
        let mut command = Command::new(binary);
        // The test's own environment must not configure the origin behind our back.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RIDECAST_") {
                command.env_remove(key);
            }
        }
        if let Some(secret) = &self.secret {
            command.env("RIDECAST_TOKEN_SECRET", secret);
        }
        command
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .arg("--listen")
            .arg(addr.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let child = command.spawn().unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        Origin { child, addr, log_path, stdout_path, _dir: dir, quiet_on_drop: false }
    }
}

/// How a process run by [`OriginBuilder::run_to_exit`] ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it wrote on stderr: its log lines, and the error it stopped with.
    pub log: String,
    /// Whether anything answered on its port's `/readyz` while it ran.
    pub readyz_answered: bool,
}

/// A running `ridecast-origin`, killed when dropped (its output is printed if the test failed).
#[derive(Debug)]
pub struct Origin {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    stdout_path: PathBuf,
    _dir: TempDir,
    quiet_on_drop: bool,
}

impl Origin {
    /// An origin with the test secret, embedded mode and the documented defaults.
    pub fn builder() -> OriginBuilder {
        OriginBuilder::new()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `ws://<addr><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Everything the process wrote to stderr so far: its log lines (what a log pipeline ships).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no origin log: {e})"))
    }

    /// Everything the process printed on stdout so far: `RIDECAST_LISTENING <addr>`, and in dev
    /// mode the banner with its tokens.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_else(|e| format!("(no origin stdout: {e})"))
    }

    /// The process id while the process runs (`None` once it has been reaped), for reading
    /// `/proc/<pid>` (see [`crate::process`]).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM: the origin should drain and exit.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("sigterm() on an origin that has already exited");
        let pid = Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"));
        kill(pid, Signal::SIGTERM).expect("sending SIGTERM to the origin");
    }

    /// Kills the process with SIGKILL and reaps it.
    pub async fn kill9(&mut self) {
        self.child.kill().await.expect("SIGKILL to the origin");
    }

    /// Waits for the process to exit on its own.
    ///
    /// # Panics
    /// If it is still running after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("waiting for the origin process"),
            Err(_) => panic!("ridecast-origin did not exit within {limit:?}; log:\n{}", tail(&self.log(), 60)),
        }
    }

    /// The value of the metric `ridecast_<name>` on `GET /metrics`.
    ///
    /// # Panics
    /// If `/metrics` does not answer or has no such metric.
    pub async fn metric(&self, name: &str) -> u64 {
        let response = crate::http::get(&self.url("/metrics"), crate::http::Auth::None, &[]).await;
        let text = response.text().await.expect("reading /metrics");
        let prefix = format!("ridecast_{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("/metrics has no numeric ridecast_{name}:\n{text}"))
    }

    /// The status of `GET /readyz`, or `None` when nothing answers (listener closed).
    pub async fn readyz(&self) -> Option<u16> {
        crate::http::status_of(&self.url("/readyz")).await
    }

    async fn wait_healthy(&mut self, wait_ready: bool) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + STARTUP_LIMIT;
        let mut endpoints = vec!["/healthz"];
        if wait_ready {
            endpoints.push("/readyz");
        }
        for endpoint in endpoints {
            loop {
                if crate::http::status_of(&self.url(endpoint)).await == Some(200) {
                    break;
                }
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(format!("the process exited with {status} before {endpoint} answered 200"));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!("{endpoint} did not answer 200 within {STARTUP_LIMIT:?}"));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Ok(())
    }
}

impl crate::http::Endpoint for Origin {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.quiet_on_drop {
            eprintln!(
                "---- ridecast-origin on {} stdout (tail) ----\n{}\n---- its log (tail) ----\n{}",
                self.addr,
                tail(&self.stdout(), 20),
                tail(&self.log(), 80)
            );
        }
        let _ = self.child.start_kill();
    }
}
