//! One rider's SSE body as a latest-only cell.
//!
//! The hub never queues for a rider: it *replaces* the one pending frame. A stalled rider so
//! costs at most one frame of memory and never slows the others; a rider that catches up gets the
//! newest value, which is all a location or surge stream is for. workerd only notices a gone
//! client when a write fails (it then cancels the stream, which drops [`RiderStream`]), so the
//! hub's heartbeat doubles as the probe and [`RiderSlot::is_gone`] tells it whom to drop.

use std::{
    cell::RefCell,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

use futures_util::Stream;

/// What is waiting to be written to one rider.
#[derive(Debug, Default)]
struct Pending {
    /// The first chunk (`retry:` and the current value), then at most one event frame.
    frame: Option<String>,
    /// A heartbeat comment, written only when no event is pending.
    heartbeat: bool,
    waker: Option<Waker>,
    /// Set by the hub to end the stream, or by the stream's `Drop` when the client went away.
    closed: bool,
}

/// The hub's handle on one rider.
#[derive(Debug, Clone)]
pub struct RiderSlot(Rc<RefCell<Pending>>);

/// The response body handed to workerd.
#[derive(Debug)]
pub struct RiderStream(Rc<RefCell<Pending>>);

/// A new rider whose stream starts with `first` (the `retry:` frame and, if any, the current value).
pub fn open(first: String) -> (RiderSlot, RiderStream) {
    let cell = Rc::new(RefCell::new(Pending { frame: Some(first), ..Pending::default() }));
    (RiderSlot(cell.clone()), RiderStream(cell))
}

impl RiderSlot {
    /// Replaces whatever event was pending with `frame` (latest wins).
    pub fn push_event(&self, frame: &str) {
        let mut p = self.0.borrow_mut();
        match &mut p.frame {
            // The first chunk still carries `retry:`; keep it and swap only the event after it.
            Some(pending) if pending.starts_with("retry:") => {
                let keep = pending.find("\n\n").map_or(pending.len(), |i| i + 2);
                pending.truncate(keep);
                pending.push_str(frame);
            }
            slot => *slot = Some(frame.to_owned()),
        }
        if let Some(w) = p.waker.take() {
            w.wake();
        }
    }

    /// Asks for a heartbeat comment unless an event is already on its way.
    pub fn push_heartbeat(&self) {
        let mut p = self.0.borrow_mut();
        p.heartbeat = true;
        if let Some(w) = p.waker.take() {
            w.wake();
        }
    }

    /// Ends the stream after whatever is pending.
    pub fn close(&self) {
        let mut p = self.0.borrow_mut();
        p.closed = true;
        if let Some(w) = p.waker.take() {
            w.wake();
        }
    }

    /// Ends the stream with a comment saying why, after whatever is pending (a client that
    /// reconnects then learns the rest from the refusal).
    pub fn end_with_comment(&self, why: &str) {
        let mut p = self.0.borrow_mut();
        let comment = ridecast_protocol::sse::comment(why);
        match &mut p.frame {
            Some(pending) => pending.push_str(&comment),
            slot => *slot = Some(comment),
        }
        p.closed = true;
        if let Some(w) = p.waker.take() {
            w.wake();
        }
    }

    /// True once workerd dropped the body (the client went away) or the hub closed it.
    pub fn is_gone(&self) -> bool {
        self.0.borrow().closed
    }
}

/// The headers every SSE response carries, refusals included.
///
/// # Errors
/// Only if the runtime cannot build headers.
pub fn sse_headers() -> worker::Result<worker::Headers> {
    let headers = worker::Headers::new();
    headers.set("content-type", "text/event-stream")?;
    headers.set("cache-control", "no-cache, no-transform")?;
    headers.set("x-accel-buffering", "no")?;
    Ok(headers)
}

/// Heartbeat text; also says what the stream is, for a person reading it with curl.
pub const HEARTBEAT: &str = "hb";

impl Stream for RiderStream {
    type Item = Result<Vec<u8>, worker::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut p = self.0.borrow_mut();
        if let Some(frame) = p.frame.take() {
            p.heartbeat = false;
            return Poll::Ready(Some(Ok(frame.into_bytes())));
        }
        if p.heartbeat {
            p.heartbeat = false;
            return Poll::Ready(Some(Ok(ridecast_protocol::sse::comment(HEARTBEAT).into_bytes())));
        }
        if p.closed {
            return Poll::Ready(None);
        }
        p.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for RiderStream {
    fn drop(&mut self) {
        self.0.borrow_mut().closed = true;
    }
}
