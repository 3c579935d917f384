//! `ridecast-origin`: parse flags, then serve (or print a token).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use ridecast_origin::{
    Config,
    app::{
        config::{Cli, Command, LogFormat, Secrets, ServeArgs},
        dev, server,
    },
};
use tokio::net::{TcpListener, TcpSocket};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let secrets = Secrets::from_env().context("reading RIDECAST_TOKEN_SECRET")?;
    match cli.command {
        Some(Command::Token(args)) => {
            println!("{}", dev::mint(&secrets.keys, &args)?);
            Ok(())
        }
        Some(Command::Serve(args)) => serve(*args, secrets),
        None => serve(cli.serve, secrets),
    }
}

fn serve(args: ServeArgs, secrets: Secrets) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let config = Config::new(args, secrets);
    raise_fd_limit(config.max_connections);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = bind(config.listen, config.reuse_port).with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "listening");
        println!("RIDECAST_LISTENING {addr}");
        if config.secrets.dev_mode {
            tracing::warn!("{}", dev::banner(&config.secrets.keys, addr));
        }
        server::run(listener, config, shutdown_signal()).await?;
        Ok(())
    })
}

fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Raises the soft fd limit to the hard one: each connection is a descriptor.
fn raise_fd_limit(wanted: Option<usize>) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let usable = usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(server::FD_RESERVE);
            if let Some(wanted) = wanted.filter(|w| *w > usable) {
                tracing::warn!(wanted, usable, "--max-connections exceeds what the file-descriptor limit allows");
            }
        }
        Err(error) => tracing::warn!(%error, "could not raise the file-descriptor limit"),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
