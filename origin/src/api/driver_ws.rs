//! `GET /ws/rides`: a driver's one WebSocket.
//!
//! Frames are validated one by one; a bad frame gets an error frame and the socket lives on.
//! Only abuse closes it: a frame over 4 KiB (1009), a long run of frames refused for the rate
//! (1008), silence past the idle limit. Location floods are coalesced: at most one ingest per
//! `--ingest-interval-ms`, always the newest. Other frames (availability, offer answers) each
//! cost store work, so they are rate limited (`--driver-rate`, `--driver-burst`).
//!
//! Ride steps: the assigned driver's `ride_progress` goes to the dispatcher, which records it on
//! the ride and frees the driver for offers once the ride is `completed`; the answer is a
//! `ride_progress_result`.
//!
//! Offers: the session registers with the [`DriverPost`](crate::dispatch::post::DriverPost) so
//! offers and results reach it from any instance, sends the driver's pending offer on connect
//! (a reconnecting driver gets the same offer id again), and resends an offer every
//! `--offer-resend-ms` until the driver acknowledges it or it ends. Availability and position
//! (when online) feed the dispatch store.

use axum::{
    Extension,
    extract::{
        State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code, rejection::WebSocketUpgradeRejection},
    },
    response::Response,
};
use ridecast_protocol::{
    ErrorCode, GridCell, Id, LocationReport, Role,
    location::is_newer,
    messages::{DriverMessage, LatLng, ServerMessage, parse_driver_message},
};
use tokio::time::Instant;
use tracing::Instrument;

use crate::{
    api::{
        error::ApiError,
        front::ConnectionSlot,
        state::AppState,
        websocket::{self, FLOODING, Incoming, Next, TRANSPORT_FRAME_LIMIT, incoming, transport_close},
    },
    auth::Principal,
    base::{
        clock,
        metrics::{GaugeGuard, Metrics},
    },
    bus::BackendError,
    dispatch::post::{Mailbox, Posted},
    ingest::{DriverTrack, StoreUnavailable},
    limits::{RefusedRun, token_streams::StreamKey},
};

/// An online driver's position is written to the dispatch store when its grid cell changes,
/// or at least this often (which also keeps it from counting as stale).
const POSITION_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// At most one dispatch position write per driver in this time: each is a store round trip (a
/// Redis script), and a driver alternating between two cells would otherwise write every frame.
/// A position that arrives sooner waits, newest wins, and is written when the time is up.
const POSITION_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Authenticates (before any upgrade: failures are JSON 401/403) and upgrades. A request that
/// passes and is no upgrade gets a JSON 426 (405 for another method than `GET`).
pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    key: StreamKey,
    slot: Option<Extension<ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    principal.require_role(Role::Driver)?;
    if state.drain.is_draining() {
        return Err(ApiError::Unavailable("the instance is draining"));
    }
    let ws = ws?;
    let permit = state.token_streams.acquire(key)?;
    let driver = principal.claims.sub;
    // Debug level: an enabled span costs every connected driver ~400 bytes of span data, so
    // at the default level events carry `driver.id` themselves instead.
    let span = tracing::debug_span!("driver", driver.id = %driver);
    Ok(websocket::sized(ws, TRANSPORT_FRAME_LIMIT).on_upgrade(move |socket| async move {
        // The socket keeps its place in the connection limit until it closes.
        let (_slot, _permit) = (slot, permit);
        let session = DriverSession::new(driver, state).run(socket);
        // Entering even a disabled span costs every frame a little; skip it when it is off.
        if span.is_disabled() { session.await } else { session.instrument(span).await }
    }))
}

/// An offer sent and not yet acknowledged.
struct Unacked {
    frame: ServerMessage,
    offer_id: String,
    resend_at: Instant,
}

impl Unacked {
    fn boxed(frame: ServerMessage, offer_id: String, resend_in: std::time::Duration) -> Box<Self> {
        Box::new(Self { frame, offer_id, resend_at: Instant::now() + resend_in })
    }
}

struct DriverSession {
    driver: Id,
    state: AppState,
    /// Newest `ts` accepted on this socket; the store's own check covers other sockets.
    last_ts: Option<u64>,
    /// A validated update waiting for the ingest interval; newer ones replace it.
    pending: Option<LocationReport>,
    /// What the ingestor remembers of this driver's fixes.
    track: DriverTrack,
    next_ingest: Instant,
    last_heard: Instant,
    /// Whether the driver has been told the store is failing (told once per outage).
    told_unavailable: bool,
    /// Online for offers (the driver's last `availability`).
    available: bool,
    /// The newest valid position the driver sent.
    last_position: Option<LatLng>,
    /// Last position written to the dispatch store, and when.
    dispatched_position: Option<(GridCell, Instant)>,
    /// A position in a new cell waiting for [`POSITION_MIN_INTERVAL`]; newer ones replace it.
    position_due: Option<LatLng>,
    /// The offer being resent until acknowledged (boxed: rare, and every connected driver
    /// holds the field).
    unacked: Option<Box<Unacked>>,
    refused: RefusedRun,
}

impl DriverSession {
    fn new(driver: Id, state: AppState) -> Self {
        let now = Instant::now();
        Self {
            driver,
            state,
            last_ts: None,
            pending: None,
            track: DriverTrack::default(),
            next_ingest: now,
            last_heard: now,
            told_unavailable: false,
            available: false,
            last_position: None,
            dispatched_position: None,
            position_due: None,
            unacked: None,
            refused: RefusedRun::default(),
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let _open = GaugeGuard::new(&self.state.metrics, |m| &m.driver_connections);
        let _drain = self.state.drain.tracker().token();
        let shutdown = self.state.drain.token().clone();
        // Boxed, like every other await here: the session's future is memory of every connected
        // driver, and a Redis round trip's future would make it kilobytes larger.
        let registered = Box::pin(self.state.dispatcher.post().register(&self.driver)).await;
        let (_registration, inbox) = match registered {
            Ok((registration, inbox)) => (Some(registration), Some(inbox)),
            Err(error) => {
                // Still a working location socket; its stored offer reaches it on reconnect.
                tracing::warn!(driver.id = %self.driver, %error, "driver not registered for offers");
                (None, None)
            }
        };
        Box::pin(self.resume(&mut socket)).await;
        // One timer for every deadline (next ping, next coalesced ingest, next offer resend),
        // reset as they move: every connected driver holds this future, so each timer is
        // memory per driver.
        let mut next_ping = Instant::now() + self.state.config.ws_ping;
        let timer = tokio::time::sleep_until(next_ping);
        let mut timer = std::pin::pin!(timer);
        // Made once and polled on every turn: making them per turn registered and unregistered
        // a waiter on the drain token and the inbox for every frame a driver sends.
        let mut draining = std::pin::pin!(shutdown.cancelled());
        let mut posted = std::pin::pin!(next_posted(inbox.as_deref()));
        tracing::debug!("driver connected");
        let close = loop {
            let mut deadline = match self.pending {
                Some(_) => next_ping.min(self.next_ingest),
                None => next_ping,
            };
            if let Some(unacked) = &self.unacked {
                deadline = deadline.min(unacked.resend_at);
            }
            if let Some(write_at) = self.position_write_at() {
                deadline = deadline.min(write_at);
            }
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let next = tokio::select! {
                () = &mut draining => Next::Close(close_code::RESTART, "server restarting; reconnect"),
                frame = socket.recv() => match frame {
                    None | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(message)) => {
                        self.last_heard = Instant::now();
                        Box::pin(self.on_message(message, &mut socket)).await
                    }
                    Some(Err(error)) => break transport_close(&error),
                },
                parcel = &mut posted => {
                    posted.set(next_posted(inbox.as_deref()));
                    match parcel {
                        Posted::Frame(frame) => Box::pin(self.on_post(frame, &mut socket)).await,
                        // Frames may have been lost on the way: the store knows what is pending.
                        Posted::LookUpOffer => Box::pin(self.look_up_offer(&mut socket, Acknowledged::Skip)).await,
                    }
                },
                () = timer.as_mut() => {
                    let now = Instant::now();
                    if self.pending.is_some() && now >= self.next_ingest {
                        Box::pin(self.ingest_pending(&mut socket)).await;
                    }
                    if self.unacked.as_ref().is_some_and(|unacked| now >= unacked.resend_at) {
                        Box::pin(self.resend(&mut socket)).await;
                    }
                    if self.position_write_at().is_some_and(|write_at| now >= write_at) {
                        Box::pin(self.write_due_position()).await;
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
        // A position still waiting for its second is the driver's last: dispatch gets it.
        Box::pin(self.write_due_position()).await;
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
            if let Err(error) = self.state.dispatcher.post().refresh(&self.driver).await {
                tracing::warn!(driver.id = %self.driver, %error, "driver registration not refreshed");
            }
            Next::Continue
        }
    }

    /// On connect, where the driver left off on any instance: online for offers if it said so
    /// (its positions then feed dispatch without a new `availability`), and the offer it holds,
    /// if any, again (same id; its app de-duplicates).
    async fn resume(&mut self, socket: &mut WebSocket) {
        match self.state.dispatcher.store().is_available(&self.driver).await {
            Ok(available) => self.available = available,
            Err(error) => tracing::warn!(driver.id = %self.driver, %error, "availability not looked up"),
        }
        let _ = self.look_up_offer(socket, Acknowledged::SendAgain).await;
    }

    /// Sends the driver's stored pending offer unless this session is resending it already (or
    /// it was acknowledged and `acknowledged` says to skip it); with none pending, stops
    /// resending whatever ended meanwhile.
    async fn look_up_offer(&mut self, socket: &mut WebSocket, acknowledged: Acknowledged) -> Next {
        match self.state.dispatcher.store().current_offer(&self.driver).await {
            Ok(Some((offer, acked))) => {
                if self.unacked.as_ref().is_some_and(|unacked| unacked.offer_id == offer.offer_id)
                    || (acked && acknowledged == Acknowledged::Skip)
                {
                    return Next::Continue;
                }
                let frame = offer.frame();
                if !acked {
                    self.unacked = Some(Unacked::boxed(frame.clone(), offer.offer_id, self.resend_interval()));
                }
                self.send(socket, &frame).await
            }
            Ok(None) => {
                self.unacked = None;
                Next::Continue
            }
            Err(error) => {
                tracing::warn!(driver.id = %self.driver, %error, "pending offer not looked up");
                Next::Continue
            }
        }
    }

    fn resend_interval(&self) -> std::time::Duration {
        self.state.dispatcher.resend_interval()
    }

    /// A frame from the post: an offer (resent until acknowledged) or an offer's result.
    async fn on_post(&mut self, frame: ServerMessage, socket: &mut WebSocket) -> Next {
        match &frame {
            ServerMessage::Offer { offer_id, .. } => {
                self.unacked = Some(Unacked::boxed(frame.clone(), offer_id.clone(), self.resend_interval()));
            }
            ServerMessage::OfferResult { offer_id, .. } => self.settle(offer_id),
            ServerMessage::RideProgressResult { .. } | ServerMessage::Error { .. } => {}
        }
        self.send(socket, &frame).await
    }

    /// Sends the unacknowledged offer again, unless it has expired meanwhile.
    async fn resend(&mut self, socket: &mut WebSocket) {
        let Some(unacked) = self.unacked.take() else { return };
        let Unacked { frame, offer_id, .. } = *unacked;
        if let ServerMessage::Offer { expires_at, .. } = &frame
            && *expires_at <= clock::now_ms()
        {
            return;
        }
        let _ = self.send(socket, &frame).await;
        self.unacked = Some(Unacked::boxed(frame, offer_id, self.resend_interval()));
    }

    /// Stops resending `offer_id`.
    fn settle(&mut self, offer_id: &str) {
        if self.unacked.as_ref().is_some_and(|unacked| unacked.offer_id == offer_id) {
            self.unacked = None;
        }
    }

    async fn send(&self, socket: &mut WebSocket, frame: &ServerMessage) -> Next {
        match socket.send(Message::Text(frame.to_json().into())).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::Close(close_code::ERROR, "send failed"),
        }
    }

    async fn on_message(&mut self, message: Message, socket: &mut WebSocket) -> Next {
        let text = match incoming(message) {
            Incoming::Text(text) => text,
            Incoming::Control => return Next::Continue,
            Incoming::Refused { code, message, then } => {
                let answered = self.reject(socket, code, message).await;
                return if then == Next::Continue { answered } else { then };
            }
        };
        let frame = match parse_driver_message(&text) {
            Ok(frame) => frame,
            Err(error) => return self.reject(socket, error.code(), error.to_string()).await,
        };
        if !matches!(frame, DriverMessage::Location(_)) {
            // The driver's allowance on this instance, not this socket's: reconnecting does not refill it.
            if self.state.driver_allowances.take(&self.driver, Instant::now()).is_ok() {
                self.refused.clear();
            } else {
                let flooding = self.refused.add();
                let message = self
                    .state
                    .config
                    .driver_rate
                    .refusal("availability, offer and ride frames", "this one was dropped");
                let next = self.reject(socket, ErrorCode::RateLimited, message).await;
                return if flooding { FLOODING } else { next };
            }
        }
        match frame {
            DriverMessage::Location(report) => self.on_location(report, socket).await,
            DriverMessage::Availability { available } => self.on_availability(available, socket).await,
            DriverMessage::OfferAck { offer_id } => {
                self.settle(&offer_id);
                let reply = self.state.dispatcher.ack(&self.driver, &offer_id).await;
                self.answer(reply, socket).await
            }
            DriverMessage::Accept { offer_id } => {
                self.settle(&offer_id);
                let reply = self.state.dispatcher.accept(&self.driver, &offer_id).await;
                self.answer(reply, socket).await
            }
            DriverMessage::Reject { offer_id } => {
                self.settle(&offer_id);
                let reply = self.state.dispatcher.reject(&self.driver, &offer_id).await;
                self.answer(reply, socket).await
            }
            DriverMessage::RideProgress { ride_id, status } => {
                // The parser checked the id rule; a failure here would be a parser bug.
                let Ok(ride) = Id::parse(&ride_id) else {
                    return self.reject(socket, ErrorCode::InvalidId, format!("rideId {ride_id:?} is not an id")).await;
                };
                let reply = self.state.dispatcher.ride_progress(&self.driver, &ride, status).await;
                self.answer(reply, socket).await
            }
        }
    }

    /// Sends the dispatcher's reply, or an `unavailable` error when a store failed.
    async fn answer(&self, reply: Result<Option<ServerMessage>, BackendError>, socket: &mut WebSocket) -> Next {
        match reply {
            Ok(Some(frame)) => self.send(socket, &frame).await,
            Ok(None) => Next::Continue,
            Err(error) => {
                tracing::warn!(driver.id = %self.driver, %error, "offer answer or ride step not processed");
                let message = "offers and ride steps cannot be processed right now; try again";
                self.reject(socket, ErrorCode::Unavailable, message.into()).await
            }
        }
    }

    async fn on_availability(&mut self, available: bool, socket: &mut WebSocket) -> Next {
        self.available = available;
        // A driver going online is placed at once (availability frames are rate limited).
        self.dispatched_position = None;
        self.position_due = None;
        let store = self.state.dispatcher.store();
        let mut result = store.set_available(&self.driver, available, clock::now_ms()).await;
        // A driver going online is placed at once if its position is known.
        if result.is_ok()
            && available
            && let Some(report) = self.last_position
        {
            result = self.dispatch_position(report).await;
        }
        match result {
            Ok(()) => Next::Continue,
            Err(error) => {
                tracing::warn!(driver.id = %self.driver, %error, "availability not stored");
                self.reject(
                    socket,
                    ErrorCode::Unavailable,
                    "availability cannot be stored right now; send it again".into(),
                )
                .await
            }
        }
    }

    /// Writes an online driver's position to the dispatch store when its cell changed or the
    /// last write is getting old, at most once per [`POSITION_MIN_INTERVAL`]: sooner, it waits
    /// (newest wins) for the session's timer.
    async fn dispatch_position(&mut self, at: LatLng) -> Result<(), BackendError> {
        let cell = GridCell::of(at.lat, at.lng);
        let due =
            self.dispatched_position.is_none_or(|(last, when)| last != cell || when.elapsed() >= POSITION_REFRESH);
        if !due {
            // Back in the stored cell: nothing is left to write.
            self.position_due = None;
            return Ok(());
        }
        if self.dispatched_position.is_some_and(|(_, when)| when.elapsed() < POSITION_MIN_INTERVAL) {
            self.position_due = Some(at);
            return Ok(());
        }
        self.position_due = None;
        self.state.dispatcher.store().set_position(&self.driver, at, clock::now_ms()).await?;
        Metrics::inc(&self.state.metrics.values().dispatch_position_writes_total);
        self.dispatched_position = Some((cell, Instant::now()));
        Ok(())
    }

    /// When the position waiting for its write may be written, if one waits.
    fn position_write_at(&self) -> Option<Instant> {
        self.position_due?;
        Some(self.dispatched_position.map_or_else(Instant::now, |(_, when)| when + POSITION_MIN_INTERVAL))
    }

    /// Writes the position that waited for [`POSITION_MIN_INTERVAL`] (the driver's last one
    /// must reach dispatch even when no frame follows it).
    async fn write_due_position(&mut self) {
        let Some(at) = self.position_due.take() else { return };
        if !self.available {
            return;
        }
        self.dispatched_position = None;
        if let Err(error) = self.dispatch_position(at).await {
            tracing::warn!(driver.id = %self.driver, %error, "position not given to dispatch");
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
        let at = LatLng { lat: report.lat, lng: report.lng };
        if self.pending.replace(report).is_some() {
            Metrics::inc(&metrics.updates_coalesced_total);
        }
        self.last_position = Some(at);
        if self.available
            && let Err(error) = self.dispatch_position(at).await
        {
            tracing::warn!(driver.id = %self.driver, %error, "position not given to dispatch");
        }
        if Instant::now() >= self.next_ingest {
            self.ingest_pending(socket).await;
        }
        Next::Continue
    }

    async fn ingest_pending(&mut self, socket: &mut WebSocket) {
        let Some(report) = self.pending.take() else { return };
        self.next_ingest = Instant::now() + self.state.config.ingest_interval;
        match self.state.ingestor.ingest(&self.driver, report, &mut self.track).await {
            Ok(()) => self.told_unavailable = false,
            Err(StoreUnavailable) => {
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
        self.send(socket, &ServerMessage::error(code, message)).await
    }
}

/// The next frame from the post, or never for a session that is not registered.
/// Whether a looked-up offer the driver already acknowledged is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acknowledged {
    /// On connect: the app may have lost it with the old connection.
    SendAgain,
    /// While connected: this session delivered it.
    Skip,
}

async fn next_posted(inbox: Option<&Mailbox>) -> Posted {
    match inbox {
        Some(inbox) => inbox.next().await,
        None => std::future::pending().await,
    }
}
