//! Transcription engines for phivault.
