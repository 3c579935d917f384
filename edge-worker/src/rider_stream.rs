//! One rider's SSE body as a latest-only cell, pulled by workerd one chunk at a time.
//!
//! The body is a `ReadableStream` with a zero high-water mark whose source is this module:
//! workerd asks for a chunk (`pull`) only once it has written the previous one to the rider's
//! connection, so nothing queues between the hub and the socket. The hub *replaces* the one
//! pending frame while no chunk is asked for; a stalled rider so costs at most one frame of
//! memory and never slows the others, and a rider that catches up gets the newest value, which
//! is all a location or surge stream is for. A frame is encoded once per event and the same
//! bytes go to every rider of the object ([`Frame`]).
//!
//! Which body costs least was measured (BENCHMARKS.md, "The edge at production shape"): a Rust
//! `Stream` through `Response::from_stream` (each chunk a round of JavaScript promises into wasm
//! and back), workerd's native `IdentityTransformStream` (less CPU per event, but ~60 KB more
//! memory per stream), and this.
//!
//! workerd only notices a gone client when a write fails; it then cancels the stream, which
//! marks the slot gone, so the hub's heartbeat doubles as the probe and [`RiderSlot::is_gone`]
//! tells it whom to drop.

use std::{
    cell::{Cell, RefCell},
    rc::{Rc, Weak},
};

use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue, closure::Closure};
use web_sys::ReadableStream;

/// A frame ready to write: encoded once, shared by every rider it goes to.
#[derive(Debug, Clone)]
pub struct Frame(Uint8Array);

impl Frame {
    pub fn new(text: &str) -> Self {
        Self(Uint8Array::from(text.as_bytes()))
    }
}

/// One rider's side of the stream. workerd's callbacks may come back into it while it hands a
/// chunk over (an `enqueue` can ask for the next at once), so no borrow is held across a call
/// into JavaScript, and the flags workerd sets are plain cells.
#[derive(Debug, Default)]
struct Slot {
    /// workerd asked for a chunk and none was there: the next one goes at once.
    wanted: Cell<bool>,
    /// The stream was cancelled (the rider went away) or closed by the hub.
    gone: Cell<bool>,
    /// The stream's controller, from its `start`.
    controller: RefCell<Option<Object>>,
    waiting: RefCell<Waiting>,
}

/// What waits to be written.
#[derive(Debug, Default)]
struct Waiting {
    /// The first chunk (`retry:` and the current value), then at most one event frame.
    frame: Option<Frame>,
    /// A heartbeat comment, written only when no event is pending.
    heartbeat: bool,
}

impl Slot {
    /// Hands workerd the next chunk if it asked for one.
    fn flush(&self) {
        if !self.wanted.get() || self.gone.get() {
            return;
        }
        let chunk = {
            let mut waiting = self.waiting.borrow_mut();
            let chunk = match waiting.frame.take() {
                Some(frame) => frame,
                None if waiting.heartbeat => Frame::new(&ridecast_protocol::sse::comment(HEARTBEAT)),
                None => return,
            };
            waiting.heartbeat = false;
            chunk
        };
        self.wanted.set(false);
        self.call("enqueue", &chunk.0);
    }

    fn call(&self, method: &str, arg: &JsValue) {
        let Some(controller) = self.controller.borrow().clone() else { return };
        if let Ok(f) = Reflect::get(&controller, &JsValue::from_str(method)).and_then(JsCast::dyn_into::<Function>) {
            let _ = f.call1(&controller, arg);
        }
    }
}

/// The hub's handle on one rider.
#[derive(Debug, Clone)]
pub struct RiderSlot(Rc<Slot>);

/// A new rider whose stream starts with `first` (the `retry:` frame and, if any, the current
/// value): the hub's slot and the body of the rider's response.
///
/// # Errors
/// If the runtime cannot build the stream.
pub fn open(first: &str) -> Result<(RiderSlot, ReadableStream), worker::Error> {
    let slot = Rc::new(Slot::default());
    slot.waiting.borrow_mut().frame = Some(Frame::new(first));
    // The callbacks hold the slot weakly: the hub owns it, and a cycle through the JavaScript
    // heap would never be freed.
    let source = Object::new();
    let on = |name: &str, f: Closure<dyn FnMut(JsValue)>| {
        Reflect::set(&source, &JsValue::from_str(name), &f.into_js_value())
    };
    let weak = Rc::downgrade(&slot);
    on(
        "start",
        Closure::new(move |controller: JsValue| {
            with(&weak, |s| *s.controller.borrow_mut() = Some(controller.unchecked_into()));
        }),
    )?;
    let weak = Rc::downgrade(&slot);
    on(
        "pull",
        Closure::new(move |_| {
            with(&weak, |s| {
                s.wanted.set(true);
                s.flush();
            });
        }),
    )?;
    let weak = Rc::downgrade(&slot);
    on("cancel", Closure::new(move |_| with(&weak, |s| s.gone.set(true))))?;
    let strategy = Object::new();
    Reflect::set(&strategy, &JsValue::from_str("highWaterMark"), &JsValue::from_f64(0.0))?;
    let constructor: Function = Reflect::get(&js_sys::global(), &JsValue::from_str("ReadableStream"))?.unchecked_into();
    let stream = Reflect::construct(&constructor, &Array::of2(&source, &strategy))?.unchecked_into();
    Ok((RiderSlot(slot), stream))
}

fn with(slot: &Weak<Slot>, f: impl FnOnce(&Slot)) {
    if let Some(slot) = slot.upgrade() {
        f(&slot);
    }
}

impl RiderSlot {
    /// Replaces whatever event was pending with `frame` (latest wins).
    pub fn push_event(&self, frame: &Frame) {
        {
            let mut waiting = self.0.waiting.borrow_mut();
            waiting.frame = Some(match &waiting.frame {
                // The first chunk still waits (`retry:` before any event): keep it, add the event.
                Some(first) if is_first(first) => {
                    let mut joined = first.0.to_vec();
                    joined.truncate(first_len(&joined));
                    joined.extend_from_slice(&frame.0.to_vec());
                    Frame(Uint8Array::from(joined.as_slice()))
                }
                _ => frame.clone(),
            });
        }
        self.0.flush();
    }

    /// Asks for a heartbeat comment unless an event is already on its way.
    pub fn push_heartbeat(&self) {
        self.0.waiting.borrow_mut().heartbeat = true;
        self.0.flush();
    }

    /// Ends the stream with a comment saying why, after whatever is pending (a client that
    /// reconnects then learns the rest from the refusal).
    pub fn end_with_comment(&self, why: &str) {
        if self.0.gone.replace(true) {
            return;
        }
        let mut last = self.0.waiting.borrow_mut().frame.take().map(|f| f.0.to_vec()).unwrap_or_default();
        last.extend_from_slice(ridecast_protocol::sse::comment(why).as_bytes());
        // Queued past the high-water mark on purpose: it is the last chunk, then the end.
        self.0.call("enqueue", &Uint8Array::from(last.as_slice()));
        self.0.call("close", &JsValue::UNDEFINED);
    }

    /// True once the rider went away or the hub ended its stream.
    pub fn is_gone(&self) -> bool {
        self.0.gone.get()
    }
}

/// Whether a pending chunk is the stream's first (it starts with `retry:`).
fn is_first(frame: &Frame) -> bool {
    frame.0.length() >= 6 && frame.0.subarray(0, 6).to_vec() == b"retry:"
}

/// The length of the `retry:` frame at the start of a first chunk.
fn first_len(bytes: &[u8]) -> usize {
    bytes.windows(2).position(|w| w == b"\n\n").map_or(bytes.len(), |i| i + 2)
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
