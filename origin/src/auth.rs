//! Who is calling and what their token allows, as pure checks on verified claims: no HTTP
//! here (the extractors that read tokens from requests are [`crate::api::extract`]).
//!
//! Tokens are never logged: they appear in no span, field or error message.

use ridecast_protocol::{Claims, Id, Role, TokenError, TokenKeys};

use crate::{base::clock, rides::Ride};

/// Verifies tokens against the configured secrets. Cheap to clone: the keys are shared (every
/// connection's state holds an `Authenticator`, and the keys are hundreds of bytes).
#[derive(Debug, Clone)]
pub struct Authenticator {
    keys: std::sync::Arc<TokenKeys>,
}

impl Authenticator {
    pub fn new(keys: TokenKeys) -> Self {
        Self { keys: std::sync::Arc::new(keys) }
    }

    /// # Errors
    /// [`AuthError::Token`] when the token does not verify now.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        Ok(Principal { claims: self.keys.verify(token, clock::now_secs())? })
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }
}

/// Why a request is not allowed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <token>` or `?token=<token>`")]
    Missing,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("a token with role {actual} cannot be used here; this needs role {needed}")]
    WrongRole { needed: &'static str, actual: &'static str },
    #[error("this token does not allow tracking driver {0}")]
    WrongDriver(Id),
    #[error("ride {0} was created by another rider, and this token is not scoped to it")]
    NotThisRide(Id),
    #[error("this token is neither ride {0}'s rider nor its assigned driver")]
    NotInRide(Id),
    #[error("this tracking token belonged to ride {0}, which has ended")]
    RideEnded(Id),
    #[error(
        "this token is scoped (to one ride, or to tracking one driver); only a rider token without `ride` and `drv` requests rides"
    )]
    ScopedToken,
}

/// A caller whose token verified.
#[derive(Debug, Clone)]
pub struct Principal {
    pub claims: Claims,
}

impl Principal {
    /// # Errors
    /// [`AuthError::WrongRole`] unless the token has `role`.
    pub fn require_role(&self, role: Role) -> Result<(), AuthError> {
        if self.claims.role == role {
            Ok(())
        } else {
            Err(AuthError::WrongRole { needed: role.as_str(), actual: self.claims.role.as_str() })
        }
    }

    /// A rider token whose `drv` is `driver`: what the location stream and polling take.
    ///
    /// # Errors
    /// [`AuthError::WrongRole`] or [`AuthError::WrongDriver`].
    pub fn require_tracking(&self, driver: &Id) -> Result<(), AuthError> {
        self.require_role(Role::Rider)?;
        if self.claims.drv.as_ref() == Some(driver) { Ok(()) } else { Err(AuthError::WrongDriver(driver.clone())) }
    }

    /// A rider token that may request rides: one with neither `ride` nor `drv` (a ride's own
    /// token, or a tracking token, is only as wide as the ride or driver it names).
    ///
    /// # Errors
    /// [`AuthError::WrongRole`] or [`AuthError::ScopedToken`].
    pub fn require_ride_creator(&self) -> Result<(), AuthError> {
        self.require_role(Role::Rider)?;
        if self.claims.ride.is_none() && self.claims.drv.is_none() { Ok(()) } else { Err(AuthError::ScopedToken) }
    }

    /// A token that may follow and cancel `ride` ([`Ride::allows`]): what the ride stream and
    /// `DELETE /api/rides/{rideId}` take.
    ///
    /// # Errors
    /// [`AuthError::WrongRole`] or [`AuthError::NotThisRide`].
    pub fn require_ride(&self, ride: &Ride) -> Result<(), AuthError> {
        self.require_role(Role::Rider)?;
        if ride.allows(&self.claims) { Ok(()) } else { Err(AuthError::NotThisRide(ride.id.clone())) }
    }
}
