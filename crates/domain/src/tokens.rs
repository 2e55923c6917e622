//! API tokens: bearer secrets for programmatic clients, stored only as SHA-256 hashes.
//!
//! A token reads `pvt_<tenant id, 32 hex>_<43 base64url characters>` (256 random bits).
//! The tenant id in clear lets the server open a transaction scoped to that one tenant
//! before it looks the hash up, so resolving a token never needs a query across tenants.
//! Hashing without a salt is sound here because the secret has 256 bits of entropy.

use std::fmt;

use chrono::{DateTime, Utc};
use phivault_store::{TenantId, TenantTx};
use uuid::Uuid;

use crate::error::{invalid, on_write};
use crate::users::{self, User};
use crate::{DomainError, Result, TokenId, UserId, secret_token, validate};

const PREFIX: &str = "pvt_";

/// A token in clear. Shown once when issued; `Debug` redacts it.
pub struct TokenSecret(String);

impl TokenSecret {
    /// The token text, to hand to the client once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret([redacted])")
    }
}

/// A presented token, parsed but not yet checked against the store.
pub struct PresentedToken {
    tenant: TenantId,
    hash: [u8; 32],
}

impl PresentedToken {
    /// Parses the text of a bearer token. `None` for anything not shaped like a token.
    pub fn parse(text: &str) -> Option<Self> {
        let p = secret_token::parse(PREFIX, text)?;
        Some(PresentedToken {
            tenant: p.tenant,
            hash: p.hash,
        })
    }

    /// The tenant the token claims; trusted only once [`authenticate`] finds it there.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }
}

/// A freshly issued token.
#[derive(Debug)]
pub struct IssuedToken {
    /// The token's id (for listing and revoking).
    pub id: TokenId,
    /// The secret, shown once.
    pub secret: TokenSecret,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Issues a token for `user`.
pub async fn issue(
    tx: &mut TenantTx,
    user: UserId,
    label: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<IssuedToken> {
    let label = validate::text("label", label, 200)?;
    if expires_at.is_some_and(|e| e <= now) {
        return Err(invalid("expires_at", "must be in the future"));
    }
    let target = users::get(tx, user).await?;
    if !target.is_active() {
        return Err(invalid("user", "is deactivated"));
    }
    let (text, token_hash) = secret_token::generate(PREFIX, tx.tenant())?;
    let id = TokenId::generate();
    tx.query(
        "INSERT INTO api_tokens (tenant_id, id, user_id, token_hash, label, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(user)
    .bind(&token_hash[..])
    .bind(label)
    .bind(now)
    .bind(expires_at)
    .execute()
    .await
    .map_err(on_write("token"))?;
    Ok(IssuedToken {
        id,
        secret: TokenSecret(text),
        expires_at,
    })
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    user_id: Uuid,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Finds the active user behind a presented token in the transaction's tenant.
/// `NotFound` covers every failure (unknown, revoked, expired, deactivated user), so a
/// caller learns nothing about which.
pub async fn authenticate(
    tx: &mut TenantTx,
    token: &PresentedToken,
    now: DateTime<Utc>,
) -> Result<(TokenId, User)> {
    if token.tenant != tx.tenant() {
        return Err(DomainError::NotFound("token"));
    }
    let row: Option<TokenRow> = tx
        .query("SELECT id, user_id, expires_at, revoked_at FROM api_tokens WHERE tenant_id = $1 AND token_hash = $2")
        .bind(&token.hash[..])
        .fetch_optional()
        .await?;
    let Some(TokenRow {
        id,
        user_id,
        expires_at,
        revoked_at,
    }) = row
    else {
        return Err(DomainError::NotFound("token"));
    };
    if revoked_at.is_some() || expires_at.is_some_and(|e| e <= now) {
        return Err(DomainError::NotFound("token"));
    }
    let user = users::get(tx, UserId::from_uuid(user_id)).await?;
    if !user.is_active() {
        return Err(DomainError::NotFound("token"));
    }
    Ok((TokenId::from_uuid(id), user))
}

/// Revokes a token.
pub async fn revoke(tx: &mut TenantTx, id: TokenId, now: DateTime<Utc>) -> Result<()> {
    let n = tx
        .query("UPDATE api_tokens SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
        .bind(id)
        .bind(now)
        .execute()
        .await?;
    if n == 1 {
        Ok(())
    } else {
        Err(DomainError::NotFound("token"))
    }
}

/// Revokes every API token of `user` that is not revoked yet; returns how many.
pub async fn revoke_all_of_user(
    tx: &mut TenantTx,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<u64> {
    let n = tx
        .query("UPDATE api_tokens SET revoked_at = $3 WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(user)
        .bind(now)
        .execute()
        .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    #[test]
    fn parse_rejects_malformed_tokens() {
        let tenant = Uuid::now_v7().simple().to_string();
        let good = format!("pvt_{tenant}_{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert!(PresentedToken::parse(&good).is_some());
        for bad in [
            "",
            "pvt_",
            "Bearer x",
            &good[..good.len() - 1],
            &format!("{good}A"),
            &good.replace("pvt_", "pvx_"),
            &format!(
                "pvt_{}_{}",
                "z".repeat(32),
                URL_SAFE_NO_PAD.encode([7u8; 32])
            ),
            &format!("pvt_{tenant}_{}", "!".repeat(43)),
        ] {
            assert!(PresentedToken::parse(bad).is_none(), "accepted {bad:?}");
        }
    }
}

#[cfg(test)]
mod properties {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use proptest::prelude::*;

    use crate::secret_token::hash;

    use super::*;

    proptest! {
        /// Hostile input: any string is parsed without panicking, and only strings of the
        /// exact token shape are accepted.
        #[test]
        fn parse_never_panics_and_accepts_only_the_token_shape(s in ".{0,120}") {
            if let Some(t) = PresentedToken::parse(&s) {
                prop_assert!(s.starts_with(PREFIX));
                prop_assert_eq!(s.len(), PREFIX.len() + 32 + 1 + 43);
                prop_assert_eq!(t.hash, hash(&s));
            }
        }

        /// Every well-formed token parses back to its tenant.
        #[test]
        fn well_formed_tokens_parse(tenant in any::<u128>(), raw in any::<[u8; 32]>()) {
            let tenant = Uuid::from_u128(tenant);
            let text = format!("{PREFIX}{}_{}", tenant.simple(), URL_SAFE_NO_PAD.encode(raw));
            let parsed = PresentedToken::parse(&text).expect("well-formed token");
            prop_assert_eq!(parsed.tenant().as_uuid(), tenant);
        }
    }
}
