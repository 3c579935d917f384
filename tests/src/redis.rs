//! A private `redis-server` per test: its own port, its own empty directory, its own log.
//!
//! Modelled on redis-rs's test support: spawn with `--save ""` so nothing is written, wait until
//! it answers `PING` (printing its log if it never does), kill it on `Drop`. The outage test
//! also needs [`RedisServer::kill9`] and [`RedisServer::restart`] on the same port, so that the
//! origins' configured `--redis-url` points at the new process.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::net::free_port;

/// How long a fresh `redis-server` gets to answer `PING`.
const STARTUP_LIMIT: Duration = Duration::from_secs(10);

/// A running `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Writes every change to an append-only file and reloads it on restart.
    persistent: bool,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    /// If `redis-server` cannot be started or never answers; the panic carries its log.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// Starts a server that keeps its data in an append-only file (fsync on every write), so
    /// that [`RedisServer::restart`] after [`RedisServer::kill9`] brings it all back: how
    /// production Redis should run.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub async fn start_persistent() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(persistent: bool) -> Self {
        let dir = tempfile::Builder::new().prefix("ridecast-redis-").tempdir().expect("creating a temp dir for redis");
        let mut server = Self { port: free_port(), dir, child: None, persistent };
        let mut last_log = String::new();
        // A port found free can be taken by someone else before redis binds it; try a few.
        for _ in 0..5 {
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(log) => {
                    last_log = log;
                    server.port = free_port();
                }
            }
        }
        panic!("redis-server did not start after 5 attempts; last log:\n{last_log}");
    }

    /// `redis://127.0.0.1:<port>`, for `--redis-url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on; it keeps it across [`RedisServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL (no shutdown, no goodbye to clients) and reaps it.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix and waits for the process to be reaped.
            child.kill().await.expect("SIGKILL to redis-server");
        }
    }

    /// Starts a new server on the same port after [`RedisServer::kill9`]: empty, or with what
    /// its append-only file kept if it is [persistent](RedisServer::start_persistent).
    ///
    /// # Panics
    /// If the new server does not answer `PING` in time; the panic carries its log.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() is for a killed server; call kill9() first");
        if let Err(log) = self.spawn_and_wait().await {
            panic!("redis-server did not come back on port {}; log:\n{log}", self.port);
        }
    }

    /// Sends one command straight to the server, bypassing every origin (to garble what they
    /// stored, say), and returns its reply as Redis wrote it (`:1\r\n`, `+OK\r\n`, ...).
    ///
    /// # Panics
    /// If the server does not answer within a second.
    pub async fn command(&self, args: &[&str]) -> String {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let exchange = async {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut reply = vec![0u8; 4096];
            let n = stream.read(&mut reply).await.ok()?;
            Some(String::from_utf8_lossy(&reply[..n]).into_owned())
        };
        match tokio::time::timeout(Duration::from_secs(1), exchange).await {
            Ok(Some(reply)) => reply,
            _ => panic!("redis on port {} did not answer {args:?}", self.port),
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no redis log: {e})"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns on `self.port` and waits for `PING`; on failure returns the log.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => return Err(format!("could not spawn redis-server (is it installed?): {e}")),
        };
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + STARTUP_LIMIT;
        loop {
            if ping(self.port).await {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || tokio::time::Instant::now() >= deadline {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill().await;
                }
                return Err(self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- redis-server on port {} log ----\n{}", self.port, tail(&self.log(), 40));
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Whether a Redis server on `port` answers `PING` with `+PONG`.
pub(crate) async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(true)))
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
