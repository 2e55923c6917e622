//! The scribe pipeline's worker: inside `phivault serve`, or alone as `phivault worker`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use phivault_audit::Auditor;
use phivault_crypto::keys::KeyService;
use phivault_domain::scribe::Scribe;
use phivault_notes::{
    EndpointClearance, NoteGenerator, OpenAiConfig, OpenAiGenerator, RulesGenerator,
};
use phivault_pipeline::jobs::WorkerId;
use phivault_pipeline::worker::{Worker, WorkerOptions};
use phivault_store::{Db, ObjectStorage};
use phivault_transcribe::{
    CommandConfig, CommandTranscriber, OutputFormat, PocketSphinx, PocketSphinxConfig, Transcriber,
};

use crate::config::{Config, ScribeSection};

/// The transcription engine the configuration names; `None` when `auto` finds none.
fn engine(s: &ScribeSection) -> Result<Option<Arc<dyn Transcriber>>> {
    let timeout = Duration::from_secs(s.max_duration_secs.max(60));
    let sphinx = || {
        let mut c = PocketSphinxConfig {
            timeout,
            ..PocketSphinxConfig::default()
        };
        if let Some(dir) = &s.pocketsphinx_model_dir {
            c.model_dir = dir.clone();
        }
        c
    };
    match s.engine.as_str() {
        "auto" => Ok(PocketSphinx::detect(&sphinx()).map(|e| Arc::new(e) as Arc<dyn Transcriber>)),
        "pocketsphinx" => Ok(Some(Arc::new(PocketSphinx::new(&sphinx()).context(
            "scribe.engine = pocketsphinx, but pocketsphinx is not usable (Debian packages pocketsphinx and pocketsphinx-en-us)",
        )?))),
        "command" => {
            let Some(program) = s.command_program.clone() else {
                bail!("scribe.engine = command needs scribe.command_program (PHIVAULT_SCRIBE_COMMAND_PROGRAM)");
            };
            let output = match s.command_output.as_str() {
                "text" => OutputFormat::PlainText,
                "segments-json" => OutputFormat::SegmentsJson,
                "whisper-cpp-json" => OutputFormat::WhisperCppJson,
                other => bail!(
                    "scribe.command_output {other:?}: expected text, segments-json or whisper-cpp-json"
                ),
            };
            let model = program.display().to_string();
            let engine = CommandTranscriber::new(CommandConfig {
                program,
                args: s.command_args.clone(),
                output,
                timeout,
                model,
                work_dir: s.work_dir.clone(),
            })
            .context("scribe.command_program is not usable")?;
            Ok(Some(Arc::new(engine)))
        }
        other => bail!("scribe.engine {other:?}: expected auto, pocketsphinx or command"),
    }
}

/// The note generator the configuration names.
async fn generator(s: &ScribeSection, vendor: Option<&str>) -> Result<Arc<dyn NoteGenerator>> {
    match s.note_generator.as_str() {
        "rules" => Ok(Arc::new(RulesGenerator::new())),
        "openai-compatible" => {
            let (Some(url), Some(model)) = (&s.openai_base_url, &s.openai_model) else {
                bail!(
                    "scribe.note_generator = openai-compatible needs scribe.openai_base_url and scribe.openai_model"
                );
            };
            let url = url::Url::parse(url).context("scribe.openai_base_url is not a URL")?;
            // An endpoint run by a named vendor is checked against its BAA before every
            // call (the scribe step asks the vendor registry); any other endpoint must be
            // on this machine.
            let clearance = match vendor {
                Some(v) => EndpointClearance::VendorWithBaa { vendor: v.into() },
                None => EndpointClearance::loopback(&url).await.context(
                    "scribe.openai_base_url is not on loopback: name its vendor in [vendors] note_generation (PHIVAULT_VENDOR_NOTE_GENERATION) and register the vendor with its BAA",
                )?,
            };
            Ok(Arc::new(
                OpenAiGenerator::new(OpenAiConfig::new(url, model.clone()), clearance)
                    .context("the OpenAI-compatible generator's configuration is refused")?,
            ))
        }
        other => bail!("scribe.note_generator {other:?}: expected rules or openai-compatible"),
    }
}

/// Builds the scribe steps; `None` when no transcription engine is available (then jobs
/// wait, queued, until a worker with an engine runs).
pub async fn scribe(
    config: &Config,
    keys: Arc<KeyService>,
    objects: ObjectStorage,
    auditor: Auditor,
) -> Result<Option<Arc<Scribe>>> {
    let s = &config.scribe;
    config.services()?;
    let generator = generator(s, config.vendors.note_generation.as_deref()).await?;
    let Some(engine) = engine(s)? else {
        tracing::warn!(
            "scribe: no transcription engine (pocketsphinx is not installed and none is configured): \
             recordings are stored and their transcription jobs wait"
        );
        return Ok(None);
    };
    tracing::info!(
        engine = engine.name(),
        model = %engine.model(),
        note_generator = generator.name(),
        "scribe: pipeline ready"
    );
    Ok(Some(Arc::new(Scribe {
        keys,
        objects,
        auditor,
        engine,
        generator,
        engine_vendor: config.vendors.transcription.clone(),
        generator_vendor: config.vendors.note_generation.clone(),
        work_dir: s.work_dir.clone(),
        max_duration: Duration::from_secs(s.max_duration_secs.max(1)),
        clock: Arc::new(chrono::Utc::now),
    })))
}

/// Starts one worker on the runtime; returns the notifier that wakes it.
pub fn spawn(
    config: &Config,
    db: Db,
    scribe: Arc<Scribe>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Arc<tokio::sync::Notify>> {
    let s = &config.scribe;
    let lease = Duration::from_secs(s.lease_secs.clamp(5, 3600));
    let id =
        WorkerId::new(format!("{}-{}", hostname(), std::process::id())).context("worker id")?;
    let worker = Worker::new(
        db,
        id,
        scribe,
        WorkerOptions {
            lease,
            poll_interval: Duration::from_secs(s.poll_secs.clamp(1, 3600)),
            heartbeat_every: lease / 4,
        },
    );
    let waker = worker.waker();
    tokio::spawn(worker.run(shutdown));
    Ok(waker)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or_else(|| "worker".into())
}

/// `phivault worker`: runs the pipeline worker alone until interrupted.
pub async fn run(config: Config) -> Result<()> {
    crate::setup::init_logging(&config);
    let db = crate::setup::open_db(&config).await?;
    let objects =
        ObjectStorage::open(&config.object_store()?).context("cannot open object storage")?;
    let keys = crate::keys::start(&config).await?;
    if keys.status() == phivault_crypto::keys::KeyStatus::Sealed {
        bail!(
            "the keys are sealed: the worker decrypts audio and seals transcripts, so it needs them \
             (set PHIVAULT_KEYRING_PASSPHRASE or keys.passphrase_file)"
        );
    }
    let auditor = Auditor::start(db.clone(), config.audit()?);
    let Some(scribe) = scribe(&config, keys, objects, auditor).await? else {
        bail!("no transcription engine: install pocketsphinx or configure scribe.engine");
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    spawn(&config, db.clone(), scribe, async move {
        let _ = stopped.await;
    })?;
    println!("phivault worker running");
    use std::io::Write;
    std::io::stdout().flush().ok();
    tokio::signal::ctrl_c().await.ok();
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.close().await;
    Ok(())
}
