//! Magic-link sign-in, black-box: the real server mails a link through a real SMTP
//! server on loopback (aiosmtpd, started by `scripts/test`), or into its outbox directory,
//! and the token in the mail is accepted once by the domain. Unknown addresses get the
//! same answer and no mail. Synthetic identities only.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use phivault_domain::magic_links::{self, PresentedLink};
use phivault_store::{Db, DbOptions, TenantId, TxMode};
use serde_json::{Value, json};
use support::{Backend, Server, Site};

const ENDPOINT: &str = "/api/v1/auth/magic-link";
/// `pvm_` + 32 hex + `_` + 43 base64url characters.
const TOKEN_LEN: usize = 4 + 32 + 1 + 43;

/// The loopback SMTP server of `scripts/test`: its port and the directory where it writes
/// what it receives. `None` (the test says it is skipped) only outside `scripts/test`.
fn smtp_sink() -> Option<(String, PathBuf)> {
    let port = std::env::var("PHIVAULT_TEST_SMTP_PORT").ok()?;
    let dir = std::env::var("PHIVAULT_TEST_SMTP_DIR")
        .expect("PHIVAULT_TEST_SMTP_DIR must accompany PHIVAULT_TEST_SMTP_PORT");
    Some((port, PathBuf::from(dir)))
}

fn database_url(site: &Site) -> String {
    match site.backend {
        Backend::Sqlite => format!("sqlite://{}", site.data_dir().join("phivault.db").display()),
        Backend::Postgres => {
            let args = site.args();
            let i = args
                .iter()
                .position(|a| a == "--database-url")
                .expect("a PostgreSQL site names its database");
            args[i + 1].to_string_lossy().to_string()
        }
    }
}

/// Undoes quoted-printable (soft line breaks and `=XX`); plain 7-bit text is unchanged.
fn unquote(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Messages in `dir` addressed to `to` (by their `To:` header).
fn messages_to(dir: &Path, to: &str) -> Vec<(PathBuf, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let header = format!("to: {}", to.to_ascii_lowercase());
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
        .filter(|(_, t)| {
            t.lines()
                .any(|l| l.trim_end().to_ascii_lowercase() == header)
        })
        .collect()
}

/// Waits for the one message to `to`.
fn wait_for_message(dir: &Path, to: &str, server: &Server) -> (PathBuf, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut found = messages_to(dir, to);
        if !found.is_empty() {
            assert_eq!(found.len(), 1, "more than one message to {to}");
            return found.pop().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no mail to {to} in {} within 30 s; server log: {}",
            dir.display(),
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The token of the link in a message, checked to point at `public_url` and to name
/// `tenant`.
fn token_in(message: &str, public_url: &str, tenant: &str) -> String {
    let text = unquote(message);
    let prefix = format!("{public_url}/login?token=");
    let at = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no link to {prefix} in the message: {text}"))
        + prefix.len();
    let token = text[at..at + TOKEN_LEN].to_string();
    assert!(
        token.starts_with(&format!("pvm_{}_", tenant.replace('-', ""))),
        "token does not name the tenant"
    );
    assert!(PresentedLink::parse(&token).is_some(), "not a link token");
    token
}

/// Consumes the token through the domain, directly in the site's database.
async fn consume(site: &Site, tenant: &str, token: &str) -> Result<String, String> {
    let db = Db::connect(&database_url(site), &DbOptions::default())
        .await
        .expect("open the site's database");
    let tenant: TenantId = tenant.parse().expect("tenant id");
    let presented = PresentedLink::parse(token).expect("link token");
    assert_eq!(presented.tenant(), tenant);
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    let result = magic_links::consume(&mut tx, &presented, Utc::now()).await;
    match result {
        Ok(user) => {
            tx.commit().await.unwrap();
            db.close().await;
            Ok(user.to_string())
        }
        Err(e) => {
            tx.rollback().await.unwrap();
            db.close().await;
            Err(e.to_string())
        }
    }
}

async fn ask(server: &Server, tenant: &str, email: &str) -> Value {
    let reply = server
        .post_json(ENDPOINT, None, &json!({"tenant": tenant, "email": email}))
        .await;
    reply.expect(202);
    reply.json()
}

/// The `auth.link.sent` events of the tenant's trail, read back by its owner.
async fn link_events(server: &Server, tenant: &support::TenantFixture) -> Vec<Value> {
    let reply = server
        .get(
            &tenant.path("audit?action=auth.link.sent"),
            Some(&tenant.owner_token),
        )
        .await;
    reply.expect(200);
    reply.json()["events"].as_array().unwrap().clone()
}

async fn link_travels_through_smtp(backend: Backend) {
    let Some((port, received)) = smtp_sink() else {
        eprintln!(
            "SKIPPED: PHIVAULT_TEST_SMTP_PORT is not set; run scripts/test, which starts a loopback SMTP server"
        );
        return;
    };
    let site = Site::new(backend).await;
    let slug = format!(
        "smtp-{}-{}",
        match backend {
            Backend::Sqlite => "lite",
            Backend::Postgres => "pg",
        },
        uuid::Uuid::now_v7().simple()
    );
    let slug = &slug[..slug.len().min(40)];
    let t = site.tenant(slug, "Synthetic Health (mail test)");
    let owner_email = format!("owner@{slug}.example.test");
    let public_url = "https://phivault.example.test";
    let server = site.serve_with(&[
        ("PHIVAULT_SMTP_HOST", "127.0.0.1"),
        ("PHIVAULT_SMTP_PORT", port.as_str()),
        ("PHIVAULT_SMTP_TLS", "none"),
        ("PHIVAULT_SMTP_FROM", "phivault <no-reply@example.test>"),
        ("PHIVAULT_PUBLIC_URL", public_url),
    ]);
    let log = server.stderr();
    assert!(
        log.contains("sign-in links are sent over SMTP") && log.contains("127.0.0.1"),
        "no SMTP start-up line: {log}"
    );

    // Known, unknown, differently cased and unknown-tenant requests get one answer.
    let known = ask(&server, slug, &owner_email).await;
    let nobody = format!("nobody@{slug}.example.test");
    assert_eq!(ask(&server, slug, &nobody).await, known);
    assert_eq!(ask(&server, "no-such-tenant-7q", &owner_email).await, known);
    assert_eq!(known["status"], "accepted");

    let (_, message) = wait_for_message(&received, &owner_email, &server);
    assert!(message.contains("Subject: Your phivault sign-in link"));
    assert!(
        !message.contains("Synthetic Owner"),
        "the mail names the user"
    );
    let token = token_in(&message, public_url, &t.id);

    // The link signs the owner in once.
    assert_eq!(consume(&site, &t.id, &token).await, Ok(t.owner_id.clone()));
    assert!(consume(&site, &t.id, &token).await.is_err(), "second use");

    // Nothing went to the unknown address (its job ran alongside the known one's).
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        messages_to(&received, &nobody).is_empty(),
        "mail to an unknown address"
    );

    // The trail records the sent link by user id, never the address or the token.
    let events = link_events(&server, &t).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["resource_id"], t.owner_id.as_str());
    assert_eq!(events[0]["actor_kind"], "anonymous");
    assert_eq!(events[0]["outcome"], "success");
    let all = server
        .get(&t.path("audit"), Some(&t.owner_token))
        .await
        .text();
    assert!(!all.contains(&owner_email) && !all.contains(&nobody));
    assert!(!all.contains(&token[40..]));
    let log = server.stderr();
    assert!(!log.contains(&owner_email) && !log.contains(&token[40..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn magic_link_travels_through_smtp_sqlite() {
    link_travels_through_smtp(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_magic_link_travels_through_smtp() {
    link_travels_through_smtp(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_smtp_the_link_lands_in_the_outbox() {
    let site = Site::new(Backend::Sqlite).await;
    let t = site.tenant("outbox-health", "Synthetic Health (outbox)");
    let owner_email = "owner@outbox-health.example.test";
    let server = site.serve();
    let outbox = site.data_dir().join("outbox");
    let log = server.stderr();
    assert!(
        log.contains("outbox directory (the development default)")
            && log.contains(&outbox.display().to_string()),
        "no outbox start-up line: {log}"
    );

    let known = ask(&server, "outbox-health", owner_email).await;
    assert_eq!(
        ask(
            &server,
            "outbox-health",
            "nobody@outbox-health.example.test"
        )
        .await,
        known
    );
    let (path, message) = wait_for_message(&outbox, owner_email, &server);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&outbox), 0o700, "outbox directory mode");
        assert_eq!(mode(&path), 0o600, "message file mode");
    }
    // Without PHIVAULT_PUBLIC_URL the link points at the served URL.
    let token = token_in(&message, &server.url, &t.id);
    assert_eq!(consume(&site, &t.id, &token).await, Ok(t.owner_id.clone()));
    assert!(consume(&site, &t.id, &token).await.is_err(), "second use");
    std::thread::sleep(Duration::from_millis(300));
    assert!(messages_to(&outbox, "nobody@outbox-health.example.test").is_empty());
    assert_eq!(
        std::fs::read_dir(&outbox).unwrap().count(),
        1,
        "one message only"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_refused() {
    let site = Site::new(Backend::Sqlite).await;
    let server = site.serve();
    for (body, status) in [
        (json!({"tenant": "synthetic-health"}), 422),
        (json!({"email": "a@example.test"}), 422),
        (
            json!({"tenant": "synthetic-health", "email": "not-an-address"}),
            422,
        ),
        (
            json!({"tenant": "Not A Slug", "email": "a@example.test"}),
            422,
        ),
        (
            json!({"tenant": "synthetic-health", "email": "a@example.test", "extra": 1}),
            422,
        ),
        (json!({"tenant": 7, "email": "a@example.test"}), 422),
    ] {
        let reply = server.post_json(ENDPOINT, None, &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        let error = reply.json();
        assert!(error["code"].is_string() && error["request_id"].is_string());
        assert!(!reply.text().contains("not-an-address"), "input echoed");
    }
    let reply = server
        .post_raw(ENDPOINT, None, Some("application/json"), b"{".to_vec())
        .await;
    reply.expect_error(400, "invalid_json");
    let reply = server
        .post_raw(ENDPOINT, None, Some("text/plain"), b"x".to_vec())
        .await;
    assert_eq!(reply.status, 415);
    assert!(
        std::fs::read_dir(site.data_dir().join("outbox"))
            .unwrap()
            .next()
            .is_none()
    );
}
