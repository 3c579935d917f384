//! What a binary built on the origin does after parsing its command line: print a token, or set
//! up logging and the fd limit, start the runtime, bind, announce the address, and serve with
//! an [`Extension`] until SIGTERM or ctrl-c. `ridecast-origin` and `ridecast-demo` share it, so
//! both start, log and stop the same way.

use std::{net::SocketAddr, process::ExitCode};

use ridecast_protocol::TokenError;
use tokio::net::{TcpListener, TcpSocket};

use crate::app::{
    config::{Cli, Command, Config, LogFormat, Secrets, ServeArgs, TokenArgs, UnsafeConfig, env},
    dev::{self, MintError},
    extension::Extension,
    server::{self, ServerError},
};

/// What a command line asks for.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// Run the server.
    // Boxed: the server's flags are hundreds of bytes, the token's a few dozen.
    Serve(Box<ServeArgs>),
    /// Print a signed token.
    Token(TokenArgs),
}

impl From<Cli> for Invocation {
    fn from(cli: Cli) -> Self {
        match cli.command {
            Some(Command::Token(args)) => Self::Token(args),
            Some(Command::Serve(args)) => Self::Serve(args),
            None => Self::Serve(Box::new(cli.serve)),
        }
    }
}

/// Why a binary stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("reading {}", env::TOKEN_SECRET)]
    Secrets(#[source] TokenError),
    #[error("refusing to start")]
    Unsafe(#[from] UnsafeConfig),
    #[error("printing the token")]
    Mint(#[from] MintError),
    #[error("starting the runtime")]
    Runtime(#[source] std::io::Error),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Serve(#[from] ServerError),
}

impl LaunchError {
    /// The process's exit status: 2 for a configuration that cannot be served (as clap exits for
    /// bad flags), 1 for a failure while running.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Secrets(_) | Self::Unsafe(_) => 2,
            Self::Mint(_) | Self::Runtime(_) | Self::Bind { .. } | Self::Serve(_) => 1,
        }
    }
}

/// What `main` returns for `result`: success, or the error and its causes on stderr and
/// [`LaunchError::exit_code`].
pub fn exit(result: Result<(), LaunchError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut text = format!("Error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                text.push_str(&format!("\n  caused by: {cause}"));
                source = cause.source();
            }
            eprintln!("{text}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Carries out `invocation`; when it is to serve, with the [`Extension`] `extension` builds
/// from the resolved configuration.
///
/// Once bound it prints `RIDECAST_LISTENING <addr>` on stdout (scripts and tests wait for it)
/// and, in dev mode, the dev banner: on stdout only, because it carries working tokens and logs
/// are shipped and kept.
///
/// # Errors
/// [`LaunchError`] says which step failed; [`LaunchError::Unsafe`] before anything is bound.
pub fn run(invocation: Invocation, extension: impl FnOnce(&Config) -> Extension) -> Result<(), LaunchError> {
    let secrets = Secrets::from_env().map_err(LaunchError::Secrets)?;
    match invocation {
        Invocation::Token(args) => {
            println!("{}", dev::mint(&secrets.keys, &args)?);
            Ok(())
        }
        Invocation::Serve(args) => serve(*args, secrets, extension),
    }
}

fn serve(args: ServeArgs, secrets: Secrets, extension: impl FnOnce(&Config) -> Extension) -> Result<(), LaunchError> {
    init_logging(args.log_format);
    let config = Config::new(args, secrets);
    config.check_safe()?;
    raise_fd_limit(config.max_connections);
    let extension = extension(&config);
    let runtime = runtime(config.threads).map_err(LaunchError::Runtime)?;
    runtime.block_on(async move {
        let bind_error = |source| LaunchError::Bind { addr: config.listen, source };
        let listener = bind(config.listen, config.reuse_port).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        tracing::info!(%addr, "listening");
        println!("RIDECAST_LISTENING {addr}");
        if config.secrets.dev_mode {
            tracing::warn!(
                "DEV MODE: {} is not set; tokens are signed with a public secret and CORS is open. Local use only",
                env::TOKEN_SECRET
            );
            println!("{}", dev::banner(&config.secrets.keys, addr));
        }
        server::run_with(listener, config, extension, shutdown_signal()).await?;
        Ok(())
    })
}

/// The runtime for `threads` (0 = one per core): one thread is a current-thread runtime, whose
/// tasks wake one another without a cross-thread hand-off or a parked worker woken to steal.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build()
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
