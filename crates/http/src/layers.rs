//! Layers every response passes through, applied once around the whole router.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::HttpConfig;
use crate::error::{ApiError, ErrorBody, RenderedError};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the request being served, in its extensions.
#[derive(Clone)]
pub(crate) struct RequestId(pub String);

/// Marks an error-status response whose body is its documented answer (the readiness
/// report), so the error renderer leaves it alone.
#[derive(Clone)]
pub(crate) struct KeepBody;

pub(crate) fn apply(router: Router, uploads: Router, config: &HttpConfig) -> Router {
    let router = router
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(RequestBodyLimitLayer::new(config.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ));
    // Uploads stream their bodies: the handler counts bytes against the upload limit
    // (413 `too_large`, nothing kept), and the timeout is the upload's own.
    let uploads = uploads.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        config.upload_timeout,
    ));
    let router = router.merge(uploads).layer(CatchPanicLayer::custom(|_| {
        ApiError::internal().into_response()
    }));
    let mut router = router
        .layer(middleware::from_fn(crate::audit::guard))
        .layer(middleware::from_fn(render_errors))
        .layer(middleware::from_fn(request_id_and_log));
    // Outermost, so that every answer carries them, including those the layers above
    // write themselves (a rendered error, the audit guard's `audit_missing`).
    for (name, value) in security_headers() {
        // A response that brings its own policy keeps it: the browser join page needs
        // one that lets its own script and style load. Every other header is forced.
        router = if name == header::CONTENT_SECURITY_POLICY {
            router.layer(SetResponseHeaderLayer::if_not_present(name, value))
        } else {
            router.layer(SetResponseHeaderLayer::overriding(name, value))
        };
    }
    if config.hsts {
        router = router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        ));
    }
    router
}

fn security_headers() -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("same-origin"),
        ),
        (
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
        ),
    ]
}

/// Gives each request a fresh id (a client-sent one is ignored: it could carry anything),
/// and writes one access-log line naming the route template, never the URI.
async fn request_id_and_log(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let method = method_name(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    req.headers_mut().remove(REQUEST_ID);
    req.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    let mut response = next.run(req).await;
    let elapsed: Duration = started.elapsed();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let code = response.extensions().get::<RenderedError>().map(|e| e.code);
    tracing::info!(
        target: "phivault::access_log",
        request_id = %id,
        method = method,
        route = route.as_deref().unwrap_or("<unmatched>"),
        status = response.status().as_u16(),
        error_code = code.unwrap_or(""),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// The method for the log. Clients may send any token as a method; only the standard
/// ones are named, so the log never carries client-chosen text.
fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "<other>",
    }
}

/// Puts the request id into error bodies, and turns any error response the handlers did
/// not render (405 from the router, 408 from the timeout, 413 from the body limit) into
/// the same JSON shape.
async fn render_errors(req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<KeepBody>().is_some()
    {
        return response;
    }
    let (code, message) = match response.extensions().get::<RenderedError>() {
        Some(e) => (e.code, e.message.clone()),
        None => generic(status),
    };
    let (mut parts, _) = response.into_parts();
    let body = ErrorBody {
        code: code.to_string(),
        message,
        request_id,
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body is never read, so the connection cannot be reused: say so,
        // or a keep-alive client sends its next request into a closed connection.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    parts.extensions.insert(RenderedError {
        code,
        message: body.message,
    });
    Response::from_parts(parts, Body::from(bytes))
}

fn generic(status: StatusCode) -> (&'static str, String) {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not accept that method",
        ),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than allowed",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        s if s.is_client_error() => ("bad_request", "the request was not accepted"),
        _ => ("internal", "the server failed to handle the request"),
    };
    (code, message.to_string())
}
