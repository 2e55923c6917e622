//! Extractors whose rejections are phivault errors that never echo input.

use std::marker::PhantomData;

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use bytes::Bytes;
use phivault_access::{Permission, Principal, TenantScope};
use phivault_audit::Action;
use phivault_crypto::keys::KeyStatus;
use phivault_store::TenantId;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::audit::{RequestAudit, record_refusal, user_actor};
use crate::{ApiError, AppState};

/// A JSON body. Rejections say what kind of problem, where (line and column, or the
/// schema path of a known field), never the submitted value.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(ApiJson)
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than allowed",
        )
    } else {
        ApiError::bad_request("body_unreadable", "the request body could not be read")
    }
}

/// Parses `bytes` as one JSON value of type `T`, with an input-free error message.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty; a JSON object is required",
        ));
    }
    // Every request body is an object; serde would also take a struct's fields as a
    // positional array, an undocumented second format.
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first == Some(&b'[') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the request body must be a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "unexpected data after the JSON value (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    Ok(value)
}

fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let inner = err.inner();
    let (line, column) = (inner.line(), inner.column());
    match inner.classify() {
        Category::Syntax => ApiError::bad_request(
            "invalid_json",
            format!("the request body is not valid JSON (line {line}, column {column})"),
        ),
        Category::Eof => ApiError::bad_request(
            "invalid_json",
            "the request body ends before the JSON value is complete",
        ),
        Category::Io => ApiError::bad_request("invalid_json", "the request body could not be read"),
        Category::Data => {
            // serde's own message quotes the offending value, so only its kind is kept.
            // Path segments are names of known fields: every request type denies unknown
            // fields, so an unknown key fails before a path through it is recorded.
            let text = inner.to_string();
            let path = err.path().to_string();
            let at = if path == "." {
                "the request body".to_string()
            } else {
                format!("field `{path}`")
            };
            let message = if let Some(field) = text
                .strip_prefix("missing field `")
                .and_then(|t| t.split('`').next())
            {
                let full = if path == "." {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
                format!("missing required field `{full}`")
            } else if text.starts_with("unknown field") {
                let parent = path
                    .rsplit_once('.')
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_default();
                if parent.is_empty() || path == "." {
                    "the request body has a field this endpoint does not accept".to_string()
                } else {
                    format!("field `{parent}` has a field this endpoint does not accept")
                }
            } else if text.starts_with("invalid type") {
                format!("{at} has the wrong type")
            } else if text.starts_with("invalid length") {
                format!("{at} has the wrong number of items")
            } else if text.starts_with("duplicate field") {
                format!("{at} repeats a field")
            } else {
                format!("{at} has a value that is not allowed")
            };
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
        }
    }
}

/// Path parameters; a malformed one is a 400 that does not quote it.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|_| {
                ApiError::bad_request("invalid_path", "a path parameter is not a valid identifier")
            })
    }
}

/// Query parameters; a malformed one is a 400 that does not quote it.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    "a query parameter is missing, unknown or malformed",
                )
            })
    }
}

/// The authenticated caller, from `Authorization: Bearer <token>`.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|t| {
                t.strip_prefix("Bearer ")
                    .or_else(|| t.strip_prefix("bearer "))
            });
        let result = match token {
            Some(token) => {
                phivault_access::authenticate(&state.db, &state.sessions, token.trim(), state.now())
                    .await
            }
            None => Err(phivault_access::AccessError::Unauthenticated),
        };
        match result {
            Ok(principal) => Ok(Auth(principal)),
            Err(phivault_access::AccessError::Unauthenticated) => {
                Err(bearer_refused(state, parts, token.is_some(), "bearer token not valid").await)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Records a refused bearer credential on the platform chain (an unknown caller has no
/// tenant; neither the token nor the path is recorded, the route template names what was
/// knocked on) and answers 401 — or 429 `throttled` once the client address has failed
/// too often. A missing token is not counted: it guesses nothing and costs no lookup.
pub(crate) async fn bearer_refused(
    state: &AppState,
    parts: &Parts,
    presented: bool,
    why: &str,
) -> ApiError {
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let throttled = if presented {
        let ip = crate::audit::source_of(parts).ip.parse().ok();
        state.throttle.bearer_failure(ip).err()
    } else {
        None
    };
    let reason = if throttled.is_some() {
        "throttled"
    } else if presented {
        why
    } else {
        "no bearer token"
    };
    record_refusal(
        state,
        parts,
        None,
        phivault_audit::Actor {
            kind: phivault_audit::ActorKind::Anonymous,
            id: String::new(),
            role: String::new(),
        },
        Action::AuthFailed,
        ("route", route),
        reason,
    )
    .await;
    match throttled {
        Some(wait) => crate::throttle::throttled(wait),
        None => phivault_access::AccessError::Unauthenticated.into(),
    }
}

/// A permission a route requires, as a type, so the route's extractor names it.
pub trait Requires: Send + Sync + 'static {
    /// The permission.
    const PERMISSION: Permission;
    /// Whether the route touches PHI (and so is refused while keys are sealed).
    const PHI: bool;
}

macro_rules! requirement {
    ($($name:ident => $phi:expr),* $(,)?) => {$(
        #[doc = concat!("Requires `Permission::", stringify!($name), "`.")]
        pub struct $name;
        impl Requires for $name {
            const PERMISSION: Permission = Permission::$name;
            const PHI: bool = $phi;
        }
    )*};
}

/// Route requirements.
pub mod need {
    use super::{Permission, Requires};
    requirement!(
        PracticeRead => false,
        PracticeManage => false,
        PatientRead => true,
        PatientWrite => true,
        EncounterRead => true,
        EncounterWrite => true,
        UserRead => false,
        UserManage => false,
        AuditView => false,
        TenantManage => false,
        DictationCreate => false,
        ManageTemplates => false,
        SecurityViewReadiness => false,
        SecurityManagePhiGates => false,
    );

    /// Requires `dictation:review_own` on a route that changes a note (PHI).
    pub struct NoteReview;
    impl Requires for NoteReview {
        const PERMISSION: Permission = Permission::DictationReviewOwn;
        const PHI: bool = true;
    }

    /// Requires `dictation:create` on a route that handles readable PHI (consent and
    /// recordings), unlike end-to-end sessions whose content the server cannot read.
    pub struct RecordingCreate;
    impl Requires for RecordingCreate {
        const PERMISSION: Permission = Permission::DictationCreate;
        const PHI: bool = true;
    }
}

#[derive(Deserialize)]
struct TenantPath {
    tenant_id: TenantId,
}

/// An authenticated caller, authorized for permission `R` in the tenant named by the
/// `{tenant_id}` path segment. Runs before the body is read. A refusal is audited
/// (`access.denied`); a PHI route is marked so that it cannot answer unaudited.
pub struct Scoped<R: Requires> {
    /// The scope to act in.
    pub scope: TenantScope,
    /// The caller.
    pub principal: Principal,
    /// Writes this request's audit events.
    pub(crate) audit: RequestAudit,
    _requires: PhantomData<R>,
}

impl<R: Requires> FromRequestParts<AppState> for Scoped<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        let ApiPath(path) = ApiPath::<TenantPath>::from_request_parts(parts, state).await?;
        let actor = user_actor(&principal);
        let scope = match phivault_access::authorize(&principal, path.tenant_id, R::PERMISSION) {
            Ok(scope) => scope,
            Err(e) => {
                // Recorded in the caller's own chain: a user of one tenant cannot write
                // into another's trail by knocking on its door.
                let route = parts
                    .extensions
                    .get::<MatchedPath>()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                let reason = match &e {
                    phivault_access::AccessError::TenantMismatch { .. } => {
                        format!("tenant mismatch: asked for tenant {}", path.tenant_id)
                    }
                    _ => format!("missing permission {}", R::PERMISSION),
                };
                record_refusal(
                    state,
                    parts,
                    Some(principal.tenant()),
                    actor,
                    Action::AccessDenied,
                    ("route", route),
                    &reason,
                )
                .await;
                return Err(e.into());
            }
        };
        if R::PHI && state.keys.status() == KeyStatus::Sealed {
            return Err(crate::error::sealed());
        }
        if R::PHI {
            crate::readiness::require_phi_open(state, parts, scope.tenant(), actor.clone()).await?;
        }
        let audit = RequestAudit::new(parts, scope.tenant(), actor);
        if R::PHI {
            audit.require();
        }
        Ok(Scoped {
            scope,
            principal,
            audit,
            _requires: PhantomData,
        })
    }
}
