//! Ride chat, `GET /ws/chat/{rideId}`, through tokio-tungstenite (a real WebSocket client), and
//! [`AssignedRide`]: a ride requested, offered and accepted the way the apps do it, so that it
//! has a rider and an assigned driver to chat.
//!
//! Every frame the server sends is checked against the contract's shape as it is read: a
//! `message` has exactly `type`, `id`, `from`, `text`, `ts` and `clientMsgId`; a `typing` has
//! `type` and `from`; an `error` has `type`, `code` and `message`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ridecast_protocol::ErrorCode;
use ridecast_protocol::chat::{ChatMessage, ChatRole, ChatServerFrame};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::driver::{DriverSocket, Ending, Fix, Refusal, error_frame};
use crate::http::{Auth, ErrorAnswer, error_body, post_json};
use crate::origin::Origin;
use crate::rider::{RiderStream, wait_until_stored};
use crate::tokens::{driver_token, rider_token, rider_token_without_drv};
use crate::wait::{EXPECT, now_ms};

/// The contract's frame limit, on every WebSocket.
pub const MAX_FRAME: usize = 4 * 1024;

/// The contract's longest chat text, in Unicode characters.
pub const MAX_TEXT_CHARS: usize = 1000;

/// How far a message's `ts` may lie outside the moments around its sending: the origins run on
/// this machine's clock, so this only absorbs a clock step, not a slow machine.
const TS_SLACK_MS: u64 = 1_000;

/// The keys of each server frame, sorted, as the contract lists them.
const MESSAGE_KEYS: [&str; 6] = ["clientMsgId", "from", "id", "text", "ts", "type"];
const TYPING_KEYS: [&str; 2] = ["from", "type"];
const ERROR_KEYS: [&str; 3] = ["code", "message", "type"];

/// `/ws/chat/{ride}`, with `?since=<since>` when given (`since` is put in as it is, so a test
/// can send malformed or already percent-encoded values).
pub fn chat_path(ride: &str, since: Option<&str>) -> String {
    match since {
        Some(since) => format!("/ws/chat/{ride}?since={since}"),
        None => format!("/ws/chat/{ride}"),
    }
}

/// The participant-to-server message frame, `{"type":"message","clientMsgId":..,"text":..}`.
pub fn message_frame(client_msg_id: &str, text: &str) -> String {
    json!({ "type": "message", "clientMsgId": client_msg_id, "text": text }).to_string()
}

/// What the socket produced next: a text frame, or its end.
#[derive(Debug)]
pub enum Next {
    Text(String),
    Ended(Ending),
}

/// An open chat WebSocket of one participant.
#[derive(Debug)]
pub struct ChatSocket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl ChatSocket {
    /// Opens `origin`'s chat of `ride` with `Authorization: Bearer <token>`, resuming after
    /// `since` when given.
    ///
    /// # Panics
    /// If the upgrade is refused.
    pub async fn connect(origin: &Origin, ride: &str, token: &str, since: Option<&str>) -> Self {
        match Self::try_connect(origin, ride, Auth::Bearer(token), since).await {
            Ok(socket) => socket,
            Err(refusal) => panic!(
                "chat WebSocket {} refused with HTTP {}: {}",
                chat_path(ride, since),
                refusal.status,
                refusal.body
            ),
        }
    }

    /// Opens the chat of `ride`, returning the HTTP answer if the server refuses the upgrade.
    ///
    /// # Panics
    /// On transport failures other than a refusal (the origin not listening, a bad handshake).
    pub async fn try_connect(
        origin: &Origin,
        ride: &str,
        auth: Auth<'_>,
        since: Option<&str>,
    ) -> Result<Self, Refusal> {
        let url = auth.apply_to_url(&origin.ws_url(&chat_path(ride, since)));
        let mut request = url.as_str().into_client_request().expect("a valid ws:// URL");
        if let Some(value) = auth.header() {
            let value = HeaderValue::from_str(&value).expect("token is header-safe");
            request.headers_mut().insert("authorization", value);
        }
        match tokio::time::timeout(EXPECT, tokio_tungstenite::connect_async(request)).await {
            Ok(Ok((ws, _response))) => Ok(Self { ws }),
            Ok(Err(WsError::Http(response))) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
                Err(Refusal { status, body })
            }
            Ok(Err(e)) => panic!("chat WebSocket handshake with {} failed: {e}", origin.addr()),
            Err(_) => panic!("chat WebSocket handshake with {} took longer than {EXPECT:?}", origin.addr()),
        }
    }

    /// Asserts that opening the chat of `ride` is refused before the upgrade with `status` and
    /// the contract's error body, and returns that error.
    ///
    /// # Panics
    /// If the upgrade succeeds, or the status or body differ.
    pub async fn expect_refused(
        origin: &Origin,
        ride: &str,
        auth: Auth<'_>,
        since: Option<&str>,
        status: u16,
        what: &str,
    ) -> ErrorAnswer {
        match Self::try_connect(origin, ride, auth, since).await {
            Ok(_) => panic!("{what}: the chat WebSocket was upgraded; expected HTTP {status} before any upgrade"),
            Err(refusal) => {
                assert_eq!(refusal.status, status, "{what}: expected HTTP {status}; body {}", refusal.body);
                error_body(&refusal.body, status, what)
            }
        }
    }

    /// Sends `{"type":"message","clientMsgId":..,"text":..}`.
    pub async fn send_message(&mut self, client_msg_id: &str, text: &str) {
        self.send_raw(message_frame(client_msg_id, text)).await;
    }

    /// Sends `{"type":"typing"}`.
    pub async fn send_typing(&mut self) {
        self.send_raw(json!({ "type": "typing" }).to_string()).await;
    }

    /// Sends any text frame.
    ///
    /// # Panics
    /// If the socket is already closed.
    pub async fn send_raw(&mut self, text: impl Into<String>) {
        if let Err(e) = self.try_send_raw(text).await {
            panic!("sending a frame on the chat socket failed: {e}");
        }
    }

    /// Sends any text frame, saying why it could not be sent (the server closed the socket).
    ///
    /// # Errors
    /// The client's error when the frame cannot be written.
    pub async fn try_send_raw(&mut self, text: impl Into<String>) -> Result<(), WsError> {
        self.ws.send(Message::Text(text.into().into())).await
    }

    /// Sends a message and returns its echo, which must be the next frame: the sender's
    /// acknowledgement, with the server's `id` and a `ts` taken while it was on its way.
    ///
    /// # Panics
    /// If anything else comes next, or the echo differs from what was sent.
    pub async fn say(&mut self, client_msg_id: &str, text: &str) -> ChatMessage {
        let before = now_ms();
        self.send_message(client_msg_id, text).await;
        let echo = self.next_message(&format!("the echo of {client_msg_id:?}")).await;
        let after = now_ms();
        assert_eq!(
            (echo.client_msg_id.as_str(), echo.text.as_str()),
            (client_msg_id, text),
            "the echo carries the clientMsgId and text sent: {echo:?}"
        );
        assert!(
            echo.ts + TS_SLACK_MS >= before && echo.ts <= after + TS_SLACK_MS,
            "the echo's ts {} is the epoch ms of its storing, between {before} and {after}",
            echo.ts
        );
        echo
    }

    /// [`ChatSocket::say`] as the app says it while the store may be briefly away (a Redis
    /// failover): on `unavailable`, the same message again with the same `clientMsgId` (the
    /// contract's retry, stored once however often it is sent), until it is echoed. Returns
    /// the echo and how many `unavailable` answers came first.
    ///
    /// # Panics
    /// If anything but `unavailable` or the echo comes, or no echo within twice [`EXPECT`].
    pub async fn say_retrying(&mut self, client_msg_id: &str, text: &str) -> (ChatMessage, usize) {
        let deadline = tokio::time::Instant::now() + EXPECT * 2;
        let mut refused = 0;
        loop {
            self.send_message(client_msg_id, text).await;
            match self.next_server_frame(&format!("the echo of {client_msg_id:?}")).await {
                ChatServerFrame::Message(echo) => {
                    assert_eq!(
                        (echo.client_msg_id.as_str(), echo.text.as_str()),
                        (client_msg_id, text),
                        "the echo carries the clientMsgId and text sent: {echo:?}"
                    );
                    return (echo, refused);
                }
                ChatServerFrame::Error { code: ErrorCode::Unavailable, .. } => refused += 1,
                other => panic!("expected the echo of {client_msg_id:?} or unavailable, got {other:?}"),
            }
            assert!(tokio::time::Instant::now() < deadline, "{client_msg_id:?} was never stored");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The next text frame or the socket's end; pings and pongs are skipped (and answered).
    ///
    /// # Panics
    /// If nothing happens within `limit`, or a binary frame arrives.
    pub async fn next(&mut self, limit: Duration, what: &str) -> Next {
        match tokio::time::timeout(limit, self.next_whenever(what)).await {
            Ok(next) => next,
            Err(_) => panic!("timed out after {limit:?} on the chat socket waiting for {what}"),
        }
    }

    /// [`ChatSocket::next`] without a bound, for callers that bound it themselves.
    async fn next_whenever(&mut self, what: &str) -> Next {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Text(text))) => return Next::Text(text.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => return Next::Ended(Ending::Closed(frame.map(|f| f.code.into()))),
                Some(Ok(other)) => panic!("unexpected frame on the chat socket ({what}): {other:?}"),
                Some(Err(e)) => return Next::Ended(Ending::Dropped(e.to_string())),
                None => return Next::Ended(Ending::Dropped("stream ended without a close frame".to_owned())),
            }
        }
    }

    /// The next text frame as JSON (shape not checked).
    ///
    /// # Panics
    /// If none arrives within [`EXPECT`], the socket ends first, or it is not JSON.
    pub async fn next_frame(&mut self, what: &str) -> Value {
        let text = self.next_text(EXPECT, what).await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: the chat frame is not JSON ({e}): {text}"))
    }

    /// The next frame, checked against the contract and typed.
    ///
    /// # Panics
    /// If none arrives within [`EXPECT`], the socket ends first, or the frame has another shape.
    pub async fn next_server_frame(&mut self, what: &str) -> ChatServerFrame {
        let text = self.next_text(EXPECT, what).await;
        parse_server_frame(&text, what)
    }

    /// The next frame, which must be a `message`.
    ///
    /// # Panics
    /// If none arrives within [`EXPECT`], or another frame comes first.
    pub async fn next_message(&mut self, what: &str) -> ChatMessage {
        match self.next_server_frame(what).await {
            ChatServerFrame::Message(message) => message,
            other => panic!("expected a message ({what}), got {other:?}"),
        }
    }

    /// The next message, after any `unavailable` errors (the store briefly away: the message
    /// arrives once it is back); returns it and how many such errors came first.
    ///
    /// # Panics
    /// If anything else comes, or no message within [`EXPECT`] of the last frame.
    pub async fn next_message_through_outage(&mut self, what: &str) -> (ChatMessage, usize) {
        let mut unavailable = 0;
        loop {
            match self.next_server_frame(what).await {
                ChatServerFrame::Message(message) => return (message, unavailable),
                ChatServerFrame::Error { code: ErrorCode::Unavailable, .. } => unavailable += 1,
                other => panic!("expected a message ({what}), got {other:?}"),
            }
        }
    }

    /// The next `n` frames, which must all be messages.
    ///
    /// # Panics
    /// As [`ChatSocket::next_message`].
    pub async fn next_messages(&mut self, n: usize, what: &str) -> Vec<ChatMessage> {
        let mut messages = Vec::with_capacity(n);
        for k in 0..n {
            messages.push(self.next_message(&format!("message {} of {n}: {what}", k + 1)).await);
        }
        messages
    }

    /// The next frame, which must be exactly `{"type":"typing","from":"<from>"}`.
    ///
    /// # Panics
    /// If none arrives within [`EXPECT`], or it is anything else.
    pub async fn expect_typing(&mut self, from: ChatRole, what: &str) {
        let text = self.next_text(EXPECT, what).await;
        let frame: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: the chat frame is not JSON ({e}): {text}"));
        assert_eq!(frame, json!({ "type": "typing", "from": from.as_str() }), "{what}");
    }

    /// Sends `typing` until `to` has it, at most once a second (the origin's relay rate): typing
    /// is best effort, relayed and never stored, so one sent before the other side's room was
    /// listening (a socket that just opened) is simply gone.
    ///
    /// # Panics
    /// If `to` gets something else, or nothing within twice [`EXPECT`].
    pub async fn type_until_seen(&mut self, to: &mut ChatSocket, from: ChatRole, what: &str) {
        let deadline = tokio::time::Instant::now() + EXPECT * 2;
        loop {
            self.send_typing().await;
            if tokio::time::timeout(Duration::from_millis(1_100), to.expect_typing(from, what)).await.is_ok() {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: never arrived");
        }
    }

    /// The next frame, which must be `{"type":"error","code":"<code>","message":..}`.
    ///
    /// # Panics
    /// If none arrives within [`EXPECT`], it has another shape or another code.
    pub async fn expect_error(&mut self, code: &str, after: &str) -> ErrorAnswer {
        let text = self.next_text(EXPECT, &format!("an error frame after {after}")).await;
        let answer = error_frame(&text, after);
        assert_eq!(answer.code, code, "the error frame after {after}: {text}");
        assert_keys(&text, &ERROR_KEYS, after);
        answer
    }

    /// Asserts that nothing but pings arrives for `quiet` and the socket stays open.
    ///
    /// # Panics
    /// If a frame arrives or the socket ends meanwhile.
    pub async fn expect_quiet(&mut self, quiet: Duration, why: &str) {
        if let Ok(next) = tokio::time::timeout(quiet, self.next_whenever(why)).await {
            match next {
                Next::Text(text) => panic!("expected nothing on the chat socket for {quiet:?} ({why}), got {text}"),
                Next::Ended(ending) => panic!("the chat socket ended during a quiet period ({why}): {ending:?}"),
            }
        }
    }

    /// Reads until the socket ends and says how; text frames before the end are returned too.
    ///
    /// # Panics
    /// If the socket is still open after `limit`.
    pub async fn expect_end(&mut self, limit: Duration, what: &str) -> (Vec<Value>, Ending) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.next_whenever(what)).await {
                Ok(Next::Text(text)) => frames.push(
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: a frame is not JSON ({e}): {text}")),
                ),
                Ok(Next::Ended(ending)) => return (frames, ending),
                Err(_) => panic!("the chat socket is still open after {limit:?}; expected it to end: {what}"),
            }
        }
    }

    /// Closes the socket from the client's side, as an app going away does.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    async fn next_text(&mut self, limit: Duration, what: &str) -> String {
        match self.next(limit, what).await {
            Next::Text(text) => text,
            Next::Ended(ending) => panic!("the chat socket ended ({ending:?}) while waiting for {what}"),
        }
    }
}

/// Parses one server frame, checking that it has exactly the contract's fields.
///
/// # Panics
/// If it is not JSON, has an unknown `type`, or its fields differ from the contract's.
pub fn parse_server_frame(text: &str, what: &str) -> ChatServerFrame {
    let value: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: the chat frame is not JSON ({e}): {text}"));
    match value.get("type").and_then(Value::as_str) {
        Some("message") => assert_keys(text, &MESSAGE_KEYS, what),
        Some("typing") => assert_keys(text, &TYPING_KEYS, what),
        Some("error") => {
            error_frame(text, what);
            assert_keys(text, &ERROR_KEYS, what);
        }
        other => panic!("{what}: a chat frame's type is message, typing or error, got {other:?}: {text}"),
    }
    let frame: ChatServerFrame =
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{what}: not a contract chat frame ({e}): {text}"));
    if let ChatServerFrame::Message(message) = &frame {
        assert!(!message.id.is_empty(), "{what}: a message carries the server's id: {text}");
        assert!(message.ts > 0, "{what}: a message's ts is epoch ms: {text}");
    }
    frame
}

fn assert_keys(text: &str, expected: &[&str], what: &str) {
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    let object = value.as_object().unwrap_or_else(|| panic!("{what}: a chat frame is a JSON object: {text}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, expected, "{what}: the frame has exactly the contract's fields: {text}");
}

/// Where every [`AssignedRide`] is picked up, and where it goes.
pub const PICKUP: (f64, f64) = (37.7749, -122.4194);
pub const DROPOFF: (f64, f64) = (37.8044, -122.2712);

/// Where the driver waits: about 100 m north of [`PICKUP`], well within any match radius.
const DRIVER_WAITS_AT: (f64, f64) = (PICKUP.0 + 100.0 / 111_195.0, PICKUP.1);

/// A ride with a rider and an assigned driver, made the way the apps make one: the driver goes
/// online near the pickup, the rider requests the ride (`POST /api/rides`), the driver gets the
/// offer and accepts it, and the ride's status stream shows `driver_assigned`.
#[derive(Debug)]
pub struct AssignedRide {
    pub ride_id: String,
    /// The rider who requested it (the creator's `sub`).
    pub rider: String,
    /// The creator's own token (no `ride` claim), which the ride was requested with.
    pub rider_token: String,
    /// The ride-scoped rider token `POST /api/rides` answered with.
    pub ride_token: String,
    /// The assigned driver's id (its token's `sub`).
    pub driver: String,
    pub driver_token: String,
    /// The driver's `/ws/rides` socket, kept open for the ride's life.
    pub driver_socket: DriverSocket,
    /// The `trackingToken` of the ride's `driver_assigned` status (`drv` and `ride` claims): it
    /// opens the driver's position while the ride is under way, and no ride.
    pub tracking_token: String,
}

impl AssignedRide {
    /// Makes a ride requested by `rider` on `rider_origin` and accepted by `driver`, who is
    /// online on `driver_origin`. Any driver already on a ride gets no offer, so several rides can
    /// be made one after another with a new driver each.
    ///
    /// # Panics
    /// If any step does not go as the contract says.
    pub async fn start(rider_origin: &Origin, driver_origin: &Origin, rider: &str, driver: &str) -> Self {
        let driver_token = driver_token(driver);
        let mut driver_socket = DriverSocket::connect(driver_origin, &driver_token).await;
        driver_socket.send_text(json!({ "type": "availability", "available": true }).to_string()).await;
        let fix = Fix::at(DRIVER_WAITS_AT, now_ms());
        driver_socket.send_location(fix).await;
        // Availability and position reach dispatch in order before the position is stored.
        let probe = rider_token("r-probe", driver);
        wait_until_stored(driver_origin, driver, &probe, &fix, "the driver's position near the pickup").await;

        let rider_token = rider_token_without_drv(rider);
        let body = json!({
            "pickup": { "lat": PICKUP.0, "lng": PICKUP.1 },
            "dropoff": { "lat": DROPOFF.0, "lng": DROPOFF.1 },
        });
        let response = post_json(&rider_origin.url("/api/rides"), Auth::Bearer(&rider_token), body.to_string()).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 201, "POST /api/rides for a ride to chat on: {text}");
        let created: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST /api/rides: not JSON ({e})"));
        let ride_id = created["rideId"].as_str().unwrap_or_else(|| panic!("no rideId in {text}")).to_owned();
        let ride_token = created["token"].as_str().unwrap_or_else(|| panic!("no token in {text}")).to_owned();

        // Offers of other rides may come first; they are skipped like resent ones.
        let of_this_ride = |frame: &Value| frame["type"] == "offer" && frame["rideId"] == ride_id.as_str();
        let offer = driver_socket.next_frame_where(EXPECT * 2, "the offer of the ride", of_this_ride).await;
        let offer_id = offer["offerId"].clone();
        driver_socket.send_text(json!({ "type": "offer_ack", "offerId": offer_id }).to_string()).await;
        driver_socket.send_text(json!({ "type": "accept", "offerId": offer_id }).to_string()).await;
        let result = driver_socket.next_frame_of("offer_result", EXPECT * 2, "the accept's result").await;
        assert_eq!(result["offerId"], offer_id, "the result of the accepted offer: {result}");
        assert_eq!(result["result"], "confirmed", "the driver won the ride: {result}");

        // The rider's instance shows the assignment: from here on the ride names its driver.
        let path = format!("/api/sse/rides/{ride_id}");
        let mut stream = RiderStream::open_with(rider_origin, &path, Auth::Bearer(&ride_token), None).await;
        let tracking_token = loop {
            let event = stream.next_event(EXPECT, "the assignment on the ride stream").await;
            let state: Value = serde_json::from_str(&event.data).expect("a ride status is JSON");
            match state["status"].as_str() {
                Some("searching") => continue,
                Some("driver_assigned") => {
                    assert_eq!(state["driverId"], driver, "the ride's driver: {state}");
                    let token = state["trackingToken"].as_str();
                    break token.unwrap_or_else(|| panic!("no trackingToken in {state}")).to_owned();
                }
                _ => panic!("expected the ride to be assigned to {driver}, got {state}"),
            }
        };

        Self {
            ride_id,
            rider: rider.to_owned(),
            rider_token,
            ride_token,
            driver: driver.to_owned(),
            driver_token,
            driver_socket,
            tracking_token,
        }
    }
}
