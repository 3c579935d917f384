//! The two ways Ridecast is deployed, as something a test can start in one line.

use crate::origin::{Origin, OriginBuilder};
use crate::redis::RedisServer;

/// How the origins share state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One origin, no `--redis-url`: the in-process bus and store.
    Embedded,
    /// A private `redis-server` and three origins using it.
    Redis,
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
}

impl Cluster {
    /// Starts the processes of `mode`, each origin configured by `configure`.
    pub async fn start(mode: Mode, configure: impl Fn(OriginBuilder) -> OriginBuilder) -> Self {
        match mode {
            Mode::Embedded => {
                let origin = configure(Origin::builder()).start().await;
                Self { mode, origins: vec![origin], redis: None }
            }
            Mode::Redis => {
                let redis = RedisServer::start().await;
                let mut origins = Vec::with_capacity(REDIS_MODE_ORIGINS);
                for _ in 0..REDIS_MODE_ORIGINS {
                    origins.push(configure(Origin::builder().redis(&redis)).start().await);
                }
                Self { mode, origins, redis: Some(redis) }
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

    /// Where riders connect: every *other* origin in Redis mode (so each delivery crosses the
    /// bus), the one origin in embedded mode.
    pub fn rider_sides(&self) -> &[Origin] {
        match self.mode {
            Mode::Embedded => &self.origins[..],
            Mode::Redis => &self.origins[1..],
        }
    }

    /// The first rider-side origin.
    pub fn rider_side(&self) -> &Origin {
        &self.rider_sides()[0]
    }
}
