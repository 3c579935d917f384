//! The simulated drivers' WebSocket client: a real connection to the origin's own listener,
//! with a driver token minted for each connect, exactly as a driver's app would connect.

use std::{net::SocketAddr, time::Duration};

use futures_util::SinkExt;
use http::{HeaderValue, header::AUTHORIZATION};
use ridecast_protocol::{Claims, Id, Role, TokenError, TokenKeys};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest},
};

use crate::base::clock;

/// An open socket to the origin.
pub type Socket = WebSocketStream<TcpStream>;

/// A connect (TCP and handshake) that takes longer than this has failed.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// Lifetime of the token minted for each connect: only the handshake checks it.
const TOKEN_TTL_SECS: u64 = 3_600;

/// Why a socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not mint the driver's token")]
    Token(#[from] TokenError),
    #[error("could not reach the origin")]
    Tcp(#[source] std::io::Error),
    #[error("the WebSocket handshake failed")]
    Handshake(#[from] tungstenite::Error),
    #[error("no answer within {CONNECT_LIMIT:?}")]
    Timeout,
}

/// Opens sockets to one origin for simulated drivers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Connector {
    addr: SocketAddr,
    keys: TokenKeys,
}

impl Connector {
    /// Sockets to `listening` (an unspecified address, such as `0.0.0.0`, is reached on the
    /// loopback interface), authenticated with tokens signed by `keys`.
    pub fn new(listening: SocketAddr, keys: TokenKeys) -> Self {
        let mut addr = listening;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        Self { addr, keys }
    }

    /// Opens `path` (`/ws/rides`, `/ws/chat/{rideId}?since=..`) as `driver`.
    ///
    /// # Errors
    /// [`ConnectError`] when the origin cannot be reached, refuses the upgrade, or is too slow.
    pub async fn open(&self, driver: &Id, path: &str) -> Result<Socket, ConnectError> {
        let claims = Claims {
            sub: driver.clone(),
            role: Role::Driver,
            exp: clock::now_secs() + TOKEN_TTL_SECS,
            drv: None,
            ride: None,
        };
        let token = self.keys.mint(&claims)?;
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
        let v4 = Connector::new("0.0.0.0:8080".parse().expect("addr"), keys.clone());
        assert_eq!(v4.addr, "127.0.0.1:8080".parse().expect("addr"));
        let v6 = Connector::new("[::]:9".parse().expect("addr"), keys.clone());
        assert_eq!(v6.addr, "[::1]:9".parse().expect("addr"));
        let given = Connector::new("10.1.2.3:80".parse().expect("addr"), keys);
        assert_eq!(given.addr, "10.1.2.3:80".parse().expect("addr"));
    }
}
