//! The AWS KMS key provider against moto's KMS on loopback.
//!
//! `scripts/test` starts moto and sets `PHIVAULT_TEST_KMS_ENDPOINT`; these tests fail
//! (never skip) without it.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use phivault_crypto::aws_kms::{AwsKmsConfig, AwsKmsProvider};
use phivault_crypto::provider::KeyProvider;
use phivault_crypto::{CryptoError, SecretKey};
use phivault_store::TenantId;

const REGION: &str = "us-east-1";
const ACCESS_KEY_ID: &str = "test";
const SECRET_ACCESS_KEY: &str = "test";

fn endpoint() -> String {
    match std::env::var("PHIVAULT_TEST_KMS_ENDPOINT") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "PHIVAULT_TEST_KMS_ENDPOINT is not set: run the test suite through scripts/test, \
             which starts a loopback moto server and sets it"
        ),
    }
}

/// A fresh symmetric KMS key on the test server, created through the SDK itself.
async fn create_key(endpoint: &str) -> String {
    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "phivault-test",
        ))
        .endpoint_url(endpoint)
        .load()
        .await;
    let client = aws_sdk_kms::Client::new(&sdk_config);
    let output = client
        .create_key()
        .key_spec(KeySpec::SymmetricDefault)
        .key_usage(KeyUsageType::EncryptDecrypt)
        .description("phivault aws-kms provider test")
        .send()
        .await
        .expect("CreateKey on the test KMS");
    output
        .key_metadata
        .expect("CreateKey returned key metadata")
        .key_id
}

fn config(endpoint: &str, key_id: &str) -> AwsKmsConfig {
    AwsKmsConfig {
        key_id: key_id.to_owned(),
        region: REGION.to_owned(),
        endpoint: Some(endpoint.to_owned()),
        access_key_id: Some(ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(SECRET_ACCESS_KEY.to_owned()),
    }
}

/// A provider over a fresh KMS key.
async fn provider() -> AwsKmsProvider {
    let endpoint = endpoint();
    let key_id = create_key(&endpoint).await;
    AwsKmsProvider::connect(config(&endpoint, &key_id))
        .await
        .expect("connect")
}

fn assert_provider_error(err: &CryptoError, expected_code: &str) {
    match err {
        CryptoError::Provider { provider, message } => {
            assert_eq!(*provider, "aws-kms");
            assert!(
                message.contains(expected_code),
                "expected {expected_code} in {message:?}"
            );
        }
        other => panic!("expected a provider error, got {other:?}"),
    }
}

#[tokio::test]
async fn wrap_unwrap_round_trip() {
    let provider = provider().await;
    assert_eq!(provider.name(), "aws-kms");
    assert!(!provider.is_development());
    let tenant = TenantId::generate();
    let kek = SecretKey::generate().unwrap();
    let wrapped = provider.wrap(tenant, &kek).await.unwrap();
    assert!(
        !wrapped.windows(32).any(|w| w == kek.expose().as_slice()),
        "the wrapped form contains the KEK"
    );
    let unwrapped = provider.unwrap(tenant, &wrapped).await.unwrap();
    assert_eq!(unwrapped, kek);
}

#[tokio::test]
async fn unwrap_under_another_tenant_fails() {
    let provider = provider().await;
    let tenant = TenantId::generate();
    let kek = SecretKey::generate().unwrap();
    let wrapped = provider.wrap(tenant, &kek).await.unwrap();
    let err = provider
        .unwrap(TenantId::generate(), &wrapped)
        .await
        .unwrap_err();
    assert_provider_error(&err, "InvalidCiphertextException");
    // The right tenant still unwraps it.
    assert_eq!(provider.unwrap(tenant, &wrapped).await.unwrap(), kek);
}

#[tokio::test]
async fn generate_kek_unwraps_to_the_same_key() {
    let provider = provider().await;
    let tenant = TenantId::generate();
    let (kek, wrapped) = provider.generate_kek(tenant).await.unwrap();
    assert_eq!(provider.unwrap(tenant, &wrapped).await.unwrap(), kek);
    assert!(
        provider
            .unwrap(TenantId::generate(), &wrapped)
            .await
            .is_err(),
        "a generated KEK unwrapped under another tenant"
    );
    let (other, _) = provider.generate_kek(tenant).await.unwrap();
    assert_ne!(kek, other, "two generated KEKs are equal");
}

#[tokio::test]
async fn tampered_blob_fails() {
    let provider = provider().await;
    let tenant = TenantId::generate();
    let kek = SecretKey::generate().unwrap();
    let wrapped = provider.wrap(tenant, &kek).await.unwrap();
    // Flip a bit in the last byte (the authentication tag) and in a middle byte.
    for index in [wrapped.len() - 1, wrapped.len() / 2] {
        let mut tampered = wrapped.clone();
        tampered[index] ^= 0x01;
        let err = provider.unwrap(tenant, &tampered).await.unwrap_err();
        assert_provider_error(&err, "InvalidCiphertextException");
    }
    let err = provider
        .unwrap(tenant, &wrapped[..wrapped.len() - 1])
        .await
        .unwrap_err();
    assert!(matches!(err, CryptoError::Provider { .. }), "{err:?}");
}

#[tokio::test]
async fn wrong_key_id_fails() {
    let endpoint = endpoint();
    let key_a = create_key(&endpoint).await;
    let key_b = create_key(&endpoint).await;
    let provider_a = AwsKmsProvider::connect(config(&endpoint, &key_a))
        .await
        .unwrap();
    let provider_b = AwsKmsProvider::connect(config(&endpoint, &key_b))
        .await
        .unwrap();
    let tenant = TenantId::generate();
    let kek = SecretKey::generate().unwrap();
    let wrapped = provider_a.wrap(tenant, &kek).await.unwrap();

    // Unwrapping through a provider configured with another key fails (AWS answers
    // IncorrectKeyException, moto AccessDeniedException).
    let err = provider_b.unwrap(tenant, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::Provider { .. }), "{err:?}");

    // A key id that does not exist fails to wrap, to unwrap and to generate.
    let missing =
        AwsKmsProvider::connect(config(&endpoint, "00000000-0000-4000-8000-000000000000"))
            .await
            .unwrap();
    let err = missing.wrap(tenant, &kek).await.unwrap_err();
    assert_provider_error(&err, "NotFoundException");
    assert!(missing.unwrap(tenant, &wrapped).await.is_err());
    assert!(missing.generate_kek(tenant).await.is_err());
}

#[tokio::test]
async fn errors_carry_no_key_material() {
    let provider = provider().await;
    let tenant = TenantId::generate();
    let kek = SecretKey::from_bytes([0xA5; 32]);
    let wrapped = provider.wrap(tenant, &kek).await.unwrap();
    let err = provider
        .unwrap(TenantId::generate(), &wrapped)
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}").to_lowercase();
    assert!(!shown.contains("a5a5"), "{shown}");
    assert!(!shown.contains("165, 165"), "{shown}");
    let provider_shown = format!("{provider:?}");
    assert!(
        !provider_shown.contains(SECRET_ACCESS_KEY),
        "{provider_shown}"
    );
}

#[tokio::test]
async fn connect_rejects_half_credentials() {
    let mut half = config("http://127.0.0.1:9", "some-key");
    half.secret_access_key = None;
    let err = AwsKmsProvider::connect(half).await.unwrap_err();
    assert_provider_error(&err, "access_key_id and secret_access_key");
}

#[test]
fn config_debug_redacts_the_secret() {
    let config = AwsKmsConfig {
        key_id: "alias/phivault".to_owned(),
        region: REGION.to_owned(),
        endpoint: None,
        access_key_id: Some("AKIAEXAMPLE".to_owned()),
        secret_access_key: Some("wJalrXUtnFEMI-super-secret".to_owned()),
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
    assert!(!shown.contains("super-secret"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(shown.contains("alias/phivault"), "{shown}");
}

#[test]
fn config_denies_unknown_fields() {
    let ok: AwsKmsConfig =
        serde_json::from_str(r#"{"key_id": "alias/phivault", "region": "eu-central-1"}"#).unwrap();
    assert_eq!(ok.key_id, "alias/phivault");
    assert!(ok.endpoint.is_none() && ok.secret_access_key.is_none());
    let unknown = serde_json::from_str::<AwsKmsConfig>(
        r#"{"key_id": "k", "region": "r", "secret_key": "typo"}"#,
    );
    assert!(unknown.is_err());
}
