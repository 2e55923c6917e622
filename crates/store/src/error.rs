use thiserror::Error;

/// Errors of the storage layer. Messages name the operation, never row content.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A uniqueness constraint refused the write.
    #[error("a record with the same unique value already exists")]
    Conflict,
    /// A referenced record does not exist in this tenant.
    #[error("a referenced record does not exist")]
    ForeignKey,
    /// A CHECK constraint refused the value.
    #[error("a value was rejected by a database constraint")]
    Constraint,
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[source] sqlx::migrate::MigrateError),
    /// Statement text that would run outside its tenant scope; a programming error.
    #[error("refused unscoped statement: {0}")]
    Unscoped(&'static str),
    /// The database URL is not one phivault supports.
    #[error("unsupported database URL scheme (expected sqlite: or postgres:)")]
    UnsupportedUrl,
    /// The PostgreSQL role the server connects as is not safe to serve with.
    #[error("unsafe database role: {0}")]
    UnsafeRole(String),
    /// The schema is older or newer than this binary.
    #[error("database schema is not at this binary's version: {0}")]
    SchemaVersion(String),
    /// Object storage failed.
    #[error("object storage error: {0}")]
    Object(#[source] object_store::Error),
    /// The object does not exist.
    #[error("object not found")]
    ObjectNotFound,
    /// Object storage is misconfigured.
    #[error("object storage configuration: {0}")]
    ObjectConfig(String),
    /// An object key that does not belong to the tenant in scope.
    #[error("object key does not belong to this tenant")]
    ObjectTenantMismatch,
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => return StoreError::Conflict,
                sqlx::error::ErrorKind::ForeignKeyViolation => return StoreError::ForeignKey,
                sqlx::error::ErrorKind::CheckViolation
                | sqlx::error::ErrorKind::NotNullViolation => {
                    return StoreError::Constraint;
                }
                _ => {}
            }
        }
        StoreError::Database(err)
    }
}

impl From<object_store::Error> for StoreError {
    fn from(err: object_store::Error) -> Self {
        match err {
            object_store::Error::NotFound { .. } => StoreError::ObjectNotFound,
            other => StoreError::Object(other),
        }
    }
}
