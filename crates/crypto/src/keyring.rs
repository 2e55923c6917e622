//! The local sealed keyring: a file holding the root key, sealed with a key derived from
//! a passphrase by argon2id. The server starts sealed until the passphrase is given.
//!
//! A *development* keyring is sealed with an empty passphrase and cheap KDF settings so
//! that a first `phivault serve` works with no setup; it is marked as such, the server
//! says so at every start, and it is not fit for PHI.

use std::io::Write;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use phivault_store::TenantId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::envelope::{self, KeyRef};
use crate::provider::LocalProvider;
use crate::secret::random;
use crate::{Binding, CryptoError, Result, SecretKey};

const FORMAT: &str = "phivault-keyring";

/// argon2id cost settings.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfCost {
    /// Memory, KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfCost {
    /// For passphrase-sealed keyrings: 64 MiB, 3 passes, 1 lane.
    pub const PRODUCTION: KdfCost = KdfCost {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// For the development keyring, whose passphrase is empty anyway.
    pub const DEVELOPMENT: KdfCost = KdfCost {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };
}

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    format: String,
    version: u32,
    development: bool,
    kdf: String,
    cost: KdfCost,
    salt: String,
    root_key_id: Uuid,
    sealed_root_key: String,
    created_at: DateTime<Utc>,
}

/// What the keyring file says about itself, without unsealing it.
#[derive(Clone, Copy, Debug)]
pub struct KeyringInfo {
    /// A development keyring (empty passphrase).
    pub development: bool,
    /// The root key's id.
    pub root_key_id: Uuid,
}

fn derive(passphrase: &[u8], salt: &[u8], cost: KdfCost) -> Result<SecretKey> {
    let params = Params::new(cost.m_cost_kib, cost.t_cost, cost.p_cost, Some(32))
        .map_err(|_| CryptoError::Keyring("invalid KDF settings".into()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|_| CryptoError::Keyring("key derivation failed".into()))?;
    Ok(SecretKey::from_bytes(*out))
}

fn binding(root_key_id: Uuid) -> Binding<'static> {
    Binding {
        tenant: TenantId::from_uuid(Uuid::nil()),
        kind: "keyring",
        object: root_key_id,
        field: "",
    }
}

/// Creates a keyring file with a fresh root key. Refuses to overwrite one.
pub fn init(path: &Path, passphrase: &[u8], development: bool) -> Result<KeyringInfo> {
    if path.exists() {
        return Err(CryptoError::Keyring(format!(
            "{} already exists; refusing to replace a keyring",
            path.display()
        )));
    }
    if !development && passphrase.len() < 12 {
        return Err(CryptoError::Keyring(
            "the passphrase must have at least 12 characters".into(),
        ));
    }
    let cost = if development {
        KdfCost::DEVELOPMENT
    } else {
        KdfCost::PRODUCTION
    };
    let salt = random::<16>()?;
    let root = SecretKey::generate()?;
    let root_key_id = Uuid::now_v7();
    let wrapping = derive(passphrase, &salt, cost)?;
    let sealed = envelope::seal(
        &wrapping,
        KeyRef {
            id: root_key_id,
            version: 0,
        },
        &binding(root_key_id),
        root.expose(),
    )?;
    let file = KeyringFile {
        format: FORMAT.into(),
        version: 1,
        development,
        kdf: "argon2id".into(),
        cost,
        salt: STANDARD.encode(salt),
        root_key_id,
        sealed_root_key: STANDARD.encode(sealed),
        created_at: Utc::now(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| CryptoError::Keyring(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(&json)?;
    f.sync_all()?;
    Ok(KeyringInfo {
        development,
        root_key_id,
    })
}

fn read(path: &Path) -> Result<KeyringFile> {
    let bytes = std::fs::read(path)
        .map_err(|e| CryptoError::Keyring(format!("cannot read {}: {e}", path.display())))?;
    let file: KeyringFile = serde_json::from_slice(&bytes)
        .map_err(|_| CryptoError::Keyring(format!("{} is not a keyring file", path.display())))?;
    if file.format != FORMAT || file.version != 1 || file.kdf != "argon2id" {
        return Err(CryptoError::Keyring(format!(
            "{} has an unsupported format",
            path.display()
        )));
    }
    Ok(file)
}

/// The directory of the local provider's tenant roots: `tenant-keys` beside the keyring
/// file. Back it up with the keyring, apart from the data: crypto-shredding reaches every
/// backup that does not hold a copy of it.
pub fn tenant_keys_dir(keyring: &Path) -> std::path::PathBuf {
    keyring
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("tenant-keys")
}

/// Reads the keyring's metadata without unsealing it.
pub fn info(path: &Path) -> Result<KeyringInfo> {
    let f = read(path)?;
    Ok(KeyringInfo {
        development: f.development,
        root_key_id: f.root_key_id,
    })
}

/// Unseals the keyring with `passphrase`.
///
/// # Errors
/// [`CryptoError::Keyring`] if the file is missing or malformed, or the passphrase is
/// wrong (the two are not told apart beyond that).
pub fn unseal(path: &Path, passphrase: &[u8]) -> Result<LocalProvider> {
    let f = read(path)?;
    let salt = STANDARD
        .decode(&f.salt)
        .map_err(|_| CryptoError::Keyring("malformed salt".into()))?;
    let sealed = STANDARD
        .decode(&f.sealed_root_key)
        .map_err(|_| CryptoError::Keyring("malformed sealed key".into()))?;
    let wrapping = derive(passphrase, &salt, f.cost)?;
    let root = envelope::open(
        &wrapping,
        KeyRef {
            id: f.root_key_id,
            version: 0,
        },
        &binding(f.root_key_id),
        &sealed,
    )
    .map_err(|_| CryptoError::Keyring("wrong passphrase, or the keyring file is damaged".into()))?;
    let root = SecretKey::from_slice(&Zeroizing::new(root))?;
    Ok(LocalProvider::new(
        root,
        f.root_key_id,
        f.development,
        tenant_keys_dir(path),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::KeyProvider;

    #[tokio::test]
    async fn init_unseal_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        init(&path, b"correct horse battery", false).unwrap();
        assert!(
            init(&path, b"correct horse battery", false).is_err(),
            "overwrote a keyring"
        );
        assert!(matches!(
            unseal(&path, b"wrong passphrase!!"),
            Err(CryptoError::Keyring(_))
        ));
        let p = unseal(&path, b"correct horse battery").unwrap();
        assert!(!p.is_development());
        let t = TenantId::generate();
        let kek = SecretKey::generate().unwrap();
        let wrapped = p.wrap(t, 1, &kek).await.unwrap();
        assert_eq!(p.unwrap(t, 1, &wrapped).await.unwrap(), kek);
        assert!(
            p.unwrap(TenantId::generate(), 1, &wrapped).await.is_err(),
            "KEK unwrapped for another tenant"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("correct horse"));
        assert!(init(&dir.path().join("short.json"), b"short", false).is_err());
    }
}
