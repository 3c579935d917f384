//! Tokens for every role, good and bad, minted with the shared `ridecast_protocol::TokenKeys`.
//!
//! Tokens from an *independent* JWT library (PyJWT) and from the origin's own `token`
//! subcommand are exercised in `tests/token_interop.rs`.

use ridecast_protocol::{Claims, Id, Role, TokenKeys};

use crate::wait::now_secs;

/// The secret every test origin is started with (`RIDECAST_TOKEN_SECRET`).
pub const TEST_SECRET: &str = "ridecast-e2e-test-secret-0123456789";

/// A secret the origins do not know.
pub const OTHER_SECRET: &str = "not-the-origin-secret-9876543210";

/// How long good test tokens live.
const TTL_SECS: u64 = 3600;

/// How far in the past an expired token's `exp` lies: well beyond the contract's 30 s leeway.
const EXPIRED_BY_SECS: u64 = 120;

/// Signs `claims` with `secret`.
///
/// # Panics
/// If the secret is empty or signing fails (neither happens with the constants here).
pub fn mint_with(secret: &str, claims: &Claims) -> String {
    TokenKeys::new(secret.as_bytes(), None).expect("non-empty secret").mint(claims).expect("signing a token")
}

/// Signs `claims` with [`TEST_SECRET`].
pub fn mint(claims: &Claims) -> String {
    mint_with(TEST_SECRET, claims)
}

/// Claims for `role` `sub`, valid for an hour, with no `drv` or `ride`.
pub fn claims(role: Role, sub: &str) -> Claims {
    Claims { sub: id(sub), role, exp: now_secs() + TTL_SECS, drv: None, ride: None }
}

/// A driver's token: its `sub` is the driver id.
pub fn driver_token(driver: &str) -> String {
    mint(&claims(Role::Driver, driver))
}

/// A rider's token allowed to track `driver` (`drv`).
pub fn rider_token(rider: &str, driver: &str) -> String {
    mint(&Claims { drv: Some(id(driver)), ..claims(Role::Rider, rider) })
}

/// A rider's token with no `drv`: it may not track anyone.
pub fn rider_token_without_drv(rider: &str) -> String {
    mint(&claims(Role::Rider, rider))
}

/// A rider's token scoped to `ride` (`ride` claim), with no `drv`: what `POST /api/rides`
/// answers with, minted here for rides a test names itself.
pub fn ride_token(rider: &str, ride: &str) -> String {
    mint(&Claims { ride: Some(id(ride)), ..claims(Role::Rider, rider) })
}

/// An operator's token: what `POST /api/surge/{zoneId}` takes.
pub fn ops_token(operator: &str) -> String {
    mint(&claims(Role::Ops, operator))
}

/// An edge Durable Object's token: what the `/edge/v1/` links take.
pub fn edge_token(edge: &str) -> String {
    mint(&claims(Role::Edge, edge))
}

/// A rider's token for `driver` that expired [`EXPIRED_BY_SECS`] ago.
pub fn expired_rider_token(rider: &str, driver: &str) -> String {
    mint(&Claims { drv: Some(id(driver)), exp: now_secs() - EXPIRED_BY_SECS, ..claims(Role::Rider, rider) })
}

/// A driver's token that expired [`EXPIRED_BY_SECS`] ago.
pub fn expired_driver_token(driver: &str) -> String {
    mint(&Claims { exp: now_secs() - EXPIRED_BY_SECS, ..claims(Role::Driver, driver) })
}

/// A rider's token for `driver`, well formed but signed with [`OTHER_SECRET`].
pub fn bad_signature_rider_token(rider: &str, driver: &str) -> String {
    mint_with(OTHER_SECRET, &Claims { drv: Some(id(driver)), ..claims(Role::Rider, rider) })
}

/// A driver's token signed with [`OTHER_SECRET`].
pub fn bad_signature_driver_token(driver: &str) -> String {
    mint_with(OTHER_SECRET, &claims(Role::Driver, driver))
}

/// A token that is not a JWT at all.
pub const GARBAGE_TOKEN: &str = "this-is-not-a-jwt";

fn id(raw: &str) -> Id {
    Id::parse(raw).unwrap_or_else(|e| panic!("test id {raw:?} is not a valid id: {e}"))
}
