//! Blind indexes: exact-match lookup of an encrypted identifier through a keyed HMAC,
//! so that no plaintext identifier is stored in any table or index.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::SecretKey;

/// A tenant's blind-index key. Two tenants' indexes of the same value differ.
pub struct BlindIndexKey(SecretKey);

impl BlindIndexKey {
    /// Wraps the tenant's index key.
    pub fn new(key: SecretKey) -> Self {
        BlindIndexKey(key)
    }

    /// The index of `value` in `field`: HMAC-SHA256 over the field name and the value,
    /// trimmed and upper-cased (identifiers compare without case or surrounding space).
    pub fn index(&self, field: &str, value: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose())
            .expect("HMAC takes any key length");
        mac.update(b"phivault-blind-index-v1");
        mac.update(&(field.len() as u32).to_be_bytes());
        mac.update(field.as_bytes());
        mac.update(value.trim().to_uppercase().as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for BlindIndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlindIndexKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_same_index_per_key_only() {
        let k1 = BlindIndexKey::new(SecretKey::generate().unwrap());
        let k2 = BlindIndexKey::new(SecretKey::generate().unwrap());
        assert_eq!(k1.index("mrn", "syn-001"), k1.index("mrn", " SYN-001 "));
        assert_ne!(k1.index("mrn", "SYN-001"), k1.index("mrn", "SYN-002"));
        assert_ne!(k1.index("mrn", "SYN-001"), k1.index("ssn", "SYN-001"));
        assert_ne!(k1.index("mrn", "SYN-001"), k2.index("mrn", "SYN-001"));
    }
}
