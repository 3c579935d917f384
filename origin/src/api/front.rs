//! The connection front: reads each new connection's first request head itself.
//!
//! Rider SSE streams are most of an instance's connections and live for minutes. Serving them
//! through a general HTTP server keeps that server's read and write buffers (tens of KiB) for
//! the stream's whole life, and lets it queue frames for a stalled reader. So the front reads
//! the head into a small buffer, lets the axum router decide (auth, ids, which hub: the same
//! code either way), and when the answer is an SSE stream it writes the response head, drops
//! the buffer, and serves the stream straight on the socket. Every other connection goes to
//! hyper, with the bytes already read replayed first.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, response::Response};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Version, header};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::api::{
    error::ApiError,
    rider_sse::{SseHandoff, SseStream},
};

/// Longest request head accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 48;
/// Path prefix of the streams the front serves itself.
const SSE_PREFIX: &str = "/api/sse/";

/// A connection's place in the instance's connection limit (and its gauge). Cloned into
/// every request a hyper connection serves, so that an upgraded WebSocket, which outlives
/// the HTTP connection that carried its upgrade, keeps the place until it closes.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code, reason = "held only to be dropped")] Arc<dyn Send + Sync>);

impl ConnectionSlot {
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self(Arc::new(held))
    }
}

impl std::fmt::Debug for ConnectionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSlot")
    }
}

/// Serves one accepted connection to its end; `slot` is released when the connection (and
/// anything upgraded from it) ends.
///
/// A task's future is as large as its largest state, for the task's whole life. So the short
/// first phase and the hyper path are boxed, and an SSE stream moves to a task of its own
/// that holds only what streaming needs: memory per rider is that task.
pub async fn serve_connection(
    tcp: TcpStream,
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    slot: ConnectionSlot,
) {
    match Box::pin(first_request(tcp, router.clone(), header_timeout)).await {
        FirstRequest::Sse(tcp, stream) => {
            tracker.spawn(async move {
                stream.serve_on(tcp).await;
                drop(slot);
            });
        }
        FirstRequest::Other(tcp, already_read) => {
            Box::pin(serve_with_hyper(tcp, already_read, router, header_timeout, shutdown, slot)).await;
        }
        FirstRequest::Answered => {}
    }
}

/// What the first request on a connection turned out to be.
enum FirstRequest {
    /// An authorised SSE stream whose response head is already written.
    Sse(TcpStream, SseStream),
    /// Anything else, for hyper, with the bytes read so far.
    Other(TcpStream, Bytes),
    /// Answered (an error) or closed.
    Answered,
}

async fn first_request(mut tcp: TcpStream, router: Router, header_timeout: Duration) -> FirstRequest {
    let mut buffer = BytesMut::with_capacity(1024);
    let head = match tokio::time::timeout(header_timeout, read_head(&mut tcp, &mut buffer)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) | Err(_) => return FirstRequest::Answered, // closed early, or too slow (slowloris)
        Ok(Err(HeadError::TooLarge)) => return answered(&mut tcp, too_large()).await,
        Ok(Err(HeadError::Malformed)) => return answered(&mut tcp, malformed()).await,
        Ok(Err(HeadError::Io(_))) => return FirstRequest::Answered,
    };
    if head.method != Method::GET || !head.path.starts_with(SSE_PREFIX) {
        return FirstRequest::Other(tcp, buffer.freeze());
    }
    let response = router.oneshot(head.into_request()).await.unwrap_or_else(|never| match never {});
    match response.extensions().get::<SseHandoff>().and_then(SseHandoff::take) {
        Some(stream) => {
            let head = encode_head(&response, None);
            drop(response);
            match tcp.write_all(&head).await {
                Ok(()) => FirstRequest::Sse(tcp, stream),
                Err(_) => FirstRequest::Answered,
            }
        }
        None => answered(&mut tcp, response).await,
    }
}

async fn answered(tcp: &mut TcpStream, response: Response) -> FirstRequest {
    answer(tcp, response).await;
    FirstRequest::Answered
}

async fn serve_with_hyper(
    tcp: TcpStream,
    already_read: Bytes,
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
    slot: ConnectionSlot,
) {
    let io = TokioIo::new(Rewind { prefix: already_read, inner: tcp });
    let router = router.layer(axum::Extension(slot));
    let service = hyper_util::service::TowerToHyperService::new(router);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // Bounds what hyper can hold for a request served here. Twice the head limit, so that a
        // later request's head between the two reaches `refuse_large_heads` and gets the
        // contract's answer; beyond it hyper answers a bare 431 itself.
        .max_buf_size(2 * MAX_HEAD_BYTES)
        .serve_connection(io, service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_connection_end(result),
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            log_connection_end(connection.await);
        }
    }
}

fn log_connection_end(result: Result<(), hyper::Error>) {
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    method: Method,
    path: String,
    uri: String,
    version: Version,
    headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    fn into_request(self) -> Request<Body> {
        let mut request = Request::new(Body::empty());
        *request.method_mut() = self.method;
        *request.version_mut() = self.version;
        if let Ok(uri) = self.uri.parse() {
            *request.uri_mut() = uri;
        }
        let headers = request.headers_mut();
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) =
                (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value))
            {
                headers.append(name, value);
            }
        }
        request
    }
}

#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("request head larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("malformed request head")]
    Malformed,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads until a complete head is in `buffer` (which keeps every byte read, for replay).
/// `None`: the client closed before sending one.
async fn read_head(tcp: &mut TcpStream, buffer: &mut BytesMut) -> Result<Option<Head>, HeadError> {
    loop {
        if tcp.read_buf(buffer).await? == 0 {
            return Ok(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buffer) {
            Ok(httparse::Status::Complete(_)) => {
                let method =
                    request.method.and_then(|m| Method::from_bytes(m.as_bytes()).ok()).ok_or(HeadError::Malformed)?;
                let uri = request.path.ok_or(HeadError::Malformed)?.to_owned();
                let path = uri.split('?').next().unwrap_or_default().to_owned();
                let version = if request.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
                let headers = request.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect();
                return Ok(Some(Head { method, path, uri, version, headers }));
            }
            Ok(httparse::Status::Partial) if buffer.len() >= MAX_HEAD_BYTES => return Err(HeadError::TooLarge),
            Ok(httparse::Status::Partial) => {
                if buffer.capacity() - buffer.len() < 512 {
                    buffer.reserve(buffer.len());
                }
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        }
    }
}

/// Router middleware holding every request to the head limits, including those after a
/// connection's first, which hyper parses: [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`], answered
/// 431 `too_large` as the first request is.
pub async fn refuse_large_heads(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let headers = request.headers();
    // The head as it was on the wire, near enough: request line, `name: value\r\n` lines, `\r\n`.
    // Measured, not formatted: this runs for every request (polling clients make many).
    let target = request.uri().path_and_query().map_or(1, |target| target.as_str().len());
    let request_line = request.method().as_str().len() + target + " HTTP/1.1\r\n ".len();
    let header_lines: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if headers.len() > MAX_HEADERS || request_line + header_lines + 2 > MAX_HEAD_BYTES {
        return too_large();
    }
    next.run(request).await
}

fn too_large() -> Response {
    let mut response = axum::response::IntoResponse::into_response(ApiError::TooLarge("request head"));
    *response.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    response
}

fn malformed() -> Response {
    axum::response::IntoResponse::into_response(ApiError::BadRequest("malformed HTTP request".into()))
}

/// A status line and headers ending the connection after the body: with `Some(length)` a
/// sized body follows, with `None` the body runs until the connection closes (SSE streams).
fn encode_head(response: &Response, content_length: Option<usize>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let status = response.status();
    head.extend_from_slice(
        format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or("")).as_bytes(),
    );
    for (name, value) in response.headers() {
        if name == header::CONNECTION || name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(length) = content_length {
        head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// Writes a complete (small) response and closes.
async fn answer(tcp: &mut TcpStream, response: Response) {
    let (parts, body) = response.into_parts();
    let Ok(collected) = tokio::time::timeout(Duration::from_secs(5), body.collect()).await else { return };
    let body = collected.map(|c| c.to_bytes()).unwrap_or_default();
    let mut bytes = encode_head(&Response::from_parts(parts, Body::empty()), Some(body.len()));
    bytes.extend_from_slice(&body);
    let _ = tcp.write_all(&bytes).await;
    let _ = tcp.shutdown().await;
}

/// A socket whose first reads return bytes already taken from it.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // An emptied `Bytes` still holds its whole buffer; this one would otherwise
                // live as long as the connection (and any WebSocket upgraded from it).
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Answers a connection the instance has no room for, and closes it: SSE requests get the
/// contract's 200 `retry:` stream (EventSource would give up on a 503), everything else 503.
pub async fn refuse_connection(mut tcp: TcpStream, retry_ms: u64) {
    let mut buffer = BytesMut::with_capacity(1024);
    let head = match tokio::time::timeout(Duration::from_secs(2), read_head(&mut tcp, &mut buffer)).await {
        Ok(Ok(Some(head))) => head,
        _ => return,
    };
    let response = if head.path.starts_with(SSE_PREFIX) {
        crate::api::rider_sse::refusal(retry_ms, "this instance is full; reconnect")
    } else {
        axum::response::IntoResponse::into_response(ApiError::Unavailable("the instance is full"))
    };
    answer(&mut tcp, response).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every open connection holds one of these futures while it lives.
    #[tokio::test]
    async fn a_connection_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tcp = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let future = serve_connection(
            tcp,
            Router::new(),
            Duration::from_secs(1),
            CancellationToken::new(),
            TaskTracker::new(),
            ConnectionSlot::new(()),
        );
        assert!(std::mem::size_of_val(&future) <= 384, "{} bytes", std::mem::size_of_val(&future));
    }
}
