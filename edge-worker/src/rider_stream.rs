//! One rider's SSE body: a native workerd byte pipe that the hub writes into, latest-only.
//!
//! The body is the readable side of a workerd `IdentityTransformStream`: workerd pumps it to
//! the rider's connection itself, so a frame costs one `write()` from the hub and no JavaScript
//! pull per chunk (a Rust `Stream` behind `Response::from_stream` costs a promise round trip
//! through the pull machinery per chunk, and with hundreds of riders on one object that queue
//! is the latency). At most one write is in flight per rider: workerd settles it once the
//! connection took the bytes. While one is in flight, a newer frame *replaces* the pending one,
//! so a stalled rider costs at most one frame of memory and never slows the others.
//!
//! workerd only notices a gone client when a write to it fails; the write's rejection marks the
//! rider gone, and the hub's heartbeat makes sure such a write happens.

use std::{cell::RefCell, rc::Rc};

use js_sys::Uint8Array;
use wasm_bindgen::{JsCast, JsValue, closure::Closure};
use web_sys::{ReadableStream, TransformStream, WritableStreamDefaultWriter};

/// Heartbeat text; also says what the stream is, for a person reading it with curl.
pub const HEARTBEAT: &str = "hb";

type Callback = Closure<dyn FnMut(JsValue)>;

#[derive(Debug)]
struct Rider {
    writer: WritableStreamDefaultWriter,
    /// A write workerd has not settled yet.
    in_flight: bool,
    /// The newest frame that arrived while a write was in flight.
    pending: Option<Uint8Array>,
    /// A write failed (the client went away) or the hub closed the stream.
    gone: bool,
    /// Made once per rider and handed to every write's `then`: no closure per write.
    on_written: Option<Callback>,
    on_failed: Option<Callback>,
}

impl Rider {
    fn write(&mut self, chunk: &Uint8Array) {
        let (Some(on_written), Some(on_failed)) = (&self.on_written, &self.on_failed) else {
            return;
        };
        self.in_flight = true;
        // The promise's own value is dropped: its reactions (below) hold what matters.
        let _ = self.writer.write_with_chunk(chunk).then2(on_written, on_failed);
    }

    fn written(&mut self) {
        self.in_flight = false;
        if let Some(next) = self.pending.take() {
            self.write(&next);
        }
    }

    fn failed(&mut self) {
        self.gone = true;
        self.in_flight = false;
        self.pending = None;
    }
}

/// The hub's handle on one rider.
#[derive(Debug, Clone)]
pub struct RiderSlot(Rc<RefCell<Rider>>);

/// Why a rider stream could not be made.
#[derive(Debug, thiserror::Error)]
#[error("workerd could not make a rider stream: {0}")]
pub struct StreamError(String);

impl From<JsValue> for StreamError {
    fn from(value: JsValue) -> Self {
        Self(format!("{value:?}"))
    }
}

/// A native pass-through byte stream (`new IdentityTransformStream()`, a workerd global).
fn identity_stream() -> Result<TransformStream, StreamError> {
    let constructor = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("IdentityTransformStream"))?
        .dyn_into::<js_sys::Function>()
        .map_err(|_| StreamError("IdentityTransformStream is not available".into()))?;
    Ok(js_sys::Reflect::construct(&constructor, &js_sys::Array::new())?.unchecked_into())
}

/// A new rider whose stream starts with `first` (the `retry:` frame and, if any, the current
/// value). Returns the hub's handle and the response body.
///
/// # Errors
/// [`StreamError`] if workerd cannot make the stream.
pub fn open(first: &str) -> Result<(RiderSlot, ReadableStream), StreamError> {
    let pipe = identity_stream()?;
    let writer = pipe.writable().get_writer()?;
    let rider = Rc::new(RefCell::new(Rider {
        writer,
        in_flight: false,
        pending: None,
        gone: false,
        on_written: None,
        on_failed: None,
    }));
    // Weak: the callbacks live inside the rider and must not keep it alive themselves.
    let weak = Rc::downgrade(&rider);
    let on_written = Closure::new(move |_: JsValue| {
        if let Some(rider) = weak.upgrade() {
            rider.borrow_mut().written();
        }
    });
    let weak = Rc::downgrade(&rider);
    let on_failed = Closure::new(move |_: JsValue| {
        if let Some(rider) = weak.upgrade() {
            rider.borrow_mut().failed();
        }
    });
    {
        let mut r = rider.borrow_mut();
        r.on_written = Some(on_written);
        r.on_failed = Some(on_failed);
        r.write(&bytes(first));
    }
    Ok((RiderSlot(rider), pipe.readable()))
}

/// `text` as a JS byte array, made once and written to any number of riders.
pub fn bytes(text: &str) -> Uint8Array {
    Uint8Array::from(text.as_bytes())
}

impl RiderSlot {
    /// Writes `frame` now, or makes it the pending one if a write is in flight (latest wins).
    pub fn push_event(&self, frame: &Uint8Array) {
        let mut rider = self.0.borrow_mut();
        if rider.gone {
            return;
        }
        if rider.in_flight {
            rider.pending = Some(frame.clone());
        } else {
            rider.write(frame);
        }
    }

    /// Writes a heartbeat comment unless something is already on its way.
    pub fn push_heartbeat(&self, heartbeat: &Uint8Array) {
        let mut rider = self.0.borrow_mut();
        if !rider.gone && !rider.in_flight {
            rider.write(heartbeat);
        }
    }

    /// Ends the stream after what was written; later pushes are ignored.
    pub fn close(&self) {
        let mut rider = self.0.borrow_mut();
        rider.gone = true;
        rider.pending = None;
        let _ = rider.writer.close();
    }

    /// True once a write failed (the client went away) or the hub closed the stream.
    pub fn is_gone(&self) -> bool {
        self.0.borrow().gone
    }
}
