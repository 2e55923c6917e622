//! A guest device's Ed25519 identity: the server derives the device id from the public
//! key, so keeping the key keeps the device (and its trial count).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use zeroize::{Zeroize, Zeroizing};

use crate::{E2eError, Result};

/// The prefix signed before the challenge, as the contract fixes it.
pub const CHALLENGE_PREFIX: &str = "phivault-device-v1:";

/// An Ed25519 key pair. The secret half is wiped when dropped; `Debug` shows only the
/// public key.
#[derive(Clone)]
pub struct DeviceIdentity {
    signing: SigningKey,
}

impl DeviceIdentity {
    /// A new identity from the operating system's random number generator.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| E2eError::Random)?;
        let identity = DeviceIdentity::from_secret_bytes(&seed);
        seed.zeroize();
        Ok(identity)
    }

    /// The identity from its 32-byte secret seed (as kept in the key store).
    pub fn from_secret_bytes(seed: &[u8; 32]) -> Self {
        DeviceIdentity {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte secret seed, for the key store only.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public key as base64url without padding.
    pub fn public_key_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.signing.verifying_key().as_bytes())
    }

    /// The base64url signature of the UTF-8 bytes of `phivault-device-v1:{challenge}`.
    pub fn sign_challenge(&self, challenge: &str) -> String {
        let message = format!("{CHALLENGE_PREFIX}{challenge}");
        URL_SAFE_NO_PAD.encode(self.signing.sign(message.as_bytes()).to_bytes())
    }
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("public_key", &self.public_key_base64url())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    use super::*;

    #[test]
    fn signs_the_prefixed_challenge() {
        let device = DeviceIdentity::generate().unwrap();
        let public: [u8; 32] = URL_SAFE_NO_PAD
            .decode(device.public_key_base64url())
            .unwrap()
            .try_into()
            .unwrap();
        let verifying = VerifyingKey::from_bytes(&public).unwrap();
        let challenge = "c3ludGhldGljIGNoYWxsZW5nZSBieXRlcyAzMiBsb25n";
        let sig: [u8; 64] = URL_SAFE_NO_PAD
            .decode(device.sign_challenge(challenge))
            .unwrap()
            .try_into()
            .unwrap();
        let sig = Signature::from_bytes(&sig);
        let signed = format!("phivault-device-v1:{challenge}");
        assert!(verifying.verify(signed.as_bytes(), &sig).is_ok());
        assert!(verifying.verify(challenge.as_bytes(), &sig).is_err());
    }

    #[test]
    fn same_seed_same_public_key() {
        let device = DeviceIdentity::generate().unwrap();
        let again = DeviceIdentity::from_secret_bytes(&device.to_secret_bytes());
        assert_eq!(again.public_key_base64url(), device.public_key_base64url());
        assert_ne!(
            DeviceIdentity::generate().unwrap().public_key_base64url(),
            device.public_key_base64url()
        );
    }

    /// RFC 8032, section 7.1, test 1: the secret seed gives the published public key.
    #[test]
    fn rfc8032_public_key() {
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let device = DeviceIdentity::from_secret_bytes(&seed);
        let public = URL_SAFE_NO_PAD
            .decode(device.public_key_base64url())
            .unwrap();
        assert_eq!(
            hex::encode(public),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn debug_shows_only_the_public_key() {
        let device = DeviceIdentity::generate().unwrap();
        let shown = format!("{device:?}");
        assert!(shown.contains(&device.public_key_base64url()));
        assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(*device.to_secret_bytes())));
    }
}
