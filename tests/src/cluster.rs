//! The ways Ridecast is deployed, as something a test can start in one line.

use crate::origin::{Origin, OriginBuilder};
use crate::redis::RedisServer;
use crate::redis_cluster::RedisCluster;

/// How the origins share state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One origin, no `--redis-url`: the in-process bus and store.
    Embedded,
    /// A private `redis-server` and three origins using it.
    Redis,
    /// A private Redis Cluster (three primaries, three replicas) and three origins using it.
    RedisCluster,
}

/// Origins started in Redis mode: one for the driver, two for riders.
const REDIS_MODE_ORIGINS: usize = 3;

/// The processes of one test.
#[derive(Debug)]
pub struct Cluster {
    pub mode: Mode,
    /// Declared first so that they are dropped (killed) before Redis, which then goes quietly.
    pub origins: Vec<Origin>,
    /// The Redis server (Redis mode only).
    pub redis: Option<RedisServer>,
    /// The Redis Cluster (Redis Cluster mode only).
    pub redis_cluster: Option<RedisCluster>,
}

impl Cluster {
    /// Starts the processes of `mode`, each origin configured by `configure`.
    pub async fn start(mode: Mode, configure: impl Fn(OriginBuilder) -> OriginBuilder) -> Self {
        match mode {
            Mode::Embedded => {
                let origin = configure(Origin::builder()).start().await;
                Self { mode, origins: vec![origin], redis: None, redis_cluster: None }
            }
            Mode::Redis => {
                let redis = RedisServer::start().await;
                let mut origins = Vec::with_capacity(REDIS_MODE_ORIGINS);
                for _ in 0..REDIS_MODE_ORIGINS {
                    origins.push(configure(Origin::builder().redis(&redis)).start().await);
                }
                Self { mode, origins, redis: Some(redis), redis_cluster: None }
            }
            Mode::RedisCluster => {
                let redis_cluster = RedisCluster::start().await;
                let mut origins = Vec::with_capacity(REDIS_MODE_ORIGINS);
                for _ in 0..REDIS_MODE_ORIGINS {
                    origins.push(configure(Origin::builder().redis_url(redis_cluster.url())).start().await);
                }
                Self { mode, origins, redis: None, redis_cluster: Some(redis_cluster) }
            }
        }
    }

    /// Starts `mode` with the origins' defaults.
    pub async fn start_default(mode: Mode) -> Self {
        Self::start(mode, |builder| builder).await
    }

    /// Where the driver connects: the first origin.
    pub fn driver_side(&self) -> &Origin {
        &self.origins[0]
    }

    /// Where riders connect: every *other* origin with Redis (so each delivery crosses the
    /// bus), the one origin in embedded mode.
    pub fn rider_sides(&self) -> &[Origin] {
        match self.mode {
            Mode::Embedded => &self.origins[..],
            Mode::Redis | Mode::RedisCluster => &self.origins[1..],
        }
    }

    /// The first rider-side origin.
    pub fn rider_side(&self) -> &Origin {
        &self.rider_sides()[0]
    }
}
