//! `phivault serve`.

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use phivault_http::{AppState, HttpConfig, ServeOptions, TlsFiles};
use phivault_store::{Backend, ObjectStorage};

use crate::config::Config;
use crate::setup;

/// Why a transport is allowed, decided before anything is bound.
enum Transport {
    Tls(TlsFiles),
    PlainLoopback,
    PlainBehindProxy,
}

fn choose_transport(config: &Config) -> Result<Transport> {
    match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Ok(Transport::Tls(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })),
        (Some(_), None) | (None, Some(_)) => bail!("tls.cert and tls.key must be set together"),
        // A declared proxy first: behind a proxy on the same host, clients still come over
        // TLS and must get HSTS.
        (None, None) if config.tls.behind_proxy => Ok(Transport::PlainBehindProxy),
        (None, None) if config.listen.ip().is_loopback() => Ok(Transport::PlainLoopback),
        (None, None) => bail!(
            "refusing to serve plain HTTP on {}, which is not a loopback address: set tls.cert and tls.key \
             (PHIVAULT_TLS_CERT / PHIVAULT_TLS_KEY; `phivault dev-cert` writes a development pair), or declare \
             a TLS-terminating proxy with tls.behind_proxy = true (PHIVAULT_BEHIND_TLS_PROXY=true)",
            config.listen
        ),
    }
}

pub async fn run(config: Config) -> Result<()> {
    setup::init_logging(&config);
    let transport = choose_transport(&config)?;
    let tls = match &transport {
        Transport::Tls(files) => Some(phivault_http::load_tls_config(files)?),
        _ => None,
    };
    let db = setup::open_db(&config).await?;
    if db.backend() == Backend::Postgres {
        db.check_serving_role()
            .await
            .context("the database role is not safe to serve with")?;
        db.ensure_schema_current().await?;
    }
    let object_config = config.object_store()?;
    let objects = ObjectStorage::open(&object_config).context("cannot open object storage")?;
    let http = HttpConfig {
        body_limit: config.http.body_limit_bytes,
        request_timeout: config.request_timeout(),
        hsts: !matches!(transport, Transport::PlainLoopback),
        upload_limit: config.http.upload_limit_bytes,
        upload_timeout: Duration::from_secs(config.http.upload_timeout_secs.max(1)),
    };
    let mailer = config.mailer()?;
    let link_lifetime = config.link_lifetime()?;
    let throttle = config.throttle()?;
    let (e2e, sweep_every) = config.e2e()?;
    let audit_config = config.audit()?;
    let witness = audit_config
        .witness
        .as_ref()
        .map(|w| w.describe().to_string())
        .unwrap_or_default();
    let keys = crate::keys::start(&config).await?;
    let auditor = phivault_audit::Auditor::start(db.clone(), audit_config);
    let mut state = AppState::new(db.clone(), objects.clone(), keys.clone(), auditor, http);
    if keys.status() != phivault_crypto::keys::KeyStatus::Sealed {
        phivault_http::audit::attach_signer(&state).await;
    }
    tracing::info!(witness = %witness, retention_years = config.audit.retention_years, "audit trail");
    if config.keys.provider == crate::config::KeyProviderKind::Local {
        let path = config.keyring_path();
        let unsealer: phivault_http::Unsealer = std::sync::Arc::new(move |passphrase: &[u8]| {
            let provider = phivault_crypto::keyring::unseal(&path, passphrase)?;
            Ok(std::sync::Arc::new(provider)
                as std::sync::Arc<
                    dyn phivault_crypto::provider::KeyProvider,
                >)
        });
        state = state.with_unsealer(unsealer);
    }

    let listener = TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let host = if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let url = format!("{scheme}://{host}:{}", addr.port());
    let public_url = config.public_url_or(&url)?;
    match mailer.outbox_dir() {
        Some(dir) => tracing::warn!(
            outbox = %dir.display(),
            public_url = %public_url,
            "mail: no SMTP relay configured, so sign-in links are written as .eml files to the \
             outbox directory (the development default); set mail.smtp_host (PHIVAULT_SMTP_HOST) to send them"
        ),
        None => tracing::info!(
            smtp = %mailer.describe(),
            public_url = %public_url,
            "mail: sign-in links are sent over SMTP"
        ),
    }
    crate::retention::spawn_sweeper(
        db.clone(),
        keys.clone(),
        objects.clone(),
        state.auditor.clone(),
        sweep_every,
    );
    if config.scribe.in_process_worker {
        let scribe = crate::worker::scribe(
            &config,
            keys.clone(),
            objects.clone(),
            state.auditor.clone(),
        )
        .await?;
        if let Some(scribe) = scribe {
            state = state.with_transcription(scribe.engine.name(), scribe.engine.model());
            let waker = crate::worker::spawn(&config, db.clone(), scribe, std::future::pending())?;
            state = state.with_worker_waker(waker);
        }
    }
    let state = state
        .with_readiness(config.readiness()?)
        .with_e2e(e2e)
        .with_throttle(throttle)
        .with_mailer(std::sync::Arc::new(mailer))
        .with_magic_link(phivault_http::MagicLinkSettings {
            public_url,
            lifetime: link_lifetime,
        });
    let app = phivault_http::app(state);
    tracing::info!(
        url = %url,
        database = db.backend().as_str(),
        objects = objects.describe(),
        transport = match transport {
            Transport::Tls(_) => "tls",
            Transport::PlainLoopback => "plain-loopback",
            Transport::PlainBehindProxy => "plain-behind-tls-proxy",
        },
        "phivault serving"
    );
    if config.database_url.is_none() {
        tracing::info!(data_dir = %config.data_dir.display(), "embedded mode: SQLite and local objects in the data directory");
    }
    println!("phivault listening on {url}");
    std::io::stdout().flush().ok();

    let options = ServeOptions {
        listener,
        tls,
        grace: Duration::from_secs(10),
    };
    phivault_http::serve(app, options, shutdown_signal()).await?;
    db.close().await;
    tracing::info!("phivault stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
