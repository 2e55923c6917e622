//! The key hierarchy in the database: tenant KEKs (versioned, wrapped by the provider)
//! and data keys (one per object or record, wrapped by a KEK version).
//!
//! Unwrapped KEKs are cached in memory for [`KEK_CACHE_TTL`], so a busy tenant does not
//! call its provider on every request; a shred clears this process's cache at once, and
//! other processes' entries age out within the TTL.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use phivault_store::{TenantId, TenantTx};
use uuid::Uuid;

use crate::blind::BlindIndexKey;
use crate::envelope::{self, KeyRef};
use crate::provider::KeyProvider;
use crate::{Binding, CryptoError, Result, SecretKey};

/// The owner under which the provider holds the platform's own secrets (the audit
/// checkpoint signing key). No tenant has the nil id.
pub const PLATFORM_KEY_OWNER: TenantId = TenantId::from_uuid(Uuid::nil());

/// How long an unwrapped KEK stays cached.
pub const KEK_CACHE_TTL: Duration = Duration::from_secs(60);

/// Whether the service can unwrap keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    /// No provider: nothing can be encrypted or decrypted.
    Sealed,
    /// A provider is present.
    Unsealed {
        /// Its name.
        provider: &'static str,
        /// Whether it is a development provider.
        development: bool,
    },
}

/// A data key, unwrapped.
pub struct DataKey {
    /// Its id (the `data_keys` row).
    pub id: Uuid,
    key: SecretKey,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// The reference written into envelopes sealed with this key.
    pub fn key_ref(&self) -> KeyRef {
        KeyRef {
            id: self.id,
            version: 1,
        }
    }

    /// The key itself, for streaming encryption.
    pub fn secret(&self) -> &SecretKey {
        &self.key
    }

    /// Seals one field.
    pub fn seal(&self, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>> {
        envelope::seal(&self.key, self.key_ref(), binding, plaintext)
    }

    /// Opens one field.
    pub fn open(&self, binding: &Binding<'_>, sealed: &[u8]) -> Result<Vec<u8>> {
        envelope::open(&self.key, self.key_ref(), binding, sealed)
    }
}

/// A `data_keys` row as read alongside the record it protects.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WrappedDataKey {
    /// The data key's id.
    pub id: Uuid,
    /// The KEK version that wraps it.
    pub kek_version: i64,
    /// What it protects.
    pub kind: String,
    /// The wrapped key; `None` once destroyed.
    pub wrapped: Option<Vec<u8>>,
}

/// The key service: sealed until a provider is given.
pub struct KeyService {
    provider: RwLock<Option<Arc<dyn KeyProvider>>>,
    keks: Mutex<HashMap<(TenantId, u32), (SecretKey, Instant)>>,
    active: Mutex<HashMap<TenantId, u32>>,
}

impl fmt::Debug for KeyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyService")
            .field("status", &self.status())
            .finish()
    }
}

/// The KEK of one tenant version, bound to the tenant.
fn kek_ref(tenant: TenantId, version: u32) -> KeyRef {
    KeyRef {
        id: tenant.as_uuid(),
        version,
    }
}

fn data_key_binding<'a>(tenant: TenantId, id: Uuid, kind: &'a str) -> Binding<'a> {
    Binding {
        tenant,
        kind: "data_key",
        object: id,
        field: kind,
    }
}

impl KeyService {
    /// A sealed service.
    pub fn sealed() -> Self {
        KeyService {
            provider: RwLock::new(None),
            keks: Mutex::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
        }
    }

    /// An unsealed service.
    pub fn with_provider(provider: Arc<dyn KeyProvider>) -> Self {
        let s = Self::sealed();
        s.unseal(provider);
        s
    }

    /// Gives the service its provider.
    pub fn unseal(&self, provider: Arc<dyn KeyProvider>) {
        *self.provider.write().unwrap_or_else(|p| p.into_inner()) = Some(provider);
    }

    /// Takes the provider away and forgets every cached key: until the next unseal,
    /// nothing can be encrypted or decrypted (an operator's emergency stop).
    pub fn seal(&self) {
        *self.provider.write().unwrap_or_else(|p| p.into_inner()) = None;
        // Dropping the cached keys zeroizes them (SecretKey zeroizes on drop).
        self.keks.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Whether keys can be used.
    pub fn status(&self) -> KeyStatus {
        match &*self.provider.read().unwrap_or_else(|p| p.into_inner()) {
            None => KeyStatus::Sealed,
            Some(p) => KeyStatus::Unsealed {
                provider: p.name(),
                development: p.is_development(),
            },
        }
    }

    fn provider(&self) -> Result<Arc<dyn KeyProvider>> {
        self.provider
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(CryptoError::Sealed)
    }

    fn cached(&self, tenant: TenantId, version: u32) -> Option<SecretKey> {
        let mut cache = self.keks.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(&(tenant, version)) {
            Some((k, at)) if at.elapsed() < KEK_CACHE_TTL => Some(k.clone()),
            Some(_) => {
                cache.remove(&(tenant, version));
                None
            }
            None => None,
        }
    }

    fn remember(&self, tenant: TenantId, version: u32, key: &SecretKey) {
        self.keks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tenant, version), (key.clone(), Instant::now()));
    }

    fn cached_active(&self, tenant: TenantId) -> Option<u32> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&tenant)
            .copied()
    }

    fn remember_active(&self, tenant: TenantId, version: u32) {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant, version);
    }

    fn forget_tenant(&self, tenant: TenantId) {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&tenant);
        self.keks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(t, _), _| *t != tenant);
    }

    /// Wraps a platform secret (the audit checkpoint signing seed) under the provider's
    /// platform root. Returns the provider's name and the wrapped bytes.
    pub async fn wrap_platform_secret(
        &self,
        secret: &SecretKey,
    ) -> Result<(&'static str, Vec<u8>)> {
        let provider = self.provider()?;
        let wrapped = provider.wrap(PLATFORM_KEY_OWNER, 1, secret).await?;
        Ok((provider.name(), wrapped))
    }

    /// Unwraps a secret made by [`KeyService::wrap_platform_secret`].
    pub async fn unwrap_platform_secret(&self, wrapped: &[u8]) -> Result<SecretKey> {
        self.provider()?
            .unwrap(PLATFORM_KEY_OWNER, 1, wrapped)
            .await
    }

    /// The KEK of `version` for the transaction's tenant.
    async fn kek(&self, tx: &mut TenantTx, version: u32) -> Result<SecretKey> {
        let tenant = tx.tenant();
        if let Some(k) = self.cached(tenant, version) {
            return Ok(k);
        }
        let provider = self.provider()?;
        let row: Option<(Option<Vec<u8>>,)> = tx
            .query("SELECT wrapped FROM tenant_keks WHERE tenant_id = $1 AND version = $2")
            .bind(i64::from(version))
            .fetch_optional()
            .await?;
        let wrapped = match row {
            None => return Err(CryptoError::KeyNotFound),
            Some((None,)) => return Err(CryptoError::KeyDestroyed),
            Some((Some(w),)) => w,
        };
        let kek = provider.unwrap(tenant, version, &wrapped).await?;
        self.remember(tenant, version, &kek);
        Ok(kek)
    }

    /// The active KEK, creating version 1 on a tenant's first use.
    async fn active_kek(&self, tx: &mut TenantTx, now: DateTime<Utc>) -> Result<(u32, SecretKey)> {
        let active: Option<(i64,)> = tx
            .query("SELECT version FROM tenant_keks WHERE tenant_id = $1 AND state = 'active'")
            .fetch_optional()
            .await?;
        if let Some((v,)) = active {
            let v = u32::try_from(v).map_err(|_| CryptoError::KeyNotFound)?;
            return Ok((v, self.kek(tx, v).await?));
        }
        let destroyed: Option<(i64,)> =
            tx.query("SELECT version FROM tenant_keks WHERE tenant_id = $1 AND state = 'destroyed' LIMIT 1").fetch_optional().await?;
        if destroyed.is_some() {
            // A shredded tenant stays shredded: no new key is minted for it.
            return Err(CryptoError::KeyDestroyed);
        }
        let provider = self.provider()?;
        let kek = SecretKey::generate()?;
        let wrapped = provider.wrap(tx.tenant(), 1, &kek).await?;
        tx.query(
            "INSERT INTO tenant_keks (tenant_id, version, provider, wrapped, state, created_at)
             VALUES ($1, 1, $2, $3, 'active', $4) ON CONFLICT DO NOTHING",
        )
        .bind(provider.name())
        .bind(wrapped)
        .bind(now)
        .execute()
        .await?;
        // Another writer may have won the race; use whatever is active now.
        let (v,): (i64,) = tx
            .query("SELECT version FROM tenant_keks WHERE tenant_id = $1 AND state = 'active'")
            .fetch_one()
            .await?;
        let v = u32::try_from(v).map_err(|_| CryptoError::KeyNotFound)?;
        if v == 1 {
            self.remember(tx.tenant(), 1, &kek);
        }
        Ok((v, self.kek(tx, v).await?))
    }

    /// Creates, wraps and stores a new data key for an object of `kind`.
    pub async fn new_data_key(
        &self,
        tx: &mut TenantTx,
        kind: &str,
        now: DateTime<Utc>,
    ) -> Result<DataKey> {
        self.insert_data_key(tx, Uuid::now_v7(), kind, now).await
    }

    /// A new data key held in memory only, for an object whose record is written after
    /// its bytes (an upload): nothing is stored until [`KeyService::save_data_key`], so an
    /// upload that is refused leaves no key row behind.
    pub fn draft_data_key(&self) -> Result<DataKey> {
        Ok(DataKey {
            id: Uuid::now_v7(),
            key: SecretKey::generate()?,
        })
    }

    /// Stores a drafted data key for an object of `kind`, wrapped under the tenant's
    /// active KEK.
    pub async fn save_data_key(
        &self,
        tx: &mut TenantTx,
        key: &DataKey,
        kind: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.store_data_key(tx, key.id, key.key.clone(), kind, now)
            .await
            .map(|_| ())
    }

    async fn insert_data_key(
        &self,
        tx: &mut TenantTx,
        id: Uuid,
        kind: &str,
        now: DateTime<Utc>,
    ) -> Result<DataKey> {
        self.store_data_key(tx, id, SecretKey::generate()?, kind, now)
            .await
    }

    async fn store_data_key(
        &self,
        tx: &mut TenantTx,
        id: Uuid,
        key: SecretKey,
        kind: &str,
        now: DateTime<Utc>,
    ) -> Result<DataKey> {
        // Fast path: the version this process last saw active, checked by the INSERT
        // itself (it inserts nothing unless that version is still active), so a rotation
        // elsewhere can never leave a data key wrapped under a retiring or destroyed KEK.
        let tenant = tx.tenant();
        let cached = self
            .cached_active(tenant)
            .and_then(|v| self.cached(tenant, v).map(|k| (v, k)));
        if let Some((version, kek)) = cached
            && self
                .insert_wrapped(tx, id, kind, version, &kek, &key, now)
                .await?
        {
            return Ok(DataKey { id, key });
        }
        let (version, kek) = self.active_kek(tx, now).await?;
        if !self
            .insert_wrapped(tx, id, kind, version, &kek, &key, now)
            .await?
        {
            return Err(CryptoError::KeyNotFound);
        }
        self.remember_active(tx.tenant(), version);
        Ok(DataKey { id, key })
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_wrapped(
        &self,
        tx: &mut TenantTx,
        id: Uuid,
        kind: &str,
        version: u32,
        kek: &SecretKey,
        key: &SecretKey,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let wrapped = envelope::seal(
            kek,
            kek_ref(tx.tenant(), version),
            &data_key_binding(tx.tenant(), id, kind),
            key.expose(),
        )?;
        let n = tx
            .query(
                "INSERT INTO data_keys (tenant_id, id, kek_version, kind, wrapped, created_at)
                 SELECT k.tenant_id, $2, k.version, $4, $5, $6 FROM tenant_keks k
                 WHERE k.tenant_id = $1 AND k.version = $3 AND k.state = 'active'",
            )
            .bind(id)
            .bind(i64::from(version))
            .bind(kind)
            .bind(wrapped)
            .bind(now)
            .execute()
            .await?;
        Ok(n == 1)
    }

    /// Unwraps a data key row read alongside its record.
    pub async fn unwrap_data_key(
        &self,
        tx: &mut TenantTx,
        row: &WrappedDataKey,
    ) -> Result<DataKey> {
        let wrapped = row.wrapped.as_deref().ok_or(CryptoError::KeyDestroyed)?;
        let version = u32::try_from(row.kek_version).map_err(|_| CryptoError::KeyNotFound)?;
        let kek = self.kek(tx, version).await?;
        let mut bytes = envelope::open(
            &kek,
            kek_ref(tx.tenant(), version),
            &data_key_binding(tx.tenant(), row.id, &row.kind),
            wrapped,
        )?;
        let key = SecretKey::from_slice(&bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(DataKey {
            id: row.id,
            key: key.map_err(|_| CryptoError::Decrypt)?,
        })
    }

    /// Loads and unwraps a data key by id.
    pub async fn data_key(&self, tx: &mut TenantTx, id: Uuid) -> Result<DataKey> {
        let row: Option<WrappedDataKey> = tx
            .query("SELECT id, kek_version, kind, wrapped FROM data_keys WHERE tenant_id = $1 AND id = $2")
            .bind(id)
            .fetch_optional()
            .await?;
        let row = row.ok_or(CryptoError::KeyNotFound)?;
        self.unwrap_data_key(tx, &row).await
    }

    /// Destroys a data key: whatever it sealed, wherever copies of it are, stays sealed.
    pub async fn destroy_data_key(
        &self,
        tx: &mut TenantTx,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let n = tx
            .query("UPDATE data_keys SET wrapped = NULL, destroyed_at = $3 WHERE tenant_id = $1 AND id = $2 AND wrapped IS NOT NULL")
            .bind(id)
            .bind(now)
            .execute()
            .await?;
        if n == 1 {
            Ok(())
        } else {
            Err(CryptoError::KeyNotFound)
        }
    }

    /// The tenant's blind-index key (a data key whose id is the tenant id), created on
    /// first use.
    pub async fn blind_index_key(
        &self,
        tx: &mut TenantTx,
        now: DateTime<Utc>,
    ) -> Result<BlindIndexKey> {
        match self.existing_blind_index_key(tx).await? {
            Some(k) => Ok(k),
            None => {
                let key = self
                    .insert_data_key(tx, tx.tenant().as_uuid(), "blind_index", now)
                    .await?;
                Ok(BlindIndexKey::new(key.key.clone()))
            }
        }
    }

    /// The tenant's blind-index key if it exists (a tenant without one has nothing
    /// indexed), for read-only lookups.
    pub async fn existing_blind_index_key(
        &self,
        tx: &mut TenantTx,
    ) -> Result<Option<BlindIndexKey>> {
        let id = tx.tenant().as_uuid();
        let row: Option<WrappedDataKey> = tx
            .query("SELECT id, kek_version, kind, wrapped FROM data_keys WHERE tenant_id = $1 AND id = $2")
            .bind(id)
            .fetch_optional()
            .await?;
        match row {
            Some(row) => Ok(Some(BlindIndexKey::new(
                self.unwrap_data_key(tx, &row).await?.key.clone(),
            ))),
            None => Ok(None),
        }
    }

    /// Crypto-shreds a tenant: every KEK version is destroyed, so every data key and
    /// everything sealed under them, including copies in backups, stays sealed forever.
    pub async fn shred_tenant(&self, tx: &mut TenantTx, now: DateTime<Utc>) -> Result<u64> {
        self.destroy_versions(
            tx,
            "SELECT version FROM tenant_keks WHERE tenant_id = $1 AND state <> 'destroyed'",
        )
        .await?;
        let n = tx
            .query(
                "UPDATE tenant_keks SET wrapped = NULL, state = 'destroyed', destroyed_at = $2
                 WHERE tenant_id = $1 AND state <> 'destroyed'",
            )
            .bind(now)
            .execute()
            .await?;
        self.forget_tenant(tx.tenant());
        Ok(n)
    }
}

impl KeyService {
    /// Destroys, in the provider, the tenant roots of the versions `select` names. The
    /// provider goes first: if the database update then fails, the versions still read
    /// as present but no longer unwrap (fail closed), and a retry finishes the job.
    async fn destroy_versions(&self, tx: &mut TenantTx, select: &'static str) -> Result<()> {
        let provider = self.provider()?;
        let versions: Vec<(i64,)> = tx.query(select).fetch_all().await?;
        for (v,) in versions {
            let v = u32::try_from(v).map_err(|_| CryptoError::KeyNotFound)?;
            provider.destroy(tx.tenant(), v).await?;
        }
        self.forget_tenant(tx.tenant());
        Ok(())
    }
}

/// Progress of a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationProgress {
    /// The new KEK version.
    pub version: u32,
    /// Data keys rewrapped so far in this run.
    pub rewrapped: u64,
    /// Data keys still wrapped by an older version.
    pub remaining: u64,
}

impl KeyService {
    /// Starts a rotation (or finds the one in progress): a new active KEK version, the
    /// previous one marked `retiring`. Returns the new version.
    pub async fn begin_rotation(&self, tx: &mut TenantTx, now: DateTime<Utc>) -> Result<u32> {
        let retiring: Option<(i64,)> =
            tx.query("SELECT version FROM tenant_keks WHERE tenant_id = $1 AND state = 'retiring' LIMIT 1").fetch_optional().await?;
        let (active, _) = self.active_kek(tx, now).await?;
        if retiring.is_some() {
            return Ok(active);
        }
        let provider = self.provider()?;
        let next = active + 1;
        let kek = SecretKey::generate()?;
        let wrapped = provider.wrap(tx.tenant(), next, &kek).await?;
        tx.query("UPDATE tenant_keks SET state = 'retiring' WHERE tenant_id = $1 AND version = $2")
            .bind(i64::from(active))
            .execute()
            .await?;
        tx.query(
            "INSERT INTO tenant_keks (tenant_id, version, provider, wrapped, state, created_at)
             VALUES ($1, $2, $3, $4, 'active', $5)",
        )
        .bind(i64::from(next))
        .bind(provider.name())
        .bind(wrapped)
        .bind(now)
        .execute()
        .await?;
        self.remember(tx.tenant(), next, &kek);
        Ok(next)
    }

    /// Rewraps up to `batch` data keys still under an older KEK with the active one.
    /// Returns how many it rewrapped and how many remain; each batch commits on its own
    /// (the caller's transaction), so an interrupted rotation resumes where it stopped.
    pub async fn rewrap_batch(
        &self,
        tx: &mut TenantTx,
        version: u32,
        batch: u32,
    ) -> Result<(u64, u64)> {
        let rows: Vec<WrappedDataKey> = tx
            .query(
                "SELECT id, kek_version, kind, wrapped FROM data_keys
                 WHERE tenant_id = $1 AND kek_version <> $2 AND wrapped IS NOT NULL ORDER BY id LIMIT $3",
            )
            .bind(i64::from(version))
            .bind(i64::from(batch))
            .fetch_all()
            .await?;
        let kek = self.kek(tx, version).await?;
        let tenant = tx.tenant();
        let mut done = 0u64;
        for row in &rows {
            let key = self.unwrap_data_key(tx, row).await?;
            let wrapped = envelope::seal(
                &kek,
                kek_ref(tenant, version),
                &data_key_binding(tenant, row.id, &row.kind),
                key.key.expose(),
            )?;
            tx.query("UPDATE data_keys SET kek_version = $3, wrapped = $4 WHERE tenant_id = $1 AND id = $2")
                .bind(row.id)
                .bind(i64::from(version))
                .bind(wrapped)
                .execute()
                .await?;
            done += 1;
        }
        let (remaining,): (i64,) = tx
            .query("SELECT count(*) FROM data_keys WHERE tenant_id = $1 AND kek_version <> $2 AND wrapped IS NOT NULL")
            .bind(i64::from(version))
            .fetch_one()
            .await?;
        Ok((done, remaining.max(0) as u64))
    }

    /// Ends a rotation once nothing is wrapped by an older version: the retiring versions
    /// are destroyed. Refuses while any data key still needs them.
    pub async fn finish_rotation(
        &self,
        tx: &mut TenantTx,
        version: u32,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let (remaining,): (i64,) = tx
            .query("SELECT count(*) FROM data_keys WHERE tenant_id = $1 AND kek_version <> $2 AND wrapped IS NOT NULL")
            .bind(i64::from(version))
            .fetch_one()
            .await?;
        if remaining > 0 {
            return Err(CryptoError::Keyring(format!(
                "{remaining} data keys are still wrapped by an older KEK version"
            )));
        }
        self.destroy_versions(
            tx,
            "SELECT version FROM tenant_keks WHERE tenant_id = $1 AND state = 'retiring'",
        )
        .await?;
        let n = tx
            .query(
                "UPDATE tenant_keks SET wrapped = NULL, state = 'destroyed', destroyed_at = $2
                 WHERE tenant_id = $1 AND state = 'retiring'",
            )
            .bind(now)
            .execute()
            .await?;
        self.forget_tenant(tx.tenant());
        Ok(n)
    }
}
