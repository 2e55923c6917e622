//! `phivault bench transcribe-long`: a long recording (60 minutes by default) through the
//! server's transcription path, for its memory, speed, accuracy and progress reports.
//!
//! The recording is made from a dialogue set (`scripts/make-dialogue-set`): its
//! utterances in order, over and over, each followed by a pause (1.5 s by default), until
//! the next would pass the asked length; the rest is pause. Pink noise (the generator of
//! `bench transcribe`) runs under the whole recording, pauses included, scaled so that
//! the mean square of the utterances' samples (pauses excluded) over the mean square of
//! the noise (over the whole recording) is the asked SNR. It is written as a 16 kHz mono
//! 16-bit WAV one utterance at a time into a private (0700, wiped) directory, so the
//! benchmark never holds the recording either.
//!
//! Then the server's path: `decode_to_wav_16k` (symphonia and rubato, streaming into the
//! engine's private WAV) and the engine's `transcribe_with` with a progress callback, a
//! line printed about every 5 %. Peak resident memory is the process's VmHWM, read after
//! the recording is written, after the model is loaded, and at the end: Whisper runs in
//! this process, so that is the worker's peak. The word error rate is over the whole
//! file against the references concatenated in the same order, scored as in `bench
//! transcribe`.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use phivault_transcribe::{
    PocketSphinx, PocketSphinxConfig, PrivateDir, TARGET_RATE, TranscribeOptions, Transcriber,
    decode_mono_16k, decode_to_wav_16k,
};

use crate::bench_transcribe::{
    Engine, PinkNoise, Snr, align, cpu_times, load_average, load_whisper, memory_kib, mib,
    noise_gain, parse_snr, pct, read_set, score_words, seed_for,
};
use crate::config::Config;

/// `phivault bench transcribe-long`.
#[derive(Args, Debug)]
pub struct TranscribeLongArgs {
    /// Directory with the WAV files and `transcript.tsv` (see scripts/make-dialogue-set).
    #[arg(long)]
    set: PathBuf,
    /// Length of the recording, in minutes.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=600))]
    minutes: u32,
    /// `clean`, or pink noise at this signal-to-noise ratio in whole dB.
    #[arg(long, value_parser = parse_snr, default_value = "10")]
    snr: Snr,
    /// Engine to run.
    #[arg(long, value_enum, default_value_t = Engine::Whisper)]
    engine: Engine,
    /// Whisper's CPU threads (1 = one core, the server's default).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Whisper's beam width (5, the server's default).
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
    /// Pause after each utterance, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    pause_ms: u64,
    /// Where to make the private work directory (default: the system's temporary
    /// directory); it needs about 4 MiB per minute, twice.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
}

/// The recording's layout: which utterances, in which order, and its exact length.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    /// Indices into the set, in recording order; each followed by a pause.
    items: Vec<usize>,
    /// Samples of pause after each utterance.
    pause: usize,
    /// Samples in all (the tail after the last pause is pause too).
    total: usize,
}

/// Cycles through utterances of `lengths` samples, each followed by `pause` samples,
/// while the next fits in `total` samples.
fn plan(lengths: &[usize], total: usize, pause: usize) -> Result<Plan> {
    let mut items = Vec::new();
    let mut used = 0usize;
    'cycle: loop {
        for (k, &len) in lengths.iter().enumerate() {
            if used + len + pause > total {
                break 'cycle;
            }
            items.push(k);
            used += len + pause;
        }
        if lengths.is_empty() {
            break;
        }
    }
    if items.is_empty() {
        bail!("the recording is too short for even one utterance of the set");
    }
    Ok(Plan {
        items,
        pause,
        total,
    })
}

/// The 44-byte header of a 16 kHz mono 16-bit PCM WAV of `samples` samples.
fn wav_header(samples: usize) -> Result<[u8; 44]> {
    let data = u32::try_from(samples * 2)
        .ok()
        .filter(|d| *d <= u32::MAX - 36)
        .ok_or_else(|| anyhow!("the recording is too long for a WAV file"))?;
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    h[24..28].copy_from_slice(&TARGET_RATE.to_le_bytes());
    h[28..32].copy_from_slice(&(TARGET_RATE * 2).to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    Ok(h)
}

/// Writes the planned recording to `path` (created 0600), one utterance at a time from
/// `utterance`, with pink noise from `seed` at `gain` (no noise when 0) under all of it.
/// Returns the number of samples clipped to [−1, 1].
fn write_recording(
    path: &Path,
    plan: &Plan,
    gain: f64,
    seed: u64,
    mut utterance: impl FnMut(usize) -> Result<Vec<f32>>,
) -> Result<usize> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    let mut out = Mixer {
        out: BufWriter::with_capacity(1 << 16, file),
        noise: PinkNoise::new(seed),
        gain,
        clipped: 0,
        written: 0,
    };
    out.out.write_all(&wav_header(plan.total)?)?;
    for &k in &plan.items {
        for s in utterance(k)? {
            out.put(f64::from(s))?;
        }
        for _ in 0..plan.pause {
            out.put(0.0)?;
        }
    }
    while out.written < plan.total {
        out.put(0.0)?;
    }
    if out.written != plan.total {
        bail!("the utterances were longer than planned");
    }
    out.out.flush()?;
    out.out
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(out.clipped)
}

/// Adds the noise to each sample and writes it as 16-bit PCM.
struct Mixer {
    out: BufWriter<std::fs::File>,
    noise: PinkNoise,
    gain: f64,
    clipped: usize,
    written: usize,
}

impl Mixer {
    fn put(&mut self, speech: f64) -> Result<()> {
        let mut v = speech;
        if self.gain > 0.0 {
            v += self.gain * self.noise.next_sample();
        }
        if v.abs() > 1.0 {
            self.clipped += 1;
        }
        // As `write_wav_16k` converts: clipped, scaled by i16::MAX, rounded.
        let s = (v.clamp(-1.0, 1.0) * f64::from(i16::MAX)).round() as i16;
        self.out.write_all(&s.to_le_bytes())?;
        self.written += 1;
        Ok(())
    }
}

/// `m:ss`.
fn clock(ms: u64) -> String {
    format!("{}:{:02}", ms / 60_000, ms / 1000 % 60)
}

/// Runs the benchmark.
pub async fn run(config: &Config, args: TranscribeLongArgs) -> Result<()> {
    let set = read_set(&args.set)?;
    let rate = TARGET_RATE as usize;
    let total = args.minutes as usize * 60 * rate;
    let pause = usize::try_from(args.pause_ms * TARGET_RATE as u64 / 1000)?;
    println!(
        "phivault bench transcribe-long: {} minutes from the {} utterances of {}, {} ms pauses, {}; engine {}",
        args.minutes,
        set.len(),
        args.set.display(),
        args.pause_ms,
        args.snr,
        format!("{:?}", args.engine).to_lowercase()
    );
    println!("  load average at start: {}", load_average());

    // Lengths and speech power of the set, one utterance in memory at a time.
    let max = Duration::from_secs(600);
    let mut lengths = Vec::with_capacity(set.len());
    let mut sum_squares = Vec::with_capacity(set.len());
    for (path, _) in &set {
        let samples =
            decode_mono_16k(path, max).with_context(|| format!("decode {}", path.display()))?;
        lengths.push(samples.len());
        sum_squares.push(samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>());
    }
    let plan = plan(&lengths, total, pause)?;
    let seed = seed_for("phivault bench transcribe-long");
    let gain = match args.snr {
        Snr::Clean => 0.0,
        Snr::Db(db) => {
            let speech_samples: usize = plan.items.iter().map(|&k| lengths[k]).sum();
            let speech =
                plan.items.iter().map(|&k| sum_squares[k]).sum::<f64>() / speech_samples as f64;
            let mut generator = PinkNoise::new(seed);
            let noise = (0..plan.total)
                .map(|_| generator.next_sample().powi(2))
                .sum::<f64>()
                / plan.total as f64;
            noise_gain(speech, noise, f64::from(db))
        }
    };
    let reference: Vec<String> = plan
        .items
        .iter()
        .flat_map(|&k| score_words(&set[k].1))
        .collect();

    let dir = PrivateDir::create(args.work_dir.as_deref())?;
    let recording = dir.path().join("recording.wav");
    let started = Instant::now();
    let (target, paths) = (
        recording.clone(),
        set.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
    );
    let plan = Arc::new(plan);
    let layout = plan.clone();
    let clipped = tokio::task::spawn_blocking(move || {
        write_recording(&target, &layout, gain, seed, |k| {
            decode_mono_16k(&paths[k], max).map_err(anyhow::Error::from)
        })
    })
    .await??;
    let audio_ms = plan.total as u64 * 1000 / u64::from(TARGET_RATE);
    println!(
        "  recording: {} utterances ({} words), {} of audio, written in {:.1} s; {clipped} samples clipped",
        plan.items.len(),
        reference.len(),
        clock(audio_ms),
        started.elapsed().as_secs_f64()
    );
    let (peak_written, _) = memory_kib();

    let (engine, load): (Arc<dyn Transcriber>, Duration) = match args.engine {
        Engine::Whisper => {
            let (whisper, load) = load_whisper(config, args.threads, args.beam_size).await?;
            (Arc::new(whisper), load)
        }
        Engine::Pocketsphinx => {
            let c = PocketSphinxConfig {
                timeout: Duration::from_secs(u64::from(args.minutes) * 120)
                    .max(PocketSphinxConfig::default().timeout),
                ..PocketSphinxConfig::default()
            };
            (
                Arc::new(PocketSphinx::new(&c).context("PocketSphinx is not installed")?),
                Duration::ZERO,
            )
        }
    };
    let (peak_loaded, rss_loaded) = memory_kib();
    let settings = match args.engine {
        Engine::Whisper => format!(
            "in this process, {} thread(s), beam {}",
            args.threads, args.beam_size
        ),
        // Its memory is its own process's, which this one's VmHWM does not count.
        Engine::Pocketsphinx => "a child process, not counted in the memory figures".into(),
    };
    println!(
        "  engine: {} {} ({settings}), loaded in {:.2} s; resident {:.1} MiB, peak {:.1} MiB",
        engine.name(),
        engine.model(),
        load.as_secs_f64(),
        mib(rss_loaded),
        mib(peak_loaded)
    );

    // The server's path: decode and resample into the engine's private WAV, then the
    // engine with progress reports.
    let cpu_before = cpu_times();
    let started = Instant::now();
    let wav = dir.path().join("audio-16k.wav");
    let (source, target) = (recording.clone(), wav.clone());
    let limit = Duration::from_secs(u64::from(args.minutes) * 60 + 60);
    let samples = tokio::task::spawn_blocking(move || decode_to_wav_16k(&source, &target, limit))
        .await?
        .map_err(|e| anyhow!("decode_to_wav_16k: {e} ({})", e.code()))?;
    let decode_time = started.elapsed();
    println!(
        "  decode_to_wav_16k: {samples} samples in {:.1} s",
        decode_time.as_secs_f64()
    );
    let calls = Arc::new(AtomicU64::new(0));
    let lines = Arc::new(AtomicU64::new(0));
    let next_step = Arc::new(AtomicU64::new(0));
    let engine_started = Instant::now();
    let progress = {
        let (calls, lines, next_step) = (calls.clone(), lines.clone(), next_step.clone());
        Arc::new(move |done: u64, total: u64| {
            calls.fetch_add(1, Ordering::Relaxed);
            // Twenty steps: a line about every 5 %.
            let step = (done * 20).checked_div(total).unwrap_or(20);
            if next_step.fetch_max(step + 1, Ordering::Relaxed) <= step {
                lines.fetch_add(1, Ordering::Relaxed);
                let (peak, rss) = memory_kib();
                println!(
                    "  progress {:>3} %  {} of {}  after {:>6.1} s  resident {:.1} MiB, peak {:.1} MiB",
                    (done * 100).checked_div(total).unwrap_or(100),
                    clock(done),
                    clock(total),
                    engine_started.elapsed().as_secs_f64(),
                    mib(rss),
                    mib(peak)
                );
            }
        })
    };
    let options = TranscribeOptions {
        vocabulary: Vec::new(),
        progress: Some(progress),
    };
    let transcript = engine.transcribe_with(&wav, &options).await;
    let engine_time = engine_started.elapsed();
    let cpu_after = cpu_times();
    // This process's and its children's: Whisper runs in it, PocketSphinx as a child.
    let cpu = cpu_after.0.saturating_sub(cpu_before.0) + cpu_after.1.saturating_sub(cpu_before.1);
    dir.wipe().await;
    let transcript = transcript.map_err(|e| anyhow!("{}: {e} ({})", engine.name(), e.code()))?;
    let (peak_end, rss_end) = memory_kib();
    let hypothesis = score_words(transcript.text().expose());
    let edits = align(&reference, &hypothesis);
    let audio_s = audio_ms as f64 / 1000.0;
    let wall = decode_time + engine_time;

    println!();
    println!("| what | figure |");
    println!("|---|---:|");
    println!(
        "| audio | {:.1} min ({} utterances, {} reference words, {}) |",
        audio_s / 60.0,
        plan.items.len(),
        reference.len(),
        args.snr
    );
    println!(
        "| engine | {} {}, {settings} |",
        engine.name(),
        transcript.model.split(' ').next().unwrap_or(""),
    );
    println!(
        "| decode + resample to the private 16 kHz WAV | {:.1} s |",
        decode_time.as_secs_f64()
    );
    println!("| engine | {:.1} s |", engine_time.as_secs_f64());
    println!(
        "| wall time (decode + engine) | {:.1} s ({:.1} min) |",
        wall.as_secs_f64(),
        wall.as_secs_f64() / 60.0
    );
    println!(
        "| CPU time (decode + engine) | {:.1} s |",
        cpu.as_secs_f64()
    );
    println!(
        "| real-time factor, CPU time / audio | {:.3} |",
        cpu.as_secs_f64() / audio_s
    );
    println!(
        "| real-time factor, wall time / audio | {:.3} |",
        wall.as_secs_f64() / audio_s
    );
    println!(
        "| WER over the whole file | {:.1} % ({} S + {} D + {} I of {}) |",
        pct(edits.total(), reference.len()),
        edits.substitutions,
        edits.deletions,
        edits.insertions,
        reference.len()
    );
    println!(
        "| peak resident memory (VmHWM) after writing the recording | {:.1} MiB |",
        mib(peak_written)
    );
    println!(
        "| peak resident memory (VmHWM) after model load | {:.1} MiB |",
        mib(peak_loaded)
    );
    println!(
        "| peak resident memory (VmHWM) at the end | {:.1} MiB |",
        mib(peak_end)
    );
    println!(
        "| resident memory at the end (VmRSS) | {:.1} MiB |",
        mib(rss_end)
    );
    println!(
        "| progress reports | {} calls, {} lines printed |",
        calls.load(Ordering::Relaxed),
        lines.load(Ordering::Relaxed)
    );
    println!("| segments | {} |", transcript.segments.len());
    println!("\nload average at end: {}", load_average());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_transcribe::mean_square;

    #[test]
    fn plans_whole_utterances_with_pauses() {
        let p = plan(&[16_000, 32_000], 160_000, 24_000).unwrap();
        assert_eq!(p.items, [0, 1, 0]);
        assert_eq!(p.total, 160_000);
        // Exactly filled.
        let p = plan(&[16_000], 80_000, 24_000).unwrap();
        assert_eq!(p.items, [0, 0]);
        assert!(plan(&[200_000], 160_000, 24_000).is_err());
        assert!(plan(&[], 160_000, 24_000).is_err());
    }

    fn read_wav(path: &Path) -> (Vec<u8>, Vec<f32>) {
        let bytes = std::fs::read(path).unwrap();
        let samples = bytes[44..]
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32767.0)
            .collect();
        (bytes[..44].to_vec(), samples)
    }

    fn tone(len: usize, freq: f32) -> Vec<f32> {
        (0..len)
            .map(|i| 0.1 * (2.0 * std::f32::consts::PI * freq * i as f32 / 16_000.0).sin())
            .collect()
    }

    #[test]
    fn writes_the_planned_recording() {
        let dir = tempfile::tempdir().unwrap();
        let utterances = [tone(8_000, 300.0), tone(12_000, 700.0)];
        let p = plan(&[8_000, 12_000], 64_000, 4_000).unwrap();
        assert_eq!(p.items, [0, 1, 0, 1]);
        let path = dir.path().join("r.wav");
        let clipped = write_recording(&path, &p, 0.0, 1, |k| Ok(utterances[k].clone())).unwrap();
        assert_eq!(clipped, 0);
        let (header, samples) = read_wav(&path);
        assert_eq!(&header[..4], b"RIFF");
        assert_eq!(samples.len(), 64_000);
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
        assert!(close(&samples[..8_000], &utterances[0]));
        assert!(samples[8_000..12_000].iter().all(|&s| s == 0.0));
        assert!(close(&samples[12_000..24_000], &utterances[1]));
        assert!(close(&samples[28_000..36_000], &utterances[0]));
        assert!(samples[56_000..].iter().all(|&s| s == 0.0));
        // symphonia reads it as the server would.
        let info = phivault_transcribe::probe(&path).unwrap();
        assert_eq!((info.sample_rate, info.channels), (16_000, 1));
        assert_eq!(info.duration_ms, 4_000);
        // Created private, and never over an existing file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(write_recording(&path, &p, 0.0, 1, |k| Ok(utterances[k].clone())).is_err());
    }

    #[test]
    fn noise_under_the_recording_is_at_the_asked_snr() {
        let dir = tempfile::tempdir().unwrap();
        let utterances = [tone(16_000, 300.0), tone(24_000, 900.0)];
        let p = plan(&[16_000, 24_000], 16_000 * 20, 24_000).unwrap();
        let clean_path = dir.path().join("clean.wav");
        let noisy_path = dir.path().join("noisy.wav");
        write_recording(&clean_path, &p, 0.0, 9, |k| Ok(utterances[k].clone())).unwrap();
        let (_, clean) = read_wav(&clean_path);
        // As run() computes it: speech over the utterances, noise over everything.
        let speech_samples: usize = p.items.iter().map(|&k| utterances[k].len()).sum();
        let speech = p
            .items
            .iter()
            .map(|&k| {
                utterances[k]
                    .iter()
                    .map(|&s| f64::from(s).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / speech_samples as f64;
        let mut generator = PinkNoise::new(9);
        let noise = mean_square((0..p.total).map(|_| generator.next_sample()));
        let gain = noise_gain(speech, noise, 10.0);
        write_recording(&noisy_path, &p, gain, 9, |k| Ok(utterances[k].clone())).unwrap();
        let (_, noisy) = read_wav(&noisy_path);
        let added = mean_square(clean.iter().zip(&noisy).map(|(&c, &n)| f64::from(n - c)));
        let snr = 10.0 * (speech / added).log10();
        assert!((snr - 10.0).abs() < 0.1, "{snr} dB");
        // Noise in the pauses too.
        assert!(noisy[16_000..40_000].iter().any(|&s| s != 0.0));
    }
}
