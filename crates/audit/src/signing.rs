//! The checkpoint signing key: an Ed25519 seed wrapped by the key provider and kept in
//! `audit_signing_keys`. Only a holder of the unsealed key hierarchy can sign, and a
//! verifier trusts a public key only after unwrapping its seed (or being given the key),
//! so a row inserted by someone with database access alone is never trusted.

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use phivault_crypto::SecretKey;
use phivault_crypto::keys::KeyService;
use phivault_store::{Db, TxMode};

use crate::checkpoint::CheckpointSigner;
use crate::{AuditError, Result};

async fn stored(db: &Db, keys: &KeyService) -> Result<Vec<CheckpointSigner>> {
    let mut tx = db.begin_platform(TxMode::Read).await?;
    let rows: Vec<(Vec<u8>, Vec<u8>)> = tx
        .query("SELECT public_key, wrapped FROM audit_signing_keys ORDER BY created_at, public_key")
        .fetch_all()
        .await?;
    tx.commit().await?;
    let mut out = Vec::new();
    let mut last_error = None;
    for (public, wrapped) in rows {
        match keys.unwrap_platform_secret(&wrapped).await {
            Ok(seed) => {
                let signer = CheckpointSigner::from_seed(seed.expose());
                if signer.verifying_key().as_bytes().as_slice() == public.as_slice() {
                    out.push(signer);
                }
            }
            Err(e) => last_error = Some(e),
        }
    }
    match (out.is_empty(), last_error) {
        (true, Some(e)) => Err(AuditError::Keys(e)),
        _ => Ok(out),
    }
}

/// The checkpoint signer, created and stored on first use.
///
/// # Errors
/// Sealed keys, or stored keys that no longer unwrap (a changed provider).
pub async fn load_or_create_signer(
    db: &Db,
    keys: &KeyService,
    now: DateTime<Utc>,
) -> Result<CheckpointSigner> {
    if let Some(signer) = stored(db, keys).await?.into_iter().next() {
        return Ok(signer);
    }
    let seed = SecretKey::generate()?;
    let (provider, wrapped) = keys.wrap_platform_secret(&seed).await?;
    let signer = CheckpointSigner::from_seed(seed.expose());
    let mut tx = db.begin_platform(TxMode::Write).await?;
    tx.query(
        "INSERT INTO audit_signing_keys (public_key, provider, wrapped, created_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(signer.verifying_key().to_bytes().to_vec())
    .bind(provider)
    .bind(wrapped)
    .bind(now)
    .execute()
    .await?;
    tx.commit().await?;
    Ok(signer)
}

/// The public keys a verifier may trust: those whose wrapped seed unwraps, under the
/// unsealed key hierarchy, to the key the row names.
pub async fn trusted_keys(db: &Db, keys: &KeyService) -> Result<Vec<VerifyingKey>> {
    Ok(stored(db, keys)
        .await?
        .iter()
        .map(CheckpointSigner::verifying_key)
        .collect())
}
