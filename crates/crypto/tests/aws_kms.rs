//! The AWS KMS key provider against moto's KMS on loopback.
//!
//! `scripts/test` starts moto and sets `PHIVAULT_TEST_KMS_ENDPOINT`; these tests fail
//! (never skip) without it.
//!
//! moto differs from AWS in two ways these tests work around: it still encrypts and
//! decrypts under keys pending deletion or disabled (AWS refuses), and it answers a
//! `Decrypt` naming one key for a ciphertext of another with `AccessDeniedException`
//! (AWS: `IncorrectKeyException`). The tests therefore check the destroyed state through
//! the deleted alias, and wrong tenants and versions through the encryption context.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::types::{KeyMetadata, KeySpec, KeyState, KeyUsageType};
use phivault_crypto::aws_kms::{AwsKmsConfig, AwsKmsProvider, DEFAULT_ALIAS_PREFIX};
use phivault_crypto::provider::KeyProvider;
use phivault_crypto::{CryptoError, SecretKey};
use phivault_store::TenantId;

const REGION: &str = "us-east-1";
const ACCESS_KEY_ID: &str = "test";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI-test-secret";

fn endpoint() -> String {
    match std::env::var("PHIVAULT_TEST_KMS_ENDPOINT") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "PHIVAULT_TEST_KMS_ENDPOINT is not set: run the test suite through scripts/test, \
             which starts a loopback moto server and sets it"
        ),
    }
}

fn config(endpoint: &str) -> AwsKmsConfig {
    AwsKmsConfig {
        region: REGION.to_owned(),
        alias_prefix: None,
        endpoint: Some(endpoint.to_owned()),
        access_key_id: Some(ACCESS_KEY_ID.to_owned()),
        secret_access_key: Some(SECRET_ACCESS_KEY.to_owned()),
    }
}

/// A provider on the test server, with the default alias prefix.
async fn provider() -> AwsKmsProvider {
    AwsKmsProvider::connect(config(&endpoint()))
        .await
        .expect("connect")
}

/// A plain KMS client on the test server, to look at what the provider did.
async fn kms() -> aws_sdk_kms::Client {
    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "phivault-test",
        ))
        .endpoint_url(endpoint())
        .load()
        .await;
    aws_sdk_kms::Client::new(&sdk_config)
}

/// The key an alias (or key id) names, or `None` if KMS has no such alias or key.
async fn describe(kms: &aws_sdk_kms::Client, key_id: &str) -> Option<KeyMetadata> {
    match kms.describe_key().key_id(key_id).send().await {
        Ok(output) => Some(output.key_metadata.expect("DescribeKey metadata")),
        Err(e) if e.code() == Some("NotFoundException") => None,
        Err(e) => panic!("DescribeKey {key_id}: {e:?}"),
    }
}

/// Every key on the test server whose description names `tenant`.
async fn keys_of(kms: &aws_sdk_kms::Client, tenant: TenantId) -> Vec<KeyMetadata> {
    let needle = format!("tenant {tenant},");
    let mut found = Vec::new();
    let mut marker = None;
    loop {
        let page = kms
            .list_keys()
            .set_marker(marker)
            .send()
            .await
            .expect("ListKeys");
        for entry in page.keys.unwrap_or_default() {
            let id = entry.key_id.expect("ListKeys key id");
            if let Some(m) = describe(kms, &id).await
                && m.description
                    .as_deref()
                    .is_some_and(|d| d.contains(&needle))
            {
                found.push(m);
            }
        }
        match page.next_marker {
            Some(next) if page.truncated => marker = Some(next),
            _ => return found,
        }
    }
}

fn assert_provider_error(err: &CryptoError, expected: &str) {
    match err {
        CryptoError::Provider { provider, message } => {
            assert_eq!(*provider, "aws-kms");
            assert!(
                message.contains(expected),
                "expected {expected} in {message:?}"
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
    let wrapped = provider.wrap(tenant, 1, &kek).await.unwrap();
    assert!(
        !wrapped.windows(32).any(|w| w == kek.expose().as_slice()),
        "the wrapped form contains the KEK"
    );
    assert_eq!(provider.unwrap(tenant, 1, &wrapped).await.unwrap(), kek);

    // The tenant root is a dedicated symmetric key behind the documented alias.
    let alias = provider.tenant_root_alias(tenant, 1);
    assert_eq!(alias, format!("alias/phivault/{tenant}/v1"));
    let root = describe(&kms().await, &alias)
        .await
        .expect("the tenant root's alias exists");
    assert_eq!(root.key_spec, Some(KeySpec::SymmetricDefault));
    assert_eq!(root.key_usage, Some(KeyUsageType::EncryptDecrypt));
    assert_eq!(root.key_state, Some(KeyState::Enabled));
    let description = root.description.unwrap_or_default();
    assert!(
        description.contains("phivault tenant root")
            && description.contains(&tenant.to_string())
            && description.contains("version 1"),
        "{description}"
    );

    // A second wrap reuses the root.
    let again = provider.wrap(tenant, 1, &kek).await.unwrap();
    assert_eq!(provider.unwrap(tenant, 1, &again).await.unwrap(), kek);
    assert_eq!(
        describe(&kms().await, &alias).await.unwrap().key_id,
        root.key_id
    );
}

#[tokio::test]
async fn unwrap_as_another_tenant_or_version_fails() {
    let provider = provider().await;
    let (tenant, other) = (TenantId::generate(), TenantId::generate());
    let kek = SecretKey::generate().unwrap();
    let wrapped = provider.wrap(tenant, 1, &kek).await.unwrap();

    // Where no such root exists, there is nothing to unwrap with, as with the local
    // provider.
    for (t, v) in [(other, 1), (tenant, 2)] {
        let err = provider.unwrap(t, v, &wrapped).await.unwrap_err();
        assert!(
            matches!(err, CryptoError::KeyDestroyed),
            "{t} v{v}: {err:?}"
        );
    }

    // Where the root exists, KMS refuses: the ciphertext is under another key and
    // another encryption context.
    provider
        .wrap(other, 1, &SecretKey::generate().unwrap())
        .await
        .unwrap();
    provider
        .wrap(tenant, 2, &SecretKey::generate().unwrap())
        .await
        .unwrap();
    for (t, v) in [(other, 1), (tenant, 2)] {
        let err = provider.unwrap(t, v, &wrapped).await.unwrap_err();
        assert!(matches!(err, CryptoError::Decrypt), "{t} v{v}: {err:?}");
    }

    // The right tenant and version still unwrap it.
    assert_eq!(provider.unwrap(tenant, 1, &wrapped).await.unwrap(), kek);
}

#[tokio::test]
async fn generate_kek_unwraps_to_the_same_key() {
    let provider = provider().await;
    let tenant = TenantId::generate();
    let (kek, wrapped) = provider.generate_kek(tenant, 3).await.unwrap();
    assert_eq!(provider.unwrap(tenant, 3, &wrapped).await.unwrap(), kek);
    assert!(
        describe(&kms().await, &provider.tenant_root_alias(tenant, 3))
            .await
            .is_some(),
        "generate_kek did not create the tenant root"
    );
    provider
        .wrap(tenant, 4, &SecretKey::generate().unwrap())
        .await
        .unwrap();
    let err = provider.unwrap(tenant, 4, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::Decrypt), "{err:?}");
    assert!(
        provider
            .unwrap(TenantId::generate(), 3, &wrapped)
            .await
            .is_err(),
        "a generated KEK unwrapped for another tenant"
    );
    let (other, _) = provider.generate_kek(tenant, 3).await.unwrap();
    assert_ne!(kek, other, "two generated KEKs are equal");
}

#[tokio::test]
async fn destroy_makes_every_copy_undecryptable() {
    let provider = provider().await;
    let kms = kms().await;
    let tenant = TenantId::generate();
    let (kek1, kek2) = (
        SecretKey::generate().unwrap(),
        SecretKey::generate().unwrap(),
    );
    let wrapped1 = provider.wrap(tenant, 1, &kek1).await.unwrap();
    let backup_copy = wrapped1.clone();
    let wrapped2 = provider.wrap(tenant, 2, &kek2).await.unwrap();
    let alias = provider.tenant_root_alias(tenant, 1);
    let root = describe(&kms, &alias).await.unwrap();

    let scheduled_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    provider.destroy(tenant, 1).await.unwrap();

    let err = provider.unwrap(tenant, 1, &backup_copy).await.unwrap_err();
    assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
    assert!(
        describe(&kms, &alias).await.is_none(),
        "the alias survived destroy"
    );
    // The key is pending deletion with the shortest window KMS allows.
    let key = describe(&kms, &root.key_id)
        .await
        .expect("the key is kept until its deletion date");
    assert_eq!(key.key_state, Some(KeyState::PendingDeletion));
    let deletion = Duration::from_secs(u64::try_from(key.deletion_date.unwrap().secs()).unwrap());
    let window = deletion.saturating_sub(scheduled_at);
    let week = Duration::from_secs(7 * 24 * 3600);
    assert!(
        window > week - Duration::from_secs(120) && window < week + Duration::from_secs(120),
        "deletion window {window:?}"
    );
    // The error says nothing about keys, and other versions are untouched.
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&root.key_id), "{shown}");
    assert_eq!(provider.unwrap(tenant, 2, &wrapped2).await.unwrap(), kek2);
}

#[tokio::test]
async fn destroy_is_idempotent() {
    let provider = provider().await;
    let kms = kms().await;

    // A root never created.
    provider.destroy(TenantId::generate(), 1).await.unwrap();

    // Twice in a row.
    let tenant = TenantId::generate();
    let kek = SecretKey::generate().unwrap();
    let wrapped = provider.wrap(tenant, 1, &kek).await.unwrap();
    provider.destroy(tenant, 1).await.unwrap();
    provider.destroy(tenant, 1).await.unwrap();
    let err = provider.unwrap(tenant, 1, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");

    // Half done: the deletion scheduled, the alias left (a destroy interrupted between
    // its two calls). The root reads as destroyed, and destroy finishes the job.
    let tenant = TenantId::generate();
    let wrapped = provider.wrap(tenant, 1, &kek).await.unwrap();
    let alias = provider.tenant_root_alias(tenant, 1);
    let root = describe(&kms, &alias).await.unwrap();
    kms.schedule_key_deletion()
        .key_id(&root.key_id)
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let err = provider.wrap(tenant, 1, &kek).await.unwrap_err();
    assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
    let err = provider.generate_kek(tenant, 1).await.unwrap_err();
    assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
    provider.destroy(tenant, 1).await.unwrap();
    assert!(describe(&kms, &alias).await.is_none());
    let err = provider.unwrap(tenant, 1, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
    provider.destroy(tenant, 1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_providers_share_one_tenant_root() {
    const PROVIDERS: usize = 4;
    const ROUNDS: usize = 10;
    let kms = kms().await;
    let mut raced = false;
    for _ in 0..ROUNDS {
        let tenant = TenantId::generate();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..PROVIDERS {
            // Separate providers, as in separate processes.
            let provider = provider().await;
            tasks.spawn(async move {
                let kek = SecretKey::generate().unwrap();
                let wrapped = provider.wrap(tenant, 1, &kek).await;
                (provider, kek, wrapped)
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (provider, kek, wrapped) = joined.unwrap();
            results.push((provider, kek, wrapped.expect("a racing wrap failed")));
        }
        for (provider, _, _) in &results {
            for (_, kek, wrapped) in &results {
                assert_eq!(&provider.unwrap(tenant, 1, wrapped).await.unwrap(), kek);
            }
        }

        // One root is live; every key a loser created is on its way out.
        let root = describe(&kms, &results[0].0.tenant_root_alias(tenant, 1))
            .await
            .unwrap();
        let keys = keys_of(&kms, tenant).await;
        assert!(keys.iter().any(|k| k.key_id == root.key_id));
        for key in keys.iter().filter(|k| k.key_id != root.key_id) {
            assert_eq!(
                key.key_state,
                Some(KeyState::PendingDeletion),
                "a losing key"
            );
        }
        if keys.len() > 1 {
            raced = true;
            break;
        }
    }
    assert!(
        raced,
        "no round of {PROVIDERS} concurrent wraps raced to create a tenant root"
    );
}

#[tokio::test]
async fn tampered_blob_fails() {
    let provider = provider().await;
    let tenant = TenantId::generate();
    let kek = SecretKey::generate().unwrap();
    let wrapped = provider.wrap(tenant, 1, &kek).await.unwrap();
    // Flip a bit in the last byte (the authentication tag) and in a middle byte.
    for index in [wrapped.len() - 1, wrapped.len() / 2] {
        let mut tampered = wrapped.clone();
        tampered[index] ^= 0x01;
        let err = provider.unwrap(tenant, 1, &tampered).await.unwrap_err();
        assert!(matches!(err, CryptoError::Decrypt), "byte {index}: {err:?}");
    }
    let err = provider
        .unwrap(tenant, 1, &wrapped[..wrapped.len() - 1])
        .await
        .unwrap_err();
    assert!(matches!(err, CryptoError::Decrypt), "{err:?}");
    assert_eq!(provider.unwrap(tenant, 1, &wrapped).await.unwrap(), kek);
}

#[tokio::test]
async fn alias_prefix_separates_roots() {
    let endpoint = endpoint();
    let prefix = format!("alias/phivault-test/{}", uuid::Uuid::now_v7().simple());
    let mut custom_config = config(&endpoint);
    custom_config.alias_prefix = Some(prefix.clone());
    let custom = AwsKmsProvider::connect(custom_config).await.unwrap();
    let default = provider().await;
    let tenant = TenantId::generate();
    let kek = SecretKey::generate().unwrap();
    let wrapped = custom.wrap(tenant, 1, &kek).await.unwrap();
    let alias = custom.tenant_root_alias(tenant, 1);
    assert_eq!(alias, format!("{prefix}/{tenant}/v1"));
    let kms = kms().await;
    assert!(describe(&kms, &alias).await.is_some());
    assert!(
        describe(&kms, &default.tenant_root_alias(tenant, 1))
            .await
            .is_none()
    );
    assert_eq!(custom.unwrap(tenant, 1, &wrapped).await.unwrap(), kek);
    // Under another prefix the root is not found.
    let err = default.unwrap(tenant, 1, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
}

#[tokio::test]
async fn errors_and_debug_carry_no_secrets() {
    let provider = provider().await;
    let tenant = TenantId::generate();
    let kek = SecretKey::from_bytes([0xA5; 32]);
    let wrapped = provider.wrap(tenant, 1, &kek).await.unwrap();
    provider
        .wrap(tenant, 2, &SecretKey::generate().unwrap())
        .await
        .unwrap();
    let mut errors = vec![provider.unwrap(tenant, 2, &wrapped).await.unwrap_err()];
    provider.destroy(tenant, 1).await.unwrap();
    errors.push(provider.unwrap(tenant, 1, &wrapped).await.unwrap_err());
    let unreachable = AwsKmsProvider::connect(config("http://127.0.0.1:9"))
        .await
        .unwrap();
    errors.push(unreachable.wrap(tenant, 1, &kek).await.unwrap_err());
    for err in &errors {
        let shown = format!("{err} {err:?}").to_lowercase();
        assert!(!shown.contains("a5a5"), "{shown}");
        assert!(!shown.contains("165, 165"), "{shown}");
        assert!(
            !shown.contains(&SECRET_ACCESS_KEY.to_lowercase()),
            "{shown}"
        );
    }
    assert_provider_error(&errors[2], "DescribeKey failed: dispatch failed");
    for shown in [format!("{provider:?}"), format!("{unreachable:?}")] {
        assert!(!shown.contains(SECRET_ACCESS_KEY), "{shown}");
        assert!(!shown.contains(ACCESS_KEY_ID), "{shown}");
        assert!(shown.contains(DEFAULT_ALIAS_PREFIX), "{shown}");
    }
}

#[tokio::test]
async fn connect_rejects_bad_configuration() {
    let mut half = config("http://127.0.0.1:9");
    half.secret_access_key = None;
    let err = AwsKmsProvider::connect(half).await.unwrap_err();
    assert_provider_error(&err, "access_key_id and secret_access_key");

    let mut no_region = config("http://127.0.0.1:9");
    no_region.region = " ".to_owned();
    let err = AwsKmsProvider::connect(no_region).await.unwrap_err();
    assert_provider_error(&err, "region");

    for prefix in [
        "phivault",
        "alias/phivault/",
        "alias/aws/phivault",
        "alias/a b",
    ] {
        let mut bad = config("http://127.0.0.1:9");
        bad.alias_prefix = Some(prefix.to_owned());
        let err = AwsKmsProvider::connect(bad).await.unwrap_err();
        assert_provider_error(&err, "alias_prefix");
    }
}

#[test]
fn config_debug_redacts_the_secret() {
    let config = AwsKmsConfig {
        region: REGION.to_owned(),
        alias_prefix: Some("alias/phivault-prod".to_owned()),
        endpoint: None,
        access_key_id: Some("AKIAEXAMPLE".to_owned()),
        secret_access_key: Some("wJalrXUtnFEMI-super-secret".to_owned()),
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
    assert!(!shown.contains("super-secret"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(shown.contains("alias/phivault-prod"), "{shown}");
}

#[test]
fn config_denies_unknown_fields() {
    let ok: AwsKmsConfig = serde_json::from_str(r#"{"region": "eu-central-1"}"#).unwrap();
    assert_eq!(ok.region, "eu-central-1");
    assert!(ok.alias_prefix.is_none() && ok.endpoint.is_none());
    assert!(ok.access_key_id.is_none() && ok.secret_access_key.is_none());
    let prefixed: AwsKmsConfig =
        serde_json::from_str(r#"{"region": "r", "alias_prefix": "alias/pv"}"#).unwrap();
    assert_eq!(prefixed.alias_prefix.as_deref(), Some("alias/pv"));
    for unknown in [
        r#"{"region": "r", "secret_key": "typo"}"#,
        // The single root key of earlier versions is gone: a configuration that still
        // names one is refused, not silently ignored.
        r#"{"key_id": "alias/phivault", "region": "r"}"#,
    ] {
        assert!(
            serde_json::from_str::<AwsKmsConfig>(unknown).is_err(),
            "{unknown}"
        );
    }
}
