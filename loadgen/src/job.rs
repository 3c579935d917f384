//! What a worker is asked to do: what is measured ([`Mode`]), against which server
//! ([`ServerKind`]), how drivers move ([`MotionKind`]), and the whole [`Job`], built identically
//! by the coordinator and by every worker process from the same command line.

use std::time::Duration;

use ridecast_protocol::TokenKeys;
use serde::Serialize;

use crate::http::Target;
use crate::plan::{Layout, Names, owner_of_driver, share};

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Rider streams and/or idle driver WebSockets held open; nothing is sent.
    Idle,
    /// Every driver update changes cell, so every update is pushed.
    Fanout,
    /// Drivers drive along streets; only cell changes are pushed.
    Realistic,
    /// Riders poll the location endpoint instead of streaming.
    Poll,
}

impl Mode {
    /// Whether drivers send locations (idle drivers, when there are any, only hold a socket).
    pub fn has_drivers(self) -> bool {
        self != Self::Idle
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Fanout => "fanout",
            Self::Realistic => "realistic",
            Self::Poll => "poll",
        }
    }
}

/// The kind of server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    /// A Ridecast origin: drivers on `/ws/rides`, riders on `/api/sse/drivers/{id}/location`.
    Origin,
    /// Nginx with Nchan: riders on `GET /sub/{id}` (EventSource), drivers `POST /pub/{id}`.
    Nchan,
}

impl ServerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::Nchan => "nchan",
        }
    }
}

/// How simulated drivers move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MotionKind {
    /// A new grid cell on every update, so every update is pushed.
    Hop,
    /// 10 m along a straight line per update: about one in five changes cell (the origin
    /// pushes those; Nchan every update).
    Creep,
    /// Along streets, waiting at some lights, with GPS noise; only cell changes are pushed.
    Street,
    /// A fleet: drivers alternate between driving (as `street`) and standing for minutes; a
    /// standing driver's phone sends a fix every 30 s only.
    Fleet,
}

impl MotionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hop => "hop",
            Self::Creep => "creep",
            Self::Street => "street",
            Self::Fleet => "fleet",
        }
    }
}

/// Everything a worker needs to know; built identically by the coordinator and each worker
/// process from the same command line.
#[derive(Debug, Clone)]
pub struct Job {
    pub mode: Mode,
    pub server: ServerKind,
    pub motion: MotionKind,
    /// Driver connections are opened (senders, or idle ones in the idle mode).
    pub connects_drivers: bool,
    pub targets: Vec<Target>,
    /// Where riders connect when not to `targets` (`--rider-url`); empty = `targets`.
    pub rider_targets: Vec<Target>,
    pub keys: TokenKeys,
    pub layout: Layout,
    pub procs: usize,
    pub worker: usize,
    /// Drivers spread over the targets too (only meaningful when the instances share a bus).
    pub drivers_round_robin: bool,
    /// Time between two updates of one driver.
    pub send_interval: Duration,
    /// Time between two polls of one rider.
    pub poll_interval: Duration,
    pub source_addrs: usize,
    pub connect_concurrency: usize,
    /// Connection attempts started per second (0 = unpaced).
    pub connect_rate: u64,
    pub connect_timeout: Duration,
    pub drain: Duration,
    pub names: Names,
    pub seed: u64,
    /// Share of time fleet drivers stand (`MotionKind::Fleet`).
    pub standing_share: f64,
    pub token_ttl_secs: u64,
    /// Picks where in the source-port range this run starts (the same in every worker).
    pub port_seed: u64,
}

impl Job {
    /// The instance rider `slot` connects to.
    pub fn rider_target(&self, slot: usize) -> &Target {
        let targets = if self.rider_targets.is_empty() { &self.targets } else { &self.rider_targets };
        &targets[slot % targets.len()]
    }

    /// The instance driver `driver` connects to.
    pub fn driver_target(&self, driver: usize) -> &Target {
        if self.drivers_round_robin { &self.targets[driver % self.targets.len()] } else { &self.targets[0] }
    }

    /// The drivers this worker simulates.
    pub fn owned_drivers(&self) -> Vec<usize> {
        if !self.connects_drivers {
            return Vec::new();
        }
        (0..self.layout.drivers).filter(|&d| owner_of_driver(&self.layout, self.procs, d) == self.worker).collect()
    }

    /// Sockets this worker will hold at once.
    pub fn sockets_needed(&self) -> usize {
        share(self.layout.riders, self.procs, self.worker).len() + self.owned_drivers().len()
    }
}
