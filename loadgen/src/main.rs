//! `ridecast-loadgen`: parse the command line, raise the fd limit, run.

use anyhow::Context;
use clap::Parser;
use ridecast_loadgen::{cli::Cli, coordinator, net};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Each rider is a socket: take every file descriptor the hard limit allows.
    let fd_limit = match net::raise_fd_limit() {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("could not raise the open-files limit ({e}); using the current one");
            rlimit_soft().unwrap_or(1024)
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(coordinator::run(cli.mode, fd_limit))?;
    Ok(())
}

fn rlimit_soft() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
}
