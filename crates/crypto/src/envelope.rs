//! The envelope: a versioned, self-describing AES-256-GCM ciphertext.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "PVE1"
//!      4     1  format version (1)
//!      5     1  algorithm (1 = AES-256-GCM)
//!      6    16  key id (UUID of the key that sealed it)
//!     22     4  key version (big-endian u32)
//!     26    12  nonce (random)
//!     38   n+16 ciphertext, then the 16-byte tag
//! ```
//!
//! The 38 header bytes and the [`Binding`] are the associated data, so neither the
//! header nor the binding can change without decryption failing. See `docs/formats.md`.

use std::fmt;

use thiserror::Error;
use uuid::Uuid;

use crate::aead::{self, NONCE, TAG};
use crate::secret::random;
use crate::{Binding, CryptoError, Result, SecretKey};

/// The magic bytes of an envelope.
pub const MAGIC: [u8; 4] = *b"PVE1";
/// The current format version.
pub const VERSION: u8 = 1;
/// Header length.
pub const HEADER_LEN: usize = 38;
/// The shortest possible envelope (empty plaintext).
pub const MIN_LEN: usize = HEADER_LEN + TAG;

/// AEAD algorithms an envelope can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Algorithm {
    /// AES-256 in Galois/Counter Mode, 96-bit nonce, 128-bit tag.
    Aes256Gcm = 1,
}

/// Which key (and which version of it) sealed a ciphertext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyRef {
    /// Key id.
    pub id: Uuid,
    /// Key version.
    pub version: u32,
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/v{}", self.id, self.version)
    }
}

/// Why bytes are not an envelope. Says what is wrong, never quotes the bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Fewer bytes than a header and a tag.
    #[error("too short: {len} bytes, an envelope has at least {MIN_LEN}")]
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// The magic bytes are wrong.
    #[error("not a phivault envelope (bad magic)")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// An algorithm this build does not know.
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(u8),
}

/// A parsed envelope, borrowing the bytes it was parsed from.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The key that sealed it.
    pub key: KeyRef,
    /// The nonce.
    pub nonce: [u8; NONCE],
    header: &'a [u8],
    body: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Parses `bytes`, checking every header field and the minimum length.
    ///
    /// # Errors
    /// [`EnvelopeError`] for anything malformed; it never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() < MIN_LEN {
            if bytes.len() >= 4 && bytes[..4] != MAGIC {
                return Err(EnvelopeError::BadMagic);
            }
            return Err(EnvelopeError::TooShort { len: bytes.len() });
        }
        let (header, body) = bytes.split_at(HEADER_LEN);
        if header[..4] != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        if header[4] != VERSION {
            return Err(EnvelopeError::UnsupportedVersion(header[4]));
        }
        let algorithm = match header[5] {
            1 => Algorithm::Aes256Gcm,
            other => return Err(EnvelopeError::UnsupportedAlgorithm(other)),
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&header[6..22]);
        let mut version = [0u8; 4];
        version.copy_from_slice(&header[22..26]);
        let mut nonce = [0u8; NONCE];
        nonce.copy_from_slice(&header[26..38]);
        Ok(Envelope {
            algorithm,
            key: KeyRef {
                id: Uuid::from_bytes(id),
                version: u32::from_be_bytes(version),
            },
            nonce,
            header,
            body,
        })
    }

    /// The ciphertext and tag.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

fn header(key: KeyRef, nonce: &[u8; NONCE]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = Algorithm::Aes256Gcm as u8;
    h[6..22].copy_from_slice(key.id.as_bytes());
    h[22..26].copy_from_slice(&key.version.to_be_bytes());
    h[26..38].copy_from_slice(nonce);
    h
}

fn aad(header: &[u8], binding: &Binding<'_>) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(&binding.encode());
    aad
}

/// Seals `plaintext` under `key` (named `key_ref` in the header), bound to `binding`.
pub fn seal(
    key: &SecretKey,
    key_ref: KeyRef,
    binding: &Binding<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let nonce = random::<NONCE>()?;
    let header = header(key_ref, &nonce);
    let mut buf = Vec::with_capacity(plaintext.len() + TAG);
    buf.extend_from_slice(plaintext);
    aead::seal_in_place(&aead::cipher(key), &nonce, &aad(&header, binding), &mut buf)?;
    let mut out = Vec::with_capacity(HEADER_LEN + buf.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&buf);
    Ok(out)
}

/// Opens an envelope sealed by [`seal`] with the same key and binding.
///
/// # Errors
/// [`CryptoError::Envelope`] if malformed, [`CryptoError::WrongKey`] if the header names
/// another key, [`CryptoError::Decrypt`] if anything was altered or moved.
pub fn open(
    key: &SecretKey,
    key_ref: KeyRef,
    binding: &Binding<'_>,
    bytes: &[u8],
) -> Result<Vec<u8>> {
    let env = Envelope::parse(bytes)?;
    if env.key != key_ref {
        return Err(CryptoError::WrongKey {
            expected: key_ref.to_string(),
            found: env.key.to_string(),
        });
    }
    let mut buf = env.body.to_vec();
    aead::open_in_place(
        &aead::cipher(key),
        &env.nonce,
        &aad(env.header, binding),
        &mut buf,
    )?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use phivault_store::TenantId;
    use proptest::prelude::*;

    use super::*;

    fn binding(tenant: TenantId, object: Uuid, field: &'static str) -> Binding<'static> {
        Binding {
            tenant,
            kind: "patient",
            object,
            field,
        }
    }

    #[test]
    fn round_trip_and_tamper() {
        let key = SecretKey::generate().unwrap();
        let kr = KeyRef {
            id: Uuid::now_v7(),
            version: 3,
        };
        let (t, o) = (TenantId::generate(), Uuid::now_v7());
        let sealed = seal(&key, kr, &binding(t, o, "mrn"), b"SYN-12345").unwrap();
        assert_eq!(
            open(&key, kr, &binding(t, o, "mrn"), &sealed).unwrap(),
            b"SYN-12345"
        );
        // Every single bit flip anywhere is detected.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                open(&key, kr, &binding(t, o, "mrn"), &bad).is_err(),
                "flip at byte {i} undetected"
            );
        }
        // Moved to another tenant, row or field.
        assert!(matches!(
            open(&key, kr, &binding(TenantId::generate(), o, "mrn"), &sealed),
            Err(CryptoError::Decrypt)
        ));
        assert!(matches!(
            open(&key, kr, &binding(t, Uuid::now_v7(), "mrn"), &sealed),
            Err(CryptoError::Decrypt)
        ));
        assert!(matches!(
            open(&key, kr, &binding(t, o, "ssn"), &sealed),
            Err(CryptoError::Decrypt)
        ));
        // Another key.
        let other = SecretKey::generate().unwrap();
        assert!(matches!(
            open(&other, kr, &binding(t, o, "mrn"), &sealed),
            Err(CryptoError::Decrypt)
        ));
        // Truncated.
        assert!(matches!(
            open(&key, kr, &binding(t, o, "mrn"), &sealed[..MIN_LEN - 1]),
            Err(CryptoError::Envelope(EnvelopeError::TooShort { .. }))
        ));
        assert!(open(&key, kr, &binding(t, o, "mrn"), &sealed[..sealed.len() - 1]).is_err());
    }

    #[test]
    fn parse_names_each_fault() {
        let key = SecretKey::generate().unwrap();
        let kr = KeyRef {
            id: Uuid::now_v7(),
            version: 1,
        };
        let sealed = seal(
            &key,
            kr,
            &binding(TenantId::generate(), Uuid::now_v7(), ""),
            b"",
        )
        .unwrap();
        assert_eq!(sealed.len(), MIN_LEN);
        assert_eq!(Envelope::parse(&sealed).unwrap().key, kr);
        let mut v = sealed.clone();
        v[0] = b'X';
        assert_eq!(Envelope::parse(&v).unwrap_err(), EnvelopeError::BadMagic);
        let mut v = sealed.clone();
        v[4] = 9;
        assert_eq!(
            Envelope::parse(&v).unwrap_err(),
            EnvelopeError::UnsupportedVersion(9)
        );
        let mut v = sealed.clone();
        v[5] = 7;
        assert_eq!(
            Envelope::parse(&v).unwrap_err(),
            EnvelopeError::UnsupportedAlgorithm(7)
        );
        assert_eq!(
            Envelope::parse(&[]).unwrap_err(),
            EnvelopeError::TooShort { len: 0 }
        );
    }

    proptest! {
        /// Arbitrary bytes never panic the parser, and anything it accepts has the magic,
        /// version and minimum length.
        #[test]
        fn parser_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(env) = Envelope::parse(&bytes) {
                prop_assert!(bytes.len() >= MIN_LEN);
                prop_assert_eq!(&bytes[..4], &MAGIC[..]);
                prop_assert_eq!(env.body().len(), bytes.len() - HEADER_LEN);
            }
        }

        /// Any plaintext round-trips, and any single-byte change of the sealed bytes fails.
        #[test]
        fn seal_open_round_trip(plain in proptest::collection::vec(any::<u8>(), 0..512), pos in any::<usize>(), flip in 1u8..=255) {
            let key = SecretKey::generate().unwrap();
            let kr = KeyRef { id: Uuid::now_v7(), version: 1 };
            let b = binding(TenantId::generate(), Uuid::now_v7(), "f");
            let sealed = seal(&key, kr, &b, &plain).unwrap();
            prop_assert_eq!(open(&key, kr, &b, &sealed).unwrap(), plain);
            let mut bad = sealed.clone();
            let i = pos % bad.len();
            bad[i] ^= flip;
            prop_assert!(open(&key, kr, &b, &bad).is_err());
        }
    }
}
