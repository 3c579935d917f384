//! Tracking tokens (a rider token with `drv` and `ride`) at the edge, fail-closed: one is honoured
//! only after the origin confirmed it, since only the origin knows whether its ride is still on.
//!
//! The driver's object asks the origin's polling endpoint with the rider's own token (the origin
//! checks 401, 400, 403 — ride ended — before 404) and keeps a positive answer for at most
//! [`CONFIRMATION_TTL`], so that a reconnecting rider does not cost an origin request each time.
//! A refusal is never cached: it is final for the token anyway.
//!
//! While an object holds streams of a tracking token it asks again as each confirmation runs out
//! (one question per token per [`CONFIRMATION_TTL`], however many streams the token has), and a
//! refusal ends every stream of that token ([`crate::hub`]). An unanswered question leaves the
//! confirmed streams open: see [`crate::hub`] for why.

use std::{collections::HashMap, time::Duration};

use futures_util::future::{Either, select};
use ridecast_protocol::{ErrorBody, ErrorCode, Id};
use worker::{AbortController, Date, Delay, Env, Fetch, Headers, Method, Request, RequestInit, RequestRedirect};

use crate::{bindings, error::EdgeError, limits::TokenKey};

/// How long a confirmation is reused: the contract allows at most 5 s.
pub const CONFIRMATION_TTL: Duration = Duration::from_secs(5);
/// How long the origin gets to answer before the edge gives up (and refuses with a retry).
pub const CONFIRMATION_TIMEOUT: Duration = Duration::from_secs(3);

/// What the origin said about a tracking token.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The ride is on with that driver.
    Confirmed,
    /// The origin refused the token (401, 403, or a 404 that is not its own "no location yet").
    Refused(u16),
    /// No usable answer: timeout, unreachable, 5xx, 429, a redirect, anything else.
    Unanswered(String),
}

impl Confirmation {
    /// The answer as the edge acts on it.
    ///
    /// # Errors
    /// [`EdgeError::Forbidden`] when refused, [`EdgeError::OriginCannotConfirm`] when unanswered.
    pub fn into_result(self) -> Result<(), EdgeError> {
        match self {
            Self::Confirmed => Ok(()),
            Self::Refused(_) => Err(EdgeError::Forbidden),
            Self::Unanswered(why) => Err(EdgeError::OriginCannotConfirm(why)),
        }
    }
}

/// Classifies the origin's answer to the polling endpoint. `body` is read only for a 404.
pub fn classify(status: u16, body: Option<&str>) -> Confirmation {
    match status {
        200 | 304 => Confirmation::Confirmed,
        // The origin checks the token before it looks for a location: its own `not_found`
        // means the token passed and the driver has not sent a position yet.
        404 if body
            .and_then(|b| serde_json::from_str::<ErrorBody>(b).ok())
            .is_some_and(|b| b.error.code == ErrorCode::NotFound) =>
        {
            Confirmation::Confirmed
        }
        401 | 403 | 404 => Confirmation::Refused(status),
        other => Confirmation::Unanswered(format!("the origin answered {other}")),
    }
}

/// Asks the origin about `token` for `driver`, within [`CONFIRMATION_TIMEOUT`].
pub async fn ask_origin(env: &Env, token: &str, driver: &Id) -> Confirmation {
    match ask(env, token, driver).await {
        Ok(answer) => answer,
        Err(error) => Confirmation::Unanswered(error.to_string()),
    }
}

async fn ask(env: &Env, token: &str, driver: &Id) -> Result<Confirmation, EdgeError> {
    let origin = env.var(bindings::ORIGIN_URL).map_err(|_| EdgeError::Config(bindings::ORIGIN_URL))?.to_string();
    let target = format!("{}/api/drivers/{driver}/location", origin.trim_end_matches('/'));
    let headers = Headers::new();
    headers.set("authorization", &format!("Bearer {token}"))?;
    // Only "is the token good" matters: a 304 instead of the location when there is one.
    headers.set("if-none-match", "*")?;
    let controller = AbortController::default();
    let mut init = RequestInit::new();
    // A redirect (a login page, a moved origin) is not a confirmation: never follow one.
    init.with_method(Method::Get).with_headers(headers).with_redirect(RequestRedirect::Manual);
    let request = Request::new_with_init(&target, &init)?;
    let signal = controller.signal();
    let fetch = Box::pin(async move { Fetch::Request(request).send_with_signal(&signal).await });
    let timeout = Box::pin(Delay::from(CONFIRMATION_TIMEOUT));
    let mut answer = match select(fetch, timeout).await {
        Either::Left((answer, _)) => answer.map_err(EdgeError::OriginUnreachable)?,
        Either::Right(((), _)) => {
            controller.abort();
            return Ok(Confirmation::Unanswered(format!("no answer within {CONFIRMATION_TIMEOUT:?}")));
        }
    };
    let status = answer.status_code();
    let body = if status == 404 { answer.text().await.ok() } else { None };
    Ok(classify(status, body.as_deref()))
}

/// Confirmations an object may reuse: when each token was last confirmed.
#[derive(Debug, Default)]
pub struct ConfirmationCache {
    confirmed_at_ms: HashMap<TokenKey, u64>,
}

impl ConfirmationCache {
    /// Whether `token` was confirmed less than [`CONFIRMATION_TTL`] ago.
    pub fn is_fresh(&self, token: TokenKey) -> bool {
        self.confirmed_at_ms.get(&token).is_some_and(|at| now_ms().saturating_sub(*at) < ttl_ms())
    }

    /// Remembers a confirmation of a question asked at `asked_at_ms` (the ride may have ended
    /// while the answer travelled: the reuse is counted from the question), and forgets the
    /// stale ones, so the map holds only tokens confirmed in the last few seconds.
    pub fn remember(&mut self, token: TokenKey, asked_at_ms: u64) {
        let now = now_ms();
        self.confirmed_at_ms.retain(|_, at| now.saturating_sub(*at) < ttl_ms());
        self.confirmed_at_ms.insert(token, asked_at_ms);
    }

    /// When `token` was last confirmed (the time of the question), if it still is in the cache.
    pub fn confirmed_at(&self, token: TokenKey) -> Option<u64> {
        self.confirmed_at_ms.get(&token).copied()
    }

    /// Forgets a token the origin refused: no reconnect may ride on its old confirmation.
    pub fn forget(&mut self, token: TokenKey) {
        self.confirmed_at_ms.remove(&token);
    }
}

/// The runtime's clock in milliseconds.
pub fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// [`CONFIRMATION_TTL`] in milliseconds.
pub fn ttl_ms() -> u64 {
    u64::try_from(CONFIRMATION_TTL.as_millis()).unwrap_or(u64::MAX)
}
