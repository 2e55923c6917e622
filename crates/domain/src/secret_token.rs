//! The one shape of phivault's bearer secrets — API tokens (`pvt_`), sign-in links
//! (`pvm_`) and refresh tokens (`pvr_`): `<prefix><tenant id, 32 lower-case hex>_<256
//! random bits, 43 base64url characters>`. The tenant in clear lets the server open a
//! transaction scoped to that one tenant before it looks the secret up; only the SHA-256
//! of the whole text is stored (no salt is needed at 256 bits of entropy).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use phivault_store::TenantId;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Result;
use crate::error::invalid;

/// A presented secret, parsed but not checked against the store.
pub(crate) struct Parsed {
    /// The tenant it claims.
    pub(crate) tenant: TenantId,
    /// SHA-256 of the whole text.
    pub(crate) hash: [u8; 32],
}

/// SHA-256 of a secret's text, as stored.
pub(crate) fn hash(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Parses `text` as a secret with `prefix`; `None` for anything else.
pub(crate) fn parse(prefix: &str, text: &str) -> Option<Parsed> {
    let (owner, hash) = parse_owned(prefix, text)?;
    Some(Parsed {
        tenant: TenantId::from_uuid(owner),
        hash,
    })
}

/// Parses `text` as a secret with `prefix` whose id part names something other than a
/// tenant (a guest device): the id and the hash of the whole text.
pub(crate) fn parse_owned(prefix: &str, text: &str) -> Option<(Uuid, [u8; 32])> {
    let rest = text.strip_prefix(prefix)?;
    let (tenant_hex, secret) = rest.split_once('_')?;
    if tenant_hex.len() != 32
        || secret.len() != 43
        || !tenant_hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let tenant = Uuid::try_parse(tenant_hex).ok()?;
    if URL_SAFE_NO_PAD.decode(secret).ok()?.len() != 32 {
        return None;
    }
    Some((tenant, hash(text)))
}

/// A fresh secret with `prefix` for `tenant`, and its hash.
pub(crate) fn generate(prefix: &str, tenant: TenantId) -> Result<(String, [u8; 32])> {
    generate_owned(prefix, tenant.as_uuid())
}

/// A fresh secret with `prefix` for `owner` (a tenant or a guest device), and its hash.
pub(crate) fn generate_owned(prefix: &str, owner: Uuid) -> Result<(String, [u8; 32])> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|_| invalid("token", "the system random number generator failed"))?;
    let text = format!("{prefix}{}_{}", owner.simple(), URL_SAFE_NO_PAD.encode(raw));
    let h = hash(&text);
    Ok((text, h))
}
