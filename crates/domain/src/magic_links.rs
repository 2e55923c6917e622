//! Magic links: single-use, short-lived sign-in tokens mailed to a tenant user.
//!
//! A link token reads `pvm_<tenant id, 32 hex>_<43 base64url characters>` (256 random
//! bits), like an API token with its own prefix, so one can never be taken for the other.
//! Only its SHA-256 hash is stored. The tenant id in clear lets the consumer open a
//! transaction scoped to that tenant before looking the hash up.
//!
//! [`request`] issues a link for an address if, and only if, it belongs to an active user;
//! its caller must answer the same whatever it returns (no account enumeration).
//! [`consume`] turns a presented link into its user once: expired, used, tampered,
//! foreign or deactivated links are all refused with the same `NotFound`.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use phivault_store::{TenantId, TenantTx};
use uuid::Uuid;

use crate::error::{invalid, on_write};
use crate::{DomainError, Result, UserId, secret_token, users, validate};

const PREFIX: &str = "pvm_";

/// The default lifetime of a link.
pub const DEFAULT_LIFETIME: Duration = Duration::minutes(15);

/// The longest lifetime accepted (a link is a credential sitting in a mailbox).
pub const MAX_LIFETIME: Duration = Duration::hours(24);

/// A link token in clear, to put in the mail once; `Debug` redacts it.
pub struct LinkSecret(String);

impl LinkSecret {
    /// The token text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkSecret([redacted])")
    }
}

/// A freshly issued link.
#[derive(Debug)]
pub struct IssuedLink {
    /// The user it signs in.
    pub user: UserId,
    /// The token, for the mail only.
    pub secret: LinkSecret,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// A presented link token, parsed but not yet checked against the store.
pub struct PresentedLink {
    tenant: TenantId,
    hash: [u8; 32],
}

impl fmt::Debug for PresentedLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedLink")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl PresentedLink {
    /// Parses a link token. `None` for anything not shaped like one.
    pub fn parse(text: &str) -> Option<Self> {
        let p = secret_token::parse(PREFIX, text)?;
        Some(PresentedLink {
            tenant: p.tenant,
            hash: p.hash,
        })
    }

    /// The tenant the link claims; trusted only once [`consume`] finds it there.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }
}

/// Checks the shape of a sign-in address (the same rule as user creation), so a caller
/// can refuse malformed input before it does any work.
pub fn check_email(email: &str) -> Result<String> {
    validate::email(email)
}

/// Issues a link for the active user with this address in the transaction's tenant.
/// `Ok(None)` when there is no such user or the user is deactivated; the caller must not
/// let the difference show. A token is generated and hashed either way, so both paths do
/// the same work up to the insert.
pub async fn request(
    tx: &mut TenantTx,
    email: &str,
    lifetime: Duration,
    now: DateTime<Utc>,
) -> Result<Option<IssuedLink>> {
    let email = validate::email(email)?;
    if lifetime <= Duration::zero() || lifetime > MAX_LIFETIME {
        return Err(invalid("lifetime", "must be between 1 second and 24 hours"));
    }
    let (text, token_hash) = secret_token::generate(PREFIX, tx.tenant())?;
    let row: Option<(Uuid, String)> = tx
        .query("SELECT id, status FROM users WHERE tenant_id = $1 AND email = $2")
        .bind(email.as_str())
        .fetch_optional()
        .await?;
    let Some((user, status)) = row else {
        return Ok(None);
    };
    if status != "active" {
        return Ok(None);
    }
    let user = UserId::from_uuid(user);
    let expires_at = now + lifetime;
    tx.query(
        "INSERT INTO magic_links (tenant_id, id, user_id, token_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(user)
    .bind(&token_hash[..])
    .bind(now)
    .bind(expires_at)
    .execute()
    .await
    .map_err(on_write("magic link"))?;
    Ok(Some(IssuedLink {
        user,
        secret: LinkSecret(text),
        expires_at,
    }))
}

#[derive(sqlx::FromRow)]
struct LinkRow {
    id: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

/// Consumes a presented link in the transaction's tenant: the link must exist there, be
/// unexpired and unused, and its user must still be active. The link is marked used in
/// `tx` (commit it with whatever the sign-in issues), and so are the user's other unused
/// links. Every refusal is `NotFound("magic link")`, so a caller learns nothing about
/// which check failed.
pub async fn consume(
    tx: &mut TenantTx,
    presented: &PresentedLink,
    now: DateTime<Utc>,
) -> Result<UserId> {
    const REFUSED: DomainError = DomainError::NotFound("magic link");
    if presented.tenant != tx.tenant() {
        return Err(REFUSED);
    }
    let row: Option<LinkRow> = tx
        .query(
            "SELECT id, user_id, expires_at, used_at FROM magic_links
             WHERE tenant_id = $1 AND token_hash = $2",
        )
        .bind(&presented.hash[..])
        .fetch_optional()
        .await?;
    let Some(row) = row else {
        return Err(REFUSED);
    };
    if row.used_at.is_some() || row.expires_at <= now {
        return Err(REFUSED);
    }
    // The guard on used_at makes the use single even between concurrent consumers: only
    // one UPDATE finds the row unused.
    let marked = tx
        .query(
            "UPDATE magic_links SET used_at = $3 WHERE tenant_id = $1 AND id = $2 AND used_at IS NULL",
        )
        .bind(row.id)
        .bind(now)
        .execute()
        .await?;
    if marked != 1 {
        return Err(REFUSED);
    }
    let user = UserId::from_uuid(row.user_id);
    match users::get(tx, user).await {
        Ok(u) if u.is_active() => {}
        Ok(_) | Err(DomainError::NotFound(_)) => return Err(REFUSED),
        Err(e) => return Err(e),
    }
    // A sign-in burns the user's other outstanding links.
    tx.query(
        "UPDATE magic_links SET used_at = $3 WHERE tenant_id = $1 AND user_id = $2 AND used_at IS NULL",
    )
    .bind(user)
    .bind(now)
    .execute()
    .await?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    #[test]
    fn parse_rejects_malformed_links() {
        let tenant = Uuid::now_v7().simple().to_string();
        let good = format!("pvm_{tenant}_{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert_eq!(
            PresentedLink::parse(&good).unwrap().tenant().as_uuid(),
            Uuid::try_parse(&tenant).unwrap()
        );
        for bad in [
            "",
            "pvm_",
            &good[..good.len() - 1],
            &format!("{good}A"),
            &good.replace("pvm_", "pvt_"),
            &good.to_uppercase(),
            &format!(
                "pvm_{}_{}",
                "z".repeat(32),
                URL_SAFE_NO_PAD.encode([7u8; 32])
            ),
            &format!("pvm_{tenant}_{}", "!".repeat(43)),
            &format!("pvm_{tenant}_{}=", &URL_SAFE_NO_PAD.encode([7u8; 32])[..42]),
        ] {
            assert!(PresentedLink::parse(bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn secrets_have_the_link_shape_and_are_redacted() {
        let tenant = TenantId::generate();
        let (text, _) = secret_token::generate(PREFIX, tenant).unwrap();
        let parsed = PresentedLink::parse(&text).expect("own shape");
        assert_eq!(parsed.tenant(), tenant);
        assert_eq!(parsed.hash, secret_token::hash(&text));
        assert!(!format!("{:?}", LinkSecret(text.clone())).contains(&text[4..]));
        assert!(!format!("{parsed:?}").contains(&text[40..]));
        assert_ne!(secret_token::generate(PREFIX, tenant).unwrap().0, text);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use crate::secret_token::hash;

    use super::*;

    proptest! {
        /// Any string parses without panicking, and only the exact link shape is taken.
        #[test]
        fn parse_never_panics_and_accepts_only_the_link_shape(s in ".{0,120}") {
            if let Some(t) = PresentedLink::parse(&s) {
                prop_assert!(s.starts_with(PREFIX));
                prop_assert_eq!(s.len(), PREFIX.len() + 32 + 1 + 43);
                prop_assert_eq!(t.hash, hash(&s));
            }
        }
    }
}
