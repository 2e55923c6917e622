//! The browser join page (`/join`, docs/e2e.md) in headless Chromium, black box: the
//! Rust client opens a two-device session and sends two utterances; the page, opened
//! from the invite link, decrypts them, replies, and the Rust client decrypts the reply.
//! A ciphertext flipped in the database is then shown as a refusal, never as text, when
//! the same browser (the same device, its key kept in IndexedDB) rejoins with a second
//! invite and carries on its own sequence; a live utterance arrives through the stream;
//! a used link and a bare `/join` get explained refusals; in a second session a stored
//! nonce, sequence and sender are each changed, and both clients refuse exactly those
//! utterances. Afterwards neither the server's
//! log nor any file of its data directory holds the key, an invite token or a plaintext.
//!
//! Needs chromedriver at `PHIVAULT_TEST_CHROMEDRIVER` (scripts/test starts one); fails
//! without it, like the PostgreSQL suites without a server.

mod support;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use fantoccini::{ClientBuilder, Locator};
use futures::FutureExt;
use phivault_e2e::{Client, E2eSession, ExposeSecret, Invite, Mode, SecretString, ServerUrl};
use serde_json::{Value, json};
use sqlx::ConnectOptions;
use support::{Backend, Server, Site};
use uuid::Uuid;

const FIRST: &str = "Synthetic patient reports mild headache since Tuesday";
const SECOND: &str = "Synthetic patient denies fever; synthetic allergy list is empty";
const REPLY: &str = "Synthetic reply: the headache eased after resting";
const LATER_REPLY: &str = "Synthetic reply: rejoined from the same synthetic browser";
const LIVE: &str = "Synthetic follow-up: rest and fluids";
const REFUSAL_MARKER: &str = "could not be verified";
/// Utterances of the tamper session: the first stays intact, each other one has one
/// stored field changed.
const TAMPERED: [&str; 4] = [
    "Synthetic tamper check: intact",
    "Synthetic tamper check: nonce changed",
    "Synthetic tamper check: sequence changed",
    "Synthetic tamper check: sender changed",
];
const WAIT: Duration = Duration::from_secs(30);

/// Everything the browser part needs from the setup.
struct Scene<'a> {
    server: &'a Server,
    site: &'a Site,
    owner: Client,
    session: E2eSession,
}

fn chromedriver_url() -> String {
    std::env::var("PHIVAULT_TEST_CHROMEDRIVER").expect(
        "the browser test needs chromedriver: run scripts/test, or start \
         `chromedriver --port=N` and set PHIVAULT_TEST_CHROMEDRIVER=http://127.0.0.1:N",
    )
}

async fn open_browser(profile: &Path) -> fantoccini::Client {
    let mut options = json!({
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--no-proxy-server",
            "--window-size=1000,900",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if Path::new("/usr/bin/chromium").exists() {
        options["binary"] = json!("/usr/bin/chromium");
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::rustls()
        .expect("TLS roots for the WebDriver client")
        .capabilities(caps)
        .connect(&chromedriver_url())
        .await
        .expect("a Chromium session from chromedriver")
}

/// What the page shows, read through the DOM (as a person would see it).
async fn page(browser: &fantoccini::Client) -> Value {
    browser
        .execute(
            r##"
            const text = (id) => document.getElementById(id).textContent;
            return {
              href: location.href,
              status: document.getElementById("status").dataset.state,
              status_text: text("status"),
              error: document.getElementById("error").hidden ? null : text("error"),
              send_status: text("send-status"),
              body: document.body.innerText,
              stored: sessionStorage.length + localStorage.length,
              styled: getComputedStyle(document.body).marginTop === "0px",
              items: Array.from(document.querySelectorAll("#utterances li"), (li) => ({
                position: Number(li.dataset.position),
                sender: li.dataset.sender,
                sequence: Number(li.dataset.sequence),
                role: li.dataset.role,
                state: li.dataset.state,
                text: li.querySelector(".text").textContent,
              })),
            };
            "##,
            vec![],
        )
        .await
        .expect("read the page")
}

/// Polls the page until `done` accepts it; fails early when the page reports an error.
async fn until(browser: &fantoccini::Client, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let view = page(browser).await;
        if done(&view) {
            return view;
        }
        if view["status"] == "error" || Instant::now() > deadline {
            panic!("waiting for {what}; the page shows {view:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn item(view: &Value, position: u64) -> &Value {
    view["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["position"] == position))
        .unwrap_or_else(|| panic!("no utterance at position {position}: {view:#}"))
}

async fn invite_url(scene: &Scene<'_>) -> String {
    let created = scene
        .owner
        .create_invite(scene.session.tenant_id, scene.session.session_id)
        .await
        .expect("create an invite");
    let server = ServerUrl::parse(&scene.server.url).unwrap();
    let invite = Invite::new(
        server,
        created.token.expose_secret(),
        scene.session.key.clone(),
    )
    .unwrap();
    invite.to_url().to_string()
}

async fn type_and_send(browser: &fantoccini::Client, text: &str) {
    let message = browser.find(Locator::Css("#message")).await.unwrap();
    message.send_keys(text).await.unwrap();
    browser
        .find(Locator::Css("#send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Flips one bit of a stored ciphertext behind the server's back.
async fn flip_ciphertext(db: &Path, session: Uuid, position: i64) {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("open the site's SQLite file");
    let (mut ciphertext,): (Vec<u8>,) = sqlx::query_as(
        "SELECT ciphertext FROM e2e_utterances WHERE session_id = ?1 AND position = ?2",
    )
    .bind(session)
    .bind(position)
    .fetch_one(&mut conn)
    .await
    .expect("the stored utterance");
    ciphertext[0] ^= 0x01;
    let done = sqlx::query(
        "UPDATE e2e_utterances SET ciphertext = ?3 WHERE session_id = ?1 AND position = ?2",
    )
    .bind(session)
    .bind(position)
    .bind(ciphertext)
    .execute(&mut conn)
    .await
    .expect("change the stored utterance");
    assert_eq!(done.rows_affected(), 1);
}

/// Changes one stored field of an utterance behind the server's back: `nonce` (a bit
/// flipped), `sequence` (moved far ahead) or `sender` (another id) — each part of what
/// the tag authenticates, directly or as associated data.
async fn tamper(db: &Path, session: Uuid, position: i64, field: &str) {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("open the site's SQLite file");
    let done = match field {
        "nonce" => {
            let (mut nonce,): (Vec<u8>,) = sqlx::query_as(
                "SELECT nonce FROM e2e_utterances WHERE session_id = ?1 AND position = ?2",
            )
            .bind(session)
            .bind(position)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            nonce[5] ^= 0x80;
            sqlx::query("UPDATE e2e_utterances SET nonce = ?3 WHERE session_id = ?1 AND position = ?2")
                .bind(session)
                .bind(position)
                .bind(nonce)
                .execute(&mut conn)
                .await
        }
        "sequence" => {
            sqlx::query(
                "UPDATE e2e_utterances SET sequence = sequence + 40 WHERE session_id = ?1 AND position = ?2",
            )
            .bind(session)
            .bind(position)
            .execute(&mut conn)
            .await
        }
        _ => {
            sqlx::query("UPDATE e2e_utterances SET sender = ?3 WHERE session_id = ?1 AND position = ?2")
                .bind(session)
                .bind(position)
                .bind(Uuid::new_v4())
                .execute(&mut conn)
                .await
        }
    };
    assert_eq!(
        done.expect("change the stored utterance").rows_affected(),
        1
    );
}

/// A second session whose stored nonce, sequence and sender are each changed in one
/// utterance: the Rust client and the page both refuse exactly those three.
async fn tampered_fields(scene: &Scene<'_>, browser: &fantoccini::Client) -> String {
    let tenant = scene.session.tenant_id;
    let (mut session, _) = scene
        .owner
        .start_session(tenant, Mode::TwoDevice)
        .await
        .expect("start the tamper session");
    for text in TAMPERED {
        scene.owner.send_text(&mut session, text).await.unwrap();
    }
    let db = scene.site.data_dir().join("phivault.db");
    for (position, field) in [(2, "nonce"), (3, "sequence"), (4, "sender")] {
        tamper(&db, session.session_id, position, field).await;
    }
    let read = scene.owner.read_all(&session).await.unwrap();
    assert_eq!(read.len(), 4);
    assert_eq!(read[0].text.as_deref().unwrap(), TAMPERED[0]);
    for (i, u) in read.iter().enumerate().skip(1) {
        assert!(
            u.text.is_err(),
            "the Rust client opened a tampered {}",
            ["", "nonce", "sequence", "sender"][i]
        );
    }
    let other = Scene {
        server: scene.server,
        site: scene.site,
        owner: scene.owner.clone(),
        session: session.clone(),
    };
    let link = invite_url(&other).await;
    browser
        .goto(&link)
        .await
        .expect("open the tamper session's link");
    let view = until(browser, "the tamper session", |v| {
        v["status"] == "ready" && v["items"].as_array().is_some_and(|i| i.len() == 4)
    })
    .await;
    assert_eq!(item(&view, 1)["state"], "ok", "{view:#}");
    assert_eq!(item(&view, 1)["text"], TAMPERED[0]);
    for position in 2..=4 {
        assert_eq!(item(&view, position)["state"], "refused", "{view:#}");
    }
    let body = view["body"].as_str().unwrap();
    for text in &TAMPERED[1..] {
        assert!(!body.contains(text), "the page shows a tampered utterance");
    }
    link
}

/// Drives the page; returns the invite links it opened.
async fn in_browser(scene: &Scene<'_>, browser: &fantoccini::Client) -> Vec<String> {
    let owner_id = scene.session.participant_id;

    // First visit: both stored utterances decrypted, labelled as the clinician's.
    let first_link = invite_url(scene).await;
    browser
        .goto(&first_link)
        .await
        .expect("open the invite link");
    let view = until(browser, "the two stored utterances", |v| {
        v["status"] == "ready" && v["items"].as_array().is_some_and(|i| i.len() == 2)
    })
    .await;
    for (position, text) in [(1, FIRST), (2, SECOND)] {
        let shown = item(&view, position);
        assert_eq!(shown["state"], "ok", "{view:#}");
        assert_eq!(shown["text"], text);
        assert_eq!(shown["role"], "clinician");
        assert_eq!(shown["sender"], owner_id.to_string());
        assert_eq!(shown["sequence"], position);
    }
    // The link is gone from the address bar at once, and nothing was put in storage.
    assert_eq!(view["href"], format!("{}/join", scene.server.url));
    assert_eq!(view["stored"], 0);
    assert_eq!(view["styled"], true, "join.css did not apply");

    // A reply typed into the page: the Rust client opens it.
    type_and_send(browser, REPLY).await;
    let view = until(browser, "the reply on the page", |v| {
        v["items"].as_array().is_some_and(|i| i.len() == 3) && v["send_status"] == "Sent."
    })
    .await;
    let mine = item(&view, 3);
    assert_eq!(mine["role"], "you");
    assert_eq!(mine["text"], REPLY);
    assert_eq!(mine["sequence"], 1);
    let device_sender: Uuid = mine["sender"].as_str().unwrap().parse().unwrap();
    assert_ne!(device_sender, owner_id);
    let read = scene.owner.read_all(&scene.session).await.unwrap();
    assert_eq!(read.len(), 3);
    let reply = &read[2];
    assert_eq!((reply.sender, reply.sequence), (device_sender, 1));
    assert_eq!(reply.text.as_deref().unwrap(), REPLY);

    // The second stored utterance is altered in the database; a new invite to the same
    // session is opened in the same browser: the same device (its key kept in
    // IndexedDB) rejoins, sees its own reply, and gets a refusal for the altered one.
    flip_ciphertext(
        &scene.site.data_dir().join("phivault.db"),
        scene.session.session_id,
        2,
    )
    .await;
    let read = scene.owner.read_all(&scene.session).await.unwrap();
    assert!(
        read[1].text.is_err(),
        "the Rust client opened altered bytes"
    );
    let link = invite_url(scene).await;
    browser
        .goto(&link)
        .await
        .expect("open the second invite link");
    let view = until(browser, "the stored utterances again", |v| {
        v["status"] == "ready" && v["items"].as_array().is_some_and(|i| i.len() == 3)
    })
    .await;
    assert_eq!(item(&view, 1)["text"], FIRST);
    let altered = item(&view, 2);
    assert_eq!(altered["state"], "refused", "{view:#}");
    assert!(altered["text"].as_str().unwrap().contains(REFUSAL_MARKER));
    let body = view["body"].as_str().unwrap();
    assert!(
        !body.contains(SECOND),
        "the altered utterance's text is shown"
    );
    let again = item(&view, 3);
    assert_eq!(
        (again["role"].as_str(), again["text"].as_str()),
        (Some("you"), Some(REPLY))
    );
    assert_eq!(again["sender"], device_sender.to_string());

    // The page continues after the highest sequence it finds for itself.
    type_and_send(browser, LATER_REPLY).await;
    until(browser, "the later reply on the page", |v| {
        v["items"].as_array().is_some_and(|i| i.len() == 4) && v["send_status"] == "Sent."
    })
    .await;
    let read = scene.owner.read_all(&scene.session).await.unwrap();
    let later = &read[3];
    assert_eq!((later.sender, later.sequence), (device_sender, 2));
    assert_eq!(later.text.as_deref().unwrap(), LATER_REPLY);

    // The owner's live utterance reaches the open page through its stream.
    let mut owner_session = scene.session.clone();
    owner_session.last_sequence = 2;
    scene
        .owner
        .send_text(&mut owner_session, LIVE)
        .await
        .unwrap();
    let view = until(browser, "the live utterance", |v| {
        v["items"].as_array().is_some_and(|i| i.len() == 5)
    })
    .await;
    let shown = item(&view, 5);
    assert_eq!(
        (shown["state"].as_str(), shown["text"].as_str()),
        (Some("ok"), Some(LIVE))
    );
    assert_eq!(shown["role"], "clinician");

    // Refusals are explained with the server's code: a used link, and no link at all.
    browser.goto(&first_link).await.unwrap();
    let view = until(browser, "the used-invite refusal", |v| {
        v["status"] == "error"
    })
    .await;
    let error = view["error"].as_str().unwrap_or_default();
    assert!(error.contains("invite_used"), "{view:#}");
    assert_eq!(view["items"].as_array().map(Vec::len), Some(0));
    browser
        .goto(&format!("{}/join", scene.server.url))
        .await
        .unwrap();
    let view = until(browser, "the missing-link message", |v| {
        v["status"] == "error"
    })
    .await;
    assert!(
        view["error"]
            .as_str()
            .unwrap_or_default()
            .contains("No invite")
    );
    let third = tampered_fields(scene, browser).await;
    vec![first_link, link, third]
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a data directory") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_join_sqlite() {
    // Fail before any setup when there is no browser to drive.
    let _ = chromedriver_url();
    let site = Site::new(Backend::Sqlite).await;
    let tenant = site.tenant("browser", "Synthetic Browser Tenant");
    let server = site.serve();

    // The page and its assets: right types, the page's own policy; every other response
    // keeps the global one.
    let html = server.get("/join", None).await;
    html.expect(200);
    let js = server.get("/assets/join.js", None).await;
    js.expect(200);
    let css = server.get("/assets/join.css", None).await;
    css.expect(200);
    for (reply, ctype) in [
        (&html, "text/html; charset=utf-8"),
        (&js, "text/javascript; charset=utf-8"),
        (&css, "text/css; charset=utf-8"),
    ] {
        assert_eq!(reply.header("content-type"), Some(ctype));
        let csp = reply.header("content-security-policy").unwrap();
        assert!(csp.starts_with(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        ));
        assert!(!csp.contains("unsafe"));
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    }
    let page_text = html.text();
    assert!(!page_text.contains("<script>") && !page_text.contains("style="));
    assert!(!js.text().contains("innerHTML") && !js.text().contains("eval("));
    let health = server.get("/healthz", None).await;
    assert_eq!(
        health.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
    );

    // The clinician's side, with the Rust client.
    let tenant_id: Uuid = tenant.id.parse().unwrap();
    let owner = Client::new(ServerUrl::parse(&server.url).unwrap())
        .unwrap()
        .with_bearer(SecretString::from(tenant.owner_token.clone()));
    let (mut session, _) = owner
        .start_session(tenant_id, Mode::TwoDevice)
        .await
        .expect("start a session");
    owner.send_text(&mut session, FIRST).await.unwrap();
    owner.send_text(&mut session, SECOND).await.unwrap();
    let key_b64url = session.key.to_base64url().to_string();
    let key = URL_SAFE_NO_PAD.decode(&key_b64url).unwrap();
    let scene = Scene {
        server: &server,
        site: &site,
        owner,
        session,
    };

    let profile = tempfile::tempdir().expect("a browser profile directory");
    let started = Instant::now();
    let browser = open_browser(profile.path()).await;
    let outcome = AssertUnwindSafe(in_browser(&scene, &browser))
        .catch_unwind()
        .await;
    let _ = browser.close().await;
    let links = outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    eprintln!("browser part took {:?}", started.elapsed());

    // What the server kept: ciphertext (found, so the scan reads the right files), never
    // the key in any encoding, never a plaintext, never an invite token (only its hash).
    let tokens: Vec<String> = links
        .iter()
        .map(|l| Invite::parse(l).unwrap().token().to_string())
        .collect();
    let stored = scene
        .owner
        .list_all(tenant_id, scene.session.session_id)
        .await
        .unwrap();
    let sample = URL_SAFE_NO_PAD.decode(&stored[0].ciphertext).unwrap();
    let mut files = Vec::new();
    files_under(site.data_dir(), &mut files);
    assert!(
        files.iter().any(|f| f.to_string_lossy().ends_with("-wal")),
        "no WAL file among {files:?}"
    );
    let mut haystacks: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| (f.display().to_string(), std::fs::read(f).unwrap()))
        .collect();
    assert!(
        haystacks.iter().any(|(_, bytes)| contains(bytes, &sample)),
        "no stored ciphertext found in {files:?}"
    );
    haystacks.push(("server stderr".into(), server.stderr().into_bytes()));
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("key bytes", key.clone()),
        ("key base64url", key_b64url.clone().into_bytes()),
        ("key base64", STANDARD_NO_PAD.encode(&key).into_bytes()),
        ("key hex", hex::encode(&key).into_bytes()),
        ("first utterance", FIRST.into()),
        ("second utterance", SECOND.into()),
        ("reply", REPLY.into()),
        ("later reply", LATER_REPLY.into()),
        ("live utterance", LIVE.into()),
        ("first invite token", tokens[0].clone().into_bytes()),
        ("second invite token", tokens[1].clone().into_bytes()),
        ("third invite token", tokens[2].clone().into_bytes()),
    ];
    let needles: Vec<(&str, Vec<u8>)> = needles
        .into_iter()
        .chain(
            TAMPERED
                .iter()
                .map(|t| ("tamper-session utterance", t.as_bytes().to_vec())),
        )
        .collect();
    for (name, bytes) in &haystacks {
        for (what, needle) in &needles {
            assert!(!contains(bytes, needle), "{name} holds the {what}");
        }
    }
}
