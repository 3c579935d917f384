//! CORS at the edge, by the origin's rule: browsers on the origins listed in `CORS_ORIGINS` may
//! call the rider API on the edge's host; `*` counts only in dev (the worker running with the
//! public dev secret), as the origin accepts `*` in dev mode only.
//!
//! The edge answers preflights itself (they carry no token, so they never reach an object or
//! the origin) and sets the headers on every answer it gives, streams and passthroughs alike,
//! replacing whatever CORS headers the origin sent: the browser talks to the edge's host.

use worker::{Env, Headers, Request, Response};

use crate::bindings;

/// The origin's public dev-mode secret (`ridecast-origin` without `RIDECAST_TOKEN_SECRET`).
pub const DEV_SECRET: &str = "ridecast-dev-secret";
/// Methods the rider API uses.
const ALLOW_METHODS: &str = "GET, POST, DELETE";
/// Request headers a browser may send: the token, a JSON body, an EventSource's resume point.
const ALLOW_HEADERS: &str = "authorization, content-type, last-event-id";
/// Response headers a browser's script may read.
const EXPOSE_HEADERS: &str = "etag, retry-after";
/// How long a browser may reuse a preflight answer, in seconds.
const MAX_AGE_SECS: &str = "600";

/// Which browser origins are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CorsPolicy {
    any: bool,
    origins: Vec<String>,
}

impl CorsPolicy {
    /// Reads [`bindings::CORS_ORIGINS`]; `*` is ignored (with a warning) unless the worker's
    /// secret is the public dev secret.
    pub fn from_env(env: &Env) -> Self {
        let raw = env.var(bindings::CORS_ORIGINS).map(|v| v.to_string()).unwrap_or_default();
        let dev = env.secret(bindings::RIDECAST_TOKEN_SECRET).is_ok_and(|s| s.to_string() == DEV_SECRET);
        Self::parse(&raw, dev)
    }

    fn parse(raw: &str, dev: bool) -> Self {
        let mut policy = Self::default();
        for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if origin == "*" {
                if dev {
                    policy.any = true;
                } else {
                    worker::console_warn!("CORS_ORIGINS: `*` is ignored outside dev (a real secret is set)");
                }
            } else {
                policy.origins.push(origin.trim_end_matches('/').to_owned());
            }
        }
        policy
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow(&self, origin: Option<&str>) -> Option<String> {
        let origin = origin?;
        if self.any {
            return Some("*".to_owned());
        }
        self.origins.iter().any(|o| o == origin).then(|| origin.to_owned())
    }

    fn is_configured(&self) -> bool {
        self.any || !self.origins.is_empty()
    }
}

/// The request's `Origin` header.
pub fn request_origin(req: &Request) -> Option<String> {
    req.headers().get("origin").ok().flatten()
}

/// Whether `req` is a CORS preflight (the edge answers it itself).
pub fn is_preflight(req: &Request) -> bool {
    req.method() == worker::Method::Options
        && req.headers().get("access-control-request-method").ok().flatten().is_some()
}

/// The answer to a preflight: 204, with the CORS headers when the origin is allowed.
///
/// # Errors
/// Only if the runtime cannot build a response.
pub fn preflight(policy: &CorsPolicy, origin: Option<&str>) -> worker::Result<Response> {
    let headers = Headers::new();
    if policy.is_configured() {
        headers.set("vary", "Origin")?;
    }
    if let Some(allowed) = policy.allow(origin) {
        headers.set("access-control-allow-origin", &allowed)?;
        headers.set("access-control-allow-methods", ALLOW_METHODS)?;
        headers.set("access-control-allow-headers", ALLOW_HEADERS)?;
        headers.set("access-control-max-age", MAX_AGE_SECS)?;
    }
    Ok(Response::empty()?.with_status(204).with_headers(headers))
}

/// `response` with the edge's CORS headers for a request from `origin`, and without any the
/// origin set. The headers are copied: a fetched or an object's response has immutable ones.
///
/// # Errors
/// Only if the runtime cannot build headers.
pub fn apply(policy: &CorsPolicy, origin: Option<&str>, response: Response) -> worker::Result<Response> {
    if !policy.is_configured() {
        return Ok(response);
    }
    let headers = Headers::new();
    for (name, value) in response.headers().entries() {
        if !name.starts_with("access-control-") && name != "vary" {
            headers.append(&name, &value)?;
        }
    }
    let vary = match response.headers().get("vary")? {
        Some(v) if v.to_ascii_lowercase().contains("origin") => v,
        Some(v) => format!("{v}, Origin"),
        None => "Origin".to_owned(),
    };
    headers.set("vary", &vary)?;
    if let Some(allowed) = policy.allow(origin) {
        headers.set("access-control-allow-origin", &allowed)?;
        headers.set("access-control-expose-headers", EXPOSE_HEADERS)?;
    }
    Ok(response.with_headers(headers))
}
