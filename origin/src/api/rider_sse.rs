//! Rider Server-Sent Events: a hub's latest value, pushed to each rider, latest-only. One
//! mechanism for every [`Topic`]: a driver's location, a zone's surge and a ride's status.
//!
//! An [`SseStream`] is built by the handler (auth, ids, the current value) and then served in
//! one of two ways: straight on the TCP socket by the [`front`](crate::api::front) (the normal
//! case: nothing buffered but the frame being written), or as a hyper response body when the
//! request arrived on a connection hyper already serves. Both pull frames from
//! [`SseStream::next_frame`], so the stream's behaviour is defined once.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Body, extract::State, response::Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use ridecast_protocol::{Id, RideState, sse};
use tokio::{net::TcpStream, sync::watch, time::Instant};

use super::stream_signals::StreamSignal;
use crate::{
    api::{
        error::ApiError,
        extract::{AuthorizedRide, FollowedZone, TrackedDriver},
        state::AppState,
    },
    base::metrics::{GaugeGuard, Metrics},
    bus::Topic,
    fanout::hubs::{HubValue, Subscription},
    limits::token_streams::{StreamKey, StreamPermit},
};

/// The heartbeat comment: short, since every open stream writes it every interval.
const HEARTBEAT: &[u8] = b": hb\n\n";

/// A rider whose socket accepts nothing for this long is dropped: its kernel buffer has been
/// full the whole time, so it is gone or hopelessly behind.
pub const STALLED_WRITE_LIMIT: Duration = Duration::from_secs(120);

/// The headers every SSE response carries.
pub fn sse_headers() -> [(header::HeaderName, HeaderValue); 3] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-transform")),
        (header::HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
    ]
}

/// `GET /api/sse/drivers/{driverId}/location`: a rider follows one driver.
/// A tracking token's stream also ends when its ride does (see [`TrackedDriver`]); checking
/// that token needs the store, and when it cannot be read the answer is the refusal stream.
pub async fn driver_location(
    State(state): State<AppState>,
    tracked: Result<TrackedDriver, ApiError>,
    key: StreamKey,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let TrackedDriver { driver, ride } = match tracked {
        Ok(tracked) => tracked,
        Err(ApiError::Backend(error)) => {
            tracing::warn!(%error, "could not read a tracking token's ride; asking the rider to come back");
            return Ok(refusal(state.config.sse_retry_ms, "the ride store is unavailable; reconnect"));
        }
        Err(refused) => return Err(refused),
    };
    let permit = state.token_streams.acquire(key)?;
    let mut response = open(&state, Topic::DriverLocation(driver), &headers, permit).await;
    if let Some(ride) = ride {
        watch_ride(&state, &mut response, ride);
    }
    Ok(response)
}

/// Makes the stream in `response` end when `ride` is no longer under way.
fn watch_ride(state: &AppState, response: &mut Response, ride: Id) {
    let Some(handoff) = response.extensions().get::<SseHandoff>() else { return };
    let mut slot = handoff.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(stream) = slot.as_mut() {
        let mut watch = RideWatch { subscription: state.hubs.subscribe(Topic::RideStatus(ride)) };
        // A change that reached the hub before this subscription is its current value.
        if watch.subscription.current().is_some_and(|value| !still_on(&value)) {
            let mut first = stream.first.take().map(Vec::from).unwrap_or_default();
            first.extend_from_slice(sse::comment(RIDE_ENDED).as_bytes());
            stream.first = Some(Bytes::from(first));
            stream.ended = true;
            return;
        }
        stream.ride_watch = Some(Box::new(watch));
    }
}

/// `GET /api/sse/surge/{zoneId}`: a rider follows one zone's surge multiplier.
pub async fn surge_zone(
    State(state): State<AppState>,
    FollowedZone(zone): FollowedZone,
    key: StreamKey,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let permit = state.token_streams.acquire(key)?;
    Ok(open(&state, Topic::SurgeZone(zone), &headers, permit).await)
}

/// `GET /api/sse/rides/{rideId}`: a rider follows one ride's status. Who may is decided by
/// [`AuthorizedRide`] (401, 400, 403, 404). That needs the store; when it cannot be read the
/// answer is the refusal stream, as when draining, since a browser's EventSource would give up
/// for good on a 503.
pub async fn ride_status(
    State(state): State<AppState>,
    ride: Result<AuthorizedRide, ApiError>,
    key: StreamKey,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match ride {
        Ok(AuthorizedRide(ride)) => {
            let permit = state.token_streams.acquire(key)?;
            Ok(open(&state, Topic::RideStatus(ride.id), &headers, permit).await)
        }
        Err(ApiError::Backend(error)) => {
            tracing::warn!(%error, "could not read a ride to authorise its stream; asking the rider to come back");
            Ok(refusal(state.config.sse_retry_ms, "the ride store is unavailable; reconnect"))
        }
        Err(refused) => Err(refused),
    }
}

/// Opens a stream on `topic`'s hub, or a refusal stream when the instance is draining.
/// The stream holds `permit`, its place in its token's count, for its whole life.
pub async fn open(state: &AppState, topic: Topic, headers: &HeaderMap, permit: StreamPermit) -> Response {
    if state.drain.is_draining() {
        return refusal(state.config.sse_retry_ms, "this instance is draining; reconnect");
    }
    let last_event_id =
        headers.get("last-event-id").and_then(|value| value.to_str().ok()).and_then(sse::parse_event_id).unwrap_or(0);
    let mut subscription = state.hubs.subscribe(topic);
    let current = subscription.starting_value(&state.snapshots).await;
    let mut first = sse::retry(state.config.sse_retry_ms).into_bytes();
    let mut last_id = last_event_id;
    let mut last_seq = 0;
    if let Some(current) = current.filter(|current| current.id > last_event_id) {
        first.extend_from_slice(&current.frame);
        last_id = current.id;
        last_seq = current.seq;
        Metrics::inc(&state.metrics.values().events_pushed_total);
    }
    let mut signals = state.stream_signals.join();
    // Heartbeats from before this stream are not its business; a drain that began since the
    // check above is: the stream then ends right after its first frame.
    let ended = *signals.borrow_and_update() == StreamSignal::Draining;
    let stream = SseStream {
        first: Some(Bytes::from(first)),
        subscription,
        last_id,
        last_seq,
        signals,
        metrics: state.metrics.clone(),
        ended,
        ride_watch: None,
        _open: GaugeGuard::new(&state.metrics, |m| &m.sse_connections),
        _permit: permit,
    };
    let handoff = SseHandoff(Arc::new(Mutex::new(Some(stream))));
    let mut response = Response::new(handoff.clone().into_body());
    response.headers_mut().extend(sse_headers());
    response.extensions_mut().insert(handoff);
    response
}

/// The answer to an SSE request this instance will not serve (full or draining): a browser's
/// EventSource gives up for good on any non-200, so this is a 200 stream that asks the client to
/// come back after a jittered delay, says why, and ends at once.
pub fn refusal(retry_ms: u64, why: &str) -> Response {
    let body = format!("{}{}", sse::retry(jittered(retry_ms)), sse::comment(why));
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().extend(sse_headers());
    response
}

/// `ms` spread over ±50 %, so that riders dropped together do not all come back together.
fn jittered(ms: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new().hash_one(std::time::Instant::now());
    ms / 2 + random % ms.max(1)
}

/// Moves a built stream from the handler to whoever serves it: the front takes it out of the
/// response's extensions, or else the response body takes it on first poll.
#[derive(Clone)]
pub struct SseHandoff(Arc<Mutex<Option<SseStream>>>);

impl std::fmt::Debug for SseHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SseHandoff")
    }
}

impl SseHandoff {
    pub fn take(&self) -> Option<SseStream> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    fn into_body(self) -> Body {
        let frames = futures_util::stream::unfold((self, None::<SseStream>), |(handoff, stream)| async move {
            let mut stream = match stream {
                Some(stream) => stream,
                None => handoff.take()?,
            };
            let frame = stream.next_frame().await?;
            Some((Ok::<_, std::convert::Infallible>(frame), (handoff, Some(stream))))
        });
        Body::from_stream(frames)
    }
}

/// One rider's stream.
pub struct SseStream {
    /// `retry:` and the current value, written first, in one write.
    first: Option<Bytes>,
    subscription: Subscription,
    last_id: u64,
    last_seq: u64,
    signals: watch::Receiver<StreamSignal>,
    metrics: Metrics,
    ended: bool,
    /// A tracking token's ride, whose end ends the stream (boxed: most streams have none).
    ride_watch: Option<Box<RideWatch>>,
    _open: GaugeGuard,
    _permit: StreamPermit,
}

/// Said to a rider whose tracking token's ride has ended, as the stream closes.
const RIDE_ENDED: &str = "the ride this stream tracked has ended";

/// The ride a tracking token's stream is bound to.
#[derive(Debug)]
struct RideWatch {
    subscription: Subscription,
}

/// Whether a ride status value still has the ride under way (`driver_assigned`,
/// `driver_arrived` or `in_progress`). A tracking token is bound to its ride's driver, and the
/// driver of a ride never changes once assigned, so the status alone decides.
fn still_on(value: &HubValue) -> bool {
    serde_json::from_slice::<RideState>(&value.json).is_ok_and(|state| state.status.is_under_way())
}

/// Resolves when the watched ride ends; never without a watch.
async fn ride_ended(watch: &mut Option<Box<RideWatch>>) {
    let Some(watch) = watch else { return std::future::pending().await };
    // Boxed: the wait is state every stream's future would otherwise carry.
    Box::pin(async {
        loop {
            match watch.subscription.next().await {
                Some(value) if !still_on(&value) => return,
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    })
    .await;
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream").field("last_id", &self.last_id).finish_non_exhaustive()
    }
}

/// Why a hand-served stream stopped writing.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("socket error")]
    Io(#[from] std::io::Error),
    #[error("rider accepted nothing for {STALLED_WRITE_LIMIT:?}")]
    Stalled,
    #[error("draining")]
    Draining,
}

impl SseStream {
    /// The next bytes to write: the first frame, then values newer than the last written,
    /// heartbeats, and a closing comment when the instance drains. `None`: the stream is over.
    /// This is the hyper-served path; [`SseStream::serve_on`] is the same logic on a socket.
    pub async fn next_frame(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        while !self.ended {
            let frame = tokio::select! {
                biased;
                changed = self.signals.changed() => self.on_signal(changed.is_ok()),
                value = self.subscription.next() => self.on_value(value?.as_ref()),
                () = ride_ended(&mut self.ride_watch) => self.on_ride_ended(),
            };
            if frame.is_some() {
                return frame;
            }
        }
        None
    }

    /// Serves the stream straight on the rider's socket until the rider leaves, stalls past
    /// [`STALLED_WRITE_LIMIT`], or the instance drains. One flat `select!`: this future is
    /// held by every open stream, so its size is memory per rider.
    pub async fn serve_on(mut self, tcp: TcpStream) {
        let mut frame = self.first.take();
        loop {
            if let Some(bytes) = frame.take()
                && let Err(error) = write_frame(&tcp, &bytes, &mut self.signals).await
            {
                tracing::debug!(%error, "rider stream ended");
                return;
            }
            if self.ended {
                return;
            }
            frame = tokio::select! {
                biased;
                changed = self.signals.changed() => self.on_signal(changed.is_ok()),
                value = self.subscription.next() => match value {
                    Some(value) => self.on_value(&value),
                    None => return,
                },
                () = ride_ended(&mut self.ride_watch) => self.on_ride_ended(),
                readable = tcp.readable() => {
                    if readable.is_err() || rider_left(&tcp) {
                        return;
                    }
                    None
                }
            };
        }
    }

    /// A heartbeat tick, or the drain (`ok` false: the signal task is gone, which only
    /// happens at shutdown).
    fn on_signal(&mut self, ok: bool) -> Option<Bytes> {
        if ok && *self.signals.borrow_and_update() == StreamSignal::Running {
            return Some(Bytes::from_static(HEARTBEAT));
        }
        self.ended = true;
        Some(Bytes::from(sse::comment("server restarting; reconnect")))
    }

    /// The tracking token's ride ended: say so and end the stream.
    fn on_ride_ended(&mut self) -> Option<Bytes> {
        self.ended = true;
        Some(Bytes::from(sse::comment(RIDE_ENDED)))
    }

    /// A hub value: its frame if it is newer than what the rider has.
    fn on_value(&mut self, value: &HubValue) -> Option<Bytes> {
        if value.id <= self.last_id {
            return None;
        }
        let values = self.metrics.values();
        if self.last_seq != 0 && value.seq > self.last_seq + 1 {
            Metrics::add(&values.events_superseded_total, value.seq - self.last_seq - 1);
        }
        self.last_id = value.id;
        self.last_seq = value.seq;
        Metrics::inc(&values.events_pushed_total);
        Some(value.frame.clone())
    }
}

/// After the socket turned readable: whether the rider has gone. Riders send nothing after
/// the request, so readable means closed; stray bytes are read and discarded.
fn rider_left(tcp: &TcpStream) -> bool {
    let mut scratch = [0u8; 64];
    match tcp.try_read(&mut scratch) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// Writes one whole frame. The fast path is one `write()` with no timer; only a full socket
/// waits (in a boxed future, so that streams pay for the waiting state only while they wait),
/// and not forever. While it waits, newer values replace older ones in the hub, so the rider
/// gets the newest value next, never a queue.
async fn write_frame(
    tcp: &TcpStream,
    mut frame: &[u8],
    signals: &mut watch::Receiver<StreamSignal>,
) -> Result<(), WriteError> {
    while !frame.is_empty() {
        match tcp.try_write(frame) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
            Ok(written) => frame = &frame[written..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                Box::pin(wait_writable(tcp, signals)).await?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Waits until the socket takes bytes again, for at most [`STALLED_WRITE_LIMIT`], unless
/// the instance drains first. Heartbeats meanwhile are skipped: the rider is not reading.
async fn wait_writable(tcp: &TcpStream, signals: &mut watch::Receiver<StreamSignal>) -> Result<(), WriteError> {
    let deadline = Instant::now() + STALLED_WRITE_LIMIT;
    loop {
        tokio::select! {
            ready = tokio::time::timeout_at(deadline, tcp.writable()) => {
                return Ok(ready.map_err(|_| WriteError::Stalled)??);
            }
            changed = signals.changed() => {
                if changed.is_err() || *signals.borrow_and_update() == StreamSignal::Draining {
                    return Err(WriteError::Draining);
                }
            }
        }
    }
}
