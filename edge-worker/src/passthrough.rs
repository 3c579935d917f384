//! Every `/api/` request that is not a stream terminated at the edge goes to the origin as is:
//! same method, headers and body, and the origin's response body is returned as a stream, so the
//! ride status SSE flows event by event.

use ridecast_protocol::Id;
use worker::{Env, Fetch, Headers, Method, Request, RequestInit, Response};

use crate::{auth, bindings, error::EdgeError};

fn origin_url(env: &Env) -> Result<String, EdgeError> {
    Ok(env.var(bindings::ORIGIN_URL).map_err(|_| EdgeError::Config(bindings::ORIGIN_URL))?.to_string())
}

/// A tracking token (one naming a `ride`) works only while its ride is on, which only the origin
/// knows: asks it, through the polling endpoint with the rider's own token, which the origin
/// refuses (403) once the ride has ended. Fails open when the origin cannot answer (an outage
/// must not cut riders off; the token's `exp` still bounds it).
///
/// # Errors
/// [`EdgeError::Forbidden`] when the origin refuses the token.
pub async fn check_tracking(req: &Request, env: &Env, driver: &Id) -> Result<(), EdgeError> {
    let token = auth::bearer(req).unwrap_or_default();
    let headers = Headers::new();
    headers.set("authorization", &format!("Bearer {token}"))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let target = format!("{}/api/drivers/{driver}/location", origin_url(env)?.trim_end_matches('/'));
    let answer = match Fetch::Request(Request::new_with_init(&target, &init)?).send().await {
        Ok(answer) => answer,
        Err(error) => {
            worker::console_warn!("tracking token not checked, origin unreachable: {error}");
            return Ok(());
        }
    };
    match answer.status_code() {
        401 | 403 => Err(EdgeError::Forbidden),
        _ => Ok(()),
    }
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
