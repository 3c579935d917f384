//! A simulated driver: a WebSocket to `/ws/rides` sending one location per interval.
//!
//! Drivers are few (one per ~100 riders or more), so a full WebSocket client (tungstenite) is
//! fine here; it also answers the server's pings while the driver waits for `go`.

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
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::motion::{CellHopper, City, Fix, StreetWalker};
use crate::net::{self, SourcePorts};
use crate::worker::{Job, Mode, Outcome, Shared, epoch_us};

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

async fn connect(spec: &DriverSpec, sources: &SourcePorts) -> Result<Ws, ConnectError> {
    let stream = net::connect(spec.addr, sources).await.map_err(ConnectError::Tcp)?;
    let mut request = spec.url.as_str().into_client_request().map_err(|e| ConnectError::Handshake(Box::new(e)))?;
    let bearer = HeaderValue::from_str(&spec.bearer)
        .map_err(|e| ConnectError::Handshake(Box::new(WsError::HttpFormat(e.into()))))?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    let (ws, _response) =
        tokio_tungstenite::client_async(request, stream).await.map_err(|e| ConnectError::Handshake(Box::new(e)))?;
    Ok(ws)
}

/// How this driver moves.
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

/// Connects, reports the outcome, then sends locations from `go` until `stop`, and closes at
/// `exit`.
pub async fn run(shared: Arc<Shared>, spec: DriverSpec, outcomes: mpsc::UnboundedSender<Outcome>) {
    // Connect time starts once a permit is held: waiting for one is not the server's doing.
    let (connected, started) = {
        let _permit = shared.connect_limit.acquire().await;
        let started = Instant::now();
        let result = match tokio::time::timeout(shared.connect_timeout, connect(&spec, &shared.sources)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout),
        };
        (result, started)
    };
    let ws = match connected {
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
    let (mut sink, mut stream) = ws.split();

    // Reading keeps pings answered and counts the server's error frames.
    let reader_shared = Arc::clone(&shared);
    tokio::spawn(async move {
        let shared = reader_shared;
        let exit = shared.exit.cancelled();
        tokio::pin!(exit);
        loop {
            let message = tokio::select! {
                _ = &mut exit => return,
                message = stream.next() => message,
            };
            match message {
                Some(Ok(Message::Text(text))) if text.contains("\"error\"") => {
                    // The first few are shown: they usually mean the generator and the origin
                    // disagree about the contract, which is worth seeing at once.
                    if shared.driver_error_frames.get() < 5 {
                        eprintln!("driver got an error frame: {}", text.as_str());
                    }
                    shared.driver_error_frames.inc();
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    shared.driver_disconnects.inc();
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    });

    tokio::select! {
        _ = shared.exit.cancelled() => return,
        _ = shared.go.cancelled() => {}
    }
    let interval = shared.send_interval.max(Duration::from_millis(1));
    // Spread the drivers' sends evenly over one interval instead of sending in bursts.
    let offset = interval.mul_f64(spec.driver as f64 / shared.total_drivers.max(1) as f64);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut motion = match shared.mode {
        Mode::Realistic => Motion::Walk(StreetWalker::new(City::default(), shared.seed ^ (spec.driver as u64 + 1))),
        _ => Motion::Hop(CellHopper::new(spec.driver as u64)),
    };
    let mut last_ts = 0u64;
    let mut last_pushed: Option<GridCell> = None;
    let dt = interval.as_secs_f64();
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);

    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        let fix = motion.next(dt);
        let send_us = epoch_us();
        let ts = (send_us / 1000).max(last_ts + 1);
        last_ts = ts;
        let cell = GridCell::of(fix.lat, fix.lng);
        let pushed = last_pushed != Some(cell);
        if pushed {
            last_pushed = Some(cell);
        }
        let report =
            LocationReport { lat: fix.lat, lng: fix.lng, heading: Some(fix.heading), speed: Some(fix.speed), ts };
        let Ok(text) = serde_json::to_string(&DriverMessage::Location(report)) else { continue };
        shared.book.record_send(spec.driver, ts, send_us.max(ts * 1000), pushed);
        if sink.send(Message::text(text)).await.is_err() {
            shared.driver_sends_failed.inc();
            break;
        }
    }

    shared.exit.cancelled().await;
    let _ = sink.send(Message::Close(None)).await;
}
