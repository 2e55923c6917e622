//! An engine that runs a configured local program (e.g. whisper.cpp's `whisper-cli`).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::process::Command;

use crate::audio::wav_16k_duration_ms;
use crate::engine::{PhiText, Segment, SpeakerRole, Transcriber, Transcript};
use crate::error::{EngineFailure, Error, Result};
use crate::pocketsphinx::is_executable;
use crate::process;

/// Name of the copy of the audio inside the private directory.
const INPUT_NAME: &str = "input.wav";
/// No transcript needs more; a program printing more is misbehaving.
const OUTPUT_CAP: usize = 32 << 20;

/// How the program reports its transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Plain text on stdout: one segment spanning the whole audio.
    PlainText,
    /// whisper.cpp's `-oj` file `{input}.json`:
    /// `{"transcription":[{"offsets":{"from":ms,"to":ms},"text":"…"}]}`.
    WhisperCppJson,
    /// JSON on stdout: `[{"start_ms":…,"end_ms":…,"text":"…","speaker":"patient"?}]`.
    SegmentsJson,
}

/// What to run and how to read its answer.
#[derive(Clone, Debug)]
pub struct CommandConfig {
    /// Absolute path of an executable.
    pub program: PathBuf,
    /// Arguments; `{input}` becomes the path of the private copy of the 16 kHz WAV and
    /// `{output_dir}` the private directory (also the working directory and `TMPDIR`).
    pub args: Vec<String>,
    /// Where and how the transcript comes out.
    pub output: OutputFormat,
    /// Longest one run may take; the program's process group is killed past it.
    pub timeout: Duration,
    /// Model description recorded with each transcript, e.g. "whisper.cpp ggml-base.en".
    pub model: String,
    /// Parent of the private directories; default the system temp dir. Point it at a tmpfs
    /// or the encrypted data volume: overwriting before deletion is no guarantee on SSDs or
    /// copy-on-write file systems.
    pub work_dir: Option<PathBuf>,
}

/// The command engine.
#[derive(Clone, Debug)]
pub struct CommandTranscriber {
    config: CommandConfig,
}

impl CommandTranscriber {
    /// Validates the configuration: `engine_misconfigured` unless the program is an absolute
    /// path to an executable file, some argument mentions `{input}`, and the timeout is
    /// non-zero.
    pub fn new(config: CommandConfig) -> Result<Self> {
        if !config.program.is_absolute() {
            return Err(Error::EngineMisconfigured(
                "the program path is not absolute",
            ));
        }
        if !is_executable(&config.program) {
            return Err(Error::EngineMisconfigured(
                "the program is not an executable file",
            ));
        }
        if !config.args.iter().any(|a| a.contains("{input}")) {
            return Err(Error::EngineMisconfigured("no argument passes {input}"));
        }
        if config.timeout.is_zero() {
            return Err(Error::EngineMisconfigured("the timeout is zero"));
        }
        Ok(Self { config })
    }

    async fn run_in(&self, dir: &Path, wav: &Path, duration_ms: u64) -> Result<Vec<Segment>> {
        let input = dir.join(INPUT_NAME);
        tokio::fs::copy(wav, &input).await.map_err(Error::Io)?;
        let input_str = input.to_str().ok_or(Error::Internal("temp path"))?;
        let dir_str = dir.to_str().ok_or(Error::Internal("temp path"))?;
        let args = self.config.args.iter().map(|a| {
            a.replace("{input}", input_str)
                .replace("{output_dir}", dir_str)
        });
        let mut cmd = Command::new(&self.config.program);
        cmd.args(args).current_dir(dir).env("TMPDIR", dir);
        let finished = process::run(cmd, self.config.timeout, OUTPUT_CAP)
            .await?
            .check()?;
        let malformed = || Error::EngineFailed {
            reason: EngineFailure::MalformedOutput,
            stderr_tail: finished.stderr_tail.clone(),
        };
        let segments = match self.config.output {
            OutputFormat::PlainText => {
                let text = std::str::from_utf8(&finished.stdout).map_err(|_| malformed())?;
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if text.is_empty() {
                    Vec::new()
                } else {
                    vec![Segment {
                        start_ms: 0,
                        end_ms: duration_ms,
                        text: PhiText::new(text),
                        speaker: None,
                    }]
                }
            }
            OutputFormat::SegmentsJson => {
                let raw: Vec<RawSegment> =
                    serde_json::from_slice(&finished.stdout).map_err(|_| malformed())?;
                let raw = raw
                    .into_iter()
                    .map(|s| (s.start_ms, s.end_ms, s.text, s.speaker))
                    .collect();
                to_segments(raw, duration_ms).ok_or_else(malformed)?
            }
            OutputFormat::WhisperCppJson => {
                let json_path = dir.join(format!("{INPUT_NAME}.json"));
                let bytes = read_capped(&json_path).await.map_err(|e| match e {
                    Error::Io(_) => malformed(),
                    other => other,
                })?;
                let doc: WhisperDoc = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
                let raw = doc
                    .transcription
                    .into_iter()
                    .map(|s| (s.offsets.from, s.offsets.to, s.text, None))
                    .collect();
                to_segments(raw, duration_ms).ok_or_else(malformed)?
            }
        };
        Ok(segments)
    }
}

#[async_trait]
impl Transcriber for CommandTranscriber {
    fn name(&self) -> &'static str {
        "command"
    }

    fn model(&self) -> String {
        self.config.model.clone()
    }

    async fn transcribe(&self, wav_16k_mono: &Path) -> Result<Transcript> {
        let path = wav_16k_mono.to_owned();
        let duration_ms = tokio::task::spawn_blocking(move || wav_16k_duration_ms(&path))
            .await
            .map_err(|_| Error::Internal("join"))??;
        let dir = PrivateDir::create(self.config.work_dir.as_deref())?;
        let outcome = self.run_in(dir.path(), wav_16k_mono, duration_ms).await;
        dir.wipe().await;
        Ok(Transcript {
            engine: self.name().to_owned(),
            model: self.model(),
            segments: outcome?,
        })
    }
}

#[derive(Deserialize)]
struct RawSegment {
    start_ms: u64,
    end_ms: u64,
    text: String,
    #[serde(default)]
    speaker: Option<SpeakerRole>,
}

#[derive(Deserialize)]
struct WhisperDoc {
    transcription: Vec<WhisperSegment>,
}

#[derive(Deserialize)]
struct WhisperSegment {
    offsets: WhisperOffsets,
    text: String,
}

#[derive(Deserialize)]
struct WhisperOffsets {
    from: u64,
    to: u64,
}

/// Checks times and trims text; `None` if a segment ends before it starts. Times past the
/// end of the audio (whisper.cpp rounds its last window up) are clamped to it.
fn to_segments(
    raw: Vec<(u64, u64, String, Option<SpeakerRole>)>,
    duration_ms: u64,
) -> Option<Vec<Segment>> {
    let mut segments = Vec::with_capacity(raw.len());
    for (start_ms, end_ms, text, speaker) in raw {
        if end_ms < start_ms {
            return None;
        }
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let end_ms = end_ms.min(duration_ms);
        segments.push(Segment {
            start_ms: start_ms.min(end_ms),
            end_ms,
            text: PhiText::new(text),
            speaker,
        });
    }
    Some(segments)
}

async fn read_capped(path: &Path) -> Result<Vec<u8>> {
    let meta = tokio::fs::metadata(path).await.map_err(Error::Io)?;
    if meta.len() > OUTPUT_CAP as u64 {
        return Err(Error::engine(EngineFailure::OutputTooLarge));
    }
    tokio::fs::read(path).await.map_err(Error::Io)
}

/// A 0700 directory for one run's decrypted audio, overwritten and removed afterwards —
/// also if the future is dropped midway (then synchronously, from `Drop`).
pub struct PrivateDir {
    dir: Option<tempfile::TempDir>,
}

impl PrivateDir {
    /// Creates the directory under `parent` (the system temporary directory if `None`).
    pub fn create(parent: Option<&Path>) -> Result<Self> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("phivault-transcribe-");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o700));
        }
        let dir = match parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .map_err(|_| Error::engine(EngineFailure::WorkDir))?;
        Ok(Self { dir: Some(dir) })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/"))
    }

    /// Overwrites every file in it with zeros and removes it.
    pub async fn wipe(mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = tokio::task::spawn_blocking(move || wipe_tree(dir)).await;
        }
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            wipe_tree(dir);
        }
    }
}

fn wipe_tree(dir: tempfile::TempDir) {
    if let Err(e) = overwrite_files(dir.path()) {
        tracing::warn!(error.kind = ?e.kind(), "could not overwrite a transcription work file before removal");
    }
    if dir.close().is_err() {
        tracing::warn!("could not remove a transcription work directory");
    }
}

/// Overwrites every regular file under `dir` with zeros (symlinks are not followed).
fn overwrite_files(dir: &Path) -> std::io::Result<()> {
    let mut first_error = None;
    for entry in fs::read_dir(dir)? {
        let result = (|| {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                overwrite_files(&entry.path())
            } else if kind.is_file() {
                zero_file(&entry.path())
            } else {
                Ok(())
            }
        })();
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn zero_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The program may have left its output read-only.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    let mut file = OpenOptions::new().write(true).open(path)?;
    let mut left = file.metadata()?.len();
    let zeros = [0u8; 64 * 1024];
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_checked_and_clamped() {
        let raw = vec![
            (0, 900, " synthetic hello ".to_owned(), None),
            (900, 1200, "  ".to_owned(), None),
            (1000, 5000, "tail".to_owned(), Some(SpeakerRole::Patient)),
        ];
        let segments = to_segments(raw, 2000).unwrap();
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].text.expose(), "synthetic hello");
        assert_eq!((segments[1].start_ms, segments[1].end_ms), (1000, 2000));
        assert!(to_segments(vec![(10, 5, "x".to_owned(), None)], 2000).is_none());
    }

    #[test]
    fn zero_file_overwrites_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, vec![0xA5u8; 200_000]).unwrap();
        zero_file(&path).unwrap();
        let after = fs::read(&path).unwrap();
        assert_eq!(after.len(), 200_000);
        assert!(after.iter().all(|&b| b == 0));
    }

    #[test]
    fn private_dir_is_0700_and_wiped_with_contents() {
        let parent = tempfile::tempdir().unwrap();
        let dir = PrivateDir::create(Some(parent.path())).unwrap();
        let path = dir.path().to_owned();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        fs::create_dir(path.join("sub")).unwrap();
        fs::write(path.join("sub/out.txt"), b"synthetic words").unwrap();
        drop(dir);
        assert!(!path.exists());
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 0);
    }
}
