//! CMU PocketSphinx, as Debian packages it (`pocketsphinx`, `pocketsphinx-en-us`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

use crate::audio::wav_16k_duration_ms;
use crate::engine::{PhiText, Segment, Transcriber, Transcript};
use crate::error::{EngineFailure, Error, Result};
use crate::process;

/// Debian's model directory; its layout (`<lang>/`, `<lang>.lm.bin`, `cmudict-<lang>.dict`)
/// is what [`PocketSphinxConfig::model_dir`] must follow.
const DEBIAN_MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us";
const BINARY_NAME: &str = "pocketsphinx_continuous";
/// Word timings for hours of audio fit in a few MB.
const STDOUT_CAP: usize = 16 << 20;

/// Where PocketSphinx and its model are.
#[derive(Clone, Debug)]
pub struct PocketSphinxConfig {
    /// The `pocketsphinx_continuous` program: an absolute path, or a bare name looked up in
    /// `PATH`. Default: `pocketsphinx_continuous`.
    pub binary: PathBuf,
    /// Model directory in Debian's layout. Default: `/usr/share/pocketsphinx/model/en-us`.
    pub model_dir: PathBuf,
    /// Longest one run may take; the program is killed past it. PocketSphinx runs at about
    /// 0.3–0.5 × real time here, so allow at least the longest accepted recording.
    pub timeout: Duration,
}

impl Default for PocketSphinxConfig {
    fn default() -> Self {
        Self {
            binary: PathBuf::from(BINARY_NAME),
            model_dir: PathBuf::from(DEBIAN_MODEL_DIR),
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// The PocketSphinx engine (`pocketsphinx_continuous -time yes`).
#[derive(Clone, Debug)]
pub struct PocketSphinx {
    binary: PathBuf,
    model_dir: PathBuf,
    lang: String,
    timeout: Duration,
}

impl PocketSphinx {
    /// Checks that the program and all three model parts exist; `engine_unavailable` if not.
    pub fn new(config: &PocketSphinxConfig) -> Result<Self> {
        let binary = find_program(&config.binary).ok_or(Error::EngineUnavailable)?;
        let lang = config
            .model_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or(Error::EngineUnavailable)?
            .to_owned();
        let engine = Self {
            binary,
            model_dir: config.model_dir.clone(),
            lang,
            timeout: config.timeout,
        };
        if !engine.hmm().join("mdef").is_file()
            || !engine.lm().is_file()
            || !engine.dict().is_file()
        {
            return Err(Error::EngineUnavailable);
        }
        Ok(engine)
    }

    /// The engine if it is installed, so a server can default to it.
    pub fn detect(config: &PocketSphinxConfig) -> Option<Self> {
        Self::new(config).ok()
    }

    fn hmm(&self) -> PathBuf {
        self.model_dir.join(&self.lang)
    }

    fn lm(&self) -> PathBuf {
        self.model_dir.join(format!("{}.lm.bin", self.lang))
    }

    fn dict(&self) -> PathBuf {
        self.model_dir.join(format!("cmudict-{}.dict", self.lang))
    }
}

#[async_trait]
impl Transcriber for PocketSphinx {
    fn name(&self) -> &'static str {
        "pocketsphinx"
    }

    fn model(&self) -> String {
        if self.model_dir == Path::new(DEBIAN_MODEL_DIR) {
            "cmusphinx-en-us (Debian pocketsphinx-en-us)".to_owned()
        } else {
            format!("cmusphinx-{} ({})", self.lang, self.model_dir.display())
        }
    }

    async fn transcribe(&self, wav_16k_mono: &Path) -> Result<Transcript> {
        let path = wav_16k_mono.to_owned();
        let duration_ms = tokio::task::spawn_blocking(move || wav_16k_duration_ms(&path))
            .await
            .map_err(|_| Error::Internal("join"))??;
        // Absolute, so a file name starting with '-' cannot read as an option.
        let input = std::path::absolute(wav_16k_mono).map_err(Error::Io)?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-infile")
            .arg(&input)
            .args(["-time", "yes", "-logfn", "/dev/null"])
            .arg("-hmm")
            .arg(self.hmm())
            .arg("-lm")
            .arg(self.lm())
            .arg("-dict")
            .arg(self.dict());
        let finished = process::run(cmd, self.timeout, STDOUT_CAP).await?.check()?;
        let stdout = String::from_utf8(finished.stdout)
            .map_err(|_| Error::engine(EngineFailure::MalformedOutput))?;
        let mut segments = parse_output(&stdout)?;
        for segment in &mut segments {
            // Times are rounded to 10 ms frames and may overshoot the last sample slightly.
            segment.end_ms = segment.end_ms.min(duration_ms);
            segment.start_ms = segment.start_ms.min(segment.end_ms);
        }
        Ok(Transcript {
            engine: self.name().to_owned(),
            model: self.model(),
            segments,
        })
    }
}

/// Resolves a bare program name through `PATH`; checks an explicit path is an executable.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        return is_executable(program).then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_absolute() && is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    meta.is_file()
}

/// Parses `-time yes` output: each utterance is a hypothesis line followed by one line per
/// word, `word start_s end_s confidence`. Fillers (`<s>`, `</s>`, `<sil>`, `[NOISE]`,
/// `++BREATH++`) are dropped and alternate pronunciations (`for(2)`) lose their suffix.
fn parse_output(stdout: &str) -> Result<Vec<Segment>> {
    let malformed = || Error::engine(EngineFailure::MalformedOutput);
    let mut segments = Vec::new();
    let mut words: Vec<(String, u64, u64)> = Vec::new();
    let mut flush = |words: &mut Vec<(String, u64, u64)>| {
        if let (Some(first), Some(last)) = (words.first(), words.last()) {
            let text: Vec<&str> = words.iter().map(|w| w.0.as_str()).collect();
            segments.push(Segment {
                start_ms: first.1,
                end_ms: last.2,
                text: PhiText::new(text.join(" ")),
                speaker: None,
            });
        }
        words.clear();
    };
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let timed = match fields.as_slice() {
            [word, start, end, confidence] => match (
                parse_seconds(start),
                parse_seconds(end),
                confidence.parse::<f64>(),
            ) {
                (Some(start), Some(end), Ok(_)) => Some((*word, start, end)),
                _ => None,
            },
            _ => None,
        };
        let Some((word, start_ms, end_ms)) = timed else {
            // The hypothesis line that opens an utterance (blank for a silent one).
            flush(&mut words);
            continue;
        };
        if end_ms < start_ms {
            return Err(malformed());
        }
        if word == "<s>" {
            flush(&mut words);
            continue;
        }
        if is_filler(word) {
            continue;
        }
        let word = strip_variant(word);
        if word.is_empty() {
            return Err(malformed());
        }
        words.push((word.to_owned(), start_ms, end_ms));
    }
    flush(&mut words);
    Ok(segments)
}

fn parse_seconds(field: &str) -> Option<u64> {
    let seconds: f64 = field.parse().ok()?;
    (0.0..1e7)
        .contains(&seconds)
        .then(|| (seconds * 1000.0).round() as u64)
}

fn is_filler(word: &str) -> bool {
    word.starts_with('<') || word.starts_with('[') || word.starts_with("++")
}

fn strip_variant(word: &str) -> &str {
    match word.strip_suffix(')').and_then(|w| w.rsplit_once('(')) {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => word,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Synthetic dialogue, in the shape pocketsphinx_continuous 0.8+5prealpha prints.
    const OUTPUT: &str = "the patient reports chest pain for two days
<s> 0.000 0.240 0.999600
the 0.250 0.340 0.862244
patient 0.350 0.700 0.849320
[NOISE] 0.700 0.710 0.5
for(2) 1.740 1.870 0.658396
days 2.090 2.560 0.572029
</s> 2.570 2.950 1.000000

<s> 3.000 3.800 1.000000
</s> 3.810 4.020 1.000000
she has no fever
<s> 4.630 4.700 1.000000
she 4.710 4.870 1.000000
<sil> 4.870 4.880 1.000000
fever 5.210 5.630 1.000000
</s> 6.390 6.790 1.000000
";

    #[test]
    fn parses_utterances_and_drops_fillers() {
        let segments = parse_output(OUTPUT).unwrap();
        let got: Vec<(u64, u64, &str)> = segments
            .iter()
            .map(|s| (s.start_ms, s.end_ms, s.text.expose()))
            .collect();
        assert_eq!(
            got,
            vec![
                (250, 2560, "the patient for days"),
                (4710, 5630, "she fever"),
            ]
        );
    }

    #[test]
    fn rejects_time_going_backwards() {
        assert_eq!(
            parse_output("x\nword 2.0 1.0 0.5\n").unwrap_err().code(),
            "engine_failed"
        );
    }

    #[test]
    fn strips_only_numeric_variants() {
        assert_eq!(strip_variant("and(2)"), "and");
        assert_eq!(strip_variant("a(b)"), "a(b)");
        assert_eq!(strip_variant("()"), "()");
    }

    #[test]
    fn missing_model_is_unavailable() {
        let config = PocketSphinxConfig {
            model_dir: PathBuf::from("/nonexistent/en-us"),
            ..Default::default()
        };
        assert_eq!(
            PocketSphinx::new(&config).unwrap_err().code(),
            "engine_unavailable"
        );
        let config = PocketSphinxConfig {
            binary: PathBuf::from("/nonexistent/pocketsphinx_continuous"),
            ..Default::default()
        };
        assert!(PocketSphinx::detect(&config).is_none());
    }
}
