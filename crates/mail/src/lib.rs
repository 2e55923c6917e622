//! phivault's outgoing mail.
//!
//! A [`Mailer`] sends plain-text messages either over SMTP (lettre's tokio transport,
//! TLS by rustls: implicit TLS, STARTTLS that must succeed, or plaintext to a loopback
//! relay only) or, the development default, into an outbox directory, one `.eml` file per
//! message, mode 0600 in a 0700 directory.
//!
//! Nothing here logs a recipient, a subject or a body: a sign-in link is a credential.
//! Errors name what failed, never the message.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncTransport, Tokio1Executor};
use serde::Deserialize;
use thiserror::Error;
use zeroize::Zeroizing;

/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors of building a mailer or sending mail. Messages never include an address or a
/// message's content.
#[derive(Debug, Error)]
pub enum MailError {
    /// The configuration cannot work.
    #[error("invalid mail configuration: {0}")]
    Config(String),
    /// A message could not be built (an address that is not one).
    #[error("the message could not be built: {0}")]
    Message(&'static str),
    /// The SMTP server refused the message or could not be reached.
    #[error("SMTP delivery failed: {0}")]
    Smtp(String),
    /// The outbox could not be written.
    #[error("the outbox could not be written: {0}")]
    Outbox(#[from] std::io::Error),
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plaintext; accepted only towards a loopback relay.
    None,
    /// STARTTLS, which must succeed (never a silent downgrade). Port 587 by default.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS). Port 465 by default.
    Tls,
}

impl TlsMode {
    /// The mode's name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Tls => "tls",
        }
    }

    /// The usual port of the mode.
    pub fn default_port(self) -> u16 {
        match self {
            TlsMode::None => 25,
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
        }
    }
}

impl std::str::FromStr for TlsMode {
    type Err = MailError;

    fn from_str(s: &str) -> Result<Self, MailError> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(TlsMode::None),
            "starttls" => Ok(TlsMode::Starttls),
            "tls" => Ok(TlsMode::Tls),
            _ => Err(MailError::Config(
                "the SMTP TLS mode must be none, starttls or tls".into(),
            )),
        }
    }
}

/// An SMTP relay.
#[derive(Clone)]
pub struct SmtpSettings {
    /// Host name or address.
    pub host: String,
    /// Port; the mode's usual port when `None`.
    pub port: Option<u16>,
    /// Connection protection.
    pub tls: TlsMode,
    /// User name, if the relay wants authentication.
    pub username: Option<String>,
    /// Password (never printed).
    pub password: Option<Zeroizing<String>>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

enum Transport {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        description: String,
    },
    Outbox {
        dir: PathBuf,
    },
}

/// Sends plain-text mail over SMTP or into an outbox directory.
pub struct Mailer {
    from: Mailbox,
    transport: Transport,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mailer({})", self.describe())
    }
}

fn parse_from(from: &str) -> Result<Mailbox, MailError> {
    from.parse::<Mailbox>()
        .map_err(|_| MailError::Config("the sender address (mail.from) is not an address".into()))
}

impl Mailer {
    /// A mailer that delivers through an SMTP relay. Plaintext (`TlsMode::None`) is
    /// refused unless the relay is on a loopback address, and so are credentials without
    /// TLS: a sign-in link is a credential.
    pub fn smtp(settings: SmtpSettings, from: &str) -> Result<Mailer, MailError> {
        let from = parse_from(from)?;
        let host = settings.host.trim().to_string();
        if host.is_empty() {
            return Err(MailError::Config("the SMTP host is empty".into()));
        }
        if settings.tls == TlsMode::None && !is_loopback_host(&host) {
            return Err(MailError::Config(format!(
                "SMTP without TLS is accepted only towards a loopback relay, not {host}; \
                 set the TLS mode to starttls or tls"
            )));
        }
        let port = settings.port.unwrap_or(settings.tls.default_port());
        let tls = match settings.tls {
            TlsMode::None => Tls::None,
            mode => {
                let params = TlsParameters::builder(host.clone())
                    .build_rustls()
                    .map_err(|e| MailError::Config(format!("TLS set-up for SMTP failed: {e}")))?;
                if mode == TlsMode::Starttls {
                    Tls::Required(params)
                } else {
                    Tls::Wrapper(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.to_string()));
            }
            (None, None) => {}
            _ => {
                return Err(MailError::Config(
                    "the SMTP user name and password must be set together".into(),
                ));
            }
        }
        Ok(Mailer {
            from,
            transport: Transport::Smtp {
                transport: builder.build(),
                description: format!("smtp://{host}:{port} (tls: {})", settings.tls.as_str()),
            },
        })
    }

    /// A mailer that writes each message as an `.eml` file into `dir` (created with mode
    /// 0700 if missing; an existing directory is narrowed to 0700).
    pub fn outbox(dir: impl Into<PathBuf>, from: &str) -> Result<Mailer, MailError> {
        let from = parse_from(from)?;
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(Mailer {
            from,
            transport: Transport::Outbox { dir },
        })
    }

    /// Where mail goes, for the start-up log: an SMTP URL or the outbox directory.
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp { description, .. } => description.clone(),
            Transport::Outbox { dir } => format!("outbox {}", dir.display()),
        }
    }

    /// The outbox directory, when mail is not sent over SMTP.
    pub fn outbox_dir(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Outbox { dir } => Some(dir),
            Transport::Smtp { .. } => None,
        }
    }

    /// Sends a plain-text message to one recipient.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), MailError> {
        let to: Mailbox = to
            .parse()
            .map_err(|_| MailError::Message("the recipient is not an address"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .date_now()
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|_| MailError::Message("the message could not be assembled"))?;
        match &self.transport {
            Transport::Smtp { transport, .. } => {
                transport
                    .send(message)
                    .await
                    .map_err(|e| MailError::Smtp(smtp_reason(&e)))?;
                Ok(())
            }
            Transport::Outbox { dir } => {
                let bytes = message.formatted();
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || write_eml(&dir, &bytes))
                    .await
                    .map_err(|_| MailError::Outbox(std::io::Error::other("writer task failed")))?
            }
        }
    }
}

/// What went wrong with SMTP, without the server's text (which may echo an address).
fn smtp_reason(e: &lettre::transport::smtp::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_permanent() {
        format!(
            "the server refused the message permanently (code {})",
            e.status().map(|c| c.to_string()).unwrap_or_default()
        )
    } else if e.is_transient() {
        format!(
            "the server refused the message for now (code {})",
            e.status().map(|c| c.to_string()).unwrap_or_default()
        )
    } else if e.is_tls() {
        "TLS failed".into()
    } else {
        "connection or protocol failure".into()
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Writes one message: to a hidden temporary name first, then renamed, so a reader of
/// the outbox never sees half a message.
fn write_eml(dir: &Path, bytes: &[u8]) -> Result<(), MailError> {
    use std::io::Write;
    let name = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
        uuid::Uuid::now_v7().simple()
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(format!("{name}.eml"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(MailError::Outbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(host: &str, tls: TlsMode) -> SmtpSettings {
        SmtpSettings {
            host: host.into(),
            port: None,
            tls,
            username: None,
            password: None,
        }
    }

    #[test]
    fn plaintext_smtp_only_to_loopback() {
        let from = "phivault <no-reply@example.test>";
        assert!(Mailer::smtp(smtp("127.0.0.1", TlsMode::None), from).is_ok());
        assert!(Mailer::smtp(smtp("localhost", TlsMode::None), from).is_ok());
        assert!(Mailer::smtp(smtp("[::1]", TlsMode::None), from).is_ok());
        assert!(Mailer::smtp(smtp("mail.example.test", TlsMode::None), from).is_err());
        let tls = Mailer::smtp(smtp("mail.example.test", TlsMode::Tls), from).unwrap();
        assert_eq!(tls.describe(), "smtp://mail.example.test:465 (tls: tls)");
        let starttls = Mailer::smtp(smtp("mail.example.test", TlsMode::Starttls), from).unwrap();
        assert!(starttls.describe().contains(":587"));
        let mut half = smtp("mail.example.test", TlsMode::Tls);
        half.username = Some("user".into());
        assert!(Mailer::smtp(half, from).is_err());
        assert!(Mailer::smtp(smtp("127.0.0.1", TlsMode::None), "not an address").is_err());
    }

    #[test]
    fn settings_debug_hides_the_password() {
        let mut s = smtp("mail.example.test", TlsMode::Tls);
        s.password = Some(Zeroizing::new("hunter2-synthetic".into()));
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn tls_modes_parse() {
        assert_eq!("STARTTLS".parse::<TlsMode>().unwrap(), TlsMode::Starttls);
        assert_eq!("none".parse::<TlsMode>().unwrap(), TlsMode::None);
        assert!("ssl".parse::<TlsMode>().is_err());
    }

    #[tokio::test]
    async fn outbox_files_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox");
        let mailer = Mailer::outbox(&dir, "phivault <no-reply@example.test>").unwrap();
        assert_eq!(mailer.outbox_dir(), Some(dir.as_path()));
        mailer
            .send(
                "someone@example.test",
                "Synthetic subject",
                "Synthetic body line\n",
            )
            .await
            .unwrap();
        assert!(
            mailer
                .send("not an address", "Synthetic subject", "x")
                .await
                .is_err()
        );
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].extension().is_some_and(|e| e == "eml"));
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(text.contains("To: someone@example.test"));
        assert!(text.contains("Subject: Synthetic subject"));
        assert!(text.contains("Synthetic body line"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&files[0]), 0o600);
        }
    }
}
