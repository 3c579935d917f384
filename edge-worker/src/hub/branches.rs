//! The fan-out tree inside a hub ([`crate::tree`]): at the root, the shards' links, what they
//! report and the operators' view of it all; at a shard, its reports to the root.

use futures_util::StreamExt;
use serde::Serialize;
use worker::{Request, Response, WebSocket, WebSocketPair, WebsocketEvent};

use super::Hub;
use crate::{
    error::EdgeError,
    tree::{Place, Report, ShardStats},
};

/// The answer to an operator's `GET /edge/v1/tree/...`: how one key's tree stands.
#[derive(Debug, Serialize)]
struct TreeStats {
    /// Rider streams on the root itself.
    riders: u32,
    /// The root's and every shard's riders (as the shards last reported them).
    riders_in_tree: u32,
    /// Whether the root's link to the origin is open.
    origin_link: bool,
    /// The latest value's id (`ts`), if any.
    latest: Option<u64>,
    shards: Vec<ShardStats>,
}

impl Hub {
    /// Accepts shard `shard`'s link: sends it the latest value, then listens for its reports
    /// until it closes, which is how the root learns that the shard emptied.
    pub(super) fn accept_shard_link(&self, req: &Request, shard: u32, rider_path: &str) -> Result<Response, EdgeError> {
        let key = self.kind.key_from_path(rider_path).ok_or(EdgeError::NotFound)?;
        if !req.headers().get("upgrade")?.is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
            return Err(EdgeError::NotFound);
        }
        let WebSocketPair { client, server } = WebSocketPair::new()?;
        server.accept()?;
        {
            let mut inner = self.inner.borrow_mut();
            inner.take_place(Place::Root)?;
            inner.key.get_or_insert(key);
            if let Some((_, json)) = &inner.latest {
                server.send_with_str(json)?;
            }
            // A shard relinking replaces its old link.
            if let Some(old) = inner.downstream.insert(shard, server.clone()) {
                let _ = old.close(Some(1000), Some("replaced"));
            }
            inner.shards.linked(shard);
        }
        self.ensure_upstream();
        let hub = self.clone();
        wasm_bindgen_futures::spawn_local(async move { hub.listen_to_shard(shard, server).await });
        Ok(Response::from_websocket(client)?)
    }

    async fn listen_to_shard(&self, shard: u32, ws: WebSocket) {
        if let Ok(mut events) = ws.events() {
            while let Some(Ok(event)) = events.next().await {
                match event {
                    WebsocketEvent::Message(msg) => match msg.text().map(|t| serde_json::from_str::<Report>(&t)) {
                        Some(Ok(report)) => self.inner.borrow_mut().shards.report(shard, report),
                        _ => worker::console_warn!("shard {shard} sent something that is not a report; ignored"),
                    },
                    WebsocketEvent::Close(_) => break,
                }
            }
        }
        let listeners = {
            let mut inner = self.inner.borrow_mut();
            // Only if it is still this link: a relinked shard has replaced it.
            if inner.downstream.get(&shard) == Some(&ws) {
                inner.downstream.remove(&shard);
                inner.shards.unlinked(shard);
            }
            inner.has_listeners()
        };
        if !listeners {
            self.set_grace_alarm().await;
        }
    }

    /// At a shard: tells the root how many riders it holds, when that changed and the link is up.
    pub(super) fn report_to_root(&self) {
        let mut inner = self.inner.borrow_mut();
        if !matches!(inner.place, Some(Place::Shard(_))) {
            return;
        }
        inner.drop_gone_riders();
        let report = Report { riders: u32::try_from(inner.riders.len()).unwrap_or(u32::MAX), arrived: inner.arrived };
        if inner.reported == Some(report) {
            return;
        }
        let Some(root) = &inner.upstream else { return };
        match serde_json::to_string(&report).map(|json| root.send_with_str(json)) {
            Ok(Ok(())) => inner.reported = Some(report),
            _ => worker::console_warn!("could not report to the root"),
        }
    }

    /// The operators' view of the tree (asked at the root).
    pub(super) fn stats(&self, rider_path: &str) -> Result<Response, EdgeError> {
        let key = self.kind.key_from_path(rider_path).ok_or(EdgeError::NotFound)?;
        let mut inner = self.inner.borrow_mut();
        inner.take_place(Place::Root)?;
        inner.key.get_or_insert(key);
        inner.drop_gone_riders();
        let riders = u32::try_from(inner.riders.len()).unwrap_or(u32::MAX);
        let stats = TreeStats {
            riders,
            riders_in_tree: riders.saturating_add(inner.shards.riders()),
            origin_link: inner.upstream.is_some(),
            latest: inner.latest.as_ref().map(|(id, _)| *id),
            shards: inner.shards.snapshot(),
        };
        Ok(Response::from_json(&stats)?)
    }
}
