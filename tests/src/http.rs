//! Plain HTTP requests with reqwest, and the contract's error-body check.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// Something riders talk HTTP to: an origin, or the edge worker in front of one.
pub trait Endpoint {
    /// The address it listens on.
    fn addr(&self) -> SocketAddr;

    /// `http://<addr><path>`.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }
}

/// How a request carries its token.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// No token at all.
    None,
    /// `Authorization: Bearer <t>`.
    Bearer(&'a str),
    /// `?token=<t>`, for browser APIs that cannot set headers.
    Query(&'a str),
}

impl Auth<'_> {
    /// `url` with `?token=` appended when the token travels in the query.
    pub fn apply_to_url(&self, url: &str) -> String {
        match self {
            Auth::Query(token) => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}token={token}")
            }
            Auth::None | Auth::Bearer(_) => url.to_owned(),
        }
    }

    /// The `Authorization` header value, if the token travels in a header.
    pub fn header(&self) -> Option<String> {
        match self {
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
            Auth::None | Auth::Query(_) => None,
        }
    }
}

/// A reqwest client for one test: no proxies (the environment may name one), no pooling across
/// tests (each test has its own runtime).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("building a reqwest client")
}

/// `method url` with `auth` and, if given, `body` sent exactly as it is, labelled JSON.
/// Transport errors fail the test.
pub async fn send(
    method: reqwest::Method,
    url: &str,
    auth: Auth<'_>,
    body: Option<reqwest::Body>,
) -> reqwest::Response {
    let url = auth.apply_to_url(url);
    let mut request = client().request(method.clone(), &url).timeout(Duration::from_secs(10));
    if let Some(body) = body {
        request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    }
    if let Some(value) = auth.header() {
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    request.send().await.unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

/// `POST url` with a JSON `body` as it is (malformed bodies too).
pub async fn post_json(url: &str, auth: Auth<'_>, body: impl Into<reqwest::Body>) -> reqwest::Response {
    send(reqwest::Method::POST, url, auth, Some(body.into())).await
}

/// `DELETE url`.
pub async fn delete(url: &str, auth: Auth<'_>) -> reqwest::Response {
    send(reqwest::Method::DELETE, url, auth, None).await
}

/// `GET url` with `auth` and extra headers. Transport errors fail the test.
pub async fn get(url: &str, auth: Auth<'_>, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(auth.apply_to_url(url)).timeout(Duration::from_secs(10));
    if let Some(value) = auth.header() {
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap_or_else(|e| panic!("GET {url} failed: {e}"))
}

/// The status of a bare `GET url`, or `None` if nothing answered within a second.
pub async fn status_of(url: &str) -> Option<u16> {
    let response = client().get(url).timeout(Duration::from_secs(1)).send().await.ok()?;
    Some(response.status().as_u16())
}

/// An error answer as the contract spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAnswer {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// Checks that `response` is an HTTP error with `status` and the contract's body,
/// `{"error":{"code":"<snake_case>","message":"<text>"}}`, served as JSON.
///
/// # Panics
/// If the status, the content type or the body shape differ; `context` says which request.
pub async fn expect_error(response: reqwest::Response, status: u16, context: &str) -> ErrorAnswer {
    let got = response.status().as_u16();
    let content_type = header(&response, "content-type");
    let retry_after = header(&response, "retry-after");
    let body = response.text().await.unwrap_or_default();
    assert_eq!(got, status, "{context}: expected HTTP {status}, got {got} with body {body:?}");
    if status == 503 {
        assert!(retry_after.is_some(), "{context}: a 503 must carry Retry-After");
    }
    assert!(
        content_type.as_deref().is_some_and(|t| t.starts_with("application/json")),
        "{context}: HTTP errors are JSON, got Content-Type {content_type:?} for body {body:?}"
    );
    error_body(&body, status, context)
}

/// Checks an error body's shape (shared by HTTP and WebSocket-handshake refusals).
///
/// # Panics
/// If `body` is not exactly `{"error":{"code":"<snake_case>","message":"<text>"}}`.
pub fn error_body(body: &str, status: u16, context: &str) -> ErrorAnswer {
    let value: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{context}: error body is not JSON ({e}): {body:?}"));
    let outer = value.as_object().unwrap_or_else(|| panic!("{context}: error body is not an object: {body}"));
    assert_eq!(outer.len(), 1, "{context}: error body has exactly one key, \"error\": {body}");
    let inner = outer
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{context}: error body lacks an \"error\" object: {body}"));
    let code = inner.get("code").and_then(Value::as_str);
    let message = inner.get("message").and_then(Value::as_str);
    let (Some(code), Some(message)) = (code, message) else {
        panic!("{context}: \"error\" needs string \"code\" and \"message\": {body}");
    };
    assert_eq!(inner.len(), 2, "{context}: \"error\" holds only code and message: {body}");
    assert!(is_snake_case(code), "{context}: error code {code:?} is not snake_case");
    assert!(!message.trim().is_empty(), "{context}: error message is empty: {body}");
    ErrorAnswer { status, code: code.to_owned(), message: message.to_owned() }
}

/// One response header as text.
pub fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `[a-z][a-z0-9_]*` without doubled or trailing underscores.
pub fn is_snake_case(code: &str) -> bool {
    code.starts_with(|c: char| c.is_ascii_lowercase())
        && code.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !code.ends_with('_')
        && !code.contains("__")
}
