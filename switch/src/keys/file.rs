//! The key and mandate file, `<data_dir>/keys.json`: its JSON format and
//! limits, the lock file that serializes the operator commands, and the
//! atomic write that keeps the server from ever reading half a file.
//!
//! [`write_atomic`] and [`random`] also serve the card-token key, which
//! is written and made the same way.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The file, in the data directory.
pub(super) const KEYS_FILE: &str = "keys.json";
/// Format version of the file.
const FILE_VERSION: u32 = 1;
/// Largest file read; checked before reading.
const FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most keys in the file, revoked ones included.
pub(super) const KEYS_MAX: usize = 10_000;
/// Most mandates in the file, revoked ones included.
pub(super) const MANDATES_MAX: usize = 100_000;
/// How long a command waits for another command's lock file.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Errors of the key and mandate file and its commands.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not what this version writes.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A command argument is malformed.
    #[error("{what}: expected {expected}, found `{found}`")]
    Invalid {
        /// The argument.
        what: &'static str,
        /// What it should look like.
        expected: &'static str,
        /// What was given.
        found: String,
    },
    /// No such key or mandate (in force).
    #[error("{0}")]
    NotFound(String),
    /// Another command holds the lock file.
    #[error("{0} is held by another command; if none runs, remove it")]
    Locked(PathBuf),
    /// The file is at its limit.
    #[error("{0} limit reached")]
    Full(&'static str),
}

/// Whom a key belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// A merchant, by MID (ISO 8583 F42, 15 characters).
    Merchant(String),
    /// A service provider, by provider id (`XX-0000-0000`).
    Provider(String),
}

/// A key as stored: never the secret, only its hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct KeyRecord {
    /// `XX-0000-0000`; what the client sends to log in.
    pub(super) client_id: String,
    /// For people: which system or person uses it.
    pub(super) name: String,
    /// Merchant or provider.
    pub(super) owner: Owner,
    /// SHA-256 of the secret, hex.
    pub(super) secret_sha256: String,
    /// First and last 3 characters of the secret, for recognizing it.
    pub(super) secret_hint: String,
    /// When created, Unix seconds.
    pub(super) created_unix_s: u64,
    /// When revoked, Unix seconds; a revoked key never works again.
    pub(super) revoked_unix_s: Option<u64>,
}

/// A merchant's mandate to a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mandate {
    /// The merchant's MID.
    pub merchant: String,
    /// The provider id.
    pub provider: String,
    /// When granted, Unix seconds.
    pub granted_unix_s: u64,
    /// When revoked, Unix seconds; `None` while in force.
    pub revoked_unix_s: Option<u64>,
    /// What it allows. A mandate written before scopes existed allows
    /// everything, as it did then.
    #[serde(default = "Scope::all")]
    pub scopes: Vec<Scope>,
}

/// What a mandate lets its provider do for the merchant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Take, capture, cancel and flag payments; manage terminals.
    Payments,
    /// Refund payments.
    Refunds,
    /// Read payments (details, lists, exports).
    Reporting,
}

impl Scope {
    /// Every scope, in order.
    pub fn all() -> Vec<Scope> {
        vec![Scope::Payments, Scope::Refunds, Scope::Reporting]
    }

    /// Its name, as the command line and the file spell it.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Payments => "payments",
            Scope::Refunds => "refunds",
            Scope::Reporting => "reporting",
        }
    }

    /// Its bit in internal frames ([`codecs::internal::scope`]).
    pub fn bit(self) -> u8 {
        use codecs::internal::scope;
        match self {
            Scope::Payments => scope::PAYMENTS,
            Scope::Refunds => scope::REFUNDS,
            Scope::Reporting => scope::REPORTING,
        }
    }

    /// Parses a comma-separated list (`payments,refunds`), each once.
    ///
    /// # Errors
    /// An empty list, an unknown or a repeated name.
    pub fn parse_list(list: &str) -> Result<Vec<Scope>, KeysError> {
        let bad = || KeysError::Invalid {
            what: "--scopes",
            expected: "a comma-separated list of payments, refunds, reporting",
            found: list.to_owned(),
        };
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim) {
            let s = Scope::all()
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(bad)?;
            if out.contains(&s) {
                return Err(bad());
            }
            out.push(s);
        }
        if out.is_empty() {
            return Err(bad());
        }
        Ok(out)
    }
}

/// The file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct KeysFile {
    /// [`FILE_VERSION`].
    pub(super) version: u32,
    /// Every key ever created.
    pub(super) keys: Vec<KeyRecord>,
    /// Every mandate ever granted.
    pub(super) mandates: Vec<Mandate>,
}

/// `create_new` lock file beside the data file, removed on drop (also
/// serializes the directory commands on `directory.json`, and the
/// webhook endpoint file's).
pub(crate) struct LockFile(PathBuf);

impl LockFile {
    /// Takes `<path>.lock` (as `keys.json.lock`), waiting up to 5 s for
    /// another command to let it go.
    ///
    /// # Errors
    /// When it is still held then, or cannot be made.
    pub(crate) fn acquire(path: &Path) -> Result<LockFile, KeysError> {
        let lock = path.with_extension("json.lock");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| KeysError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(_) => return Ok(LockFile(lock)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if std::time::Instant::now() > deadline {
                        return Err(KeysError::Locked(lock));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => return Err(KeysError::Io { path: lock, source }),
            }
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reads and checks the file; a missing file is an empty one.
pub(super) fn read_file(path: &Path) -> Result<KeysFile, KeysError> {
    let io = |source| KeysError::Io {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |reason: String| KeysError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(KeysFile {
                version: FILE_VERSION,
                ..KeysFile::default()
            })
        }
        Err(e) => return Err(io(e)),
    };
    let len = f.metadata().map_err(io)?.len();
    if len > FILE_BYTES_MAX {
        return Err(corrupt(format!("{len} bytes, over {FILE_BYTES_MAX}")));
    }
    let mut text = String::new();
    f.take(FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(io)?;
    let file: KeysFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if file.version != FILE_VERSION {
        return Err(corrupt(format!(
            "version {}, expected {FILE_VERSION}",
            file.version
        )));
    }
    if file.keys.len() > KEYS_MAX || file.mandates.len() > MANDATES_MAX {
        return Err(corrupt("more keys or mandates than the limits".into()));
    }
    Ok(file)
}

/// Temp file (0600), fsync, rename, fsync of the directory: after a crash
/// the file is either the old one or the new one, never a mix. Also writes
/// the card-token key.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Fills `out` from the kernel's random source (secrets, the token key).
///
/// # Errors
/// When /dev/urandom cannot be read.
pub(crate) fn random(out: &mut [u8]) -> Result<(), KeysError> {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(out))
        .map_err(|source| KeysError::Io {
            path: PathBuf::from("/dev/urandom"),
            source,
        })
}
