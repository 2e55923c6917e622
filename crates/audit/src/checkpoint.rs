//! Signed checkpoints: Ed25519 signatures over (sequence, head hash, time).

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

const DOMAIN: &[u8] = b"phivault-audit-checkpoint-v1";

/// What a checkpoint pins: the chain up to `sequence` ends in `head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last sequence number covered.
    pub sequence: u64,
    /// The hash of that event.
    pub head: [u8; 32],
    /// When the checkpoint was made (stored to the microsecond).
    pub time: DateTime<Utc>,
}

impl Checkpoint {
    /// The signed bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOMAIN.len() + 48);
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.time.timestamp_micros().to_be_bytes());
        out
    }
}

/// A checkpoint with its signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Ed25519 signature over [`Checkpoint::encode`].
    #[serde(with = "signature_hex")]
    pub signature: [u8; 64],
}

impl SignedCheckpoint {
    /// Whether the signature holds under `key`.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        key.verify(
            &self.checkpoint.encode(),
            &Signature::from_bytes(&self.signature),
        )
        .is_ok()
    }
}

/// Signs checkpoints. The key comes from the key hierarchy; `Debug` shows only the
/// public half.
pub struct CheckpointSigner {
    key: SigningKey,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("public", &self.key.verifying_key())
            .finish()
    }
}

impl CheckpointSigner {
    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        CheckpointSigner {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The public key verifiers need.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs `checkpoint`.
    pub fn sign(&self, checkpoint: Checkpoint) -> SignedCheckpoint {
        SignedCheckpoint {
            checkpoint,
            signature: self.key.sign(&checkpoint.encode()).to_bytes(),
        }
    }
}

mod signature_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&sig.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let text = String::deserialize(d)?;
        if text.len() != 128 {
            return Err(serde::de::Error::custom("a signature is 128 hex digits"));
        }
        let mut out = [0u8; 64];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| serde::de::Error::custom("a signature is hex"))?;
        }
        Ok(out)
    }
}
