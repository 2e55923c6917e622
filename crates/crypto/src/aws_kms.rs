//! The AWS KMS key provider: the root key is a symmetric KMS key that never leaves KMS.
//!
//! A tenant KEK is wrapped with KMS `Encrypt` under the configured key, and unwrapped
//! with `Decrypt` naming the same key. Both carry the encryption context
//! `{"phivault:tenant_id": "<tenant id>"}`, which KMS binds into the ciphertext as
//! associated data, so a wrapped KEK moved to another tenant does not unwrap (and KMS's
//! CloudTrail log names the tenant of every call). The wrapped form is KMS's ciphertext
//! blob, opaque to phivault.
//!
//! [`AwsKmsProvider::generate_kek`] is the preferred way to create a KEK: KMS draws it
//! with `GenerateDataKey` and returns it already wrapped, in one call.
//!
//! Errors name the failing KMS operation and the SDK error's kind or the service's error
//! code (`InvalidCiphertextException`, `NotFoundException`), never key material.
//! Plaintext key bytes that pass through the AWS SDK (the request and response bodies
//! it builds) live in the SDK's buffers, which this module cannot zeroize; the copies
//! this module holds are zeroized.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::Client;
use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use phivault_store::TenantId;
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use crate::provider::KeyProvider;
use crate::{CryptoError, Result, SecretKey};

/// The provider's name in configuration.
pub const NAME: &str = "aws-kms";
/// The encryption-context key whose value is the tenant id.
pub const TENANT_CONTEXT_KEY: &str = "phivault:tenant_id";

/// Length of a KEK in bytes.
const KEY_LEN: usize = 32;
/// Time limit of one KMS call, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of one attempt of a KMS call.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the root key lives: a KMS key, its region, and optionally how to reach it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsKmsConfig {
    /// The KMS key: a key id, key ARN, alias name (`alias/…`) or alias ARN.
    pub key_id: String,
    /// The AWS region of the key (`eu-central-1`).
    pub region: String,
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
            .field("key_id", &self.key_id)
            .field("region", &self.region)
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

/// A key provider whose root key is a symmetric AWS KMS key.
pub struct AwsKmsProvider {
    client: Client,
    key_id: String,
    region: String,
}

impl fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("key_id", &self.key_id)
            .field("region", &self.region)
            .finish()
    }
}

impl AwsKmsProvider {
    /// Builds a KMS client from the configuration. Makes no network call: the SDK
    /// resolves default-chain credentials lazily, on the first KMS call.
    pub async fn connect(config: AwsKmsConfig) -> Result<Self> {
        if config.key_id.trim().is_empty() {
            return Err(provider_error("key_id is empty".into()));
        }
        if config.region.trim().is_empty() {
            return Err(provider_error("region is empty".into()));
        }
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
            key_id: config.key_id.clone(),
            region: config.region.clone(),
        })
    }

    /// Creates a tenant KEK with KMS `GenerateDataKey` (AES-256), returning the key and
    /// its wrapped form; the preferred way to create a KEK with this provider.
    pub async fn generate_kek(&self, tenant: TenantId) -> Result<(SecretKey, Vec<u8>)> {
        let output = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(TENANT_CONTEXT_KEY, tenant.to_string())
            .send()
            .await
            .map_err(|e| sdk_error("GenerateDataKey", &e))?;
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
}

#[async_trait]
impl KeyProvider for AwsKmsProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn wrap(&self, tenant: TenantId, kek: &SecretKey) -> Result<Vec<u8>> {
        let output = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(kek.expose().to_vec()))
            .encryption_context(TENANT_CONTEXT_KEY, tenant.to_string())
            .send()
            .await
            .map_err(|e| sdk_error("Encrypt", &e))?;
        Ok(output
            .ciphertext_blob
            .ok_or_else(|| provider_error("Encrypt returned no ciphertext".into()))?
            .into_inner())
    }

    async fn unwrap(&self, tenant: TenantId, wrapped: &[u8]) -> Result<SecretKey> {
        let output = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context(TENANT_CONTEXT_KEY, tenant.to_string())
            .send()
            .await
            .map_err(|e| sdk_error("Decrypt", &e))?;
        let plaintext = Zeroizing::new(
            output
                .plaintext
                .ok_or_else(|| provider_error("Decrypt returned no plaintext".into()))?
                .into_inner(),
        );
        key_from_plaintext("Decrypt", &plaintext)
    }
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
