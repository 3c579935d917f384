//! What the origin's WebSockets (driver, chat, edge link) have in common: the transport's own
//! limits and buffers, and how a session loop ends.

use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade, close_code};
use ridecast_protocol::{ErrorCode, MAX_FRAME_BYTES};

/// tungstenite's own cap, far above the contract's 4 KiB so that oversized frames reach the
/// sessions' checks and get a proper error and close code; beyond it tungstenite refuses the
/// frame itself.
pub const TRANSPORT_FRAME_LIMIT: usize = 64 * 1024;

/// Initial read buffer of a socket, sized for a typical frame (~150 bytes); it grows for the
/// rare large one. Every open socket holds it for its whole life: tungstenite's default
/// (128 KiB) made each edge link and chat socket cost ~130 KB of origin memory.
pub const READ_BUFFER_BYTES: usize = 512;

/// `ws` with the buffers and frame limit every origin socket uses: a small read buffer, no
/// write buffer (each frame is written at once; a send waits for the socket, so nothing queues
/// here), and `frame_limit` on messages and frames.
pub fn sized(ws: WebSocketUpgrade, frame_limit: usize) -> WebSocketUpgrade {
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit)
}

/// What a session loop does after handling a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Close(u16, &'static str),
}

/// How a socket that keeps sending past `rate_limited` is closed.
pub const FLOODING: Next = Next::Close(close_code::POLICY, "flooding");

/// What a received WebSocket message is to a session.
#[derive(Debug)]
pub enum Incoming {
    /// A text frame within the contract's size limit, to parse.
    Text(Utf8Bytes),
    /// Ping, pong or close: the transport's business.
    Control,
    /// Answered with an error frame; `then` closes the socket (a frame over 4 KiB) or not.
    Refused { code: ErrorCode, message: String, then: Next },
}

/// Sorts a received message: JSON text within [`MAX_FRAME_BYTES`] goes on to the session's
/// parser, a binary frame is `invalid_message`, a larger one `too_large` and a 1009 close.
pub fn incoming(message: Message) -> Incoming {
    let text = match message {
        Message::Text(text) => text,
        Message::Binary(_) => {
            let message = "frames must be JSON text".to_owned();
            return Incoming::Refused { code: ErrorCode::InvalidMessage, message, then: Next::Continue };
        }
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Incoming::Control,
    };
    if text.len() > MAX_FRAME_BYTES {
        let message = format!("frames are limited to {MAX_FRAME_BYTES} bytes");
        return Incoming::Refused {
            code: ErrorCode::TooLarge,
            message,
            then: Next::Close(close_code::SIZE, "frame too large"),
        };
    }
    Incoming::Text(text)
}

/// The close to attempt after a transport error: 1009 when the peer sent more than even the
/// transport allows, nothing otherwise (the connection is already unusable).
pub fn transport_close(error: &axum::Error) -> Option<(u16, &'static str)> {
    let inner = std::error::Error::source(error)?;
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some((close_code::SIZE, "frame too large")),
        _ => None,
    }
}
