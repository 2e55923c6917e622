use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{CryptoError, Result};

/// A 256-bit symmetric key. Zeroized on drop; `Debug` prints no byte of it.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
        Ok(SecretKey(bytes))
    }

    /// Wraps existing key bytes (from a key provider).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    /// Wraps a slice, which must be 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::Keyring("a key must be 32 bytes".into()))?;
        Ok(SecretKey(arr))
    }

    /// The key bytes, for the AEAD and key providers only.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// Fills a fixed-size array with random bytes.
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let k = SecretKey::from_bytes([0xAB; 32]);
        let shown = format!("{k:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }
}
