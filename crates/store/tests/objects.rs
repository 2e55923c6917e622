//! Object storage: keys start with the tenant id, reads of another tenant's key are
//! refused, on the local directory and on an S3-compatible server (moto on loopback,
//! started by scripts/test).

use bytes::Bytes;
use phivault_store::{ObjectKey, ObjectStorage, ObjectStoreConfig, S3Config, StoreError, TenantId};
use uuid::Uuid;

async fn contract(store: &ObjectStorage) {
    store.check().await.expect("store answers");
    let (a, b) = (TenantId::generate(), TenantId::generate());
    let id = Uuid::now_v7();
    let key = ObjectKey::new(a, "recordings", id);
    assert_eq!(key.as_str(), format!("{a}/recordings/{id}"));
    store
        .put(&key, Bytes::from_static(b"synthetic bytes"))
        .await
        .unwrap();
    assert_eq!(
        store.get(a, &key).await.unwrap(),
        Bytes::from_static(b"synthetic bytes")
    );
    assert!(matches!(
        store.get(b, &key).await,
        Err(StoreError::ObjectTenantMismatch)
    ));
    assert!(matches!(
        store.delete(b, &key).await,
        Err(StoreError::ObjectTenantMismatch)
    ));
    let listed = store.list(a).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tenant(), a);
    assert!(store.list(b).await.unwrap().is_empty());
    store.delete(a, &key).await.unwrap();
    assert!(matches!(
        store.get(a, &key).await,
        Err(StoreError::ObjectNotFound)
    ));
    assert!(ObjectKey::parse("not-a-tenant/recordings/x").is_err());
}

#[tokio::test]
async fn local_directory_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStorage::open(&ObjectStoreConfig::Local {
        root: dir.path().join("objects"),
    })
    .unwrap();
    contract(&store).await;
}

#[tokio::test]
async fn s3_compatible_store() {
    let endpoint = std::env::var("PHIVAULT_TEST_S3_ENDPOINT").expect(
        "the S3 test needs an S3-compatible server: run scripts/test (it starts moto on loopback)",
    );
    let bucket =
        std::env::var("PHIVAULT_TEST_S3_BUCKET").unwrap_or_else(|_| "phivault-test".into());
    let config = S3Config {
        bucket,
        region: "us-east-1".into(),
        endpoint: Some(endpoint),
        access_key_id: Some("test".into()),
        secret_access_key: Some("synthetic-secret-7Q".into()),
        allow_http: true,
    };
    assert!(
        !format!("{config:?}").contains("synthetic-secret-7Q"),
        "Debug shows the secret key"
    );
    let store = ObjectStorage::open(&ObjectStoreConfig::S3(config)).unwrap();
    assert!(store.describe().starts_with("s3:"));
    contract(&store).await;
}
