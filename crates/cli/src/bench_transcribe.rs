//! `phivault bench transcribe`: the local engine's real-time factor and word error rate
//! on a dialogue set (as `scripts/make-dialogue-set` makes: WAV files and
//! `transcript.tsv`, one `file<TAB>reference text` line each).
//!
//! Each file goes the way the server takes a recording: decoded, downmixed and resampled
//! with `decode_mono_16k`, written with `write_wav_16k` into a private (0700, wiped)
//! directory, and transcribed by the engine. Word error rate is a word-level Levenshtein
//! distance (substitutions + deletions + insertions over reference words) after
//! lower-casing and turning every character but letters, digits and apostrophes into
//! a space. References spell numbers as spoken words, so no number normalisation is done.
//!
//! The real-time factor is processing time over audio duration. PocketSphinx runs as one
//! process per file and loads its model every time, so the time it takes on half a second
//! of silence (median of three) is reported as the per-file start-up cost and subtracted
//! for the factor "without model load". Reference words missing from the engine's
//! language model (which it can never output) are counted per utterance, to tell
//! vocabulary errors from acoustic ones.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use phivault_transcribe::{
    PocketSphinx, PocketSphinxConfig, PrivateDir, TARGET_RATE, Transcriber, decode_mono_16k,
    write_wav_16k,
};

/// `phivault bench transcribe`.
#[derive(Args, Debug)]
pub struct TranscribeArgs {
    /// Directory with the WAV files and `transcript.tsv` (see scripts/make-dialogue-set).
    #[arg(long)]
    set: PathBuf,
    /// Engine to measure.
    #[arg(long, value_enum, default_value_t = Engine::Pocketsphinx)]
    engine: Engine,
    /// Also print each reference and hypothesis. For synthetic sets only: a transcript of
    /// a real recording is PHI and must not reach a terminal or a log.
    #[arg(long)]
    show_text: bool,
}

/// Engines `bench transcribe` can run.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Engine {
    /// CMU PocketSphinx with Debian's en-us model.
    Pocketsphinx,
}

/// Longest utterance accepted: a dialogue set holds sentences, not visits.
const MAX_UTTERANCE: Duration = Duration::from_secs(600);

/// Lower-cased words; every character but letters, digits and apostrophes separates.
fn normalise(text: &str) -> Vec<String> {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .map(|w| w.trim_matches('\'').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Edit operations of a minimal word alignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Edits {
    substitutions: usize,
    deletions: usize,
    insertions: usize,
}

impl Edits {
    fn total(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    fn add(&mut self, other: Edits) {
        self.substitutions += other.substitutions;
        self.deletions += other.deletions;
        self.insertions += other.insertions;
    }
}

/// Word-level Levenshtein alignment of `hypothesis` against `reference`.
fn align(reference: &[String], hypothesis: &[String]) -> Edits {
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

/// `transcript.tsv`: `file<TAB>reference` per line; blank lines and `#` comments skipped.
fn read_set(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
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

/// Times of one file through the server's path.
struct Timed {
    audio: Duration,
    prepare: Duration,
    engine: Duration,
    hypothesis: Vec<String>,
}

/// decode → private 16 kHz WAV → engine, as a transcription job does.
async fn transcribe_one(engine: &PocketSphinx, path: &Path) -> Result<Timed> {
    let started = Instant::now();
    let source = path.to_path_buf();
    let samples = tokio::task::spawn_blocking(move || decode_mono_16k(&source, MAX_UTTERANCE))
        .await?
        .with_context(|| format!("decode {}", path.display()))?;
    let audio = Duration::from_secs_f64(samples.len() as f64 / f64::from(TARGET_RATE));
    let dir = PrivateDir::create(None)?;
    let wav = dir.path().join("audio.wav");
    let target = wav.clone();
    tokio::task::spawn_blocking(move || write_wav_16k(&samples, &target)).await??;
    let prepare = started.elapsed();
    let started = Instant::now();
    let transcript = engine.transcribe(&wav).await;
    let engine_time = started.elapsed();
    dir.wipe().await;
    let transcript = transcript.with_context(|| format!("transcribe {}", path.display()))?;
    Ok(Timed {
        audio,
        prepare,
        engine: engine_time,
        hypothesis: normalise(transcript.text().expose()),
    })
}

/// The engine's time on half a second of silence: process start and model load.
async fn startup_cost(engine: &PocketSphinx) -> Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..3 {
        let dir = PrivateDir::create(None)?;
        let wav = dir.path().join("silence.wav");
        write_wav_16k(&vec![0.0; TARGET_RATE as usize / 2], &wav)?;
        let started = Instant::now();
        let result = engine.transcribe(&wav).await;
        times.push(started.elapsed());
        dir.wipe().await;
        result?;
    }
    times.sort();
    Ok(times[1])
}

fn pct(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Runs the benchmark.
pub async fn run(args: TranscribeArgs) -> Result<()> {
    let set = read_set(&args.set)?;
    let config = PocketSphinxConfig::default();
    let engine = match args.engine {
        Engine::Pocketsphinx => PocketSphinx::new(&config).context(
            "PocketSphinx is not installed (Debian packages pocketsphinx and pocketsphinx-en-us)",
        )?,
    };
    let vocabulary = lm_vocabulary(&config.model_dir.join("en-us.lm.bin"));
    println!(
        "phivault bench transcribe: {} utterances from {}, engine {} ({}), one file at a time",
        set.len(),
        args.set.display(),
        engine.name(),
        engine.model()
    );
    if set.len() < 20 {
        println!("  note: fewer than twenty utterances; the issue's goal asks for at least twenty");
    }
    let startup = startup_cost(&engine).await?;
    println!(
        "  engine start-up (0.5 s of silence, median of 3): {:.3} s per file",
        startup.as_secs_f64()
    );
    println!(
        "{:<22} {:>7} {:>8} {:>8} {:>6} {:>5} {:>3} {:>3} {:>3} {:>7} {:>4}",
        "file", "audio s", "prep ms", "engine s", "RTF", "words", "S", "D", "I", "WER %", "OOV"
    );
    let (mut audio, mut prepare, mut engine_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut edits, mut words, mut oov, mut wer_sum) = (Edits::default(), 0usize, 0usize, 0.0);
    for (path, reference) in &set {
        let reference = normalise(reference);
        let t = transcribe_one(&engine, path).await?;
        let e = align(&reference, &t.hypothesis);
        let missing = vocabulary
            .as_ref()
            .map(|d| reference.iter().filter(|w| !d.contains(*w)).count());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let wer = pct(e.total(), reference.len());
        println!(
            "{:<22} {:>7.2} {:>8.1} {:>8.3} {:>6.3} {:>5} {:>3} {:>3} {:>3} {:>7.1} {:>4}",
            name,
            t.audio.as_secs_f64(),
            t.prepare.as_secs_f64() * 1000.0,
            t.engine.as_secs_f64(),
            (t.prepare + t.engine).as_secs_f64() / t.audio.as_secs_f64(),
            reference.len(),
            e.substitutions,
            e.deletions,
            e.insertions,
            wer,
            missing.map_or("-".to_string(), |m| m.to_string()),
        );
        if args.show_text {
            println!("    ref: {}", reference.join(" "));
            println!("    hyp: {}", t.hypothesis.join(" "));
        }
        audio += t.audio;
        prepare += t.prepare;
        engine_time += t.engine;
        edits.add(e);
        words += reference.len();
        oov += missing.unwrap_or(0);
        wer_sum += wer;
    }
    let n = set.len() as u32;
    let processing = prepare + engine_time;
    let without_load = processing.saturating_sub(startup * n);
    println!();
    println!("utterances                               {:>10}", set.len());
    println!(
        "audio, s                                 {:>10.2}",
        audio.as_secs_f64()
    );
    println!(
        "decode + resample + private WAV, s       {:>10.3}",
        prepare.as_secs_f64()
    );
    println!(
        "engine, s                                {:>10.3}",
        engine_time.as_secs_f64()
    );
    println!(
        "RTF, with the engine's start-up per file {:>10.3}",
        processing.as_secs_f64() / audio.as_secs_f64()
    );
    println!(
        "RTF, start-up subtracted ({:.3} s × {n})  {:>10.3}",
        startup.as_secs_f64(),
        without_load.as_secs_f64() / audio.as_secs_f64()
    );
    println!(
        "WER over all words, %                    {:>10.1}  ({} S + {} D + {} I over {words} words)",
        pct(edits.total(), words),
        edits.substitutions,
        edits.deletions,
        edits.insertions
    );
    println!(
        "mean of per-utterance WER, %             {:>10.1}",
        wer_sum / f64::from(n)
    );
    if vocabulary.is_some() {
        println!(
            "reference words not in the language model (OOV): {oov} of {words} ({:.1} %)",
            pct(oov, words)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        normalise(s)
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
}
