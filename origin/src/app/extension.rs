//! The one way a program built on the origin adds to it: extra routes, served with the API's,
//! and a hook called once the instance listens.
//!
//! The live demo (`ridecast-demo`) is such a program. It adds its pages and starts simulated
//! drivers that connect to the address it is handed, as any client would; the origin itself
//! knows nothing of it.

use std::net::SocketAddr;

use axum::Router;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// What to add to one origin instance. `Extension::default()` adds nothing.
#[derive(Default)]
pub struct Extension {
    pub(crate) routes: Router,
    pub(crate) on_listening: Option<Box<dyn FnOnce(Listening) + Send>>,
}

impl Extension {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `routes` (already given their own state) beside the API's, inside the same layers
    /// (body limit, CORS, failure logging) and before its 404 fallback.
    ///
    /// Their paths must not overlap the API's, and they must have no fallback of their own:
    /// serving would panic at start, as axum's `Router::merge` does.
    #[must_use]
    pub fn routes(mut self, routes: Router) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Calls `hook` once the listener is bound, before the first connection is accepted (clients
    /// it starts wait in the listener's backlog meanwhile). It runs on the instance's runtime and
    /// must not block: spawn what lasts, on [`Listening::tracker`].
    #[must_use]
    pub fn on_listening(mut self, hook: impl FnOnce(Listening) + Send + 'static) -> Self {
        self.on_listening = Some(Box::new(hook));
        self
    }
}

impl std::fmt::Debug for Extension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extension").field("on_listening", &self.on_listening.is_some()).finish_non_exhaustive()
    }
}

/// What an [`Extension`]'s hook gets: where the instance listens, and its drain.
#[derive(Debug, Clone)]
pub struct Listening {
    /// The bound address (port 0 resolved). It may be unspecified (`0.0.0.0`): clients on this
    /// host then reach it on the loopback address.
    pub addr: SocketAddr,
    /// Fires when the instance starts draining: whatever the extension runs should wrap up.
    pub shutdown: CancellationToken,
    /// Tasks spawned here are waited for during the drain (up to its time limit).
    pub tracker: TaskTracker,
}
