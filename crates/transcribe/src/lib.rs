//! Transcription for phivault: turns an uploaded recording of a clinical conversation into
//! timed text segments, on this machine, or, for a tenant cleared to send PHI to AWS,
//! with AWS HealthScribe ([`HealthScribe`], see `docs/healthscribe.md`).
//!
//! Three steps, each its own function so the server can run them where it wants:
//! [`probe`] (or [`probe_reader`], on an upload as it streams in) validates an upload
//! (decoding it fully, so damage is caught at upload time),
//! [`decode_mono_16k`] turns it into 16 kHz mono samples, [`write_wav_16k`] writes those
//! for an engine, and a [`Transcriber`] ([`Whisper`] in process, [`PocketSphinx`] or
//! [`CommandTranscriber`]) returns a [`Transcript`].
//!
//! # Accepted and refused audio
//!
//! Decoding is symphonia's (pure Rust, no system codecs). Accepted: WAV (integer/float PCM),
//! FLAC, Ogg Vorbis, MP3, MP4/M4A with AAC-LC, ADTS AAC; any rate from 4 kHz to 384 kHz,
//! any channel count (downmixed).
//!
//! Refused, each with a stable [`Error::code`]:
//! - an empty file, a file with no audio track or no frames: `empty_audio`;
//! - anything symphonia does not recognise (WebM/Matroska is not enabled, AMR, text…),
//!   chained Ogg streams and out-of-range sample rates: `unsupported_format`;
//! - a known container holding a codec with no decoder here: `unsupported_codec`. This
//!   includes **Ogg Opus** (what browsers' MediaRecorder and many phones produce):
//!   symphonia 0.6 has no Opus decoder. Convert such files to FLAC or WAV before upload, or
//!   add a decoder here later;
//! - data that fails to decode anywhere but in its very last packet: `corrupt_audio`.
//!   A cut upload is accepted up to the cut; its duration is what really decodes;
//! - audio longer than the caller's limit: `audio_too_long`.
//!
//! # PHI
//!
//! Audio, samples and transcript text are PHI. [`PhiText`] redacts itself in `Debug` and
//! `Display`; error messages carry no content, no paths and no engine output (an engine's
//! sanitized stderr tail is a separate field that only `Debug` shows). The command engine
//! works in a 0700 directory whose files are overwritten with zeros and removed after every
//! run, including failures and timeouts.

mod audio;
mod command;
mod engine;
mod error;
mod healthscribe;
mod openai;
mod pocketsphinx;
mod process;
mod whisper;

pub use audio::{
    AudioInfo, TARGET_RATE, decode_mono_16k, decode_to_wav_16k, probe, probe_reader, write_wav_16k,
};
pub use command::{CommandConfig, CommandTranscriber, OutputFormat, PrivateDir};
pub use engine::{
    PhiText, Progress, Segment, SpeakerRole, TranscribeOptions, Transcriber, Transcript,
};
pub use error::{EngineFailure, Error, Result, StderrTail};
pub use healthscribe::{
    HealthScribe, HealthScribeClearance, HealthScribeConfig, ScribeMedia, ScribeSettings,
    ScribeTag, StartMedicalScribeJobRequest, build_request, parse_transcript,
};
pub use openai::{OpenAiTranscribeConfig, OpenAiTranscriber};
pub use pocketsphinx::{PocketSphinx, PocketSphinxConfig};
pub use whisper::{
    FeatureSettings, MODEL_FILES, MelFrontEnd, ModelError, ModelRecord, PREPROCESSOR_CONFIG_JSON,
    RECORD_FILE, Whisper, WhisperConfig, install_from_wheel, installed_models, valid_model_name,
};
