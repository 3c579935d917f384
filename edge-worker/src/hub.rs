//! "The latest value of a key": one mechanism behind both `DriverHub` and `SurgeHub`.
//!
//! A hub lives inside one Durable Object. It keeps the latest value it has seen, the rider
//! streams of the object ([`crate::rider_stream`]), one upstream WebSocket to the origin's edge
//! link, and two timers:
//! - a heartbeat task that writes a comment to every rider (and so finds the dead ones, because
//!   workerd only learns a client is gone when a write fails) and drops the gone riders;
//! - an alarm, set when the last rider leaves, that closes the upstream link after a grace time.
//!
//! Before a rider gets a stream the hub checks its room (riders per object, streams per token:
//! [`crate::limits`]) and, for a tracking token, that the origin confirmed it
//! ([`crate::tracking`]); a refusal to come back later is the EventSource-safe form.
//!
//! While it holds streams of tracking tokens, a third task asks the origin again about each such
//! token as its confirmation runs out (one shared task, one question per token per 5 s however
//! many streams the token has). A refusal (401, 403, a 404 not the origin's own) ends every
//! stream of that token with a comment, so an EventSource reconnects and gets the 403. When the
//! origin cannot answer, the streams it confirmed stay open and it is asked again 5 s later:
//! cutting every rider of every ride during an origin outage would do more harm than a few more
//! seconds of a position to a rider whose ride just ended, and a new stream is still refused
//! (fail-closed) meanwhile. The object keeps such a token in memory (never in storage) only while
//! a stream of it is open, since asking again needs it.
//!
//! The upstream reconnects with exponential backoff and full jitter while riders remain; riders
//! keep their streams meanwhile and get the latest value as soon as the link is back (the origin
//! sends its current value first on every link).

use std::{cell::RefCell, collections::HashMap, rc::Rc, time::Duration};

use futures_util::{StreamExt, future::join_all};
use ridecast_protocol::{Claims, Id, Role, sse};
use worker::{Delay, Env, Request, Response, State, Url, WebSocket, WebsocketEvent};

use crate::{
    auth, bindings,
    error::EdgeError,
    limits::{self, Limits, TokenKey},
    rider_stream::{self, RiderSlot},
    tracking::{self, Confirmation, ConfirmationCache},
};

/// The comment that ends a stream whose tracking token the origin now refuses (the origin's own).
pub const RIDE_ENDED: &str = "the ride this stream tracked has ended";
/// The shortest sleep of the re-confirmation task, so that it can never spin.
const RECHECK_MIN_WAIT: Duration = Duration::from_millis(200);

/// `retry:` sent first on every stream: how long a browser waits before reconnecting, in ms.
pub const RETRY_MS: u64 = 3_000;
/// Heartbeat period by default; the contract asks for at least one comment every 15 s.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// The longest heartbeat period accepted from configuration.
pub const HEARTBEAT_MAX: Duration = Duration::from_secs(15);
/// How long the upstream link stays open after the last rider left, by default.
pub const UPSTREAM_GRACE: Duration = Duration::from_secs(10);
/// Upstream reconnect backoff: first and largest delay (full jitter is applied to each).
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The cap bounds how long riders wait after an origin comes back (on average half of it, with
/// full jitter); the jitter, not a long cap, is what spreads the objects' reconnects.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Lifetime of the `edge` token minted for the upstream link.
pub const EDGE_TOKEN_TTL_SECS: u64 = 300;

/// Which key a hub is for: what its SSE events are called and where its upstream link goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubKind {
    /// One driver's location; path `/api/sse/drivers/{id}/location`.
    Driver,
    /// One zone's surge multiplier; path `/api/sse/surge/{zoneId}`.
    Surge,
}

impl HubKind {
    /// The SSE `event:` name.
    pub fn event_name(self) -> &'static str {
        match self {
            Self::Driver => "location",
            Self::Surge => "surge",
        }
    }

    /// The origin's edge-link path for `key`.
    pub fn upstream_path(self, key: &Id) -> String {
        match self {
            Self::Driver => format!("/edge/v1/drivers/{key}"),
            Self::Surge => format!("/edge/v1/surge/{key}"),
        }
    }

    /// The key in a rider path routed to this kind of hub.
    pub fn key_from_path(self, path: &str) -> Option<Id> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (self, segments.as_slice()) {
            (Self::Driver, ["api", "sse", "drivers", id, "location"]) | (Self::Surge, ["api", "sse", "surge", id]) => {
                Id::parse(id).ok()
            }
            _ => None,
        }
    }
}

/// The hub's timings, from the worker's vars (see [`bindings`]) or the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    pub heartbeat: Duration,
    pub grace: Duration,
}

impl Timings {
    /// Reads [`bindings::EDGE_HEARTBEAT_SECS`] and [`bindings::EDGE_LINK_GRACE_SECS`]; a missing
    /// var means the default, a bad one is logged and means the default too.
    pub fn from_env(env: &Env) -> Self {
        let secs = |name: &str| env.var(name).ok().map(|v| v.to_string());
        Self::parse(secs(bindings::EDGE_HEARTBEAT_SECS).as_deref(), secs(bindings::EDGE_LINK_GRACE_SECS).as_deref())
    }

    fn parse(heartbeat: Option<&str>, grace: Option<&str>) -> Self {
        let read = |raw: Option<&str>, name: &str, default: Duration, max: Duration| match raw {
            None => default,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(secs) if secs >= 1 && Duration::from_secs(secs) <= max => Duration::from_secs(secs),
                _ => {
                    worker::console_warn!("{name}={raw:?} is not 1..={} seconds; using {default:?}", max.as_secs());
                    default
                }
            },
        };
        Self {
            heartbeat: read(heartbeat, bindings::EDGE_HEARTBEAT_SECS, HEARTBEAT, HEARTBEAT_MAX),
            grace: read(grace, bindings::EDGE_LINK_GRACE_SECS, UPSTREAM_GRACE, Duration::from_secs(3600)),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    key: Option<Id>,
    /// The latest value: its event id (`ts`) and its JSON as the origin sent it.
    latest: Option<(u64, String)>,
    riders: Vec<Rider>,
    /// Tracking tokens the origin confirmed lately, reused for at most 5 s.
    confirmed: ConfirmationCache,
    upstream: Option<WebSocket>,
    upstream_task: bool,
    heartbeat_task: bool,
    /// The tracking tokens of the open streams, kept to ask the origin again.
    tracked: HashMap<TokenKey, Tracked>,
    recheck_task: bool,
}

/// A tracking token with open streams.
#[derive(Debug)]
struct Tracked {
    /// The token itself: the origin is asked with it. Held in memory only, while streams are open.
    raw: String,
    /// When the object last asked about it (answered or not).
    last_asked_ms: u64,
}

/// One rider's stream and the token it came with (as a key: no credential is kept).
#[derive(Debug)]
struct Rider {
    token: TokenKey,
    slot: RiderSlot,
}

impl Inner {
    fn drop_gone_riders(&mut self) {
        self.riders.retain(|r| !r.slot.is_gone());
    }

    /// Whether one more stream of `token` fits, after dropping the gone riders.
    fn room_for(&mut self, token: TokenKey, limits: &Limits) -> Result<(), EdgeError> {
        self.drop_gone_riders();
        if self.riders.len() >= limits.riders_per_object as usize {
            return Err(EdgeError::ObjectFull { max: limits.riders_per_object });
        }
        if self.riders.iter().filter(|r| r.token == token).count() >= limits.streams_per_token as usize {
            return Err(EdgeError::TooManyStreams { max: limits.streams_per_token });
        }
        Ok(())
    }

    /// Forgets the tracking tokens that have no open stream left.
    fn prune_tracked(&mut self) {
        self.drop_gone_riders();
        let riders = &self.riders;
        self.tracked.retain(|token, _| riders.iter().any(|r| r.token == *token));
    }

    /// When `token` is next due for a question: [`tracking::CONFIRMATION_TTL`] after the later of
    /// its last confirmation and its last question.
    fn due_ms(&self, token: TokenKey, tracked: &Tracked) -> u64 {
        let confirmed = self.confirmed.confirmed_at(token).unwrap_or(0);
        confirmed.max(tracked.last_asked_ms).saturating_add(tracking::ttl_ms())
    }

    /// Ends every stream of `token`, which the origin refused, and forgets it.
    fn end_token(&mut self, token: TokenKey) {
        for rider in self.riders.iter().filter(|r| r.token == token) {
            rider.slot.end_with_comment(RIDE_ENDED);
        }
        self.confirmed.forget(token);
        self.tracked.remove(&token);
        self.drop_gone_riders();
    }
}

/// The state and behaviour shared by `DriverHub` and `SurgeHub`.
#[derive(Debug, Clone)]
pub struct Hub {
    kind: HubKind,
    timings: Timings,
    limits: Limits,
    /// Salt of this object's token keys.
    salt: u64,
    state: Rc<State>,
    env: Env,
    inner: Rc<RefCell<Inner>>,
}

impl Hub {
    pub fn new(kind: HubKind, state: State, env: Env) -> Self {
        Self {
            kind,
            timings: Timings::from_env(&env),
            limits: Limits::from_env(&env),
            salt: limits::random_salt(),
            state: Rc::new(state),
            env,
            inner: Rc::default(),
        }
    }

    /// Opens a rider stream, or refuses it: an error here is answered in its SSE form.
    ///
    /// # Errors
    /// [`EdgeError::ObjectFull`] or [`EdgeError::TooManyStreams`] past the caps; for a tracking
    /// token, [`EdgeError::Forbidden`] when the origin refuses it and
    /// [`EdgeError::OriginCannotConfirm`] when it cannot answer; 401s like the worker's (the
    /// object checks the token again rather than trust what reached it).
    pub async fn subscribe(&self, req: &Request) -> Result<Response, EdgeError> {
        let path = req.path();
        let key = self.kind.key_from_path(&path).ok_or(EdgeError::NotFound)?;
        let claims = auth::verify(req, &auth::keys(&self.env)?)?;
        let raw_token = auth::bearer(req).unwrap_or_default();
        let token = TokenKey::new(self.salt, &raw_token);
        // Cheap refusals first, so that a token at its cap costs the origin nothing.
        self.inner.borrow_mut().room_for(token, &self.limits)?;
        let tracking = self.kind == HubKind::Driver && claims.ride.is_some();
        if tracking {
            self.confirm_tracking(&raw_token, token, &key).await?;
        }
        let last_event_id = req.headers().get("last-event-id").ok().flatten().and_then(|raw| sse::parse_event_id(&raw));

        let mut first = sse::retry(RETRY_MS);
        let stream = {
            let mut inner = self.inner.borrow_mut();
            // Again: other riders may have come in while the origin was being asked.
            inner.room_for(token, &self.limits)?;
            inner.key.get_or_insert(key);
            if let Some((id, data)) = &inner.latest
                && last_event_id != Some(*id)
            {
                first.push_str(&sse::event(self.kind.event_name(), &id.to_string(), data));
            }
            let (slot, stream) = rider_stream::open(first);
            inner.riders.push(Rider { token, slot });
            if tracking {
                let now = tracking::now_ms();
                inner.tracked.entry(token).or_insert(Tracked { raw: raw_token, last_asked_ms: now });
            }
            stream
        };
        if tracking {
            self.ensure_recheck();
        }
        self.ensure_heartbeat();
        self.ensure_upstream();
        Ok(Response::from_stream(stream)?.with_headers(rider_stream::sse_headers()?))
    }

    /// A tracking token is honoured only once the origin confirmed it, and a confirmation is
    /// reused for at most [`tracking::CONFIRMATION_TTL`]. Fails closed: no answer is a refusal
    /// (with a retry), never a pass.
    async fn confirm_tracking(&self, raw_token: &str, token: TokenKey, driver: &Id) -> Result<(), EdgeError> {
        if self.inner.borrow().confirmed.is_fresh(token) {
            return Ok(());
        }
        let asked_at = tracking::now_ms();
        let answer = tracking::ask_origin(&self.env, raw_token, driver).await;
        let mut inner = self.inner.borrow_mut();
        match answer {
            Confirmation::Confirmed => inner.confirmed.remember(token, asked_at),
            // The same token's open streams end too, without waiting for their own question.
            Confirmation::Refused(_) => inner.end_token(token),
            Confirmation::Unanswered(_) => {}
        }
        answer.into_result()
    }

    /// Starts the task that asks the origin again about the tracking tokens of open streams, unless
    /// it runs. One task per object, sleeping until the next confirmation runs out: an idle stream
    /// costs nothing between questions. It ends when no tracking token has a stream left.
    fn ensure_recheck(&self) {
        if std::mem::replace(&mut self.inner.borrow_mut().recheck_task, true) {
            return;
        }
        let hub = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                let wait_ms = {
                    let mut inner = hub.inner.borrow_mut();
                    inner.prune_tracked();
                    let now = tracking::now_ms();
                    let next = inner.tracked.iter().map(|(token, t)| inner.due_ms(*token, t)).min();
                    let Some(next) = next else {
                        inner.recheck_task = false;
                        return;
                    };
                    next.saturating_sub(now)
                };
                Delay::from(Duration::from_millis(wait_ms).max(RECHECK_MIN_WAIT)).await;
                hub.recheck_due().await;
            }
        });
    }

    /// Asks the origin, all at once, about every tracking token whose confirmation ran out.
    async fn recheck_due(&self) {
        let (driver, due) = {
            let mut inner = self.inner.borrow_mut();
            inner.prune_tracked();
            let now = tracking::now_ms();
            let due: Vec<(TokenKey, String)> = inner
                .tracked
                .iter()
                .filter(|(token, t)| inner.due_ms(**token, t) <= now)
                .map(|(token, t)| (*token, t.raw.clone()))
                .collect();
            for (token, _) in &due {
                if let Some(t) = inner.tracked.get_mut(token) {
                    t.last_asked_ms = now;
                }
            }
            (inner.key.clone(), due)
        };
        let Some(driver) = driver else { return };
        let questions = due.into_iter().map(|(token, raw)| {
            let (env, driver) = (&self.env, &driver);
            async move {
                let asked_at = tracking::now_ms();
                (token, asked_at, tracking::ask_origin(env, &raw, driver).await)
            }
        });
        for (token, asked_at, answer) in join_all(questions).await {
            let mut inner = self.inner.borrow_mut();
            match answer {
                Confirmation::Confirmed => inner.confirmed.remember(token, asked_at),
                Confirmation::Refused(_) => inner.end_token(token),
                // Kept open, asked again in 5 s (see the module's documentation).
                Confirmation::Unanswered(why) => {
                    worker::console_warn!("the origin could not confirm a tracking token again: {why}");
                }
            }
        }
    }

    /// The grace alarm: closes the upstream link if no rider came back meanwhile.
    pub fn on_alarm(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.drop_gone_riders();
        if inner.riders.is_empty()
            && let Some(ws) = inner.upstream.take()
        {
            // The upstream task sees the close and, with no riders, does not reconnect.
            let _ = ws.close(Some(1000), Some("no riders"));
        }
    }

    /// Takes a value from the upstream link and fans it out if it is newer than the latest.
    fn publish(&self, json: String) {
        let Some(id) = serde_json::from_str::<serde_json::Value>(&json).ok().and_then(|v| v.get("ts")?.as_u64()) else {
            worker::console_warn!("edge link sent a value without a numeric ts; ignored");
            return;
        };
        let mut inner = self.inner.borrow_mut();
        if inner.latest.as_ref().is_some_and(|(latest, _)| *latest >= id) {
            return; // ids only grow; a relinked origin resends what riders already have
        }
        let frame = sse::event(self.kind.event_name(), &id.to_string(), &json);
        inner.latest = Some((id, json));
        inner.drop_gone_riders();
        for rider in &inner.riders {
            rider.slot.push_event(&frame);
        }
    }

    fn ensure_heartbeat(&self) {
        if std::mem::replace(&mut self.inner.borrow_mut().heartbeat_task, true) {
            return;
        }
        let hub = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                Delay::from(hub.timings.heartbeat).await;
                let empty = {
                    let mut inner = hub.inner.borrow_mut();
                    inner.drop_gone_riders();
                    for rider in &inner.riders {
                        rider.slot.push_heartbeat();
                    }
                    inner.riders.is_empty()
                };
                if empty {
                    hub.inner.borrow_mut().heartbeat_task = false;
                    if let Err(e) = hub.state.storage().set_alarm(hub.timings.grace).await {
                        worker::console_error!("could not set the grace alarm: {e}");
                    }
                    return;
                }
            }
        });
    }

    fn ensure_upstream(&self) {
        if std::mem::replace(&mut self.inner.borrow_mut().upstream_task, true) {
            return;
        }
        let hub = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let mut backoff = BACKOFF_MIN;
            loop {
                match hub.run_upstream_once().await {
                    Ok(()) => backoff = BACKOFF_MIN,
                    Err(e) => worker::console_warn!("edge link failed: {e}"),
                }
                let riders_left = {
                    let mut inner = hub.inner.borrow_mut();
                    inner.upstream = None;
                    inner.drop_gone_riders();
                    !inner.riders.is_empty()
                };
                if !riders_left {
                    hub.inner.borrow_mut().upstream_task = false;
                    return;
                }
                // Full jitter: a restarted origin is not hit by every object at once.
                let wait = backoff.mul_f64(js_sys::Math::random());
                Delay::from(wait).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
    }

    /// One life of the upstream link: connect, feed every value to [`Hub::publish`], return when
    /// it closes.
    async fn run_upstream_once(&self) -> Result<(), EdgeError> {
        let Some(key) = self.inner.borrow().key.clone() else {
            return Ok(());
        };
        let url = self.upstream_url(&key)?;
        let ws = WebSocket::connect(url).await?;
        let mut events = ws.events()?;
        ws.accept()?;
        self.inner.borrow_mut().upstream = Some(ws.clone());
        while let Some(event) = events.next().await {
            match event? {
                WebsocketEvent::Message(msg) => {
                    if let Some(text) = msg.text() {
                        self.publish(text);
                    }
                }
                WebsocketEvent::Close(_) => break,
            }
        }
        Ok(())
    }

    fn upstream_url(&self, key: &Id) -> Result<Url, EdgeError> {
        let origin =
            self.env.var(bindings::ORIGIN_URL).map_err(|_| EdgeError::Config(bindings::ORIGIN_URL))?.to_string();
        let keys = auth::keys(&self.env)?;
        let claims = Claims {
            sub: Id::parse("edge").map_err(EdgeError::InvalidId)?,
            role: Role::Edge,
            exp: auth::now_secs() + EDGE_TOKEN_TTL_SECS,
            drv: None,
            ride: None,
        };
        let token = keys.mint(&claims).map_err(EdgeError::BadToken)?;
        let mut url = Url::parse(&format!("{}{}", origin.trim_end_matches('/'), self.kind.upstream_path(key)))
            .map_err(|_| EdgeError::Config(bindings::ORIGIN_URL))?;
        url.query_pairs_mut().append_pair("token", &token);
        Ok(url)
    }
}
