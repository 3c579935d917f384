//! The worker's `fetch` entry point: token check at the edge, then a Durable Object or the origin.
//!
//! Order of checks follows the contract: 401 (token), 400 (ids), 403 (not allowed), 404.

use ridecast_protocol::{Claims, Id, Role};
use worker::{Context, Env, Request, Response, Result, event};

use crate::{auth, bindings, error::EdgeError, passthrough};

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    DriverLocation(&'a str),
    Surge(&'a str),
    Origin,
    Unknown,
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
    match handle(req, &env).await {
        Ok(response) => Ok(response),
        Err(e) => e.into_response(),
    }
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
            if claims.ride.is_some() {
                passthrough::check_tracking(&req, env, &id).await?;
            }
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

async fn to_object(
    req: Request,
    env: &Env,
    binding: &'static str,
    key: &Id,
) -> std::result::Result<Response, EdgeError> {
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
