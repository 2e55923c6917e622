use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

/// Liveness answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok` while the process serves.
    status: &'static str,
}

/// Readiness answer: each dependency and whether it answered.
#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// `ok` or `unavailable`.
    database: &'static str,
    /// `ok` or `unavailable`.
    object_storage: &'static str,
    /// `unsealed` or `sealed` (a sealed server cannot serve PHI).
    keys: &'static str,
    /// `ok` or `unavailable`: whether the audit trail can be written (PHI routes refuse
    /// to answer while it cannot).
    audit: &'static str,
    /// `signing` or `waiting_for_keys`: whether checkpoints can be signed.
    audit_checkpoints: &'static str,
    /// The transcription engine of this process's pipeline worker (`whisper`,
    /// `pocketsphinx`, …); null when no worker runs here.
    transcription_engine: Option<String>,
    /// Its model (for whisper, `<name> sha256:<model.bin hash>`); null when no worker
    /// runs here.
    transcription_model: Option<String>,
}

/// Liveness: the process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database and object storage answer, the keys are unsealed and the
/// audit trail can be written.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub(crate) async fn readyz(State(st): State<AppState>) -> Response {
    let db_ok = st.db.ping().await.is_ok();
    let obj_ok = st.objects.check().await.is_ok();
    let keys = super::keys_view(&st).status;
    let audit_ok = st.auditor.probe().await.is_ok();
    let ready = db_ok && obj_ok && keys == "unsealed" && audit_ok;
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (
        status,
        Json(Readiness {
            status: if ready { "ready" } else { "not_ready" },
            database: word(db_ok),
            object_storage: word(obj_ok),
            keys,
            audit: word(audit_ok),
            audit_checkpoints: if st.auditor.has_signer() {
                "signing"
            } else {
                "waiting_for_keys"
            },
            transcription_engine: st.transcription.as_ref().map(|t| t.engine.clone()),
            transcription_model: st.transcription.as_ref().map(|t| t.model.clone()),
        }),
    )
        .into_response();
    // The 503 body is the report of what is not ready, not an error to re-render.
    response.extensions_mut().insert(crate::layers::KeepBody);
    response
}
