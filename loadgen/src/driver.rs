//! A simulated driver: a WebSocket to `/ws/rides` sending one location per interval, or, in
//! the idle mode, only holding the socket open and answering pings.
//!
//! One task per driver owns its socket and both reads (which answers the server's pings and
//! notes its error frames) and writes, so a driver costs a socket, a WebSocket state and one
//! task. tungstenite's buffers default to 128 KiB each, allocated up front; frames here are a
//! few hundred bytes, and the scale run holds 50,000 drivers, so they are cut to a few KiB.
//!
//! What it sends comes from a [`Trip`], as for the Nchan publisher.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ridecast_protocol::messages::DriverMessage;
use ridecast_protocol::{Claims, Id, Role};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::clock::epoch_us;
use crate::job::Job;
use crate::net::{self, SourcePorts};
use crate::shared::{Outcome, Shared};
use crate::trip::Trip;

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
    let mut trip = Trip::new(&shared.trip_recipe(), driver);
    if sends && trip.reports_before_go() {
        // Sent before the window and recorded nowhere: it is where the driver already was, so a
        // rider's first answer shows it as old news (not a fresh update, not a 404).
        let Some(fix) = trip.next_at(epoch_us()) else { return Ended::Exit };
        let Ok(text) = serde_json::to_string(&DriverMessage::Location(fix.report)) else { return Ended::Exit };
        if ws.send(Message::text(text)).await.is_err() {
            shared.driver_sends_failed.inc();
            shared.driver_disconnects.inc();
            return Ended::Lost;
        }
    }
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
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);
    let mut stopped = false;

    loop {
        tokio::select! {
            biased;
            _ = &mut exit => return Ended::Exit,
            _ = &mut stop, if !stopped => stopped = true,
            _ = ticker.tick(), if !stopped => {
                let Some(fix) = trip.next_at(epoch_us()) else { continue };
                let Ok(text) = serde_json::to_string(&DriverMessage::Location(fix.report.clone())) else { continue };
                // Noted before it goes on the wire: a rider may see it before `send` returns.
                shared.book.record_send(driver, fix.report.ts, fix.send_us, fix.pushed, fix.changed_cell);
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
    fn driver_buffers_are_small() {
        let config = ws_config();
        assert_eq!(config.read_buffer_size, WS_READ_BUFFER);
        assert_eq!(config.write_buffer_size, 0);
    }
}
