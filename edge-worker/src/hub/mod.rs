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
//!
//! A key with more riders than one object holds grows a fan-out tree ([`crate::tree`]): the
//! key's root hub keeps the origin link and forwards each value to its shards, each a hub whose
//! upstream is the root.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the hub's state, a rider's subscription, fan-out, heartbeat, grace alarm |
//! | [`upstream`] | the link a hub takes its values from: the origin's edge link, or a shard's root |
//! | [`branches`] | the tree at the root (shard links, their reports, the operators' view) and a shard's reports |
//! | [`recheck`] | tracking tokens: confirming one, asking the origin again while its streams are open |

mod branches;
mod recheck;
mod upstream;

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    rc::Rc,
    time::Duration,
};

use ridecast_protocol::{Id, sse};
use worker::{Delay, Env, Request, Response, ResponseBody, State, WebSocket};

use crate::{
    auth, bindings,
    error::EdgeError,
    limits::{self, Limits, TokenKey},
    rider_stream::{self, Frame, RiderSlot},
    tracking::{self, ConfirmationCache},
    tree::{self, Choice, ObjectRequest, Place, Report, ShardTable},
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

    /// The namespace binding of this kind's objects (a shard links to its root through it).
    pub fn binding(self) -> &'static str {
        match self {
            Self::Driver => bindings::DRIVER_HUB,
            Self::Surge => bindings::SURGE_HUB,
        }
    }

    /// The rider path of `key` (what a shard's link names its key by).
    pub fn rider_path(self, key: &Id) -> String {
        match self {
            Self::Driver => format!("/api/sse/drivers/{key}/location"),
            Self::Surge => format!("/api/sse/surge/{key}"),
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
    /// Root or shard of the key's tree: fixed by the first request.
    place: Option<Place>,
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
    /// At the root: where riders go, and each linked shard's WebSocket.
    shards: ShardTable,
    downstream: BTreeMap<u32, WebSocket>,
    /// At a shard: rider requests received, and the last count told to the root.
    arrived: u32,
    reported: Option<Report>,
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
    /// The `Last-Event-ID` it came with, until the hub's first value arrives: a hub that had no
    /// value yet (a new object, a new shard) must not replay the one the rider already has.
    resumed_at: Option<u64>,
}

impl Inner {
    fn drop_gone_riders(&mut self) {
        self.riders.retain(|r| !r.slot.is_gone());
    }

    /// Whether anyone still takes this hub's values: its riders, or (at a root) linked shards.
    fn has_listeners(&mut self) -> bool {
        self.drop_gone_riders();
        !self.riders.is_empty() || !self.downstream.is_empty()
    }

    /// Records this object's place in its key's tree; a request for another place is refused
    /// (the worker never sends one: an object's name fixes its place).
    fn take_place(&mut self, place: Place) -> Result<(), EdgeError> {
        match *self.place.get_or_insert(place) {
            held if held == place => Ok(()),
            _ => Err(EdgeError::NotFound),
        }
    }

    /// Whether one more stream of `token` fits, after dropping the gone riders.
    fn room_for(&mut self, token: TokenKey, limits: &Limits) -> Result<(), EdgeError> {
        self.drop_gone_riders();
        // Up to the hard cap: the tree sends no new token past `riders_per_object`, only tokens
        // coming back to this object (`tree::hard_cap`).
        if self.riders.len() >= tree::hard_cap(limits.riders_per_object) as usize {
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

    /// Answers a request to this object: a rider (at the root or a shard), a shard's link, or an
    /// operator's look at the tree ([`ObjectRequest`]). An error is answered in its SSE form by
    /// the caller.
    ///
    /// # Errors
    /// As [`Hub::subscribe`]; [`EdgeError::NotFound`] for a path no object serves.
    pub async fn handle(&self, req: &Request) -> Result<Response, EdgeError> {
        let path = req.path();
        match ObjectRequest::parse(&path).ok_or(EdgeError::NotFound)? {
            ObjectRequest::Subscribe(rider_path) => self.subscribe(req, rider_path, Place::Root).await,
            ObjectRequest::ShardSubscribe { shard, rider_path } => {
                self.subscribe(req, rider_path, Place::Shard(shard)).await
            }
            ObjectRequest::Link { shard, rider_path } => self.accept_shard_link(req, shard, rider_path),
            ObjectRequest::Stats(rider_path) => self.stats(rider_path),
        }
    }

    /// Opens a rider stream here, sends the rider to a shard (at a root without room), or
    /// refuses it.
    ///
    /// # Errors
    /// [`EdgeError::ObjectFull`] when the key's whole tree is full, [`EdgeError::TooManyStreams`]
    /// past the per-token cap; for a tracking token, [`EdgeError::Forbidden`] when the origin
    /// refuses it and [`EdgeError::OriginCannotConfirm`] when it cannot answer; 401s like the
    /// worker's (the object checks the token again rather than trust what reached it).
    async fn subscribe(&self, req: &Request, rider_path: &str, place: Place) -> Result<Response, EdgeError> {
        let key = self.kind.key_from_path(rider_path).ok_or(EdgeError::NotFound)?;
        let claims = auth::verify(req, &auth::keys(&self.env)?)?;
        let raw_token = auth::bearer(req).unwrap_or_default();
        let token = TokenKey::new(self.salt, &raw_token);
        {
            let mut inner = self.inner.borrow_mut();
            inner.take_place(place)?;
            inner.key.get_or_insert(key.clone());
            match place {
                Place::Root => match self.choose(&mut inner, token) {
                    Choice::Here => {}
                    Choice::Shard(k) => return tree::send_to_shard(k),
                    Choice::Full => {
                        let (max, objects) = (self.limits.riders_per_object, self.limits.shards_per_key + 1);
                        return Err(EdgeError::TreeFull { objects, max });
                    }
                },
                Place::Shard(_) => inner.arrived = inner.arrived.saturating_add(1),
            }
            // Cheap refusals first, so that a token at its cap costs the origin nothing.
            let room = inner.room_for(token, &self.limits);
            drop(inner);
            if room.is_err() {
                self.report_to_root();
            }
            room?;
        }
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
            if let Some((id, data)) = &inner.latest
                && last_event_id != Some(*id)
            {
                first.push_str(&sse::event(self.kind.event_name(), &id.to_string(), data));
            }
            let resumed_at = if inner.latest.is_none() { last_event_id } else { None };
            let (slot, stream) = rider_stream::open(&first)?;
            inner.riders.push(Rider { token, slot, resumed_at });
            if tracking {
                let now = tracking::now_ms();
                inner.tracked.entry(token).or_insert(Tracked { raw: raw_token, last_asked_ms: now });
            }
            stream
        };
        if tracking {
            self.ensure_recheck();
        }
        self.report_to_root();
        self.ensure_heartbeat();
        self.ensure_upstream();
        Ok(Response::from_body(ResponseBody::Stream(stream))?.with_headers(rider_stream::sse_headers()?))
    }

    /// The root's choice for a new stream of `token`.
    fn choose(&self, inner: &mut Inner, token: TokenKey) -> Choice {
        inner.drop_gone_riders();
        let own = u32::try_from(inner.riders.len()).unwrap_or(u32::MAX);
        let limits = &self.limits;
        inner.shards.choose(token, own, limits.riders_per_object, limits.shards_per_key, tracking::now_ms())
    }

    /// The grace alarm: closes the upstream link if no rider (and no shard) came back meanwhile.
    pub fn on_alarm(&self) {
        let mut inner = self.inner.borrow_mut();
        if !inner.has_listeners()
            && let Some(ws) = inner.upstream.take()
        {
            // The upstream task sees the close and, with no riders, does not reconnect.
            let _ = ws.close(Some(1000), Some("no riders"));
        }
    }

    /// Sets the grace alarm, after which [`Hub::on_alarm`] closes an unused upstream link.
    async fn set_grace_alarm(&self) {
        if let Err(e) = self.state.storage().set_alarm(self.timings.grace).await {
            worker::console_error!("could not set the grace alarm: {e}");
        }
    }

    /// Takes a value from the upstream link and fans it out if it is newer than the latest: to
    /// the riders here and, at a root, to every linked shard.
    fn publish(&self, json: String) {
        let Some(id) = serde_json::from_str::<serde_json::Value>(&json).ok().and_then(|v| v.get("ts")?.as_u64()) else {
            worker::console_warn!("edge link sent a value without a numeric ts; ignored");
            return;
        };
        let mut inner = self.inner.borrow_mut();
        if inner.latest.as_ref().is_some_and(|(latest, _)| *latest >= id) {
            return; // ids only grow; a relinked origin resends what riders already have
        }
        // Encoded once for every rider of this object.
        let frame = Frame::new(&sse::event(self.kind.event_name(), &id.to_string(), &json));
        for shard in inner.downstream.values() {
            // A failed send is a closing link: its reader task sees the close and unlinks it.
            let _ = shard.send_with_str(&json);
        }
        inner.latest = Some((id, json));
        inner.drop_gone_riders();
        for rider in &mut inner.riders {
            if rider.resumed_at.take() != Some(id) {
                rider.slot.push_event(&frame);
            }
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
                // The heartbeat finds the riders that left: a shard tells its root.
                hub.report_to_root();
                if empty {
                    hub.inner.borrow_mut().heartbeat_task = false;
                    hub.set_grace_alarm().await;
                    return;
                }
            }
        });
    }
}
