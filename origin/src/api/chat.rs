//! `GET /ws/chat/{rideId}`: one participant's chat socket.
//!
//! Who may connect is decided before the upgrade, in the contract's order: the token (401), the
//! ride id and `since` (400), the role (403), the ride (404), the ride's rider or assigned driver
//! (403). Then the session sends the history after `since` and, from then on, every message in
//! the ride's order, each exactly once: it keeps the id of the last message it sent and, whenever
//! it is woken (a notice, its own message stored, a ping), sends what the store holds after it.
//!
//! Once the ride has ended (`completed`, `cancelled`, `no_driver`, or expired from the store) a
//! new message is refused with a `ride_ended` error frame; connecting still sends the history,
//! for as long as the chat store keeps it.
//!
//! A bad frame gets an error frame and the socket lives on; only abuse closes it: a frame over
//! 4 KiB (1009), a long run of refused messages (1008), silence past the idle limit (1008).

use std::time::Duration;

use axum::{
    Extension,
    extract::{
        RawQuery, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code, rejection::WebSocketUpgradeRejection},
    },
    response::Response,
};
use ridecast_protocol::{
    ErrorCode, Id, Role,
    chat::{ChatClientFrame, ChatRole, ChatServerFrame, MessageId, parse_chat_frame},
};
use tokio::time::Instant;
use tracing::Instrument;

use crate::fanout::chat_rooms::{RoomEvent, Seat};
use crate::{
    api::{
        error::ApiError,
        extract::RidePath,
        front::ConnectionSlot,
        state::AppState,
        websocket::{self, FLOODING, Incoming, Next, TRANSPORT_FRAME_LIMIT, incoming, transport_close},
    },
    auth::{AuthError, Principal},
    base::metrics::GaugeGuard,
    limits::{RefusedRun, token_streams::StreamKey},
};

/// Messages read from the store at once (history on connect is sent page by page).
const HISTORY_PAGE: usize = 100;

/// Typing notices relayed per participant socket at most this often; more are dropped quietly
/// (typing indicators only need to be fresh).
const TYPING_INTERVAL: Duration = Duration::from_secs(1);

/// Authorises (before any upgrade: failures are plain HTTP errors) and upgrades. A request that
/// passes and is no upgrade gets a JSON 426 (405 for another method than `GET`).
pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    RidePath(ride_id): RidePath,
    RawQuery(query): RawQuery,
    key: StreamKey,
    slot: Option<Extension<ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let since = since(query.as_deref())?;
    if !matches!(principal.claims.role, Role::Rider | Role::Driver) {
        let actual = principal.claims.role.as_str();
        return Err(AuthError::WrongRole { needed: "rider or driver", actual }.into());
    }
    if state.drain.is_draining() {
        return Err(ApiError::Unavailable("the instance is draining"));
    }
    let ride = state.rides.get(&ride_id).await?.ok_or_else(|| ApiError::NotFound(format!("no ride {ride_id}")))?;
    let role = ride.chat_role(&principal.claims).ok_or_else(|| AuthError::NotInRide(ride_id.clone()))?;
    let ws = ws?;
    let permit = state.token_streams.acquire(key)?;
    // Seated before the upgrade answer: a notice sent once the client sees it is not missed.
    let seat = state.chat.join(&ride_id);
    let span = tracing::debug_span!("chat", ride.id = %ride_id, from = role.as_str());
    Ok(websocket::sized(ws, TRANSPORT_FRAME_LIMIT).on_upgrade(move |socket| async move {
        // The socket keeps its place in the connection limit until it closes.
        let (_slot, _permit) = (slot, permit);
        ChatSession::new(ride_id, role, since, state).run(socket, seat).instrument(span).await;
    }))
}

/// `?since=<messageId>`, if given.
fn since(query: Option<&str>) -> Result<Option<MessageId>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    let Some((_, raw)) = form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "since") else {
        return Ok(None);
    };
    MessageId::parse(&raw).map(Some).ok_or_else(|| ApiError::InvalidMessageId(raw.into_owned()))
}

struct ChatSession {
    ride: Id,
    role: ChatRole,
    state: AppState,
    /// The newest message sent on this socket: the next catch-up starts after it.
    last_sent: Option<MessageId>,
    last_heard: Instant,
    last_typing: Option<Instant>,
    refused: RefusedRun,
    /// Whether the participant has been told the store is failing (told once per outage).
    told_unavailable: bool,
}

impl ChatSession {
    fn new(ride: Id, role: ChatRole, since: Option<MessageId>, state: AppState) -> Self {
        Self {
            ride,
            role,
            state,
            last_sent: since,
            last_heard: Instant::now(),
            last_typing: None,
            refused: RefusedRun::default(),
            told_unavailable: false,
        }
    }

    async fn run(mut self, mut socket: WebSocket, mut seat: Seat) {
        let _open = GaugeGuard::new(&self.state.metrics, |m| &m.chat_connections);
        let _drain = self.state.drain.tracker().token();
        let shutdown = self.state.drain.token().clone();
        // Seated (before the upgrade) before the history is read: whatever is stored after that
        // read wakes the seat.
        let mut ping = tokio::time::interval_at(Instant::now() + self.state.config.ws_ping, self.state.config.ws_ping);
        tracing::debug!("chat participant connected");
        let mut next = self.catch_up(&mut socket).await;
        let close = loop {
            if let Next::Close(code, reason) = next {
                break Some((code, reason));
            }
            next = tokio::select! {
                () = shutdown.cancelled() => Next::Close(close_code::RESTART, "server restarting; reconnect"),
                frame = socket.recv() => match frame {
                    None | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(message)) => {
                        self.last_heard = Instant::now();
                        self.on_message(message, &mut socket).await
                    }
                    Some(Err(error)) => break transport_close(&error),
                },
                event = seat.next() => match event {
                    // Its own message's notice, usually: this socket sent it already.
                    RoomEvent::Stored(Some(id)) if self.last_sent.is_some_and(|last| id <= last) => Next::Continue,
                    RoomEvent::Stored(_) => self.catch_up(&mut socket).await,
                    RoomEvent::Typing(from) if from != self.role => {
                        self.send(&mut socket, &ChatServerFrame::Typing { from }).await
                    }
                    RoomEvent::Typing(_) => Next::Continue,
                },
                _ = ping.tick() => self.ping(&mut socket).await,
            };
        };
        if let Some((code, reason)) = close {
            let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
        }
        tracing::debug!("chat participant disconnected");
    }

    /// Sends every stored message after the last one sent, oldest first.
    async fn catch_up(&mut self, socket: &mut WebSocket) -> Next {
        loop {
            let page = match self.state.chat.history(&self.ride, self.last_sent, HISTORY_PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(ride.id = %self.ride, %error, "chat history not read");
                    if std::mem::replace(&mut self.told_unavailable, true) {
                        return Next::Continue;
                    }
                    let message = "the conversation cannot be read right now; it arrives once the store is back";
                    return self.reject(socket, ErrorCode::Unavailable, message.into()).await;
                }
            };
            self.told_unavailable = false;
            let more = page.len() == HISTORY_PAGE;
            for message in page {
                let Some(id) = MessageId::parse(&message.id) else {
                    tracing::error!(ride.id = %self.ride, id = %message.id, "chat store returned an unreadable id");
                    return Next::Continue;
                };
                if let close @ Next::Close(..) = self.send(socket, &ChatServerFrame::Message(message)).await {
                    return close;
                }
                self.last_sent = Some(id);
            }
            if !more {
                return Next::Continue;
            }
        }
    }

    /// Closes a socket silent past the idle limit, else pings it and catches up (a safety net
    /// for a notice that never came).
    async fn ping(&mut self, socket: &mut WebSocket) -> Next {
        if self.last_heard.elapsed() >= self.state.config.ws_idle {
            return Next::Close(close_code::POLICY, "idle timeout");
        }
        if socket.send(Message::Ping(Default::default())).await.is_err() {
            return Next::Close(close_code::ERROR, "ping failed");
        }
        self.catch_up(socket).await
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
        match parse_chat_frame(&text) {
            Err(invalid) => self.reject(socket, invalid.code(), invalid.to_string()).await,
            Ok(ChatClientFrame::Message { client_msg_id, text }) => self.on_chat(&client_msg_id, &text, socket).await,
            Ok(ChatClientFrame::Typing) => {
                if self.last_typing.is_none_or(|last| last.elapsed() >= TYPING_INTERVAL) {
                    self.last_typing = Some(Instant::now());
                    self.state.chat.typing(&self.ride, self.role).await;
                }
                Next::Continue
            }
        }
    }

    /// Stores a message and acknowledges it with its echo, which comes in the ride's order: the
    /// catch-up after storing sends it together with anything stored before it.
    async fn on_chat(&mut self, client_msg_id: &str, text: &str, socket: &mut WebSocket) -> Next {
        // Read from the ride store each time, so that an end on any instance counts at once.
        // A message racing the end by less than this read's round trip may still be stored.
        match self.state.rides.get(&self.ride).await {
            Ok(Some(ride)) if !ride.status.is_final() => {}
            Ok(ended) => {
                let why = ended.map_or_else(|| "expired".to_owned(), |ride| ride.status.to_string());
                let message = format!("ride {} has ended ({why}); its chat takes no new messages", self.ride);
                return self.reject(socket, ErrorCode::RideEnded, message).await;
            }
            Err(error) => {
                tracing::warn!(ride.id = %self.ride, %error, "ride not read before a chat message");
                let message = "the message could not be stored; send it again with the same clientMsgId";
                return self.reject(socket, ErrorCode::Unavailable, message.into()).await;
            }
        }
        if !self.state.chat.allow_message(&self.ride, self.role) {
            let flooding = self.refused.add();
            let message = self.state.chat.rate().refusal("messages", "this one was not stored, send it again later");
            let next = self.reject(socket, ErrorCode::RateLimited, message).await;
            return if flooding { FLOODING } else { next };
        }
        self.refused.clear();
        let delivered_before = self.last_sent;
        let appended = match self.state.chat.post(&self.ride, self.role, client_msg_id, text).await {
            Ok(appended) => appended,
            Err(error) => {
                tracing::warn!(ride.id = %self.ride, %error, "chat message not stored");
                let message = "the message could not be stored; send it again with the same clientMsgId";
                return self.reject(socket, ErrorCode::Unavailable, message.into()).await;
            }
        };
        if let close @ Next::Close(..) = self.catch_up(socket).await {
            return close;
        }
        // A retry of a message this socket had already delivered: the original again, as the
        // retry's acknowledgement (the other side does not see it again).
        let id = MessageId::parse(&appended.message.id);
        if !appended.new && id.is_some_and(|id| delivered_before.is_some_and(|before| id <= before)) {
            return self.send(socket, &ChatServerFrame::Message(appended.message)).await;
        }
        Next::Continue
    }

    async fn send(&self, socket: &mut WebSocket, frame: &ChatServerFrame) -> Next {
        match socket.send(Message::Text(frame.to_json().into())).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::Close(close_code::ERROR, "send failed"),
        }
    }

    /// Sends an error frame; the socket stays open.
    async fn reject(&self, socket: &mut WebSocket, code: ErrorCode, message: String) -> Next {
        self.send(socket, &ChatServerFrame::error(code, message)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_optional_and_must_be_a_message_id() {
        assert_eq!(since(None).expect("none"), None);
        assert_eq!(since(Some("token=abc")).expect("absent"), None);
        assert_eq!(since(Some("since=1764240000123-4&token=t")).expect("valid"), MessageId::parse("1764240000123-4"));
        for bad in ["since=", "since=abc", "since=1-2-3", "since=-1"] {
            let error = since(Some(bad)).expect_err(bad);
            assert_eq!(error.code(), ErrorCode::InvalidId, "{bad}");
        }
    }
}
