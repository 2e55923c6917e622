//! The PKCS#11 key provider against SoftHSM2.
//!
//! Needs a token: `eval "$(scripts/softhsm-init DIR)"` sets SOFTHSM2_CONF and the
//! PHIVAULT_TEST_PKCS11_* variables (`scripts/test` does it). Without them these tests
//! fail; they never skip.

use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use phivault_crypto::pkcs11::{Pkcs11Config, Pkcs11Provider, WRAPPED_LEN, WRAPPED_VERSION};
use phivault_crypto::provider::KeyProvider;
use phivault_crypto::{CryptoError, SecretKey};
use phivault_store::TenantId;
use tokio::sync::RwLock;
use uuid::Uuid;

/// Tests that need no other session of this process open (a wrong-PIN login is only
/// checked when no session is logged in) take it for writing; the others for reading.
static TOKEN: RwLock<()> = RwLock::const_new(());

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: run scripts/test, or `eval \"$(scripts/softhsm-init /tmp/softhsm-dev)\"` \
             before cargo test, to get a SoftHSM2 token for the PKCS#11 tests"
        ),
    }
}

/// A config naming a fresh, unique key label on the test token.
fn config() -> Pkcs11Config {
    let module = var("PHIVAULT_TEST_PKCS11_MODULE");
    Pkcs11Config {
        module: module.into(),
        token_label: var("PHIVAULT_TEST_PKCS11_TOKEN"),
        pin: var("PHIVAULT_TEST_PKCS11_PIN"),
        key_label: format!("phivault-test-{}", Uuid::new_v4()),
    }
}

async fn create(config: &Pkcs11Config) -> Pkcs11Provider {
    let config = config.clone();
    tokio::task::spawn_blocking(move || Pkcs11Provider::create_key(&config))
        .await
        .unwrap()
        .expect("create_key")
}

fn kek() -> SecretKey {
    SecretKey::generate().unwrap()
}

fn message(err: &CryptoError) -> String {
    match err {
        CryptoError::Provider { provider, message } => {
            assert_eq!(*provider, "pkcs11");
            message.clone()
        }
        other => panic!("expected a provider error, got {other:?}"),
    }
}

#[tokio::test]
async fn round_trip_wraps_and_unwraps_a_tenant_kek() {
    let _token = TOKEN.read().await;
    let provider = create(&config()).await;
    assert_eq!(provider.name(), "pkcs11");
    assert!(!provider.is_development());

    let tenant = TenantId::generate();
    let kek = kek();
    let wrapped = provider.wrap(tenant, &kek).await.unwrap();
    assert_eq!(wrapped.len(), WRAPPED_LEN);
    assert_eq!(wrapped[0], WRAPPED_VERSION);
    assert!(
        !wrapped.windows(8).any(|w| w == &kek.expose()[..8]),
        "the wrapped form contains KEK bytes"
    );
    assert_eq!(provider.unwrap(tenant, &wrapped).await.unwrap(), kek);

    // A fresh IV each time: the same KEK wraps differently, and both unwrap.
    let again = provider.wrap(tenant, &kek).await.unwrap();
    assert_ne!(again, wrapped);
    assert_ne!(again[1..13], wrapped[1..13]);
    assert_eq!(provider.unwrap(tenant, &again).await.unwrap(), kek);
}

#[tokio::test]
async fn another_tenant_cannot_unwrap() {
    let _token = TOKEN.read().await;
    let provider = create(&config()).await;
    let (a, b) = (TenantId::generate(), TenantId::generate());
    let wrapped = provider.wrap(a, &kek()).await.unwrap();
    let err = provider.unwrap(b, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::Decrypt), "{err:?}");
}

#[tokio::test]
async fn another_key_cannot_unwrap() {
    let _token = TOKEN.read().await;
    let one = create(&config()).await;
    let other = create(&config()).await;
    let tenant = TenantId::generate();
    let wrapped = one.wrap(tenant, &kek()).await.unwrap();
    let err = other.unwrap(tenant, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::Decrypt), "{err:?}");
}

#[tokio::test]
async fn every_tampered_byte_fails() {
    let _token = TOKEN.read().await;
    let provider = create(&config()).await;
    let tenant = TenantId::generate();
    let kek = kek();
    let wrapped = provider.wrap(tenant, &kek).await.unwrap();
    for i in 0..wrapped.len() {
        let mut tampered = wrapped.clone();
        tampered[i] ^= 0x01;
        let err = provider.unwrap(tenant, &tampered).await.unwrap_err();
        if i == 0 {
            assert!(message(&err).contains("unsupported version"), "{err}");
        } else {
            assert!(matches!(err, CryptoError::Decrypt), "byte {i}: {err:?}");
        }
    }
    // The untouched blob still opens (a failed decryption left the session usable).
    assert_eq!(provider.unwrap(tenant, &wrapped).await.unwrap(), kek);
}

#[tokio::test]
async fn truncated_extended_and_garbage_blobs_are_errors_not_panics() {
    let _token = TOKEN.read().await;
    let provider = create(&config()).await;
    let tenant = TenantId::generate();
    let wrapped = provider.wrap(tenant, &kek()).await.unwrap();

    for len in 0..wrapped.len() {
        let err = provider.unwrap(tenant, &wrapped[..len]).await.unwrap_err();
        assert!(
            message(&err).contains("malformed wrapped key"),
            "{len}: {err}"
        );
    }
    let mut longer = wrapped.clone();
    longer.push(0);
    let err = provider.unwrap(tenant, &longer).await.unwrap_err();
    assert!(message(&err).contains("malformed wrapped key"), "{err}");

    let mut garbage = [0u8; WRAPPED_LEN];
    for round in 0..8u8 {
        garbage.iter_mut().enumerate().for_each(|(i, b)| {
            *b = (i as u8)
                .wrapping_mul(31)
                .wrapping_add(round.wrapping_mul(97))
        });
        garbage[0] = WRAPPED_VERSION;
        let err = provider.unwrap(tenant, &garbage).await.unwrap_err();
        assert!(matches!(err, CryptoError::Decrypt), "{err:?}");
    }
    for version in [0u8, 2, 0xff] {
        let mut other = wrapped.clone();
        other[0] = version;
        let err = provider.unwrap(tenant, &other).await.unwrap_err();
        assert!(message(&err).contains("unsupported version"), "{err}");
    }
}

#[tokio::test]
async fn the_wrapping_key_is_sensitive_and_never_extractable() {
    let _token = TOKEN.read().await;
    let config = config();
    let _provider = create(&config).await;

    // Read the key's attributes through a session of our own.
    let ctx = Pkcs11::new(&config.module).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == config.token_label)
        .expect("the test token");
    let session = ctx.open_ro_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(config.pin.as_str()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    let keys = session
        .find_objects(&[Attribute::Label(config.key_label.as_bytes().to_vec())])
        .unwrap();
    assert_eq!(keys.len(), 1, "exactly one object with the new label");
    let attributes = session
        .get_attributes(
            keys[0],
            &[
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::ValueLen,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::Wrap,
                AttributeType::Derive,
                AttributeType::Value,
            ],
        )
        .unwrap();
    let has = |wanted: &Attribute| attributes.iter().any(|a| a == wanted);
    assert!(has(&Attribute::Extractable(false)), "{attributes:?}");
    assert!(has(&Attribute::Sensitive(true)), "{attributes:?}");
    assert!(has(&Attribute::NeverExtractable(true)), "{attributes:?}");
    assert!(has(&Attribute::AlwaysSensitive(true)), "{attributes:?}");
    assert!(has(&Attribute::Token(true)), "{attributes:?}");
    assert!(has(&Attribute::Private(true)), "{attributes:?}");
    assert!(has(&Attribute::ValueLen(32u64.into())), "{attributes:?}");
    assert!(has(&Attribute::Encrypt(true)), "{attributes:?}");
    assert!(has(&Attribute::Decrypt(true)), "{attributes:?}");
    assert!(has(&Attribute::Wrap(false)), "{attributes:?}");
    assert!(has(&Attribute::Derive(false)), "{attributes:?}");
    assert!(
        !attributes
            .iter()
            .any(|a| a.attribute_type() == AttributeType::Value),
        "the key's value was readable: {}",
        attributes.len()
    );
}

#[tokio::test]
async fn open_finds_a_created_key_and_create_refuses_a_taken_label() {
    let _token = TOKEN.read().await;
    let config = config();
    let created = create(&config).await;
    let tenant = TenantId::generate();
    let kek = kek();
    let wrapped = created.wrap(tenant, &kek).await.unwrap();

    let cfg = config.clone();
    let opened = tokio::task::spawn_blocking(move || Pkcs11Provider::open(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(opened.unwrap(tenant, &wrapped).await.unwrap(), kek);

    let cfg = config.clone();
    let err = tokio::task::spawn_blocking(move || Pkcs11Provider::create_key(&cfg))
        .await
        .unwrap()
        .unwrap_err();
    assert!(message(&err).contains("already exists"), "{err}");

    let mut missing = config.clone();
    missing.key_label = format!("phivault-test-missing-{}", Uuid::new_v4());
    let err = Pkcs11Provider::open(&missing).unwrap_err();
    assert!(message(&err).contains("no AES key labelled"), "{err}");

    let mut no_token = config.clone();
    no_token.token_label = "phivault-no-such-token".into();
    let err = Pkcs11Provider::open(&no_token).unwrap_err();
    assert!(message(&err).contains("no token labelled"), "{err}");

    let mut no_module = config.clone();
    no_module.module = "/nonexistent/libpkcs11-missing.so".into();
    let err = Pkcs11Provider::open(&no_module).unwrap_err();
    assert!(
        message(&err).contains("cannot load the PKCS#11 module"),
        "{err}"
    );
}

#[tokio::test]
async fn a_wrong_pin_is_reported_by_return_code_without_the_pin() {
    // No other session may be open: a logged-in token accepts any login.
    let _token = TOKEN.write().await;
    let mut config = config();
    config.pin = "wrong-pin-7f3a9c".into();
    let err = Pkcs11Provider::open(&config).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("CKR_PIN_INCORRECT"), "{shown}");
    assert!(!shown.contains("7f3a9c"), "{shown}");
    assert!(!shown.contains(&var("PHIVAULT_TEST_PKCS11_PIN")), "{shown}");
}

#[tokio::test]
async fn concurrent_calls_share_one_session() {
    let _token = TOKEN.read().await;
    let provider = Arc::new(create(&config()).await);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let provider = Arc::clone(&provider);
        tasks.push(tokio::spawn(async move {
            let tenant = TenantId::generate();
            let kek = kek();
            for _ in 0..8 {
                let wrapped = provider.wrap(tenant, &kek).await.unwrap();
                assert_eq!(provider.unwrap(tenant, &wrapped).await.unwrap(), kek);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn debug_hides_the_pin() {
    let _token = TOKEN.read().await;
    let config = config();
    let shown = format!("{config:?}");
    assert!(!shown.contains(&config.pin), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(shown.contains(&config.key_label), "{shown}");

    let provider = create(&config).await;
    let shown = format!("{provider:?}");
    assert!(!shown.contains(&config.pin), "{shown}");
    assert!(shown.contains(&config.token_label), "{shown}");
}

#[test]
fn config_deserializes_and_rejects_unknown_fields() {
    let config: Pkcs11Config = serde_json::from_value(serde_json::json!({
        "module": "/usr/lib/softhsm/libsofthsm2.so",
        "token_label": "t",
        "pin": "p",
        "key_label": "k",
    }))
    .unwrap();
    assert_eq!(config.key_label, "k");
    let err = serde_json::from_value::<Pkcs11Config>(serde_json::json!({
        "module": "/m.so", "token_label": "t", "pin": "p", "key_label": "k", "slot": 0,
    }))
    .unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}
