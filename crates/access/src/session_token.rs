//! Access tokens of sessions: short-lived signed JWTs (HS256 only: the algorithm is
//! pinned, so `none` and any other algorithm are refused) naming issuer, audience,
//! tenant, user and session. A token is never enough on its own: [`crate::authenticate`]
//! also checks its session in the database, so a sign-out or deactivation ends it at
//! once. Expiry is checked against the caller's clock, not the system's, so tests can
//! move time.
//!
//! The signing secret is generated once, wrapped by the key provider and stored in
//! `platform_secrets`; every server process of a deployment loads the same one. A sealed
//! server cannot sign or verify session tokens (API tokens still work).

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use phivault_crypto::SecretKey;
use phivault_crypto::keys::KeyService;
use phivault_domain::SessionId;
use phivault_domain::sessions::Session;
use phivault_store::{Db, TenantId, TxMode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AccessError;

/// How long an access token lives (the issue allows at most 15 minutes).
pub const ACCESS_TTL: Duration = Duration::minutes(10);
const ISSUER: &str = "phivault";
const AUDIENCE: &str = "phivault-api";
const PURPOSE: &str = "session-token-hs256";

/// The claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer, always `phivault`.
    pub iss: String,
    /// Audience, always `phivault-api`.
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    /// The tenant id.
    pub tid: Uuid,
    /// The session id.
    pub sid: Uuid,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
    /// A unique id.
    pub jti: Uuid,
}

/// A freshly issued access token.
pub struct AccessToken {
    /// The compact JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

struct Loaded {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Signs and verifies access tokens with the deployment's session secret.
pub struct SessionKeys {
    db: Db,
    keys: Arc<KeyService>,
    loaded: RwLock<Option<Arc<Loaded>>>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys([redacted])")
    }
}

impl SessionKeys {
    /// Keys loaded (or created) on first use from `db`, unwrapped through `keys`.
    pub fn new(db: Db, keys: Arc<KeyService>) -> Self {
        SessionKeys {
            db,
            keys,
            loaded: RwLock::new(None),
        }
    }

    async fn load(&self, now: DateTime<Utc>) -> Result<Arc<Loaded>, AccessError> {
        if let Some(l) = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(l);
        }
        let sealed = |_| AccessError::KeysUnavailable;
        const FIRST: &str = "SELECT wrapped FROM platform_secrets WHERE purpose = $1
                             ORDER BY created_at, id LIMIT 1";
        let mut tx = self.db.begin_platform(TxMode::Read).await?;
        let row: Option<(Vec<u8>,)> = tx.query(FIRST).bind(PURPOSE).fetch_optional().await?;
        tx.commit().await?;
        let wrapped = match row {
            Some((w,)) => w,
            None => {
                let secret = SecretKey::generate().map_err(sealed)?;
                let (provider, wrapped) = self
                    .keys
                    .wrap_platform_secret(&secret)
                    .await
                    .map_err(sealed)?;
                let mut tx = self.db.begin_platform(TxMode::Write).await?;
                tx.query(
                    "INSERT INTO platform_secrets (purpose, id, provider, wrapped, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(PURPOSE)
                .bind(Uuid::now_v7())
                .bind(provider)
                .bind(wrapped)
                .bind(now)
                .execute()
                .await?;
                // Two servers starting at once both insert; both then use the first.
                let (w,): (Vec<u8>,) = tx.query(FIRST).bind(PURPOSE).fetch_one().await?;
                tx.commit().await?;
                w
            }
        };
        let secret = self
            .keys
            .unwrap_platform_secret(&wrapped)
            .await
            .map_err(sealed)?;
        let loaded = Arc::new(Loaded {
            encoding: EncodingKey::from_secret(secret.expose()),
            decoding: DecodingKey::from_secret(secret.expose()),
        });
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(loaded.clone());
        Ok(loaded)
    }

    /// Issues an access token for `session` of `tenant`.
    pub async fn issue(
        &self,
        tenant: TenantId,
        session: &Session,
        now: DateTime<Utc>,
    ) -> Result<AccessToken, AccessError> {
        let keys = self.load(now).await?;
        // Never past the session's own end.
        let exp = (now + ACCESS_TTL).min(session.expires_at);
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: session.user_id.as_uuid(),
            tid: tenant.as_uuid(),
            sid: session.id.as_uuid(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            jti: Uuid::new_v4(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
            .map_err(|_| AccessError::KeysUnavailable)?;
        Ok(AccessToken {
            token,
            expires_in: (exp - now).num_seconds(),
        })
    }

    /// Verifies signature, algorithm, issuer, audience and expiry (against `now`).
    pub async fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, AccessError> {
        let keys = self.load(now).await?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Expiry is checked below against the injectable clock.
        v.validate_exp = false;
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &keys.decoding, &v)
            .map_err(|_| AccessError::Unauthenticated)?;
        let c = data.claims;
        if c.exp <= now.timestamp() || c.iat > now.timestamp() + 60 {
            return Err(AccessError::Unauthenticated);
        }
        Ok(c)
    }
}

impl SessionKeys {
    /// Signs `claims` (of another audience: the staff realm) with the same secret.
    pub(crate) async fn encode_other<C: Serialize>(
        &self,
        claims: &C,
        now: DateTime<Utc>,
    ) -> Result<String, AccessError> {
        let keys = self.load(now).await?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &keys.encoding)
            .map_err(|_| AccessError::KeysUnavailable)
    }

    /// Verifies signature, algorithm, issuer and `audience` of a token of another realm;
    /// expiry is the caller's to check against its clock.
    pub(crate) async fn decode_other<C: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
        now: DateTime<Utc>,
    ) -> Result<C, AccessError> {
        let keys = self.load(now).await?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_exp = false;
        v.leeway = 0;
        jsonwebtoken::decode::<C>(token, &keys.decoding, &v)
            .map(|d| d.claims)
            .map_err(|_| AccessError::Unauthenticated)
    }
}

/// The session a verified token names.
pub(crate) fn session_of(c: &Claims) -> (TenantId, SessionId) {
    (TenantId::from_uuid(c.tid), SessionId::from_uuid(c.sid))
}
