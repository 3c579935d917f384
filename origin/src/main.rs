//! `ridecast-origin`: parse flags, then serve (or print a token).

use clap::Parser;
use ridecast_origin::{
    Extension,
    app::{config::Cli, launch},
};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    Ok(launch::run(Cli::parse().into(), |_| Extension::default())?)
}
