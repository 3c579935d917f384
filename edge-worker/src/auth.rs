//! The rider token at the edge: read from `Authorization: Bearer` or `?token=`, verified with the
//! same code as the origin ([`ridecast_protocol::TokenKeys`]).

use ridecast_protocol::{Claims, TokenKeys};
use worker::{Date, Env, Request};

use crate::{bindings, error::EdgeError};

/// The token secrets from the worker's environment.
///
/// # Errors
/// [`EdgeError::Config`] when `RIDECAST_TOKEN_SECRET` is unset or empty.
pub fn keys(env: &Env) -> Result<TokenKeys, EdgeError> {
    let current = env
        .secret(bindings::RIDECAST_TOKEN_SECRET)
        .map_err(|_| EdgeError::Config(bindings::RIDECAST_TOKEN_SECRET))?
        .to_string();
    let previous = env.secret(bindings::RIDECAST_TOKEN_SECRET_PREVIOUS).ok().map(|s| s.to_string());
    TokenKeys::new(current.as_bytes(), previous.as_deref().map(str::as_bytes))
        .map_err(|_| EdgeError::Config(bindings::RIDECAST_TOKEN_SECRET))
}

/// Seconds since the epoch, from the runtime's clock (wasm has no `SystemTime`).
pub fn now_secs() -> u64 {
    Date::now().as_millis() / 1000
}

/// The token the request carries: the `Authorization` header wins over `?token=`.
pub fn bearer(req: &Request) -> Option<String> {
    if let Ok(Some(header)) = req.headers().get("authorization")
        && let Some(token) = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer "))
    {
        return Some(token.trim().to_owned());
    }
    let url = req.url().ok()?;
    url.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned())
}

/// Verifies the request's token and returns its claims.
///
/// # Errors
/// [`EdgeError::MissingToken`] or [`EdgeError::BadToken`] (both 401).
pub fn verify(req: &Request, keys: &TokenKeys) -> Result<Claims, EdgeError> {
    let token = bearer(req).filter(|t| !t.is_empty()).ok_or(EdgeError::MissingToken)?;
    keys.verify(&token, now_secs()).map_err(EdgeError::BadToken)
}
