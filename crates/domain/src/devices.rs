//! Guest devices: a patient's phone or browser that joins end-to-end sessions without an
//! account.
//!
//! A device is its Ed25519 public key. It proves holding the private key by signing a
//! single-use server challenge, and its id is derived from the public key, so the same
//! key — kept in the OS keystore across a reinstall — is the same device with the same
//! trial count. Registering again issues a new device token and retires the old one. The
//! token (`pvd_<device id>_<secret>`) is stored as its SHA-256 only. Devices are platform
//! rows: one device may join sessions of several tenants.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use phivault_store::PlatformTx;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::invalid;
use crate::{Result, secret_token};

/// How long a registration challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::minutes(5);
/// The prefix of device tokens.
pub const TOKEN_PREFIX: &str = "pvd_";
/// What a device signs: this text followed by the challenge as issued.
pub const SIGNED_PREFIX: &str = "phivault-device-v1:";

/// A registered device (never its token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Id, derived from the public key.
    pub id: Uuid,
    /// Sessions joined so far, counted against the trial limit.
    pub sessions_joined: i64,
    /// First registration.
    pub created_at: DateTime<Utc>,
}

/// Why a registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown, used, expired, or issued for another key.
    Challenge,
    /// The signature does not verify with the public key.
    Signature,
}

/// Decodes a base64url (no padding) public key of 32 bytes that is a valid Ed25519 point.
pub fn parse_public_key(text: &str) -> Result<[u8; 32]> {
    let raw = URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| invalid("public_key", "must be 32 bytes in base64url"))?;
    VerifyingKey::from_bytes(&raw)
        .map_err(|_| invalid("public_key", "is not an Ed25519 public key"))?;
    Ok(raw)
}

/// The device id of `public_key`: a UUID (version 8) from its SHA-256, stable for the key.
pub fn device_id(public_key: &[u8; 32]) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"phivault-device-id-v1");
    h.update(public_key);
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

fn challenge_hash(challenge: &str) -> [u8; 32] {
    Sha256::digest(challenge.as_bytes()).into()
}

/// Issues a single-use challenge for `public_key`; returns it (base64url of 32 random
/// bytes) and when it expires.
pub async fn open_challenge(
    tx: &mut PlatformTx,
    public_key: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<(String, DateTime<Utc>)> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|_| invalid("challenge", "the system random number generator failed"))?;
    let challenge = URL_SAFE_NO_PAD.encode(raw);
    let expires = now + CHALLENGE_TTL;
    // Stale challenges go with each new one, so the table stays small.
    tx.query("DELETE FROM device_challenges WHERE expires_at < $1")
        .bind(now)
        .execute()
        .await?;
    tx.query(
        "INSERT INTO device_challenges (challenge_hash, public_key, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(challenge_hash(&challenge).to_vec())
    .bind(public_key.to_vec())
    .bind(expires)
    .execute()
    .await?;
    Ok((challenge, expires))
}

/// Registers (or re-registers) the device of `public_key` that signed `challenge`: uses
/// the challenge up, verifies the signature, and issues a new device token.
pub async fn register(
    tx: &mut PlatformTx,
    public_key: &[u8; 32],
    challenge: &str,
    signature: &[u8],
    now: DateTime<Utc>,
) -> Result<std::result::Result<(Device, String), Refusal>> {
    if challenge.len() > 100 {
        return Ok(Err(Refusal::Challenge));
    }
    let used = tx
        .query(
            "UPDATE device_challenges SET used_at = $3
             WHERE challenge_hash = $1 AND public_key = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(challenge_hash(challenge).to_vec())
        .bind(public_key.to_vec())
        .bind(now)
        .execute()
        .await?;
    if used == 0 {
        return Ok(Err(Refusal::Challenge));
    }
    let Ok(signature) = Signature::from_slice(signature) else {
        return Ok(Err(Refusal::Signature));
    };
    let key = VerifyingKey::from_bytes(public_key)
        .map_err(|_| invalid("public_key", "is not an Ed25519 public key"))?;
    let message = format!("{SIGNED_PREFIX}{challenge}");
    if key.verify_strict(message.as_bytes(), &signature).is_err() {
        return Ok(Err(Refusal::Signature));
    }
    let id = device_id(public_key);
    let (token, hash) = secret_token::generate_owned(TOKEN_PREFIX, id)?;
    let existing: Option<(i64, DateTime<Utc>)> = tx
        .query("SELECT sessions_joined, created_at FROM guest_devices WHERE id = $1")
        .bind(id)
        .fetch_optional()
        .await?;
    let device = match existing {
        Some((sessions_joined, created_at)) => {
            tx.query("UPDATE guest_devices SET token_hash = $2, last_seen_at = $3 WHERE id = $1")
                .bind(id)
                .bind(hash.to_vec())
                .bind(now)
                .execute()
                .await?;
            Device {
                id,
                sessions_joined,
                created_at,
            }
        }
        None => {
            tx.query(
                "INSERT INTO guest_devices (id, public_key, token_hash, created_at, last_seen_at)
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(id)
            .bind(public_key.to_vec())
            .bind(hash.to_vec())
            .bind(now)
            .execute()
            .await?;
            Device {
                id,
                sessions_joined: 0,
                created_at: now,
            }
        }
    };
    Ok(Ok((device, token)))
}

/// The device a presented `pvd_` token belongs to, if it is its current token.
pub async fn authenticate(tx: &mut PlatformTx, token: &str) -> Result<Option<Device>> {
    let Some((id, hash)) = secret_token::parse_owned(TOKEN_PREFIX, token) else {
        return Ok(None);
    };
    let row: Option<(i64, DateTime<Utc>)> = tx
        .query("SELECT sessions_joined, created_at FROM guest_devices WHERE id = $1 AND token_hash = $2")
        .bind(id)
        .bind(hash.to_vec())
        .fetch_optional()
        .await?;
    Ok(row.map(|(sessions_joined, created_at)| Device {
        id,
        sessions_joined,
        created_at,
    }))
}

/// Takes one trial session for `device` if it has fewer than `limit`; false when the
/// trial is used up. Taken before the join it pays for, and given back
/// ([`release_trial`]) if the join is refused, so a crash in between costs the device a
/// session rather than granting one.
pub async fn reserve_trial(tx: &mut PlatformTx, device: Uuid, limit: i64) -> Result<bool> {
    let n = tx
        .query(
            "UPDATE guest_devices SET sessions_joined = sessions_joined + 1
             WHERE id = $1 AND sessions_joined < $2",
        )
        .bind(device)
        .bind(limit)
        .execute()
        .await?;
    Ok(n == 1)
}

/// Gives back a trial session taken for a join that did not happen.
pub async fn release_trial(tx: &mut PlatformTx, device: Uuid) -> Result<()> {
    tx.query(
        "UPDATE guest_devices SET sessions_joined = sessions_joined - 1
         WHERE id = $1 AND sessions_joined > 0",
    )
    .bind(device)
    .execute()
    .await?;
    Ok(())
}
