//! The worker's `fetch` entry point: CORS preflights, the token check at the edge, then a Durable
//! Object or the origin; CORS headers on every answer.
//!
//! Order of checks follows the contract: 401 (token), 400 (ids), 403 (not allowed), 404.

use ridecast_protocol::{Claims, Id, Role};
use worker::{Context, Env, Request, Response, Result, event};

use crate::{
    auth, bindings,
    cors::{self, CorsPolicy},
    error::EdgeError,
    hub::RETRY_MS,
    limits::{self, Limits},
    passthrough,
};

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    DriverLocation(&'a str),
    Surge(&'a str),
    Origin,
    Unknown,
}

impl Route<'_> {
    /// Streams terminated at the edge: their "come back later" answers take the SSE form.
    fn is_stream(&self) -> bool {
        matches!(self, Self::DriverLocation(_) | Self::Surge(_))
    }
}

fn route(path: &str) -> Route<'_> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "sse", "drivers", id, "location"] => Route::DriverLocation(id),
        ["api", "sse", "surge", id] => Route::Surge(id),
        ["api", ..] => Route::Origin,
        _ => Route::Unknown,
    }
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let policy = CorsPolicy::from_env(&env);
    let origin = cors::request_origin(&req);
    if cors::is_preflight(&req) {
        return cors::preflight(&policy, origin.as_deref());
    }
    let path = req.path();
    let stream = route(&path).is_stream();
    let response = match handle(req, &env).await {
        Ok(response) => response,
        Err(e) if stream => e.into_sse_response(RETRY_MS)?,
        Err(e) => e.into_response()?,
    };
    cors::apply(&policy, origin.as_deref(), response)
}

async fn handle(req: Request, env: &Env) -> std::result::Result<Response, EdgeError> {
    let path = req.path();
    match route(&path) {
        Route::DriverLocation(raw) => {
            let claims = auth::verify(&req, &auth::keys(env)?)?;
            let id = Id::parse(raw).map_err(EdgeError::InvalidId)?;
            if !is_rider(&claims) || claims.drv.as_ref() != Some(&id) {
                return Err(EdgeError::Forbidden);
            }
            // A tracking token is confirmed with the origin by the driver's object, which can
            // reuse a confirmation for a few seconds (`crate::tracking`).
            to_object(req, env, bindings::DRIVER_HUB, &id).await
        }
        Route::Surge(raw) => {
            let claims = auth::verify(&req, &auth::keys(env)?)?;
            let id = Id::parse(raw).map_err(EdgeError::InvalidId)?;
            if !is_rider(&claims) {
                return Err(EdgeError::Forbidden);
            }
            to_object(req, env, bindings::SURGE_HUB, &id).await
        }
        // The origin checks its own tokens: other roles (ops, driver) use these paths too.
        Route::Origin => passthrough::to_origin(req, env).await,
        Route::Unknown => Err(EdgeError::NotFound),
    }
}

fn is_rider(claims: &Claims) -> bool {
    claims.role == Role::Rider
}

/// Sends `req` to the object `key` of `binding`, once the token may open one more object here.
async fn to_object(
    req: Request,
    env: &Env,
    binding: &'static str,
    key: &Id,
) -> std::result::Result<Response, EdgeError> {
    let max = Limits::from_env(env).objects_per_token;
    let token = auth::bearer(&req).unwrap_or_default();
    if !limits::admit_object(&token, (binding, key.as_str()), max) {
        return Err(EdgeError::TooManyObjects { max });
    }
    let namespace = env.durable_object(binding).map_err(|_| EdgeError::Config(binding))?;
    let stub = namespace.get_by_name(key.as_str())?;
    Ok(stub.fetch_with_request(req).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_contract() {
        assert_eq!(route("/api/sse/drivers/d1/location"), Route::DriverLocation("d1"));
        assert_eq!(route("/api/sse/surge/z9"), Route::Surge("z9"));
        assert_eq!(route("/api/rides"), Route::Origin);
        assert_eq!(route("/api/sse/rides/r1"), Route::Origin);
        assert_eq!(route("/healthz"), Route::Unknown);
    }
}
