//! A simulated driver publishing to Nchan: one keep-alive HTTP/1.1 connection per driver and one
//! `POST /pub/{id}` per interval, whose body is the location JSON an origin would push (with
//! `driverId`, and `ts` = the send time).
//!
//! Nchan has no driver socket; a publish is an ordinary request. The connection is opened at
//! setup, so that a refusal counts like a driver's connect failure, and opened again whenever
//! the server has closed it (nginx ends keep-alive connections after `keepalive_requests`
//! requests or `keepalive_timeout` of silence). The send instant, the push flag and the `ts`
//! are recorded exactly as the WebSocket driver records them, so latency and delivery are
//! measured the same way for both servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ridecast_protocol::{Id, LocationReport};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::clock::epoch_us;
use crate::http::{self, Exchange, HttpError, post_json_request};
use crate::job::Job;
use crate::net;
use crate::shared::{Outcome, Shared};
use crate::trip::Trip;

/// What one publisher task needs.
#[derive(Debug)]
pub struct PublisherSpec {
    pub driver: usize,
    addr: SocketAddr,
    authority: String,
    /// `/pub/{driver id}`: the channel is named after the driver.
    path: String,
    driver_id: Id,
}

impl PublisherSpec {
    /// Prepares the publisher of driver `driver` (Nchan checks no token).
    ///
    /// # Errors
    /// The failure's kind, counted like a connect failure.
    pub fn new(job: &Job, driver: usize) -> Result<Self, String> {
        let driver_id = Id::parse(&job.names.driver(driver)).map_err(|_| "bad_driver_id".to_owned())?;
        let target = job.driver_target(driver);
        Ok(Self {
            driver,
            addr: target.addr,
            authority: target.authority.clone(),
            path: format!("/pub/{driver_id}"),
            driver_id,
        })
    }

    /// The request that publishes `report` as the rider-facing location JSON.
    ///
    /// # Errors
    /// When the location cannot be serialized (it always can).
    pub fn request(&self, report: LocationReport) -> Result<Vec<u8>, serde_json::Error> {
        let body = serde_json::to_vec(&report.attribute_to(self.driver_id.clone()))?;
        Ok(post_json_request(&self.authority, &self.path, &body))
    }
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Http(#[from] HttpError),
}

impl PublishError {
    fn kind(&self) -> String {
        match self {
            Self::Timeout => "timeout".into(),
            Self::Http(e) => e.kind(),
        }
    }
}

/// One keep-alive connection, its read buffer and the body of the last answer.
#[derive(Debug)]
struct Connection {
    socket: Option<TcpStream>,
    buf: Vec<u8>,
    body: Vec<u8>,
}

impl Connection {
    async fn exchange(&mut self, request: &[u8]) -> Result<Exchange, HttpError> {
        let Some(socket) = self.socket.as_mut() else { return Err(HttpError::ClosedBeforeHead) };
        socket.write_all(request).await?;
        let mut wire = 0;
        http::read_response(socket, &mut self.buf, &mut self.body, &mut wire).await
    }

    /// Forgets a connection that cannot carry another request.
    fn drop_socket(&mut self, shared: &Shared) {
        if self.socket.take().is_some() {
            shared.driver_disconnects.inc();
        }
        self.buf.clear();
    }
}

/// Sends one publish and returns the answer's status. A missing connection is opened first; a
/// reused one that fails before answering (the server closed it while idle) is replaced once.
async fn publish(
    shared: &Shared,
    spec: &PublisherSpec,
    conn: &mut Connection,
    request: &[u8],
) -> Result<u16, PublishError> {
    let mut retried = false;
    loop {
        let reused = conn.socket.is_some();
        if !reused {
            let fresh = tokio::time::timeout(shared.connect_timeout, net::connect(spec.addr, &shared.sources))
                .await
                .map_err(|_| PublishError::Timeout)?
                .map_err(HttpError::Io)?;
            shared.driver_reconnects.inc();
            conn.socket = Some(fresh);
        }
        match tokio::time::timeout(shared.connect_timeout, conn.exchange(request)).await {
            Ok(Ok(done)) => {
                if done.close {
                    conn.drop_socket(shared);
                }
                return Ok(done.status);
            }
            Ok(Err(e)) => {
                conn.drop_socket(shared);
                if reused && !retried {
                    retried = true;
                    continue;
                }
                return Err(e.into());
            }
            Err(_) => {
                conn.drop_socket(shared);
                return Err(PublishError::Timeout);
            }
        }
    }
}

/// Connects, reports the outcome, then publishes one location per interval from `go` until
/// `stop`, and closes at `exit`.
pub async fn run(shared: Arc<Shared>, spec: PublisherSpec, outcomes: mpsc::UnboundedSender<Outcome>) {
    let (connected, started) = shared.connect_paced(spec.addr).await;
    let socket = match connected {
        Ok(socket) => {
            let connect_us = started.elapsed().as_micros() as u64;
            let _ = outcomes.send(Outcome { driver: spec.driver, is_driver: true, result: Ok(connect_us) });
            socket
        }
        Err(kind) => {
            let _ = outcomes.send(Outcome { driver: spec.driver, is_driver: true, result: Err(kind) });
            return;
        }
    };
    let mut conn = Connection { socket: Some(socket), buf: Vec::with_capacity(512), body: Vec::with_capacity(256) };
    tokio::select! {
        _ = shared.exit.cancelled() => return,
        _ = shared.go.cancelled() => {}
    }

    let interval = shared.send_interval.max(Duration::from_millis(1));
    // Spread the drivers' sends evenly over one interval, as the WebSocket drivers do.
    let offset = interval.mul_f64(spec.driver as f64 / shared.total_drivers.max(1) as f64);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut trip = Trip::new(&shared.trip_recipe(), spec.driver);
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);

    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        let Some(fix) = trip.next_at(epoch_us()) else { continue };
        let ts = fix.report.ts;
        let Ok(request) = spec.request(fix.report) else { continue };
        // Noted before it goes on the wire: a rider may see it before the answer arrives.
        shared.book.record_send(spec.driver, ts, fix.send_us, fix.pushed, fix.changed_cell);
        match publish(&shared, &spec, &mut conn, &request).await {
            Ok(status) if (200..300).contains(&status) => {}
            Ok(status) => {
                if shared.driver_error_frames.get() < 5 {
                    eprintln!("publisher got HTTP {status}: {}", String::from_utf8_lossy(&conn.body));
                }
                shared.driver_error_frames.inc();
            }
            Err(e) => {
                if shared.driver_sends_failed.get() < 5 {
                    eprintln!("publish failed: {}", e.kind());
                }
                shared.driver_sends_failed.inc();
            }
        }
    }
    shared.exit.cancelled().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_carries_the_location_an_origin_would_push() {
        let spec = PublisherSpec {
            driver: 0,
            addr: "127.0.0.1:1".parse().expect("addr"),
            authority: "127.0.0.1:18200".into(),
            path: "/pub/lgabc-d0".into(),
            driver_id: Id::parse("lgabc-d0").expect("id"),
        };
        let report =
            LocationReport { lat: 37.5, lng: -122.25, heading: Some(90.0), speed: Some(8.5), ts: 1_764_240_000_123 };
        let request = String::from_utf8(spec.request(report).expect("serializes")).expect("ascii");
        let body = r#"{"driverId":"lgabc-d0","lat":37.5,"lng":-122.25,"heading":90.0,"speed":8.5,"ts":1764240000123}"#;
        assert_eq!(
            request,
            format!(
                "POST /pub/lgabc-d0 HTTP/1.1\r\nHost: 127.0.0.1:18200\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        );
    }
}
