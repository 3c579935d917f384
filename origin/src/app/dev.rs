//! Dev mode and the `token` subcommand.

use std::net::SocketAddr;

use ridecast_protocol::{Claims, Id, Role, TokenError, TokenKeys};

use crate::{app::config::TokenArgs, base::clock};

/// Why a token could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("--{flag}: {source}")]
    InvalidId {
        flag: &'static str,
        #[source]
        source: ridecast_protocol::InvalidId,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Mints the token `ridecast-origin token ...` prints.
///
/// # Errors
/// [`MintError`] for ids that break the id rule.
pub fn mint(keys: &TokenKeys, args: &TokenArgs) -> Result<String, MintError> {
    let id = |flag: &'static str, raw: &str| Id::parse(raw).map_err(|source| MintError::InvalidId { flag, source });
    let claims = Claims {
        sub: id("sub", &args.sub)?,
        role: args.role,
        exp: clock::now_secs() + args.ttl,
        drv: args.driver.as_deref().map(|d| id("driver", d)).transpose()?,
        ride: args.ride.as_deref().map(|r| id("ride", r)).transpose()?,
    };
    Ok(keys.mint(&claims)?)
}

/// The loud dev-mode notice, with a working driver token and rider URL. For stdout only: it
/// carries tokens, which never go through the log pipeline.
pub fn banner(keys: &TokenKeys, addr: SocketAddr) -> String {
    let day = |role, sub: &str, driver: Option<&str>| {
        let args = TokenArgs { role, sub: sub.into(), driver: driver.map(Into::into), ride: None, ttl: 86_400 };
        mint(keys, &args).unwrap_or_default()
    };
    let driver = day(Role::Driver, "d-1", None);
    let rider = day(Role::Rider, "r-1", Some("d-1"));
    format!(
        "\n\
         ==================================================================================\n\
         DEV MODE: RIDECAST_TOKEN_SECRET is not set. Tokens are signed with a PUBLIC secret\n\
         and CORS is open. Never run like this in production.\n\
         ==================================================================================\n\
         driver d-1 token (24 h):\n  {driver}\n\
         driver WebSocket:\n  ws://{addr}/ws/rides?token={driver}\n\
         rider URL following d-1 (open in a browser or `curl -N`):\n  http://{addr}/api/sse/drivers/d-1/location?token={rider}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ops_token_is_minted_without_a_driver_and_verifies_as_ops() {
        let keys = TokenKeys::new(b"secret", None).expect("keys");
        let args = TokenArgs { role: Role::Ops, sub: "ops-1".into(), driver: None, ride: None, ttl: 60 };
        let token = mint(&keys, &args).expect("minted");
        let claims = keys.verify(&token, clock::now_secs()).expect("verifies");
        assert_eq!((claims.role, claims.sub.as_str(), claims.drv), (Role::Ops, "ops-1", None));
    }
}
