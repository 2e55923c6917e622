//! The per-session AES-256-GCM key and its public fingerprint.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{E2eError, Result};

/// Length of a session key in bytes.
pub const KEY_LEN: usize = 32;

/// A 32-byte AES-256-GCM session key. Wiped from memory when dropped; `Debug` never
/// shows it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKey([u8; KEY_LEN]);

impl SessionKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|_| E2eError::Random)?;
        let key = SessionKey(bytes);
        bytes.zeroize();
        Ok(key)
    }

    /// A key from raw bytes (test vectors, the key store).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SessionKey(bytes)
    }

    /// The raw bytes, for the cipher only.
    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Lower-case hex of `SHA-256(SHA-256(key))`: what the server may know about the key.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(Sha256::digest(self.0)))
    }

    /// Whether `fingerprint` (as the server reports it) belongs to this key.
    pub fn matches_fingerprint(&self, fingerprint: &str) -> bool {
        // Fingerprints are public, so an ordinary comparison leaks nothing.
        self.fingerprint().eq_ignore_ascii_case(fingerprint)
    }

    /// The key as base64url without padding, as in an invite link's fragment.
    pub fn to_base64url(&self) -> Zeroizing<String> {
        Zeroizing::new(URL_SAFE_NO_PAD.encode(self.0))
    }

    /// Parses base64url without padding; anything but exactly 32 bytes is refused.
    pub fn from_base64url(text: &str) -> Result<Self> {
        let decoded = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(text.trim())
                .map_err(|_| E2eError::InvalidKey("not base64url without padding"))?,
        );
        let bytes: [u8; KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| E2eError::InvalidKey("not 32 bytes"))?;
        Ok(SessionKey(bytes))
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_differ() {
        let a = SessionKey::generate().unwrap();
        let b = SessionKey::generate().unwrap();
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn fingerprint_is_double_sha256_in_lower_hex() {
        let key = SessionKey::from_bytes([0u8; 32]);
        let fp = key.fingerprint();
        assert_eq!(fp.len(), 64);
        assert!(fp.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
        // SHA-256(SHA-256(32 zero bytes)), computed independently with Python's hashlib.
        assert_eq!(
            fp,
            "2b32db6c2c0a6235fb1397e8225ea85e0f0e6e8c7b126d0016ccbde0e667151e"
        );
        assert!(key.matches_fingerprint(&fp.to_uppercase()));
        assert!(!SessionKey::from_bytes([1u8; 32]).matches_fingerprint(&fp));
    }

    #[test]
    fn base64url_round_trip_and_refusals() {
        let key = SessionKey::generate().unwrap();
        let text = key.to_base64url();
        assert_eq!(text.len(), 43);
        assert!(!text.contains('='));
        let back = SessionKey::from_base64url(&text).unwrap();
        assert_eq!(back.expose(), key.expose());

        assert!(SessionKey::from_base64url("").is_err());
        assert!(SessionKey::from_base64url(&format!("{}=", text.as_str())).is_err());
        assert!(SessionKey::from_base64url(&URL_SAFE_NO_PAD.encode([0u8; 31])).is_err());
        assert!(SessionKey::from_base64url("not base64 at all!").is_err());
    }

    #[test]
    fn debug_redacts() {
        let key = SessionKey::from_bytes([0x41; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains(key.to_base64url().as_str()));
        assert!(!shown.contains("41"));
    }
}
