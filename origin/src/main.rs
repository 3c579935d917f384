//! `ridecast-origin`: parse flags, then serve (or print a token).

use std::process::ExitCode;

use clap::Parser;
use ridecast_origin::{
    Extension,
    app::{config::Cli, launch},
};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    launch::exit(launch::run(Cli::parse().into(), |_| Extension::default()))
}
