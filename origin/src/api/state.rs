//! What every request handler can reach: cheap handles, cloned per request.

use std::sync::Arc;

use crate::{
    api::config::ApiConfig,
    api::stream_signals::StreamSignals,
    auth::Authenticator,
    base::{metrics::Metrics, shutdown::Drain},
    bus::Backend,
    chat::Chat,
    dispatch::dispatcher::Dispatcher,
    fanout::{hubs::Hubs, snapshots::Snapshots},
    ingest::Ingestor,
    limits::{principal_allowances::PrincipalAllowances, token_streams::TokenStreams},
    rides::Rides,
};

#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<ApiConfig>,
    pub auth: Authenticator,
    pub backend: Arc<dyn Backend>,
    /// Every topic's latest stored value: what a new subscriber starts from.
    pub snapshots: Snapshots,
    pub hubs: Hubs,
    pub ingestor: Ingestor,
    /// Ride creation, lookup and status changes (the handlers' and the matcher's one way in).
    /// (Behind an `Arc`, like the dispatcher: every driver session holds an `AppState`, and
    /// these carry token keys and configuration worth hundreds of bytes each.)
    pub rides: Arc<Rides>,
    /// Ride offers: matching, drivers' answers, deadlines.
    pub dispatcher: Arc<Dispatcher>,
    /// Ride chat: its store, rooms and notices.
    pub chat: Arc<Chat>,
    /// Concurrent streams and sockets per token.
    pub token_streams: TokenStreams,
    /// Each driver's allowance for frames other than locations, kept across its reconnects.
    pub driver_allowances: PrincipalAllowances,
    /// Each rider's (`sub`'s) allowance for requesting rides.
    pub ride_allowances: PrincipalAllowances,
    pub metrics: Metrics,
    pub drain: Drain,
    /// Heartbeat ticks and the drain signal for every SSE stream.
    pub stream_signals: StreamSignals,
}
