//! Driver, ride and zone ids: 1 to 64 characters of `[A-Za-z0-9_-]`.
//!
//! The rule is strict on purpose: ids end up in Redis keys, channel names, SSE `id:`
//! lines and URLs, and a character set this small is safe in all of them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest id accepted, in characters (all ASCII, so also in bytes).
pub const MAX_ID_LEN: usize = 64;

/// A validated id. Construct it with [`Id::parse`]; holding one proves it is well formed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Id(String);

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("id may only contain A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter,
}

impl Id {
    /// Checks `raw` against the id rule.
    ///
    /// # Errors
    /// [`InvalidId`] says which part of the rule `raw` breaks.
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        if raw.is_empty() {
            return Err(InvalidId::Empty);
        }
        if raw.len() > MAX_ID_LEN {
            return Err(InvalidId::TooLong);
        }
        if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(InvalidId::BadCharacter);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by `Id` can be searched with the `&str` of a channel name or path.
impl std::borrow::Borrow<str> for Id {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Id::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet_up_to_64_characters() {
        assert!(Id::parse("d-1").is_ok());
        assert!(Id::parse("Driver_42-x").is_ok());
        assert!(Id::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert_eq!(Id::parse(""), Err(InvalidId::Empty));
        assert_eq!(Id::parse(&"a".repeat(65)), Err(InvalidId::TooLong));
        for bad in ["a b", "a/b", "a:b", "ä", "a\nb", "a.b", "*"] {
            assert_eq!(Id::parse(bad), Err(InvalidId::BadCharacter), "{bad:?}");
        }
    }

    #[test]
    fn deserializing_applies_the_rule() {
        assert!(serde_json::from_str::<Id>("\"ok_1\"").is_ok());
        assert!(serde_json::from_str::<Id>("\"not ok\"").is_err());
    }
}
