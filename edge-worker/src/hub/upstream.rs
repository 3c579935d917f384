//! The link a hub takes its values from: the origin's edge link at a root, the root's link at a
//! shard. Both carry the same thing (each value as its JSON, the current one first), so one loop
//! runs either, reconnecting with exponential backoff and full jitter while anyone listens.

use futures_util::StreamExt;
use ridecast_protocol::{Claims, Id, Role};
use worker::{Delay, Headers, Method, Request, RequestInit, Url, WebSocket, WebsocketEvent};

use super::{BACKOFF_MAX, BACKOFF_MIN, EDGE_TOKEN_TTL_SECS, Hub};
use crate::{
    auth, bindings,
    error::EdgeError,
    tree::{self, Place},
};

/// The host of the URLs objects use among themselves (any name does: a stub ignores it).
const INTERNAL_HOST: &str = "https://ridecast-tree";

impl Hub {
    /// Starts the upstream task unless it runs. It ends once nobody listens when a link closes.
    pub(super) fn ensure_upstream(&self) {
        if std::mem::replace(&mut self.inner.borrow_mut().upstream_task, true) {
            return;
        }
        let hub = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let mut backoff = BACKOFF_MIN;
            loop {
                match hub.run_upstream_once().await {
                    Ok(()) => backoff = BACKOFF_MIN,
                    Err(e) => worker::console_warn!("upstream link failed: {e}"),
                }
                let listeners = {
                    let mut inner = hub.inner.borrow_mut();
                    inner.upstream = None;
                    inner.has_listeners()
                };
                if !listeners {
                    hub.inner.borrow_mut().upstream_task = false;
                    return;
                }
                // Full jitter: a restarted origin (or root) is not hit by every object at once.
                let wait = backoff.mul_f64(js_sys::Math::random());
                Delay::from(wait).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        });
    }

    /// One life of the upstream link: connect, feed every value to [`Hub::publish`], return when
    /// it closes.
    async fn run_upstream_once(&self) -> Result<(), EdgeError> {
        let (key, place) = {
            let inner = self.inner.borrow();
            (inner.key.clone(), inner.place)
        };
        let (Some(key), Some(place)) = (key, place) else {
            return Ok(());
        };
        let ws = match place {
            Place::Root => WebSocket::connect(self.origin_link_url(&key)?).await?,
            Place::Shard(shard) => self.connect_to_root(&key, shard).await?,
        };
        let mut events = ws.events()?;
        ws.accept()?;
        {
            let mut inner = self.inner.borrow_mut();
            inner.upstream = Some(ws.clone());
            // A new root hears the count first, even if it has not changed here.
            inner.reported = None;
        }
        self.report_to_root();
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

    /// The origin's edge link for `key`, with an `edge` token minted here.
    fn origin_link_url(&self, key: &Id) -> Result<Url, EdgeError> {
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

    /// A shard's link to its key's root: a WebSocket between two objects of the same namespace.
    async fn connect_to_root(&self, key: &Id, shard: u32) -> Result<WebSocket, EdgeError> {
        let binding = self.kind.binding();
        let namespace = self.env.durable_object(binding).map_err(|_| EdgeError::Config(binding))?;
        let root = namespace.get_by_name(key.as_str())?;
        let headers = Headers::new();
        headers.set("upgrade", "websocket")?;
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        let url = format!("{INTERNAL_HOST}{}", tree::link_path(shard, &self.kind.rider_path(key)));
        let response = root.fetch_with_request(Request::new_with_init(&url, &init)?).await?;
        response
            .websocket()
            .ok_or_else(|| EdgeError::TreeLink(format!("the root of {key} did not accept shard {shard}'s link")))
    }
}
