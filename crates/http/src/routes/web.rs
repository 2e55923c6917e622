//! The browser join page of end-to-end sessions (docs/e2e.md): a static page, its script
//! and its style, compiled into the binary. Everything happens in the browser — the key
//! arrives in the link's fragment, which never reaches the server — so the server serves
//! the same bytes to everyone and reads nothing from the request.

use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;

/// The page's policy: its own script, style and API only; no inline code, no eval, no
/// other origin, no framing. Trusted Types enforcement makes any HTML-injection sink
/// (`innerHTML` and friends) throw, which the script never uses.
pub(crate) const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

const JOIN_HTML: &str = include_str!("../../web/join.html");
const JOIN_JS: &str = include_str!("../../web/join.js");
const JOIN_CSS: &str = include_str!("../../web/join.css");

/// This module's routes.
pub(crate) fn router() -> axum::Router<crate::AppState> {
    use axum::routing::get;
    axum::Router::new()
        .route("/join", get(join_page))
        .route("/assets/join.js", get(join_script))
        .route("/assets/join.css", get(join_style))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            ),
        ],
        body,
    )
}

/// The join page; the invite token and key are read by its script, not here.
async fn join_page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", JOIN_HTML)
}

/// The join page's script.
async fn join_script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", JOIN_JS)
}

/// The join page's style sheet.
async fn join_style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", JOIN_CSS)
}
