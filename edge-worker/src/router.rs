//! The worker's `fetch` entry point: CORS preflights, the token check at the edge, then a Durable
//! Object or the origin; CORS headers on every answer.
//!
//! Order of checks follows the contract: 401 (token), 400 (ids), 403 (not allowed), 404.

use ridecast_protocol::{Claims, Id, Role};
use worker::{Context, Env, Headers, Method, Request, RequestInit, Response, Result, event};

use crate::{
    auth, bindings,
    cors::{self, CorsPolicy},
    error::EdgeError,
    hub::RETRY_MS,
    limits::{self, Limits},
    passthrough,
    tree::{self, shard_of},
};

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    DriverLocation(&'a str),
    Surge(&'a str),
    /// An operator's look at one key's fan-out tree: `/edge/v1/tree/{drivers|surge}/{id}`.
    Tree {
        binding: &'static str,
        id: &'a str,
    },
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
        ["edge", "v1", "tree", "drivers", id] => Route::Tree { binding: bindings::DRIVER_HUB, id },
        ["edge", "v1", "tree", "surge", id] => Route::Tree { binding: bindings::SURGE_HUB, id },
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
        Route::Tree { binding, id: raw } => {
            let claims = auth::verify(&req, &auth::keys(env)?)?;
            let id = Id::parse(raw).map_err(EdgeError::InvalidId)?;
            if claims.role != Role::Ops {
                return Err(EdgeError::Forbidden);
            }
            let rider_path = if binding == bindings::DRIVER_HUB {
                format!("/api/sse/drivers/{id}/location")
            } else {
                format!("/api/sse/surge/{id}")
            };
            let namespace = env.durable_object(binding).map_err(|_| EdgeError::Config(binding))?;
            let url = format!("{}{}", origin_of(&req)?, tree::stats_path(&rider_path));
            Ok(namespace.get_by_name(id.as_str())?.fetch_with_str(&url).await?)
        }
        // The origin checks its own tokens: other roles (ops, driver) use these paths too.
        Route::Origin => passthrough::to_origin(req, env).await,
        Route::Unknown => Err(EdgeError::NotFound),
    }
}

fn is_rider(claims: &Claims) -> bool {
    claims.role == Role::Rider
}

/// Sends `req` to the object `key` of `binding`, once the token may open one more object here,
/// and on to the shard the key's root names when it has no room ([`crate::tree`]).
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
    // Built before `req` goes to the root: all a shard may need, and nothing else.
    let for_shard = ShardRequest::from_rider(&req)?;
    let answer = namespace.get_by_name(key.as_str())?.fetch_with_request(req).await?;
    let Some(shard) = shard_of(&answer) else {
        return Ok(answer);
    };
    let shard_stub = namespace.get_by_name(&tree::shard_name(key, shard))?;
    let response = shard_stub.fetch_with_request(for_shard.to(shard)?).await?;
    if shard_of(&response).is_some() {
        return Err(EdgeError::TreeLink(format!("shard {shard} of {key} sent the rider on again")));
    }
    Ok(response)
}

/// What a rider's request carries to a shard: its path and query (the key, maybe `?token=`) and
/// the two headers a stream reads. Nothing else of the client's is passed on, so no header a
/// client makes up can mean anything to a shard.
#[derive(Debug)]
struct ShardRequest {
    origin: String,
    path_and_query: String,
    authorization: Option<String>,
    last_event_id: Option<String>,
}

impl ShardRequest {
    fn from_rider(req: &Request) -> std::result::Result<Self, EdgeError> {
        let url = req.url()?;
        let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
        let header = |name: &str| req.headers().get(name).ok().flatten();
        Ok(Self {
            origin: origin_of(req)?,
            path_and_query: format!("{}{query}", url.path()),
            authorization: header("authorization"),
            last_event_id: header("last-event-id"),
        })
    }

    fn to(&self, shard: u32) -> std::result::Result<Request, EdgeError> {
        let headers = Headers::new();
        if let Some(value) = &self.authorization {
            headers.set("authorization", value)?;
        }
        if let Some(value) = &self.last_event_id {
            headers.set("last-event-id", value)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        let url = format!("{}{}", self.origin, tree::shard_path(shard, &self.path_and_query));
        Ok(Request::new_with_init(&url, &init)?)
    }
}

/// `scheme://host` of the request (an object's URL needs one; the object reads only the path).
fn origin_of(req: &Request) -> std::result::Result<String, EdgeError> {
    let url = req.url()?;
    Ok(url.origin().ascii_serialization())
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
        assert_eq!(route("/edge/v1/tree/surge/z9"), Route::Tree { binding: bindings::SURGE_HUB, id: "z9" });
        assert_eq!(route("/_tree/shard/1/api/sse/surge/z9"), Route::Unknown);
    }
}
