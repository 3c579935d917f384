//! A stand-in origin that answers every request with one status chosen by the test: what a load
//! balancer, a full instance or an origin whose Redis is down answers (502, 503, 429), or a
//! healthy origin's 200, switched at will while the edge runs in front of it.
//!
//! It speaks just enough HTTP/1.1 (reads a request head, answers, closes the connection) and
//! counts the requests per path, so a test can tell whether the edge asked it at all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The status that makes the stub read a request and never answer it (a hung origin).
pub const HANG: u16 = 0;

/// A running stub origin; stops when dropped.
#[derive(Debug)]
pub struct StubOrigin {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    requests: Arc<Mutex<HashMap<String, usize>>>,
    task: JoinHandle<()>,
}

impl StubOrigin {
    /// Listens on a free loopback port and answers `status` to everything ([`HANG`]: nothing).
    ///
    /// # Panics
    /// If no port can be bound.
    pub async fn start(status: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("binding the stub origin");
        let addr = listener.local_addr().expect("the stub origin's address");
        let status = Arc::new(AtomicU16::new(status));
        let requests = Arc::new(Mutex::new(HashMap::new()));
        let (answer, seen) = (status.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (answer, seen) = (answer.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
                    let path = line.split(' ').nth(1).unwrap_or_default();
                    let path = path.split('?').next().unwrap_or_default().to_owned();
                    *seen.lock().unwrap_or_else(|p| p.into_inner()).entry(path).or_default() += 1;
                    let status = answer.load(Ordering::SeqCst);
                    if status == HANG {
                        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                        return;
                    }
                    let body =
                        if status == 200 { "{}" } else { r#"{"error":{"code":"unavailable","message":"stub"}}"# };
                    let reply = format!(
                        "HTTP/1.1 {status} Stub\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { addr, status, requests, task }
    }

    /// Its base URL, for the edge's `ORIGIN_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// How many requests for `path` (without query) it has had.
    pub fn requests_for(&self, path: &str) -> usize {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).get(path).copied().unwrap_or(0)
    }
}

impl Drop for StubOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
