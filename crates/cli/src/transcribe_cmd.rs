//! `phivault transcribe FILE`: runs a transcription engine on a local audio file and
//! prints the transcript, storing nothing; operators use it to check an engine or model
//! before enabling it. The audio goes the server's way: decoded by symphonia, downmixed,
//! resampled to 16 kHz (rubato), written into a private work directory (0700, overwritten
//! and removed afterwards) for the engine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use phivault_transcribe::{PrivateDir, TARGET_RATE, TranscribeOptions, decode_to_wav_16k};

use crate::config::Config;

/// `phivault transcribe`.
#[derive(Args, Debug)]
pub struct TranscribeArgs {
    /// The audio file: WAV, FLAC, Ogg Vorbis, MP3, M4A/MP4 (AAC) or ADTS AAC.
    file: PathBuf,
    /// Engine: auto, whisper, pocketsphinx, command or openai-compatible (default: scribe.engine).
    #[arg(long, value_name = "NAME")]
    engine: Option<String>,
    /// Print JSON: {"engine", "model", "duration_ms", "segments": [{"start_ms", "end_ms",
    /// "text"}]}.
    #[arg(long)]
    json: bool,
    /// Terms to spell right, comma-separated (as a tenant's vocabulary): Whisper's
    /// previous-text prompt, the openai-compatible engine's `prompt`; other engines
    /// ignore them.
    #[arg(long, value_name = "TERMS", value_delimiter = ',')]
    vocabulary: Vec<String>,
}

/// Runs `phivault transcribe`. The transcript goes to standard output only: it is PHI when
/// the recording is real.
pub async fn run(config: Config, args: TranscribeArgs) -> Result<()> {
    let name = args
        .engine
        .clone()
        .unwrap_or_else(|| config.scribe.engine.clone());
    let engine = crate::worker::engine_named(&config, &name)
        .await?
        .ok_or_else(|| {
            anyhow!(
                "no transcription engine: install a Whisper model (phivault models install-whisper) or pocketsphinx, or pass --engine"
            )
        })?;
    let vocabulary = phivault_domain::vocabulary::normalise(&args.vocabulary)
        .map_err(|e| anyhow!("--vocabulary: {e}"))?;
    if let Some(vendor) = &config.vendors.transcription {
        platform_clearance(&config, vendor).await?;
    }
    let max = Duration::from_secs(config.scribe.max_duration_secs.max(1));
    let dir = PrivateDir::create(config.scribe.work_dir.as_deref())
        .map_err(|e| anyhow!("cannot make a private work directory: {e}"))?;
    let wav = dir.path().join("audio.wav");
    let (file, target) = (args.file.clone(), wav.clone());
    // Decoded straight into the private WAV, as the server does: nothing is held whole.
    let decoded = tokio::task::spawn_blocking(move || decode_to_wav_16k(&file, &target, max))
        .await
        .context("the decoder stopped")?;
    let samples = match decoded {
        Ok(samples) => samples,
        Err(e) => {
            dir.wipe().await;
            return Err(anyhow!(
                "cannot decode {}: {e} ({})",
                args.file.display(),
                e.code()
            ));
        }
    };
    let duration_ms = samples * 1000 / u64::from(TARGET_RATE);
    let options = TranscribeOptions {
        vocabulary,
        progress: None,
    };
    let transcript = engine.transcribe_with(&wav, &options).await;
    dir.wipe().await;
    let transcript = transcript.map_err(|e| {
        anyhow!(
            "{} could not transcribe {}: {e} ({})",
            engine.name(),
            args.file.display(),
            e.code()
        )
    })?;
    if args.json {
        let segments: Vec<serde_json::Value> = transcript
            .segments
            .iter()
            .map(|s| {
                serde_json::json!({
                    "start_ms": s.start_ms,
                    "end_ms": s.end_ms,
                    "text": s.text.expose(),
                })
            })
            .collect();
        let out = serde_json::json!({
            "engine": transcript.engine,
            "model": transcript.model,
            "duration_ms": duration_ms,
            "segments": segments,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("engine: {} ({})", transcript.engine, transcript.model);
        for s in &transcript.segments {
            println!(
                "[{} -> {}] {}",
                clock(s.start_ms),
                clock(s.end_ms),
                s.text.expose()
            );
        }
    }
    Ok(())
}

/// As the pipeline does before each job, but with the platform's registry only (a file on
/// the command line belongs to no tenant): the engine's vendor must have a BAA on file
/// before any audio is sent to it.
async fn platform_clearance(config: &Config, vendor: &str) -> Result<()> {
    let db = crate::setup::open_db(config).await?;
    let mut tx = db
        .begin_platform(phivault_store::TxMode::Read)
        .await
        .context("cannot read the vendor registry")?;
    let platform = phivault_domain::vendors::list_platform(&mut tx)
        .await
        .context("cannot read the vendor registry")?;
    tx.commit()
        .await
        .context("cannot read the vendor registry")?;
    db.close().await;
    phivault_domain::vendors::clearance(&platform, &[], vendor).map_err(|e| {
        anyhow!(
            "the transcription engine is run by vendor {vendor:?} ([vendors] transcription): {e} (vendor_not_cleared); record its BAA with `phivault vendor set --key {vendor} … --baa-signed-on … --baa-evidence-ref …`"
        )
    })?;
    Ok(())
}

/// `m:ss.mmm`.
fn clock(ms: u64) -> String {
    format!("{}:{:02}.{:03}", ms / 60_000, ms / 1000 % 60, ms % 1000)
}
