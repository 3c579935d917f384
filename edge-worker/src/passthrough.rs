//! Every `/api/` request that is not a stream terminated at the edge goes to the origin as is:
//! same method, headers and body, and the origin's response body is returned as a stream, so the
//! ride status SSE flows event by event.

use worker::{Env, Fetch, Request, RequestInit, Response};

use crate::{bindings, error::EdgeError};

fn origin_url(env: &Env) -> Result<String, EdgeError> {
    Ok(env.var(bindings::ORIGIN_URL).map_err(|_| EdgeError::Config(bindings::ORIGIN_URL))?.to_string())
}

/// Forwards `req` to `ORIGIN_URL` with the same path and query.
///
/// # Errors
/// [`EdgeError::Config`] without `ORIGIN_URL`, [`EdgeError::OriginUnreachable`] (503 with
/// `Retry-After`) when the origin cannot be reached; the origin's own answers, errors included,
/// are passed back as they are.
pub async fn to_origin(req: Request, env: &Env) -> Result<Response, EdgeError> {
    let origin = origin_url(env)?;
    let url = req.url()?;
    let mut target = format!("{}{}", origin.trim_end_matches('/'), url.path());
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    let mut init = RequestInit::new();
    init.with_method(req.method()).with_headers(req.headers().clone());
    // The body stays a ReadableStream: nothing is buffered at the edge.
    init.with_body(req.inner().body().map(Into::into));
    let upstream = Request::new_with_init(&target, &init)?;
    Fetch::Request(upstream).send().await.map_err(EdgeError::OriginUnreachable)
}
