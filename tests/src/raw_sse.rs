//! SSE over a TCP socket driven by hand.
//!
//! reqwest hides what the tests must see byte for byte: header spellings, comment lines,
//! `retry:` frames, whether a stream ended cleanly (chunked terminator) or was cut. It also
//! always reads, and the stalled-reader test needs a client that *stops* reading, with a small
//! receive buffer and a small MSS so the origin's socket fills after a few kilobytes instead
//! of megabytes of kernel autotuning.

use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::driver::Fix;
use crate::rider::SeenLocation;
use crate::wait::EXPECT;

/// Socket options applied before connecting.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawOptions {
    /// `SO_RCVBUF`, in bytes: how much the kernel buffers for us while we do not read.
    pub recv_buffer: Option<usize>,
    /// `TCP_MAXSEG`: a small MSS also keeps the server's auto-tuned send buffer small.
    pub mss: Option<u32>,
    /// A path to `GET` first on the same keep-alive connection, so that the stream is requested
    /// on a *reused* connection (servers may serve those differently from fresh ones).
    pub warm_up: Option<&'static str>,
}

impl RawOptions {
    /// Options for a reader that will stop reading: kernel buffers as small as Linux allows.
    pub fn stalling() -> Self {
        Self { recv_buffer: Some(4096), mss: Some(536), warm_up: None }
    }

    /// The same options, with the stream requested after a `GET /healthz` on the same connection.
    pub fn on_a_reused_connection(self) -> Self {
        Self { warm_up: Some("/healthz"), ..self }
    }
}

/// One SSE frame: the lines up to a blank line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseFrame {
    /// Comment lines (`: text`), without the colon and one leading space.
    pub comments: Vec<String>,
    /// Field lines as `(name, value)`, value without its one leading space.
    pub fields: Vec<(String, String)>,
}

impl SseFrame {
    /// The last value of `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `event:`.
    pub fn event(&self) -> Option<&str> {
        self.field("event")
    }

    /// `id:`.
    pub fn id(&self) -> Option<&str> {
        self.field("id")
    }

    /// All `data:` lines joined by `\n`, or `None` without any.
    pub fn data(&self) -> Option<String> {
        let lines: Vec<&str> = self.fields.iter().filter(|(n, _)| n == "data").map(|(_, v)| v.as_str()).collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// `retry:` as milliseconds.
    ///
    /// # Panics
    /// If the field is present but not a decimal integer.
    pub fn retry(&self) -> Option<u64> {
        self.field("retry").map(|v| v.parse().unwrap_or_else(|_| panic!("retry: {v:?} is not a number of ms")))
    }

    /// Whether the frame dispatches an event (it has data).
    pub fn is_event(&self) -> bool {
        self.data().is_some()
    }

    /// Whether the frame is comments only (a heartbeat).
    pub fn is_comment_only(&self) -> bool {
        !self.comments.is_empty() && self.fields.is_empty()
    }
}

/// What a raw stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Frame(SseFrame),
    /// The body ended: `clean` if the server finished it (chunked terminator or full length),
    /// not if the connection was cut.
    End {
        clean: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(usize),
    DataEnd,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked(Chunk),
    Length(usize),
    UntilClose,
}

/// What a stalled location stream delivered once it was read again ([`RawSse::catch_up_to`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaughtUp {
    /// Location events received, the newest included.
    pub events: usize,
    /// Their size on the wire.
    pub bytes: usize,
}

/// An SSE (or any HTTP/1.1 GET) response read off a raw socket.
#[derive(Debug)]
pub struct RawSse {
    stream: TcpStream,
    status: u16,
    headers: Vec<(String, String)>,
    framing: Framing,
    /// Bytes read but not yet de-chunked.
    raw: Vec<u8>,
    /// Body bytes not yet cut into frames.
    body: Vec<u8>,
    eof: bool,
    /// The connection was reset rather than closed.
    reset: bool,
}

impl RawSse {
    /// Sends `GET target` to `addr` with `headers` and reads the response head.
    ///
    /// # Panics
    /// If the connection or the head fails within [`EXPECT`].
    pub async fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Self {
        Self::open_with(addr, target, headers, RawOptions::default()).await
    }

    /// [`RawSse::open`] with socket options.
    pub async fn open_with(addr: SocketAddr, target: &str, headers: &[(&str, &str)], options: RawOptions) -> Self {
        let stream = connect(addr, options).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        let mut this = Self {
            stream,
            status: 0,
            headers: Vec::new(),
            framing: Framing::UntilClose,
            raw: Vec::new(),
            body: Vec::new(),
            eof: false,
            reset: false,
        };
        if let Some(warm_up) = options.warm_up {
            this.request(addr, warm_up, &[]).await;
            let what = format!("the whole answer to GET {warm_up}");
            crate::wait::within(EXPECT, what, this.read_whole_body()).await;
            assert!(
                !this.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")),
                "GET {warm_up} closed the connection; it cannot be reused"
            );
        }
        this.request(addr, target, headers).await;
        this
    }

    /// Sends one request and reads its response head.
    async fn request(&mut self, addr: SocketAddr, target: &str, headers: &[(&str, &str)]) {
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.stream.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("sending GET {target}: {e}"));
        self.headers.clear();
        self.body.clear();
        crate::wait::within(EXPECT, format!("the response head of GET {target}"), self.read_head()).await;
    }

    /// Reads a length-delimited or chunked body to its end.
    async fn read_whole_body(&mut self) {
        while !matches!(self.framing, Framing::Chunked(Chunk::Done) | Framing::Length(0)) {
            assert!(self.framing != Framing::UntilClose, "a close-delimited answer cannot be followed by another");
            self.fill().await;
            assert!(!self.eof, "the connection closed before the body was complete");
        }
    }

    /// Drops the connection abruptly: `SO_LINGER` 0 makes the kernel answer with a RST instead
    /// of the orderly FIN, as when a client dies with data unread.
    pub fn reset(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }

    /// The response status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// A response header (case-insensitive name); repeated headers are joined with `, `.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> =
            self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// The next frame or the end of the body, or `None` if nothing completes within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Next> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(frame) = self.take_frame() {
                return Some(Next::Frame(frame));
            }
            if self.framing == Framing::Chunked(Chunk::Done) || self.framing == Framing::Length(0) {
                return Some(Next::End { clean: true });
            }
            if self.eof {
                // A close-delimited body ends cleanly with the connection; anything else was cut.
                return Some(Next::End { clean: self.framing == Framing::UntilClose && !self.reset });
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(()) => {}
                Err(_) => return None,
            }
        }
    }

    /// The next frame.
    ///
    /// # Panics
    /// If the stream ends or nothing arrives within `limit`.
    pub async fn next_frame(&mut self, limit: Duration, what: &str) -> SseFrame {
        match self.next_within(limit).await {
            Some(Next::Frame(frame)) => frame,
            Some(Next::End { clean }) => panic!("SSE stream ended (clean: {clean}) while waiting for {what}"),
            None => panic!("timed out after {limit:?} waiting for {what}"),
        }
    }

    /// The next frame that dispatches an event, skipping comments and `retry:`-only frames.
    pub async fn next_event(&mut self, limit: Duration, what: &str) -> SseFrame {
        let deadline = Instant::now() + limit;
        loop {
            let frame = self.next_frame(deadline.saturating_duration_since(Instant::now()), what).await;
            if frame.is_event() {
                return frame;
            }
        }
    }

    /// Reads until the body ends, returning the frames seen before the end and whether it was clean.
    ///
    /// # Panics
    /// If the stream is still open after `limit`.
    pub async fn expect_end(&mut self, limit: Duration, what: &str) -> (Vec<SseFrame>, bool) {
        let deadline = Instant::now() + limit;
        let mut frames = Vec::new();
        loop {
            match self.next_within(deadline.saturating_duration_since(Instant::now())).await {
                Some(Next::Frame(frame)) => frames.push(frame),
                Some(Next::End { clean }) => return (frames, clean),
                None => panic!("SSE stream still open after {limit:?}; expected it to end: {what}"),
            }
        }
    }

    /// Reads a driver's location stream that stopped being read, until `newest` (from `driver`)
    /// arrives: first what the kernel held, then the origin's one pending value. Location ids
    /// must only grow on the way.
    ///
    /// # Panics
    /// If an id does not grow, the stream ends first, nothing comes for [`EXPECT`], catching up
    /// takes longer than four times that, or the last event is not `newest`.
    pub async fn catch_up_to(&mut self, driver: &str, newest: &Fix) -> CaughtUp {
        let mut received = 0usize;
        let mut bytes = 0usize;
        let mut last_id = 0u64;
        let resumed = async {
            loop {
                match self.next_within(EXPECT).await {
                    Some(Next::Frame(frame)) if frame.is_event() => {
                        let data = frame.data().unwrap_or_default();
                        // The frame on the wire: `event: location\nid: <13 digits>\ndata: ...\n\n`.
                        bytes += data.len() + "event: location\nid: 1764240000123\ndata: \n\n".len();
                        let location = SeenLocation::parse(&data);
                        assert!(location.ts > last_id, "ids only grow: {} after {last_id}", location.ts);
                        last_id = location.ts;
                        received += 1;
                        if location.ts == newest.ts {
                            location.assert_is(driver, newest, "the stalled rider's last event");
                            return;
                        }
                    }
                    Some(Next::Frame(_)) => {}
                    Some(Next::End { clean }) => panic!(
                        "the stalled rider's stream ended (clean: {clean}) after {received} events, before the newest \
                         value"
                    ),
                    None => panic!(
                        "the stalled rider got {received} events, the last with ts {last_id}, and then nothing for \
                         {EXPECT:?}; expected the newest value (ts {})",
                        newest.ts
                    ),
                }
            }
        };
        crate::wait::within(EXPECT * 4, "the stalled rider to catch up", resumed).await;
        CaughtUp { events: received, bytes }
    }

    async fn read_head(&mut self) {
        loop {
            if let Some(end) = find(&self.raw, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                self.raw.drain(..end + 4);
                self.parse_head(&head);
                self.decode();
                return;
            }
            assert!(self.read_some().await > 0, "connection closed before the response head was complete");
        }
    }

    fn parse_head(&mut self, head: &str) {
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        assert!(version.starts_with("HTTP/1."), "not an HTTP/1 status line: {status_line:?}");
        self.status =
            parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                self.headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
        let chunked = self.header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let length = self.header("content-length").and_then(|l| l.parse::<usize>().ok());
        self.framing = match (chunked, length) {
            (true, _) => Framing::Chunked(Chunk::Size),
            (false, Some(length)) => Framing::Length(length),
            (false, None) => Framing::UntilClose,
        };
    }

    /// Reads once from the socket and decodes what arrived.
    async fn fill(&mut self) {
        if self.read_some().await == 0 {
            self.eof = true;
        }
        self.decode();
    }

    async fn read_some(&mut self) -> usize {
        let mut buffer = [0u8; 16 * 1024];
        match self.stream.read(&mut buffer).await {
            Ok(n) => {
                self.raw.extend_from_slice(&buffer[..n]);
                n
            }
            // A reset is an end too, not a clean one.
            Err(_) => {
                self.reset = true;
                0
            }
        }
    }

    /// Moves body bytes from `raw` to `body`, undoing chunked transfer encoding.
    fn decode(&mut self) {
        loop {
            match self.framing {
                Framing::UntilClose => {
                    self.body.append(&mut self.raw);
                    return;
                }
                Framing::Length(remaining) => {
                    let n = remaining.min(self.raw.len());
                    self.body.extend(self.raw.drain(..n));
                    self.framing = Framing::Length(remaining - n);
                    return;
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(end) = find(&self.raw, b"\r\n") else { return };
                    let line = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                    self.raw.drain(..end + 2);
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size =
                        usize::from_str_radix(size, 16).unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                    self.framing = Framing::Chunked(if size == 0 { Chunk::Done } else { Chunk::Data(size) });
                }
                Framing::Chunked(Chunk::Data(remaining)) => {
                    if self.raw.is_empty() {
                        return;
                    }
                    let n = remaining.min(self.raw.len());
                    self.body.extend(self.raw.drain(..n));
                    self.framing =
                        Framing::Chunked(if n == remaining { Chunk::DataEnd } else { Chunk::Data(remaining - n) });
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if self.raw.len() < 2 {
                        return;
                    }
                    assert_eq!(&self.raw[..2], b"\r\n", "chunk data must end with CRLF");
                    self.raw.drain(..2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                // Trailers after the last chunk are ignored.
                Framing::Chunked(Chunk::Done) => return,
            }
        }
    }

    /// Cuts the first complete frame (lines up to a blank line) off `body`.
    fn take_frame(&mut self) -> Option<SseFrame> {
        let mut frame = SseFrame::default();
        let mut start = 0;
        loop {
            let newline = self.body[start..].iter().position(|&b| b == b'\n')?;
            let mut line = &self.body[start..start + newline];
            start += newline + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                if frame == SseFrame::default() {
                    // A stray blank line dispatches nothing; keep looking.
                    continue;
                }
                self.body.drain(..start);
                return Some(frame);
            }
            let line = String::from_utf8_lossy(line);
            if let Some(comment) = line.strip_prefix(':') {
                frame.comments.push(comment.strip_prefix(' ').unwrap_or(comment).to_owned());
            } else {
                let (name, value) = line.split_once(':').unwrap_or((&line, ""));
                frame.fields.push((name.to_owned(), value.strip_prefix(' ').unwrap_or(value).to_owned()));
            }
        }
    }
}

fn connect(addr: SocketAddr, options: RawOptions) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(size) = options.recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(mss) = options.mss {
        socket.set_tcp_mss(mss)?;
    }
    // Options such as the receive window only take full effect when set before the handshake,
    // hence a blocking connect (to loopback: immediate) and only then non-blocking mode.
    socket.connect(&addr.into())?;
    socket.set_nonblocking(true)?;
    TcpStream::from_std(std::net::TcpStream::from(socket))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A control experiment for the stalled-reader test: a loopback connection whose client never
/// reads, set up with the same [`RawOptions`], to which the test offers the same frames at the
/// same moments as the origin gets them, writing each one only if the socket takes it at once.
///
/// That is what an ideal latest-only server does, so the bytes it got rid of are what the
/// kernel alone buffers for such a reader under the same timing; a server's own queue shows up
/// as bytes beyond that. Kernel buffering depends on how the server's socket packs small writes
/// (`TCP_NODELAY` lets more through), so the probe runs one server socket each way and reports
/// the larger figure.
#[derive(Debug)]
pub struct KernelBufferProbe {
    lanes: Vec<ProbeLane>,
}

#[derive(Debug)]
struct ProbeLane {
    server: TcpStream,
    _client: TcpStream,
    accepted: usize,
}

impl KernelBufferProbe {
    /// Connects a non-reading client with `options` to a local server socket.
    ///
    /// # Panics
    /// If loopback sockets cannot be set up.
    pub async fn new(options: RawOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding a probe listener");
        let addr = listener.local_addr().expect("probe listener address");
        let mut lanes = Vec::new();
        for nodelay in [false, true] {
            let client = connect(addr, options).expect("connecting the probe client");
            let (server, _) = listener.accept().await.expect("accepting the probe client");
            server.set_nodelay(nodelay).expect("setting TCP_NODELAY on the probe");
            lanes.push(ProbeLane { server, _client: client, accepted: 0 });
        }
        Self { lanes }
    }

    /// Writes as much of `frame` as each socket takes right now, without waiting.
    pub fn offer(&mut self, frame: &[u8]) {
        for lane in &mut self.lanes {
            if let Ok(n) = lane.server.try_write(frame) {
                lane.accepted += n;
            }
        }
    }

    /// Bytes the kernel took so far (the larger of the two socket settings).
    pub fn accepted(&self) -> usize {
        self.lanes.iter().map(|lane| lane.accepted).max().unwrap_or(0)
    }
}
