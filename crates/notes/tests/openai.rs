//! The OpenAI-compatible generator against a real HTTP server on 127.0.0.1 that speaks
//! `/v1/chat/completions`, and the endpoint clearance rules.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use phivault_notes::{
    EndpointClearance, Error, InputSegment, LoopbackEndpoint, NO_FINDINGS, NoteGenerator, NoteKind,
    OpenAiConfig, OpenAiGenerator, PhiText, SectionHeading, Speaker, TranscriptInput,
};
use serde_json::{Value, json};
use url::Url;

const MODEL: &str = "synthetic-notes-model";
const API_KEY: &str = "synthetic-test-key";
/// Words in the server's error and garbage answers that must never surface in an error.
const BODY_SENTINEL: &str = "UPSTREAM-BODY-SENTINEL";

#[derive(Clone, Copy)]
enum Mode {
    /// A well-formed completion built from the request: line n goes to heading n % count.
    Echo {
        fenced: bool,
    },
    /// As `Echo`, without the last heading.
    MissingSection,
    Status500,
    Garbage,
    /// A 2 MiB body, announced by Content-Length or streamed without it.
    Huge {
        announced: bool,
    },
    /// Headers after `delay`.
    Slow {
        delay: Duration,
    },
    /// Headers at once, then the body one byte every 100 ms.
    Drip,
    /// A redirect to a host that is not cleared.
    Redirect,
}

struct Server {
    mode: Mode,
    requests: Mutex<Vec<Value>>,
}

async fn start(mode: Mode) -> (Url, Arc<Server>) {
    let server = Arc::new(Server {
        mode,
        requests: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (Url::parse(&format!("http://{address}/v1")).unwrap(), server)
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": format!("{message} {BODY_SENTINEL}")}})),
    )
        .into_response()
}

async fn completions(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "request is not JSON");
    };
    server.requests.lock().unwrap().push(request.clone());
    if request["model"] != MODEL {
        return error(StatusCode::NOT_FOUND, "no such model");
    }
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {API_KEY}"))
    {
        return error(StatusCode::UNAUTHORIZED, "bad key");
    }
    let (Some(system), Some(user)) = (
        request["messages"][0]["content"].as_str(),
        request["messages"][1]["content"].as_str(),
    ) else {
        return error(StatusCode::BAD_REQUEST, "messages missing");
    };
    // The headings the prompt asks for, and the numbered transcript lines.
    let Some(headings) = system
        .split_once("in this order: ")
        .and_then(|(_, rest)| rest.split_once(". "))
        .map(|(list, _)| list.split(", ").map(str::to_owned).collect::<Vec<_>>())
    else {
        return error(StatusCode::BAD_REQUEST, "no headings in the prompt");
    };
    let lines: Vec<(u64, String)> = user
        .lines()
        .filter_map(|line| {
            let (number, rest) = line.strip_prefix('[')?.split_once("] ")?;
            let (_speaker, words) = rest.split_once(": ")?;
            Some((number.parse().ok()?, words.to_owned()))
        })
        .collect();
    if lines.is_empty() {
        return error(StatusCode::BAD_REQUEST, "no transcript in the messages");
    }

    let content_object = |headings: &[String]| {
        let sections: Vec<Value> = headings
            .iter()
            .enumerate()
            .map(|(h, heading)| {
                let mine: Vec<&(u64, String)> =
                    lines.iter().enumerate().filter(|(i, _)| i % headings.len() == h).map(|(_, l)| l).collect();
                let text = if mine.is_empty() {
                    NO_FINDINGS.to_owned()
                } else {
                    mine.iter().map(|(_, words)| words.as_str()).collect::<Vec<_>>().join(" ")
                };
                json!({"heading": heading, "text": text, "sources": mine.iter().map(|(n, _)| n).collect::<Vec<_>>()})
            })
            .collect();
        json!({"sections": sections}).to_string()
    };
    let completion = |content: String| {
        axum::Json(json!({
            "id": "chatcmpl-synthetic",
            "object": "chat.completion",
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        }))
        .into_response()
    };
    match server.mode {
        Mode::Echo { fenced: false } => completion(content_object(&headings)),
        Mode::Echo { fenced: true } => completion(format!(
            "Sure! Here is the note:\n```json\n{}\n```\nLet me know if {{anything}} else.",
            content_object(&headings)
        )),
        Mode::MissingSection => completion(content_object(&headings[..headings.len() - 1])),
        Mode::Status500 => error(StatusCode::INTERNAL_SERVER_ERROR, "model crashed"),
        Mode::Garbage => (
            StatusCode::OK,
            format!("<html>{BODY_SENTINEL} not json</html>"),
        )
            .into_response(),
        Mode::Huge { announced: true } => {
            let body = format!("{{\"choices\": \"{}\"}}", "A".repeat(2 * 1024 * 1024));
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        Mode::Huge { announced: false } => {
            let chunk = Bytes::from(vec![b' '; 64 * 1024]);
            let stream =
                futures::stream::iter((0..32).map(move |_| Ok::<_, Infallible>(chunk.clone())));
            Response::new(Body::from_stream(stream))
        }
        Mode::Slow { delay } => {
            tokio::time::sleep(delay).await;
            completion(content_object(&headings))
        }
        Mode::Drip => {
            let stream = futures::stream::unfold(0u32, |n| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                (n < 100).then(|| (Ok::<_, Infallible>(Bytes::from_static(b" ")), n + 1))
            });
            Response::new(Body::from_stream(stream))
        }
        Mode::Redirect => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, "http://10.1.2.3/v1/chat/completions")],
        )
            .into_response(),
    }
}

/// A SYNTHETIC visit; no real person.
fn synthetic_transcript() -> TranscriptInput {
    let lines = [
        (
            Some(Speaker::Clinician),
            "Synthetic visit: what brings you in today?",
        ),
        (Some(Speaker::Patient), "I have had a cough for five days."),
        (Some(Speaker::Clinician), "Temperature is 99.1 degrees."),
        (None, "   "),
        (Some(Speaker::Clinician), "Likely a viral bronchitis."),
        (
            Some(Speaker::Clinician),
            "Rest, fluids, and follow up in a week.",
        ),
    ];
    TranscriptInput {
        segments: lines
            .iter()
            .enumerate()
            .map(|(i, (speaker, text))| InputSegment {
                start_ms: i as u64 * 1000,
                end_ms: i as u64 * 1000 + 900,
                text: PhiText::new(*text),
                speaker: *speaker,
            })
            .collect(),
    }
}

async fn generator(base_url: Url, timeout: Duration) -> OpenAiGenerator {
    let clearance = EndpointClearance::loopback(&base_url).await.unwrap();
    let mut config = OpenAiConfig::new(base_url, MODEL);
    config.api_key = Some(API_KEY.into());
    config.timeout = timeout;
    config.max_tokens = 777;
    OpenAiGenerator::new(config, clearance).unwrap()
}

async fn failure(mode: Mode, timeout: Duration) -> Error {
    let (url, _server) = start(mode).await;
    let error = generator(url, timeout)
        .await
        .generate(NoteKind::Soap, &synthetic_transcript())
        .await
        .unwrap_err();
    // Nothing of the transcript, the body or the key in the message or the debug form.
    for shown in [error.to_string(), format!("{error:?}")] {
        for secret in [
            BODY_SENTINEL,
            "cough",
            "bronchitis",
            API_KEY,
            "AAAA",
            "127.0.0.1",
        ] {
            assert!(!shown.contains(secret), "{shown:?} shows {secret:?}");
        }
    }
    error
}

#[tokio::test]
async fn writes_a_soap_note_from_the_servers_answer() {
    let (url, server) = start(Mode::Echo { fenced: false }).await;
    let generator = generator(url, Duration::from_secs(10)).await;
    assert_eq!(generator.name(), "openai-compatible");
    let note = generator
        .generate(NoteKind::Soap, &synthetic_transcript())
        .await
        .unwrap();

    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request["max_tokens"], 777);
    assert_eq!(request["response_format"], json!({"type": "json_object"}));
    let user = request["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("[1] Patient: I have had a cough for five days.\n"));
    assert!(!user.contains("[3]"), "the blank segment is not sent");

    assert_eq!(note.kind, NoteKind::Soap);
    assert_eq!(note.generator, "openai-compatible");
    assert_eq!(note.model.as_deref(), Some(MODEL));
    assert_eq!(note.unused_sentences, None);
    // Five lines sent (0, 1, 2, 4, 5), dealt round the four headings by the server.
    let section = |h| note.section(h).unwrap();
    assert_eq!(
        section(SectionHeading::Subjective).text.expose(),
        "Synthetic visit: what brings you in today? Rest, fluids, and follow up in a week."
    );
    assert_eq!(section(SectionHeading::Subjective).sources, [0, 5]);
    assert_eq!(
        section(SectionHeading::Objective).text.expose(),
        "I have had a cough for five days."
    );
    assert_eq!(
        section(SectionHeading::Assessment).text.expose(),
        "Temperature is 99.1 degrees."
    );
    assert_eq!(
        section(SectionHeading::Plan).text.expose(),
        "Likely a viral bronchitis."
    );
    assert_eq!(section(SectionHeading::Plan).sources, [4]);
}

#[tokio::test]
async fn writes_a_draatt_note_from_a_fenced_answer_in_prose() {
    let (url, _server) = start(Mode::Echo { fenced: true }).await;
    let note = generator(url, Duration::from_secs(10))
        .await
        .generate(NoteKind::Draatt, &synthetic_transcript())
        .await
        .unwrap();
    let headings: Vec<_> = note.sections.iter().map(|s| s.heading).collect();
    assert_eq!(headings, NoteKind::Draatt.headings());
    // Lines 0, 1, 2, 4, 5 dealt round six headings: Assessment gets the fourth, segment 4.
    assert_eq!(
        note.section(SectionHeading::Assessment)
            .unwrap()
            .text
            .expose(),
        "Likely a viral bronchitis."
    );
    assert_eq!(
        note.section(SectionHeading::Assessment).unwrap().sources,
        [4]
    );
    assert_eq!(
        note.section(SectionHeading::Treatment)
            .unwrap()
            .text
            .expose(),
        "Rest, fluids, and follow up in a week."
    );
    assert_eq!(
        note.section(SectionHeading::Transport)
            .unwrap()
            .text
            .expose(),
        NO_FINDINGS
    );
}

#[tokio::test]
async fn the_server_really_checks_model_and_key() {
    let (url, server) = start(Mode::Echo { fenced: false }).await;
    let clearance = EndpointClearance::loopback(&url).await.unwrap();
    let mut config = OpenAiConfig::new(url.clone(), "another-model");
    config.api_key = Some(API_KEY.into());
    let error = OpenAiGenerator::new(config, clearance.clone())
        .unwrap()
        .generate(NoteKind::Soap, &synthetic_transcript())
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.to_string().contains("404")),
        ("generator_unavailable", true)
    );

    let config = OpenAiConfig::new(url, MODEL);
    let error = OpenAiGenerator::new(config, clearance)
        .unwrap()
        .generate(NoteKind::Soap, &synthetic_transcript())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "generator_unavailable");
    assert_eq!(server.requests.lock().unwrap().len(), 2);
    assert!(server.requests.lock().unwrap()[1].get("api_key").is_none());
}

#[tokio::test]
async fn an_error_status_is_unavailable() {
    let error = failure(Mode::Status500, Duration::from_secs(10)).await;
    assert_eq!(error.code(), "generator_unavailable");
    assert_eq!(
        error.to_string(),
        "the note generator is unavailable (it answered HTTP 500)"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let error = failure(Mode::Redirect, Duration::from_secs(10)).await;
    assert_eq!(error.code(), "generator_unavailable");
    assert!(error.to_string().contains("307"));
}

#[tokio::test]
async fn garbage_is_a_bad_response() {
    let error = failure(Mode::Garbage, Duration::from_secs(10)).await;
    assert_eq!(error.code(), "generator_bad_response");
}

#[tokio::test]
async fn a_missing_section_is_a_bad_response() {
    let error = failure(Mode::MissingSection, Duration::from_secs(10)).await;
    assert_eq!(error.code(), "generator_bad_response");
    assert_eq!(
        error.to_string(),
        "the note generator gave an unusable answer: the note lacks a section"
    );
}

#[tokio::test]
async fn huge_bodies_are_refused() {
    for announced in [true, false] {
        let started = Instant::now();
        let error = failure(Mode::Huge { announced }, Duration::from_secs(10)).await;
        assert_eq!(error.code(), "generator_bad_response");
        assert!(error.to_string().contains("larger than the limit"));
        eprintln!(
            "huge body (announced: {announced}) refused in {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn slow_answers_time_out() {
    for mode in [
        Mode::Slow {
            delay: Duration::from_secs(3),
        },
        Mode::Drip,
    ] {
        let started = Instant::now();
        let error = failure(mode, Duration::from_millis(400)).await;
        assert_eq!(error.code(), "generator_timeout");
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
        eprintln!("timed out after {elapsed:?}");
    }
}

#[tokio::test]
async fn an_unreachable_loopback_server_is_unavailable() {
    // Bind and drop a listener to get a loopback port with nothing behind it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = Url::parse(&format!("http://{}/v1", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let error = generator(url, Duration::from_secs(5))
        .await
        .generate(NoteKind::Soap, &synthetic_transcript())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "generator_unavailable");
}

#[tokio::test]
async fn an_empty_transcript_is_refused_without_a_request() {
    let (url, server) = start(Mode::Echo { fenced: false }).await;
    let generator = generator(url, Duration::from_secs(5)).await;
    let empty = TranscriptInput {
        segments: vec![InputSegment {
            start_ms: 0,
            end_ms: 1,
            text: PhiText::new(" ?! "),
            speaker: None,
        }],
    };
    assert_eq!(
        generator
            .generate(NoteKind::Soap, &empty)
            .await
            .unwrap_err()
            .code(),
        "empty_transcript"
    );
    assert!(server.requests.lock().unwrap().is_empty());
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

// These endpoints are refused before any connection or name lookup is made: the checks
// look only at the URL (names other than `localhost` are never resolved).
#[tokio::test]
async fn endpoints_that_are_not_cleared_are_refused() {
    for refused in [
        "http://10.1.2.3/v1",
        "https://example.com/v1",
        "http://localhost.example.com/v1",
        "http://127.0.0.1.nip.io/v1",
        "http://[::ffff:10.1.2.3]/v1",
        "http://0.0.0.0:8080/v1",
    ] {
        let error = EndpointClearance::loopback(&url(refused))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "endpoint_not_cleared", "{refused}");
        assert!(!error.to_string().contains("example"));
    }
    assert_eq!(
        LoopbackEndpoint::verify(&url("ftp://127.0.0.1/"))
            .await
            .unwrap_err()
            .code(),
        "invalid_config"
    );

    // A loopback clearance covers its own host and port only.
    let cleared = EndpointClearance::loopback(&url("http://127.0.0.1:8080/v1"))
        .await
        .unwrap();
    for other in [
        "https://example.com/v1",
        "http://10.1.2.3:8080/v1",
        "http://127.0.0.1:9090/v1",
        "http://127.0.0.2:8080/v1",
    ] {
        let error = OpenAiGenerator::new(OpenAiConfig::new(url(other), MODEL), cleared.clone())
            .unwrap_err();
        assert_eq!(error.code(), "endpoint_not_cleared", "{other}");
    }
    assert!(
        OpenAiGenerator::new(
            OpenAiConfig::new(url("http://127.0.0.1:8080/v1/"), MODEL),
            cleared.clone()
        )
        .is_ok()
    );

    // A vendor clearance still needs TLS off this machine, and a vendor name.
    let vendor = EndpointClearance::VendorWithBaa {
        vendor: "Synthetic Vendor Inc".into(),
    };
    let error = OpenAiGenerator::new(
        OpenAiConfig::new(url("http://10.1.2.3/v1"), MODEL),
        vendor.clone(),
    )
    .unwrap_err();
    assert_eq!(error.code(), "insecure_endpoint");
    let error = OpenAiGenerator::new(
        OpenAiConfig::new(url("http://localhost:8080/v1"), MODEL),
        vendor.clone(),
    )
    .unwrap_err();
    assert_eq!(error.code(), "insecure_endpoint");
    assert!(
        OpenAiGenerator::new(
            OpenAiConfig::new(url("https://example.com/v1"), MODEL),
            vendor
        )
        .is_ok()
    );
    let nameless = EndpointClearance::VendorWithBaa {
        vendor: "  ".into(),
    };
    let error = OpenAiGenerator::new(
        OpenAiConfig::new(url("https://example.com/v1"), MODEL),
        nameless,
    )
    .unwrap_err();
    assert_eq!(error.code(), "endpoint_not_cleared");
}

#[tokio::test]
async fn localhost_is_cleared_only_when_it_resolves_to_loopback() {
    // On this machine `localhost` resolves to loopback addresses (checked here with the
    // system resolver), so it is cleared for its own port.
    let resolved: Vec<_> = tokio::net::lookup_host(("localhost", 8080))
        .await
        .unwrap()
        .collect();
    assert!(resolved.iter().all(|a| a.ip().is_loopback()));
    let cleared = EndpointClearance::loopback(&url("http://LOCALHOST:8080/v1"))
        .await
        .unwrap();
    assert!(
        OpenAiGenerator::new(
            OpenAiConfig::new(url("http://localhost:8080/v1"), MODEL),
            cleared.clone()
        )
        .is_ok()
    );
    let error = OpenAiGenerator::new(
        OpenAiConfig::new(url("http://127.0.0.1:8080/v1"), MODEL),
        cleared,
    )
    .unwrap_err();
    assert_eq!(error.code(), "endpoint_not_cleared");
}

#[tokio::test]
async fn unusable_settings_are_refused_and_the_key_is_not_shown() {
    let cleared = EndpointClearance::loopback(&url("http://127.0.0.1:8080/v1"))
        .await
        .unwrap();
    let build = |config: OpenAiConfig| {
        OpenAiGenerator::new(config, cleared.clone())
            .map(|_| ())
            .map_err(|e| e.code())
    };
    let base = OpenAiConfig::new(url("http://127.0.0.1:8080/v1"), MODEL);
    assert_eq!(
        build(OpenAiConfig {
            base_url: url("http://user:pw@127.0.0.1:8080/v1"),
            ..base.clone()
        }),
        Err("invalid_config")
    );
    assert_eq!(
        build(OpenAiConfig {
            base_url: url("http://127.0.0.1:8080/v1?x=1"),
            ..base.clone()
        }),
        Err("invalid_config")
    );
    assert_eq!(
        build(OpenAiConfig {
            model: " ".into(),
            ..base.clone()
        }),
        Err("invalid_config")
    );
    assert_eq!(
        build(OpenAiConfig {
            max_tokens: 0,
            ..base.clone()
        }),
        Err("invalid_config")
    );
    assert_eq!(
        build(OpenAiConfig {
            timeout: Duration::ZERO,
            ..base.clone()
        }),
        Err("invalid_config")
    );
    assert_eq!(
        build(OpenAiConfig {
            api_key: Some("bad\nkey".into()),
            ..base.clone()
        }),
        Err("invalid_config")
    );

    let config = OpenAiConfig {
        api_key: Some(API_KEY.into()),
        ..base
    };
    let generator = OpenAiGenerator::new(config.clone(), cleared).unwrap();
    assert!(!format!("{config:?}").contains(API_KEY));
    assert!(!format!("{generator:?}").contains(API_KEY));
}
