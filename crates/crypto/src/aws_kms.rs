//! The AWS KMS key provider: every tenant root is a symmetric KMS key that never leaves
//! KMS.
//!
//! # Tenant roots
//!
//! The root of tenant `T`'s KEK version `V` is a dedicated symmetric KMS key
//! (`SYMMETRIC_DEFAULT`, `ENCRYPT_DECRYPT`, default key policy) with the alias
//! `<alias_prefix>/<T>/v<V>` (`alias/phivault/<T>/v<V>` by default) and the description
//! `phivault tenant root: tenant <T>, KEK version <V>`. [`KeyProvider::wrap`] looks the
//! alias up (`DescribeKey`) and, on first use, creates the key (`CreateKey`) and then the
//! alias (`CreateAlias`). When two processes create the same root at once, KMS lets only
//! one alias through: the loser schedules the deletion of the key it just made, which
//! never protected anything, and uses the winner's. Only then is anything encrypted under
//! a key, so every key that protects a KEK has its alias until it is destroyed.
//!
//! A KEK is wrapped with KMS `Encrypt` and unwrapped with `Decrypt` naming the alias. Both
//! carry the encryption context `{"phivault:tenant_id": "<T>", "phivault:kek_version":
//! "<V>"}`, which KMS binds into the ciphertext as associated data, so a wrapped KEK
//! moved to another tenant or version does not unwrap (and KMS's CloudTrail log names
//! the tenant and version of every call). The wrapped form is KMS's ciphertext blob,
//! opaque to phivault. [`AwsKmsProvider::generate_kek`] is the preferred way to create a
//! KEK: KMS draws it with `GenerateDataKey` and returns it already wrapped, in one call.
//!
//! # Destruction
//!
//! [`KeyProvider::destroy`] schedules the key's deletion (`ScheduleKeyDeletion`) with the
//! shortest pending window KMS allows, [`DELETION_WINDOW_DAYS`] (7 days), then deletes the
//! alias (`DeleteAlias`), in that order: KMS ciphertext blobs name their key, so an alias
//! deleted first would leave a live key that still decrypts the blob for anyone allowed
//! to call `Decrypt` on it. From the moment the deletion is scheduled the key is
//! unusable: KMS refuses every cryptographic operation under a key pending deletion,
//! whoever asks. After the window KMS deletes the key material for good, and every copy
//! of the wrapped KEK (in database backups, too) stays sealed forever. Until then, an
//! AWS principal allowed `kms:CancelKeyDeletion` on the key can still bring it back
//! (disabled): grant that permission to no one who should not be able to undo a shred.
//!
//! A missing alias, or a key pending deletion or disabled (`NotFoundException`,
//! `KMSInvalidStateException`, `DisabledException`), reads as
//! [`CryptoError::KeyDestroyed`]. A root that was never created reads the same way, as
//! with the local provider, and so does every root if `alias_prefix`, the region or the
//! AWS account is not the one the roots were created under: check the configuration
//! before concluding that data was shredded. Re-enabling a disabled key makes it
//! readable again.
//!
//! # Permissions and cost
//!
//! phivault's AWS principal needs `kms:CreateKey`, `kms:CreateAlias`, `kms:DescribeKey`,
//! `kms:Encrypt`, `kms:Decrypt`, `kms:GenerateDataKey`, `kms:ScheduleKeyDeletion` and
//! `kms:DeleteAlias`; an IAM policy can confine all but `kms:CreateKey` to the prefix
//! with the `kms:RequestAlias` and `kms:ResourceAliases` condition keys. Each tenant
//! version costs one KMS key (billed monthly, and counted against the account's key
//! quota) until its deletion completes.
//!
//! Errors name the failing KMS operation and the SDK error's kind or the service's error
//! code (`AccessDeniedException`), never key material. Plaintext key bytes that pass
//! through the AWS SDK (the request and response bodies it builds) live in the SDK's
//! buffers, which this module cannot zeroize; the copies this module holds are zeroized.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::Client;
use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyMetadata, KeySpec, KeyState, KeyUsageType};
use phivault_store::TenantId;
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use crate::provider::KeyProvider;
use crate::{CryptoError, Result, SecretKey};

/// The provider's name in configuration.
pub const NAME: &str = "aws-kms";
/// The encryption-context key whose value is the tenant id.
pub const TENANT_CONTEXT_KEY: &str = "phivault:tenant_id";
/// The encryption-context key whose value is the KEK version, in decimal.
pub const VERSION_CONTEXT_KEY: &str = "phivault:kek_version";
/// The alias prefix of tenant roots when `alias_prefix` is not configured.
pub const DEFAULT_ALIAS_PREFIX: &str = "alias/phivault";
/// The pending window of a destroyed tenant root's deletion: the shortest KMS allows.
pub const DELETION_WINDOW_DAYS: i32 = 7;

/// Length of a KEK in bytes.
const KEY_LEN: usize = 32;
/// Time limit of one KMS call, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of one attempt of a KMS call.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// KMS's limit on the length of an alias name.
const MAX_ALIAS_LEN: usize = 256;
/// The longest suffix phivault appends to the prefix: `/<36-character uuid>/v<u32::MAX>`.
const MAX_ALIAS_SUFFIX_LEN: usize = 1 + 36 + 2 + 10;

/// Where the tenant roots live: a region, an alias prefix, and optionally how to reach
/// KMS.
///
/// There is no key id: each tenant version has its own KMS key, found by its alias.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsKmsConfig {
    /// The AWS region of the tenant roots (`eu-central-1`).
    pub region: String,
    /// The prefix of the tenant roots' aliases, `alias/…` without a trailing slash;
    /// [`DEFAULT_ALIAS_PREFIX`] if absent. Changing it hides every existing root.
    #[serde(default)]
    pub alias_prefix: Option<String>,
    /// A custom KMS endpoint URL (a VPC endpoint, or a test server); AWS's by default.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Static access key id; if absent, the SDK's default credential chain is used.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Static secret access key, given with `access_key_id`. Redacted in `Debug`,
    /// zeroized on drop.
    #[serde(default)]
    pub secret_access_key: Option<String>,
}

impl fmt::Debug for AwsKmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsConfig")
            .field("region", &self.region)
            .field("alias_prefix", &self.alias_prefix)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

impl Drop for AwsKmsConfig {
    fn drop(&mut self) {
        self.secret_access_key.zeroize();
    }
}

/// A key provider whose tenant roots are symmetric AWS KMS keys, one per tenant and KEK
/// version.
pub struct AwsKmsProvider {
    client: Client,
    alias_prefix: String,
    region: String,
}

impl fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("alias_prefix", &self.alias_prefix)
            .field("region", &self.region)
            .finish()
    }
}

/// Checks an alias prefix against KMS's alias rules, leaving room for the suffix.
fn validate_alias_prefix(prefix: &str) -> Result<()> {
    let rest = prefix
        .strip_prefix("alias/")
        .ok_or_else(|| provider_error("alias_prefix must begin with \"alias/\"".into()))?;
    if rest.is_empty() || rest.split('/').any(str::is_empty) {
        return Err(provider_error(
            "alias_prefix has an empty path segment or a trailing slash".into(),
        ));
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    {
        return Err(provider_error(
            "alias_prefix may contain only letters, digits, '/', '_' and '-'".into(),
        ));
    }
    if rest == "aws" || rest.starts_with("aws/") {
        return Err(provider_error(
            "alias_prefix must not be under alias/aws, which AWS reserves".into(),
        ));
    }
    if prefix.len() > MAX_ALIAS_LEN - MAX_ALIAS_SUFFIX_LEN {
        return Err(provider_error(format!(
            "alias_prefix is longer than {} characters",
            MAX_ALIAS_LEN - MAX_ALIAS_SUFFIX_LEN
        )));
    }
    Ok(())
}

impl AwsKmsProvider {
    /// Builds a KMS client from the configuration. Makes no network call: the SDK
    /// resolves default-chain credentials lazily, on the first KMS call.
    pub async fn connect(config: AwsKmsConfig) -> Result<Self> {
        if config.region.trim().is_empty() {
            return Err(provider_error("region is empty".into()));
        }
        let alias_prefix = config
            .alias_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_ALIAS_PREFIX.to_owned());
        validate_alias_prefix(&alias_prefix)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(OPERATION_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                loader = loader.credentials_provider(Credentials::new(
                    id.clone(),
                    secret.clone(),
                    None,
                    None,
                    "phivault-config",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(provider_error(
                    "access_key_id and secret_access_key must be given together".into(),
                ));
            }
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let sdk_config = loader.load().await;
        Ok(AwsKmsProvider {
            client: Client::new(&sdk_config),
            alias_prefix,
            region: config.region.clone(),
        })
    }

    /// The alias of the root of `tenant`'s KEK `version`: `<alias_prefix>/<tenant>/v<version>`.
    pub fn tenant_root_alias(&self, tenant: TenantId, version: u32) -> String {
        format!("{}/{tenant}/v{version}", self.alias_prefix)
    }

    /// Creates KEK `version` of `tenant` with KMS `GenerateDataKey` (AES-256) under that
    /// tenant version's root, creating the root on first use; returns the key and its
    /// wrapped form, which [`KeyProvider::unwrap`] opens. The preferred way to create a
    /// KEK with this provider.
    pub async fn generate_kek(
        &self,
        tenant: TenantId,
        version: u32,
    ) -> Result<(SecretKey, Vec<u8>)> {
        let key_id = self.tenant_root(tenant, version).await?;
        let output = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(TENANT_CONTEXT_KEY, tenant.to_string())
            .encryption_context(VERSION_CONTEXT_KEY, version.to_string())
            .send()
            .await
            .map_err(|e| key_use_error("GenerateDataKey", &e))?;
        let plaintext = Zeroizing::new(
            output
                .plaintext
                .ok_or_else(|| provider_error("GenerateDataKey returned no plaintext".into()))?
                .into_inner(),
        );
        let key = key_from_plaintext("GenerateDataKey", &plaintext)?;
        let wrapped = output
            .ciphertext_blob
            .ok_or_else(|| provider_error("GenerateDataKey returned no ciphertext".into()))?
            .into_inner();
        Ok((key, wrapped))
    }

    /// The key the alias names, or `None` if there is no such alias.
    async fn describe_alias(&self, alias: &str) -> Result<Option<KeyMetadata>> {
        match self.client.describe_key().key_id(alias).send().await {
            Ok(output) => Ok(Some(output.key_metadata.ok_or_else(|| {
                provider_error("DescribeKey returned no key metadata".into())
            })?)),
            Err(e) if service_code(&e) == Some("NotFoundException") => Ok(None),
            Err(e) => Err(sdk_error("DescribeKey", &e)),
        }
    }

    /// The key id of the root of `tenant` and `version`, creating the root if there is
    /// none.
    async fn tenant_root(&self, tenant: TenantId, version: u32) -> Result<String> {
        let alias = self.tenant_root_alias(tenant, version);
        match self.describe_alias(&alias).await? {
            Some(metadata) => usable_key_id(metadata),
            None => self.create_tenant_root(tenant, version, &alias).await,
        }
    }

    /// Creates the root of `tenant` and `version` under `alias`, or, if another process
    /// created the alias first, uses theirs.
    ///
    /// A crash between `CreateKey` and `CreateAlias`, or a `CreateKey` whose answer was
    /// lost and retried, leaves a key without an alias behind; it never protects
    /// anything, and its description names the tenant and version.
    async fn create_tenant_root(
        &self,
        tenant: TenantId,
        version: u32,
        alias: &str,
    ) -> Result<String> {
        let created = self
            .client
            .create_key()
            .key_spec(KeySpec::SymmetricDefault)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .description(format!(
                "phivault tenant root: tenant {tenant}, KEK version {version}"
            ))
            .send()
            .await
            .map_err(|e| sdk_error("CreateKey", &e))?;
        let key_id = created
            .key_metadata
            .ok_or_else(|| provider_error("CreateKey returned no key metadata".into()))?
            .key_id;
        let alias_error = match self
            .client
            .create_alias()
            .alias_name(alias)
            .target_key_id(&key_id)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(%tenant, version, key_id = %key_id, "created a KMS tenant root");
                return Ok(key_id);
            }
            Err(e) => e,
        };
        // Whatever the error, the alias may exist: made by another process that got there
        // first, or by this call if KMS's answer was lost and the SDK's retry found the
        // alias taken. Until that is known the new key may be the root: keep it.
        match self.describe_alias(alias).await? {
            Some(current) if current.key_id == key_id => usable_key_id(current),
            Some(current) => {
                // Another process's root: use it, and let ours, which has no alias and
                // never encrypted anything, go.
                self.discard_unused_key(&key_id).await;
                usable_key_id(current)
            }
            None => {
                self.discard_unused_key(&key_id).await;
                if service_code(&alias_error) == Some("AlreadyExistsException") {
                    // Created by another process and destroyed again in between.
                    Err(CryptoError::KeyDestroyed)
                } else {
                    Err(sdk_error("CreateAlias", &alias_error))
                }
            }
        }
    }

    /// Schedules the deletion of a key that protects nothing, logging a failure (the
    /// key then awaits deletion by hand; its description names the tenant and version).
    async fn discard_unused_key(&self, key_id: &str) {
        if let Err(e) = self
            .client
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(DELETION_WINDOW_DAYS)
            .send()
            .await
        {
            let error = sdk_error("ScheduleKeyDeletion", &e);
            tracing::warn!(
                key_id = %key_id,
                %error,
                "could not schedule the deletion of an unused KMS key; delete it by hand"
            );
        }
    }

    /// Whether the key is pending deletion, or already deleted.
    async fn is_pending_deletion(&self, key_id: &str) -> Result<bool> {
        match self.client.describe_key().key_id(key_id).send().await {
            Ok(output) => Ok(output
                .key_metadata
                .is_some_and(|m| is_pending_deletion(m.key_state.as_ref()))),
            Err(e) if service_code(&e) == Some("NotFoundException") => Ok(true),
            Err(e) => Err(sdk_error("DescribeKey", &e)),
        }
    }
}

#[async_trait]
impl KeyProvider for AwsKmsProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn wrap(&self, tenant: TenantId, version: u32, kek: &SecretKey) -> Result<Vec<u8>> {
        let key_id = self.tenant_root(tenant, version).await?;
        let output = self
            .client
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(kek.expose().to_vec()))
            .encryption_context(TENANT_CONTEXT_KEY, tenant.to_string())
            .encryption_context(VERSION_CONTEXT_KEY, version.to_string())
            .send()
            .await
            .map_err(|e| key_use_error("Encrypt", &e))?;
        Ok(output
            .ciphertext_blob
            .ok_or_else(|| provider_error("Encrypt returned no ciphertext".into()))?
            .into_inner())
    }

    async fn unwrap(&self, tenant: TenantId, version: u32, wrapped: &[u8]) -> Result<SecretKey> {
        let output = self
            .client
            .decrypt()
            .key_id(self.tenant_root_alias(tenant, version))
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context(TENANT_CONTEXT_KEY, tenant.to_string())
            .encryption_context(VERSION_CONTEXT_KEY, version.to_string())
            .send()
            .await
            .map_err(|e| key_use_error("Decrypt", &e))?;
        let plaintext = Zeroizing::new(
            output
                .plaintext
                .ok_or_else(|| provider_error("Decrypt returned no plaintext".into()))?
                .into_inner(),
        );
        key_from_plaintext("Decrypt", &plaintext)
    }

    /// Schedules the deletion of the root's KMS key with a [`DELETION_WINDOW_DAYS`]
    /// window, then deletes its alias. The key is unusable from the moment its deletion
    /// is scheduled and gone for good when the window ends (see the module
    /// documentation). A root already destroyed, half destroyed (scheduled, alias
    /// left) or never created succeeds.
    async fn destroy(&self, tenant: TenantId, version: u32) -> Result<()> {
        let alias = self.tenant_root_alias(tenant, version);
        let Some(metadata) = self.describe_alias(&alias).await? else {
            return Ok(());
        };
        if !is_pending_deletion(metadata.key_state.as_ref()) {
            let scheduled = self
                .client
                .schedule_key_deletion()
                .key_id(&metadata.key_id)
                .pending_window_in_days(DELETION_WINDOW_DAYS)
                .send()
                .await;
            if let Err(e) = scheduled {
                let done = match service_code(&e) {
                    Some("NotFoundException") => true,
                    // Another process may have scheduled it in the meantime.
                    Some("KMSInvalidStateException") => {
                        self.is_pending_deletion(&metadata.key_id).await?
                    }
                    _ => false,
                };
                if !done {
                    return Err(sdk_error("ScheduleKeyDeletion", &e));
                }
            }
            tracing::info!(
                %tenant,
                version,
                key_id = %metadata.key_id,
                window_days = DELETION_WINDOW_DAYS,
                "scheduled the deletion of a KMS tenant root"
            );
        }
        match self.client.delete_alias().alias_name(&alias).send().await {
            Ok(_) => Ok(()),
            Err(e) if service_code(&e) == Some("NotFoundException") => Ok(()),
            Err(e) => Err(sdk_error("DeleteAlias", &e)),
        }
    }
}

fn is_pending_deletion(state: Option<&KeyState>) -> bool {
    matches!(
        state,
        Some(KeyState::PendingDeletion | KeyState::PendingReplicaDeletion)
    )
}

/// The key id of a tenant root found by its alias, or [`CryptoError::KeyDestroyed`] if
/// the key can no longer be used (pending deletion, or disabled).
fn usable_key_id(metadata: KeyMetadata) -> Result<String> {
    if is_pending_deletion(metadata.key_state.as_ref())
        || metadata.key_state == Some(KeyState::Disabled)
    {
        return Err(CryptoError::KeyDestroyed);
    }
    Ok(metadata.key_id)
}

/// A KEK from KMS's plaintext, which must be 32 bytes.
fn key_from_plaintext(operation: &str, plaintext: &[u8]) -> Result<SecretKey> {
    if plaintext.len() != KEY_LEN {
        return Err(provider_error(format!(
            "{operation} returned {} bytes of plaintext, not {KEY_LEN}",
            plaintext.len()
        )));
    }
    SecretKey::from_slice(plaintext)
}

fn provider_error(message: String) -> CryptoError {
    CryptoError::Provider {
        provider: NAME,
        message,
    }
}

/// The service's error code, if KMS answered with an error.
fn service_code<E, R>(error: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ServiceError(_) => error.code(),
        _ => None,
    }
}

/// The error of a cryptographic operation under a tenant root: a root that is gone,
/// pending deletion or disabled is [`CryptoError::KeyDestroyed`]; a ciphertext that was
/// altered, or wrapped for another tenant or version, is [`CryptoError::Decrypt`].
fn key_use_error<E, R>(operation: &str, error: &SdkError<E, R>) -> CryptoError
where
    E: ProvideErrorMetadata,
{
    match service_code(error) {
        Some("NotFoundException" | "KMSInvalidStateException" | "DisabledException") => {
            CryptoError::KeyDestroyed
        }
        Some("InvalidCiphertextException" | "IncorrectKeyException") => CryptoError::Decrypt,
        _ => sdk_error(operation, error),
    }
}

/// A provider error naming the operation and the SDK error's kind or service error
/// code only: the SDK's own messages and sources are left out.
fn sdk_error<E, R>(operation: &str, error: &SdkError<E, R>) -> CryptoError
where
    E: ProvideErrorMetadata,
{
    let kind = match error {
        SdkError::ConstructionFailure(_) => "request construction failed".to_owned(),
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        SdkError::DispatchFailure(failure) => {
            let cause = if failure.is_timeout() {
                "timeout"
            } else if failure.is_io() {
                "i/o error"
            } else if failure.is_user() {
                "invalid request or configuration"
            } else {
                "connector error"
            };
            format!("dispatch failed ({cause})")
        }
        SdkError::ResponseError(_) => "unparseable response".to_owned(),
        SdkError::ServiceError(_) => {
            format!("service error {}", error.code().unwrap_or("(no code)"))
        }
        _ => "unknown SDK error".to_owned(),
    };
    provider_error(format!("{operation} failed: {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_prefixes_follow_kms_rules() {
        for good in [DEFAULT_ALIAS_PREFIX, "alias/a", "alias/prod/phi_vault-2"] {
            assert!(validate_alias_prefix(good).is_ok(), "{good}");
        }
        let too_long = format!("alias/{}", "a".repeat(MAX_ALIAS_LEN));
        for bad in [
            "",
            "phivault",
            "alias/",
            "alias/phivault/",
            "alias//phivault",
            "alias/phi vault",
            "alias/phi:vault",
            "alias/aws",
            "alias/aws/phivault",
            too_long.as_str(),
        ] {
            assert!(validate_alias_prefix(bad).is_err(), "{bad}");
        }
        // The longest allowed prefix leaves room for the longest suffix.
        let longest = format!(
            "alias/{}",
            "a".repeat(MAX_ALIAS_LEN - MAX_ALIAS_SUFFIX_LEN - 6)
        );
        assert!(validate_alias_prefix(&longest).is_ok());
        let alias = format!("{longest}/{}/v{}", uuid::Uuid::nil(), u32::MAX);
        assert_eq!(alias.len(), MAX_ALIAS_LEN);
    }
}
