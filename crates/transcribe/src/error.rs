//! The crate's one error type.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

/// Why an engine run failed. Never carries engine output, which may quote the recording.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineFailure {
    /// The program could not be started.
    Spawn,
    /// The program ran past its time budget and was killed (with its whole process group).
    Timeout(Duration),
    /// The program exited unsuccessfully; `None` when a signal ended it.
    Exit(Option<i32>),
    /// The program's output is not in the expected shape.
    MalformedOutput,
    /// The program wrote more output than any transcript needs.
    OutputTooLarge,
    /// Its private working directory could not be prepared.
    WorkDir,
    /// A cloud transcription job ended in failure.
    JobFailed,
}

impl fmt::Display for EngineFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn => f.write_str("it could not be started"),
            Self::Timeout(t) if t.as_secs() == 0 => {
                write!(f, "it timed out after {} ms", t.as_millis())
            }
            Self::Timeout(t) => write!(f, "it timed out after {} s", t.as_secs()),
            Self::Exit(Some(code)) => write!(f, "it exited with status {code}"),
            Self::Exit(None) => f.write_str("it was ended by a signal"),
            Self::MalformedOutput => f.write_str("its output was malformed"),
            Self::OutputTooLarge => f.write_str("its output was too large"),
            Self::WorkDir => f.write_str("its private working directory could not be prepared"),
            Self::JobFailed => f.write_str("the cloud job failed"),
        }
    }
}

/// Everything that can go wrong probing, decoding or transcribing. Each variant has a stable
/// machine [`code`](Error::code); messages never contain audio, transcript text or paths.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The file is empty, has no audio track, or decodes to zero frames.
    #[error("the upload holds no audio")]
    EmptyAudio,
    /// The container is not one this crate reads (or is a variant it refuses).
    #[error("the file is not in a supported audio format")]
    UnsupportedFormat,
    /// The container is readable but its codec is not decodable here (e.g. Opus).
    #[error("the audio codec ({codec}) is not supported")]
    UnsupportedCodec {
        /// Short codec name, or "unknown".
        codec: &'static str,
    },
    /// The data fails to decode.
    #[error("the audio data is corrupt")]
    CorruptAudio,
    /// The audio is longer than the caller's limit.
    #[error("the audio is longer than the limit of {} s", limit.as_secs())]
    AudioTooLong {
        /// The limit that was exceeded.
        limit: Duration,
    },
    /// Reading or writing a file failed.
    #[error("an audio file could not be read or written")]
    Io(#[source] std::io::Error),
    /// The transcription engine (program or model) is not installed.
    #[error("the transcription engine is not available")]
    EngineUnavailable,
    /// The engine's configuration cannot work.
    #[error("the transcription engine is misconfigured: {0}")]
    EngineMisconfigured(&'static str),
    /// The engine ran and failed.
    #[error("the transcription engine failed: {reason}")]
    EngineFailed {
        /// What went wrong.
        reason: EngineFailure,
        /// The last few hundred characters of the program's stderr, reduced to printable
        /// ASCII, for an operator's diagnosis. An engine may echo what it heard there, so
        /// neither `Debug` nor the message shows it: only [`StderrTail::expose`] does.
        stderr_tail: Option<StderrTail>,
    },
    /// A cloud engine was asked to run without a clearance for the tenant: PHI mode on and
    /// the vendor registered with a BAA on file. Raised before any network call.
    #[error("the transcription vendor is not cleared for this tenant")]
    VendorNotCleared,
    /// A call to a cloud service (object storage or the transcription API) failed.
    #[error("a call to the transcription vendor failed ({operation}: {kind})")]
    VendorCall {
        /// The operation, e.g. "StartMedicalScribeJob" or "S3 PutObject".
        operation: &'static str,
        /// The service's error code ("AccessDeniedException") or the kind of failure
        /// ("timeout", "connection"); never content.
        kind: String,
    },
    /// A fault in this crate or a library it uses, not in the input.
    #[error("internal error in audio processing")]
    Internal(&'static str),
}

impl Error {
    /// The stable machine code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EmptyAudio => "empty_audio",
            Self::UnsupportedFormat => "unsupported_format",
            Self::UnsupportedCodec { .. } => "unsupported_codec",
            Self::CorruptAudio => "corrupt_audio",
            Self::AudioTooLong { .. } => "audio_too_long",
            Self::Io(_) => "io_error",
            Self::EngineUnavailable => "engine_unavailable",
            Self::EngineMisconfigured(_) => "engine_misconfigured",
            Self::EngineFailed { .. } => "engine_failed",
            Self::VendorNotCleared => "vendor_not_cleared",
            Self::VendorCall { .. } => "vendor_call_failed",
            Self::Internal(_) => "internal_error",
        }
    }

    pub(crate) fn engine(reason: EngineFailure) -> Self {
        Self::EngineFailed {
            reason,
            stderr_tail: None,
        }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An engine's stderr tail, withheld from `Debug` and `Display` (it may hold words the
/// engine heard).
#[derive(Clone, PartialEq, Eq)]
pub struct StderrTail(String);

impl StderrTail {
    /// Wraps a sanitized tail.
    pub(crate) fn new(tail: String) -> StderrTail {
        StderrTail(tail)
    }

    /// The tail, for an operator's deliberate look (never for logs).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StderrTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StderrTail(<withheld, {} chars>)", self.0.len())
    }
}
