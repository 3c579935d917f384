//! How much one token and one Durable Object may hold at the edge, and how many objects one token
//! may open. workerd's own limits bound a whole isolate, not a rider: without these, one leaked
//! token could fill an object (each stream costs ~122 KB of a 128 MB isolate) or open objects by
//! the thousand (every new surge zone is an object and a WebSocket to the origin).
//!
//! Tokens are counted by a salted hash ([`TokenKey`]), never stored: no credential is held.

use std::{
    cell::RefCell,
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
};

use worker::{Date, Env};

use crate::bindings;

/// Streams per token per object by default: the origin's `--max-streams-per-token`.
pub const STREAMS_PER_TOKEN: u32 = 8;
/// Riders per object by default: 500 × ~122 KB stays well inside a 128 MB isolate.
pub const RIDERS_PER_OBJECT: u32 = 500;
/// Distinct objects one token may open per isolate per [`OBJECT_WINDOW_MS`] by default: a
/// rider's app follows one driver and the few zones it passes through.
pub const OBJECTS_PER_TOKEN: u32 = 20;
/// The window of [`OBJECTS_PER_TOKEN`].
pub const OBJECT_WINDOW_MS: u64 = 60_000;
/// Tokens the per-isolate window remembers before it forgets them all (a bound on its memory).
const OBJECT_WINDOW_TOKENS: usize = 10_000;

/// The limits, from the worker's vars (see [`bindings`]) or the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub streams_per_token: u32,
    pub riders_per_object: u32,
    pub objects_per_token: u32,
    /// Shards one key's tree may grow besides its root ([`crate::tree`]).
    pub shards_per_key: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            streams_per_token: STREAMS_PER_TOKEN,
            riders_per_object: RIDERS_PER_OBJECT,
            objects_per_token: OBJECTS_PER_TOKEN,
            shards_per_key: crate::tree::SHARDS_PER_KEY,
        }
    }
}

impl Limits {
    /// Reads the `EDGE_MAX_*` vars; a missing var means the default, a bad one (not a whole
    /// number of at least 1) is logged and means the default too.
    pub fn from_env(env: &Env) -> Self {
        let var = |name: &str| env.var(name).ok().map(|v| v.to_string());
        let defaults = Self::default();
        Self {
            streams_per_token: parse(bindings::EDGE_MAX_STREAMS_PER_TOKEN, var, defaults.streams_per_token),
            riders_per_object: parse(bindings::EDGE_MAX_RIDERS_PER_OBJECT, var, defaults.riders_per_object),
            objects_per_token: parse(bindings::EDGE_MAX_OBJECTS_PER_TOKEN, var, defaults.objects_per_token),
            shards_per_key: parse_in(bindings::EDGE_MAX_SHARDS_PER_KEY, var, defaults.shards_per_key, 0..=MAX_SHARDS),
        }
    }
}

/// The most shards a key may be configured to grow (a root forwards each value to each).
pub const MAX_SHARDS: u32 = 10_000;

fn parse(name: &str, var: impl Fn(&str) -> Option<String>, default: u32) -> u32 {
    parse_in(name, var, default, 1..=u32::MAX)
}

fn parse_in(
    name: &str,
    var: impl Fn(&str) -> Option<String>,
    default: u32,
    allowed: std::ops::RangeInclusive<u32>,
) -> u32 {
    match var(name) {
        None => default,
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(n) if allowed.contains(&n) => n,
            _ => {
                worker::console_warn!("{name}={raw:?} is not a whole number in {allowed:?}; using {default}");
                default
            }
        },
    }
}

/// A token as counted here: a salted hash of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey(u64);

impl TokenKey {
    /// The key of `token` under `salt` (random per object or per isolate).
    pub fn new(salt: u64, token: &str) -> Self {
        let mut hasher = DefaultHasher::new();
        salt.hash(&mut hasher);
        token.hash(&mut hasher);
        Self(hasher.finish())
    }
}

/// A random salt from the runtime (wasm has no OS randomness through std).
pub fn random_salt() -> u64 {
    // Two draws: `Math.random` has 52 random bits at most.
    let draw = || (js_sys::Math::random() * f64::from(u32::MAX)) as u64;
    (draw() << 32) ^ draw()
}

/// One token's openings in the current window.
#[derive(Debug)]
struct Window {
    start_ms: u64,
    objects: Vec<u64>,
}

/// The distinct objects each token opened in this isolate in the last window.
#[derive(Debug, Default)]
struct Openings {
    salt: Option<u64>,
    tokens: HashMap<TokenKey, Window>,
}

thread_local! {
    static OPENINGS: RefCell<Openings> = RefCell::default();
}

/// Whether `token` may open the object `object` (its binding and name) now, counting it if so.
/// Reopening an object already counted in the window is always allowed.
///
/// Per isolate: Cloudflare runs many isolates of the worker, so this bounds one token per
/// isolate (a burst from one client lands on one), not globally.
pub fn admit_object(token: &str, object: (&str, &str), max: u32) -> bool {
    admit_object_at(token, object, max, Date::now().as_millis())
}

fn admit_object_at(token: &str, (binding, name): (&str, &str), max: u32, now_ms: u64) -> bool {
    OPENINGS.with_borrow_mut(|openings| {
        let salt = *openings.salt.get_or_insert_with(random_salt);
        let key = TokenKey::new(salt, token);
        let object = TokenKey::new(salt, &format!("{binding}/{name}")).0;
        if openings.tokens.len() >= OBJECT_WINDOW_TOKENS && !openings.tokens.contains_key(&key) {
            openings.tokens.retain(|_, w| now_ms.saturating_sub(w.start_ms) < OBJECT_WINDOW_MS);
            if openings.tokens.len() >= OBJECT_WINDOW_TOKENS {
                // Memory is bounded first; the window starts again for everyone.
                openings.tokens.clear();
            }
        }
        let window = openings.tokens.entry(key).or_insert(Window { start_ms: now_ms, objects: Vec::new() });
        if now_ms.saturating_sub(window.start_ms) >= OBJECT_WINDOW_MS {
            *window = Window { start_ms: now_ms, objects: Vec::new() };
        }
        if window.objects.contains(&object) {
            return true;
        }
        if window.objects.len() >= max as usize {
            return false;
        }
        window.objects.push(object);
        true
    })
}
