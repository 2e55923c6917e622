//! AES-256-GCM through the RustCrypto `aes-gcm` crate (hardware AES and carry-less
//! multiplication are used when the processor has them).

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};

use crate::{CryptoError, Result, SecretKey};

/// Tag length.
pub(crate) const TAG: usize = 16;
/// Nonce length.
pub(crate) const NONCE: usize = 12;

pub(crate) fn cipher(key: &SecretKey) -> Aes256Gcm {
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key.expose()))
}

/// Encrypts `buf` in place and appends the tag.
pub(crate) fn seal_in_place(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<()> {
    let n = Nonce::from(*nonce);
    let tag = cipher
        .encrypt_inout_detached(&n, aad, buf.as_mut_slice().into())
        .map_err(|_| CryptoError::Decrypt)?;
    buf.extend_from_slice(tag.as_slice());
    Ok(())
}

/// Checks and strips the tag, then decrypts `buf` in place.
pub(crate) fn open_in_place(
    cipher: &Aes256Gcm,
    nonce: &[u8; NONCE],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<()> {
    if buf.len() < TAG {
        return Err(CryptoError::Decrypt);
    }
    let split = buf.len() - TAG;
    let tag = Tag::try_from(&buf[split..]).map_err(|_| CryptoError::Decrypt)?;
    buf.truncate(split);
    let n = Nonce::from(*nonce);
    cipher
        .decrypt_inout_detached(&n, aad, buf.as_mut_slice().into(), &tag)
        .map_err(|_| {
            zeroize::Zeroize::zeroize(buf);
            CryptoError::Decrypt
        })
}
