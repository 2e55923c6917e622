//! The one mapping from failures to HTTP responses.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use phivault_access::AccessError;
use phivault_crypto::CryptoError;
use phivault_domain::DomainError;
use phivault_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answer: a status, a stable machine-readable `code` and a human message that
/// never carries a submitted value or an internal detail.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for `Retry-After` (429 `throttled`).
    retry_after: Option<u64>,
}

/// The JSON body of every error.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code, e.g. `not_found`, `invalid_json`, `tenant_mismatch`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The request id, also in the `x-request-id` header and the server's log.
    pub request_id: Option<String>,
}

/// Marks a response as already carrying a rendered error, for the renderer layer.
#[derive(Clone, Debug)]
pub(crate) struct RenderedError {
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// An error with an explicit status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 `throttled`, with `Retry-After` of `wait` rounded up to whole seconds (at
    /// least one).
    pub fn throttled(wait: std::time::Duration, message: impl Into<String>) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "throttled", message)
        }
    }

    /// 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 500, for failures whose detail stays in the server log.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_string(),
            message: self.message.clone(),
            request_id: None,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response.extensions_mut().insert(RenderedError {
            code: self.code,
            message: self.message,
        });
        response
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid bearer token is required",
            ),
            AccessError::TenantMismatch { .. } => ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_mismatch",
                "the tenant in the request is not the caller's tenant",
            ),
            AccessError::Forbidden(p) => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this requires the permission {p}"),
            ),
            AccessError::Store(e) => e.into(),
            AccessError::KeysUnavailable => sealed(),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::NotFound(what) => ApiError::not_found(what),
            DomainError::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("a {what} with the same unique value exists"),
            ),
            DomainError::Invalid { field, reason } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                format!("{field} {reason}"),
            ),
            DomainError::Upload(e) => upload(e),
            DomainError::Refused { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            DomainError::Store(e) => e.into(),
            DomainError::Crypto(e) => e.into(),
        }
    }
}

fn upload(e: phivault_domain::recordings::UploadError) -> ApiError {
    use phivault_domain::recordings::UploadError as U;
    let message = e.to_string();
    match e {
        U::Empty => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "empty_audio", message),
        U::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message),
        U::ChecksumMismatch => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "checksum_mismatch",
            message,
        ),
        U::Audio(r) if r.unsupported => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, r.code, message)
        }
        U::Audio(r) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, r.code, message),
        U::Interrupted => ApiError::new(StatusCode::BAD_REQUEST, "upload_interrupted", message),
    }
}

impl From<CryptoError> for ApiError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Sealed => sealed(),
            CryptoError::KeyDestroyed => ApiError::new(
                StatusCode::GONE,
                "destroyed",
                "the record's key was destroyed (crypto-shredded); its content cannot be recovered",
            ),
            CryptoError::Store(e) => e.into(),
            other => {
                // Integrity failures and provider errors carry no key material or plaintext.
                tracing::error!(error = %other, "encryption failure");
                ApiError::internal()
            }
        }
    }
}

/// 503 while keys are sealed.
pub(crate) fn sealed() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "sealed",
        "the server's keys are sealed; an operator must unseal them before PHI can be served",
    )
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let summary = summarize(&e);
        match e {
            StoreError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "a record with the same unique value exists",
            ),
            StoreError::ForeignKey => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_reference",
                "a referenced record does not exist",
            ),
            StoreError::Constraint => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "a value was rejected",
            ),
            StoreError::Database(sqlx_err) if is_unavailable(&sqlx_err) => {
                tracing::error!(error = %summary, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; retry later",
                )
            }
            _ => {
                tracing::error!(error = %summary, "storage failure");
                ApiError::internal()
            }
        }
    }
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
    )
}

/// A description of a store failure fit for the log: kinds and SQLSTATE codes, never the
/// database's message, which can quote a submitted value.
pub(crate) fn summarize(e: &StoreError) -> String {
    match e {
        StoreError::Database(sqlx::Error::Database(db)) => {
            format!(
                "database error (code {})",
                db.code().as_deref().unwrap_or("unknown")
            )
        }
        StoreError::Database(sqlx::Error::PoolTimedOut) => "connection pool timed out".into(),
        StoreError::Database(sqlx::Error::Io(io)) => {
            format!("database i/o error ({:?})", io.kind())
        }
        StoreError::Database(sqlx::Error::ColumnDecode { index, .. }) => {
            format!("column decode error ({index})")
        }
        StoreError::Database(other) => format!("database error ({})", variant_name(other)),
        StoreError::Unscoped(why) => format!("unscoped statement refused: {why}"),
        StoreError::Object(_) => "object storage error".into(),
        other => other.to_string(),
    }
}

fn variant_name(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Configuration(_) => "configuration",
        sqlx::Error::RowNotFound => "row not found",
        sqlx::Error::Protocol(_) => "protocol",
        sqlx::Error::Tls(_) => "tls",
        sqlx::Error::PoolClosed => "pool closed",
        sqlx::Error::WorkerCrashed => "worker crashed",
        sqlx::Error::Encode(_) => "encode",
        sqlx::Error::Decode(_) => "decode",
        _ => "other",
    }
}
