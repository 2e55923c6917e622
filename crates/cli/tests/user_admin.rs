//! User administration through the API, on SQLite and on PostgreSQL: invite, read,
//! change roles, grant and remove practices, deactivate (which revokes the user's tokens
//! at once); each change audited in its transaction with before and after snapshots that
//! carry ids, roles, grants and status but never a name or an e-mail address; the guard
//! rails (own account, roles beyond one's own, the last active owner); bad input refused
//! with stable codes and nothing written.

mod support;

use serde_json::{Value, json};
use support::{Backend, Server, Site, TenantFixture};

struct World {
    site: Site,
    server: Server,
    t: TenantFixture,
    p1: String,
    p2: String,
    /// An admin limited to P1, and its token.
    admin_p1: (String, String),
}

async fn world(backend: Backend, slug: &str) -> World {
    let site = Site::new(backend).await;
    let t = site.tenant(slug, "Synthetic Admin Clinic");
    let p1 = site.practice(&t.id, "Admin Practice One");
    let p2 = site.practice(&t.id, "Admin Practice Two");
    let admin = site.user(
        &t.id,
        &format!("admin-p1@{slug}.example.test"),
        "Synthetic Limited Admin",
        &["admin"],
        Some(&[p1.as_str()]),
    );
    let (_, admin_token) = site.token(&t.id, &admin);
    let server = site.serve();
    World {
        site,
        server,
        t,
        p1,
        p2,
        admin_p1: (admin, admin_token),
    }
}

async fn put_json(server: &Server, path: &str, token: &str, body: &Value) -> support::Reply {
    server
        .send(
            server
                .request(reqwest::Method::PUT, path)
                .bearer_auth(token)
                .json(body),
        )
        .await
}

async fn post_empty(server: &Server, path: &str, token: &str) -> support::Reply {
    server
        .send(
            server
                .request(reqwest::Method::POST, path)
                .bearer_auth(token),
        )
        .await
}

/// The tenant's `admin.user.changed` events about `user`, oldest first.
async fn user_events(w: &World, user: &str) -> Vec<Value> {
    let reply = w
        .server
        .get(
            &w.t.path(&format!(
                "audit?limit=200&action=admin.user.changed&resource_id={user}"
            )),
            Some(&w.t.owner_token),
        )
        .await;
    let mut events = reply.expect(200).json()["events"]
        .as_array()
        .unwrap()
        .clone();
    events.reverse();
    events
}

async fn invite_change_deactivate(backend: Backend) {
    let w = world(backend, "user-admin").await;
    let s = &w.server;
    let owner = w.t.owner_token.as_str();

    // Invite a provider limited to P1.
    let created = s
        .post_json(
            &w.t.path("users"),
            Some(owner),
            &json!({
                "email": "dr.synthetic@user-admin.example.test",
                "display_name": "Dr Synthetic Canaryname",
                "roles": ["provider"],
                "practice_ids": [w.p1],
            }),
        )
        .await;
    let user = created.expect(201).json();
    let id = user["id"].as_str().unwrap().to_string();
    assert_eq!(user["roles"], json!(["provider"]));
    assert_eq!(user["all_practices"], false);
    assert_eq!(user["practice_ids"], json!([w.p1]));
    assert_eq!(user["status"], "active");

    let mut got = s
        .get(&w.t.path(&format!("users/{id}")), Some(owner))
        .await
        .expect(200)
        .json();
    // PostgreSQL keeps microseconds; the creation answer had the clock's full precision.
    let mut user_again = user.clone();
    for u in [&mut got, &mut user_again] {
        u.as_object_mut().unwrap().remove("created_at");
    }
    assert_eq!(got, user_again);

    // The user works with a token of their own.
    let (_, token) = w.site.token(&w.t.id, &id);
    s.get(&w.t.path("me"), Some(&token)).await.expect(200);

    // Change roles.
    let r = put_json(
        s,
        &w.t.path(&format!("users/{id}/roles")),
        owner,
        &json!({"roles": ["qa", "billing", "qa"]}),
    )
    .await;
    assert_eq!(r.expect(200).json()["roles"], json!(["billing", "qa"]));
    let me = s
        .get(&w.t.path("me"), Some(&token))
        .await
        .expect(200)
        .json();
    assert_eq!(me["roles"], json!(["billing", "qa"]));

    // Grant both practices, then every practice, then remove them all.
    let path = w.t.path(&format!("users/{id}/practices"));
    let r = put_json(
        s,
        &path,
        owner,
        &json!({"practice_ids": [w.p2, w.p1, w.p2]}),
    )
    .await;
    let mut both = vec![w.p1.clone(), w.p2.clone()];
    both.sort();
    assert_eq!(r.expect(200).json()["practice_ids"], json!(both));
    let r = put_json(s, &path, owner, &json!({"all_practices": true})).await;
    let body = r.expect(200).json();
    assert_eq!(body["all_practices"], true);
    assert_eq!(body["practice_ids"], json!([]));
    let r = put_json(s, &path, owner, &json!({"practice_ids": []})).await;
    let body = r.expect(200).json();
    assert_eq!(body["all_practices"], false);
    assert_eq!(body["practice_ids"], json!([]));
    // Without grants the user sees no practice.
    let seen = s.get(&w.t.path("practices"), Some(&token)).await;
    assert_eq!(seen.expect(200).json(), json!([]));

    // Deactivate: the token is refused at once, and is revoked, not only ignored.
    let r = post_empty(s, &w.t.path(&format!("users/{id}/deactivate")), owner).await;
    assert_eq!(r.expect(200).json()["status"], "deactivated");
    s.get(&w.t.path("me"), Some(&token))
        .await
        .expect_error(401, "unauthenticated");
    post_empty(s, &w.t.path(&format!("users/{id}/deactivate")), owner)
        .await
        .expect_error(409, "already_deactivated");
    // A new token is not issued to a deactivated user.
    let out = w
        .site
        .cli_output(&["token", "create", "--tenant", &w.t.id, "--user", &id]);
    assert!(!out.status.success(), "a deactivated user got a token");

    // Six changes, six events, each with before and after, in order.
    let events = user_events(&w, &id).await;
    let summary: Vec<(Value, Value)> = events
        .iter()
        .map(|e| (e["before"].clone(), e["after"].clone()))
        .collect();
    assert_eq!(events.len(), 6, "{events:?}");
    assert!(summary[0].0.is_null(), "an invitation has no before");
    assert_eq!(summary[0].1["roles"], json!(["provider"]));
    assert_eq!(summary[1].0["roles"], json!(["provider"]));
    assert_eq!(summary[1].1["roles"], json!(["billing", "qa"]));
    assert_eq!(summary[2].0["practices"], json!([w.p1]));
    assert_eq!(summary[2].1["practices"], json!(both));
    assert_eq!(summary[3].1["practices"], "all");
    assert_eq!(summary[4].0["practices"], "all");
    assert_eq!(summary[4].1["practices"], json!([]));
    assert_eq!(summary[5].0["status"], "active");
    assert_eq!(summary[5].1["status"], "deactivated");
    for e in &events {
        assert_eq!(e["outcome"], "success");
        assert_eq!(e["resource_type"], "user");
        assert_eq!(e["actor_id"], w.t.owner_id.as_str());
        assert!(!e["request_id"].as_str().unwrap_or("").is_empty());
        for snap in [&e["before"], &e["after"]] {
            if snap.is_null() {
                continue;
            }
            let mut keys: Vec<&str> = snap
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            keys.sort();
            assert_eq!(keys, ["practices", "roles", "status", "user_id"]);
            assert_eq!(snap["user_id"], id.as_str());
        }
        let text = e.to_string();
        assert!(!text.contains("Canaryname"), "a name in the trail: {text}");
        assert!(
            !text.contains("dr.synthetic"),
            "an e-mail in the trail: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_invite_change_deactivate() {
    invite_change_deactivate(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_invite_change_deactivate() {
    invite_change_deactivate(Backend::Postgres).await;
}

async fn guard_rails(backend: Backend) {
    let w = world(backend, "guard-rails").await;
    let s = &w.server;
    let owner = w.t.owner_token.as_str();
    let (admin_id, admin) = (&w.admin_p1.0, w.admin_p1.1.as_str());
    let member = w.site.user(
        &w.t.id,
        "member@guard-rails.example.test",
        "Synthetic Member",
        &["member"],
        Some(&[w.p1.as_str()]),
    );
    let before = s.snapshot(&w.t.id, owner).await;
    let user = |id: &str, rest: &str| w.t.path(&format!("users/{id}/{rest}"));

    // Nobody changes their own account.
    for (who, token, id) in [("owner", owner, &w.t.owner_id), ("admin", admin, admin_id)] {
        let r = put_json(s, &user(id, "roles"), token, &json!({"roles": ["owner"]})).await;
        if let Err(why) = r.check_error(403, "self_change") {
            panic!("{who} changing own roles: {why}");
        }
        put_json(
            s,
            &user(id, "practices"),
            token,
            &json!({"all_practices": true}),
        )
        .await
        .expect_error(403, "self_change");
        post_empty(s, &user(id, "deactivate"), token)
            .await
            .expect_error(403, "self_change");
    }

    // An admin grants no role beyond their own, and cannot touch an owner.
    for body in [
        json!({"roles": ["owner"]}),
        json!({"roles": ["member", "owner"]}),
    ] {
        put_json(s, &user(&member, "roles"), admin, &body)
            .await
            .expect_error(403, "exceeds_own_permissions");
    }
    s.post_json(
        &w.t.path("users"),
        Some(admin),
        &json!({"email": "new-owner@guard-rails.example.test", "display_name": "Synthetic Usurper",
                "roles": ["owner"], "practice_ids": [w.p1]}),
    )
    .await
    .expect_error(403, "exceeds_own_permissions");
    put_json(
        s,
        &user(&w.t.owner_id, "roles"),
        admin,
        &json!({"roles": ["member"]}),
    )
    .await
    .expect_error(403, "exceeds_own_permissions");
    post_empty(s, &user(&w.t.owner_id, "deactivate"), admin)
        .await
        .expect_error(403, "exceeds_own_permissions");
    // A limited admin grants neither every practice nor a practice they cannot see.
    put_json(
        s,
        &user(&member, "practices"),
        admin,
        &json!({"all_practices": true}),
    )
    .await
    .expect_error(403, "exceeds_own_permissions");
    put_json(
        s,
        &user(&member, "practices"),
        admin,
        &json!({"practice_ids": [w.p1, w.p2]}),
    )
    .await
    .expect_error(404, "not_found");
    s.post_json(
        &w.t.path("users"),
        Some(admin),
        &json!({"email": "wide@guard-rails.example.test", "display_name": "Synthetic Wide",
                "roles": ["member"], "all_practices": true}),
    )
    .await
    .expect_error(403, "exceeds_own_permissions");
    assert_eq!(
        s.snapshot(&w.t.id, owner).await,
        before,
        "a refused change left a trace"
    );
    // Within their reach the limited admin may act.
    put_json(
        s,
        &user(&member, "roles"),
        admin,
        &json!({"roles": ["provider"]}),
    )
    .await
    .expect(200);

    // Two owners demoting each other at the same moment never leave the tenant without
    // an active owner: one wins, the other is refused (409 `last_owner` if it was
    // authorized before the first committed, else 403 or 401 since it no longer holds
    // the permission). Each round on a tenant of its own with exactly two owners.
    let mut last_owner_seen = 0;
    let rounds = 12;
    for round in 0..rounds {
        let t = w
            .site
            .tenant(&format!("race-{round}"), "Synthetic Race Clinic");
        let second = w.site.user(
            &t.id,
            &format!("second@race-{round}.example.test"),
            "Synthetic Co-owner",
            &["owner"],
            None,
        );
        let (_, second_token) = w.site.token(&t.id, &second);
        let deactivate = round % 2 == 1;
        let change = async |target: &str, token: &str| {
            let at = |rest: &str| t.path(&format!("users/{target}/{rest}"));
            if deactivate {
                post_empty(s, &at("deactivate"), token).await
            } else {
                put_json(s, &at("roles"), token, &json!({"roles": ["member"]})).await
            }
        };
        let (r1, r2) = tokio::join!(
            change(&second, &t.owner_token),
            change(&t.owner_id, &second_token)
        );
        let (winner, refused) = match (r1.status, r2.status) {
            (200, s2) if s2 != 200 => (t.owner_token.as_str(), &r2),
            (s1, 200) if s1 != 200 => (second_token.as_str(), &r1),
            _ => panic!(
                "round {round}: both or neither passed: {} / {}",
                r1.text(),
                r2.text()
            ),
        };
        match refused.status {
            409 => {
                refused.expect_error(409, "last_owner");
                last_owner_seen += 1;
            }
            403 => {
                refused.expect_error(403, "forbidden");
            }
            401 => {
                refused.expect_error(401, "unauthenticated");
            }
            other => panic!("round {round}: refused with {other}: {}", refused.text()),
        }
        let list = s
            .get(&t.path("users"), Some(winner))
            .await
            .expect(200)
            .json();
        let active_owners = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| {
                u["status"] == "active" && u["roles"].as_array().unwrap().contains(&json!("owner"))
            })
            .count();
        assert_eq!(active_owners, 1, "round {round}: {list}");
    }
    eprintln!("last_owner refusals seen: {last_owner_seen} of {rounds} rounds");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_guard_rails() {
    guard_rails(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_guard_rails() {
    guard_rails(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_nothing_is_written() {
    let w = world(Backend::Sqlite, "admin-bad-input").await;
    let s = &w.server;
    let owner = w.t.owner_token.as_str();
    let b = w.site.tenant("admin-bad-other", "Synthetic Other Clinic");
    let member = w.site.user(
        &w.t.id,
        "member@admin-bad-input.example.test",
        "Synthetic Member",
        &["member"],
        None,
    );
    let before = s.snapshot(&w.t.id, owner).await;
    let events_before = user_events(&w, &member).await.len();
    let roles = w.t.path(&format!("users/{member}/roles"));
    let practices = w.t.path(&format!("users/{member}/practices"));
    let many: Vec<String> = (0..501).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        (
            "unknown role",
            roles.clone(),
            json!({"roles": ["superuser"]}),
            422,
            "invalid_body",
        ),
        (
            "no roles",
            roles.clone(),
            json!({"roles": []}),
            422,
            "invalid_field",
        ),
        (
            "seven roles",
            roles.clone(),
            json!({"roles": ["owner", "admin", "member", "billing", "provider", "qa", "qa"]}),
            422,
            "invalid_field",
        ),
        (
            "roles as a string",
            roles.clone(),
            json!({"roles": "member"}),
            422,
            "invalid_body",
        ),
        (
            "missing roles",
            roles.clone(),
            json!({}),
            422,
            "invalid_body",
        ),
        (
            "unknown field on roles",
            roles.clone(),
            json!({"roles": ["member"], "is_superuser": true}),
            422,
            "invalid_body",
        ),
        (
            "both grant forms",
            practices.clone(),
            json!({"all_practices": true, "practice_ids": [w.p1]}),
            422,
            "invalid_field",
        ),
        (
            "501 practices",
            practices.clone(),
            json!({"practice_ids": many}),
            422,
            "invalid_field",
        ),
        (
            "a practice id that is no uuid",
            practices.clone(),
            json!({"practice_ids": ["not-a-uuid"]}),
            422,
            "invalid_body",
        ),
        (
            "an unknown practice",
            practices.clone(),
            json!({"practice_ids": [w.p1, uuid::Uuid::now_v7()]}),
            404,
            "not_found",
        ),
        (
            "unknown field on practices",
            practices.clone(),
            json!({"all_practices": true, "everything": true}),
            422,
            "invalid_body",
        ),
        (
            "a malformed user id",
            w.t.path("users/not-a-uuid/roles"),
            json!({"roles": ["member"]}),
            400,
            "invalid_path",
        ),
        (
            "an unknown user",
            w.t.path(&format!("users/{}/roles", uuid::Uuid::now_v7())),
            json!({"roles": ["member"]}),
            404,
            "not_found",
        ),
        (
            "another tenant's user",
            w.t.path(&format!("users/{}/roles", b.owner_id)),
            json!({"roles": ["member"]}),
            404,
            "not_found",
        ),
    ];
    for (what, path, body, status, code) in &cases {
        let reply = put_json(s, path, owner, body).await;
        if let Err(why) = reply.check_error(*status, code) {
            panic!("{what}: {why}");
        }
        assert!(!reply.text().contains("superuser") && !reply.text().contains("not-a-uuid"));
    }
    // Wrong content type, and bodies that are no JSON object.
    let raw = |body: &'static str, ct: &'static str| {
        s.request(reqwest::Method::PUT, &roles)
            .bearer_auth(owner)
            .header("content-type", ct)
            .body(body)
    };
    s.send(raw(r#"{"roles":["member"]}"#, "text/plain"))
        .await
        .expect_error(415, "unsupported_media_type");
    s.send(raw(r#"{"roles":["member"]"#, "application/json"))
        .await
        .expect_error(400, "invalid_json");
    s.send(raw(r#"[["member"]]"#, "application/json"))
        .await
        .expect_error(422, "invalid_body");
    // Reads and deactivation with malformed and unknown ids.
    s.get(&w.t.path("users/12345"), Some(owner))
        .await
        .expect_error(400, "invalid_path");
    s.get(&w.t.path(&format!("users/{}", b.owner_id)), Some(owner))
        .await
        .expect_error(404, "not_found");
    post_empty(s, &w.t.path("users/%00/deactivate"), owner)
        .await
        .expect_error(400, "invalid_path");
    post_empty(
        s,
        &w.t.path(&format!("users/{}/deactivate", uuid::Uuid::now_v7())),
        owner,
    )
    .await
    .expect_error(404, "not_found");

    assert_eq!(
        s.snapshot(&w.t.id, owner).await,
        before,
        "bad input changed data"
    );
    assert_eq!(
        user_events(&w, &member).await.len(),
        events_before,
        "a refused change was audited as a change"
    );
}
