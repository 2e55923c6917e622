//! Where a client keeps what it must not lose or leak: session keys, the device key, the
//! device's tokens, and a little state per session. The OS keyring comes first; a
//! directory of 0600 files (in a 0700 directory) stands in where there is none, as on a
//! headless server or in CI.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::device::DeviceIdentity;
use crate::key::{KEY_LEN, SessionKey};
use crate::server::ServerUrl;
use crate::wire::Mode;
use crate::{E2eError, Result};

/// The keyring service name every entry is filed under.
pub const KEYRING_SERVICE: &str = "phivault-e2e";
/// Forces a backend: `file`, `keyring` or `auto` (the default).
pub const ENV_BACKEND: &str = "PHIVAULT_E2E_KEYSTORE";
/// Overrides the directory of the file backend.
pub const ENV_DIR: &str = "PHIVAULT_E2E_DIR";

/// Which backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// The OS keyring when it answers, else files.
    Auto,
    /// The OS keyring or an error.
    Keyring,
    /// Files only.
    File,
}

/// The backend a store ended up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The OS keyring (files are still read for entries it does not have).
    Keyring,
    /// 0600 files in a 0700 directory.
    File,
}

impl Backend {
    /// A name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Keyring => "OS keyring",
            Backend::File => "files",
        }
    }
}

/// How to open a [`KeyStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStoreConfig {
    /// Backend choice.
    pub choice: BackendChoice,
    /// Directory of the file backend.
    pub dir: PathBuf,
}

impl KeyStoreConfig {
    /// From `PHIVAULT_E2E_KEYSTORE`, `PHIVAULT_E2E_DIR`, `XDG_CONFIG_HOME` and `HOME`.
    pub fn from_env() -> Result<Self> {
        let backend = std::env::var(ENV_BACKEND).ok();
        Self::from_vars(
            backend.as_deref(),
            std::env::var_os(ENV_DIR).as_deref(),
            std::env::var_os("XDG_CONFIG_HOME").as_deref(),
            std::env::var_os("HOME").as_deref(),
        )
    }

    /// The same from explicit values (empty values count as unset, as XDG says).
    pub fn from_vars(
        backend: Option<&str>,
        dir: Option<&OsStr>,
        xdg_config_home: Option<&OsStr>,
        home: Option<&OsStr>,
    ) -> Result<Self> {
        let choice = match backend.map(str::trim).unwrap_or("") {
            "" | "auto" => BackendChoice::Auto,
            "keyring" => BackendChoice::Keyring,
            "file" => BackendChoice::File,
            _ => {
                return Err(E2eError::Store(format!(
                    "{ENV_BACKEND} must be file, keyring or auto"
                )));
            }
        };
        let set = |v: Option<&OsStr>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = if let Some(dir) = set(dir) {
            dir
        } else if let Some(xdg) = set(xdg_config_home).filter(|p| p.is_absolute()) {
            xdg.join("phivault").join("e2e")
        } else if let Some(home) = set(home) {
            home.join(".config").join("phivault").join("e2e")
        } else {
            return Err(E2eError::Store(format!(
                "no HOME or XDG_CONFIG_HOME: set {ENV_DIR} to a directory"
            )));
        };
        Ok(KeyStoreConfig { choice, dir })
    }
}

/// Whose session it is on this client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created it with a tenant user's token.
    Owner,
    /// Joined it as a guest device with an invite.
    Guest,
}

/// What a client remembers about a session besides its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// The server it lives on.
    pub server: String,
    /// The session's tenant.
    pub tenant_id: Uuid,
    /// The session.
    pub session_id: Uuid,
    /// This client's sender id in it.
    pub participant_id: Uuid,
    /// Owner or guest.
    pub role: Role,
    /// Single- or two-device, when known.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// The last sequence number this client sent (0 before the first).
    #[serde(default)]
    pub last_sequence: u64,
}

/// A device's registration on one server. `Debug` hides the token.
#[derive(Clone)]
pub struct DeviceRegistration {
    /// The device id the server derived from the public key.
    pub device_id: Uuid,
    /// The device's bearer token.
    pub device_token: SecretString,
}

impl std::fmt::Debug for DeviceRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRegistration")
            .field("device_id", &self.device_id)
            .field("device_token", &"redacted")
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredRegistration {
    device_id: Uuid,
    device_token: String,
}

/// Named secrets in the OS keyring or in files.
#[derive(Debug)]
pub struct KeyStore {
    backend: Backend,
    dir: PathBuf,
}

const DEVICE_KEY: &str = "device-key";

fn session_key_name(session: Uuid) -> String {
    format!("session-key.{session}")
}

fn session_state_name(session: Uuid) -> String {
    format!("session-state.{session}")
}

fn registration_name(server: &ServerUrl) -> String {
    // Hashed so that any URL gives a safe, fixed-length file name.
    let digest = Sha256::digest(server.as_str().as_bytes());
    format!("device-registration.{}", hex::encode(&digest[..8]))
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(E2eError::Store(
            "an entry name may hold only a-z, 0-9, '.' and '-'".into(),
        ))
    }
}

fn keyring_error(e: keyring::Error) -> E2eError {
    // Spelled out per variant: some of them carry the stored bytes.
    use keyring::Error as K;
    let what = match e {
        K::PlatformFailure(err) => format!("OS keyring failure: {err}"),
        K::NoStorageAccess(err) => format!("no access to the OS keyring: {err}"),
        K::NoEntry => "no such entry in the OS keyring".into(),
        K::BadEncoding(_) | K::BadDataFormat(..) => "malformed entry in the OS keyring".into(),
        K::NoDefaultStore => "no OS keyring on this system".into(),
        K::TooLong(..) => "entry too long for the OS keyring".into(),
        _ => "the OS keyring refused the request".into(),
    };
    E2eError::Store(what)
}

impl KeyStore {
    /// Opens the store `PHIVAULT_E2E_KEYSTORE` and `PHIVAULT_E2E_DIR` describe.
    pub fn from_env() -> Result<Self> {
        Self::open(KeyStoreConfig::from_env()?)
    }

    /// Opens a store. In `Auto`, the keyring is tried with one read; any failure other
    /// than "no such entry" means there is none worth using, and files are used.
    pub fn open(config: KeyStoreConfig) -> Result<Self> {
        let backend = match config.choice {
            BackendChoice::File => Backend::File,
            BackendChoice::Keyring => {
                probe_keyring()?;
                Backend::Keyring
            }
            BackendChoice::Auto => match probe_keyring() {
                Ok(()) => Backend::Keyring,
                Err(_) => Backend::File,
            },
        };
        Ok(KeyStore {
            backend,
            dir: config.dir,
        })
    }

    /// A file-backed store in `dir` (created 0700 on first write).
    pub fn file(dir: impl Into<PathBuf>) -> Self {
        KeyStore {
            backend: Backend::File,
            dir: dir.into(),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The directory of the file backend (used as a fallback by the keyring backend).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves a secret under `name` (`a-z`, `0-9`, `.`, `-`).
    pub fn put_secret(&self, name: &str, secret: &[u8]) -> Result<()> {
        check_name(name)?;
        if self.backend == Backend::Keyring {
            let stored = keyring::Entry::new(KEYRING_SERVICE, name)
                .and_then(|entry| entry.set_secret(secret));
            if stored.is_ok() {
                // An older copy on disk would outlive the one in the keyring.
                return self.delete_file(name);
            }
            // The keyring answered the probe but refuses this write (locked, full):
            // the file backend still keeps the secret from being lost.
        }
        self.write_file(name, secret)
    }

    /// Loads the secret saved under `name`, if any.
    pub fn get_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        check_name(name)?;
        if self.backend == Backend::Keyring {
            match keyring::Entry::new(KEYRING_SERVICE, name).and_then(|e| e.get_secret()) {
                Ok(bytes) => return Ok(Some(Zeroizing::new(bytes))),
                Err(keyring::Error::NoEntry) => {}
                Err(e) => {
                    // A secret written while the keyring refused writes is on disk.
                    if let Some(found) = self.read_file(name)? {
                        return Ok(Some(found));
                    }
                    return Err(keyring_error(e));
                }
            }
        }
        self.read_file(name)
    }

    /// Deletes the secret saved under `name`; nothing happens when there is none.
    pub fn delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        if self.backend == Backend::Keyring {
            match keyring::Entry::new(KEYRING_SERVICE, name).and_then(|e| e.delete_credential()) {
                Ok(()) | Err(keyring::Error::NoEntry) => {}
                Err(e) => return Err(keyring_error(e)),
            }
        }
        self.delete_file(name)
    }

    /// Saves a session's key.
    pub fn save_session_key(&self, session: Uuid, key: &SessionKey) -> Result<()> {
        self.put_secret(&session_key_name(session), key.expose())
    }

    /// Loads a session's key.
    pub fn load_session_key(&self, session: Uuid) -> Result<Option<SessionKey>> {
        let Some(bytes) = self.get_secret(&session_key_name(session))? else {
            return Ok(None);
        };
        let raw: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            E2eError::Store(format!("the stored key of session {session} is damaged"))
        })?;
        Ok(Some(SessionKey::from_bytes(raw)))
    }

    /// Saves what the client remembers about a session.
    pub fn save_session_state(&self, state: &SessionState) -> Result<()> {
        let json = serde_json::to_vec(state)
            .map_err(|_| E2eError::Store("cannot encode session state".into()))?;
        self.put_secret(&session_state_name(state.session_id), &json)
    }

    /// Loads what the client remembers about a session.
    pub fn load_session_state(&self, session: Uuid) -> Result<Option<SessionState>> {
        let Some(bytes) = self.get_secret(&session_state_name(session))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|_| {
            E2eError::Store(format!("the stored state of session {session} is damaged"))
        })
    }

    /// Forgets a session's key and state.
    pub fn forget_session(&self, session: Uuid) -> Result<()> {
        self.delete(&session_key_name(session))?;
        self.delete(&session_state_name(session))
    }

    /// Saves the device identity (its secret seed).
    pub fn save_device(&self, device: &DeviceIdentity) -> Result<()> {
        self.put_secret(DEVICE_KEY, device.to_secret_bytes().as_slice())
    }

    /// Loads the device identity, if there is one.
    pub fn load_device(&self) -> Result<Option<DeviceIdentity>> {
        let Some(bytes) = self.get_secret(DEVICE_KEY)? else {
            return Ok(None);
        };
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| E2eError::Store("the stored device key is damaged".into()))?,
        );
        Ok(Some(DeviceIdentity::from_secret_bytes(&seed)))
    }

    /// The device identity, made and saved on first use. Keeping it keeps the device id
    /// (and its trial count) on every server.
    pub fn load_or_create_device(&self) -> Result<DeviceIdentity> {
        if let Some(device) = self.load_device()? {
            return Ok(device);
        }
        let device = DeviceIdentity::generate()?;
        self.save_device(&device)?;
        Ok(device)
    }

    /// Saves the device's registration on `server`.
    pub fn save_device_registration(
        &self,
        server: &ServerUrl,
        registration: &DeviceRegistration,
    ) -> Result<()> {
        let stored = StoredRegistration {
            device_id: registration.device_id,
            device_token: registration.device_token.expose_secret().to_string(),
        };
        let json = Zeroizing::new(
            serde_json::to_vec(&stored)
                .map_err(|_| E2eError::Store("cannot encode the device registration".into()))?,
        );
        drop(Zeroizing::new(stored.device_token));
        self.put_secret(&registration_name(server), &json)
    }

    /// Loads the device's registration on `server`, if any.
    pub fn load_device_registration(
        &self,
        server: &ServerUrl,
    ) -> Result<Option<DeviceRegistration>> {
        let Some(bytes) = self.get_secret(&registration_name(server))? else {
            return Ok(None);
        };
        let stored: StoredRegistration = serde_json::from_slice(&bytes)
            .map_err(|_| E2eError::Store("the stored device registration is damaged".into()))?;
        let token = Zeroizing::new(stored.device_token);
        Ok(Some(DeviceRegistration {
            device_id: stored.device_id,
            device_token: SecretString::from(token.as_str()),
        }))
    }

    /// Forgets the device's registration on `server` (its token no longer works).
    pub fn forget_device_registration(&self, server: &ServerUrl) -> Result<()> {
        self.delete(&registration_name(server))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write_file(&self, name: &str, secret: &[u8]) -> Result<()> {
        ensure_private_dir(&self.dir)?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|_| E2eError::Random)?;
        let tmp = self
            .dir
            .join(format!(".{name}.{}.tmp", hex::encode(suffix)));
        let fail = |what: &str, e: std::io::Error| {
            E2eError::Store(format!("cannot {what} in {}: {e}", self.dir.display()))
        };
        let written = (|| {
            let mut file = create_private_file(&tmp)?;
            file.write_all(secret)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail("write a secret", e));
        }
        // Rename so that a crash never leaves a half-written key behind.
        std::fs::rename(&tmp, self.path(name)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            fail("save a secret", e)
        })
    }

    fn read_file(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        match std::fs::read(self.path(name)) {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(E2eError::Store(format!(
                "cannot read a secret in {}: {e}",
                self.dir.display()
            ))),
        }
    }

    fn delete_file(&self, name: &str) -> Result<()> {
        match std::fs::remove_file(self.path(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(E2eError::Store(format!(
                "cannot delete a secret in {}: {e}",
                self.dir.display()
            ))),
        }
    }
}

fn probe_keyring() -> Result<()> {
    let entry = keyring::Entry::new(KEYRING_SERVICE, "probe").map_err(keyring_error)?;
    match entry.get_secret() {
        Ok(_) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(keyring_error(e)),
    }
}

#[cfg(unix)]
fn ensure_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let fail = |e: std::io::Error| E2eError::Store(format!("cannot create {}: {e}", dir.display()));
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(fail(e)),
    }
    let meta = std::fs::metadata(dir).map_err(fail)?;
    if !meta.is_dir() {
        return Err(E2eError::Store(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    // Refuse rather than chmod: the directory may be one the user shares on purpose.
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(E2eError::Store(format!(
            "{} is open to other users; run: chmod 700 {}",
            dir.display(),
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn ensure_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| E2eError::Store(format!("cannot create {}: {e}", dir.display())))
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, KeyStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = KeyStore::file(tmp.path().join("nested").join("e2e"));
        (tmp, store)
    }

    #[cfg(unix)]
    #[test]
    fn files_are_0600_in_a_0700_directory() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, store) = store();
        let session = Uuid::now_v7();
        store
            .save_session_key(session, &SessionKey::generate().unwrap())
            .unwrap();
        let dir_mode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(store.dir()).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{:?}", entry.file_name());
            names.push(entry.file_name().into_string().unwrap());
        }
        assert_eq!(names, vec![format!("session-key.{session}")]);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_directory_open_to_others() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shared");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = KeyStore::file(&dir);
        let err = store.put_secret("x", b"synthetic").unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn session_key_and_state_round_trip() {
        let (_tmp, store) = store();
        let session = Uuid::now_v7();
        assert!(store.load_session_key(session).unwrap().is_none());
        assert!(store.load_session_state(session).unwrap().is_none());

        let key = SessionKey::generate().unwrap();
        store.save_session_key(session, &key).unwrap();
        let state = SessionState {
            server: "http://127.0.0.1:8420".into(),
            tenant_id: Uuid::now_v7(),
            session_id: session,
            participant_id: Uuid::now_v7(),
            role: Role::Owner,
            mode: Some(Mode::TwoDevice),
            last_sequence: 3,
        };
        store.save_session_state(&state).unwrap();
        let loaded = store.load_session_key(session).unwrap().unwrap();
        assert_eq!(loaded.fingerprint(), key.fingerprint());
        assert_eq!(store.load_session_state(session).unwrap().unwrap(), state);

        // Overwriting replaces, and leaves no temporary file behind.
        let next = SessionState {
            last_sequence: 4,
            ..state
        };
        store.save_session_state(&next).unwrap();
        assert_eq!(
            store
                .load_session_state(session)
                .unwrap()
                .unwrap()
                .last_sequence,
            4
        );
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 2);

        store.forget_session(session).unwrap();
        assert!(store.load_session_key(session).unwrap().is_none());
        assert!(store.load_session_state(session).unwrap().is_none());
        store.forget_session(session).unwrap();
    }

    #[test]
    fn device_identity_and_registration() {
        let (_tmp, store) = store();
        assert!(store.load_device().unwrap().is_none());
        let device = store.load_or_create_device().unwrap();
        let again = store.load_or_create_device().unwrap();
        assert_eq!(device.public_key_base64url(), again.public_key_base64url());

        let a = ServerUrl::parse("http://127.0.0.1:8420").unwrap();
        let b = ServerUrl::parse("https://clinic.example.test").unwrap();
        assert!(store.load_device_registration(&a).unwrap().is_none());
        let id = Uuid::now_v7();
        store
            .save_device_registration(
                &a,
                &DeviceRegistration {
                    device_id: id,
                    device_token: SecretString::from("pvd_synthetic"),
                },
            )
            .unwrap();
        let loaded = store.load_device_registration(&a).unwrap().unwrap();
        assert_eq!(loaded.device_id, id);
        assert_eq!(loaded.device_token.expose_secret(), "pvd_synthetic");
        assert!(!format!("{loaded:?}").contains("pvd_synthetic"));
        assert!(store.load_device_registration(&b).unwrap().is_none());
        store.forget_device_registration(&a).unwrap();
        assert!(store.load_device_registration(&a).unwrap().is_none());
    }

    #[test]
    fn damaged_entries_are_errors_without_contents() {
        let (_tmp, store) = store();
        let session = Uuid::now_v7();
        store
            .put_secret(&session_key_name(session), b"short-synthetic")
            .unwrap();
        let err = store.load_session_key(session).unwrap_err();
        assert!(!err.to_string().contains("short-synthetic"));
    }

    #[test]
    fn names_are_checked() {
        let (_tmp, store) = store();
        for bad in ["", "../x", ".hidden", "a/b", "UPPER", "spa ce"] {
            assert!(store.put_secret(bad, b"x").is_err(), "{bad}");
        }
    }

    #[test]
    fn config_from_vars() {
        let os = |s: &'static str| Some(OsStr::new(s));
        let c = KeyStoreConfig::from_vars(None, None, os("/xdg"), os("/home/u")).unwrap();
        assert_eq!(c.choice, BackendChoice::Auto);
        assert_eq!(c.dir, PathBuf::from("/xdg/phivault/e2e"));
        let c = KeyStoreConfig::from_vars(Some("file"), None, os(""), os("/home/u")).unwrap();
        assert_eq!(c.choice, BackendChoice::File);
        assert_eq!(c.dir, PathBuf::from("/home/u/.config/phivault/e2e"));
        let c = KeyStoreConfig::from_vars(Some("keyring"), os("/d"), os("/xdg"), None).unwrap();
        assert_eq!(c.choice, BackendChoice::Keyring);
        assert_eq!(c.dir, PathBuf::from("/d"));
        // A relative XDG_CONFIG_HOME is to be ignored, says the XDG specification.
        let c = KeyStoreConfig::from_vars(None, None, os("rel"), os("/home/u")).unwrap();
        assert_eq!(c.dir, PathBuf::from("/home/u/.config/phivault/e2e"));
        assert!(KeyStoreConfig::from_vars(Some("vault"), os("/d"), None, None).is_err());
        assert!(KeyStoreConfig::from_vars(None, None, None, None).is_err());
    }

    #[test]
    fn forced_file_backend_opens_without_a_keyring() {
        let tmp = tempfile::tempdir().unwrap();
        let store = KeyStore::open(KeyStoreConfig {
            choice: BackendChoice::File,
            dir: tmp.path().to_path_buf(),
        })
        .unwrap();
        assert_eq!(store.backend(), Backend::File);
    }
}
