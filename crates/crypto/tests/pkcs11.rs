//! The PKCS#11 key provider against SoftHSM2.
//!
//! Needs a token: `eval "$(scripts/softhsm-init DIR)"` sets SOFTHSM2_CONF and the
//! PHIVAULT_TEST_PKCS11_* variables (`scripts/test` does it). Without them these tests
//! fail; they never skip.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::{AuthPin, Ulong};
use phivault_crypto::pkcs11::{
    AAD_LABEL, IV_LEN, Pkcs11Config, Pkcs11Provider, TENANT_ROOT_ID_LEN, WRAPPED_LEN,
    WRAPPED_VERSION, tenant_root_label,
};
use phivault_crypto::provider::KeyProvider;
use phivault_crypto::{CryptoError, SecretKey};
use phivault_store::TenantId;
use tokio::sync::{Barrier, RwLock};
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

/// A config naming a fresh, unique marker-key label on the test token.
fn config() -> Pkcs11Config {
    let module = var("PHIVAULT_TEST_PKCS11_MODULE");
    Pkcs11Config {
        module: module.into(),
        token_label: var("PHIVAULT_TEST_PKCS11_TOKEN"),
        pin: var("PHIVAULT_TEST_PKCS11_PIN"),
        key_label: format!("phivault-test-{}", Uuid::new_v4()),
    }
}

/// Provisions the token for `config` (creates its marker key) and opens a provider.
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

/// A logged-in read-write session of the test's own, to look at the token directly.
fn token_session(config: &Pkcs11Config) -> Session {
    static CONTEXT: OnceLock<Pkcs11> = OnceLock::new();
    let ctx = CONTEXT.get_or_init(|| {
        let ctx = Pkcs11::new(&config.module).unwrap();
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => panic!("C_Initialize: {e}"),
        }
        ctx
    });
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == config.token_label)
        .expect("the test token");
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(config.pin.as_str()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    session
}

/// Every object on the token with this label.
fn labelled(session: &Session, label: &str) -> Vec<ObjectHandle> {
    session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .unwrap()
}

/// The associated data the provider binds a wrapped KEK to.
fn aad(tenant: TenantId, version: u32) -> Vec<u8> {
    let mut aad = AAD_LABEL.to_vec();
    aad.extend_from_slice(tenant.as_uuid().as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

#[tokio::test]
async fn round_trip_wraps_and_unwraps_a_tenant_kek() {
    let _token = TOKEN.read().await;
    let config = config();
    let provider = create(&config).await;
    assert_eq!(provider.name(), "pkcs11");
    assert!(!provider.is_development());

    let tenant = TenantId::generate();
    let kek = kek();
    let wrapped = provider.wrap(tenant, 1, &kek).await.unwrap();
    assert_eq!(wrapped.len(), WRAPPED_LEN);
    assert_eq!(wrapped[0], WRAPPED_VERSION);
    assert!(
        !wrapped.windows(8).any(|w| w == &kek.expose()[..8]),
        "the wrapped form contains KEK bytes"
    );
    assert_eq!(provider.unwrap(tenant, 1, &wrapped).await.unwrap(), kek);

    // A fresh IV each time: the same KEK wraps differently, and both unwrap.
    let again = provider.wrap(tenant, 1, &kek).await.unwrap();
    assert_ne!(again, wrapped);
    assert_ne!(again[1..13], wrapped[1..13]);
    assert_eq!(provider.unwrap(tenant, 1, &again).await.unwrap(), kek);

    // One root for the tenant version, however often it wraps; another for version 2.
    let v2 = self::kek();
    let wrapped2 = provider.wrap(tenant, 2, &v2).await.unwrap();
    assert_eq!(provider.unwrap(tenant, 2, &wrapped2).await.unwrap(), v2);
    let session = token_session(&config);
    let one = labelled(&session, &tenant_root_label(tenant, 1));
    let two = labelled(&session, &tenant_root_label(tenant, 2));
    assert_eq!((one.len(), two.len()), (1, 1));
    assert_ne!(one, two);
}

#[tokio::test]
async fn another_tenant_or_version_cannot_unwrap() {
    let _token = TOKEN.read().await;
    let provider = create(&config()).await;
    let (a, b) = (TenantId::generate(), TenantId::generate());
    let kek = kek();
    let wrapped = provider.wrap(a, 1, &kek).await.unwrap();

    // No root for the other tenant or version: nothing could have wrapped it.
    let err = provider.unwrap(b, 1, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
    let err = provider.unwrap(a, 2, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");

    // Their roots exist: the tag does not verify.
    provider.wrap(b, 1, &self::kek()).await.unwrap();
    provider.wrap(a, 2, &self::kek()).await.unwrap();
    let err = provider.unwrap(b, 1, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::Decrypt), "{err:?}");
    let err = provider.unwrap(a, 2, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::Decrypt), "{err:?}");

    assert_eq!(provider.unwrap(a, 1, &wrapped).await.unwrap(), kek);
}

#[tokio::test]
async fn every_provider_on_the_token_shares_the_tenant_roots() {
    let _token = TOKEN.read().await;
    // Two marker keys, as two deployments' configurations might name: the roots are the
    // token's, found by label, so either provider unwraps and destroys for the other.
    let one = create(&config()).await;
    let other = create(&config()).await;
    let tenant = TenantId::generate();
    let kek = kek();
    let wrapped = one.wrap(tenant, 1, &kek).await.unwrap();
    assert_eq!(other.unwrap(tenant, 1, &wrapped).await.unwrap(), kek);

    other.destroy(tenant, 1).await.unwrap();
    let err = one.unwrap(tenant, 1, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
}

#[tokio::test]
async fn destroy_shreds_every_saved_copy_of_the_wrapped_kek() {
    let _token = TOKEN.read().await;
    let config = config();
    let provider = create(&config).await;
    let (tenant, neighbour) = (TenantId::generate(), TenantId::generate());
    let (v1, v2, theirs) = (kek(), kek(), kek());
    let wrapped = provider.wrap(tenant, 1, &v1).await.unwrap();
    let backup = wrapped.clone();
    let wrapped2 = provider.wrap(tenant, 2, &v2).await.unwrap();
    let neighbours = provider.wrap(neighbour, 1, &theirs).await.unwrap();

    provider.destroy(tenant, 1).await.unwrap();
    for copy in [&wrapped, &backup] {
        let err = provider.unwrap(tenant, 1, copy).await.unwrap_err();
        assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
    }
    let session = token_session(&config);
    assert!(labelled(&session, &tenant_root_label(tenant, 1)).is_empty());

    // Only that tenant version is gone.
    assert_eq!(provider.unwrap(tenant, 2, &wrapped2).await.unwrap(), v2);
    assert_eq!(
        provider.unwrap(neighbour, 1, &neighbours).await.unwrap(),
        theirs
    );

    // Wrapping the version again makes a new root; the old copy never opens again.
    let rewrapped = provider.wrap(tenant, 1, &v1).await.unwrap();
    assert_eq!(provider.unwrap(tenant, 1, &rewrapped).await.unwrap(), v1);
    let err = provider.unwrap(tenant, 1, &backup).await.unwrap_err();
    assert!(matches!(err, CryptoError::Decrypt), "{err:?}");
}

#[tokio::test]
async fn destroy_is_idempotent() {
    let _token = TOKEN.read().await;
    let provider = create(&config()).await;
    let tenant = TenantId::generate();
    // Never created.
    provider.destroy(tenant, 1).await.unwrap();

    let wrapped = provider.wrap(tenant, 1, &kek()).await.unwrap();
    provider.destroy(tenant, 1).await.unwrap();
    provider.destroy(tenant, 1).await.unwrap();
    let err = provider.unwrap(tenant, 1, &wrapped).await.unwrap_err();
    assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
}

#[tokio::test]
async fn every_tampered_byte_fails() {
    let _token = TOKEN.read().await;
    let provider = create(&config()).await;
    let tenant = TenantId::generate();
    let kek = kek();
    let wrapped = provider.wrap(tenant, 1, &kek).await.unwrap();
    for i in 0..wrapped.len() {
        let mut tampered = wrapped.clone();
        tampered[i] ^= 0x01;
        let err = provider.unwrap(tenant, 1, &tampered).await.unwrap_err();
        if i == 0 {
            assert!(message(&err).contains("unsupported version"), "{err}");
        } else {
            assert!(matches!(err, CryptoError::Decrypt), "byte {i}: {err:?}");
        }
    }
    // The untouched blob still opens (a failed decryption left the session usable).
    assert_eq!(provider.unwrap(tenant, 1, &wrapped).await.unwrap(), kek);
}

#[tokio::test]
async fn truncated_extended_and_garbage_blobs_are_errors_not_panics() {
    let _token = TOKEN.read().await;
    let provider = create(&config()).await;
    let tenant = TenantId::generate();
    let wrapped = provider.wrap(tenant, 1, &kek()).await.unwrap();

    for len in 0..wrapped.len() {
        let err = provider
            .unwrap(tenant, 1, &wrapped[..len])
            .await
            .unwrap_err();
        assert!(
            message(&err).contains("malformed wrapped key"),
            "{len}: {err}"
        );
    }
    let mut longer = wrapped.clone();
    longer.push(0);
    let err = provider.unwrap(tenant, 1, &longer).await.unwrap_err();
    assert!(message(&err).contains("malformed wrapped key"), "{err}");

    let mut garbage = [0u8; WRAPPED_LEN];
    for round in 0..8u8 {
        garbage.iter_mut().enumerate().for_each(|(i, b)| {
            *b = (i as u8)
                .wrapping_mul(31)
                .wrapping_add(round.wrapping_mul(97))
        });
        garbage[0] = WRAPPED_VERSION;
        let err = provider.unwrap(tenant, 1, &garbage).await.unwrap_err();
        assert!(matches!(err, CryptoError::Decrypt), "{err:?}");
    }
    for version in [0u8, 2, 0xff] {
        let mut other = wrapped.clone();
        other[0] = version;
        let err = provider.unwrap(tenant, 1, &other).await.unwrap_err();
        assert!(message(&err).contains("unsupported version"), "{err}");
    }
}

/// Asserts a key generated by the provider is an AES-256 private token object that
/// never left the token and only encrypts and decrypts.
fn assert_locked_down(session: &Session, key: ObjectHandle) {
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::Class,
                AttributeType::KeyType,
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Modifiable,
                AttributeType::ValueLen,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::Wrap,
                AttributeType::Unwrap,
                AttributeType::Sign,
                AttributeType::Derive,
                AttributeType::Value,
            ],
        )
        .unwrap();
    let has = |wanted: &Attribute| attributes.iter().any(|a| a == wanted);
    for wanted in [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Extractable(false),
        Attribute::Sensitive(true),
        Attribute::NeverExtractable(true),
        Attribute::AlwaysSensitive(true),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(false),
        Attribute::ValueLen(32u64.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Derive(false),
    ] {
        assert!(has(&wanted), "{wanted:?} missing from {attributes:?}");
    }
    assert!(
        !attributes
            .iter()
            .any(|a| a.attribute_type() == AttributeType::Value),
        "the key's value was readable: {}",
        attributes.len()
    );
}

#[tokio::test]
async fn the_tenant_root_is_sensitive_and_never_extractable() {
    let _token = TOKEN.read().await;
    let config = config();
    let provider = create(&config).await;
    let tenant = TenantId::generate();
    provider.wrap(tenant, 7, &kek()).await.unwrap();

    let session = token_session(&config);
    let label = tenant_root_label(tenant, 7);
    assert_eq!(label, format!("phivault/{tenant}/v7"));
    let roots = labelled(&session, &label);
    assert_eq!(roots.len(), 1, "exactly one object with the root's label");
    assert_locked_down(&session, roots[0]);

    // CKA_ID: the tenant id, the version big-endian, then the creator's random bytes.
    let id = session
        .get_attributes(roots[0], &[AttributeType::Id])
        .unwrap()
        .into_iter()
        .find_map(|a| match a {
            Attribute::Id(id) => Some(id),
            _ => None,
        })
        .expect("CKA_ID");
    assert_eq!(id.len(), TENANT_ROOT_ID_LEN);
    assert_eq!(&id[..16], tenant.as_uuid().as_bytes());
    assert_eq!(&id[16..20], &7u32.to_be_bytes());

    // The token's marker key is locked down the same way.
    let markers = labelled(&session, &config.key_label);
    assert_eq!(markers.len(), 1);
    assert_locked_down(&session, markers[0]);
}

#[tokio::test]
async fn duplicate_roots_wrap_under_the_lowest_id_and_all_unwrap_and_destroy() {
    // Alone: this test generates a key outside the provider, whose object lock keeps
    // SoftHSM2 from generating two keys at once in one process.
    let _token = TOKEN.write().await;
    let config = config();
    let provider = create(&config).await;
    let tenant = TenantId::generate();
    let label = tenant_root_label(tenant, 1);
    let first = kek();
    let under_first = provider.wrap(tenant, 1, &first).await.unwrap();

    // Another process's root for the same tenant version, whose CKA_ID sorts first
    // (its random bytes are all zero): as if both had created one at the same time.
    let session = token_session(&config);
    let mut id = tenant.as_uuid().as_bytes().to_vec();
    id.extend_from_slice(&1u32.to_be_bytes());
    id.extend_from_slice(&[0; TENANT_ROOT_ID_LEN - 20]);
    let theirs = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32u64.into()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .unwrap();
    assert_eq!(labelled(&session, &label).len(), 2);

    // What was wrapped before still unwraps; what is wrapped now is under theirs.
    assert_eq!(
        provider.unwrap(tenant, 1, &under_first).await.unwrap(),
        first
    );
    let second = kek();
    let under_theirs = provider.wrap(tenant, 1, &second).await.unwrap();
    assert_eq!(
        provider.unwrap(tenant, 1, &under_theirs).await.unwrap(),
        second
    );
    let mut iv: [u8; IV_LEN] = under_theirs[1..1 + IV_LEN].try_into().unwrap();
    let aad = aad(tenant, 1);
    let params = GcmParams::new(&mut iv, &aad, Ulong::from(128u64)).unwrap();
    let opened = session
        .decrypt(
            &Mechanism::AesGcm(params),
            theirs,
            &under_theirs[1 + IV_LEN..],
        )
        .expect("wrapped under the root with the lowest CKA_ID");
    assert_eq!(&opened[..], second.expose());

    // Destroying takes both.
    provider.destroy(tenant, 1).await.unwrap();
    assert!(labelled(&session, &label).is_empty());
    for wrapped in [&under_first, &under_theirs] {
        let err = provider.unwrap(tenant, 1, wrapped).await.unwrap_err();
        assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn providers_on_separate_sessions_create_one_root() {
    let _token = TOKEN.read().await;
    let config = config();
    create(&config).await;
    // Separate sessions, each behind its own mutex: creators in one process, which the
    // provider's per-token object lock serialises.
    const CREATORS: usize = 8;
    let mut providers = Vec::new();
    for _ in 0..CREATORS {
        let cfg = config.clone();
        providers.push(Arc::new(
            tokio::task::spawn_blocking(move || Pkcs11Provider::open(&cfg))
                .await
                .unwrap()
                .unwrap(),
        ));
    }
    let tenant = TenantId::generate();
    let start = Arc::new(Barrier::new(CREATORS));
    let tasks: Vec<_> = providers
        .iter()
        .map(|provider| {
            let (provider, start) = (Arc::clone(provider), Arc::clone(&start));
            tokio::spawn(async move {
                let kek = kek();
                start.wait().await;
                let wrapped = provider.wrap(tenant, 1, &kek).await.unwrap();
                (kek, wrapped)
            })
        })
        .collect();
    let mut wrapped = Vec::new();
    for task in tasks {
        wrapped.push(task.await.unwrap());
    }

    for (kek, blob) in &wrapped {
        for provider in &providers {
            assert_eq!(&provider.unwrap(tenant, 1, blob).await.unwrap(), kek);
        }
    }
    let session = token_session(&config);
    let label = tenant_root_label(tenant, 1);
    assert_eq!(labelled(&session, &label).len(), 1);

    providers[0].destroy(tenant, 1).await.unwrap();
    assert!(labelled(&session, &label).is_empty());
    for (_, blob) in &wrapped {
        let err = providers[CREATORS - 1]
            .unwrap(tenant, 1, blob)
            .await
            .unwrap_err();
        assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
    }
}

/// Set in the child processes of [`racing_creators_in_separate_processes_agree`]: the
/// tenant, the marker key's label and the instant (Unix milliseconds) to wrap at.
const RACE: &str = "PHIVAULT_TEST_PKCS11_RACE";
const RACERS: usize = 6;
/// Where a child's line starts (libtest may print the test's name before it).
const RACE_LINE: &str = "PHIVAULT-RACE ";

#[tokio::test]
async fn racing_creators_in_separate_processes_agree() {
    if let Ok(race) = std::env::var(RACE) {
        return race_as_child(&race).await;
    }
    // Alone: SoftHSM2 fails reads (C_GetTokenInfo) with CKR_GENERAL_ERROR while another
    // process rewrites the token, and the children should race only one another.
    let _token = TOKEN.write().await;
    let config = config();
    let provider = create(&config).await;
    for _round in 0..3 {
        let tenant = TenantId::generate();
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 1500;
        // The children are this test binary, running this test with RACE set: each
        // opens its own provider and creates the same tenant root at the same instant.
        let children: Vec<_> = (0..RACERS)
            .map(|racer| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "racing_creators_in_separate_processes_agree",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(RACE, format!("{racer} {tenant} {} {at}", config.key_label))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Every child is waited for before any is judged: none outlives the test.
        let mut outputs = Vec::new();
        for child in children {
            outputs.push(
                tokio::task::spawn_blocking(move || child.wait_with_output())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let mut wrapped = Vec::new();
        for output in outputs {
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let line = stdout
                .lines()
                .find_map(|l| l.split_once(RACE_LINE).map(|(_, rest)| rest))
                .unwrap_or_else(|| panic!("no {RACE_LINE:?} line in {stdout}"));
            let (kek, blob) = line.split_once(' ').unwrap();
            let kek = SecretKey::from_slice(&STANDARD.decode(kek).unwrap()).unwrap();
            wrapped.push((kek, STANDARD.decode(blob).unwrap()));
        }

        // Whoever won, every racer's KEK unwraps here, and a later wrap agrees.
        for (kek, blob) in &wrapped {
            assert_eq!(&provider.unwrap(tenant, 1, blob).await.unwrap(), kek);
        }
        let later = kek();
        let blob = provider.wrap(tenant, 1, &later).await.unwrap();
        assert_eq!(provider.unwrap(tenant, 1, &blob).await.unwrap(), later);
        wrapped.push((later, blob));

        let session = token_session(&config);
        let label = tenant_root_label(tenant, 1);
        let roots = labelled(&session, &label).len();
        assert!((1..=RACERS).contains(&roots), "{roots} roots");
        provider.destroy(tenant, 1).await.unwrap();
        assert!(labelled(&session, &label).is_empty());
        for (_, blob) in &wrapped {
            let err = provider.unwrap(tenant, 1, blob).await.unwrap_err();
            assert!(matches!(err, CryptoError::KeyDestroyed), "{err:?}");
        }
    }
}

/// One racer: wraps a fresh KEK for the tenant at the agreed instant and prints it with
/// its wrapped form (test keys only) for the parent.
async fn race_as_child(race: &str) {
    let mut fields = race.split(' ');
    let (Some(racer), Some(tenant), Some(key_label), Some(at), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        panic!("{RACE} is malformed: {race}");
    };
    let racer: u64 = racer.parse().unwrap();
    let tenant: TenantId = tenant.parse().unwrap();
    let at: u128 = at.parse().unwrap();
    let mut config = config();
    config.key_label = key_label.to_owned();
    // Log in one after another: SoftHSM2 rewrites its token file at every login, and a
    // process reading it meanwhile sees a broken token. The race is the wrap below.
    tokio::time::sleep(Duration::from_millis(150 * racer)).await;
    let provider = tokio::task::spawn_blocking(move || Pkcs11Provider::open(&config))
        .await
        .unwrap()
        .unwrap();
    let kek = kek();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let wait = u64::try_from(at.saturating_sub(now)).unwrap();
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let wrapped = provider.wrap(tenant, 1, &kek).await.unwrap();
    println!(
        "{RACE_LINE}{} {}",
        STANDARD.encode(kek.expose()),
        STANDARD.encode(&wrapped)
    );
}

#[tokio::test]
async fn open_finds_a_created_marker_and_create_refuses_a_taken_label() {
    let _token = TOKEN.read().await;
    let config = config();
    let created = create(&config).await;
    let tenant = TenantId::generate();
    let kek = kek();
    let wrapped = created.wrap(tenant, 1, &kek).await.unwrap();

    let cfg = config.clone();
    let opened = tokio::task::spawn_blocking(move || Pkcs11Provider::open(&cfg))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(opened.unwrap(tenant, 1, &wrapped).await.unwrap(), kek);

    let cfg = config.clone();
    let err = tokio::task::spawn_blocking(move || Pkcs11Provider::create_key(&cfg))
        .await
        .unwrap()
        .unwrap_err();
    assert!(message(&err).contains("already exists"), "{err}");

    // A token without the marker key is refused, not taken for one whose tenants were
    // all shredded.
    let mut missing = config.clone();
    missing.key_label = format!("phivault-test-missing-{}", Uuid::new_v4());
    let err = Pkcs11Provider::open(&missing).unwrap_err();
    assert!(message(&err).contains("no AES key labelled"), "{err}");

    // The tenant roots' namespace is not a marker key's.
    let mut reserved = config.clone();
    reserved.key_label = format!("phivault/{tenant}/v1");
    for result in [
        Pkcs11Provider::open(&reserved),
        Pkcs11Provider::create_key(&reserved),
    ] {
        let err = result.unwrap_err();
        assert!(message(&err).contains("is reserved"), "{err}");
    }
    assert_eq!(opened.unwrap(tenant, 1, &wrapped).await.unwrap(), kek);

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
    let config = config();
    let provider = Arc::new(create(&config).await);
    // Four tasks per tenant: first uses race to create the same root.
    let tenants: Vec<TenantId> = (0..4).map(|_| TenantId::generate()).collect();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let provider = Arc::clone(&provider);
        let tenant = tenants[i % tenants.len()];
        tasks.push(tokio::spawn(async move {
            let kek = kek();
            for _ in 0..8 {
                let wrapped = provider.wrap(tenant, 1, &kek).await.unwrap();
                assert_eq!(provider.unwrap(tenant, 1, &wrapped).await.unwrap(), kek);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Inside one provider, creators are serialised: one root per tenant version.
    let session = token_session(&config);
    for tenant in tenants {
        assert_eq!(
            labelled(&session, &tenant_root_label(tenant, 1)).len(),
            1,
            "{tenant}"
        );
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
