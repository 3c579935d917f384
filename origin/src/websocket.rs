//! What the WebSockets participants hold (driver, chat) have in common: the transport's own
//! limits, and how a session loop ends.

use axum::extract::ws::close_code;

/// tungstenite's own cap, far above the contract's 4 KiB so that oversized frames reach the
/// sessions' checks and get a proper error and close code; beyond it tungstenite refuses the
/// frame itself.
pub const TRANSPORT_FRAME_LIMIT: usize = 64 * 1024;

/// What a session loop does after handling a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Close(u16, &'static str),
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
