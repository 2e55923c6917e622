//! A note generator that asks an OpenAI-compatible chat-completions server (llama.cpp,
//! vLLM, or a vendor under a BAA) to write the note, then parses and validates its answer.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use url::{Host, Url};

use crate::rules::check_transcript;
use crate::sentences::is_bidi_control;
use crate::{
    Error, NO_FINDINGS, Note, NoteGenerator, NoteKind, NoteSection, PhiText, Result,
    SectionHeading, Speaker, TranscriptInput,
};

/// The most response body read from the server; past it the answer is refused unread.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// How many `{` in a completion are tried as the start of an embedded JSON object.
const MAX_EMBEDDED_TRIES: usize = 16;

/// Settings of an OpenAI-compatible chat-completions endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The API root, up to and including `/v1` (`http://127.0.0.1:8080/v1`); requests go to
    /// `<base_url>/chat/completions`. No user name, password, query or fragment.
    pub base_url: Url,
    /// The model name the server knows.
    pub model: String,
    /// A bearer token, if the server wants one. Never logged.
    pub api_key: Option<SecretString>,
    /// The most time one note may take, connection to last byte.
    pub timeout: Duration,
    /// The `max_tokens` of the request.
    pub max_tokens: u32,
    /// Whether to ask for `response_format: {"type": "json_object"}` (llama.cpp and vLLM
    /// support it; turn it off for a server that rejects the field). The answer is parsed
    /// leniently either way.
    pub json_mode: bool,
}

impl OpenAiConfig {
    /// Settings with defaults: no key, 120 s timeout, 2048 tokens, JSON mode on.
    pub fn new(base_url: Url, model: impl Into<String>) -> Self {
        OpenAiConfig {
            base_url,
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(120),
            max_tokens: 2048,
            json_mode: true,
        }
    }
}

/// A URL whose host was verified to be this machine: a loopback IP literal, or `localhost`
/// resolving only to loopback addresses (which requests are then pinned to).
#[derive(Debug, Clone)]
pub struct LoopbackEndpoint {
    host: String,
    port: Option<u16>,
    /// For `localhost`: the loopback addresses it resolved to.
    pinned: Vec<SocketAddr>,
}

impl LoopbackEndpoint {
    /// Verifies that `url` points at this machine (127.0.0.0/8 or ::1). Any other host,
    /// including a name other than `localhost`, is refused with `endpoint_not_cleared`.
    pub async fn verify(url: &Url) -> Result<LoopbackEndpoint> {
        check_scheme(url)?;
        let port = url.port_or_known_default();
        match url.host() {
            Some(Host::Ipv4(ip)) if ip.is_loopback() => {}
            Some(Host::Ipv6(ip)) if is_loopback_ip(IpAddr::V6(ip)) => {}
            Some(Host::Domain(name)) if is_localhost(name) => {
                let port = port.ok_or(Error::EndpointNotCleared)?;
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
                    .await
                    .map_err(|_| Error::EndpointNotCleared)?
                    .collect();
                if addrs.is_empty() || !addrs.iter().all(|a| is_loopback_ip(a.ip())) {
                    return Err(Error::EndpointNotCleared);
                }
                return Ok(LoopbackEndpoint {
                    host: name.to_ascii_lowercase(),
                    port: Some(port),
                    pinned: addrs,
                });
            }
            _ => return Err(Error::EndpointNotCleared),
        }
        Ok(LoopbackEndpoint {
            host: host_string(url),
            port,
            pinned: Vec::new(),
        })
    }

    fn covers(&self, url: &Url) -> bool {
        self.host == host_string(url) && self.port == url.port_or_known_default()
    }
}

/// Why an endpoint may receive transcripts. Without one, [`OpenAiGenerator::new`] cannot be
/// called.
#[derive(Debug, Clone)]
pub enum EndpointClearance {
    /// The endpoint is on this machine (see [`LoopbackEndpoint::verify`]).
    Loopback(LoopbackEndpoint),
    /// The endpoint is run by a vendor that has signed a BAA; the caller checked the tenant's
    /// vendor registry before building this.
    VendorWithBaa {
        /// The vendor's name as registered.
        vendor: String,
    },
}

impl EndpointClearance {
    /// Verifies that `url` is on this machine and returns the clearance for it.
    pub async fn loopback(url: &Url) -> Result<EndpointClearance> {
        LoopbackEndpoint::verify(url)
            .await
            .map(EndpointClearance::Loopback)
    }

    /// An HTTP client builder for `url`, an API root this clearance covers: no environment
    /// proxy, no redirects, and `localhost` pinned to the addresses that were verified.
    /// Refused: a URL that is not plain http(s) without credentials, query or fragment
    /// (`invalid_config`); one the loopback clearance was not verified for, or a vendor
    /// clearance without a vendor name (`endpoint_not_cleared`); plain http to a host that is
    /// not a loopback IP literal under a vendor clearance (`insecure_endpoint`). Shared by
    /// every client that sends PHI to an OpenAI-compatible server; the caller adds timeouts.
    pub fn client_builder(&self, url: &Url) -> Result<reqwest::ClientBuilder> {
        check_base_url(url)?;
        let mut builder = reqwest::Client::builder()
            // An environment proxy or a redirect would carry PHI to a host nobody cleared.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none());
        match self {
            EndpointClearance::Loopback(endpoint) => {
                if !endpoint.covers(url) {
                    return Err(Error::EndpointNotCleared);
                }
                // Resolve `localhost` to the addresses that were verified, not afresh.
                if !endpoint.pinned.is_empty() {
                    builder = builder.resolve_to_addrs(&endpoint.host, &endpoint.pinned);
                }
            }
            EndpointClearance::VendorWithBaa { vendor } => {
                if vendor.trim().is_empty() {
                    return Err(Error::EndpointNotCleared);
                }
                // A vendor clearance does not verify where a name resolves, so only a
                // loopback IP literal may be spoken to without TLS.
                if url.scheme() == "http" && !is_loopback_literal(url) {
                    return Err(Error::InsecureEndpoint);
                }
            }
        }
        Ok(builder)
    }
}

fn is_localhost(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost") || name.eq_ignore_ascii_case("localhost.")
}

fn is_loopback_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn host_string(url: &Url) -> String {
    url.host_str().unwrap_or_default().to_ascii_lowercase()
}

fn is_loopback_literal(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => is_loopback_ip(IpAddr::V6(ip)),
        _ => false,
    }
}

fn check_scheme(url: &Url) -> Result<()> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        _ => Err(Error::InvalidConfig("the base URL must be http or https")),
    }
}

/// An API root: http(s), a host, and no credentials, query or fragment.
fn check_base_url(url: &Url) -> Result<()> {
    check_scheme(url)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::InvalidConfig(
            "the base URL must not carry credentials",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::InvalidConfig(
            "the base URL must not have a query or fragment",
        ));
    }
    if url.host().is_none() {
        return Err(Error::InvalidConfig("the base URL has no host"));
    }
    Ok(())
}

/// The OpenAI-compatible note generator (`"openai-compatible"`).
#[derive(Debug, Clone)]
pub struct OpenAiGenerator {
    config: OpenAiConfig,
    endpoint: Url,
    client: reqwest::Client,
}

impl OpenAiGenerator {
    /// Builds the generator for an endpoint cleared to receive PHI. Refused: a URL the
    /// loopback clearance was not verified for, or a non-loopback URL without a vendor
    /// clearance (`endpoint_not_cleared`); plain http to a host that is not loopback
    /// (`insecure_endpoint`); unusable settings (`invalid_config`). Does no I/O.
    pub fn new(config: OpenAiConfig, clearance: EndpointClearance) -> Result<OpenAiGenerator> {
        let url = &config.base_url;
        check_base_url(url)?;
        if config.model.trim().is_empty() {
            return Err(Error::InvalidConfig("the model name is empty"));
        }
        if config.max_tokens == 0 || config.timeout.is_zero() {
            return Err(Error::InvalidConfig(
                "max_tokens and timeout must be positive",
            ));
        }
        if let Some(key) = &config.api_key
            && HeaderValue::from_str(&format!("Bearer {}", key.expose_secret())).is_err()
        {
            return Err(Error::InvalidConfig(
                "the API key is not a valid header value",
            ));
        }

        let builder = clearance
            .client_builder(url)?
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)));
        let client = builder
            .build()
            .map_err(|_| Error::InvalidConfig("the HTTP client could not be built"))?;

        let mut endpoint = url.clone();
        let path = format!("{}/chat/completions", url.path().trim_end_matches('/'));
        endpoint.set_path(&path);
        Ok(OpenAiGenerator {
            config,
            endpoint,
            client,
        })
    }

    async fn exchange(&self, body: &Value) -> Result<Vec<u8>> {
        let mut request = self.client.post(self.endpoint.clone()).json(body);
        if let Some(key) = &self.config.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                .map_err(|_| Error::InvalidConfig("the API key is not a valid header value"))?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let mut response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        if status != StatusCode::OK {
            tracing::warn!(
                status = status.as_u16(),
                "note generator answered with an error status"
            );
            return Err(Error::Unavailable {
                status: Some(status.as_u16()),
            });
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(Error::BadResponse("the answer is larger than the limit"));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Error::BadResponse("the answer is larger than the limit"));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// Maps a transport failure without its text, which can name the URL.
fn transport_error(error: reqwest::Error) -> Error {
    if error.is_timeout() {
        Error::Timeout
    } else {
        tracing::warn!(
            connect = error.is_connect(),
            "note generator could not be reached"
        );
        Error::Unavailable { status: None }
    }
}

#[async_trait]
impl NoteGenerator for OpenAiGenerator {
    fn name(&self) -> &'static str {
        "openai-compatible"
    }

    async fn generate(&self, kind: NoteKind, transcript: &TranscriptInput) -> Result<Note> {
        check_transcript(transcript)?;
        let request = request_body(&self.config, kind, transcript);
        let body = tokio::time::timeout(self.config.timeout, self.exchange(&request))
            .await
            .map_err(|_| Error::Timeout)??;
        drop(request);
        let content = completion_content(&body)?;
        let object = extract_json_object(&content)
            .ok_or(Error::BadResponse("the completion holds no JSON object"))?;
        let sections = validate_sections(kind, &object, transcript.segments.len())?;
        Ok(Note {
            kind,
            generator: self.name().to_owned(),
            model: Some(self.config.model.clone()),
            sections,
            unused_sentences: None,
        })
    }
}

fn system_prompt(kind: NoteKind) -> String {
    let headings: Vec<&str> = kind.headings().iter().map(|h| h.title()).collect();
    format!(
        "You write clinical documentation from the transcript of a clinical conversation. \
         Write a {title} note with exactly these sections, in this order: {list}. \
         Use only information stated in the transcript: do not add findings, diagnoses, \
         medications or plans that nobody said. When the transcript gives nothing for a \
         section, its text is exactly \"{NO_FINDINGS}\". Write plain prose without markdown. \
         Answer with one JSON object and nothing else, of this form: \
         {{\"sections\": [{{\"heading\": \"<section name>\", \"text\": \"<section text>\", \
         \"sources\": [<numbers of the transcript lines the text draws on>]}}]}}",
        title = kind.title(),
        list = headings.join(", "),
    )
}

/// The transcript as numbered lines, `[index] Speaker: words`, each segment on one line.
fn transcript_prompt(transcript: &TranscriptInput) -> String {
    let mut out = String::from("Transcript (each line is [number] speaker: words):\n");
    for (index, segment) in transcript.segments.iter().enumerate() {
        let speaker = segment.speaker.map_or("Unknown", |s| match s {
            Speaker::Clinician => "Clinician",
            Speaker::Patient => "Patient",
            Speaker::Other => "Other",
        });
        let words = one_line(segment.text.expose());
        if words.is_empty() {
            continue;
        }
        out.push_str(&format!("[{index}] {speaker}: {words}\n"));
    }
    out
}

fn one_line(text: &str) -> String {
    text.split(char::is_whitespace)
        .map(|w| {
            w.chars()
                .filter(|&c| !c.is_control() && !is_bidi_control(c))
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn request_body(config: &OpenAiConfig, kind: NoteKind, transcript: &TranscriptInput) -> Value {
    let mut body = json!({
        "model": config.model,
        "messages": [
            {"role": "system", "content": system_prompt(kind)},
            {"role": "user", "content": transcript_prompt(transcript)},
        ],
        "temperature": 0,
        "max_tokens": config.max_tokens,
        "stream": false,
    });
    if config.json_mode {
        body["response_format"] = json!({"type": "json_object"});
    }
    body
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

fn completion_content(body: &[u8]) -> Result<String> {
    let completion: Completion = serde_json::from_slice(body)
        .map_err(|_| Error::BadResponse("the answer is not a chat completion"))?;
    completion
        .choices
        .into_iter()
        .next()
        .and_then(|choice| choice.message.content)
        .ok_or(Error::BadResponse("the completion has no message content"))
}

/// The JSON object in a completion: the whole content, a fenced block, or the first object
/// embedded in prose.
fn extract_json_object(content: &str) -> Option<Value> {
    let as_object = |text: &str| match serde_json::from_str::<Value>(text.trim()) {
        Ok(value @ Value::Object(_)) => Some(value),
        _ => None,
    };
    if let Some(value) = as_object(content) {
        return Some(value);
    }
    if let Some(value) = fenced_block(content).and_then(as_object) {
        return Some(value);
    }
    content
        .match_indices('{')
        .take(MAX_EMBEDDED_TRIES)
        .find_map(|(at, _)| {
            match serde_json::Deserializer::from_str(&content[at..])
                .into_iter::<Value>()
                .next()
            {
                Some(Ok(value @ Value::Object(_))) => Some(value),
                _ => None,
            }
        })
}

/// The inside of the first ```-fenced block (after its language tag line).
fn fenced_block(content: &str) -> Option<&str> {
    let open = content.find("```")?;
    let after = &content[open + 3..];
    let body_start = after.find('\n')? + 1;
    let body = &after[body_start..];
    let close = body.find("```")?;
    Some(&body[..close])
}

/// Checks the model's sections: every heading of `kind` exactly once, nothing else, text a
/// string (or list of strings), sources segment numbers. Out-of-range sources are dropped.
fn validate_sections(
    kind: NoteKind,
    object: &Value,
    segment_count: usize,
) -> Result<Vec<NoteSection>> {
    let entries: Vec<(&str, &Value)> = match object.get("sections") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.get("heading")
                    .and_then(Value::as_str)
                    .map(|heading| (heading, item))
                    .ok_or(Error::BadResponse("a section has no heading"))
            })
            .collect::<Result<_>>()?,
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        _ => return Err(Error::BadResponse("the note has no sections")),
    };
    let headings = kind.headings();
    let mut found: Vec<Option<NoteSection>> = vec![None; headings.len()];
    for (name, body) in entries {
        let index = headings
            .iter()
            .position(|h| heading_matches(*h, name))
            .ok_or(Error::BadResponse(
                "the note has a section that does not belong to it",
            ))?;
        if found[index].is_some() {
            return Err(Error::BadResponse("the note repeats a section"));
        }
        let (text, sources) = match body {
            Value::String(_) | Value::Array(_) => (section_text(body)?, Vec::new()),
            Value::Object(_) => (
                section_text(body.get("text").unwrap_or(&Value::Null))?,
                section_sources(body.get("sources"), segment_count)?,
            ),
            _ => return Err(Error::BadResponse("a section's text is not text")),
        };
        found[index] = Some(NoteSection {
            heading: headings[index],
            text,
            sources,
        });
    }
    found
        .into_iter()
        .map(|section| section.ok_or(Error::BadResponse("the note lacks a section")))
        .collect()
}

fn heading_matches(heading: SectionHeading, name: &str) -> bool {
    name.trim()
        .trim_end_matches(':')
        .trim()
        .eq_ignore_ascii_case(heading.title())
}

fn section_text(value: &Value) -> Result<PhiText> {
    let text = match value {
        Value::String(text) => clean_generated(text),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(clean_generated))
            .collect::<Option<Vec<_>>>()
            .ok_or(Error::BadResponse("a section's text is not text"))?
            .into_iter()
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return Err(Error::BadResponse("a section's text is not text")),
    };
    Ok(PhiText::new(if text.is_empty() {
        NO_FINDINGS.to_owned()
    } else {
        text
    }))
}

/// Generated text keeps its line breaks; other whitespace controls become spaces, and other
/// control and bidi-override characters, which could disguise the note where it is
/// displayed, are removed.
fn clean_generated(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .filter(|&c| (c.is_whitespace() || !c.is_control()) && !is_bidi_control(c))
        .map(|c| {
            if c != '\n' && c.is_whitespace() {
                ' '
            } else {
                c
            }
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn section_sources(value: Option<&Value>, segment_count: usize) -> Result<Vec<usize>> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let items = value.as_array().ok_or(Error::BadResponse(
        "a section's sources are not segment numbers",
    ))?;
    let mut sources = BTreeSet::new();
    for item in items {
        let number = item.as_u64().ok_or(Error::BadResponse(
            "a section's sources are not segment numbers",
        ))?;
        if let Ok(number) = usize::try_from(number)
            && number < segment_count
        {
            sources.insert(number);
        }
    }
    Ok(sources.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_object_whole_fenced_or_embedded() {
        let object = r#"{"sections": []}"#;
        assert!(extract_json_object(object).is_some());
        assert!(extract_json_object(&format!("```json\n{object}\n```")).is_some());
        assert!(extract_json_object(&format!("Here is the note:\n{object}\nDone {{")).is_some());
        assert!(extract_json_object("no object here").is_none());
        assert!(extract_json_object("[1, 2]").is_none());
        assert!(extract_json_object(&"{".repeat(100_000)).is_none());
    }

    #[test]
    fn validation_requires_each_heading_once() {
        let full = json!({"sections": [
            {"heading": "Subjective", "text": "a", "sources": [0, 0, 7]},
            {"heading": "objective:", "text": ["b", "c"]},
            {"heading": "Assessment", "text": ""},
            {"heading": "PLAN", "text": "d\u{202E}\u{0}\te", "sources": null},
        ]});
        let sections = validate_sections(NoteKind::Soap, &full, 3).unwrap();
        assert_eq!(sections[0].sources, [0]);
        assert_eq!(sections[1].text.expose(), "b\nc");
        assert_eq!(sections[2].text.expose(), NO_FINDINGS);
        assert_eq!(sections[3].text.expose(), "d e");

        let as_map = json!({"sections": {"Subjective": "a", "Objective": "b", "Assessment": "c", "Plan": "d"}});
        assert_eq!(
            validate_sections(NoteKind::Soap, &as_map, 1).unwrap().len(),
            4
        );

        let missing = json!({"sections": [{"heading": "Subjective", "text": "a"}]});
        let extra = json!({"sections": {"Subjective": "a", "Objective": "b", "Assessment": "c", "Plan": "d", "Billing": "e"}});
        let twice = json!({"sections": [{"heading": "Plan", "text": "a"}, {"heading": "plan", "text": "b"}]});
        let bad_sources = json!({"sections": [{"heading": "Plan", "text": "a", "sources": ["x"]}]});
        for bad in [missing, extra, twice, bad_sources, json!({"note": "x"})] {
            assert_eq!(
                validate_sections(NoteKind::Soap, &bad, 1)
                    .unwrap_err()
                    .code(),
                "generator_bad_response"
            );
        }
    }

    #[test]
    fn prompt_numbers_segments_on_single_lines() {
        let transcript = TranscriptInput {
            segments: vec![
                crate::InputSegment {
                    start_ms: 0,
                    end_ms: 1,
                    text: PhiText::new("synthetic\nline\u{202E} one"),
                    speaker: Some(Speaker::Patient),
                },
                crate::InputSegment {
                    start_ms: 1,
                    end_ms: 2,
                    text: PhiText::new("  "),
                    speaker: None,
                },
                crate::InputSegment {
                    start_ms: 2,
                    end_ms: 3,
                    text: PhiText::new("two"),
                    speaker: None,
                },
            ],
        };
        assert_eq!(
            transcript_prompt(&transcript),
            "Transcript (each line is [number] speaker: words):\n[0] Patient: synthetic line one\n[2] Unknown: two\n"
        );
    }
}
