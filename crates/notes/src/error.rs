/// What can go wrong while writing a note. Messages never quote transcript text, note text,
/// a response body or a key; each variant has a stable [`Error::code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transcript holds no words (no segments, or only blanks and punctuation).
    #[error("the transcript is empty")]
    EmptyTranscript,

    /// The transcript exceeds the size the generators accept.
    #[error("the transcript is too large to write a note from")]
    TranscriptTooLarge,

    /// The endpoint is neither a verified loopback address nor a vendor under a BAA.
    #[error("the note generator endpoint is not cleared to receive PHI")]
    EndpointNotCleared,

    /// Plain http to a host that is not loopback.
    #[error("the note generator endpoint must use https unless it is on this machine")]
    InsecureEndpoint,

    /// The generator's configuration is unusable.
    #[error("invalid note generator configuration: {0}")]
    InvalidConfig(&'static str),

    /// The generator answered, but not with a usable note.
    #[error("the note generator gave an unusable answer: {0}")]
    BadResponse(&'static str),

    /// The generator could not be reached or answered with an error status.
    #[error("the note generator is unavailable{}", status_suffix(*.status))]
    Unavailable {
        /// The HTTP status it answered with, if it answered at all.
        status: Option<u16>,
    },

    /// The generator did not answer in time.
    #[error("the note generator did not answer in time")]
    Timeout,

    /// The work was cancelled before it finished (the runtime is shutting down).
    #[error("note generation was cancelled")]
    Cancelled,
}

fn status_suffix(status: Option<u16>) -> String {
    match status {
        Some(status) => format!(" (it answered HTTP {status})"),
        None => String::new(),
    }
}

impl Error {
    /// The stable machine code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::EmptyTranscript => "empty_transcript",
            Error::TranscriptTooLarge => "transcript_too_large",
            Error::EndpointNotCleared => "endpoint_not_cleared",
            Error::InsecureEndpoint => "insecure_endpoint",
            Error::InvalidConfig(_) => "invalid_config",
            Error::BadResponse(_) => "generator_bad_response",
            Error::Unavailable { .. } => "generator_unavailable",
            Error::Timeout => "generator_timeout",
            Error::Cancelled => "generation_cancelled",
        }
    }
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_snake_case() {
        let all = [
            (Error::EmptyTranscript, "empty_transcript"),
            (Error::TranscriptTooLarge, "transcript_too_large"),
            (Error::EndpointNotCleared, "endpoint_not_cleared"),
            (Error::InsecureEndpoint, "insecure_endpoint"),
            (Error::InvalidConfig("x"), "invalid_config"),
            (Error::BadResponse("x"), "generator_bad_response"),
            (
                Error::Unavailable { status: Some(500) },
                "generator_unavailable",
            ),
            (Error::Timeout, "generator_timeout"),
            (Error::Cancelled, "generation_cancelled"),
        ];
        for (error, code) in all {
            assert_eq!(error.code(), code);
        }
        assert_eq!(
            Error::Unavailable { status: Some(503) }.to_string(),
            "the note generator is unavailable (it answered HTTP 503)"
        );
        assert_eq!(
            Error::Unavailable { status: None }.to_string(),
            "the note generator is unavailable"
        );
    }
}
