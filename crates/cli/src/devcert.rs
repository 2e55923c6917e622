//! `phivault dev-cert`: a self-signed pair so HTTPS works out of the box on localhost.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::config::Config;
use crate::setup;

#[derive(Args)]
pub struct DevCertArgs {
    /// Directory to write cert.pem and key.pem into (default: <data>/tls).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Extra host name or IP address for the certificate; repeat for several.
    #[arg(long = "san", value_name = "NAME")]
    extra_names: Vec<String>,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

pub fn run(config: &Config, args: DevCertArgs) -> Result<()> {
    let dir = args.out_dir.unwrap_or_else(|| config.data_dir.join("tls"));
    setup::ensure_data_dir(&dir)?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if !args.force && (cert_path.exists() || key_path.exists()) {
        bail!(
            "{} or {} exists; pass --force to replace",
            cert_path.display(),
            key_path.display()
        );
    }
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    names.extend(args.extra_names);
    let certified =
        rcgen::generate_simple_self_signed(names).context("cannot generate a certificate")?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, certified.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    println!("wrote {} and {}", cert_path.display(), key_path.display());
    println!("self-signed, for development only. Serve HTTPS with:");
    println!(
        "  PHIVAULT_TLS_CERT={} PHIVAULT_TLS_KEY={} phivault serve",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
