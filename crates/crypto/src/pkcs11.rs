//! The PKCS#11 key provider: the root key is a non-extractable AES-256 key in an HSM.
//!
//! Tenant KEKs are encrypted inside the token with `CKM_AES_GCM`: a 96-bit IV drawn
//! from the operating system's random number generator, a 128-bit tag, and associated
//! data binding the tenant ([`AAD_LABEL`] then the 16 bytes of the tenant id), so a
//! wrapped KEK moved to another tenant does not unwrap. The wrapped form is
//!
//! ```text
//! offset  size  field
//!      0     1  version (1)
//!      1    12  IV
//!     13    48  ciphertext of the 32-byte KEK, then the 16-byte tag
//! ```
//!
//! A PKCS#11 session is not `Sync`: the provider keeps one logged-in read-write session
//! behind a mutex, and runs each HSM call on tokio's blocking pool, so neither a slow
//! (network) HSM nor a wait for the session stalls an async worker thread.
//!
//! Errors name the failing PKCS#11 function and its return code (`CKR_PIN_INCORRECT`),
//! never the PIN or key material.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use phivault_store::TenantId;
use serde::Deserialize;
use zeroize::Zeroize;

use crate::provider::KeyProvider;
use crate::secret::random;
use crate::{CryptoError, Result, SecretKey};

/// The provider's name in configuration.
pub const NAME: &str = "pkcs11";
/// The version byte of the wrapped form this build writes and reads.
pub const WRAPPED_VERSION: u8 = 1;
/// Length of the AES-GCM IV.
pub const IV_LEN: usize = 12;
/// Length of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of a wrapped KEK: version, IV, 32 bytes of ciphertext, tag.
pub const WRAPPED_LEN: usize = 1 + IV_LEN + KEY_LEN + TAG_LEN;
/// The fixed prefix of the associated data; the tenant id's 16 bytes follow it.
pub const AAD_LABEL: &[u8] = b"phivault/pkcs11/tenant-kek/v1";

const KEY_LEN: usize = 32;
const TAG_BITS: u64 = (TAG_LEN * 8) as u64;

/// Where the root key lives: a PKCS#11 module, a token in it, and a key on the token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Label of the token that holds the key.
    pub token_label: String,
    /// The token's user PIN. Redacted in `Debug`, zeroized on drop.
    pub pin: String,
    /// Label of the AES-256 wrapping key on the token.
    pub key_label: String,
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"[redacted]")
            .field("key_label", &self.key_label)
            .finish()
    }
}

impl Drop for Pkcs11Config {
    fn drop(&mut self) {
        self.pin.zeroize();
    }
}

/// A key provider whose root key is an AES-256 key held in a PKCS#11 token.
pub struct Pkcs11Provider {
    inner: Arc<Inner>,
}

struct Inner {
    session: Mutex<Session>,
    key: ObjectHandle,
    module: PathBuf,
    token_label: String,
    key_label: String,
}

impl fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("module", &self.inner.module)
            .field("token_label", &self.inner.token_label)
            .field("key_label", &self.inner.key_label)
            .finish()
    }
}

impl Pkcs11Provider {
    /// Opens the token and finds the wrapping key. Blocks on the HSM: from async code,
    /// call it inside `tokio::task::spawn_blocking`.
    pub fn open(config: &Pkcs11Config) -> Result<Self> {
        let (slot, session) = login(config)?;
        let key = find_key(&session, &config.key_label)?.ok_or_else(|| {
            provider_error(format!(
                "no AES key labelled {:?} on token {:?}",
                config.key_label, config.token_label
            ))
        })?;
        Self::ready(config, slot, session, key)
    }

    /// Generates a new AES-256 wrapping key on the token (sensitive, non-extractable,
    /// encrypt and decrypt only) and opens a provider with it. Refuses if an object with
    /// the label already exists. Blocks on the HSM like [`Pkcs11Provider::open`].
    pub fn create_key(config: &Pkcs11Config) -> Result<Self> {
        let (slot, session) = login(config)?;
        let label = Attribute::Label(config.key_label.as_bytes().to_vec());
        let existing = session
            .find_objects(std::slice::from_ref(&label))
            .map_err(ck_error)?;
        if !existing.is_empty() {
            return Err(provider_error(format!(
                "an object labelled {:?} already exists on token {:?}; refusing to create another",
                config.key_label, config.token_label
            )));
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(Ulong::try_from(KEY_LEN).map_err(ck_error)?),
            label,
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ];
        let key = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(ck_error)?;
        tracing::info!(
            token = %config.token_label,
            key = %config.key_label,
            "pkcs11: generated a new AES-256 wrapping key"
        );
        Self::ready(config, slot, session, key)
    }

    /// Checks the key and the token's AES-GCM support, and builds the provider.
    fn ready(
        config: &Pkcs11Config,
        slot: Slot,
        session: Session,
        key: ObjectHandle,
    ) -> Result<Self> {
        let ctx = context(&config.module)?;
        let gcm = ctx
            .get_mechanism_info(slot, MechanismType::AES_GCM)
            .map_err(|e| {
                provider_error(format!(
                    "token {:?} does not offer CKM_AES_GCM ({})",
                    config.token_label,
                    describe(&e)
                ))
            })?;
        if !(gcm.encrypt() && gcm.decrypt()) {
            return Err(provider_error(format!(
                "token {:?} does not offer CKM_AES_GCM for encryption and decryption",
                config.token_label
            )));
        }
        check_key(&session, key, &config.key_label)?;
        tracing::info!(
            token = %config.token_label,
            key = %config.key_label,
            "pkcs11: key provider ready"
        );
        Ok(Pkcs11Provider {
            inner: Arc::new(Inner {
                session: Mutex::new(session),
                key,
                module: config.module.clone(),
                token_label: config.token_label.clone(),
                key_label: config.key_label.clone(),
            }),
        })
    }
}

#[async_trait]
impl KeyProvider for Pkcs11Provider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn wrap(&self, tenant: TenantId, kek: &SecretKey) -> Result<Vec<u8>> {
        let inner = Arc::clone(&self.inner);
        let kek = kek.clone();
        blocking(move || inner.wrap(tenant, &kek)).await
    }

    async fn unwrap(&self, tenant: TenantId, wrapped: &[u8]) -> Result<SecretKey> {
        let (iv, ciphertext) = parse(wrapped)?;
        let ciphertext = ciphertext.to_vec();
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.unwrap(tenant, iv, &ciphertext)).await
    }
}

impl Inner {
    fn session(&self) -> MutexGuard<'_, Session> {
        // The session's state is the token's, not Rust's: a panic elsewhere while the
        // lock was held leaves nothing half-updated on this side.
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wrap(&self, tenant: TenantId, kek: &SecretKey) -> Result<Vec<u8>> {
        let mut iv: [u8; IV_LEN] = random()?;
        let aad = aad(tenant);
        let ciphertext = {
            let params = GcmParams::new(&mut iv, &aad, Ulong::from(TAG_BITS)).map_err(ck_error)?;
            let session = self.session();
            session
                .encrypt(&Mechanism::AesGcm(params), self.key, kek.expose())
                .map_err(ck_error)?
        };
        if ciphertext.len() != KEY_LEN + TAG_LEN {
            return Err(provider_error(format!(
                "C_Encrypt returned {} bytes, expected {}",
                ciphertext.len(),
                KEY_LEN + TAG_LEN
            )));
        }
        // `iv` is read back after the call: a token that generates the IV itself writes
        // the one it used into the parameters.
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(WRAPPED_VERSION);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    fn unwrap(
        &self,
        tenant: TenantId,
        mut iv: [u8; IV_LEN],
        ciphertext: &[u8],
    ) -> Result<SecretKey> {
        let aad = aad(tenant);
        let params = GcmParams::new(&mut iv, &aad, Ulong::from(TAG_BITS)).map_err(ck_error)?;
        let session = self.session();
        let mut plain = match session.decrypt(&Mechanism::AesGcm(params), self.key, ciphertext) {
            Ok(plain) => plain,
            // The tag did not verify: altered, moved to another tenant, or another key.
            Err(CkError::Pkcs11(
                RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange,
                Function::Decrypt,
            )) => return Err(CryptoError::Decrypt),
            // Some tokens report a tag mismatch under another code (SoftHSM2 2.6:
            // CKR_GENERAL_ERROR). If the token still seals and opens a probe under the
            // same key, it is healthy and the tag was wrong; otherwise the token failed.
            Err(e @ CkError::Pkcs11(_, Function::Decrypt)) => {
                return Err(if self.probe(&session) {
                    CryptoError::Decrypt
                } else {
                    ck_error(e)
                });
            }
            Err(e) => return Err(ck_error(e)),
        };
        drop(session);
        let key = if plain.len() == KEY_LEN {
            SecretKey::from_slice(&plain)
        } else {
            Err(provider_error(format!(
                "the unwrapped key has {} bytes, expected {KEY_LEN}",
                plain.len()
            )))
        };
        plain.zeroize();
        key
    }
}

impl Inner {
    /// Whether the token still encrypts and decrypts under the key: a round trip of a
    /// fixed, non-secret probe under a fresh IV and its own associated data.
    fn probe(&self, session: &Session) -> bool {
        const PROBE: &[u8] = b"phivault/pkcs11/probe/plaintext";
        const PROBE_AAD: &[u8] = b"phivault/pkcs11/probe";
        let Ok(mut iv) = random::<IV_LEN>() else {
            return false;
        };
        let sealed = GcmParams::new(&mut iv, PROBE_AAD, Ulong::from(TAG_BITS))
            .and_then(|params| session.encrypt(&Mechanism::AesGcm(params), self.key, PROBE));
        let Ok(sealed) = sealed else {
            return false;
        };
        GcmParams::new(&mut iv, PROBE_AAD, Ulong::from(TAG_BITS))
            .and_then(|params| session.decrypt(&Mechanism::AesGcm(params), self.key, &sealed))
            .is_ok_and(|opened| opened == PROBE)
    }
}

/// The associated data of a tenant's wrapped KEK.
fn aad(tenant: TenantId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + 16);
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(tenant.as_uuid().as_bytes());
    aad
}

/// Splits a wrapped KEK into IV and ciphertext-with-tag, checking length and version.
fn parse(wrapped: &[u8]) -> Result<([u8; IV_LEN], &[u8])> {
    if wrapped.len() != WRAPPED_LEN {
        return Err(provider_error(format!(
            "malformed wrapped key: {} bytes, expected {WRAPPED_LEN}",
            wrapped.len()
        )));
    }
    let Some((&version, rest)) = wrapped.split_first() else {
        return Err(provider_error("malformed wrapped key: empty".into()));
    };
    if version != WRAPPED_VERSION {
        return Err(provider_error(format!(
            "malformed wrapped key: unsupported version {version}"
        )));
    }
    let Some((iv, ciphertext)) = rest.split_first_chunk::<IV_LEN>() else {
        return Err(provider_error("malformed wrapped key: no IV".into()));
    };
    Ok((*iv, ciphertext))
}

/// Runs a blocking HSM call on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| provider_error("the HSM call was cancelled or panicked".into()))?
}

/// The process-wide context of a module. `C_Initialize` is once per process and
/// module, and the module stays loaded for the life of the process.
fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let path = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf());
    let mut contexts = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(ctx) = contexts.get(&path) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&path).map_err(|e| {
        provider_error(format!(
            "cannot load the PKCS#11 module {}: {}",
            module.display(),
            describe(&e)
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another part of the process (another path to the same module) got there first.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(ck_error(e)),
    }
    contexts.insert(path, ctx.clone());
    Ok(ctx)
}

/// Loads the module, finds the token, opens a read-write session and logs in.
fn login(config: &Pkcs11Config) -> Result<(Slot, Session)> {
    let ctx = context(&config.module)?;
    let slot = find_token(&ctx, &config.token_label)?;
    let session = ctx.open_rw_session(slot).map_err(ck_error)?;
    let pin = AuthPin::from(config.pin.as_str());
    match session.login(UserType::User, Some(&pin)) {
        // Login state is per token and application: another session of this process
        // (another provider on the same token) already logged in.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(ck_error(e)),
    }
    Ok((slot, session))
}

/// The one slot whose token has this label.
fn find_token(ctx: &Pkcs11, label: &str) -> Result<Slot> {
    let slots = ctx.get_slots_with_initialized_token().map_err(ck_error)?;
    let matching: Vec<Slot> = slots
        .into_iter()
        .filter(|slot| {
            ctx.get_token_info(*slot)
                .is_ok_and(|info| info.label() == label)
        })
        .collect();
    match matching.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(provider_error(format!("no token labelled {label:?}"))),
        _ => Err(provider_error(format!(
            "{} tokens are labelled {label:?}; labels must be unique",
            matching.len()
        ))),
    }
}

/// The one AES secret key with this label, if any.
fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let found = session.find_objects(&template).map_err(ck_error)?;
    match found.as_slice() {
        [] => Ok(None),
        [key] => Ok(Some(*key)),
        _ => Err(provider_error(format!(
            "{} AES keys are labelled {label:?}; labels must be unique",
            found.len()
        ))),
    }
}

/// Refuses a key that is not AES-256 or whose value can be read in the clear; warns
/// about one that can be exported wrapped (a legitimate HSM backup practice).
fn check_key(session: &Session, key: ObjectHandle, label: &str) -> Result<()> {
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::ValueLen,
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        )
        .map_err(ck_error)?;
    for attribute in attributes {
        match attribute {
            Attribute::ValueLen(len) if usize::from(len) != KEY_LEN => {
                return Err(provider_error(format!(
                    "key {label:?} is {} bits; an AES-256 key is required",
                    usize::from(len) * 8
                )));
            }
            Attribute::Sensitive(false) => {
                return Err(provider_error(format!(
                    "key {label:?} is not sensitive (CKA_SENSITIVE is false): its value can be read out of the token"
                )));
            }
            Attribute::Extractable(true) => {
                tracing::warn!(
                    key = %label,
                    "pkcs11: the wrapping key is extractable (CKA_EXTRACTABLE is true)"
                );
            }
            _ => {}
        }
    }
    Ok(())
}

fn provider_error(message: String) -> CryptoError {
    CryptoError::Provider {
        provider: NAME,
        message,
    }
}

fn ck_error(e: CkError) -> CryptoError {
    provider_error(describe(&e))
}

/// A cryptoki error as `C_Function failed: CKR_NAME`. Never carries a PIN or key.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("C_{function:?} failed: {}", rv_name(*rv)),
        CkError::LibraryLoading(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// The `CKR_` name of a return code (`EncryptedDataInvalid` becomes
/// `CKR_ENCRYPTED_DATA_INVALID`).
fn rv_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(code) => format!("CKR_VENDOR_DEFINED+{code:#x}"),
        RvError::UnknownErrorCode(code) => format!("unknown return code {code:#x}"),
        other => {
            let camel = format!("{other:?}");
            let mut name = String::from("CKR");
            for c in camel.chars() {
                if c.is_ascii_uppercase() {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_codes_are_named() {
        assert_eq!(
            rv_name(RvError::EncryptedDataInvalid),
            "CKR_ENCRYPTED_DATA_INVALID"
        );
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
    }

    #[test]
    fn parse_rejects_malformed_blobs() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[WRAPPED_VERSION]).is_err());
        assert!(parse(&[0; WRAPPED_LEN]).is_err());
        assert!(parse(&[WRAPPED_VERSION; WRAPPED_LEN + 1]).is_err());
        let mut ok = [7u8; WRAPPED_LEN];
        ok[0] = WRAPPED_VERSION;
        let (iv, ciphertext) = parse(&ok).unwrap();
        assert_eq!(iv, [7; IV_LEN]);
        assert_eq!(ciphertext.len(), KEY_LEN + TAG_LEN);
    }
}
