//! Key providers: where the root of the key hierarchy lives.
//!
//! A provider holds one *tenant root* per tenant and KEK version (a KMS key, an HSM key
//! object, or for the local provider a key file sealed by the keyring's root key), and
//! wraps that tenant version's KEK under it. Destroying the tenant root in the provider
//! is what makes crypto-shredding reach backups: a database copy still holds the wrapped
//! KEK, but nothing live can unwrap it. The tenant id and version are bound into every
//! wrap, so a wrapped KEK moved to another tenant or version does not unwrap.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use phivault_store::TenantId;
use uuid::Uuid;

use crate::envelope::{self, KeyRef};
use crate::{Binding, CryptoError, Result, SecretKey};

/// A holder of the root of the key hierarchy.
#[async_trait]
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// The provider's name as configuration spells it (`local`, `aws-kms`, `pkcs11`).
    fn name(&self) -> &'static str;

    /// Whether this is a development provider, unfit for PHI.
    fn is_development(&self) -> bool {
        false
    }

    /// Wraps KEK `version` of `tenant` under that tenant version's root, creating the
    /// root on first use.
    async fn wrap(&self, tenant: TenantId, version: u32, kek: &SecretKey) -> Result<Vec<u8>>;

    /// Unwraps KEK `version` of `tenant`.
    ///
    /// # Errors
    /// [`CryptoError::KeyDestroyed`] once [`KeyProvider::destroy`] ran for it.
    async fn unwrap(&self, tenant: TenantId, version: u32, wrapped: &[u8]) -> Result<SecretKey>;

    /// Destroys the root of `tenant` and `version`: every copy of that KEK, wherever it
    /// is stored, becomes undecryptable. Destroying one already gone succeeds.
    async fn destroy(&self, tenant: TenantId, version: u32) -> Result<()>;
}

/// Where the local provider keeps its tenant roots.
enum TenantRoots {
    /// One file per tenant and version, sealed by the root key.
    Directory(PathBuf),
    /// In memory only (ephemeral providers for tests and benchmarks).
    Memory(Mutex<HashMap<(TenantId, u32), Vec<u8>>>),
}

/// The local provider: a root key unsealed from the keyring file, and tenant roots in
/// the keyring's `tenant-keys` directory, each sealed by the root key.
pub struct LocalProvider {
    root: SecretKey,
    root_id: Uuid,
    development: bool,
    roots: TenantRoots,
}

impl fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalProvider")
            .field("root_id", &self.root_id)
            .field("development", &self.development)
            .finish()
    }
}

fn io_err(e: std::io::Error) -> CryptoError {
    CryptoError::Provider {
        provider: "local",
        message: format!("tenant key store: {}", e.kind()),
    }
}

impl LocalProvider {
    pub(crate) fn new(
        root: SecretKey,
        root_id: Uuid,
        development: bool,
        tenant_keys: PathBuf,
    ) -> Self {
        LocalProvider {
            root,
            root_id,
            development,
            roots: TenantRoots::Directory(tenant_keys),
        }
    }

    /// A development provider with a fresh random root key and tenant roots held only in
    /// memory, for tests and benchmarks: what it wraps is unreadable once it is dropped.
    pub fn ephemeral() -> Result<Self> {
        Ok(LocalProvider {
            root: SecretKey::generate()?,
            root_id: Uuid::now_v7(),
            development: true,
            roots: TenantRoots::Memory(Mutex::new(HashMap::new())),
        })
    }

    fn root_binding(tenant: TenantId, field: &str) -> Binding<'_> {
        Binding {
            tenant,
            kind: "tenant_root",
            object: tenant.as_uuid(),
            field,
        }
    }

    fn kek_binding(tenant: TenantId) -> Binding<'static> {
        Binding {
            tenant,
            kind: "tenant_kek",
            object: tenant.as_uuid(),
            field: "",
        }
    }

    fn path(dir: &std::path::Path, tenant: TenantId, version: u32) -> PathBuf {
        dir.join(tenant.to_string()).join(format!("v{version}.key"))
    }

    fn seal_root(&self, tenant: TenantId, version: u32, key: &SecretKey) -> Result<Vec<u8>> {
        let field = format!("v{version}");
        envelope::seal(
            &self.root,
            KeyRef {
                id: self.root_id,
                version: 1,
            },
            &Self::root_binding(tenant, &field),
            key.expose(),
        )
    }

    fn open_root(&self, tenant: TenantId, version: u32, sealed: &[u8]) -> Result<SecretKey> {
        let field = format!("v{version}");
        let mut bytes = envelope::open(
            &self.root,
            KeyRef {
                id: self.root_id,
                version: 1,
            },
            &Self::root_binding(tenant, &field),
            sealed,
        )?;
        let key = SecretKey::from_slice(&bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        key.map_err(|_| CryptoError::Decrypt)
    }

    /// The tenant root, or `None` if it does not exist (never created, or destroyed).
    fn load(&self, tenant: TenantId, version: u32) -> Result<Option<SecretKey>> {
        let sealed = match &self.roots {
            TenantRoots::Memory(m) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(tenant, version))
                .cloned(),
            TenantRoots::Directory(dir) => match std::fs::read(Self::path(dir, tenant, version)) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_err(e)),
            },
        };
        sealed
            .map(|s| self.open_root(tenant, version, &s))
            .transpose()
    }

    fn load_or_create(&self, tenant: TenantId, version: u32) -> Result<SecretKey> {
        if let Some(k) = self.load(tenant, version)? {
            return Ok(k);
        }
        let key = SecretKey::generate()?;
        let sealed = self.seal_root(tenant, version, &key)?;
        match &self.roots {
            TenantRoots::Memory(m) => {
                m.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry((tenant, version))
                    .or_insert(sealed);
            }
            TenantRoots::Directory(dir) => {
                let path = Self::path(dir, tenant, version);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io_err)?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                match options.open(&path) {
                    Ok(mut f) => {
                        f.write_all(&sealed).map_err(io_err)?;
                        f.sync_all().map_err(io_err)?;
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        self.load(tenant, version)?.ok_or(CryptoError::KeyDestroyed)
    }
}

#[async_trait]
impl KeyProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn is_development(&self) -> bool {
        self.development
    }

    async fn wrap(&self, tenant: TenantId, version: u32, kek: &SecretKey) -> Result<Vec<u8>> {
        let root = self.load_or_create(tenant, version)?;
        envelope::seal(
            &root,
            KeyRef {
                id: tenant.as_uuid(),
                version,
            },
            &Self::kek_binding(tenant),
            kek.expose(),
        )
    }

    async fn unwrap(&self, tenant: TenantId, version: u32, wrapped: &[u8]) -> Result<SecretKey> {
        let root = self
            .load(tenant, version)?
            .ok_or(CryptoError::KeyDestroyed)?;
        let mut bytes = envelope::open(
            &root,
            KeyRef {
                id: tenant.as_uuid(),
                version,
            },
            &Self::kek_binding(tenant),
            wrapped,
        )?;
        let key = SecretKey::from_slice(&bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        key.map_err(|_| CryptoError::Decrypt)
    }

    async fn destroy(&self, tenant: TenantId, version: u32) -> Result<()> {
        match &self.roots {
            TenantRoots::Memory(m) => {
                m.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(tenant, version));
            }
            TenantRoots::Directory(dir) => {
                let path = Self::path(dir, tenant, version);
                match std::fs::OpenOptions::new().write(true).open(&path) {
                    Ok(mut f) => {
                        // Overwrite before unlinking, so the sealed root does not linger in
                        // the freed blocks of simple file systems.
                        let len = f.metadata().map_err(io_err)?.len() as usize;
                        f.write_all(&vec![0u8; len]).map_err(io_err)?;
                        f.sync_all().map_err(io_err)?;
                        std::fs::remove_file(&path).map_err(io_err)?;
                        if let Some(d) = path.parent().and_then(|p| std::fs::File::open(p).ok()) {
                            let _ = d.sync_all();
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn destroyed_roots_stay_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalProvider::new(
            SecretKey::generate().unwrap(),
            Uuid::now_v7(),
            false,
            dir.path().to_path_buf(),
        );
        let (t, kek) = (TenantId::generate(), SecretKey::generate().unwrap());
        let w1 = p.wrap(t, 1, &kek).await.unwrap();
        let copy = w1.clone();
        assert_eq!(p.unwrap(t, 1, &w1).await.unwrap(), kek);
        assert!(
            p.unwrap(t, 2, &w1).await.is_err(),
            "unwrapped under another version"
        );
        assert!(
            p.unwrap(TenantId::generate(), 1, &w1).await.is_err(),
            "unwrapped for another tenant"
        );
        p.destroy(t, 1).await.unwrap();
        assert!(matches!(
            p.unwrap(t, 1, &copy).await,
            Err(CryptoError::KeyDestroyed)
        ));
        p.destroy(t, 1).await.unwrap();
        assert!(!dir.path().join(t.to_string()).join("v1.key").exists());
    }
}
