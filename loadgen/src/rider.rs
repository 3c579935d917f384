//! Simulated riders: an SSE stream per rider ([`stream`]) or a keep-alive poller ([`poll`]).
//!
//! A rider is one light task owning a socket, a 1 KiB read buffer and an SSE reader, so that a
//! single process holds 20,000 of them. Receipt time is taken once per read, right after the
//! kernel hands over the bytes, and compared with the driver's send instant (exact when the
//! driver is simulated in the same process, else from the millisecond `ts`).
//!
//! The same stream reader follows an origin (`/api/sse/drivers/{id}/location`, events named
//! `location` whose `id` is the `ts`) or Nchan (`/sub/{id}`, unnamed events whose `id` is
//! Nchan's own `<time>:<tag>`, so the `ts` is read from the data).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ridecast_protocol::{Claims, Id, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::clock::epoch_us;
use crate::http::{self, BodyFraming, Exchange, HttpError, get_request};
use crate::job::{Job, Mode, ServerKind};
use crate::net::{self, SourcePorts};
use crate::shared::{Outcome, Shared};
use crate::sse::{SseEvent, SseReader, find_ts, parse_decimal};

/// Bytes read per `read` call on a stream; a location event is ~200 bytes with framing.
const READ_BUF: usize = 1024;

/// What one rider task needs.
#[derive(Debug)]
pub struct RiderSpec {
    pub slot: usize,
    pub driver: usize,
    addr: SocketAddr,
    /// The request without its final blank line, so headers can be added per request.
    request_head: Vec<u8>,
}

impl RiderSpec {
    /// Mints the rider's token (`drv` = its driver) and prepares its request.
    ///
    /// # Errors
    /// The failure's kind, counted like a connect failure.
    pub fn new(job: &Job, slot: usize, exp: u64) -> Result<Self, String> {
        let driver = job.layout.driver_of(slot);
        let driver_id = job.names.driver(driver);
        let target = job.rider_target(slot);
        let (path, token) = match (job.server, job.mode) {
            // Nchan checks no token: the channel id is all it needs.
            (ServerKind::Nchan, _) => (format!("/sub/{driver_id}"), None),
            (ServerKind::Origin, mode) => {
                let claims = Claims {
                    sub: Id::parse(&job.names.rider(slot)).map_err(|_| "bad_rider_id".to_owned())?,
                    role: Role::Rider,
                    exp,
                    drv: Some(Id::parse(&driver_id).map_err(|_| "bad_driver_id".to_owned())?),
                    ride: None,
                };
                let token = job.keys.mint(&claims).map_err(|_| "token_mint_failed".to_owned())?;
                let path = if mode == Mode::Poll {
                    format!("/api/drivers/{driver_id}/location")
                } else {
                    format!("/api/sse/drivers/{driver_id}/location")
                };
                (path, Some(token))
            }
        };
        let mut request_head = get_request(&target.authority, &path, token.as_deref(), &[]);
        request_head.truncate(request_head.len() - 2);
        Ok(Self { slot, driver, addr: target.addr, request_head })
    }

    fn request(&self, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut request = Vec::with_capacity(self.request_head.len() + 64);
        request.extend_from_slice(&self.request_head);
        for (name, value) in extra {
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(value.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request
    }
}

/// Why a rider's stream could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("answered {0}")]
    Status(u16),
    #[error("answered 200 without text/event-stream")]
    NotEventStream,
}

impl OpenError {
    fn kind(&self) -> String {
        match self {
            Self::Timeout => "timeout".into(),
            Self::Http(e) => e.kind(),
            Self::Status(code) => format!("http_{code}"),
            Self::NotEventStream => "not_event_stream".into(),
        }
    }
}

async fn open_stream(spec: &RiderSpec, sources: &SourcePorts) -> Result<(TcpStream, BodyFraming, Vec<u8>), OpenError> {
    let mut stream = net::connect(spec.addr, sources).await.map_err(HttpError::Io)?;
    stream.write_all(&spec.request(&[("Accept", "text/event-stream")])).await.map_err(HttpError::Io)?;
    let mut buf = Vec::new();
    let (head, used) = http::read_head(&mut stream, &mut buf, &mut 0).await?;
    if head.status != 200 {
        return Err(OpenError::Status(head.status));
    }
    if !head.event_stream {
        return Err(OpenError::NotEventStream);
    }
    buf.drain(..used);
    buf.shrink_to_fit();
    Ok((stream, head.body(false), buf))
}

/// The `ts` of a location event, or `None` for any other event.
///
/// An origin names its events `location` and makes the `id` the `ts` (the data's `ts` is the
/// fallback). Nchan sends unnamed events (`message`, unless `nchan_eventsource_event` names
/// them) whose `id` is its own `<time>:<tag>` message id, unrelated to the `ts`: there the
/// `ts` is always read from the data, whatever the event is called.
pub fn event_ts(server: ServerKind, event: &SseEvent<'_>) -> Option<u64> {
    match server {
        ServerKind::Origin if event.name != b"location" => None,
        ServerKind::Origin => event.id.and_then(parse_decimal).or_else(|| find_ts(event.data)),
        ServerKind::Nchan => find_ts(event.data),
    }
}

/// A rider's view of its driver's events.
#[derive(Debug)]
struct Follower {
    driver: usize,
    server: ServerKind,
    last_ts: u64,
}

impl Follower {
    fn on_event(&mut self, shared: &Shared, event: SseEvent<'_>, received_us: u64) {
        let Some(ts) = event_ts(self.server, &event) else {
            shared.events_other.inc();
            return;
        };
        match shared.window_start() {
            Some(start) if ts >= start => {}
            _ => {
                shared.events_before_window.inc();
                return;
            }
        }
        if ts <= self.last_ts {
            shared.events_duplicate.inc();
            return;
        }
        self.last_ts = ts;
        let sent_us = match shared.book.lookup(self.driver, ts) {
            Some((sent_us, pushed)) => {
                if !pushed {
                    shared.events_not_a_push.inc();
                }
                sent_us
            }
            None => {
                // Sent by another process: `ts` is the send time truncated to the
                // millisecond, so its middle is the best estimate.
                shared.latency_estimated.inc();
                ts * 1000 + 500
            }
        };
        shared.latency_us.record(received_us.saturating_sub(sent_us));
        shared.events_received.inc();
    }
}

/// Opens the rider's location stream, reports the outcome, then reads events until `exit`.
pub async fn stream(shared: Arc<Shared>, spec: RiderSpec, outcomes: mpsc::UnboundedSender<Outcome>) {
    // Connect time starts once a permit is held and the pacer lets the attempt go: waiting for
    // either is not the server's doing.
    let (opened, started) = {
        let _permit = shared.connect_limit.acquire().await;
        shared.pacer.wait().await;
        let started = Instant::now();
        let result = match tokio::time::timeout(shared.connect_timeout, open_stream(&spec, &shared.sources)).await {
            Ok(result) => result,
            Err(_) => Err(OpenError::Timeout),
        };
        (result, started)
    };
    let (mut socket, mut framing, leftover) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let _ = outcomes.send(Outcome { driver: spec.driver, is_driver: false, result: Err(e.kind()) });
            return;
        }
    };
    let connect_us = started.elapsed().as_micros() as u64;
    shared.connect_us.record(connect_us);
    let _ = outcomes.send(Outcome { driver: spec.driver, is_driver: false, result: Ok(connect_us) });
    drop(spec.request_head);

    let mut follower = Follower { driver: spec.driver, server: shared.server, last_ts: 0 };
    let mut reader = SseReader::new();
    let mut handle = |bytes: &[u8], framing: &mut BodyFraming, reader: &mut SseReader| -> Result<(), HttpError> {
        let received_us = epoch_us();
        if shared.window_start().is_some() {
            shared.stream_bytes.add(bytes.len() as u64);
        }
        framing.feed(bytes, |body| reader.feed(body, |event| follower.on_event(&shared, event, received_us)))?;
        Ok(())
    };
    let mut ended = handle(&leftover, &mut framing, &mut reader).is_err() || framing.is_done();
    drop(leftover);
    // Comments that came with the head (Nchan's `: hi`) count even if nothing else arrives.
    let mut comments = reader.extras.comments;
    shared.comments.add(comments);
    // Registered once, not per loop turn: every `cancelled()` call takes the token's lock, and
    // thousands of tasks doing so on every read serialise on it.
    let exit = shared.exit.cancelled();
    tokio::pin!(exit);
    let mut buf = [0u8; READ_BUF];
    while !ended {
        let read = tokio::select! {
            _ = &mut exit => break,
            read = socket.read(&mut buf) => read,
        };
        ended = match read {
            Ok(0) | Err(_) => true,
            Ok(n) => handle(&buf[..n], &mut framing, &mut reader).is_err() || framing.is_done(),
        };
        if reader.extras.comments != comments {
            shared.comments.add(reader.extras.comments - comments);
            comments = reader.extras.comments;
        }
    }
    shared.comments.add(reader.extras.comments - comments);
    if ended {
        shared.stream_ended();
        // Wait for `exit` so the socket count stays what the coordinator measures.
        shared.exit.cancelled().await;
    }
}

/// Sends one request and reads the whole response into `body`.
async fn exchange(
    socket: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
    body: &mut Vec<u8>,
    shared: &Shared,
) -> Result<Exchange, HttpError> {
    socket.write_all(request).await?;
    shared.poll.bytes_written.add(request.len() as u64);
    let mut wire = 0u64;
    let result = http::read_response(socket, buf, body, &mut wire).await;
    shared.poll.bytes_read.add(wire);
    result
}

/// Spreads riders' first polls over one interval so they do not all fire together.
fn poll_offset(slot: usize, interval: Duration) -> Duration {
    let micros = interval.as_micros().max(1) as u64;
    Duration::from_micros((slot as u64).wrapping_mul(2_654_435_761) % micros)
}

/// Connects, reports the outcome, then from `go` to `stop` polls the driver's location every
/// poll interval on one keep-alive connection (reconnecting if the server closes it).
pub async fn poll(shared: Arc<Shared>, spec: RiderSpec, outcomes: mpsc::UnboundedSender<Outcome>) {
    let (connected, started) = shared.connect_paced(spec.addr).await;
    let mut socket = match connected {
        Ok(socket) => {
            let connect_us = started.elapsed().as_micros() as u64;
            shared.connect_us.record(connect_us);
            let _ = outcomes.send(Outcome { driver: spec.driver, is_driver: false, result: Ok(connect_us) });
            Some(socket)
        }
        Err(kind) => {
            let _ = outcomes.send(Outcome { driver: spec.driver, is_driver: false, result: Err(kind) });
            return;
        }
    };
    tokio::select! {
        _ = shared.exit.cancelled() => return,
        _ = shared.go.cancelled() => {}
    }
    let interval = shared.poll_interval.max(Duration::from_millis(1));
    let first = tokio::time::Instant::now() + poll_offset(spec.slot, interval);
    let mut ticker = tokio::time::interval_at(first, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut etag: Option<String> = None;
    let mut last_seen = 0u64;
    let mut buf = Vec::with_capacity(512);
    let mut body = Vec::with_capacity(256);
    let poll = &shared.poll;
    // Registered once, not per loop turn: every `cancelled()` call takes the token's lock, and
    // thousands of tasks doing so on every read serialise on it.
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);

    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        if socket.is_none() {
            match net::connect(spec.addr, &shared.sources).await {
                Ok(fresh) => {
                    poll.reconnects.inc();
                    socket = Some(fresh);
                }
                Err(_) => {
                    poll.errors.inc();
                    continue;
                }
            }
        }
        let Some(live) = socket.as_mut() else { continue };
        let request = match &etag {
            Some(tag) => spec.request(&[("If-None-Match", tag)]),
            None => spec.request(&[]),
        };
        let sent = Instant::now();
        poll.requests.inc();
        let result =
            tokio::time::timeout(shared.connect_timeout, exchange(live, &request, &mut buf, &mut body, &shared)).await;
        let received_us = epoch_us();
        let done = match result {
            Ok(Ok(done)) => done,
            Ok(Err(_)) | Err(_) => {
                poll.errors.inc();
                socket = None;
                buf.clear();
                continue;
            }
        };
        poll.request_us.record(sent.elapsed().as_micros() as u64);
        if done.close {
            socket = None;
        }
        match done.status {
            200 => {
                poll.ok.inc();
                if done.etag.is_some() {
                    etag = done.etag;
                }
                if let Some(ts) = find_ts(&body)
                    && ts > last_seen
                {
                    // As for streams, only updates sent in the window count as useful.
                    if shared.window_start().is_some_and(|start| ts >= start) {
                        poll.fresh.inc();
                    }
                    note_staleness(&shared, spec.driver, last_seen, ts, received_us);
                    last_seen = ts;
                }
            }
            304 => poll.not_modified.inc(),
            404 => poll.not_found.inc(),
            _ => poll.other_status.inc(),
        }
    }
    shared.exit.cancelled().await;
}

/// Records, for every driver update first seen in this response, how long after its send it
/// was seen.
fn note_staleness(shared: &Shared, driver: usize, last_seen: u64, ts: u64, received_us: u64) {
    let Some(start) = shared.window_start() else { return };
    let known = shared.book.each_send_between(driver, last_seen, ts, start, |sent_us, pushed| {
        let staleness = received_us.saturating_sub(sent_us);
        shared.poll.staleness_us.record(staleness);
        if pushed {
            shared.poll.staleness_cell_change_us.record(staleness);
        }
    });
    if !known && ts >= start {
        shared.poll.staleness_estimated.inc();
        shared.poll.staleness_us.record(received_us.saturating_sub(ts * 1000 + 500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(name: &'a [u8], id: Option<&'a [u8]>, data: &'a [u8]) -> SseEvent<'a> {
        SseEvent { name, id, data }
    }

    #[test]
    fn an_origin_location_is_read_from_its_id_then_its_data() {
        let data = br#"{"driverId":"d-1","lat":1.0,"lng":2.0,"ts":1764240000123}"#;
        assert_eq!(
            event_ts(ServerKind::Origin, &event(b"location", Some(b"1764240000999"), data)),
            Some(1_764_240_000_999)
        );
        assert_eq!(event_ts(ServerKind::Origin, &event(b"location", None, data)), Some(1_764_240_000_123));
        assert_eq!(event_ts(ServerKind::Origin, &event(b"location", Some(b"x"), data)), Some(1_764_240_000_123));
        assert_eq!(event_ts(ServerKind::Origin, &event(b"surge", Some(b"5"), data)), None);
        assert_eq!(event_ts(ServerKind::Origin, &event(b"message", None, data)), None);
    }

    #[test]
    fn an_nchan_message_is_read_from_its_data_never_from_nchans_id() {
        let data = br#"{"driverId":"d-1","lat":1.0,"lng":2.0,"ts":1764240000123}"#;
        // Nchan's ids are `<time>:<tag>`, or a plain number with some settings: never the `ts`.
        for id in [&b"1795900270:1"[..], b"1795900270", b"1795900270:0,1795900270:3"] {
            assert_eq!(event_ts(ServerKind::Nchan, &event(b"message", Some(id), data)), Some(1_764_240_000_123));
        }
        assert_eq!(event_ts(ServerKind::Nchan, &event(b"location", None, data)), Some(1_764_240_000_123));
        assert_eq!(event_ts(ServerKind::Nchan, &event(b"message", Some(b"1:0"), b"hello")), None);
    }

    #[test]
    fn an_nchan_stream_parses_into_timestamps_whatever_the_split() {
        // As nginx 1.22 with Nchan 1.3.6 sends it: a greeting comment, then id/data pairs; a
        // body holding a newline arrives as two data lines.
        let stream = b": hi\n\nid: 1795900270:1\ndata: {\"driverId\":\"d\",\"ts\":124}\n\nid: 1795900278:1\ndata: {\"a\":1,\ndata: \"ts\":126}\n\n";
        for cut in 0..=stream.len() {
            let mut reader = SseReader::new();
            let mut seen = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                reader.feed(part, |e| seen.push(event_ts(ServerKind::Nchan, &e)));
            }
            assert_eq!(seen, vec![Some(124), Some(126)], "split at {cut}");
            assert_eq!(reader.extras.comments, 1);
        }
    }

    #[test]
    fn poll_offsets_stay_within_the_interval_and_spread() {
        let interval = Duration::from_secs(2);
        let offsets: Vec<Duration> = (0..1000).map(|s| poll_offset(s, interval)).collect();
        assert!(offsets.iter().all(|o| *o < interval));
        let first_half = offsets.iter().filter(|o| **o < interval / 2).count();
        assert!((400..600).contains(&first_half), "{first_half}");
    }
}
