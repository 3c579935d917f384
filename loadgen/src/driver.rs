//! A simulated driver: a WebSocket to `/ws/rides` sending one location per interval, or, in
//! the idle mode, only holding the socket open and answering pings.
//!
//! One task per driver owns its socket and both reads (which answers the server's pings and
//! notes its error frames) and writes, so a driver costs a socket, a WebSocket state and one
//! task. tungstenite's buffers default to 128 KiB each, allocated up front; frames here are a
//! few hundred bytes, and the scale run holds 50,000 drivers, so they are cut to a few KiB.
//!
//! [`Trip`] (the fixes a driver sends, stamped and marked as pushed or not) is shared with the
//! Nchan publisher.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ridecast_protocol::messages::DriverMessage;
use ridecast_protocol::{Claims, GridCell, Id, LocationReport, Role};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::motion::{CellHopper, City, Fix, StreetWalker};
use crate::net::{self, SourcePorts};
use crate::worker::{Job, MotionKind, Outcome, Shared, epoch_us};

/// WebSocket read buffer per driver: server frames (offers, errors, pings) are small.
const WS_READ_BUFFER: usize = 4 * 1024;
/// Largest frame or message accepted from the server (the contract caps frames at 4 KiB).
const WS_MAX_MESSAGE: usize = 64 * 1024;

/// What one driver task needs.
#[derive(Debug)]
pub struct DriverSpec {
    pub driver: usize,
    addr: SocketAddr,
    url: String,
    bearer: String,
}

impl DriverSpec {
    /// Mints the driver's token (`sub` = its id, role `driver`).
    ///
    /// # Errors
    /// The failure's kind, counted like a connect failure.
    pub fn new(job: &Job, driver: usize, exp: u64) -> Result<Self, String> {
        let sub = Id::parse(&job.names.driver(driver)).map_err(|_| "bad_driver_id".to_owned())?;
        let claims = Claims { sub, role: Role::Driver, exp, drv: None, ride: None };
        let token = job.keys.mint(&claims).map_err(|_| "token_mint_failed".to_owned())?;
        let target = job.driver_target(driver);
        Ok(Self { driver, addr: target.addr, url: target.ws_rides_url(), bearer: format!("Bearer {token}") })
    }
}

/// Why a driver could not connect.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("tcp connect failed")]
    Tcp(#[source] std::io::Error),
    #[error("websocket handshake failed")]
    Handshake(#[source] Box<WsError>),
}

impl ConnectError {
    fn kind(&self) -> String {
        match self {
            Self::Timeout => "timeout".into(),
            Self::Tcp(e) => format!("io_{:?}", e.kind()).to_lowercase(),
            Self::Handshake(e) => match e.as_ref() {
                WsError::Http(response) => format!("http_{}", response.status().as_u16()),
                other => format!("ws_{}", ws_error_kind(other)),
            },
        }
    }
}

fn ws_error_kind(e: &WsError) -> &'static str {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed",
        WsError::Io(_) => "io",
        WsError::Protocol(_) => "protocol",
        WsError::Capacity(_) => "capacity",
        _ => "other",
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Small buffers, and every frame written at once (`write_buffer_size` 0): a driver sends one
/// frame per interval and wants it on the wire now.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(WS_MAX_MESSAGE))
        .max_frame_size(Some(WS_MAX_MESSAGE))
}

async fn connect(spec: &DriverSpec, sources: &SourcePorts) -> Result<Ws, ConnectError> {
    let stream = net::connect(spec.addr, sources).await.map_err(ConnectError::Tcp)?;
    let mut request = spec.url.as_str().into_client_request().map_err(|e| ConnectError::Handshake(Box::new(e)))?;
    let bearer = HeaderValue::from_str(&spec.bearer)
        .map_err(|e| ConnectError::Handshake(Box::new(WsError::HttpFormat(e.into()))))?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    let (ws, _response) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
        .await
        .map_err(|e| ConnectError::Handshake(Box::new(e)))?;
    Ok(ws)
}

/// How a driver moves.
#[derive(Debug)]
enum Motion {
    Hop(CellHopper),
    Walk(StreetWalker),
}

impl Motion {
    fn next(&mut self, dt: f64) -> Fix {
        match self {
            Self::Hop(h) => h.next_fix(),
            Self::Walk(w) => w.advance(dt),
        }
    }
}

/// One fix, stamped and ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    pub report: LocationReport,
    /// The send instant to record, µs (never before the `ts` millisecond).
    pub send_us: u64,
    /// The fix is in another grid cell than the last pushed one, so the origin pushes it.
    pub pushed: bool,
}

/// The fixes one driver sends: its motion, with strictly increasing `ts` (the origin drops an
/// update whose `ts` is not newer) and the push decision the origin makes, from the protocol's
/// own [`GridCell`].
#[derive(Debug)]
pub struct Trip {
    motion: Motion,
    /// Seconds between two fixes.
    dt: f64,
    last_ts: u64,
    last_pushed: Option<GridCell>,
}

impl Trip {
    /// The trip of driver `driver`: hopping from cell to cell, or driving streets from a start
    /// derived from `seed` and the driver.
    pub fn new(kind: MotionKind, seed: u64, driver: usize, interval: Duration) -> Self {
        let motion = match kind {
            MotionKind::Hop => Motion::Hop(CellHopper::new(driver as u64)),
            MotionKind::Street => Motion::Walk(StreetWalker::new(City::default(), seed ^ (driver as u64 + 1))),
        };
        Self { motion, dt: interval.as_secs_f64(), last_ts: 0, last_pushed: None }
    }

    /// The next fix, sent at `now_us` (µs since the epoch).
    pub fn next_at(&mut self, now_us: u64) -> Stamped {
        let fix = self.motion.next(self.dt);
        let ts = (now_us / 1000).max(self.last_ts + 1);
        self.last_ts = ts;
        let cell = GridCell::of(fix.lat, fix.lng);
        let pushed = self.last_pushed != Some(cell);
        if pushed {
            self.last_pushed = Some(cell);
        }
        let report =
            LocationReport { lat: fix.lat, lng: fix.lng, heading: Some(fix.heading), speed: Some(fix.speed), ts };
        Stamped { report, send_us: now_us.max(ts * 1000), pushed }
    }
}

/// Notes what the server sent; `false` once the connection is gone.
fn on_message(shared: &Shared, message: Option<Result<Message, WsError>>) -> bool {
    match message {
        Some(Ok(Message::Text(text))) if text.contains("\"error\"") => {
            // The first few are shown: they usually mean the generator and the origin disagree
            // about the contract, which is worth seeing at once.
            if shared.driver_error_frames.get() < 5 {
                eprintln!("driver got an error frame: {}", text.as_str());
            }
            shared.driver_error_frames.inc();
            true
        }
        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
            shared.driver_disconnects.inc();
            false
        }
        Some(Ok(_)) => true,
    }
}

/// Where a driver's send loop ended.
#[derive(Debug)]
enum Ended {
    /// `exit`: close the socket politely.
    Exit,
    /// The connection is gone.
    Lost,
}

/// Connects, reports the outcome, then sends locations from `go` until `stop` (idle drivers
/// send nothing), reading all along, and closes at `exit`.
pub async fn run(shared: Arc<Shared>, spec: DriverSpec, outcomes: mpsc::UnboundedSender<Outcome>) {
    // Connect time starts once a permit is held and the pacer lets the attempt go: waiting for
    // either is not the server's doing.
    let (connected, started) = {
        let _permit = shared.connect_limit.acquire().await;
        shared.pacer.wait().await;
        let started = Instant::now();
        let result = match tokio::time::timeout(shared.connect_timeout, connect(&spec, &shared.sources)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout),
        };
        (result, started)
    };
    let mut ws = match connected {
        Ok(ws) => {
            let _ = outcomes.send(Outcome {
                driver: spec.driver,
                is_driver: true,
                result: Ok(started.elapsed().as_micros() as u64),
            });
            ws
        }
        Err(e) => {
            let _ = outcomes.send(Outcome { driver: spec.driver, is_driver: true, result: Err(e.kind()) });
            return;
        }
    };
    let driver = spec.driver;
    drop(spec);

    let ended = drive(&shared, driver, &mut ws).await;
    match ended {
        Ended::Exit => {
            let _ = ws.close(None).await;
        }
        Ended::Lost => {
            drop(ws);
            shared.exit.cancelled().await;
        }
    }
}

/// The life of a connected driver: read until `go` (idle drivers: until `exit`), then send one
/// fix per interval until `stop`, reading all along.
async fn drive(shared: &Shared, driver: usize, ws: &mut Ws) -> Ended {
    // Registered once, not per loop turn: every `cancelled()` call takes the token's lock.
    let exit = shared.exit.cancelled();
    tokio::pin!(exit);
    let go = shared.go.cancelled();
    tokio::pin!(go);
    let sends = shared.mode.has_drivers();
    loop {
        tokio::select! {
            _ = &mut exit => return Ended::Exit,
            _ = &mut go, if sends => break,
            message = ws.next() => if !on_message(shared, message) {
                return Ended::Lost;
            },
        }
    }

    let interval = shared.send_interval.max(Duration::from_millis(1));
    // Spread the drivers' sends evenly over one interval instead of sending in bursts.
    let offset = interval.mul_f64(driver as f64 / shared.total_drivers.max(1) as f64);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut trip = Trip::new(shared.motion, shared.seed, driver, interval);
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);
    let mut stopped = false;

    loop {
        tokio::select! {
            biased;
            _ = &mut exit => return Ended::Exit,
            _ = &mut stop, if !stopped => stopped = true,
            _ = ticker.tick(), if !stopped => {
                let fix = trip.next_at(epoch_us());
                let Ok(text) = serde_json::to_string(&DriverMessage::Location(fix.report.clone())) else { continue };
                // Noted before it goes on the wire: a rider may see it before `send` returns.
                shared.book.record_send(driver, fix.report.ts, fix.send_us, fix.pushed);
                if ws.send(Message::text(text)).await.is_err() {
                    shared.driver_sends_failed.inc();
                    shared.driver_disconnects.inc();
                    return Ended::Lost;
                }
            }
            message = ws.next() => if !on_message(shared, message) {
                return Ended::Lost;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_grow_even_when_the_clock_does_not() {
        let mut trip = Trip::new(MotionKind::Hop, 1, 3, Duration::from_secs(1));
        let first = trip.next_at(1_764_240_000_123_456);
        let second = trip.next_at(1_764_240_000_123_900);
        let third = trip.next_at(1_764_240_000_100_000);
        assert_eq!(first.report.ts, 1_764_240_000_123);
        assert_eq!(second.report.ts, 1_764_240_000_124);
        assert_eq!(third.report.ts, 1_764_240_000_125);
        // A send is never recorded before the millisecond its `ts` names.
        assert_eq!(first.send_us, 1_764_240_000_123_456);
        assert_eq!(second.send_us, 1_764_240_000_124_000);
    }

    #[test]
    fn a_hopping_trip_pushes_every_fix_and_a_street_trip_only_some() {
        let mut hop = Trip::new(MotionKind::Hop, 1, 0, Duration::from_secs(1));
        assert!((0..100).all(|i| hop.next_at(1_000_000_000 + i * 1_000_000).pushed));
        let mut street = Trip::new(MotionKind::Street, 1, 0, Duration::from_secs(1));
        let pushed = (0..600).filter(|i| street.next_at(1_000_000_000 + i * 1_000_000).pushed).count();
        assert!((60..500).contains(&pushed), "{pushed} of 600 street fixes changed cell");
    }

    #[test]
    fn the_first_fix_is_always_pushed_and_fixes_are_valid_locations() {
        for kind in [MotionKind::Hop, MotionKind::Street] {
            let mut trip = Trip::new(kind, 7, 42, Duration::from_secs(1));
            let fix = trip.next_at(1_764_240_000_000_000);
            assert!(fix.pushed);
            assert_eq!(fix.report.validate(1_764_240_000_000), Ok(()));
        }
    }

    #[test]
    fn driver_buffers_are_small() {
        let config = ws_config();
        assert_eq!(config.read_buffer_size, WS_READ_BUFFER);
        assert_eq!(config.write_buffer_size, 0);
    }
}
