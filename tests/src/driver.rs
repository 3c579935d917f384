//! The driver's side: `GET /ws/rides` through tokio-tungstenite, a real WebSocket client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::http::{Auth, ErrorAnswer, is_snake_case};
use crate::origin::Origin;
use crate::wait::EXPECT;

/// One location report as a driver's app sends it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub lat: f64,
    pub lng: f64,
    pub ts: u64,
    pub heading: Option<f64>,
    pub speed: Option<f64>,
}

impl Fix {
    /// A fix at `(lat, lng)` taken at `ts`, without heading or speed.
    pub fn at((lat, lng): (f64, f64), ts: u64) -> Self {
        Self { lat, lng, ts, heading: None, speed: None }
    }

    /// The same fix with heading (degrees) and speed (m/s).
    pub fn moving(self, heading: f64, speed: f64) -> Self {
        Self { heading: Some(heading), speed: Some(speed), ..self }
    }

    /// The driver-to-server frame: `{"type":"location", ...}`.
    pub fn frame(&self) -> String {
        let mut frame = serde_json::json!({ "type": "location", "lat": self.lat, "lng": self.lng, "ts": self.ts });
        if let Some(heading) = self.heading {
            frame["heading"] = heading.into();
        }
        if let Some(speed) = self.speed {
            frame["speed"] = speed.into();
        }
        frame.to_string()
    }
}

/// An HTTP answer that refused the WebSocket upgrade.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    pub body: String,
}

/// An open driver WebSocket.
#[derive(Debug)]
pub struct DriverSocket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a driver socket ended, as seen by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The server sent a close frame with this code (`None`: a close frame without a code).
    Closed(Option<u16>),
    /// The TCP connection ended without a close frame.
    Dropped(String),
}

impl DriverSocket {
    /// Opens `/ws/rides` with `Authorization: Bearer <token>`.
    ///
    /// # Panics
    /// If the upgrade is refused.
    pub async fn connect(origin: &Origin, token: &str) -> Self {
        match Self::try_connect(origin, Auth::Bearer(token)).await {
            Ok(socket) => socket,
            Err(refusal) => panic!("driver WebSocket refused with HTTP {}: {}", refusal.status, refusal.body),
        }
    }

    /// Opens `/ws/rides`, returning the HTTP answer if the server refuses the upgrade.
    ///
    /// # Panics
    /// On transport failures other than a refusal (the origin not listening, a bad handshake).
    pub async fn try_connect(origin: &Origin, auth: Auth<'_>) -> Result<Self, Refusal> {
        let url = auth.apply_to_url(&origin.ws_url("/ws/rides"));
        let mut request = url.as_str().into_client_request().expect("a valid ws:// URL");
        if let Some(value) = auth.header() {
            let value = HeaderValue::from_str(&value).expect("token is header-safe");
            request.headers_mut().insert("authorization", value);
        }
        let connecting = tokio_tungstenite::connect_async(request);
        match tokio::time::timeout(EXPECT, connecting).await {
            Ok(Ok((ws, _response))) => Ok(Self { ws }),
            Ok(Err(WsError::Http(response))) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
                Err(Refusal { status, body })
            }
            Ok(Err(e)) => panic!("driver WebSocket handshake with {url} failed: {e}"),
            Err(_) => panic!("driver WebSocket handshake with {url} took longer than {EXPECT:?}"),
        }
    }

    /// Sends a location report.
    pub async fn send_location(&mut self, fix: Fix) {
        self.send_text(fix.frame()).await;
    }

    /// Sends a location report, saying why it could not be sent (the connection is gone).
    ///
    /// # Errors
    /// The client's error when the frame cannot be written.
    pub async fn try_send_location(&mut self, fix: Fix) -> Result<(), WsError> {
        self.ws.send(Message::Text(fix.frame().into())).await
    }

    /// Drops the connection without a close handshake, and with `SO_LINGER` 0 so that the
    /// kernel answers with a RST instead of the orderly FIN, as when an app is killed.
    pub fn reset(self) {
        if let MaybeTlsStream::Plain(tcp) = self.ws.get_ref() {
            let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
        }
    }

    /// Sends any text frame.
    ///
    /// # Panics
    /// If the socket is already closed.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::Text(text.into().into())).await.expect("sending a frame on the driver socket");
    }

    /// The next text frame from the server; pings and pongs are skipped (and answered).
    ///
    /// # Panics
    /// If none arrives within `limit` or the socket ends first.
    pub async fn next_text(&mut self, limit: Duration, what: &str) -> String {
        match tokio::time::timeout(limit, self.next_meaningful()).await {
            Ok(Some(Ok(Message::Text(text)))) => text.as_str().to_owned(),
            Ok(other) => panic!("expected a text frame ({what}), got {other:?}"),
            Err(_) => panic!("timed out after {limit:?} waiting for a text frame: {what}"),
        }
    }

    /// The next JSON frame of type `kind`. Offers that come first are skipped: the origin sends
    /// an offer again until it is acknowledged, so a resent one may precede what is awaited.
    ///
    /// # Panics
    /// If none arrives within `limit`, a frame is not JSON, or anything but an offer comes first.
    pub async fn next_frame_of(&mut self, kind: &str, limit: Duration, what: &str) -> Value {
        self.next_frame_where(limit, what, |frame| frame["type"] == kind).await
    }

    /// The next JSON frame that is `wanted`, skipping offers (resent ones, or offers of other
    /// rides) that come first.
    ///
    /// # Panics
    /// If none arrives within `limit`, a frame is not JSON, or a frame neither wanted nor an offer
    /// comes first.
    pub async fn next_frame_where(&mut self, limit: Duration, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let text = self.next_text(left, what).await;
            let frame: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
            if wanted(&frame) {
                return frame;
            }
            assert_eq!(frame["type"], "offer", "{what}: only resent offers may come first, got {frame}");
        }
    }

    /// Reports a step of `ride` (`{"type":"ride_progress",..}`, `status` `arrived`,
    /// `in_progress` or `completed`) and returns the `result` of the `ride_progress_result`
    /// that answers it, after checking that the answer names the same ride and step.
    ///
    /// # Panics
    /// If no answer arrives within [`EXPECT`], or anything but resent offers comes first (an
    /// origin that does not know the frame answers with an error frame).
    pub async fn report_step(&mut self, ride: &str, status: &str) -> String {
        let frame = serde_json::json!({ "type": "ride_progress", "rideId": ride, "status": status });
        self.send_text(frame.to_string()).await;
        let what = format!("the answer to ride_progress {status} of ride {ride}");
        let answer = self.next_frame_where(EXPECT, &what, |f| f["type"] == "ride_progress_result").await;
        assert_eq!(
            (answer["rideId"].as_str(), answer["status"].as_str()),
            (Some(ride), Some(status)),
            "{what}: {answer}"
        );
        let result = answer["result"].as_str().unwrap_or_else(|| panic!("{what}: no result in {answer}"));
        let keys: Vec<&str> = answer.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        assert_eq!(keys.len(), 4, "{what}: exactly type, rideId, status and result: {answer}");
        result.to_owned()
    }

    /// The next frame, which must be `{"type":"error","code":..,"message":..}`.
    ///
    /// # Panics
    /// If none arrives within [`EXPECT`] or it has another shape.
    pub async fn expect_error_frame(&mut self, after: &str) -> ErrorAnswer {
        let text = self.next_text(EXPECT, &format!("an error frame after sending {after}")).await;
        error_frame(&text, after)
    }

    /// Reads until the socket ends and says how; error frames before the end are returned too.
    ///
    /// # Panics
    /// If the socket is still open after `limit`, or a non-error text frame arrives.
    pub async fn expect_end(&mut self, limit: Duration, what: &str) -> (Vec<ErrorAnswer>, Ending) {
        let mut errors = Vec::new();
        let ending = async {
            loop {
                match self.next_meaningful().await {
                    Some(Ok(Message::Close(frame))) => return Ending::Closed(frame.map(|f| u16::from(f.code))),
                    Some(Ok(Message::Text(text))) => {
                        errors.push(error_frame(text.as_str(), what));
                    }
                    Some(Ok(other)) => panic!("unexpected frame while waiting for the end ({what}): {other:?}"),
                    Some(Err(e)) => return Ending::Dropped(e.to_string()),
                    None => return Ending::Dropped("stream ended without a close frame".to_owned()),
                }
            }
        };
        match tokio::time::timeout(limit, ending).await {
            Ok(ending) => (errors, ending),
            Err(_) => panic!("driver socket still open after {limit:?}; expected it to end: {what}"),
        }
    }

    /// Whether the socket is still open: answers within `quiet` with nothing but pings, or not at all.
    pub async fn is_open_after(&mut self, quiet: Duration) -> Result<(), String> {
        match tokio::time::timeout(quiet, self.next_meaningful()).await {
            Err(_) => Ok(()),
            Ok(Some(Ok(Message::Text(text)))) => Err(format!("unexpected text frame {text}")),
            Ok(other) => Err(format!("socket ended: {other:?}")),
        }
    }

    async fn next_meaningful(&mut self) -> Option<Result<Message, WsError>> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    }
}

/// Checks that `text` is `{"type":"error","code":"<snake_case>","message":"<text>"}`.
///
/// # Panics
/// If it has another shape; `context` says what the frame answered.
pub fn error_frame(text: &str, context: &str) -> ErrorAnswer {
    let value: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("frame after {context} is not JSON ({e}): {text}"));
    let object = value.as_object().unwrap_or_else(|| panic!("frame after {context} is not an object: {text}"));
    assert_eq!(
        object.get("type").and_then(Value::as_str),
        Some("error"),
        "expected an error frame after {context}: {text}"
    );
    let code = object.get("code").and_then(Value::as_str);
    let message = object.get("message").and_then(Value::as_str);
    let (Some(code), Some(message)) = (code, message) else {
        panic!("an error frame needs string \"code\" and \"message\" (after {context}): {text}");
    };
    assert!(is_snake_case(code), "error frame code {code:?} is not snake_case (after {context}): {text}");
    assert!(!message.trim().is_empty(), "error frame message is empty (after {context}): {text}");
    ErrorAnswer { status: 0, code: code.to_owned(), message: message.to_owned() }
}
