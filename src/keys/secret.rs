//! API key secrets: made from the OS's randomness, stored only as their SHA-256.

use sha2::{Digest, Sha256};

/// The prefix of every key this server issues, so a leaked key is recognisable in a scan.
pub const KEY_PREFIX: &str = "pb_";
/// Random bytes per key: 128 bits.
const KEY_RANDOM_BYTES: usize = 16;

/// A key's SHA-256, the only form in which it is stored or compared.
pub type KeyHash = [u8; 32];

/// A new random key: `pb_` and 32 hex digits (35 bytes, inside the UDP protocol's 16..=64).
pub fn generate() -> std::io::Result<String> {
    let mut random = [0u8; KEY_RANDOM_BYTES];
    getrandom::fill(&mut random).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(random)))
}

/// The hash a presented key is looked up by. Never allocates.
pub fn hash(presented: &[u8]) -> KeyHash {
    Sha256::digest(presented).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_fit_the_udp_field_and_differ() {
        let a = generate().expect("os randomness");
        let b = generate().expect("os randomness");
        assert_ne!(a, b);
        assert_eq!(a.len(), 35);
        assert!(a.starts_with(KEY_PREFIX));
    }

    #[test]
    fn hash_is_sha256() {
        assert_eq!(hex::encode(hash(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
