//! Unguessable names: ride ids, offer ids, an instance's inbox.

/// `N` random bytes as `2N` lowercase hex digits.
///
/// # Errors
/// When the host has no entropy source (a broken host, not a condition to work around).
pub fn hex<const N: usize>() -> Result<String, getrandom::Error> {
    use std::fmt::Write;
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    let mut hex = String::with_capacity(N * 2);
    for byte in bytes {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

/// Like [`hex`], but on a host without entropy falls back to the clock: still unique, no
/// longer unguessable. For names whose secrecy is a defence in depth, not their purpose.
pub fn hex_or_clock<const N: usize>() -> String {
    hex::<N>().unwrap_or_else(|_| format!("{:x}", crate::base::clock::now_nanos()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_two_digits_per_byte_and_differs_each_time() {
        let a = super::hex::<16>().expect("entropy");
        let b = super::hex::<16>().expect("entropy");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
