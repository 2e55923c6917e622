//! End-to-end encrypted sessions over HTTP (docs/e2e.md): guest device registration, the
//! session owner's routes, the join by invite, and the participants' utterance routes —
//! append, page, live stream. The server checks shapes and order and stores ciphertext;
//! it never holds a key and never decrypts.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use phivault_access::e2e::{self as access, SessionAccess};
use phivault_audit::{Action, Actor, ActorKind, Outcome};
use phivault_domain::devices::{self, Device};
use phivault_domain::e2e::{self, Mode, NewUtterance, Refusal, Utterance};
use phivault_store::{TenantId, TxMode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::audit::{Origin, RequestAudit, unavailable};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Scoped, bearer_refused, need};
use crate::throttle::{self, Endpoint};
use crate::{ApiError, AppState};

/// This module's routes.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    let s = "/api/v1/tenants/{tenant_id}/e2e/sessions";
    axum::Router::new()
        .route("/api/v1/devices/challenge", post(device_challenge))
        .route("/api/v1/devices/register", post(device_register))
        .route("/api/v1/e2e/join", post(join))
        .route(s, post(create_session))
        .route(&format!("{s}/{{session_id}}"), get(get_session))
        .route(&format!("{s}/{{session_id}}/invites"), post(create_invite))
        .route(&format!("{s}/{{session_id}}/end"), post(end_session))
        .route(
            &format!("{s}/{{session_id}}/utterances"),
            get(list_utterances).post(append_utterance),
        )
        .route(&format!("{s}/{{session_id}}/stream"), get(stream))
        .route(
            "/api/v1/tenants/{tenant_id}/settings/e2e",
            get(get_settings).put(put_settings),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    device_challenge,
    device_register,
    join,
    create_session,
    get_session,
    create_invite,
    end_session,
    append_utterance,
    list_utterances,
    stream,
    get_settings,
    put_settings
))]
struct ModuleApi;

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    <ModuleApi as utoipa::OpenApi>::openapi()
}

fn device_actor(device: Uuid) -> Actor {
    Actor {
        kind: ActorKind::Device,
        id: device.to_string(),
        role: "guest".into(),
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| {
            t.strip_prefix("Bearer ")
                .or_else(|| t.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn refused(r: Refusal) -> ApiError {
    let (status, code) = match r {
        Refusal::SingleDevice => (StatusCode::CONFLICT, "single_device_session"),
        Refusal::Ended => (StatusCode::GONE, "session_ended"),
        Refusal::InviteUnknown => (StatusCode::NOT_FOUND, "not_found"),
        Refusal::InviteUsed => (StatusCode::GONE, "invite_used"),
        Refusal::InviteExpired => (StatusCode::GONE, "invite_expired"),
        Refusal::InvalidNonce => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_nonce"),
        Refusal::CiphertextTooShort => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_ciphertext"),
        Refusal::CiphertextTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "ciphertext_too_large"),
        Refusal::UnsupportedAlgorithm => {
            (StatusCode::UNPROCESSABLE_ENTITY, "unsupported_algorithm")
        }
        Refusal::FingerprintMismatch => (StatusCode::CONFLICT, "fingerprint_mismatch"),
        Refusal::SequenceNotIncreasing => (StatusCode::CONFLICT, "sequence_not_increasing"),
    };
    let message = match r {
        Refusal::InviteUnknown => "no such invite".to_string(),
        Refusal::CiphertextTooLarge => format!(
            "the ciphertext is larger than {} bytes",
            e2e::MAX_CIPHERTEXT
        ),
        Refusal::CiphertextTooShort => {
            "the ciphertext must hold at least one byte and the 16-byte tag".to_string()
        }
        Refusal::InvalidNonce => "the nonce must be 12 bytes in base64url".to_string(),
        Refusal::UnsupportedAlgorithm => "the algorithm must be AES-256-GCM".to_string(),
        other => other.as_str().to_string(),
    };
    ApiError::new(status, code, message)
}

// --- guest devices --------------------------------------------------------------------

/// A device's public key, asking for a challenge.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChallengeRequest {
    /// The device's Ed25519 public key, 32 bytes in base64url without padding.
    public_key: String,
}

/// A challenge to sign.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChallengeView {
    /// Sign the UTF-8 bytes of `phivault-device-v1:` followed by this text.
    challenge: String,
    expires_at: DateTime<Utc>,
}

/// Issues a single-use registration challenge for a device key (5 minutes).
#[utoipa::path(post, path = "/api/v1/devices/challenge", tag = "e2e", request_body = ChallengeRequest,
    responses((status = 201, body = ChallengeView), (status = 422, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn device_challenge(
    State(st): State<AppState>,
    origin: Origin,
    ApiJson(body): ApiJson<ChallengeRequest>,
) -> Result<(StatusCode, Json<ChallengeView>), ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::DeviceChallenge).await?;
    let key = devices::parse_public_key(&body.public_key)?;
    let mut tx = st.db.begin_platform(TxMode::Write).await?;
    let (challenge, expires_at) = devices::open_challenge(&mut tx, &key, st.now()).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(ChallengeView {
            challenge,
            expires_at,
        }),
    ))
}

/// A signed challenge.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterRequest {
    /// The device's Ed25519 public key (base64url).
    public_key: String,
    /// The challenge, as issued.
    challenge: String,
    /// Ed25519 signature of `phivault-device-v1:{challenge}`, 64 bytes in base64url.
    signature: String,
}

/// How much of its trial a device has used.
#[derive(Serialize, ToSchema)]
pub(crate) struct TrialView {
    sessions_joined: i64,
    limit: i64,
}

/// A registered device and its token.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeviceView {
    /// Derived from the public key: the same key is the same device.
    device_id: Uuid,
    /// `pvd_…`, for `Authorization: Bearer` on the join and on joined sessions' routes.
    /// Shown once; registering again replaces it.
    device_token: String,
    trial: TrialView,
}

/// Registers a device (or registers it again) by its signed challenge.
#[utoipa::path(post, path = "/api/v1/devices/register", tag = "e2e", request_body = RegisterRequest,
    responses((status = 201, body = DeviceView), (status = 401, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn device_register(
    State(st): State<AppState>,
    origin: Origin,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<DeviceView>), ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::DeviceRegister).await?;
    let key = devices::parse_public_key(&body.public_key)?;
    let signature = URL_SAFE_NO_PAD
        .decode(body.signature.trim())
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "signature must be 64 bytes in base64url",
            )
        })?;
    let now = st.now();
    let mut tx = st.db.begin_platform(TxMode::Write).await?;
    let (device, token) =
        match devices::register(&mut tx, &key, body.challenge.trim(), &signature, now).await? {
            Ok(found) => found,
            Err(r) => {
                // A challenge answered with a bad signature stays used.
                tx.commit().await?;
                let id = devices::device_id(&key);
                let event = origin.event(
                    &st,
                    None,
                    device_actor(id),
                    Action::AuthFailed,
                    ("device", id.to_string()),
                    (
                        Outcome::Denied,
                        Some(match r {
                            devices::Refusal::Challenge => {
                                "device challenge unknown, used or expired"
                            }
                            devices::Refusal::Signature => "device signature does not verify",
                        }),
                    ),
                );
                st.auditor.record(event).await.map_err(unavailable)?;
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "device_proof_invalid",
                    "the challenge is unknown, used or expired, or the signature does not verify",
                ));
            }
        };
    let event = origin.event(
        &st,
        None,
        device_actor(device.id),
        Action::DeviceRegistered,
        ("device", device.id.to_string()),
        (Outcome::Success, None),
    );
    st.auditor
        .append_platform_in(&mut tx, event)
        .await
        .map_err(unavailable)?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(DeviceView {
            device_id: device.id,
            device_token: token,
            trial: TrialView {
                sessions_joined: device.sessions_joined,
                limit: st.e2e.device_trial_sessions,
            },
        }),
    ))
}

/// The authenticated guest device, from `Authorization: Bearer pvd_…`. A refusal is
/// recorded (`auth.failed`, platform chain), counted against the client address, and
/// answered 401.
pub(crate) struct DeviceAuth(Device);

impl FromRequestParts<AppState> for DeviceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).filter(|t| access::is_device_token(t));
        let result = match token {
            Some(t) => access::authenticate_device(&st.db, t).await,
            None => Err(phivault_access::AccessError::Unauthenticated),
        };
        match result {
            Ok(d) => Ok(DeviceAuth(d)),
            Err(phivault_access::AccessError::Unauthenticated) => {
                Err(bearer_refused(st, parts, token.is_some(), "device token not valid").await)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// An invite to use.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinRequest {
    /// The invite token (`pvi_…`) from the invite URL.
    token: String,
}

/// A joined session.
#[derive(Serialize, ToSchema)]
pub(crate) struct JoinedView {
    tenant_id: Uuid,
    session_id: Uuid,
    /// The device's sender id in this session (part of every utterance's associated data).
    participant_id: Uuid,
    key_fingerprint: String,
    algorithm: String,
}

/// A guest device joins a two-device session with a single-use invite. Counts against
/// the device's trial unless it had joined the session before.
#[utoipa::path(post, path = "/api/v1/e2e/join", tag = "e2e", request_body = JoinRequest,
    responses((status = 200, body = JoinedView), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 410, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn join(
    State(st): State<AppState>,
    DeviceAuth(device): DeviceAuth,
    origin: Origin,
    ApiJson(body): ApiJson<JoinRequest>,
) -> Result<Json<JoinedView>, ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::E2eJoin).await?;
    let token = body.token.trim();
    let Some(tenant) = e2e::invite_tenant(token) else {
        return Err(refused(Refusal::InviteUnknown));
    };
    // The trial session is taken first and given back on refusal: a crash in between
    // costs the device a session, never grants one.
    let mut p = st.db.begin_platform(TxMode::Write).await?;
    let taken = devices::reserve_trial(&mut p, device.id, st.e2e.device_trial_sessions).await?;
    p.commit().await?;
    if !taken {
        let event = origin.event(
            &st,
            None,
            device_actor(device.id),
            Action::AccessDenied,
            ("device", device.id.to_string()),
            (Outcome::Denied, Some("device trial used up")),
        );
        st.auditor.record(event).await.map_err(unavailable)?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "device_trial_exhausted",
            "this device has joined as many sessions as its trial allows",
        ));
    }
    let now = st.now();
    let scope = access::device_scope(&device, tenant);
    let mut tx = scope.begin(&st.db, TxMode::Write).await?;
    let outcome = e2e::consume_invite(&mut tx, token, device.id, now).await;
    let (session, participant, new) = match outcome {
        Ok(Ok(joined)) => joined,
        refused_or_failed => {
            drop(tx);
            let mut p = st.db.begin_platform(TxMode::Write).await?;
            devices::release_trial(&mut p, device.id).await?;
            p.commit().await?;
            let r = refused_or_failed
                .map_err(ApiError::from)?
                .err()
                .unwrap_or(Refusal::InviteUnknown);
            // A refusal of a real invite goes into its tenant's chain; an unknown one
            // onto the platform chain, so a device cannot write into a tenant's trail
            // with made-up tokens.
            let chain = (r != Refusal::InviteUnknown).then_some(tenant);
            let event = origin.event(
                &st,
                chain,
                device_actor(device.id),
                Action::E2eInviteConsumed,
                ("e2e_invite", String::new()),
                (Outcome::Denied, Some(r.as_str())),
            );
            st.auditor.record(event).await.map_err(unavailable)?;
            return Err(refused(r));
        }
    };
    let event = origin.event(
        &st,
        Some(tenant),
        device_actor(device.id),
        Action::E2eInviteConsumed,
        ("e2e_session", session.id.to_string()),
        (Outcome::Success, None),
    );
    st.auditor
        .append_in(&mut tx, event)
        .await
        .map_err(unavailable)?;
    tx.commit().await?;
    if !new {
        let mut p = st.db.begin_platform(TxMode::Write).await?;
        devices::release_trial(&mut p, device.id).await?;
        p.commit().await?;
    }
    Ok(Json(JoinedView {
        tenant_id: tenant.as_uuid(),
        session_id: session.id,
        participant_id: participant.id,
        key_fingerprint: session.key_fingerprint,
        algorithm: session.algorithm,
    }))
}

// --- the owner's routes ---------------------------------------------------------------

/// A new session.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSession {
    /// `single_device` or `two_device`.
    mode: String,
    /// Lower-case hex of SHA-256(SHA-256(key)), 64 characters.
    key_fingerprint: String,
}

/// A session.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionView {
    id: Uuid,
    mode: &'static str,
    key_fingerprint: String,
    algorithm: String,
    /// `open` or `ended`.
    status: &'static str,
    created_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    /// The caller's sender id in this session.
    participant_id: Uuid,
}

fn session_view(s: &e2e::Session, participant: Uuid) -> SessionView {
    SessionView {
        id: s.id,
        mode: s.mode.as_str(),
        key_fingerprint: s.key_fingerprint.clone(),
        algorithm: s.algorithm.clone(),
        status: if s.ended_at.is_some() {
            "ended"
        } else {
            "open"
        },
        created_at: s.created_at,
        ended_at: s.ended_at,
        participant_id: participant,
    }
}

/// Creates a session owned by the caller (`dictation:create`). The server gets the key's
/// fingerprint, never the key.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/e2e/sessions", tag = "e2e",
    params(("tenant_id" = Uuid, Path)), request_body = CreateSession,
    responses((status = 201, body = SessionView), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create_session(
    State(st): State<AppState>,
    s: Scoped<need::DictationCreate>,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    s.audit.require();
    let mode = Mode::parse(&body.mode).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "mode must be single_device or two_device",
        )
    })?;
    let phivault_access::Actor::User(owner) = s.scope.actor() else {
        return Err(ApiError::internal());
    };
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let (session, participant) =
        e2e::create(&mut tx, owner, mode, &body.key_fingerprint, st.now()).await?;
    let event = s.audit.event(
        &st,
        Action::E2eSessionCreated,
        "e2e_session",
        session.id,
        &[],
    );
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(session_view(&session, participant.id)),
    ))
}

#[derive(Deserialize)]
struct SessionPath {
    tenant_id: TenantId,
    session_id: Uuid,
}

/// A participant of the session named by the path: the owner (a tenant user with
/// `dictation:create`) or a guest device that joined it. Anyone else — another user of
/// the tenant, another tenant, another device — gets 404, as for a session that does not
/// exist. The route must write its event before it answers.
pub(crate) struct Participating {
    access: SessionAccess,
    audit: RequestAudit,
}

impl FromRequestParts<AppState> for Participating {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let is_device = bearer(parts).is_some_and(access::is_device_token);
        let (scope, audit) = if is_device {
            let DeviceAuth(device) = DeviceAuth::from_request_parts(parts, st).await?;
            let ApiPath(path) = ApiPath::<SessionPath>::from_request_parts(parts, st).await?;
            let scope = access::device_scope(&device, path.tenant_id);
            let audit = RequestAudit::new(parts, path.tenant_id, device_actor(device.id));
            (scope, audit)
        } else {
            let s = Scoped::<need::DictationCreate>::from_request_parts(parts, st).await?;
            (s.scope, s.audit)
        };
        let ApiPath(path) = ApiPath::<SessionPath>::from_request_parts(parts, st).await?;
        let Some(access) = access::participate(&st.db, &scope, path.session_id).await? else {
            return Err(ApiError::not_found("session"));
        };
        audit.require();
        Ok(Participating { access, audit })
    }
}

/// One session (any participant).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}", tag = "e2e",
    params(("tenant_id" = Uuid, Path), ("session_id" = Uuid, Path)),
    responses((status = 200, body = SessionView), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_session(
    State(st): State<AppState>,
    p: Participating,
) -> Result<Json<SessionView>, ApiError> {
    let session = p.access.session();
    let event = p.audit.event(
        &st,
        Action::E2eUtteranceRead,
        "e2e_session",
        session.id,
        &["metadata"],
    );
    p.audit.record(&st, vec![event]).await?;
    Ok(Json(session_view(session, p.access.participant().id)))
}

fn owner_only(p: &Participating) -> Result<(), ApiError> {
    if p.access.is_owner() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_session_owner",
            "only the session's owner may do this",
        ))
    }
}

/// A new invite.
#[derive(Serialize, ToSchema)]
pub(crate) struct InviteView {
    /// `pvi_…`, single use; shown once.
    token: String,
    expires_at: DateTime<Utc>,
    /// `/join?token=…`; the inviting client appends `#secret=<key>`.
    join_path: String,
}

/// Invites a second device into a two-device session (the owner). Valid 15 minutes, once.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}/invites", tag = "e2e",
    params(("tenant_id" = Uuid, Path), ("session_id" = Uuid, Path)),
    responses((status = 201, body = InviteView), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 410, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create_invite(
    State(st): State<AppState>,
    p: Participating,
) -> Result<(StatusCode, Json<InviteView>), ApiError> {
    owner_only(&p)?;
    let mut tx = p.access.scope().begin(&st.db, TxMode::Write).await?;
    let (token, expires_at) = e2e::create_invite(&mut tx, p.access.session(), st.now())
        .await?
        .map_err(refused)?;
    let event = p.audit.event(
        &st,
        Action::E2eInviteCreated,
        "e2e_invite",
        p.access.session().id,
        &["invite"],
    );
    p.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(InviteView {
            join_path: format!("/join?token={token}"),
            token,
            expires_at,
        }),
    ))
}

/// Ends a session (the owner): deletes every utterance at once.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}/end", tag = "e2e",
    params(("tenant_id" = Uuid, Path), ("session_id" = Uuid, Path)),
    responses((status = 200, body = SessionView), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 410, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn end_session(
    State(st): State<AppState>,
    p: Participating,
) -> Result<Json<SessionView>, ApiError> {
    owner_only(&p)?;
    let now = st.now();
    let id = p.access.session().id;
    let mut tx = p.access.scope().begin(&st.db, TxMode::Write).await?;
    let deleted = e2e::end(&mut tx, id, now).await?.map_err(refused)?;
    let mut event = p
        .audit
        .event(&st, Action::E2eSessionEnded, "e2e_session", id, &[]);
    event.reason = Some(format!("{deleted} utterances deleted"));
    p.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    st.e2e_hub.wake(id);
    let session = e2e::Session {
        ended_at: Some(now),
        ..p.access.session().clone()
    };
    Ok(Json(session_view(&session, p.access.participant().id)))
}

// --- utterances -------------------------------------------------------------------------

/// An utterance as a device encrypted it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendUtterance {
    /// The sender's sequence, strictly increasing from 1.
    sequence: i64,
    /// 12 bytes, base64url without padding.
    nonce: String,
    /// AES-GCM ciphertext and tag, base64url without padding.
    ciphertext: String,
    /// Must be the session's.
    key_fingerprint: String,
    /// Must be `AES-256-GCM`.
    algorithm: String,
}

/// A stored utterance, as receipt.
#[derive(Serialize, ToSchema)]
pub(crate) struct StoredView {
    id: Uuid,
    position: i64,
    sender: Uuid,
    sequence: i64,
    created_at: DateTime<Utc>,
}

/// The longest base64url text (no padding) of at most `bytes` bytes.
const fn encoded_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

/// Stores one utterance of the caller after checking its shape and order; never
/// decrypts.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}/utterances", tag = "e2e",
    params(("tenant_id" = Uuid, Path), ("session_id" = Uuid, Path)), request_body = AppendUtterance,
    responses((status = 201, body = StoredView), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 410, body = crate::error::ErrorBody),
              (status = 413, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn append_utterance(
    State(st): State<AppState>,
    p: Participating,
    ApiJson(body): ApiJson<AppendUtterance>,
) -> Result<(StatusCode, Json<StoredView>), ApiError> {
    // Oversize text is refused before it is decoded.
    let nonce = Some(&body.nonce)
        .filter(|n| n.len() <= encoded_len(e2e::NONCE_LEN))
        .and_then(|n| URL_SAFE_NO_PAD.decode(n).ok())
        .ok_or(refused(Refusal::InvalidNonce))?;
    if body.ciphertext.len() > encoded_len(e2e::MAX_CIPHERTEXT) {
        return Err(refused(Refusal::CiphertextTooLarge));
    }
    let ciphertext = URL_SAFE_NO_PAD.decode(&body.ciphertext).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_ciphertext",
            "the ciphertext must be base64url without padding",
        )
    })?;
    let u = NewUtterance {
        sequence: body.sequence,
        nonce,
        ciphertext,
        key_fingerprint: body.key_fingerprint,
        algorithm: body.algorithm,
    };
    // Shape, order and an open session are checked by the append itself, in the writer.
    let session = p.access.session();
    let event = p.audit.event(
        &st,
        Action::E2eUtteranceStored,
        "e2e_utterance",
        "",
        &["ciphertext"],
    );
    let stored = st
        .e2e_writer
        .append(crate::e2e_writer::AppendJob {
            scope: p.access.scope().clone(),
            session: session.clone(),
            sender: p.access.participant().id,
            utterance: u,
            event,
            now: st.now(),
        })
        .await?
        .map_err(refused)?;
    p.audit.committed_elsewhere();
    st.e2e_hub.wake(session.id);
    Ok((
        StatusCode::CREATED,
        Json(StoredView {
            id: stored.id,
            position: stored.position,
            sender: stored.sender,
            sequence: stored.sequence,
            created_at: stored.created_at,
        }),
    ))
}

/// A stored utterance, as participants read it.
#[derive(Serialize, ToSchema)]
pub(crate) struct UtteranceView {
    id: Uuid,
    position: i64,
    sender: Uuid,
    sequence: i64,
    /// base64url, 12 bytes.
    nonce: String,
    /// base64url.
    ciphertext: String,
    key_fingerprint: String,
    algorithm: String,
    created_at: DateTime<Utc>,
}

impl From<Utterance> for UtteranceView {
    fn from(u: Utterance) -> Self {
        UtteranceView {
            id: u.id,
            position: u.position,
            sender: u.sender,
            sequence: u.sequence,
            nonce: URL_SAFE_NO_PAD.encode(&u.nonce),
            ciphertext: URL_SAFE_NO_PAD.encode(&u.ciphertext),
            key_fingerprint: u.key_fingerprint,
            algorithm: u.algorithm,
            created_at: u.created_at,
        }
    }
}

/// Paging of utterances.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct UtteranceQuery {
    /// Only utterances after this position (default 0: from the start).
    after: Option<i64>,
    /// Items per page, 1 to 500 (default 100).
    limit: Option<u32>,
}

/// A page of utterances.
#[derive(Serialize, ToSchema)]
pub(crate) struct UtterancePage {
    items: Vec<UtteranceView>,
    /// The `after` of the next page, or null at the end.
    next_after: Option<i64>,
}

/// Utterances of the session in server order (any participant).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}/utterances", tag = "e2e",
    params(("tenant_id" = Uuid, Path), ("session_id" = Uuid, Path), UtteranceQuery),
    responses((status = 200, body = UtterancePage), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_utterances(
    State(st): State<AppState>,
    p: Participating,
    ApiQuery(q): ApiQuery<UtteranceQuery>,
) -> Result<Json<UtterancePage>, ApiError> {
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=500) => n,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "limit must be between 1 and 500",
            ));
        }
    };
    let after = q.after.unwrap_or(0).max(0);
    let id = p.access.session().id;
    let mut tx = p.access.scope().begin(&st.db, TxMode::Read).await?;
    let items = e2e::page(&mut tx, id, after, limit).await?;
    tx.commit().await?;
    let event = p.audit.event(
        &st,
        Action::E2eUtteranceRead,
        "e2e_session",
        id,
        &["ciphertext"],
    );
    p.audit.record(&st, vec![event]).await?;
    let next_after = (items.len() == limit as usize).then(|| items.last().map(|u| u.position));
    Ok(Json(UtterancePage {
        next_after: next_after.flatten(),
        items: items.into_iter().map(UtteranceView::from).collect(),
    }))
}

/// Where a stream resumes.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamQuery {
    /// Start after this position (default 0).
    after: Option<i64>,
}

/// How often a stream looks again without a wake-up (utterances stored by another
/// server process).
const STREAM_POLL: Duration = Duration::from_secs(2);

/// Utterances as server-sent events: the stored ones after `after`, then live ones, until
/// the session ends (`event: end`).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}/stream", tag = "e2e",
    params(("tenant_id" = Uuid, Path), ("session_id" = Uuid, Path), StreamQuery),
    responses((status = 200, description = "text/event-stream of utterances"),
              (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn stream(
    State(st): State<AppState>,
    p: Participating,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = p.access.session().id;
    let event = p.audit.event(
        &st,
        Action::E2eUtteranceRead,
        "e2e_session",
        id,
        &["ciphertext", "stream"],
    );
    p.audit.record(&st, vec![event]).await?;
    let state = Tail {
        wake: st.e2e_hub.subscribe(),
        st,
        scope: p.access.scope().clone(),
        session: id,
        last: q.after.unwrap_or(0).max(0),
        queue: std::collections::VecDeque::new(),
        looked: false,
        finished: false,
    };
    let events = futures::stream::unfold(state, |mut t| async move {
        let event = t.next().await?;
        Some((Ok(event), t))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A live stream's state: the last position sent and events waiting to go.
struct Tail {
    st: AppState,
    scope: phivault_access::TenantScope,
    session: Uuid,
    wake: tokio::sync::broadcast::Receiver<Uuid>,
    last: i64,
    queue: std::collections::VecDeque<Event>,
    looked: bool,
    finished: bool,
}

impl Tail {
    /// The next event, or `None` when the session has ended (or storage failed, which
    /// ends the stream; the client resumes with `after`).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.finished {
                return None;
            }
            if self.looked {
                // Wait for a wake-up of this session; a lagged channel or the poll
                // interval also means look again.
                let deadline = tokio::time::Instant::now() + STREAM_POLL;
                loop {
                    match tokio::time::timeout_at(deadline, self.wake.recv()).await {
                        Ok(Ok(id)) if id != self.session => continue,
                        _ => break,
                    }
                }
            }
            self.looked = true;
            let mut tx = self.scope.begin(&self.st.db, TxMode::Read).await.ok()?;
            let page = e2e::page(&mut tx, self.session, self.last, 100)
                .await
                .ok()?;
            let current = e2e::get(&mut tx, self.session).await.ok()?;
            tx.commit().await.ok()?;
            let full = page.len() == 100;
            for u in page {
                self.last = u.position;
                let data = serde_json::to_string(&UtteranceView::from(u)).ok()?;
                self.queue.push_back(
                    Event::default()
                        .event("utterance")
                        .id(self.last.to_string())
                        .data(data),
                );
            }
            if full {
                // More are stored: the next round must not wait.
                self.looked = false;
            } else if current.is_none_or(|s| s.ended_at.is_some()) {
                self.queue
                    .push_back(Event::default().event("end").data("{}"));
                self.finished = true;
            }
        }
    }
}

// --- the tenant's settings ------------------------------------------------------------

/// The tenant's end-to-end settings.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct E2eSettingsView {
    /// Utterances older than this are deleted by the retention sweeper, 1 to 8760 hours
    /// (default 24).
    e2e_retention_hours: i64,
}

/// The tenant's end-to-end settings.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/settings/e2e", tag = "e2e",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = E2eSettingsView), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_settings(
    State(st): State<AppState>,
    s: Scoped<need::UserRead>,
) -> Result<Json<E2eSettingsView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let hours = e2e::retention_hours(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(E2eSettingsView {
        e2e_retention_hours: hours,
    }))
}

/// Sets the tenant's retention window for utterances; audited with before and after.
/// The next sweep applies it.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/settings/e2e", tag = "e2e",
    params(("tenant_id" = Uuid, Path)), request_body = E2eSettingsView,
    responses((status = 200, body = E2eSettingsView), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_settings(
    State(st): State<AppState>,
    s: Scoped<need::TenantManage>,
    ApiJson(body): ApiJson<E2eSettingsView>,
) -> Result<Json<E2eSettingsView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let before = e2e::retention_hours(&mut tx).await?;
    e2e::set_retention_hours(&mut tx, body.e2e_retention_hours, st.now()).await?;
    let mut event = s.audit.event(
        &st,
        Action::AdminReferenceUpdated,
        "e2e_retention",
        s.scope.tenant(),
        &["e2e_retention_hours"],
    );
    event.before = Some(serde_json::json!({ "e2e_retention_hours": before }));
    event.after = Some(serde_json::json!({ "e2e_retention_hours": body.e2e_retention_hours }));
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(Json(body))
}
