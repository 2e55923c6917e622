//! Magic-link sign-in for tenant users: `POST /api/v1/auth/magic-link`.
//!
//! The answer is 202 with one fixed body whatever the tenant and address turn out to be,
//! and it is given before anything is looked up: the lookup, the link, its audit event and
//! the mail happen in a background job, so neither the body nor the timing tells whether
//! an account exists. Consuming a link (and issuing a session) is the sessions routes'
//! business; see `phivault_domain::magic_links::consume`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use phivault_audit::{Action, Actor, ActorKind, AuditEvent, Outcome, Resource};
use phivault_domain::{magic_links, tenants};
use phivault_store::TxMode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::Origin;
use crate::extract::ApiJson;
use crate::throttle::{self, Endpoint};
use crate::{ApiError, AppState};

/// This module's routes.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route(
        "/api/v1/auth/magic-link",
        axum::routing::post(request_magic_link),
    )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(request_magic_link))]
struct ModuleApi;

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    <ModuleApi as utoipa::OpenApi>::openapi()
}

/// A request for a sign-in link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MagicLinkRequest {
    /// The tenant's slug.
    tenant: String,
    /// The user's sign-in address.
    email: String,
}

/// The one answer to every well-formed request.
#[derive(Serialize, ToSchema)]
pub(crate) struct MagicLinkAccepted {
    /// Always `accepted`.
    status: &'static str,
    /// Says that a link was sent if the address belongs to an active account, without
    /// saying whether it does.
    message: &'static str,
}

const ACCEPTED: MagicLinkAccepted = MagicLinkAccepted {
    status: "accepted",
    message: "if the address belongs to an active account of this tenant, a sign-in link is on its way",
};

const SUBJECT: &str = "Your phivault sign-in link";

/// Same rule as tenant creation; checked here so malformed input is refused at once.
fn valid_slug(slug: &str) -> bool {
    (2..=63).contains(&slug.len())
        && slug.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Asks for a sign-in link. Answers 202 with the same body whether or not the address
/// belongs to an active user of the tenant (or the tenant exists); only then is a
/// single-use link (15 minutes by default) mailed to it. Throttled per client address
/// and per (tenant, address) account: 429 `throttled` with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/auth/magic-link", tag = "auth",
    request_body = MagicLinkRequest,
    responses((status = 202, body = MagicLinkAccepted),
              (status = 400, body = crate::error::ErrorBody),
              (status = 415, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn request_magic_link(
    State(st): State<AppState>,
    origin: Origin,
    body: Result<ApiJson<MagicLinkRequest>, ApiError>,
) -> Result<(StatusCode, Json<MagicLinkAccepted>), ApiError> {
    // Counted before the body is looked at: malformed requests count too.
    throttle::per_ip(&st, &origin, Endpoint::MagicLink).await?;
    let ApiJson(body) = body?;
    if !valid_slug(&body.tenant) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "tenant must be a tenant slug (2-63 of a-z, 0-9 and -)",
        ));
    }
    let email = magic_links::check_email(&body.email)?;
    let origin = throttle::per_link_account(&st, origin, &body.tenant, &email)?;
    let Some(mailer) = st.mailer.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "mail_unavailable",
            "this server has no mail configured, so it cannot send sign-in links",
        ));
    };
    let Ok(permit) = st.mail_jobs.clone().try_acquire_owned() else {
        return Err(ApiError::throttled(
            std::time::Duration::from_secs(1),
            "too many sign-in links are being sent; retry shortly",
        ));
    };
    let job_state = st.clone();
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = send_link(&job_state, &mailer, &body.tenant, &email, origin).await {
            tracing::error!(error = %e, "a sign-in link could not be sent");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(ACCEPTED)))
}

/// The background job: finds the tenant and the active user, issues the link and writes
/// its audit event in one transaction, then mails it. Nothing about the address is
/// logged or audited; the event names the user id.
async fn send_link(
    st: &AppState,
    mailer: &phivault_mail::Mailer,
    slug: &str,
    email: &str,
    origin: Origin,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let now = st.now();
    let mut platform = st.db.begin_platform(TxMode::Read).await?;
    let found = tenants::find(&mut platform, slug).await;
    platform.commit().await?;
    let tenant = match found {
        Ok(t) => t,
        Err(phivault_domain::DomainError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if tenant.status != "active" {
        return Ok(());
    }
    let mut tx = st.db.begin_tenant(tenant.id, TxMode::Write).await?;
    let Some(link) = magic_links::request(&mut tx, email, st.magic_link.lifetime, now).await?
    else {
        tx.rollback().await?;
        return Ok(());
    };
    let event = AuditEvent {
        sequence: 0,
        time: now,
        tenant: Some(tenant.id),
        actor: Actor {
            kind: ActorKind::Anonymous,
            id: String::new(),
            role: String::new(),
        },
        source: origin.source,
        action: Action::AuthLinkSent,
        resource: Resource {
            kind: "user".into(),
            id: link.user.to_string(),
        },
        fields: Vec::new(),
        outcome: Outcome::Success,
        reason: Some("magic link".into()),
        request_id: origin.request_id,
        before: None,
        after: None,
    };
    // The link and its event commit together: no usable link without its record.
    st.auditor.append_in(&mut tx, event).await?;
    tx.commit().await?;
    let minutes = st.magic_link.lifetime.num_minutes().max(1);
    let url = format!(
        "{}/login?token={}",
        st.magic_link.public_url.trim_end_matches('/'),
        link.secret.expose()
    );
    let text = format!(
        "Someone asked to sign in to phivault with this address.\r\n\
         \r\n\
         To sign in, open this link within {minutes} minutes. It works once:\r\n\
         \r\n\
         {url}\r\n\
         \r\n\
         If you did not ask for it, ignore this message; nobody can sign in without the link.\r\n"
    );
    mailer.send(email, SUBJECT, &text).await?;
    tracing::info!(user = %link.user, "sign-in link sent");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_slug;

    #[test]
    fn slugs() {
        assert!(valid_slug("synthetic-health"));
        assert!(valid_slug("a1"));
        for bad in ["", "a", "-a", "A-b", "a b", "a_b", &"a".repeat(64)] {
            assert!(!valid_slug(bad), "{bad:?}");
        }
    }
}
