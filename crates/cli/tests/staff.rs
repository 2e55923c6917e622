//! The staff realm, black box: staff created at the command line (weak passwords
//! refused), sign-in with password then TOTP (enrollment on first sign-in, a used code
//! refused), one answer for a wrong password and an unknown address, staff and tenant
//! tokens each refused in the other realm, tenant metadata without PHI, the staff roles,
//! and the events on the platform chain.

mod support;

use chrono::Utc;
use phivault_domain::mfa::code_for_uri;
use serde_json::{Value, json};
use support::{Backend, Server, Site, create_staff, patient_json};

const PASSWORD: &str = "vivid-otter-harbor-1987!";
const CANARY: &str = "Zzstaffcanaryfamily";

async fn login(server: &Server, email: &str, password: &str) -> support::Reply {
    server
        .post_json(
            "/api/v1/staff/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
}

/// Waits for the next 30-second TOTP step, so that a fresh code is not a used one.
async fn next_step() {
    let now = Utc::now().timestamp();
    let wait = 30 - now % 30;
    tokio::time::sleep(std::time::Duration::from_millis(wait as u64 * 1000 + 200)).await;
}

/// Signs in (enrolling on the first time); returns the staff access token.
async fn sign_in(server: &Server, email: &str, uri: &mut Option<String>) -> String {
    let r = login(server, email, PASSWORD).await;
    let c = r.expect(200).json();
    let challenge = c["challenge"].as_str().unwrap().to_string();
    if uri.is_none() {
        assert_eq!(c["status"], "mfa_enrollment_required");
        // Before enrolling, the challenge cannot sign in.
        server
            .post_json(
                "/api/v1/staff/auth/mfa/verify",
                None,
                &json!({"challenge": challenge, "code": "123456"}),
            )
            .await
            .expect_error(401, "challenge_invalid");
        let e = server
            .post_json(
                "/api/v1/staff/auth/mfa/enroll",
                None,
                &json!({"challenge": challenge}),
            )
            .await
            .expect(200)
            .json();
        let u = e["otpauth_uri"].as_str().unwrap().to_string();
        assert!(e["qr_svg"].as_str().unwrap().contains("<svg"));
        let code = code_for_uri(&u, Utc::now()).unwrap();
        let done = server
            .post_json(
                "/api/v1/staff/auth/mfa/enroll/confirm",
                None,
                &json!({"challenge": challenge, "code": code}),
            )
            .await
            .expect(200)
            .json();
        assert_eq!(done["recovery_codes"].as_array().unwrap().len(), 10);
        *uri = Some(u);
    } else {
        assert_eq!(c["status"], "mfa_required");
    }
    next_step().await;
    let code = code_for_uri(uri.as_ref().unwrap(), Utc::now()).unwrap();
    let r = server
        .post_json(
            "/api/v1/staff/auth/mfa/verify",
            None,
            &json!({"challenge": challenge, "code": code}),
        )
        .await;
    let token = r.expect(201).json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // The same code again is refused (a fresh challenge, the used code).
    let again = login(server, email, PASSWORD).await.expect(200).json();
    server
        .post_json(
            "/api/v1/staff/auth/mfa/verify",
            None,
            &json!({"challenge": again["challenge"], "code": code}),
        )
        .await
        .expect_error(401, "mfa_invalid");
    token
}

async fn staff_realm(backend: Backend) {
    let site = Site::new(backend).await;
    let t = site.tenant("staff-t", "Synthetic Staff Tenant");
    let practice = site.practice(&t.id, "Staff Practice");

    // Weak passwords are refused at creation: short, common, containing the address.
    for (email, bad) in [
        ("weak1@ops.example.test", "short-pw"),
        ("weak2@ops.example.test", "1qaz2wsx3edc"),
        ("opsperson@ops.example.test", "my-opsperson-secret-99"),
    ] {
        let out = create_staff(&site, email, "support", bad);
        assert!(
            !out.status.success(),
            "accepted a weak password for {email}"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("password"), "{err}");
        assert!(!err.contains(bad), "the error echoes the password: {err}");
    }
    let admin = "admin@ops.example.test";
    let reader = "reader@ops.example.test";
    assert!(
        create_staff(&site, admin, "super_admin", PASSWORD)
            .status
            .success()
    );
    assert!(
        create_staff(&site, reader, "read_only", PASSWORD)
            .status
            .success()
    );
    let list = site.cli(&["staff", "list"]);
    assert!(list.contains(admin) && list.contains("read_only"));

    let server = site.serve();
    let p = server
        .create_patient(
            &t.id,
            &t.owner_token,
            &patient_json(
                &practice,
                "SYNTH-STAFF-1",
                "Synthetic",
                CANARY,
                "1970-01-01",
            ),
        )
        .await;
    assert!(p["id"].is_string());

    // A wrong password and an unknown address get the same answer.
    let wrong = login(&server, admin, "not-the-password-at-all").await;
    let unknown = login(&server, "nobody@ops.example.test", PASSWORD).await;
    let a = wrong.expect_error(401, "invalid_credentials");
    let b = unknown.expect_error(401, "invalid_credentials");
    assert_eq!(a["message"], b["message"]);

    let mut admin_uri = None;
    let admin_token = sign_in(&server, admin, &mut admin_uri).await;
    let mut reader_uri = None;
    let reader_token = sign_in(&server, reader, &mut reader_uri).await;

    // Tenant metadata, never PHI.
    let r = server
        .get("/api/v1/staff/tenants", Some(&reader_token))
        .await;
    let text = r.expect(200).text();
    assert!(
        !text.contains(CANARY) && !text.contains("SYNTH-STAFF-1"),
        "{text}"
    );
    let list: Value = serde_json::from_str(&text).unwrap();
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == t.id.as_str())
        .expect("the tenant is listed");
    assert_eq!(mine["patients"], 1);
    assert_eq!(mine["practices"], 1);
    assert_eq!(mine["slug"], "staff-t");
    let one = server
        .get(
            &format!("/api/v1/staff/tenants/{}", t.id),
            Some(&reader_token),
        )
        .await;
    assert!(!one.expect(200).text().contains(CANARY));

    // Roles: read_only may not list staff; super_admin may.
    server
        .get("/api/v1/staff/staff", Some(&reader_token))
        .await
        .expect_error(403, "staff_forbidden");
    let staff_list = server
        .get("/api/v1/staff/staff", Some(&admin_token))
        .await
        .expect(200)
        .text();
    assert!(staff_list.contains(reader) && !staff_list.contains("argon2"));

    // Each realm's tokens are refused in the other.
    server
        .get(&t.path("me"), Some(&admin_token))
        .await
        .expect_error(401, "unauthenticated");
    server
        .get("/api/v1/staff/tenants", Some(&t.owner_token))
        .await
        .expect_error(401, "unauthenticated");

    // Sign-out ends the staff session at once; deactivation ends the others.
    let r = server
        .request(reqwest::Method::POST, "/api/v1/staff/auth/logout")
        .bearer_auth(&admin_token);
    server.send(r).await.expect(204);
    server
        .get("/api/v1/staff/tenants", Some(&admin_token))
        .await
        .expect_error(401, "unauthenticated");
    site.cli(&["staff", "deactivate", "--email", reader]);
    server
        .get("/api/v1/staff/tenants", Some(&reader_token))
        .await
        .expect_error(401, "unauthenticated");
    login(&server, reader, PASSWORD)
        .await
        .expect_error(401, "invalid_credentials");

    // The events are on the platform chain, by staff actors, without PHI.
    let out = site.cli(&["audit", "export", "--format", "jsonl"]);
    assert!(!out.contains(CANARY));
    let platform: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["tenant"].is_null())
        .collect();
    let has = |action: &str, kind: &str| {
        platform
            .iter()
            .any(|e| e["action"] == action && e["actor"]["kind"] == kind)
    };
    for action in [
        "auth.login",
        "auth.mfa.enrolled",
        "auth.logout",
        "auth.failed",
        "staff.read",
        "access.denied",
    ] {
        assert!(
            has(action, "staff"),
            "no {action} by staff on the platform chain"
        );
    }
    assert!(
        platform
            .iter()
            .any(|e| e["action"] == "staff.read" && e["actor"]["role"] == "read_only")
    );
    assert!(has("admin.user.changed", "operator"));
}

#[tokio::test(flavor = "multi_thread")]
async fn staff_realm_sqlite() {
    staff_realm(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn staff_realm_postgres() {
    staff_realm(Backend::Postgres).await;
}
