//! Key providers: where the root of the key hierarchy lives.
//!
//! A provider wraps and unwraps tenant key-encryption keys; the root key never leaves it
//! (a KMS or an HSM keeps it; the local provider holds it in memory once unsealed). The
//! tenant id is bound into every wrap, so a wrapped KEK moved to another tenant does not
//! unwrap.

use std::fmt;

use async_trait::async_trait;
use phivault_store::TenantId;
use uuid::Uuid;

use crate::envelope::{self, KeyRef};
use crate::{Binding, CryptoError, Result, SecretKey};

/// A holder of the root key.
#[async_trait]
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// The provider's name as configuration spells it (`local`, `aws-kms`, `pkcs11`).
    fn name(&self) -> &'static str;

    /// Whether this is a development provider, unfit for PHI.
    fn is_development(&self) -> bool {
        false
    }

    /// Wraps a tenant's KEK.
    async fn wrap(&self, tenant: TenantId, kek: &SecretKey) -> Result<Vec<u8>>;

    /// Unwraps a tenant's KEK.
    async fn unwrap(&self, tenant: TenantId, wrapped: &[u8]) -> Result<SecretKey>;
}

/// The local provider: a root key unsealed from the keyring file.
pub struct LocalProvider {
    root: SecretKey,
    root_id: Uuid,
    development: bool,
}

impl fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalProvider")
            .field("root_id", &self.root_id)
            .field("development", &self.development)
            .finish()
    }
}

impl LocalProvider {
    pub(crate) fn new(root: SecretKey, root_id: Uuid, development: bool) -> Self {
        LocalProvider {
            root,
            root_id,
            development,
        }
    }

    /// A development provider with a fresh random root key held only in memory, for tests
    /// and benchmarks: what it wraps is unreadable once it is dropped.
    pub fn ephemeral() -> Result<Self> {
        Ok(LocalProvider {
            root: SecretKey::generate()?,
            root_id: Uuid::now_v7(),
            development: true,
        })
    }

    fn binding(tenant: TenantId) -> Binding<'static> {
        Binding {
            tenant,
            kind: "tenant_kek",
            object: tenant.as_uuid(),
            field: "",
        }
    }

    fn key_ref(&self) -> KeyRef {
        KeyRef {
            id: self.root_id,
            version: 1,
        }
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

    async fn wrap(&self, tenant: TenantId, kek: &SecretKey) -> Result<Vec<u8>> {
        envelope::seal(
            &self.root,
            self.key_ref(),
            &Self::binding(tenant),
            kek.expose(),
        )
    }

    async fn unwrap(&self, tenant: TenantId, wrapped: &[u8]) -> Result<SecretKey> {
        let mut bytes =
            envelope::open(&self.root, self.key_ref(), &Self::binding(tenant), wrapped)?;
        let key = SecretKey::from_slice(&bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        key.map_err(|_| CryptoError::Decrypt)
    }
}
