//! The `openai-compatible` engine's request and its parser's hardening, against an HTTP
//! server on 127.0.0.1 (axum, in this test) that answers `/v1/audio/transcriptions` with
//! crafted answers: well-formed, odd and hostile. The engine against a real speech server
//! is in crates/cli/tests/openai_transcribe.rs. All audio and text is synthetic.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use phivault_notes::EndpointClearance;
use phivault_transcribe::{
    Error, OpenAiTranscribeConfig, OpenAiTranscriber, Progress, TranscribeOptions, Transcriber,
    write_wav_16k,
};
use serde_json::json;
use url::Url;

const MODEL: &str = "synthetic-speech-model";
const API_KEY: &str = "synthetic-test-key";
/// Words in the server's answers that must never surface in an error.
const BODY_SENTINEL: &str = "UPSTREAM-BODY-SENTINEL";
/// Length of the test audio.
const AUDIO_MS: u64 = 2000;

#[derive(Clone, Copy)]
enum Mode {
    /// Two segments (the second ending a little past the audio) and a blank one.
    Segments,
    /// `{"text": …}` with no segments.
    TextOnly,
    /// Empty text, no segments: silence.
    Silence,
    Garbage,
    /// A 17 MiB body, announced by Content-Length or streamed without it.
    Huge {
        announced: bool,
    },
    /// A segment with this raw JSON as its `end` (e.g. `-1`, `NaN`, `1e9`).
    End(&'static str),
    /// A segment ending before it starts.
    Backwards,
    /// Ten thousand segments for two seconds of audio.
    TooManySegments,
    /// One segment of 20 KiB of text.
    LongText,
    Status(u16),
    /// Headers after `delay`.
    Slow {
        delay: Duration,
    },
    /// Headers at once, then the body one byte every 100 ms.
    Drip,
    /// A redirect to another port of this machine.
    Redirect {
        port: u16,
    },
}

/// One part of a multipart request, as the server received it.
#[derive(Debug)]
struct FormPart {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

struct Received {
    authorization: Option<String>,
    parts: Vec<FormPart>,
}

impl Received {
    fn field(&self, name: &str) -> Option<&FormPart> {
        self.parts.iter().find(|p| p.name == name)
    }

    fn text(&self, name: &str) -> Option<String> {
        self.field(name)
            .map(|p| String::from_utf8(p.data.clone()).unwrap())
    }
}

struct Server {
    mode: Mode,
    requests: Mutex<Vec<Received>>,
}

async fn start(mode: Mode) -> (Url, Arc<Server>) {
    let server = Arc::new(Server {
        mode,
        requests: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (Url::parse(&format!("http://{address}/v1")).unwrap(), server)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| at + from)
}

/// A strict reading of a `multipart/form-data` body (RFC 7578): every part between the
/// boundaries, with its name, file name, content type and bytes.
fn parse_multipart(content_type: &str, body: &[u8]) -> Option<Vec<FormPart>> {
    let (kind, params) = content_type.split_once(';')?;
    if kind.trim() != "multipart/form-data" {
        return None;
    }
    let boundary = params.trim().strip_prefix("boundary=")?.trim_matches('"');
    let delimiter = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delimiter, 0)?;
    let mut parts = Vec::new();
    loop {
        let after = at + delimiter.len();
        if body.get(after..after + 2)? == b"--" {
            return Some(parts);
        }
        let start = after + 2;
        let next = find(body, &delimiter, start)?;
        let part = body.get(start..next - 2)?;
        let split = find(part, b"\r\n\r\n", 0)?;
        let headers = std::str::from_utf8(&part[..split]).ok()?;
        let (mut name, mut filename, mut part_type) = (None, None, None);
        for line in headers.split("\r\n") {
            let (key, value) = line.split_once(':')?;
            match key.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for param in value.split(';').map(str::trim) {
                        if let Some(v) = param.strip_prefix("name=") {
                            name = Some(v.trim_matches('"').to_owned());
                        } else if let Some(v) = param.strip_prefix("filename=") {
                            filename = Some(v.trim_matches('"').to_owned());
                        }
                    }
                }
                "content-type" => part_type = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        parts.push(FormPart {
            name: name?,
            filename,
            content_type: part_type,
            data: part[split + 4..].to_vec(),
        });
        at = next;
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": format!("{message} {BODY_SENTINEL}"), "type": "invalid_request_error"}})),
    )
        .into_response()
}

fn json_body(raw: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        raw,
    )
        .into_response()
}

async fn transcriptions(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(parts) = parse_multipart(content_type, &body) else {
        return error(StatusCode::BAD_REQUEST, "not multipart/form-data");
    };
    server.requests.lock().unwrap().push(Received {
        authorization: headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned()),
        parts,
    });
    let segment = |start: &str, end: &str, text: &str| {
        format!(
            r#"{{"id": 0, "seek": 0, "start": {start}, "end": {end}, "text": "{text}", "tokens": [50257], "avg_logprob": -0.2, "no_speech_prob": 0.01}}"#
        )
    };
    let verbose = |segments: Vec<String>| {
        json_body(format!(
            r#"{{"task": "transcribe", "language": "english", "duration": 2.0, "text": "{BODY_SENTINEL}", "segments": [{}]}}"#,
            segments.join(", ")
        ))
    };
    match server.mode {
        Mode::Segments => verbose(vec![
            segment("0.0", "1.24", " Synthetic patient has a cough."),
            segment("1.24", "1.3", "   "),
            segment("1.3", "2.9", " It started\\u202e two days ago. "),
        ]),
        Mode::TextOnly => json_body(r#"{"text": " Synthetic   words\nonly. "}"#.into()),
        Mode::Silence => json_body(r#"{"text": "", "segments": []}"#.into()),
        Mode::Garbage => (
            StatusCode::OK,
            format!("<html>{BODY_SENTINEL} not json</html>"),
        )
            .into_response(),
        Mode::Huge { announced: true } => {
            json_body(format!(r#"{{"text": "{}"}}"#, "A".repeat(17 << 20)))
        }
        Mode::Huge { announced: false } => {
            let chunk = Bytes::from(vec![b' '; 1 << 20]);
            let stream =
                futures::stream::iter((0..17).map(move |_| Ok::<_, Infallible>(chunk.clone())));
            Response::new(Body::from_stream(stream))
        }
        Mode::End(end) => verbose(vec![segment("0.5", end, "Synthetic words.")]),
        Mode::Backwards => verbose(vec![segment("1.5", "0.5", "Synthetic words.")]),
        Mode::TooManySegments => verbose(
            (0..10_000)
                .map(|i| segment("0.0", "0.001", &format!("{BODY_SENTINEL} {i}")))
                .collect(),
        ),
        Mode::LongText => verbose(vec![segment("0.0", "1.0", &"A".repeat(20 << 10))]),
        Mode::Status(status) => error(StatusCode::from_u16(status).unwrap(), "refused"),
        Mode::Slow { delay } => {
            tokio::time::sleep(delay).await;
            verbose(vec![segment("0.0", "1.0", "Synthetic words.")])
        }
        Mode::Drip => {
            let stream = futures::stream::unfold(0u32, |n| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                (n < 100).then(|| (Ok::<_, Infallible>(Bytes::from_static(b" ")), n + 1))
            });
            Response::new(Body::from_stream(stream))
        }
        Mode::Redirect { port } => (
            StatusCode::TEMPORARY_REDIRECT,
            [(
                header::LOCATION,
                format!("http://127.0.0.1:{port}/v1/audio/transcriptions"),
            )],
        )
            .into_response(),
    }
}

/// Two seconds of a quiet synthetic tone as the 16 kHz mono WAV the pipeline writes.
fn wav() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audio.wav");
    let samples: Vec<f32> = (0..AUDIO_MS as usize * 16)
        .map(|i| (i as f32 * 0.07).sin() * 0.2)
        .collect();
    write_wav_16k(&samples, &path).unwrap();
    (dir, path)
}

async fn engine(base_url: Url, key: Option<&str>, timeout: Duration) -> OpenAiTranscriber {
    let clearance = EndpointClearance::loopback(&base_url).await.unwrap();
    let mut config = OpenAiTranscribeConfig::new(base_url, MODEL);
    config.api_key = key.map(Into::into);
    config.timeout = timeout;
    OpenAiTranscriber::new(config, clearance).unwrap()
}

/// Runs the engine against a server in `mode` and returns its error, after checking that
/// neither its message nor its debug form shows the answer, the key, the text or the host.
async fn failure(mode: Mode, timeout: Duration) -> Error {
    let (url, _server) = start(mode).await;
    let (_dir, wav) = wav();
    let error = engine(url, Some(API_KEY), timeout)
        .await
        .transcribe(&wav)
        .await
        .unwrap_err();
    for shown in [error.to_string(), format!("{error:?}")] {
        for secret in [BODY_SENTINEL, "Synthetic", "AAAA", API_KEY, "127.0.0.1"] {
            assert!(!shown.contains(secret), "{shown:?} shows {secret:?}");
        }
    }
    error
}

/// What a progress callback heard: (done, total) in milliseconds.
type ProgressLog = Arc<Mutex<Vec<(u64, u64)>>>;

fn progress_log() -> (Progress, ProgressLog) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    (
        Arc::new(move |done, total| sink.lock().unwrap().push((done, total))),
        log,
    )
}

#[tokio::test]
async fn sends_the_wav_as_multipart_and_reads_the_segments() {
    let (url, server) = start(Mode::Segments).await;
    let (_dir, wav) = wav();
    let engine = engine(url.clone(), Some(API_KEY), Duration::from_secs(10)).await;
    assert_eq!(engine.name(), "openai-compatible");
    assert_eq!(
        engine.model(),
        format!("{MODEL} @ 127.0.0.1:{}", url.port().unwrap())
    );
    let (progress, log) = progress_log();
    let options = TranscribeOptions {
        vocabulary: vec![" metoprolol ".into(), "".into(), "acetaminophen".into()],
        progress: Some(progress),
    };
    let transcript = engine.transcribe_with(&wav, &options).await.unwrap();
    assert_eq!(transcript.engine, "openai-compatible");
    assert_eq!(transcript.model, engine.model());
    let segments: Vec<(u64, u64, &str)> = transcript
        .segments
        .iter()
        .map(|s| (s.start_ms, s.end_ms, s.text.expose()))
        .collect();
    // The blank segment is dropped, the overshoot clamped, the bidi override removed.
    assert_eq!(
        segments,
        [
            (0, 1240, "Synthetic patient has a cough."),
            (1300, AUDIO_MS, "It started two days ago."),
        ]
    );
    assert_eq!(*log.lock().unwrap(), [(0, AUDIO_MS), (AUDIO_MS, AUDIO_MS)]);

    let requests = server.requests.lock().unwrap();
    let [request] = requests.as_slice() else {
        panic!("{} requests", requests.len())
    };
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    let file = request.field("file").expect("a file part");
    assert_eq!(file.filename.as_deref(), Some("audio.wav"));
    assert_eq!(file.content_type.as_deref(), Some("audio/wav"));
    assert_eq!(file.data, std::fs::read(&wav).unwrap(), "the WAV bytes");
    assert_eq!(request.text("model").as_deref(), Some(MODEL));
    assert_eq!(
        request.text("response_format").as_deref(),
        Some("verbose_json")
    );
    assert_eq!(request.text("language").as_deref(), Some("en"));
    assert_eq!(request.text("temperature").as_deref(), Some("0"));
    assert_eq!(
        request.text("prompt").as_deref(),
        Some("metoprolol, acetaminophen")
    );
    let mut names: Vec<&str> = request.parts.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "file",
            "language",
            "model",
            "prompt",
            "response_format",
            "temperature"
        ]
    );
}

#[tokio::test]
async fn no_prompt_without_vocabulary_and_no_authorization_without_key() {
    let (url, server) = start(Mode::Segments).await;
    let (_dir, wav) = wav();
    let engine = engine(url, None, Duration::from_secs(10)).await;
    engine.transcribe(&wav).await.unwrap();
    let blank = TranscribeOptions {
        vocabulary: vec!["  ".into()],
        progress: None,
    };
    engine.transcribe_with(&wav, &blank).await.unwrap();
    let requests = server.requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    for request in requests.iter() {
        assert!(request.authorization.is_none());
        assert!(request.field("prompt").is_none());
        assert!(request.field("file").is_some());
    }
}

#[tokio::test]
async fn text_without_segments_spans_the_audio_and_silence_is_empty() {
    let (_dir, wav) = wav();
    let (url, _server) = start(Mode::TextOnly).await;
    let transcript = engine(url, None, Duration::from_secs(10))
        .await
        .transcribe(&wav)
        .await
        .unwrap();
    let [segment] = transcript.segments.as_slice() else {
        panic!("{:?}", transcript.segments)
    };
    assert_eq!((segment.start_ms, segment.end_ms), (0, AUDIO_MS));
    assert_eq!(segment.text.expose(), "Synthetic words only.");

    let (url, _server) = start(Mode::Silence).await;
    let transcript = engine(url, None, Duration::from_secs(10))
        .await
        .transcribe(&wav)
        .await
        .unwrap();
    assert!(transcript.segments.is_empty());
}

#[tokio::test]
async fn hostile_answers_are_refused() {
    let long = Duration::from_secs(10);
    let cases = [
        (Mode::Garbage, "engine_failed", "malformed"),
        (Mode::End("-1"), "engine_failed", "malformed"),
        (Mode::End("NaN"), "engine_failed", "malformed"),
        (Mode::End("Infinity"), "engine_failed", "malformed"),
        (Mode::End("1e999"), "engine_failed", "malformed"),
        (Mode::End("1e9"), "engine_failed", "malformed"),
        (Mode::End("\"1.0\""), "engine_failed", "malformed"),
        (Mode::Backwards, "engine_failed", "malformed"),
        (Mode::TooManySegments, "engine_failed", "too large"),
        (Mode::LongText, "engine_failed", "too large"),
        (Mode::Huge { announced: true }, "engine_failed", "too large"),
        (
            Mode::Huge { announced: false },
            "engine_failed",
            "too large",
        ),
    ];
    for (mode, code, message) in cases {
        let error = failure(mode, long).await;
        assert_eq!(error.code(), code, "{error}");
        assert!(error.to_string().contains(message), "{error}");
    }
}

#[tokio::test]
async fn error_statuses_are_retried_or_permanent_by_kind() {
    let long = Duration::from_secs(10);
    // Retried by the pipeline: the server may get over it.
    for status in [500, 502, 503, 429] {
        let error = failure(Mode::Status(status), long).await;
        assert_eq!(error.code(), "engine_unavailable", "{status}");
    }
    // Permanent: the same request will get the same answer.
    let error = failure(Mode::Status(401), long).await;
    assert_eq!(error.code(), "engine_misconfigured");
    assert!(error.to_string().contains("API key"), "{error}");
    let error = failure(Mode::Status(404), long).await;
    assert_eq!(error.code(), "engine_misconfigured");
    let error = failure(Mode::Status(400), long).await;
    assert_eq!(error.code(), "vendor_call_failed");
    assert!(error.to_string().contains("HTTP status 400"), "{error}");
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    // A second server that must never see the audio.
    let (elsewhere, other) = start(Mode::Segments).await;
    let port = elsewhere.port().unwrap();
    let error = failure(Mode::Redirect { port }, Duration::from_secs(10)).await;
    assert_eq!(error.code(), "engine_misconfigured");
    assert!(error.to_string().contains("redirect"), "{error}");
    assert!(other.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn slow_answers_time_out() {
    for mode in [
        Mode::Slow {
            delay: Duration::from_secs(5),
        },
        Mode::Drip,
    ] {
        let started = Instant::now();
        let error = failure(mode, Duration::from_millis(800)).await;
        assert_eq!(error.code(), "engine_failed");
        assert!(error.to_string().contains("timed out"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let url = Url::parse(&format!("http://{address}/v1")).unwrap();
    let (_dir, wav) = wav();
    let error = engine(url, None, Duration::from_secs(5))
        .await
        .transcribe(&wav)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "engine_unavailable");
}

#[tokio::test]
async fn localhost_is_pinned_to_what_was_verified() {
    let (url, server) = start(Mode::Segments).await;
    let local = Url::parse(&format!("http://localhost:{}/v1", url.port().unwrap())).unwrap();
    let (_dir, wav) = wav();
    let transcript = engine(local, None, Duration::from_secs(10))
        .await
        .transcribe(&wav)
        .await
        .unwrap();
    assert_eq!(transcript.segments.len(), 2);
    assert_eq!(server.requests.lock().unwrap().len(), 1);
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

// Refused before any connection: the checks look only at the URL and the settings.
#[tokio::test]
async fn endpoints_and_settings_that_are_not_cleared_are_refused() {
    let cleared = EndpointClearance::loopback(&url("http://127.0.0.1:8080/v1"))
        .await
        .unwrap();
    let build = |config: OpenAiTranscribeConfig, clearance: &EndpointClearance| {
        OpenAiTranscriber::new(config, clearance.clone())
            .map(|_| ())
            .map_err(|e| e.code())
    };
    // A loopback clearance covers its own host and port only.
    for other in [
        "https://example.com/v1",
        "http://192.0.2.1:8080/v1",
        "http://127.0.0.1:9090/v1",
        "http://127.0.0.2:8080/v1",
    ] {
        assert_eq!(
            build(OpenAiTranscribeConfig::new(url(other), MODEL), &cleared),
            Err("vendor_not_cleared"),
            "{other}"
        );
    }
    let base = OpenAiTranscribeConfig::new(url("http://127.0.0.1:8080/v1"), MODEL);
    assert_eq!(build(base.clone(), &cleared), Ok(()));
    for bad in [
        OpenAiTranscribeConfig {
            base_url: url("http://user:pw@127.0.0.1:8080/v1"),
            ..base.clone()
        },
        OpenAiTranscribeConfig {
            base_url: url("http://127.0.0.1:8080/v1?x=1"),
            ..base.clone()
        },
        OpenAiTranscribeConfig {
            base_url: url("ftp://127.0.0.1:8080/v1"),
            ..base.clone()
        },
        OpenAiTranscribeConfig {
            model: " ".into(),
            ..base.clone()
        },
        OpenAiTranscribeConfig {
            timeout: Duration::ZERO,
            ..base.clone()
        },
        OpenAiTranscribeConfig {
            api_key: Some("bad\nkey".into()),
            ..base.clone()
        },
    ] {
        assert_eq!(build(bad, &cleared), Err("engine_misconfigured"));
    }

    // A vendor clearance still needs TLS off this machine, and a vendor name.
    let vendor = EndpointClearance::VendorWithBaa {
        vendor: "synthetic-vendor".into(),
    };
    for insecure in ["http://192.0.2.1/v1", "http://localhost:8080/v1"] {
        let error = OpenAiTranscriber::new(
            OpenAiTranscribeConfig::new(url(insecure), MODEL),
            vendor.clone(),
        )
        .unwrap_err();
        assert_eq!(error.code(), "engine_misconfigured", "{insecure}");
        assert!(error.to_string().contains("https"), "{error}");
    }
    assert_eq!(
        build(
            OpenAiTranscribeConfig::new(url("https://speech.example.com/v1"), MODEL),
            &vendor
        ),
        Ok(())
    );
    let nameless = EndpointClearance::VendorWithBaa { vendor: " ".into() };
    assert_eq!(
        build(
            OpenAiTranscribeConfig::new(url("https://speech.example.com/v1"), MODEL),
            &nameless
        ),
        Err("vendor_not_cleared")
    );

    // The key shows in neither the settings' nor the engine's debug form, nor the model.
    let config = OpenAiTranscribeConfig {
        api_key: Some(API_KEY.into()),
        ..OpenAiTranscribeConfig::new(url("https://speech.example.com:8443/v1"), MODEL)
    };
    let engine = OpenAiTranscriber::new(config.clone(), vendor).unwrap();
    assert!(!format!("{config:?}").contains(API_KEY));
    assert!(!format!("{engine:?}").contains(API_KEY));
    assert_eq!(engine.model(), format!("{MODEL} @ speech.example.com:8443"));
}

#[tokio::test]
async fn a_missing_wav_is_an_io_error_and_nothing_is_sent() {
    let (url, server) = start(Mode::Segments).await;
    let dir = tempfile::tempdir().unwrap();
    let error = engine(url, None, Duration::from_secs(5))
        .await
        .transcribe(&dir.path().join("missing.wav"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "io_error");
    assert!(server.requests.lock().unwrap().is_empty());
}
