//! The fan-out tree: one key's riders spread over several Durable Objects.
//!
//! One object can hold only so many streams (its isolate has 128 MB, and its one thread writes
//! its riders one after another), so a key with more riders than [`crate::limits::Limits`]'
//! `riders_per_object` (a busy surge zone, a celebrity driver) grows shards:
//!
//! ```text
//! origin ──edge link── root `<key>` ──┬── its own riders (up to the cap)
//!                                     ├── shard `<key>#1` ── its riders (up to the cap)
//!                                     └── shard `<key>#2` ── ...
//! ```
//!
//! - The **root** is the object named after the key, as before the tree: a key with few riders
//!   is one object and pays nothing for the tree. It holds the key's one link to the origin and
//!   forwards each value to its live shards over one WebSocket each.
//! - A rider's request always reaches the root first. With room, the root serves it; without,
//!   it answers the worker "go to shard k" ([`SHARD_HEADER`]), and the worker sends the request
//!   to `<key>#k` on an internal path ([`shard_path`]). The root holds nothing per such rider.
//! - A **shard** is a hub like the root whose upstream is the root instead of the origin: it
//!   links to the root ([`link_path`]), reports how many riders it holds ([`Report`]), and when
//!   its last rider has gone for the grace time it closes that link — which is how the root
//!   learns that the shard emptied.
//!
//! Every internal path starts with [`INTERNAL_PREFIX`], which no rider path can reach: the worker
//! sends only `/api/sse/...` paths of valid ids to objects, and an id has no `#`, so no rider can
//! name a shard either.

use std::collections::{BTreeMap, HashMap};

use ridecast_protocol::Id;
use serde::{Deserialize, Serialize};
use worker::{Headers, Response};

use crate::{error::EdgeError, limits::TokenKey};

/// Prefix of every path only the worker and the objects themselves use.
pub const INTERNAL_PREFIX: &str = "/_tree/";
/// Header of the root's answer "send this rider to shard k" (to the worker, never to a client).
pub const SHARD_HEADER: &str = "x-ridecast-shard";
/// How long the root keeps sending a token's streams to the object it sent the first one to.
pub const STICKY_MS: u64 = 10 * 60 * 1000;
/// Default shards per key (`EDGE_MAX_SHARDS_PER_KEY`): 200 × 500 riders is a 100k-rider zone.
pub const SHARDS_PER_KEY: u32 = 200;

/// A shard's object name: `<key>#<k>` (`#` is never in an id, so no root is ever a shard).
pub fn shard_name(key: &Id, shard: u32) -> String {
    format!("{key}#{shard}")
}

/// The path the worker uses to send a rider's request to shard `shard`.
pub fn shard_path(shard: u32, rider_path: &str) -> String {
    format!("{INTERNAL_PREFIX}shard/{shard}{rider_path}")
}

/// The path a shard opens its link to the root on.
pub fn link_path(shard: u32, rider_path: &str) -> String {
    format!("{INTERNAL_PREFIX}link/{shard}{rider_path}")
}

/// The path the worker asks the root for the tree's state on (operators: `GET /edge/v1/tree/...`).
pub fn stats_path(rider_path: &str) -> String {
    format!("{INTERNAL_PREFIX}stats{rider_path}")
}

/// The root's answer to the worker: "send this rider to shard `shard`". Never reaches a client:
/// the worker follows it ([`shard_of`]).
///
/// # Errors
/// Only if the runtime cannot build a response.
pub fn send_to_shard(shard: u32) -> Result<Response, EdgeError> {
    let headers = Headers::new();
    headers.set(SHARD_HEADER, &shard.to_string())?;
    Ok(Response::empty()?.with_status(307).with_headers(headers))
}

/// The shard a root's answer sends the rider to, if it is [`send_to_shard`]'s.
pub fn shard_of(response: &Response) -> Option<u32> {
    if response.status_code() != 307 {
        return None;
    }
    response.headers().get(SHARD_HEADER).ok().flatten()?.parse().ok().filter(|k| *k >= 1)
}

/// The most riders one object holds when the tree fills objects to `cap`: an eighth more (at
/// least one), kept for tokens coming back to the object their other streams are on. Packed
/// objects are the rule in a big tree, so without this headroom a rider reconnecting before its
/// old stream was found gone would be refused, or sent elsewhere, which would let one token hold
/// its per-object stream cap on every object of the tree.
pub fn hard_cap(cap: u32) -> u32 {
    cap.saturating_add((cap / 8).max(1))
}

/// What a request to an object asks for, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectRequest<'a> {
    /// A rider, sent straight to the key's root (the path is the rider's own).
    Subscribe(&'a str),
    /// A rider the root sent to shard `shard`.
    ShardSubscribe { shard: u32, rider_path: &'a str },
    /// Shard `shard` linking to its root.
    Link { shard: u32, rider_path: &'a str },
    /// An operator asking the root how its tree stands.
    Stats(&'a str),
}

impl<'a> ObjectRequest<'a> {
    /// Reads a path an object received; `None` for anything else (answered 404).
    pub fn parse(path: &'a str) -> Option<Self> {
        let Some(internal) = path.strip_prefix(INTERNAL_PREFIX) else {
            return Some(Self::Subscribe(path));
        };
        if let Some(rider_path) = internal.strip_prefix("stats") {
            return Some(Self::Stats(rider_path));
        }
        let (what, rest) = internal.split_once('/')?;
        let (shard, rider_path) = rest.split_at(rest.find('/')?);
        let shard: u32 = shard.parse().ok().filter(|k| *k >= 1)?;
        match what {
            "shard" => Some(Self::ShardSubscribe { shard, rider_path }),
            "link" => Some(Self::Link { shard, rider_path }),
            _ => None,
        }
    }
}

/// Where an object sits in its key's tree; learnt from the first request it gets, and never
/// changed (an object's name fixes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Root,
    Shard(u32),
}

/// What a shard tells its root, on its link, whenever its count changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Rider streams it holds now.
    pub riders: u32,
    /// Rider requests it has received since it started, kept or refused: with the root's count
    /// of requests it sent, the requests still on their way.
    pub arrived: u32,
}

/// Where the root sends a rider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The root serves it.
    Here,
    /// Shard `k` does.
    Shard(u32),
    /// Every object the key may have is full.
    Full,
}

/// The root's view of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ShardView {
    /// Its last [`Report`] (zeros until the first).
    reported: Report,
    /// Requests the root sent it since this view began (never below `reported.arrived`).
    routed: u32,
    /// Whether its link to the root is open.
    linked: bool,
}

impl ShardView {
    /// Riders it holds plus the requests still on their way to it.
    fn estimate(&self) -> u32 {
        self.reported.riders.saturating_add(self.routed.saturating_sub(self.reported.arrived))
    }
}

/// The root's table of its shards and where each token's streams go.
#[derive(Debug, Default)]
pub struct ShardTable {
    shards: BTreeMap<u32, ShardView>,
    /// The object each recent token was sent to (0 = the root) and when: a token's streams stay
    /// together, so its per-object stream cap still holds in the tree.
    sticky: HashMap<TokenKey, (u32, u64)>,
}

/// One shard's line in [`ShardTable::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShardStats {
    pub shard: u32,
    pub riders: u32,
    pub linked: bool,
}

impl ShardTable {
    /// Where a new stream of `token` goes: its earlier object while that is under the hard cap
    /// ([`hard_cap`]), else the root while it has fewer than `cap` riders (it holds `own`), else
    /// the lowest shard under `cap`, else none. `max_shards` is shards per key.
    pub fn choose(&mut self, token: TokenKey, own: u32, cap: u32, max_shards: u32, now_ms: u64) -> Choice {
        self.forget_old_tokens(now_ms, cap, max_shards);
        let under = |table: &Self, k: u32, limit: u32| match k {
            0 => own < limit,
            k => table.shards.get(&k).is_none_or(|view| view.estimate() < limit),
        };
        let earlier = self.sticky.get(&token).map(|(k, _)| *k).filter(|k| *k <= max_shards);
        let chosen = match earlier {
            Some(k) if under(self, k, hard_cap(cap)) => Some(k),
            _ => (0..=max_shards).find(|k| under(self, *k, cap)),
        };
        let Some(k) = chosen else { return Choice::Full };
        self.sticky.insert(token, (k, now_ms));
        if k == 0 {
            return Choice::Here;
        }
        self.shards.entry(k).or_default().routed += 1;
        Choice::Shard(k)
    }

    /// Shard `k` linked to the root.
    pub fn linked(&mut self, k: u32) {
        self.shards.entry(k).or_default().linked = true;
    }

    /// Shard `k` reported its count.
    pub fn report(&mut self, k: u32, report: Report) {
        let view = self.shards.entry(k).or_default();
        view.reported = report;
        // A view begun after the shard (the root restarted): nothing it routed is on its way.
        view.routed = view.routed.max(report.arrived);
    }

    /// Shard `k`'s link closed: it emptied (or restarted), and its slot is free again.
    pub fn unlinked(&mut self, k: u32) {
        self.shards.remove(&k);
    }

    /// Whether any shard is linked (then the root keeps its origin link).
    pub fn any_linked(&self) -> bool {
        self.shards.values().any(|view| view.linked)
    }

    /// Riders the shards reported, in all.
    pub fn riders(&self) -> u32 {
        self.shards.values().map(|view| view.reported.riders).sum()
    }

    /// Each known shard, in order.
    pub fn snapshot(&self) -> Vec<ShardStats> {
        self.shards
            .iter()
            .map(|(k, view)| ShardStats { shard: *k, riders: view.reported.riders, linked: view.linked })
            .collect()
    }

    /// Drops tokens not seen for [`STICKY_MS`]; past a bound of twice the tree's capacity (its
    /// memory's bound), forgets them all, which costs only stickiness.
    fn forget_old_tokens(&mut self, now_ms: u64, cap: u32, max_shards: u32) {
        let bound = (cap as usize).saturating_mul(max_shards as usize + 1).saturating_mul(2);
        if self.sticky.len() < bound {
            return;
        }
        self.sticky.retain(|_, (_, at)| now_ms.saturating_sub(*at) < STICKY_MS);
        if self.sticky.len() >= bound {
            self.sticky.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u64) -> TokenKey {
        TokenKey::new(7, &n.to_string())
    }

    #[test]
    fn internal_paths_read_back_as_what_they_ask() {
        let rider = "/api/sse/surge/z1";
        assert_eq!(ObjectRequest::parse(rider), Some(ObjectRequest::Subscribe(rider)));
        assert_eq!(
            ObjectRequest::parse(&shard_path(3, rider)),
            Some(ObjectRequest::ShardSubscribe { shard: 3, rider_path: rider })
        );
        assert_eq!(
            ObjectRequest::parse(&link_path(12, rider)),
            Some(ObjectRequest::Link { shard: 12, rider_path: rider })
        );
        assert_eq!(ObjectRequest::parse(&stats_path(rider)), Some(ObjectRequest::Stats(rider)));
        for bad in ["/_tree/shard/0/api/sse/surge/z1", "/_tree/shard/x/api", "/_tree/shard/3", "/_tree/other/1/a"] {
            assert_eq!(ObjectRequest::parse(bad), None, "{bad}");
        }
        assert_eq!(shard_name(&Id::parse("z1").expect("id"), 4), "z1#4");
    }

    #[test]
    fn the_root_serves_riders_itself_until_it_is_full_then_fills_shards_in_order() {
        let mut table = ShardTable::default();
        assert_eq!(table.choose(token(1), 0, 2, 3, 0), Choice::Here);
        assert_eq!(table.choose(token(2), 1, 2, 3, 0), Choice::Here);
        assert_eq!(table.choose(token(3), 2, 2, 3, 0), Choice::Shard(1));
        assert_eq!(table.choose(token(4), 2, 2, 3, 0), Choice::Shard(1), "one request on its way: room for one");
        assert_eq!(table.choose(token(5), 2, 2, 3, 0), Choice::Shard(2));
    }

    #[test]
    fn requests_on_their_way_count_until_the_shard_reports_them() {
        let mut table = ShardTable::default();
        for n in 0..4 {
            assert_eq!(table.choose(token(n), 9, 4, 2, 0), Choice::Shard(1));
        }
        assert_eq!(table.choose(token(9), 9, 4, 2, 0), Choice::Shard(2), "four on their way fill shard 1");
        // Shard 1 got all four and two riders left again.
        table.report(1, Report { riders: 2, arrived: 4 });
        assert_eq!(table.choose(token(10), 9, 4, 2, 0), Choice::Shard(1));
    }

    #[test]
    fn a_tokens_streams_stay_on_one_object_while_it_has_room() {
        let mut table = ShardTable::default();
        assert_eq!(table.choose(token(1), 5, 5, 3, 0), Choice::Shard(1));
        // The root has room again, but the token's first stream is on shard 1: so is the next,
        // and shard 1's per-token cap holds for all of them.
        assert_eq!(table.choose(token(1), 0, 5, 3, 1), Choice::Shard(1));
        assert_eq!(table.choose(token(2), 0, 5, 3, 1), Choice::Here);
        // Filled to the cap, shard 1 still takes the token's streams, up to the hard cap.
        table.report(1, Report { riders: 5, arrived: 2 });
        assert_eq!(table.choose(token(1), 0, 5, 3, 2), Choice::Shard(1));
        assert_eq!(table.choose(token(3), 0, 5, 3, 2), Choice::Here, "a new token goes where there is room");
        // Past it, the token moves rather than be refused.
        table.report(1, Report { riders: 6, arrived: 3 });
        assert_eq!(table.choose(token(1), 0, 5, 3, 3), Choice::Here);
    }

    #[test]
    fn the_hard_cap_is_an_eighth_over_the_cap_and_at_least_one() {
        assert_eq!(hard_cap(500), 562);
        assert_eq!(hard_cap(2), 3);
        assert_eq!(hard_cap(u32::MAX), u32::MAX);
    }

    #[test]
    fn a_full_tree_refuses_and_a_shard_that_emptied_frees_its_slot() {
        let mut table = ShardTable::default();
        assert_eq!(table.choose(token(1), 1, 1, 1, 0), Choice::Shard(1));
        table.linked(1);
        table.report(1, Report { riders: 1, arrived: 1 });
        assert_eq!(table.choose(token(2), 1, 1, 1, 0), Choice::Full);
        assert!(table.any_linked());
        table.unlinked(1);
        assert!(!table.any_linked());
        assert_eq!(table.choose(token(2), 1, 1, 1, 0), Choice::Shard(1));
    }

    #[test]
    fn a_root_that_restarted_counts_nothing_on_its_way_to_an_old_shard() {
        let mut table = ShardTable::default();
        table.linked(2);
        table.report(2, Report { riders: 3, arrived: 40 });
        assert_eq!(table.snapshot(), vec![ShardStats { shard: 2, riders: 3, linked: true }]);
        assert_eq!(table.choose(token(1), 4, 4, 2, 0), Choice::Shard(1));
        assert_eq!(table.choose(token(2), 4, 1, 2, 0), Choice::Full, "shard 1 has one on its way, shard 2 three");
        assert_eq!(table.riders(), 3);
    }

    #[test]
    fn remembered_tokens_are_bounded() {
        let mut table = ShardTable::default();
        for n in 0..100 {
            table.choose(token(n), 0, 10, 1, 0);
        }
        // Capacity 20, bound 40: never more remembered than that.
        assert!(table.sticky.len() <= 40, "{}", table.sticky.len());
    }
}
