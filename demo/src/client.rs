//! The demo's connections to the origin it runs in, through its listener and public API only,
//! with tokens minted by its keys, exactly as apps would connect: drivers' WebSockets, SSE
//! streams (a ride's status, a zone's surge), the operator's surge request, and `/metrics`.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{SinkExt, Stream, StreamExt};
use http::{
    HeaderValue,
    header::{AUTHORIZATION, CONTENT_TYPE},
};
use ridecast_origin::base::clock;
use ridecast_protocol::{Claims, Id, Multiplier, Role, TokenError, TokenKeys, surge::SurgeRequest};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest},
};

/// An open socket to the origin.
pub type Socket = WebSocketStream<TcpStream>;

/// A connect (TCP and handshake), or a request's answer, that takes longer than this has failed.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// Lifetime of the tokens minted here: only the handshake or the request checks them.
const TOKEN_TTL_SECS: u64 = 3_600;

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not mint the token")]
    Token(#[from] TokenError),
    #[error("could not reach the origin")]
    Tcp(#[source] std::io::Error),
    #[error("the WebSocket handshake failed")]
    Handshake(#[from] tungstenite::Error),
    #[error("no answer within {CONNECT_LIMIT:?}")]
    Timeout,
}

/// Why an HTTP request or stream failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("could not mint the token")]
    Token(#[from] TokenError),
    #[error("the request failed")]
    Http(#[from] reqwest::Error),
    #[error("the origin answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("no answer within {CONNECT_LIMIT:?}")]
    Timeout,
}

impl RequestError {
    /// The status the origin answered with, when it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Token(_) | Self::Http(_) | Self::Timeout => None,
        }
    }
}

/// Connections to one origin. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OriginClient {
    addr: SocketAddr,
    keys: TokenKeys,
    http: reqwest::Client,
    own_streams: Arc<AtomicU64>,
}

impl OriginClient {
    /// Connections to `listening` (an unspecified address, such as `0.0.0.0`, is reached on
    /// the loopback interface), authenticated with tokens signed by `keys`.
    ///
    /// # Errors
    /// When the HTTP client cannot be set up.
    pub fn new(listening: SocketAddr, keys: TokenKeys) -> Result<Self, reqwest::Error> {
        let mut addr = listening;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        // Straight to the listener: a proxy configured for the host has no business here.
        let http = reqwest::Client::builder().no_proxy().connect_timeout(CONNECT_LIMIT).build()?;
        Ok(Self { addr, keys, http, own_streams: Arc::default() })
    }

    /// `http://<addr>`, the origin as this host reaches it.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SSE streams the demo itself holds open on the origin right now (its `sse_connections`
    /// gauge counts them with the riders').
    pub fn own_streams(&self) -> u64 {
        self.own_streams.load(Relaxed)
    }

    /// A token for `sub` in `role`, scoped to `ride` when given.
    ///
    /// # Errors
    /// When it cannot be signed.
    pub fn token(&self, role: Role, sub: &Id, ride: Option<&Id>) -> Result<String, TokenError> {
        let exp = clock::now_secs() + TOKEN_TTL_SECS;
        self.keys.mint(&Claims { sub: sub.clone(), role, exp, drv: None, ride: ride.cloned() })
    }

    /// Opens `path` (`/ws/rides`, `/ws/chat/{rideId}?since=..`) as `driver`.
    ///
    /// # Errors
    /// [`ConnectError`] when the origin cannot be reached, refuses the upgrade, or is too slow.
    pub async fn open(&self, driver: &Id, path: &str) -> Result<Socket, ConnectError> {
        let token = self.token(Role::Driver, driver, None)?;
        let mut request = format!("ws://{}{path}", self.addr).into_client_request()?;
        let bearer =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
        request.headers_mut().insert(AUTHORIZATION, bearer);
        let connect = async {
            let tcp = TcpStream::connect(self.addr).await.map_err(ConnectError::Tcp)?;
            let _ = tcp.set_nodelay(true);
            let (socket, _) = tokio_tungstenite::client_async(request, tcp).await?;
            Ok(socket)
        };
        tokio::time::timeout(CONNECT_LIMIT, connect).await.map_err(|_| ConnectError::Timeout)?
    }

    /// `POST /api/surge/{zone}` as operator `operator`.
    ///
    /// # Errors
    /// [`RequestError`] when the request fails or is not answered 202.
    pub async fn set_surge(&self, operator: &Id, zone: &Id, multiplier: Multiplier) -> Result<(), RequestError> {
        let token = self.token(Role::Ops, operator, None)?;
        let response = self
            .http
            .post(format!("{}/api/surge/{zone}", self.base_url()))
            .bearer_auth(token)
            .header(CONTENT_TYPE, "application/json")
            // A struct of one number: serializing cannot fail.
            .body(serde_json::to_string(&SurgeRequest { multiplier: multiplier.get() }).unwrap_or_default())
            .timeout(CONNECT_LIMIT)
            .send()
            .await?;
        expect_status(response, 202).await.map(drop)
    }

    /// The Prometheus text of `GET /metrics`.
    ///
    /// # Errors
    /// [`RequestError`] when the request fails or is not answered 200.
    pub async fn metrics(&self) -> Result<String, RequestError> {
        let response = self.http.get(format!("{}/metrics", self.base_url())).timeout(CONNECT_LIMIT).send().await?;
        Ok(expect_status(response, 200).await?.text().await?)
    }

    /// Opens the SSE stream at `path` with `token`.
    ///
    /// # Errors
    /// [`RequestError`] when the request fails or is not answered 200.
    pub async fn events(&self, path: &str, token: &str) -> Result<EventStream, RequestError> {
        let request = self.http.get(format!("{}{path}", self.base_url())).bearer_auth(token);
        let response =
            tokio::time::timeout(CONNECT_LIMIT, request.send()).await.map_err(|_| RequestError::Timeout)??;
        let response = expect_status(response, 200).await?;
        self.own_streams.fetch_add(1, Relaxed);
        Ok(EventStream { events: Box::pin(response.bytes_stream().eventsource()), open: self.own_streams.clone() })
    }
}

async fn expect_status(response: reqwest::Response, expected: u16) -> Result<reqwest::Response, RequestError> {
    let status = response.status().as_u16();
    if status == expected {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(RequestError::Status { status, body })
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// An open SSE stream, counted in [`OriginClient::own_streams`] until dropped.
pub struct EventStream {
    events: Events,
    open: Arc<AtomicU64>,
}

impl EventStream {
    /// The next event; `None` when the stream has ended or broken.
    pub async fn next(&mut self) -> Option<Event> {
        match self.events.next().await? {
            Ok(event) => Some(event),
            Err(error) => {
                tracing::debug!(%error, "a stream the demo follows broke");
                None
            }
        }
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Relaxed);
    }
}

/// Sends `frame` as a JSON text frame.
///
/// # Errors
/// The socket's error when the frame cannot be written (the connection is gone).
pub async fn send_json(socket: &mut Socket, frame: &impl Serialize) -> Result<(), tungstenite::Error> {
    // These frames (derived `Serialize` of plain fields) always serialize.
    let text = serde_json::to_string(frame).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_reached_on_loopback() {
        let keys = TokenKeys::new(b"k", None).expect("keys");
        let client = |addr: &str| OriginClient::new(addr.parse().expect("addr"), keys.clone()).expect("client");
        assert_eq!(client("0.0.0.0:8080").base_url(), "http://127.0.0.1:8080");
        assert_eq!(client("[::]:9").base_url(), "http://[::1]:9");
        assert_eq!(client("10.1.2.3:80").base_url(), "http://10.1.2.3:80");
    }
}
