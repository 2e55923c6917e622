//! Transport rules: HTTPS with a development certificate, and plain HTTP only on loopback
//! or behind a declared TLS-terminating proxy.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::{Backend, Launch, Server, Site};

const HSTS: &str = "max-age=63072000; includeSubDomains";

fn client_trusting(cert_pem: &[u8]) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(cert_pem).expect("parse dev certificate");
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .tls_certs_only([cert])
        .build()
        .expect("TLS client")
}

/// Starts `serve` with `envs` on `listen`; it must exit without serving.
fn expect_refusal(site: &Site, listen: &str, envs: &[(&str, &str)]) -> String {
    let mut cmd = site.command(&["serve", "--listen", listen]);
    cmd.envs(envs.iter().copied());
    match Server::launch(cmd) {
        Launch::Started(server) => panic!(
            "phivault served at {} with {envs:?} on {listen}",
            server.url
        ),
        Launch::Exited { status, stderr, .. } => {
            assert!(!status.success(), "exit status {status}");
            stderr
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_cert_then_https_with_hsts() {
    let site = Site::new(Backend::Sqlite).await;
    let out = site.cli(&["dev-cert"]);
    let tls = site.data_dir().join("tls");
    let (cert, key) = (tls.join("cert.pem"), tls.join("key.pem"));
    assert!(out.contains("cert.pem") && out.contains("key.pem"), "{out}");
    let key_mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600, "key.pem mode {key_mode:o}");
    let key_text = std::fs::read_to_string(&key).unwrap();
    assert!(key_text.contains("PRIVATE KEY"), "key.pem holds no key");
    let cert_pem = std::fs::read(&cert).unwrap();

    // A second run does not overwrite the pair without --force.
    let again = site.cli_output(&["dev-cert"]);
    assert!(
        !again.status.success(),
        "dev-cert overwrote without --force"
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), key_text);

    let mut server = site.serve_with(&[
        ("PHIVAULT_TLS_CERT", cert.to_str().unwrap()),
        ("PHIVAULT_TLS_KEY", key.to_str().unwrap()),
    ]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "printed URL {}",
        server.url
    );

    // A client that does not trust the development certificate cannot connect.
    let untrusting = support::plain_client();
    let refused = untrusting
        .get(format!("{}/healthz", server.url))
        .send()
        .await;
    assert!(refused.is_err(), "untrusted certificate accepted");

    // Plain HTTP to the HTTPS port gets no answer from the application.
    let plain = untrusting
        .get(format!("http://{}/healthz", server.addr()))
        .send()
        .await;
    if let Ok(response) = plain {
        assert_ne!(response.status().as_u16(), 200, "plain HTTP served");
    }

    server.set_client(client_trusting(&cert_pem));
    let reply = server.get("/healthz", None).await;
    reply.expect(200);
    assert_eq!(reply.header("strict-transport-security"), Some(HSTS));
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    server.get("/readyz", None).await.expect(200);

    // Errors over HTTPS carry HSTS too.
    let missing = server.get("/missing", None).await;
    missing.expect_error(404, "not_found");
    assert_eq!(missing.header("strict-transport-security"), Some(HSTS));

    // The certificate also names localhost.
    let localhost = client_trusting(&cert_pem)
        .get(format!("https://localhost:{}/healthz", server.port()))
        .send()
        .await
        .expect("https://localhost with the dev certificate");
    assert_eq!(localhost.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_off_loopback_is_refused() {
    let site = Site::new(Backend::Sqlite).await;
    let stderr = expect_refusal(&site, "0.0.0.0:0", &[]);
    assert!(
        stderr.contains("refusing to serve plain HTTP"),
        "stderr: {stderr}"
    );
    // An explicit "false" is the same as unset.
    let stderr = expect_refusal(
        &site,
        "0.0.0.0:0",
        &[("PHIVAULT_BEHIND_TLS_PROXY", "false")],
    );
    assert!(stderr.contains("refusing to serve plain HTTP"), "{stderr}");
    // A value that is not a boolean is an error, not a yes.
    expect_refusal(
        &site,
        "0.0.0.0:0",
        &[("PHIVAULT_BEHIND_TLS_PROXY", "maybe")],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_tls_proxy_plain_http_is_served_with_hsts() {
    let site = Site::new(Backend::Sqlite).await;
    let mut cmd = site.command(&["serve", "--listen", "0.0.0.0:0"]);
    cmd.env("PHIVAULT_BEHIND_TLS_PROXY", "true");
    let server = Server::start(cmd);
    assert!(
        server.url.starts_with("http://0.0.0.0:"),
        "printed URL {}",
        server.url
    );
    // Reach it over loopback only.
    let url = format!("http://127.0.0.1:{}/healthz", server.port());
    let response = support::plain_client().get(url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap()),
        Some(HSTS)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_tls_proxy_on_loopback_still_sends_hsts() {
    // The usual layout: the proxy on the same host forwards to 127.0.0.1. Clients reach
    // the service over HTTPS, so HSTS must be sent.
    let site = Site::new(Backend::Sqlite).await;
    let server = site.serve_with(&[("PHIVAULT_BEHIND_TLS_PROXY", "true")]);
    let reply = server.get("/healthz", None).await;
    reply.expect(200);
    assert_eq!(reply.header("strict-transport-security"), Some(HSTS));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_needs_both_cert_and_key() {
    let site = Site::new(Backend::Sqlite).await;
    site.cli(&["dev-cert"]);
    let tls = site.data_dir().join("tls");
    let cert = tls.join("cert.pem");
    let key = tls.join("key.pem");
    for envs in [
        [("PHIVAULT_TLS_CERT", cert.to_str().unwrap())],
        [("PHIVAULT_TLS_KEY", key.to_str().unwrap())],
    ] {
        let stderr = expect_refusal(&site, "127.0.0.1:0", &envs);
        assert!(
            stderr.contains("tls.cert and tls.key must be set together"),
            "{envs:?}: {stderr}"
        );
    }
    // A pair that cannot be read is refused too, rather than falling back to plain HTTP.
    let missing = tls.join("absent.pem");
    let stderr = expect_refusal(
        &site,
        "127.0.0.1:0",
        &[
            ("PHIVAULT_TLS_CERT", missing.to_str().unwrap()),
            ("PHIVAULT_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    assert!(stderr.contains("certificate"), "{stderr}");
    // Certificate and key swapped.
    expect_refusal(
        &site,
        "127.0.0.1:0",
        &[
            ("PHIVAULT_TLS_CERT", key.to_str().unwrap()),
            ("PHIVAULT_TLS_KEY", cert.to_str().unwrap()),
        ],
    );
}
