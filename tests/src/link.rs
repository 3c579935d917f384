//! The origin's edge link (`/edge/v1/...`) as an edge Durable Object would hold it, with
//! tokio-tungstenite.

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::wait::EXPECT;

/// An open edge link.
pub type Link = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `url` with `Authorization: Bearer <token>`; `Err(status)` when refused before the upgrade.
///
/// # Panics
/// If the link fails other than by an HTTP refusal.
pub async fn open_link(url: &str, token: &str) -> Result<Link, u16> {
    let mut request = url.into_client_request().expect("a valid link URL");
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    match tokio_tungstenite::connect_async(request).await {
        Ok((link, _)) => Ok(link),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("the link failed other than by an HTTP refusal: {other}"),
    }
}

/// The next text frame on the link (pings and pongs skipped).
///
/// # Panics
/// If none arrives within [`EXPECT`], or the link closes or fails first.
pub async fn next_text(link: &mut Link, what: &str) -> String {
    loop {
        let frame = tokio::time::timeout(EXPECT, link.next())
            .await
            .unwrap_or_else(|_| panic!("expected {what} on the edge link within {EXPECT:?}"))
            .unwrap_or_else(|| panic!("the edge link closed while waiting for {what}"))
            .unwrap_or_else(|error| panic!("the edge link failed while waiting for {what}: {error}"));
        if let Message::Text(text) = frame {
            return text.as_str().to_owned();
        }
    }
}
