//! The edge worker under the real Workers runtime: `wrangler dev --local` (workerd) serving the
//! worker that `scripts/edge-setup` built into `edge-worker/build/`, in front of a real origin.
//!
//! ```no_run
//! # async fn demo(origin: &ridecast_tests::Origin) {
//! let edge = ridecast_tests::Edge::builder(origin).start().await;
//! # }
//! ```
//!
//! Two ways to run it: `wrangler dev` (the default, what developers run), or workerd through
//! Miniflare's API (`scripts/edge-serve.mjs`, [`EdgeBuilder::direct`]) without wrangler's dev
//! proxy, which buffers every stream without bound and so hides backpressure from the worker.
//!
//! The worker is built once per test binary (`scripts/edge-setup build`); set
//! `RIDECAST_TESTS_EDGE_BUILT=1` when it is already built (the test command builds it first).
//! Each edge gets its own port, inspector port, Durable Object storage directory and a copy of
//! the repository's `wrangler.toml` without its `[build]` table, so starting one never rebuilds.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::http::Endpoint;
use crate::net::free_port;
use crate::origin::Origin;
use crate::redis::tail;
use crate::tokens::TEST_SECRET;

/// How long `wrangler dev` gets to start workerd and answer a first request.
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// Set (to anything) when `edge-worker/build/` is already up to date.
pub const EDGE_BUILT_ENV: &str = "RIDECAST_TESTS_EDGE_BUILT";

/// The repository root.
pub fn repository() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository root").to_owned()
    })
}

/// The built worker's entry module, building it on first use (once per test binary).
///
/// # Panics
/// If the build fails or the tools are missing; the panic says how to install them.
pub fn worker_entry() -> &'static Path {
    static ENTRY: OnceLock<PathBuf> = OnceLock::new();
    ENTRY.get_or_init(|| {
        let root = repository();
        if std::env::var_os(EDGE_BUILT_ENV).is_none() {
            let status = std::process::Command::new(root.join("scripts/edge-setup"))
                .arg("build")
                .status()
                .unwrap_or_else(|e| panic!("running scripts/edge-setup build: {e}"));
            assert!(
                status.success(),
                "scripts/edge-setup build failed ({status}); `scripts/edge-setup` installs the tools"
            );
        }
        let entry = root.join("edge-worker/build/index.js");
        assert!(entry.is_file(), "{} is missing: run scripts/edge-setup", entry.display());
        entry
    })
}

/// `node_modules/.bin/wrangler`, as `npm ci` installed it from package-lock.json.
pub fn wrangler() -> PathBuf {
    let path = repository().join("node_modules/.bin/wrangler");
    assert!(path.is_file(), "{} is missing: run scripts/edge-setup (npm ci)", path.display());
    path
}

/// The repository's `wrangler.toml` with `main` made absolute and the `[build]` table removed,
/// written into `dir`: what the tests run, so the bindings and migrations are the real ones.
///
/// # Panics
/// If `wrangler.toml` cannot be read or the copy written.
pub fn test_config(dir: &Path) -> PathBuf {
    let original =
        std::fs::read_to_string(repository().join("wrangler.toml")).expect("reading the repository's wrangler.toml");
    let mut config = String::new();
    let mut in_build_table = false;
    for line in original.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_build_table = trimmed == "[build]";
        }
        if in_build_table {
            continue;
        }
        if trimmed.starts_with("main ") || trimmed.starts_with("main=") {
            config.push_str(&format!("main = {:?}\n", worker_entry().display().to_string()));
        } else {
            config.push_str(line);
            config.push('\n');
        }
    }
    let path = dir.join("wrangler.toml");
    std::fs::write(&path, config).expect("writing the test wrangler.toml");
    path
}

/// The environment every wrangler run gets: no telemetry, no calls to Cloudflare.
pub fn wrangler_command() -> Command {
    let mut command = Command::new(wrangler());
    command
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("WRANGLER_SEND_METRICS", "false")
        .env("WRANGLER_LOG_SANITIZE", "true")
        .env("NO_COLOR", "1")
        .current_dir(repository());
    command
}

/// How workerd is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    WranglerDev,
    Miniflare,
}

/// Configures an [`Edge`] before starting it.
#[derive(Debug, Clone)]
pub struct EdgeBuilder {
    origin_url: String,
    vars: Vec<(String, String)>,
    runner: Runner,
}

impl EdgeBuilder {
    /// `--var NAME:value` for the worker (vars and secrets read the same under `wrangler dev`).
    pub fn var(mut self, name: &str, value: impl ToString) -> Self {
        self.vars.push((name.to_owned(), value.to_string()));
        self
    }

    /// Runs workerd through Miniflare's API (`scripts/edge-serve.mjs`) instead of `wrangler dev`:
    /// riders' sockets are then workerd's own, so a stalled rider pushes back on the worker.
    pub fn direct(mut self) -> Self {
        self.runner = Runner::Miniflare;
        self
    }

    /// Starts the edge on a free port and waits until the worker answers.
    ///
    /// # Panics
    /// If it never answers; the panic carries wrangler's log.
    pub async fn start(self) -> Edge {
        worker_entry();
        let mut last_failure = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix("ridecast-edge-").tempdir().expect("temp dir for the edge");
            let mut edge = self.spawn(dir);
            match edge.wait_answering().await {
                Ok(()) => return edge,
                Err(why) => {
                    last_failure = format!("{why}; log:\n{}", tail(&edge.log(), 60));
                    edge.quiet_on_drop = true;
                }
            }
        }
        panic!("the edge ({:?}) did not start: {last_failure}", self.runner);
    }

    fn spawn(&self, dir: TempDir) -> Edge {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log_path = dir.path().join("wrangler.log");
        let log = File::create(&log_path).expect("creating the wrangler log file");
        let log_for_stderr = log.try_clone().expect("sharing the wrangler log file");
        let mut command = match self.runner {
            Runner::WranglerDev => self.wrangler_dev(&dir, addr),
            Runner::Miniflare => self.miniflare(addr),
        };
        // Its own process group: wrangler (or node) runs workerd as a child, and both must go.
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_for_stderr))
            .kill_on_drop(true);
        let child = command.spawn().unwrap_or_else(|e| panic!("spawning the edge ({:?}): {e}", self.runner));
        Edge { child, addr, log_path, _dir: dir, quiet_on_drop: false }
    }

    fn miniflare(&self, addr: SocketAddr) -> Command {
        let mut command = Command::new("node");
        command
            .arg(repository().join("scripts/edge-serve.mjs"))
            .arg(addr.port().to_string())
            .arg(&self.origin_url)
            .arg(TEST_SECRET)
            .args(self.vars.iter().map(|(name, value)| format!("{name}={value}")))
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("WRANGLER_SEND_METRICS", "false")
            .current_dir(repository());
        command
    }

    fn wrangler_dev(&self, dir: &TempDir, addr: SocketAddr) -> Command {
        let config = test_config(dir.path());
        let mut command = wrangler_command();
        command
            .arg("dev")
            .arg("--config")
            .arg(&config)
            .args(["--local", "--ip", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--inspector-port", &free_port().to_string()])
            .arg("--persist-to")
            .arg(dir.path().join("state"))
            .args(["--show-interactive-dev-session=false", "--log-level", "log"])
            .args(["--var", &format!("ORIGIN_URL:{}", self.origin_url)])
            .args(["--var", &format!("RIDECAST_TOKEN_SECRET:{TEST_SECRET}")]);
        for (name, value) in &self.vars {
            command.args(["--var", &format!("{name}:{value}")]);
        }
        command
    }
}

/// A running `wrangler dev` or Miniflare (and its workerd), killed with its process group when
/// dropped; its log is printed if the test failed.
#[derive(Debug)]
pub struct Edge {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    _dir: TempDir,
    quiet_on_drop: bool,
}

impl Edge {
    /// An edge in front of `origin`, with the test secret.
    pub fn builder(origin: &Origin) -> EdgeBuilder {
        Self::builder_for_url(origin.url(""))
    }

    /// An edge whose `ORIGIN_URL` is `url` (a [`crate::StubOrigin`], say), with the test secret.
    pub fn builder_for_url(url: impl Into<String>) -> EdgeBuilder {
        EdgeBuilder { origin_url: url.into(), vars: Vec::new(), runner: Runner::WranglerDev }
    }

    /// Everything wrangler and the worker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no wrangler log: {e})"))
    }

    /// wrangler's process id (the leader of the group that holds workerd).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn wait_answering(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + STARTUP_LIMIT;
        // Any answer from the worker will do: `/` is the worker's own 404.
        while crate::http::status_of(&self.url("/")).await.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("wrangler exited with {status} before answering"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("no answer within {STARTUP_LIMIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    fn kill_group(&self) {
        if let Some(pid) = self.child.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Endpoint for Edge {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.quiet_on_drop {
            eprintln!("---- wrangler dev on {} log (tail) ----\n{}", self.addr, tail(&self.log(), 80));
        }
        self.kill_group();
    }
}
