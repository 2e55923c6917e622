use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use phivault_audit::{Action, Outcome};
use phivault_crypto::keys::KeyStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use crate::extract::ApiJson;
use crate::{ApiError, AppState};

/// Whether the server's keys are usable.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeysView {
    /// `sealed` or `unsealed`.
    pub(crate) status: &'static str,
    /// The key provider, when unsealed.
    provider: Option<&'static str>,
    /// Whether the provider is a development one (unfit for PHI).
    development: bool,
}

pub(crate) fn keys_view(st: &AppState) -> KeysView {
    match st.keys.status() {
        KeyStatus::Sealed => KeysView {
            status: "sealed",
            provider: None,
            development: false,
        },
        KeyStatus::Unsealed {
            provider,
            development,
        } => KeysView {
            status: "unsealed",
            provider: Some(provider),
            development,
        },
    }
}

/// The passphrase of the local keyring.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnsealRequest {
    passphrase: String,
}

/// Key status: sealed or unsealed, and by which provider.
#[utoipa::path(get, path = "/api/v1/sys/keys", tag = "system", responses((status = 200, body = KeysView)))]
pub(crate) async fn keys_status(State(st): State<AppState>) -> Json<KeysView> {
    Json(keys_view(&st))
}

/// Unseals the local keyring with its passphrase. Accepted only from a loopback address
/// (the operator on the server host, as `phivault unseal` does).
#[utoipa::path(post, path = "/api/v1/sys/unseal", tag = "system", request_body = UnsealRequest,
    responses((status = 200, body = KeysView), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn unseal(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<UnsealRequest>,
) -> Result<Json<KeysView>, ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "unsealing is accepted from the server host only",
        ));
    }
    let passphrase = Zeroizing::new(body.passphrase.into_bytes());
    if st.keys.status() != KeyStatus::Sealed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_unsealed",
            "the keys are already unsealed",
        ));
    }
    let Some(unsealer) = st.unsealer.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_local",
            "this server's key provider is not unsealed by passphrase",
        ));
    };
    // One attempt at a time, each as slow as argon2id makes it, plus a pause after a
    // failure: guessing the passphrase through this endpoint stays impractical.
    let _turn = st.unseal_lock.lock().await;
    if st.keys.status() != KeyStatus::Sealed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_unsealed",
            "the keys are already unsealed",
        ));
    }
    // Key derivation is deliberately slow (argon2id), so it runs off the async workers.
    let result = tokio::task::spawn_blocking(move || unsealer(&passphrase))
        .await
        .map_err(|_| ApiError::internal())?;
    let provider = match result {
        Ok(p) => p,
        Err(_) => {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            tracing::warn!("unseal attempt with a wrong passphrase");
            record_key_event(&st, peer, Action::KeysUnsealed, Outcome::Failure).await;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "unseal_failed",
                "wrong passphrase, or the keyring is damaged",
            ));
        }
    };
    st.keys.unseal(provider);
    tracing::info!("keys unsealed by an operator on the server host");
    record_key_event(&st, peer, Action::KeysUnsealed, Outcome::Success).await;
    crate::audit::attach_signer(&st).await;
    Ok(Json(keys_view(&st)))
}

/// Seals the keys of a running server: the provider and every cached key are dropped,
/// PHI is refused until the next unseal, and checkpoints wait. An emergency stop for the
/// operator on the server host, who proves it with the keyring's passphrase (a loopback
/// peer alone is not enough: a proxy on the same host makes every client look local).
#[utoipa::path(post, path = "/api/v1/sys/seal", tag = "system", request_body = UnsealRequest,
    responses((status = 200, body = KeysView), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn seal(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<UnsealRequest>,
) -> Result<Json<KeysView>, ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "sealing is accepted from the server host only",
        ));
    }
    let passphrase = Zeroizing::new(body.passphrase.into_bytes());
    let Some(unsealer) = st.unsealer.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_local",
            "this server's key provider is not sealed by passphrase; stop the server to seal it",
        ));
    };
    if st.keys.status() == KeyStatus::Sealed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_sealed",
            "the keys are already sealed",
        ));
    }
    let _turn = st.unseal_lock.lock().await;
    let result = tokio::task::spawn_blocking(move || unsealer(&passphrase))
        .await
        .map_err(|_| ApiError::internal())?;
    if result.is_err() {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        tracing::warn!("seal attempt with a wrong passphrase");
        record_key_event(&st, peer, Action::KeysSealed, Outcome::Failure).await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "seal_failed",
            "wrong passphrase, or the keyring is damaged",
        ));
    }
    st.keys.seal();
    st.auditor.clear_signer();
    tracing::warn!("keys sealed by an operator on the server host; PHI is refused until unsealed");
    record_key_event(&st, peer, Action::KeysSealed, Outcome::Success).await;
    Ok(Json(keys_view(&st)))
}

/// What the server reports about itself for the readiness gates (keys, audit store,
/// TLS, outside services), for `phivault readiness --url` on the server host. Answered
/// to loopback peers only: it names the configuration's vendors.
#[utoipa::path(get, path = "/api/v1/sys/readiness", tag = "system",
    responses((status = 200, body = Object, description = "the platform facts"),
              (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn platform_facts(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<phivault_domain::readiness::PlatformFacts>, ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the server's readiness facts are answered to the server host only",
        ));
    }
    Ok(Json(st.platform_facts()))
}

/// Records a seal or unseal attempt on the platform chain. The keys are unsealed (or not)
/// whatever happens here; a failure to record it is logged.
async fn record_key_event(st: &AppState, peer: SocketAddr, action: Action, outcome: Outcome) {
    let event = phivault_audit::AuditEvent {
        sequence: 0,
        time: st.now(),
        tenant: None,
        actor: phivault_audit::Actor {
            kind: phivault_audit::ActorKind::Operator,
            id: "unseal-endpoint".into(),
            role: "operator".into(),
        },
        source: phivault_audit::Source {
            ip: peer.ip().to_string(),
            ..Default::default()
        },
        action,
        resource: phivault_audit::Resource {
            kind: "keyring".into(),
            id: String::new(),
        },
        fields: Vec::new(),
        outcome,
        reason: None,
        request_id: String::new(),
        before: None,
        after: None,
    };
    if let Err(e) = st.auditor.record(event).await {
        tracing::error!(error = %e, "could not record a seal or unseal attempt in the audit trail");
    }
}
