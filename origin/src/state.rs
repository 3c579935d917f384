//! What every request handler can reach: cheap handles, cloned per request.

use std::sync::Arc;

use tokio::sync::watch;

use crate::{
    auth::Authenticator, bus::Backend, config::Config, fanout::Hubs, ingest::Ingestor, metrics::Metrics,
    shutdown::Drain,
};

#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Authenticator,
    pub backend: Arc<dyn Backend>,
    pub hubs: Hubs,
    pub ingestor: Ingestor,
    pub metrics: Metrics,
    pub drain: Drain,
    /// Ticks once per heartbeat interval; every SSE stream writes a comment on each tick. One
    /// shared timer instead of one per stream.
    pub heartbeat: watch::Receiver<()>,
}
