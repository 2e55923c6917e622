//! `phivault e2e`: the command-line participant of an end-to-end encrypted session
//! (docs/e2e.md). Keys are made and kept on this machine; the server gets ciphertext.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use phivault_e2e::store::{Backend, BackendChoice, DeviceRegistration, KeyStoreConfig};
use phivault_e2e::{
    Client, E2eError, E2eSession, ExposeSecret, Invite, KeyStore, Mode, Role, SecretString,
    ServerUrl, SessionState, StreamEvent, Utterance,
};
use uuid::Uuid;
use zeroize::Zeroizing;

const DEFAULT_SERVER: &str = "http://127.0.0.1:8420";
/// Consecutive failed reconnections after which `read --follow` gives up.
const FOLLOW_RETRIES: u32 = 5;

#[derive(Subcommand)]
pub enum E2eCommand {
    /// Start an end-to-end encrypted session: make its key here, register only the key's
    /// fingerprint with the server, keep key and session in the key store. Prints the
    /// session id.
    New {
        /// The tenant to create it in.
        #[arg(long, value_name = "UUID")]
        tenant: Uuid,
        /// Dictation on this device only: no invites.
        #[arg(long)]
        single_device: bool,
        /// Server URL.
        #[arg(long, env = "PHIVAULT_SERVER", value_name = "URL", default_value = DEFAULT_SERVER)]
        server: String,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Invite a second device to a two-device session you created. Prints the invite
    /// link on standard output: it holds the session key after `#secret=`, so hand it
    /// over only to the person joining. Valid 15 minutes, once.
    Invite {
        /// The session.
        #[arg(long, value_name = "UUID")]
        session: Uuid,
        /// Server URL, also used in the link (default: the one the session was created on).
        #[arg(long, env = "PHIVAULT_SERVER", value_name = "URL")]
        server: Option<String>,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Join a session with an invite link, as a guest device (no account needed). The
    /// device key is made on first use and kept; the device is registered on the server
    /// when it is not yet. Prints the session id.
    Join {
        /// The invite link, or - to read it from standard input (which keeps the key out
        /// of shell history and the process list).
        #[arg(value_name = "URL")]
        link: String,
        /// Server URL (default: the one in the link).
        #[arg(long, env = "PHIVAULT_SERVER", value_name = "URL")]
        server: Option<String>,
    },
    /// Seal one utterance with the session key and send it with your next sequence
    /// number.
    Send {
        /// The session.
        #[arg(long, value_name = "UUID")]
        session: Uuid,
        /// The text, or - to read it from standard input (which keeps it out of shell
        /// history and the process list).
        #[arg(value_name = "TEXT")]
        text: String,
        /// Server URL (default: the one the session was created or joined on).
        #[arg(long, env = "PHIVAULT_SERVER", value_name = "URL")]
        server: Option<String>,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Print the session's utterances (position, sender, sequence, text). One that fails
    /// authentication is not shown: a refusal line stands in its place, and the command
    /// exits non-zero at the end.
    Read {
        /// The session.
        #[arg(long, value_name = "UUID")]
        session: Uuid,
        /// One JSON object per line: position, sender, sequence, and text or refused.
        #[arg(long)]
        json: bool,
        /// Keep printing new utterances until the session ends (or Ctrl-C).
        #[arg(long)]
        follow: bool,
        /// Server URL (default: the one the session was created or joined on).
        #[arg(long, env = "PHIVAULT_SERVER", value_name = "URL")]
        server: Option<String>,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// End a session you created: the server deletes every utterance, and this machine
    /// forgets the key.
    End {
        /// The session.
        #[arg(long, value_name = "UUID")]
        session: Uuid,
        /// Server URL (default: the one the session was created on).
        #[arg(long, env = "PHIVAULT_SERVER", value_name = "URL")]
        server: Option<String>,
        #[command(flatten)]
        token: TokenArgs,
    },
}

/// The owner's credential. A guest device uses its own token from the key store.
#[derive(Args)]
pub struct TokenArgs {
    /// File holding the API token of a tenant user with dictation:create (default: the
    /// PHIVAULT_TOKEN environment variable). Not needed on a device that joined.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl TokenArgs {
    fn read(&self) -> Result<SecretString> {
        let text = match &self.token_file {
            Some(path) => Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?,
            ),
            None => Zeroizing::new(std::env::var("PHIVAULT_TOKEN").map_err(|_| {
                anyhow!(
                    "no API token: set PHIVAULT_TOKEN or pass --token-file (a tenant user's \
                     token with dictation:create)"
                )
            })?),
        };
        let token = text.trim();
        if token.is_empty() {
            bail!("the API token is empty");
        }
        Ok(SecretString::from(token))
    }
}

pub async fn run(cmd: E2eCommand) -> Result<()> {
    match cmd {
        E2eCommand::New {
            tenant,
            single_device,
            server,
            token,
        } => new(tenant, single_device, &server, &token).await,
        E2eCommand::Invite {
            session,
            server,
            token,
        } => invite(session, server.as_deref(), &token).await,
        E2eCommand::Join { link, server } => join(&link, server.as_deref()).await,
        E2eCommand::Send {
            session,
            text,
            server,
            token,
        } => send(session, &text, server.as_deref(), &token).await,
        E2eCommand::Read {
            session,
            json,
            follow,
            server,
            token,
        } => read(session, json, follow, server.as_deref(), &token).await,
        E2eCommand::End {
            session,
            server,
            token,
        } => end(session, server.as_deref(), &token).await,
    }
}

/// Opens the key store. When `saving` new secrets, says so on standard error if they
/// will sit in files only because no OS keyring answered.
fn open_store(saving: bool) -> Result<KeyStore> {
    let config = KeyStoreConfig::from_env()?;
    let auto = config.choice == BackendChoice::Auto;
    let store = KeyStore::open(config)?;
    if saving && auto && store.backend() == Backend::File {
        eprintln!(
            "phivault: no OS keyring available; keys are kept in {} (files readable by you \
             only). Set PHIVAULT_E2E_KEYSTORE=file to silence this.",
            store.dir().display()
        );
    }
    Ok(store)
}

fn server_url(text: &str) -> Result<ServerUrl> {
    ServerUrl::parse(text).with_context(|| format!("--server {text}"))
}

/// What `send`, `read`, `invite` and `end` need: the stored session and a client
/// carrying the right credential for this machine's role in it.
struct Loaded {
    store: KeyStore,
    state: SessionState,
    session: E2eSession,
    client: Client,
}

fn load(session_id: Uuid, server: Option<&str>, token: &TokenArgs) -> Result<Loaded> {
    let store = open_store(false)?;
    let missing = || {
        anyhow!(
            "session {session_id} is not in this machine's key store ({}): create it with \
             `phivault e2e new` or join it with an invite link",
            store.backend().as_str()
        )
    };
    let state = store.load_session_state(session_id)?.ok_or_else(missing)?;
    let key = store.load_session_key(session_id)?.ok_or_else(missing)?;
    let server = match server {
        Some(s) => server_url(s)?,
        None => ServerUrl::parse(&state.server).context("the stored server URL")?,
    };
    let bearer = match state.role {
        Role::Owner => token.read()?,
        Role::Guest => {
            store
                .load_device_registration(&server)?
                .ok_or_else(|| {
                    anyhow!(
                        "this device is not registered on {server}: join the session again \
                         with a new invite link"
                    )
                })?
                .device_token
        }
    };
    let client = Client::new(server)?.with_bearer(bearer);
    let session = E2eSession {
        tenant_id: state.tenant_id,
        session_id: state.session_id,
        participant_id: state.participant_id,
        key,
        last_sequence: state.last_sequence,
    };
    Ok(Loaded {
        store,
        state,
        session,
        client,
    })
}

/// Adds a hint to errors a person can act on.
fn explain(e: E2eError, role: Role) -> anyhow::Error {
    let hint = match (e.code(), role) {
        (_, Role::Guest) if Client::is_unauthorized(&e) => {
            Some("the device token was refused; join again with a new invite link")
        }
        (_, Role::Owner) if Client::is_unauthorized(&e) => {
            Some("the API token was refused (PHIVAULT_TOKEN or --token-file)")
        }
        (Some("session_ended"), _) => Some("the session has ended"),
        _ => None,
    };
    match hint {
        Some(h) => anyhow::Error::new(e).context(h),
        None => e.into(),
    }
}

async fn new(tenant: Uuid, single_device: bool, server: &str, token: &TokenArgs) -> Result<()> {
    let server = server_url(server)?;
    let store = open_store(true)?;
    let client = Client::new(server.clone())?.with_bearer(token.read()?);
    let mode = if single_device {
        Mode::SingleDevice
    } else {
        Mode::TwoDevice
    };
    let (session, info) = client
        .start_session(tenant, mode)
        .await
        .map_err(|e| explain(e, Role::Owner))?;
    let saved = store
        .save_session_key(session.session_id, &session.key)
        .and_then(|()| {
            store.save_session_state(&SessionState {
                server: server.as_str().to_string(),
                tenant_id: tenant,
                session_id: session.session_id,
                participant_id: session.participant_id,
                role: Role::Owner,
                mode: Some(info.mode),
                last_sequence: 0,
            })
        });
    if let Err(e) = saved {
        // A session whose key is lost can never be read: better not to leave it open.
        let ended = client.end_session(tenant, session.session_id).await.is_ok();
        let what = if ended { "ended" } else { "left open" };
        return Err(anyhow::Error::new(e).context(format!(
            "cannot keep the key of session {}; the session was {what}",
            session.session_id
        )));
    }
    println!("{}", session.session_id);
    if mode == Mode::TwoDevice && std::io::stderr().is_terminal() {
        eprintln!(
            "invite the other device with: phivault e2e invite --session {}",
            session.session_id
        );
    }
    Ok(())
}

async fn invite(session_id: Uuid, server: Option<&str>, token: &TokenArgs) -> Result<()> {
    let loaded = load(session_id, server, token)?;
    if loaded.state.role != Role::Owner {
        bail!("only the device that created session {session_id} can invite");
    }
    if loaded.state.mode == Some(Mode::SingleDevice) {
        bail!("session {session_id} is single-device: it takes no invites");
    }
    let created = loaded
        .client
        .create_invite(loaded.state.tenant_id, session_id)
        .await
        .map_err(|e| explain(e, Role::Owner))?;
    let link = Invite::new(
        loaded.client.server().clone(),
        created.token.expose_secret(),
        loaded.session.key.clone(),
    )?;
    // The one place the key is printed, on purpose: the link is how it reaches the guest.
    println!("{}", link.to_url().as_str());
    if std::io::stderr().is_terminal() {
        eprintln!(
            "single use, valid until {}; the part after # is the session key",
            created.expires_at
        );
    }
    Ok(())
}

fn read_stdin(what: &str) -> Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    Ok(text)
}

/// The device's token on `server`: the stored one, or a new registration (made, with
/// the device key, on first use).
async fn device_token(
    store: &KeyStore,
    server: &ServerUrl,
    fresh: bool,
) -> Result<(SecretString, bool)> {
    if !fresh && let Some(registration) = store.load_device_registration(server)? {
        return Ok((registration.device_token, false));
    }
    let device = store.load_or_create_device()?;
    let registered = Client::new(server.clone())?
        .register_device(&device)
        .await
        .context("cannot register this device")?;
    store.save_device_registration(
        server,
        &DeviceRegistration {
            device_id: registered.device_id,
            device_token: registered.device_token.clone(),
        },
    )?;
    if let Some(trial) = registered.trial {
        eprintln!(
            "device {} registered (sessions joined: {} of {})",
            registered.device_id, trial.sessions_joined, trial.limit
        );
    } else {
        eprintln!("device {} registered", registered.device_id);
    }
    Ok((registered.device_token, true))
}

async fn join(link: &str, server: Option<&str>) -> Result<()> {
    let link = if link == "-" {
        read_stdin("invite link")?
    } else {
        Zeroizing::new(link.to_string())
    };
    let invite = Invite::parse(&link)?;
    let server = match server {
        Some(s) => server_url(s)?,
        None => invite.server().clone(),
    };
    let store = open_store(true)?;
    let (token, fresh) = device_token(&store, &server, false).await?;
    let mut client = Client::new(server.clone())?.with_bearer(token);
    let joined = match client.join_invite(&invite).await {
        // A stored token can have been replaced by a later registration of the same key;
        // the invite is still unused when the token is refused.
        Err(e) if !fresh && Client::is_unauthorized(&e) => {
            let (token, _) = device_token(&store, &server, true).await?;
            client.set_bearer(token);
            client.join_invite(&invite).await
        }
        other => other,
    };
    let (session, _) = joined.map_err(|e| match e {
        E2eError::FingerprintMismatch => anyhow!(
            "the key in the link is not this session's key: the link was altered or cut; \
             ask for a new one"
        ),
        e => explain(e, Role::Guest),
    })?;
    let previous = store.load_session_state(session.session_id)?;
    store.save_session_key(session.session_id, &session.key)?;
    store.save_session_state(&SessionState {
        server: server.as_str().to_string(),
        tenant_id: session.tenant_id,
        session_id: session.session_id,
        participant_id: session.participant_id,
        role: Role::Guest,
        mode: Some(Mode::TwoDevice),
        last_sequence: previous
            .filter(|p| p.participant_id == session.participant_id)
            .map_or(0, |p| p.last_sequence),
    })?;
    println!("{}", session.session_id);
    Ok(())
}

async fn send(session_id: Uuid, text: &str, server: Option<&str>, token: &TokenArgs) -> Result<()> {
    let Loaded {
        store,
        mut state,
        mut session,
        client,
    } = load(session_id, server, token)?;
    let text = if text == "-" {
        let mut all = read_stdin("text")?;
        // `echo … | phivault e2e send -` adds a newline nobody said.
        let trimmed = all.trim_end_matches(['\r', '\n']).len();
        all.truncate(trimmed);
        all
    } else {
        Zeroizing::new(text.to_string())
    };
    let sent = client.send_text(&mut session, &text).await;
    if session.last_sequence != state.last_sequence {
        state.last_sequence = session.last_sequence;
        store.save_session_state(&state)?;
    }
    let stored = sent.map_err(|e| explain(e, state.role))?;
    println!("position {} sequence {}", stored.position, stored.sequence);
    Ok(())
}

/// Text from another participant, made safe for a terminal: control characters (escape
/// sequences, carriage returns, newlines that would fake another line) and bidirectional
/// overrides are shown escaped.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints one utterance; returns whether it was refused.
fn print_utterance(out: &mut impl Write, u: &Utterance, me: Uuid, json: bool) -> Result<bool> {
    let refused = u.text.is_err();
    if json {
        let mut line = serde_json::json!({
            "position": u.position,
            "sender": u.sender,
            "sequence": u.sequence,
        });
        match &u.text {
            Ok(text) => line["text"] = text.as_str().into(),
            Err(e) => line["refused"] = e.to_string().into(),
        }
        writeln!(out, "{line}")?;
    } else {
        match &u.text {
            Ok(text) => {
                let who = if u.sender == me { " (you)" } else { "" };
                writeln!(
                    out,
                    "[{}] {}{who} #{}: {}",
                    u.position,
                    u.sender,
                    u.sequence,
                    printable(text)
                )?;
            }
            Err(e) => writeln!(out, "[position {}: refused: {e}]", u.position)?,
        }
    }
    out.flush()?;
    Ok(refused)
}

async fn read(
    session_id: Uuid,
    json: bool,
    follow: bool,
    server: Option<&str>,
    token: &TokenArgs,
) -> Result<()> {
    let Loaded {
        store,
        mut state,
        session,
        client,
    } = load(session_id, server, token)?;
    let role = state.role;
    let me = session.participant_id;
    let mut stdout = std::io::stdout().lock();
    let mut refused = 0usize;
    let mut own_highest = 0u64;
    let mut note = |u: &Utterance, refused: &mut usize| {
        if u.text.is_err() {
            *refused += 1;
        } else if u.sender == me {
            own_highest = own_highest.max(u.sequence);
        }
    };

    if follow {
        let mut after: Option<u64> = None;
        let mut failures = 0u32;
        'connect: loop {
            let mut stream = match client
                .stream_utterances(state.tenant_id, session_id, after)
                .await
            {
                Ok(s) => s,
                Err(e) if retryable(&e) && failures < FOLLOW_RETRIES => {
                    failures += 1;
                    backoff(failures).await;
                    continue;
                }
                Err(e) => return Err(explain(e, role)),
            };
            loop {
                match stream.next().await {
                    Ok(Some(StreamEvent::Utterance(record))) => {
                        failures = 0;
                        after = Some(record.position);
                        let u = session.open_record(&record);
                        print_utterance(&mut stdout, &u, me, json)?;
                        note(&u, &mut refused);
                    }
                    Ok(Some(StreamEvent::End)) => {
                        eprintln!("phivault: the session has ended");
                        break 'connect;
                    }
                    // The connection dropped without the end of the session: pick up after
                    // the last position printed.
                    Ok(None) | Err(E2eError::Transport(_)) if failures < FOLLOW_RETRIES => {
                        failures += 1;
                        backoff(failures).await;
                        continue 'connect;
                    }
                    Ok(None) => bail!("the stream kept closing; giving up"),
                    Err(e) => return Err(explain(e, role)),
                }
            }
        }
    } else {
        let utterances = client
            .read_all(&session)
            .await
            .map_err(|e| explain(e, role))?;
        for u in &utterances {
            print_utterance(&mut stdout, u, me, json)?;
            note(u, &mut refused);
        }
    }

    // Keeps the next `send` from reusing a sequence this participant sent from a copy of
    // the key store that was lost or restored.
    if own_highest > state.last_sequence {
        state.last_sequence = own_highest;
        store.save_session_state(&state)?;
    }
    if refused > 0 {
        bail!("{refused} utterance(s) failed authentication and were not shown");
    }
    Ok(())
}

fn retryable(e: &E2eError) -> bool {
    matches!(e, E2eError::Transport(_)) || e.status().is_some_and(|s| s >= 500)
}

async fn backoff(attempt: u32) {
    let seconds = 1u64 << attempt.min(5);
    eprintln!("phivault: stream interrupted; reconnecting in {seconds}s");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

async fn end(session_id: Uuid, server: Option<&str>, token: &TokenArgs) -> Result<()> {
    let loaded = load(session_id, server, token)?;
    if loaded.state.role != Role::Owner {
        bail!("only the device that created session {session_id} can end it");
    }
    loaded
        .client
        .end_session(loaded.state.tenant_id, session_id)
        .await
        .map_err(|e| explain(e, Role::Owner))?;
    loaded.store.forget_session(session_id)?;
    println!("session {session_id} ended");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_terminal_tricks() {
        assert_eq!(printable("plain words"), "plain words");
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(printable("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable("café"), "café");
    }
}
