//! Object storage through the `object_store` crate: a local directory by default, or an
//! S3-compatible bucket. Every key starts with the tenant id, and reads check that the
//! key belongs to the tenant asking.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Deserialize;
use uuid::Uuid;

use crate::{Result, StoreError, TenantId};

/// Where objects live.
#[derive(Clone, Debug)]
pub enum ObjectStoreConfig {
    /// A directory on local disk (the embedded default).
    Local {
        /// The directory; created if missing.
        root: PathBuf,
    },
    /// An S3-compatible bucket.
    S3(S3Config),
}

impl ObjectStoreConfig {
    /// Opens the bare `object_store` behind this configuration, for callers that keep
    /// their own key layout (the audit witness).
    pub fn open_store(&self) -> Result<Arc<dyn ObjectStore>> {
        match self {
            ObjectStoreConfig::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    StoreError::ObjectConfig(format!("cannot create {}: {e}", root.display()))
                })?;
                // fsync: an object's database row commits durably (SQLite synchronous=FULL),
                // so its bytes must be on disk before the row can say they are stored, as
                // a remote store guarantees; and automatic cleanup removes the directories
                // that deletions empty.
                Ok(Arc::new(
                    LocalFileSystem::new_with_prefix(root)?
                        .with_fsync(true)
                        .with_automatic_cleanup(true),
                ))
            }
            ObjectStoreConfig::S3(s3) => {
                if s3.bucket.is_empty() {
                    return Err(StoreError::ObjectConfig("s3.bucket is required".into()));
                }
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(id) = &s3.access_key_id {
                    builder = builder.with_access_key_id(id);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                Ok(Arc::new(builder.build()?))
            }
        }
    }

    /// A short description for logs (`local:/path` or `s3:bucket`), with no secrets.
    pub fn describe(&self) -> String {
        match self {
            ObjectStoreConfig::Local { root } => format!("local:{}", root.display()),
            ObjectStoreConfig::S3(s3) => format!("s3:{}", s3.bucket),
        }
    }
}

/// Settings of an S3-compatible bucket.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Region, e.g. `us-east-1`.
    #[serde(default = "default_region")]
    pub region: String,
    /// Endpoint of an S3-compatible service; AWS when unset.
    pub endpoint: Option<String>,
    /// Access key id; from the environment's usual AWS sources when unset.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints (loopback test servers only).
    #[serde(default)]
    pub allow_http: bool,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "[set]"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "[redacted]"),
            )
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// The key of one object: `{tenant_id}/{kind}/{id}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectKey {
    tenant: TenantId,
    path: ObjectPath,
}

impl ObjectKey {
    /// Builds the key of object `id` of `kind` (lower-case letters and `_`) for `tenant`.
    ///
    /// # Panics
    /// If `kind` is not lower-case ASCII letters and `_`: kinds are constants in code.
    pub fn new(tenant: TenantId, kind: &'static str, id: Uuid) -> Self {
        assert!(
            !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "object kind must be lower-case letters and _"
        );
        ObjectKey {
            tenant,
            path: ObjectPath::from(format!("{tenant}/{kind}/{id}")),
        }
    }

    /// Parses a stored key, checking that it starts with a tenant id.
    pub fn parse(key: &str) -> Result<Self> {
        let tenant = key
            .split('/')
            .next()
            .and_then(|t| t.parse::<TenantId>().ok())
            .ok_or_else(|| {
                StoreError::ObjectConfig("object key does not start with a tenant id".into())
            })?;
        let path = ObjectPath::parse(key)
            .map_err(|_| StoreError::ObjectConfig("malformed object key".into()))?;
        Ok(ObjectKey { tenant, path })
    }

    /// The tenant the object belongs to.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        self.path.as_ref()
    }
}

/// Object storage handle. Cheap to clone.
#[derive(Clone)]
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl ObjectStorage {
    /// Opens the configured store (creating a local root directory if needed).
    pub fn open(config: &ObjectStoreConfig) -> Result<Self> {
        Ok(ObjectStorage {
            store: config.open_store()?,
            description: config.describe(),
        })
    }

    /// A short description for logs (`local:/path` or `s3:bucket`), with no secrets.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Writes an object.
    pub async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<()> {
        self.store
            .put(&key.path, PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }

    /// A writer for a large object, uploaded in parts as it is written (never held
    /// whole): the object appears only when [`ObjectWriter::finish`] succeeds, and
    /// [`ObjectWriter::abort`] discards what was staged.
    pub fn writer(&self, key: &ObjectKey) -> ObjectWriter {
        ObjectWriter {
            // Two parts in flight keep S3 busy while the next fills; more only adds
            // memory (each is WRITE_BUFFER), and local writes gain nothing from it.
            inner: BufWriter::with_capacity(
                Arc::clone(&self.store),
                key.path.clone(),
                WRITE_BUFFER,
            )
            .with_max_concurrency(2),
        }
    }

    /// Reads a large object of `tenant` as a stream, without holding it whole.
    pub async fn reader(
        &self,
        tenant: TenantId,
        key: &ObjectKey,
    ) -> Result<impl tokio::io::AsyncRead + Send + Unpin + use<>> {
        check_tenant(tenant, key)?;
        let stream = self
            .store
            .get(&key.path)
            .await?
            .into_stream()
            .map_err(std::io::Error::other);
        Ok(tokio_util::io::StreamReader::new(stream))
    }

    /// Whether an object exists.
    pub async fn exists(&self, tenant: TenantId, key: &ObjectKey) -> Result<bool> {
        check_tenant(tenant, key)?;
        match self.store.head(&key.path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(StoreError::Object(e)),
        }
    }

    /// Reads an object of `tenant`; a key of another tenant is refused before any I/O.
    pub async fn get(&self, tenant: TenantId, key: &ObjectKey) -> Result<Bytes> {
        check_tenant(tenant, key)?;
        Ok(self.store.get(&key.path).await?.bytes().await?)
    }

    /// Deletes an object of `tenant`.
    pub async fn delete(&self, tenant: TenantId, key: &ObjectKey) -> Result<()> {
        check_tenant(tenant, key)?;
        self.store.delete(&key.path).await?;
        Ok(())
    }

    /// Lists every object of `tenant`.
    pub async fn list(&self, tenant: TenantId) -> Result<Vec<ObjectKey>> {
        let prefix = ObjectPath::from(tenant.to_string());
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        metas
            .into_iter()
            .map(|m| ObjectKey::parse(m.location.as_ref()))
            .collect()
    }

    /// Checks that the store answers: a HEAD of a key that cannot exist must say "not
    /// found", nothing else.
    pub async fn check(&self) -> Result<()> {
        match self
            .store
            .head(&ObjectPath::from("_phivault/readiness-probe"))
            .await
        {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::Object(e)),
        }
    }
}

/// Bytes buffered before a part is sent: S3's minimum part size, so memory per upload
/// stays a few MiB whatever the object's size.
const WRITE_BUFFER: usize = 5 * 1024 * 1024;

/// A streaming object upload (see [`ObjectStorage::writer`]). Implements tokio's
/// `AsyncWrite`; `shutdown` (or [`ObjectWriter::finish`]) completes the object.
pub struct ObjectWriter {
    inner: BufWriter,
}

impl ObjectWriter {
    /// Completes the upload: the object becomes visible.
    pub async fn finish(&mut self) -> Result<()> {
        tokio::io::AsyncWriteExt::shutdown(&mut self.inner)
            .await
            .map_err(|e| StoreError::ObjectConfig(format!("object upload failed: {e}")))
    }

    /// Discards everything staged; the object never appears.
    pub async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await?;
        Ok(())
    }
}

impl tokio::io::AsyncWrite for ObjectWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn check_tenant(tenant: TenantId, key: &ObjectKey) -> Result<()> {
    if key.tenant == tenant {
        Ok(())
    } else {
        Err(StoreError::ObjectTenantMismatch)
    }
}
