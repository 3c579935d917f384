//! Bearer tokens: JWT signed with HS256, verified the same way at the origin and at the edge.
//!
//! Verification takes the current time as an argument instead of reading a clock, because the
//! edge runs on wasm32 where `SystemTime::now()` does not exist, and because tests can then
//! pin time.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::Id;

/// Clock skew tolerated on `exp`, in seconds (the contract allows at most 30).
pub const EXP_LEEWAY_SECS: u64 = 10;

/// Who a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Driver,
    Rider,
    Ops,
    Edge,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Rider => "rider",
            Self::Ops => "ops",
            Self::Edge => "edge",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "driver" => Ok(Self::Driver),
            "rider" => Ok(Self::Rider),
            "ops" => Ok(Self::Ops),
            "edge" => Ok(Self::Edge),
            other => Err(format!("unknown role {other:?}; expected driver, rider, ops or edge")),
        }
    }
}

/// The claims of a Ridecast token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The principal: for a driver, its driver id.
    pub sub: Id,
    pub role: Role,
    /// Expiry, epoch seconds.
    pub exp: u64,
    /// The one driver a rider may track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drv: Option<Id>,
    /// The ride this token is scoped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ride: Option<Id>,
}

/// Why a token was refused. All of these are 401s; the variants exist for logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token is not an HS256 JWT with Ridecast claims")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    #[error("token could not be signed")]
    Signing(#[source] jsonwebtoken::errors::Error),
    #[error("token secret must not be empty")]
    EmptySecret,
}

/// The secrets tokens are signed and verified with.
///
/// Tokens are always signed with the current secret; the previous one, if set, still verifies
/// so that rotating the secret does not log everyone out at once.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    current: DecodingKey,
    previous: Option<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    /// Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("has_previous", &self.previous.is_some()).finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from the current secret and, during a rotation, the previous one.
    ///
    /// # Errors
    /// [`TokenError::EmptySecret`] if either secret is empty.
    pub fn new(current_secret: &[u8], previous_secret: Option<&[u8]>) -> Result<Self, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // `exp` is checked in `verify` against the caller's clock (wasm has no system clock).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp", "sub"].iter().map(|c| (*c).to_owned()).collect();
        let empty = |_| TokenError::EmptySecret;
        Ok(Self {
            encoding: EncodingKey::from_secret(current_secret).map_err(empty)?,
            current: DecodingKey::from_secret(current_secret).map_err(empty)?,
            previous: previous_secret.map(DecodingKey::from_secret).transpose().map_err(empty)?,
            validation,
        })
    }

    /// Signs `claims` with the current secret.
    ///
    /// # Errors
    /// [`TokenError::Signing`] if the JWT library fails to encode.
    pub fn mint(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(TokenError::Signing)
    }

    /// Verifies `token` at time `now_secs` (epoch seconds) and returns its claims.
    ///
    /// Only HS256 is accepted, so `alg: none` and RS/HS confusion are refused.
    ///
    /// # Errors
    /// [`TokenError::BadSignature`] if neither secret verifies it, [`TokenError::Expired`] past
    /// `exp` plus [`EXP_LEEWAY_SECS`], [`TokenError::Malformed`] for anything else.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, TokenError> {
        let claims = match self.decode(token, &self.current) {
            Err(TokenError::BadSignature) => match &self.previous {
                Some(previous) => self.decode(token, previous)?,
                None => return Err(TokenError::BadSignature),
            },
            other => other?,
        };
        if claims.exp.saturating_add(EXP_LEEWAY_SECS) < now_secs {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    fn decode(&self, token: &str, key: &DecodingKey) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, key, &self.validation).map(|data| data.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_764_240_000;

    fn keys(current: &[u8], previous: Option<&[u8]>) -> TokenKeys {
        TokenKeys::new(current, previous).expect("non-empty secrets")
    }

    #[test]
    fn empty_secrets_are_refused() {
        assert!(matches!(TokenKeys::new(b"", None), Err(TokenError::EmptySecret)));
        assert!(matches!(TokenKeys::new(b"x", Some(b"")), Err(TokenError::EmptySecret)));
    }

    fn rider(exp: u64) -> Claims {
        Claims {
            sub: Id::parse("r1").expect("id"),
            role: Role::Rider,
            exp,
            drv: Some(Id::parse("d1").expect("id")),
            ride: None,
        }
    }

    #[test]
    fn a_minted_token_verifies_with_its_claims() {
        let keys = keys(b"secret", None);
        let token = keys.mint(&rider(NOW + 60)).expect("mint");
        assert_eq!(keys.verify(&token, NOW).expect("verify"), rider(NOW + 60));
    }

    #[test]
    fn expiry_allows_only_the_documented_leeway() {
        let keys = keys(b"secret", None);
        let token = keys.mint(&rider(NOW)).expect("mint");
        assert!(keys.verify(&token, NOW + EXP_LEEWAY_SECS).is_ok());
        assert!(matches!(keys.verify(&token, NOW + EXP_LEEWAY_SECS + 1), Err(TokenError::Expired)));
    }

    #[test]
    fn the_previous_secret_still_verifies_during_rotation() {
        let old = keys(b"old", None);
        let token = old.mint(&rider(NOW + 60)).expect("mint");
        assert!(matches!(keys(b"new", None).verify(&token, NOW), Err(TokenError::BadSignature)));
        assert!(keys(b"new", Some(b"old")).verify(&token, NOW).is_ok());
    }

    #[test]
    fn alg_none_and_tampered_tokens_are_refused() {
        let keys = keys(b"secret", None);
        let token = keys.mint(&rider(NOW + 60)).expect("mint");
        let mut parts = token.split('.');
        let (_, payload) = (parts.next(), parts.next().expect("payload"));
        // {"alg":"none","typ":"JWT"}
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(keys.verify(&unsigned, NOW).is_err());
        let tampered = format!("{}x", token);
        assert!(keys.verify(&tampered, NOW).is_err());
        assert!(keys.verify("not a token", NOW).is_err());
    }

    #[test]
    fn unknown_roles_and_bad_ids_make_a_malformed_token() {
        #[derive(Serialize)]
        struct Loose<'a> {
            sub: &'a str,
            role: &'a str,
            exp: u64,
        }
        let key = EncodingKey::from_secret(b"secret").expect("key");
        let keys = keys(b"secret", None);
        for (sub, role) in [("r1", "admin"), ("bad id", "rider")] {
            let token =
                jsonwebtoken::encode(&Header::default(), &Loose { sub, role, exp: NOW + 60 }, &key).expect("encode");
            assert!(matches!(keys.verify(&token, NOW), Err(TokenError::Malformed(_))), "{sub} {role}");
        }
    }
}
