//! The `ridecast-demo` command line: every flag of `ridecast-origin` and its `token`
//! subcommand, plus the demo's own `--simulate`.

use clap::{Args, Parser, Subcommand};
use ridecast_origin::{
    Config,
    app::{
        config::{ServeArgs, TokenArgs},
        launch::Invocation,
    },
};

/// Simulated drivers in dev mode with the embedded backend, unless `--simulate` says otherwise.
pub const DEFAULT_SIMULATED: u32 = 30;

#[derive(Debug, Parser)]
#[command(
    name = "ridecast-demo",
    version,
    about = "Ridecast origin with the live demo: simulated drivers, and pages to ride, drive and watch them."
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub demo: DemoArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server and the demo (the default when no subcommand is given).
    // Boxed: the server's flags are hundreds of bytes, the token's a few dozen.
    Serve(Box<ServeCommand>),
    /// Print a signed token (uses RIDECAST_TOKEN_SECRET, or the dev secret when unset).
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct ServeCommand {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub demo: DemoArgs,
}

/// The demo's own flags.
#[derive(Debug, Clone, Default, Args)]
pub struct DemoArgs {
    /// Simulated drivers (`sim-01`, ...) driving a demo city, as real WebSocket clients of this
    /// instance: the live demo at `/demo/`. Default: 30 in dev mode with the embedded backend,
    /// 0 (off) otherwise. They take real rides: never on an instance that serves real riders.
    #[arg(long, env = "RIDECAST_SIMULATE", value_parser = clap::value_parser!(u16).range(0..=500))]
    pub simulate: Option<u16>,
}

impl DemoArgs {
    /// How many drivers to simulate on an instance configured by `config`.
    pub fn drivers(&self, config: &Config) -> u32 {
        // A living city out of the box (`cargo run`), but never uninvited next to real traffic:
        // with Redis, every instance would run the same `sim-NN` drivers.
        let default = if config.secrets.dev_mode && config.redis_url.is_none() { DEFAULT_SIMULATED } else { 0 };
        self.simulate.map_or(default, u32::from)
    }
}

impl Cli {
    /// What to do, and the demo's flags for it.
    pub fn split(self) -> (Invocation, DemoArgs) {
        match self.command {
            Some(Command::Token(args)) => (Invocation::Token(args), DemoArgs::default()),
            Some(Command::Serve(command)) => {
                let ServeCommand { serve, demo } = *command;
                (Invocation::Serve(Box::new(serve)), demo)
            }
            None => (Invocation::Serve(Box::new(self.serve)), self.demo),
        }
    }
}

#[cfg(test)]
mod tests {
    use ridecast_origin::app::config::Secrets;

    use super::*;

    fn drivers(args: &[&str], secrets: Secrets) -> u32 {
        let cli = Cli::parse_from(std::iter::once("ridecast-demo").chain(args.iter().copied()));
        let (invocation, demo) = cli.split();
        let Invocation::Serve(serve) = invocation else { panic!("expected to serve: {args:?}") };
        demo.drivers(&Config::new(*serve, secrets))
    }

    #[test]
    fn dev_mode_simulates_drivers_unless_told_otherwise_or_given_redis_or_a_secret() {
        let dev = || Secrets::load(|_| None).expect("dev secret");
        let secret = || Secrets::load(|n| (n == "RIDECAST_TOKEN_SECRET").then(|| "s".to_owned())).expect("secret");
        assert_eq!(drivers(&[], dev()), DEFAULT_SIMULATED);
        assert_eq!(drivers(&["--simulate", "0"], dev()), 0);
        assert_eq!(drivers(&["--simulate", "8"], dev()), 8);
        assert_eq!(drivers(&["serve", "--simulate", "8"], dev()), 8, "the serve subcommand takes it too");
        assert_eq!(drivers(&["--redis-url", "redis://127.0.0.1:6379"], dev()), 0);
        assert_eq!(drivers(&[], secret()), 0);
        assert_eq!(drivers(&["--simulate", "5"], secret()), 5, "asked for explicitly");
        assert!(Cli::try_parse_from(["ridecast-demo", "--simulate", "501"]).is_err());
    }

    #[test]
    fn every_origin_flag_and_the_token_subcommand_parse() {
        let cli = Cli::parse_from(["ridecast-demo", "--listen", "127.0.0.1:0", "--offer-expiry-ms", "3000"]);
        assert_eq!((cli.serve.listen.port(), cli.serve.offer_expiry_ms), (0, 3000));
        let cli = Cli::parse_from(["ridecast-demo", "token", "--role", "driver", "--sub", "d-1"]);
        assert!(matches!(cli.split().0, Invocation::Token(TokenArgs { ref sub, .. }) if sub == "d-1"));
    }
}
