//! `GET /ws/rides`: a driver's one WebSocket.
//!
//! Frames are validated one by one; a bad frame gets an error frame and the socket lives on.
//! Only abuse closes it: a frame over 4 KiB (1009), silence past the idle limit. Location
//! floods are coalesced: at most one ingest per `--ingest-interval-ms`, always the newest.

use axum::{
    Extension,
    extract::{
        State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code},
    },
    response::Response,
};
use ridecast_protocol::{
    ErrorCode, Id, LocationReport, MAX_FRAME_BYTES, Role,
    location::is_newer,
    messages::{DriverMessage, ServerMessage, parse_driver_message},
};
use tokio::time::Instant;
use tracing::Instrument;

use crate::{
    auth::Principal,
    clock,
    http::{error::ApiError, front::ConnectionSlot},
    metrics::{GaugeGuard, Metrics},
    state::AppState,
};

/// tungstenite's own cap, far above the contract's 4 KiB so that oversized frames reach our
/// check and get a proper error and close code; beyond it tungstenite refuses the frame itself.
const TRANSPORT_FRAME_LIMIT: usize = 64 * 1024;

/// Initial read buffer of a driver socket.
const READ_BUFFER_BYTES: usize = 512;

/// Authenticates (before any upgrade: failures are plain 401/403) and upgrades.
pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    slot: Option<Extension<ConnectionSlot>>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    principal.require_role(Role::Driver)?;
    if state.drain.is_draining() {
        return Err(ApiError::Unavailable("the instance is draining"));
    }
    let driver = principal.claims.sub;
    // Debug level: an enabled span costs every connected driver ~400 bytes of span data, so
    // at the default level events carry `driver.id` themselves instead.
    let span = tracing::debug_span!("driver", driver.id = %driver);
    Ok(ws
        // Sized for a typical frame (~150 bytes); it grows for the rare large one. Every
        // connected driver holds this buffer for its whole session.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(TRANSPORT_FRAME_LIMIT)
        .max_frame_size(TRANSPORT_FRAME_LIMIT)
        .on_upgrade(move |socket| async move {
            // The socket keeps its place in the connection limit until it closes.
            let _slot = slot;
            DriverSession::new(driver, state).run(socket).instrument(span).await;
        }))
}

/// What the socket loop should do after handling a frame.
enum Next {
    Continue,
    Close(u16, &'static str),
}

struct DriverSession {
    driver: Id,
    state: AppState,
    /// Newest `ts` accepted on this socket; the store's own check covers other sockets.
    last_ts: Option<u64>,
    /// A validated update waiting for the ingest interval; newer ones replace it.
    pending: Option<LocationReport>,
    next_ingest: Instant,
    last_heard: Instant,
    /// Whether the driver has been told the store is failing (told once per outage).
    told_unavailable: bool,
}

impl DriverSession {
    fn new(driver: Id, state: AppState) -> Self {
        let now = Instant::now();
        Self { driver, state, last_ts: None, pending: None, next_ingest: now, last_heard: now, told_unavailable: false }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let _open = GaugeGuard::new(&self.state.metrics, |m| &m.driver_connections);
        let _drain = self.state.drain.tracker().token();
        let shutdown = self.state.drain.token().clone();
        // One timer for both deadlines (next ping, next coalesced ingest), reset as they move:
        // every connected driver holds this future, so each timer is memory per driver.
        let mut next_ping = Instant::now() + self.state.config.ws_ping;
        let timer = tokio::time::sleep_until(next_ping);
        let mut timer = std::pin::pin!(timer);
        tracing::debug!("driver connected");
        let close = loop {
            let deadline = match self.pending {
                Some(_) => next_ping.min(self.next_ingest),
                None => next_ping,
            };
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let next = tokio::select! {
                () = shutdown.cancelled() => Next::Close(close_code::RESTART, "server restarting; reconnect"),
                frame = socket.recv() => match frame {
                    None | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(message)) => {
                        self.last_heard = Instant::now();
                        Box::pin(self.on_message(message, &mut socket)).await
                    }
                    Some(Err(error)) => break transport_close(&error),
                },
                () = timer.as_mut() => {
                    let now = Instant::now();
                    if self.pending.is_some() && now >= self.next_ingest {
                        Box::pin(self.ingest_pending(&mut socket)).await;
                    }
                    if now >= next_ping {
                        next_ping = now + self.state.config.ws_ping;
                        Box::pin(self.ping(&mut socket)).await
                    } else {
                        Next::Continue
                    }
                }
            };
            if let Next::Close(code, reason) = next {
                break Some((code, reason));
            }
        };
        if let Some((code, reason)) = close {
            let frame = CloseFrame { code, reason: reason.into() };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
        tracing::debug!("driver disconnected");
    }

    /// Closes a socket silent past the idle limit, else pings it.
    async fn ping(&self, socket: &mut WebSocket) -> Next {
        if self.last_heard.elapsed() >= self.state.config.ws_idle {
            Next::Close(close_code::POLICY, "idle timeout")
        } else if socket.send(Message::Ping(Default::default())).await.is_err() {
            Next::Close(close_code::ERROR, "ping failed")
        } else {
            Next::Continue
        }
    }

    async fn on_message(&mut self, message: Message, socket: &mut WebSocket) -> Next {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return self.reject(socket, ErrorCode::InvalidMessage, "frames must be JSON text".into()).await;
            }
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Next::Continue,
        };
        if text.len() > MAX_FRAME_BYTES {
            let message = format!("frames are limited to {MAX_FRAME_BYTES} bytes");
            let _ = self.reject(socket, ErrorCode::TooLarge, message).await;
            return Next::Close(close_code::SIZE, "frame too large");
        }
        match parse_driver_message(&text) {
            Err(error) => self.reject(socket, ErrorCode::InvalidMessage, error.to_string()).await,
            Ok(DriverMessage::Location(report)) => self.on_location(report, socket).await,
            // Offers arrive with ride matching; until then an online driver simply waits.
            Ok(DriverMessage::Availability { .. }) => Next::Continue,
            Ok(
                DriverMessage::OfferAck { offer_id }
                | DriverMessage::Accept { offer_id }
                | DriverMessage::Reject { offer_id },
            ) => {
                self.reject(socket, ErrorCode::NotFound, format!("no pending offer {offer_id:?} for this driver")).await
            }
        }
    }

    async fn on_location(&mut self, report: LocationReport, socket: &mut WebSocket) -> Next {
        let metrics = self.state.metrics.values();
        if let Err(invalid) = report.validate(clock::now_ms()) {
            Metrics::inc(&metrics.updates_invalid_total);
            return self.reject(socket, ErrorCode::InvalidLocation, invalid.to_string()).await;
        }
        if !is_newer(report.ts, self.last_ts) {
            Metrics::inc(&metrics.updates_stale_total);
            return Next::Continue;
        }
        Metrics::inc(&metrics.updates_received_total);
        self.last_ts = Some(report.ts);
        if self.pending.replace(report).is_some() {
            Metrics::inc(&metrics.updates_coalesced_total);
        }
        if Instant::now() >= self.next_ingest {
            self.ingest_pending(socket).await;
        }
        Next::Continue
    }

    async fn ingest_pending(&mut self, socket: &mut WebSocket) {
        let Some(report) = self.pending.take() else { return };
        self.next_ingest = Instant::now() + self.state.config.ingest_interval;
        match self.state.ingestor.ingest(&self.driver, report).await {
            Ok(_) => self.told_unavailable = false,
            Err(error) => {
                tracing::warn!(driver.id = %self.driver, %error, "location not stored");
                if !self.told_unavailable {
                    self.told_unavailable = true;
                    let message = "locations cannot be stored right now; keep sending, the next one is retried";
                    let _ = self.reject(socket, ErrorCode::Unavailable, message.into()).await;
                }
            }
        }
    }

    /// Sends an error frame; the socket stays open.
    async fn reject(&self, socket: &mut WebSocket, code: ErrorCode, message: String) -> Next {
        let frame = ServerMessage::error(code, message).to_json();
        match socket.send(Message::Text(frame.into())).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::Close(close_code::ERROR, "send failed"),
        }
    }
}

/// The close to attempt after a transport error: 1009 when the peer sent more than even the
/// transport allows, nothing otherwise (the connection is already unusable).
fn transport_close(error: &axum::Error) -> Option<(u16, &'static str)> {
    let inner = std::error::Error::source(error)?;
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some((close_code::SIZE, "frame too large")),
        _ => None,
    }
}
