//! Just enough HTTP/1.1 client for the load generator, written over a bare `TcpStream`.
//!
//! A general client (hyper) keeps per-connection state and buffers sized for any response; a
//! rider here only ever sends one small GET and reads either an endless `text/event-stream` or
//! a small JSON body, and an Nchan publisher only sends small POSTs. Writing it by hand keeps
//! each of 20,000 riders down to a socket and a kilobyte, and lets the poll mode count the
//! exact bytes on the wire.

use std::net::{SocketAddr, ToSocketAddrs};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection before a full response head")]
    ClosedBeforeHead,
    #[error("the server closed the connection inside a body")]
    ClosedInBody,
    #[error("response head is not valid HTTP/1.1")]
    BadHead(#[from] httparse::Error),
    #[error("response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("chunked body framing is broken")]
    BadChunk,
}

impl HttpError {
    /// A short stable name for counting failures by kind.
    pub fn kind(&self) -> String {
        match self {
            Self::Io(e) => format!("io_{:?}", e.kind()).to_lowercase(),
            Self::ClosedBeforeHead => "closed_before_head".into(),
            Self::ClosedInBody => "closed_in_body".into(),
            Self::BadHead(_) => "bad_head".into(),
            Self::HeadTooLarge => "head_too_large".into(),
            Self::BadChunk => "bad_chunk".into(),
        }
    }
}

/// Why a `--url` was refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?}: only http://host:port URLs are supported")]
    Unsupported(String),
    #[error("{0:?}: the host does not resolve to an IPv4 address")]
    Unresolved(String),
}

/// An origin instance to send load to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` as written, for the `Host` header.
    pub authority: String,
    /// The resolved IPv4 socket address.
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `http://host[:port][/]` and resolves the host once.
    ///
    /// # Errors
    /// [`UrlError`] for other schemes, paths, or hosts without an IPv4 address.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let rest = url.strip_prefix("http://").ok_or_else(|| UrlError::Unsupported(url.to_owned()))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(UrlError::Unsupported(url.to_owned()));
        }
        let with_port = if authority.contains(':') { authority.to_owned() } else { format!("{authority}:80") };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|_| UrlError::Unresolved(url.to_owned()))?
            .find(SocketAddr::is_ipv4)
            .ok_or_else(|| UrlError::Unresolved(url.to_owned()))?;
        Ok(Self { authority: authority.to_owned(), addr })
    }

    /// The driver WebSocket URL on this instance.
    pub fn ws_rides_url(&self) -> String {
        format!("ws://{}/ws/rides", self.authority)
    }
}

/// A `GET` request with an optional bearer token and extra headers.
pub fn get_request(authority: &str, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut req = Vec::with_capacity(128 + path.len() + token.map_or(0, str::len));
    req.extend_from_slice(b"GET ");
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(authority.as_bytes());
    req.extend_from_slice(b"\r\n");
    if let Some(token) = token {
        req.extend_from_slice(b"Authorization: Bearer ");
        req.extend_from_slice(token.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    for (name, value) in extra {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(value.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req
}

/// A `POST` request with a JSON body, for a keep-alive connection.
pub fn post_json_request(authority: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = Vec::with_capacity(96 + authority.len() + path.len() + body.len());
    req.extend_from_slice(b"POST ");
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(authority.as_bytes());
    req.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    req.extend_from_slice(body.len().to_string().as_bytes());
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(body);
    req
}

/// What the load generator needs from a response head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<u64>,
    /// `Connection: close`: the connection cannot be reused.
    pub close: bool,
    pub event_stream: bool,
    pub etag: Option<String>,
    pub retry_after: Option<String>,
}

impl ResponseHead {
    /// How the body that follows is delimited.
    pub fn body(&self, request_was_head_like: bool) -> BodyFraming {
        if request_was_head_like || self.status == 304 || self.status == 204 || self.status < 200 {
            BodyFraming::Empty
        } else if self.chunked {
            BodyFraming::Chunked(ChunkedDecoder::default())
        } else if let Some(length) = self.content_length {
            BodyFraming::Length(length)
        } else {
            BodyFraming::UntilClose
        }
    }
}

/// Parses a response head at the start of `buf`.
///
/// Returns `None` while the head is incomplete, else the head and its length in bytes.
///
/// # Errors
/// [`HttpError::BadHead`] when the bytes are not an HTTP/1.x response.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let mut head = ResponseHead { status: response.code.unwrap_or(0), ..ResponseHead::default() };
    for header in response.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim();
        let name = header.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().split(',').any(|t| t.trim() == "chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.to_ascii_lowercase().split(',').any(|t| t.trim() == "close");
        } else if name.eq_ignore_ascii_case("content-type") {
            head.event_stream = value.to_ascii_lowercase().starts_with("text/event-stream");
        } else if name.eq_ignore_ascii_case("etag") {
            head.etag = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = Some(value.to_owned());
        }
    }
    if response.version == Some(0) {
        head.close = true;
    }
    Ok(Some((head, used)))
}

/// How a response body ends.
#[derive(Debug)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl BodyFraming {
    /// Passes body bytes from `input` to `out` and returns how many input bytes belonged to the
    /// body, so that what follows can be kept for the next response.
    ///
    /// # Errors
    /// [`HttpError::BadChunk`] for broken chunked framing.
    pub fn feed(&mut self, input: &[u8], mut out: impl FnMut(&[u8])) -> Result<usize, HttpError> {
        match self {
            Self::Empty => Ok(0),
            Self::Length(remaining) => {
                let take = input.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                out(&input[..take]);
                *remaining -= take as u64;
                Ok(take)
            }
            Self::Chunked(decoder) => decoder.feed(input, out),
            Self::UntilClose => {
                out(input);
                Ok(input.len())
            }
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Length(remaining) => *remaining == 0,
            Self::Chunked(decoder) => decoder.is_done(),
            Self::UntilClose => false,
        }
    }
}

/// Incremental decoder of `Transfer-Encoding: chunked` (how hyper frames an SSE stream).
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size line; `in_extension` after a `;`.
    #[default]
    SizeStart,
    Size {
        value: u64,
        in_extension: bool,
    },
    Data {
        remaining: u64,
    },
    /// The CRLF after a chunk's data; `seen_cr` once the `\r` is read.
    DataEnd {
        seen_cr: bool,
    },
    /// Trailer lines after the last chunk; `line_empty` while the current line has no bytes.
    Trailer {
        line_empty: bool,
    },
    Done,
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, passing payload bytes to `out`; returns the bytes consumed (all of
    /// `input` unless the body ended inside it).
    ///
    /// # Errors
    /// [`HttpError::BadChunk`] on a bad size line or missing CRLF.
    pub fn feed(&mut self, input: &[u8], mut out: impl FnMut(&[u8])) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::SizeStart | ChunkState::Size { .. } => {
                    let (mut value, mut in_extension, started) = match self.state {
                        ChunkState::Size { value, in_extension } => (value, in_extension, true),
                        _ => (0, false, false),
                    };
                    let byte = input[i];
                    i += 1;
                    match byte {
                        b'\n' if started => {
                            self.state = if value == 0 {
                                ChunkState::Trailer { line_empty: true }
                            } else {
                                ChunkState::Data { remaining: value }
                            };
                            continue;
                        }
                        b'\r' | b' ' | b'\t' if started => {}
                        b';' if started => in_extension = true,
                        _ if in_extension => {}
                        _ => {
                            let digit = (byte as char).to_digit(16).ok_or(HttpError::BadChunk)?;
                            value = value.checked_mul(16).ok_or(HttpError::BadChunk)? + u64::from(digit);
                        }
                    }
                    self.state = ChunkState::Size { value, in_extension };
                }
                ChunkState::Data { remaining } => {
                    let take = (input.len() - i).min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    out(&input[i..i + take]);
                    i += take;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        ChunkState::DataEnd { seen_cr: false }
                    } else {
                        ChunkState::Data { remaining }
                    };
                }
                ChunkState::DataEnd { seen_cr } => {
                    let byte = input[i];
                    i += 1;
                    self.state = match (byte, seen_cr) {
                        (b'\r', false) => ChunkState::DataEnd { seen_cr: true },
                        (b'\n', _) => ChunkState::SizeStart,
                        _ => return Err(HttpError::BadChunk),
                    };
                }
                ChunkState::Trailer { line_empty } => {
                    let byte = input[i];
                    i += 1;
                    self.state = match byte {
                        b'\n' if line_empty => ChunkState::Done,
                        b'\n' => ChunkState::Trailer { line_empty: true },
                        b'\r' => ChunkState::Trailer { line_empty },
                        _ => ChunkState::Trailer { line_empty: false },
                    };
                }
                ChunkState::Done => return Ok(i),
            }
        }
        Ok(i)
    }
}

/// Reads from `stream` until `buf` starts with a whole response head.
///
/// `buf` may already hold bytes (left over from a previous response). Returns the head and
/// its length; the bytes after it in `buf` are the start of the body. Every byte read is added
/// to `wire_bytes`.
///
/// # Errors
/// [`HttpError`] when the stream ends, fails or does not speak HTTP/1.1.
pub async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    wire_bytes: &mut u64,
) -> Result<(ResponseHead, usize), HttpError> {
    loop {
        if !buf.is_empty()
            && let Some(parsed) = parse_head(buf)?
        {
            return Ok(parsed);
        }
        if buf.len() >= MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
        buf.reserve(1024);
        let n = stream.read_buf(buf).await?;
        if n == 0 {
            return Err(HttpError::ClosedBeforeHead);
        }
        *wire_bytes += n as u64;
    }
}

/// How one request-response exchange on a keep-alive connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub status: u16,
    pub etag: Option<String>,
    /// The connection cannot carry another request.
    pub close: bool,
}

/// Reads one whole response (head and body, the body into `body`) from `socket`.
///
/// `buf` holds bytes already read; it is empty afterwards. Every byte read is added to `wire`.
///
/// # Errors
/// [`HttpError`] when the connection fails or ends early, or the response is not HTTP/1.1.
pub async fn read_response(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
    body: &mut Vec<u8>,
    wire: &mut u64,
) -> Result<Exchange, HttpError> {
    let (head, used) = read_head(socket, buf, wire).await?;
    let mut framing = head.body(false);
    body.clear();
    framing.feed(&buf[used..], |b| body.extend_from_slice(b))?;
    let mut close = head.close;
    let mut chunk = [0u8; 512];
    while !framing.is_done() {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            if matches!(framing, BodyFraming::UntilClose) {
                close = true;
                break;
            }
            return Err(HttpError::ClosedInBody);
        }
        *wire += n as u64;
        framing.feed(&chunk[..n], |b| body.extend_from_slice(b))?;
    }
    // Bytes past the body would belong to a response never asked for (no pipelining): dropped.
    buf.clear();
    Ok(Exchange { status: head.status, etag: head.etag, close })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_with_and_without_port() {
        let t = Target::parse("http://127.0.0.1:18080").expect("valid");
        assert_eq!(t.authority, "127.0.0.1:18080");
        assert_eq!(t.addr, "127.0.0.1:18080".parse().expect("addr"));
        assert_eq!(t.ws_rides_url(), "ws://127.0.0.1:18080/ws/rides");
        assert_eq!(Target::parse("http://127.0.0.1/").expect("valid").addr.port(), 80);
        for bad in ["https://127.0.0.1", "127.0.0.1:80", "http://127.0.0.1/x", "http://"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builds_a_get_with_token_and_extra_headers() {
        let req = get_request("h:1", "/p", Some("tok"), &[("If-None-Match", "\"e\"")]);
        assert_eq!(
            String::from_utf8(req).expect("ascii"),
            "GET /p HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer tok\r\nIf-None-Match: \"e\"\r\n\r\n"
        );
        let anonymous = get_request("h:1", "/sub/d", None, &[("Accept", "text/event-stream")]);
        assert_eq!(
            String::from_utf8(anonymous).expect("ascii"),
            "GET /sub/d HTTP/1.1\r\nHost: h:1\r\nAccept: text/event-stream\r\n\r\n"
        );
    }

    #[test]
    fn builds_a_json_post_with_its_length() {
        let req = post_json_request("h:1", "/pub/d-1", br#"{"ts":1}"#);
        assert_eq!(
            String::from_utf8(req).expect("ascii"),
            "POST /pub/d-1 HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"ts\":1}"
        );
    }

    #[test]
    fn parses_an_nchan_publish_answer_and_stream_head() {
        let publish = b"HTTP/1.1 202 Accepted\r\nServer: nginx/1.22.1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nqueue";
        let (head, used) = parse_head(publish).expect("valid").expect("complete");
        assert_eq!((head.status, head.close, head.content_length), (202, false, Some(5)));
        assert_eq!(&publish[used..], b"queue");
        // Nchan's EventSource answer has neither a length nor chunking: the body runs to the end.
        let stream =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nConnection: keep-alive\r\n\r\n";
        let (head, _) = parse_head(stream).expect("valid").expect("complete");
        assert!(head.event_stream);
        assert!(matches!(head.body(false), BodyFraming::UntilClose));
    }

    #[test]
    fn parses_an_sse_head() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello";
        let (head, used) = parse_head(raw).expect("valid").expect("complete");
        assert_eq!(head.status, 200);
        assert!(head.event_stream && head.chunked && !head.close);
        assert_eq!(&raw[used..], b"5\r\nhello");
        assert!(parse_head(&raw[..20]).expect("valid prefix").is_none());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn parses_a_poll_head_with_etag() {
        let raw = b"HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\nConnection: close\r\n\r\n";
        let (head, _) = parse_head(raw).expect("valid").expect("complete");
        assert_eq!(head.status, 304);
        assert_eq!(head.etag.as_deref(), Some("\"abc\""));
        assert!(head.close);
        assert!(matches!(head.body(false), BodyFraming::Empty));
    }

    fn decode_all(chunks: &[&[u8]]) -> Result<(Vec<u8>, bool, usize), HttpError> {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut consumed = 0;
        for chunk in chunks {
            consumed += decoder.feed(chunk, |b| out.extend_from_slice(b))?;
        }
        Ok((out, decoder.is_done(), consumed))
    }

    #[test]
    fn dechunks_whatever_the_split() {
        let body = b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let whole = body.len() - 4;
        for cut in 0..=body.len() {
            let (out, done, consumed) = decode_all(&[&body[..cut], &body[cut..]]).expect("valid");
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz", "cut {cut}");
            assert!(done);
            assert_eq!(consumed, whole, "cut {cut}");
        }
    }

    #[test]
    fn an_endless_stream_is_never_done() {
        let (out, done, _) = decode_all(&[b"3\r\nabc\r\n", b"2\r\nde\r\n"]).expect("valid");
        assert_eq!(out, b"abcde");
        assert!(!done);
    }

    #[test]
    fn broken_chunks_are_errors() {
        assert!(decode_all(&[b"zz\r\n"]).is_err());
        assert!(decode_all(&[b"3\r\nabcX"]).is_err());
        assert!(decode_all(&[b"FFFFFFFFFFFFFFFFFF\r\n"]).is_err());
    }

    #[test]
    fn content_length_bodies_stop_at_their_end() {
        let mut framing = BodyFraming::Length(4);
        let mut out = Vec::new();
        assert_eq!(framing.feed(b"abcdefg", |b| out.extend_from_slice(b)).expect("ok"), 4);
        assert_eq!(out, b"abcd");
        assert!(framing.is_done());
    }
}
