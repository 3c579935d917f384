//! Wiring: the backend, hubs, router and accept loop of one origin instance.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    api::{front, state::AppState, stream_signals},
    app::extension::{Extension, Listening},
    app::{config::Config, router::router_with},
    auth::Authenticator,
    base::{
        metrics::{GaugeGuard, Metrics},
        shutdown::Drain,
    },
    bus::{Backend, BackendError, Deliveries, embedded::EmbeddedBackend, redis::RedisBackend},
    chat::{
        Chat,
        store::{ChatStore, embedded::EmbeddedChat, redis::RedisChat},
    },
    dispatch::{
        dispatcher::Dispatcher,
        post::DriverPost,
        store::{DispatchStore, embedded::EmbeddedDispatch, redis::RedisDispatch},
    },
    fanout::{
        snapshots::Snapshots,
        subscriptions::{Inbound, SubscriptionManager},
    },
    ingest::Ingestor,
    limits::{principal_allowances::PrincipalAllowances, token_streams::TokenStreams},
    rides::{
        Rides,
        store::{RideStore, embedded::EmbeddedRides, redis::RedisRides},
    },
};

/// File descriptors kept back from the connection limit for Redis, logs and the listener.
pub const FD_RESERVE: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not set up the backend")]
    Backend(#[from] BackendError),
    #[error("could not read the listener's address")]
    ListenAddr(#[source] std::io::Error),
}

/// Serves `listener` until `shutdown` completes, then drains within `config.drain`.
///
/// # Errors
/// As [`run_with`].
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    run_with(listener, config, Extension::default(), shutdown).await
}

/// [`run`], serving `extension`'s routes beside the API's and calling its hook once listening.
///
/// # Errors
/// [`ServerError::Backend`] if the Redis URL is invalid, [`ServerError::ListenAddr`] if the
/// listener has no address to hand to the extension's hook.
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    extension: Extension,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let instance = Instance::start(config).await?;
    let state = &instance.state;
    let max_connections = instance.max_connections.unwrap_or_else(default_max_connections);
    let backend = if instance.redis.is_some() { "redis" } else { "embedded" };
    tracing::info!(max_connections, backend, "serving");
    if let Some(hook) = extension.on_listening {
        let addr = listener.local_addr().map_err(ServerError::ListenAddr)?;
        let drain = &state.drain;
        hook(Listening { addr, shutdown: drain.token().clone(), tracker: drain.tracker().clone() });
    }

    accept_loop(&listener, state, extension.routes, max_connections, shutdown).await;
    drop(listener);
    instance.stop().await;
    Ok(())
}

/// One origin instance's parts, started and wired: the backend and stores its configuration
/// picks, the hubs and their subscription manager, the dispatcher, and the [`AppState`] every
/// handler reaches. [`run_with`] serves it on a listener; in-process tests drive its
/// [`router`](Instance::router) directly.
#[derive(Debug)]
pub struct Instance {
    pub state: AppState,
    redis: Option<RedisBackend>,
    /// The bound on the drain.
    drain_limit: Duration,
    max_connections: Option<usize>,
}

impl Instance {
    /// Connects the backend (Redis when `config.redis_url` says so, embedded otherwise) and
    /// starts the instance's background tasks, which run until [`Instance::stop`].
    ///
    /// # Errors
    /// [`ServerError::Backend`] if the Redis URL is invalid.
    pub async fn start(config: Config) -> Result<Self, ServerError> {
        let metrics = Metrics::default();
        let drain = Drain::new();
        let shutdown = drain.token().clone();
        let (inbound, commands) = Inbound::new(metrics.clone());
        let deliveries: Arc<dyn Deliveries> = Arc::new(inbound.clone());
        let (backend, redis): (Arc<dyn Backend>, Option<RedisBackend>) = match &config.redis_url {
            Some(url) => {
                let redis = RedisBackend::connect(
                    url.as_str(),
                    config.location_ttl,
                    deliveries,
                    metrics.clone(),
                    shutdown.clone(),
                )
                .await?;
                (Arc::new(redis.clone()), Some(redis))
            }
            None => (Arc::new(EmbeddedBackend::new(deliveries, config.location_ttl, shutdown.clone())), None),
        };
        let ride_store: Arc<dyn RideStore> = match &redis {
            Some(redis) => Arc::new(RedisRides::new(redis.command_client(), redis.pubsub(), config.ride_ttl)),
            None => Arc::new(EmbeddedRides::new(backend.clone(), config.ride_ttl, shutdown.clone())),
        };
        let snapshots = Snapshots::new(backend.clone(), ride_store.clone());
        let manager = SubscriptionManager::new(inbound.clone(), backend.clone(), snapshots.clone());
        tokio::spawn(manager.run(commands, shutdown.clone()));

        let rides = Rides::new(ride_store, config.secrets.keys.clone(), metrics.clone(), config.ride_token_ttl);
        let (dispatch_store, post): (Arc<dyn DispatchStore>, DriverPost) = match &redis {
            Some(redis) => (
                Arc::new(RedisDispatch::new(redis.command_client(), config.ride_ttl)),
                DriverPost::through_redis(redis, shutdown.clone()).await?,
            ),
            None => (Arc::new(EmbeddedDispatch::new(config.ride_ttl)), DriverPost::local()),
        };
        let chat_store: Arc<dyn ChatStore> = match &redis {
            Some(redis) => Arc::new(RedisChat::new(redis.command_client(), config.chat.history_max, config.chat.ttl)),
            None => Arc::new(EmbeddedChat::new(config.chat.history_max, config.chat.ttl, shutdown.clone())),
        };
        let chat = Chat::new(chat_store, inbound.chat.clone(), backend.clone(), config.chat, metrics.clone());
        let dispatcher = Dispatcher::new(dispatch_store, rides.clone(), post, config.dispatch, metrics.clone());
        tokio::spawn(dispatcher.clone().run_sweeper(shutdown.clone()));

        let (drain_limit, max_connections) = (config.drain, config.max_connections);
        let state = AppState {
            auth: Authenticator::new(config.secrets.keys.clone()),
            ingestor: Ingestor::new(backend.clone(), metrics.clone(), shutdown.clone()),
            rides: Arc::new(rides),
            dispatcher: Arc::new(dispatcher),
            chat: Arc::new(chat),
            stream_signals: stream_signals::StreamSignals::spawn(config.api.heartbeat, shutdown),
            token_streams: TokenStreams::new(config.api.max_streams_per_token),
            driver_allowances: PrincipalAllowances::new(config.api.driver_rate),
            ride_allowances: PrincipalAllowances::new(config.api.ride_create_rate),
            config: Arc::new(config.api),
            backend,
            snapshots,
            hubs: inbound.hubs,
            metrics,
            drain,
        };
        Ok(Self { state, redis, drain_limit, max_connections })
    }

    /// The whole API with `extra` routes (an [`Extension`]'s), as the accept loop serves it.
    pub fn router(&self, extra: axum::Router) -> axum::Router {
        router_with(self.state.clone(), extra)
    }

    /// Drains: ends every stream and socket, waits for them within the configured bound, and
    /// closes the Redis connections.
    pub async fn stop(self) {
        let drain = &self.state.drain;
        tracing::info!(grace = ?self.drain_limit, "draining");
        drain.begin();
        if !drain.wait(self.drain_limit).await {
            tracing::warn!("drain time limit reached; closing the remaining connections");
        }
        if let Some(redis) = &self.redis {
            redis.quit().await;
        }
        tracing::info!("stopped");
    }
}

async fn accept_loop(
    listener: &TcpListener,
    state: &AppState,
    extra_routes: axum::Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    let router = router_with(state.clone(), extra_routes);
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => {
                backoff = Duration::from_millis(5);
                tcp
            }
            Err(error) => {
                // Usually EMFILE: back off instead of spinning, and let connections finish.
                tracing::warn!(%error, ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            Metrics::inc(&state.metrics.values().connections_refused_total);
            tokio::spawn(front::refuse_connection(tcp, state.config.sse_retry_ms));
            continue;
        };
        let router = router.clone();
        let (header_timeout, token) = (state.config.header_timeout, state.drain.token().clone());
        let open = GaugeGuard::new(&state.metrics, |m| &m.tcp_connections);
        let tracker = state.drain.tracker().clone();
        let slot = front::ConnectionSlot::new((permit, open));
        tracker.spawn(front::serve_connection(tcp, router, header_timeout, token, tracker.clone(), slot));
    }
}

/// The connection limit when none is configured: what the fd limit allows.
pub fn default_max_connections() -> usize {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(FD_RESERVE).max(1)
}
