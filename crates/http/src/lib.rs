//! phivault's HTTP edge.
//!
//! Cross-cutting concerns are types and layers, applied once: every tenant route takes a
//! [`extract::Scoped`] extractor, which authenticates the bearer token, checks the
//! tenant in the path against the principal's and checks the route's permission before
//! the handler runs, so a handler that forgets authorization does not compile. Every
//! response passes the same layers: a request id, security headers, `Cache-Control:
//! no-store`, a body limit, a timeout, panic catching, and one renderer that turns every
//! error into `{"code","message","request_id"}`.
//!
//! Every PHI route writes its audit event before it answers, and cannot answer without
//! one (see the `audit` module); an unwritable trail makes PHI routes answer 503
//! `audit_unavailable`.
//!
//! Nothing here logs a URI, a header value or a body: the access log names the matched
//! route template, the status and the request id.

pub mod audit;
mod e2e_writer;
mod error;
mod extract;
mod layers;
pub mod openapi;
mod readiness;
mod routes;
mod server;
mod state;
pub mod throttle;

pub use error::ApiError;
pub use readiness::ReadinessConfig;
pub use server::{ServeOptions, TlsFiles, TlsSetupError, load_tls_config, serve};
pub use state::{
    AppState, E2eSettings, HttpConfig, MagicLinkSettings, TranscriptionInfo, Unsealer,
};
pub use throttle::ThrottleConfig;

use axum::Router;

/// Builds the whole application: routes, OpenAPI document and layers.
pub fn app(state: AppState) -> Router {
    let config = state.http.clone();
    let uploads = routes::uploads().with_state(state.clone());
    let router = routes::router().with_state(state);
    layers::apply(router, uploads, &config)
}
