//! `ridecast-demo`: the origin with the live demo. Parse flags, then serve (or print a token).

use std::process::ExitCode;

use clap::Parser;
use ridecast_demo::cli::Cli;
use ridecast_origin::app::launch;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let (invocation, demo) = Cli::parse().split();
    launch::exit(launch::run(invocation, |config| ridecast_demo::extension(config, &demo)))
}
