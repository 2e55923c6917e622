//! Serving the application over plain HTTP or HTTPS (rustls).

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// Certificate chain and private key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain (leaf first).
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why TLS could not be set up.
#[derive(Debug, Error)]
pub enum TlsSetupError {
    /// The certificate file could not be read or holds no certificate.
    #[error("cannot read certificate {path}: {why}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The key file could not be read or holds no key.
    #[error("cannot read private key {path}: {why}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// rustls refused the pair.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a rustls server configuration: TLS 1.3 and 1.2 only (1.3 preferred, as rustls
/// negotiates the highest both sides share), the aws-lc-rs provider's default (AEAD-only)
/// cipher suites, HTTP/2 and HTTP/1.1 by ALPN.
pub fn load_tls_config(files: &TlsFiles) -> Result<ServerConfig, TlsSetupError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(&files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(&files.cert, e))?;
    if certs.is_empty() {
        return Err(TlsSetupError::Cert {
            path: files.cert.clone(),
            why: "no certificate in file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsSetupError::Key {
        path: files.key.clone(),
        why: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn cert_err(path: &Path, e: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError::Cert {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

/// How to serve.
pub struct ServeOptions {
    /// A bound listener.
    pub listener: TcpListener,
    /// TLS, or `None` for plain HTTP (the caller has checked that plain HTTP is allowed).
    pub tls: Option<ServerConfig>,
    /// How long in-flight requests get to finish after shutdown is asked for.
    pub grace: Duration,
}

/// Serves `app` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    options.listener.set_nonblocking(true)?;
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let grace = options.grace;
    let signal_handle = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        signal_handle.graceful_shutdown(Some(grace));
    });
    match options.tls {
        Some(config) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
            axum_server::from_tcp_rustls(options.listener, rustls)?
                .handle(handle)
                .serve(service)
                .await
        }
        None => {
            axum_server::from_tcp(options.listener)?
                .handle(handle)
                .serve(service)
                .await
        }
    }
}
