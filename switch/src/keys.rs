//! API keys and service-provider mandates: who may use the internal-frame
//! listener, and for which merchants.
//!
//! Both live in one file, `<data_dir>/keys.json` (mode 0600), written
//! atomically by the `switch keys` and `switch mandates` commands (temp
//! file, fsync, rename, fsync of the directory) under a lock file, so the
//! server never sees half a file. The server checks the file's identity
//! (inode, size, modification time) on every request and re-reads it when
//! it changed: a revoked key or mandate is refused on the next request.
//!
//! A key belongs to a merchant (its MID) or to a service provider (a
//! provider id in the client-id form, `XX-0000-0000`). A provider key acts
//! for exactly the merchants whose mandates to that provider are in force.
//!
//! Secrets are 32 bytes from `/dev/urandom`, given to the operator once as
//! 64 hex characters; only their SHA-256 is stored, with the first and last
//! 3 characters for display. A fast hash is enough because the secret has
//! 256 bits of entropy: there is nothing to guess with a dictionary, so a
//! slow password hash would only slow down every log-in. Comparison is
//! constant-time. Failed log-ins (`switch_auth_failures_total{reason}`) are
//! counted by (client id, address) and by address, so they lock out that
//! pair, or that address, and never the key from elsewhere (`lockout`).
//! Log lines name the client id and peer, never the secret.

mod lockout;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use lockout::Limiter;

/// The file, in the data directory.
const KEYS_FILE: &str = "keys.json";
/// Format version of the file.
const FILE_VERSION: u32 = 1;
/// Largest file read; checked before reading.
const FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most keys in the file, revoked ones included.
pub(crate) const KEYS_MAX: usize = 10_000;
/// Most mandates in the file, revoked ones included.
pub(crate) const MANDATES_MAX: usize = 100_000;
/// Secret size, bytes of randomness.
const SECRET_BYTES: usize = 32;
/// How long a command waits for another command's lock file.
const LOCK_WAIT: Duration = Duration::from_secs(5);

// Two hex characters per byte, and the wire's secret field holds 16..=64.
const _: () = assert!(SECRET_BYTES * 2 <= 64 && SECRET_BYTES * 2 >= 16);

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
struct KeyRecord {
    /// `XX-0000-0000`; what the client sends to log in.
    client_id: String,
    /// For people: which system or person uses it.
    name: String,
    /// Merchant or provider.
    owner: Owner,
    /// SHA-256 of the secret, hex.
    secret_sha256: String,
    /// First and last 3 characters of the secret, for recognizing it.
    secret_hint: String,
    /// When created, Unix seconds.
    created_unix_s: u64,
    /// When revoked, Unix seconds; a revoked key never works again.
    revoked_unix_s: Option<u64>,
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
}

/// The file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct KeysFile {
    /// [`FILE_VERSION`].
    version: u32,
    /// Every key ever created.
    keys: Vec<KeyRecord>,
    /// Every mandate ever granted.
    mandates: Vec<Mandate>,
}

/// A key just created: the only time its secret is seen.
#[derive(Clone, PartialEq, Eq)]
pub struct NewKey {
    /// The client id to log in with.
    pub client_id: String,
    /// The secret, 64 hex characters.
    pub secret: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("client_id", &self.client_id)
            .field("secret", &"***")
            .finish()
    }
}

/// A key as listed: masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The client id.
    pub client_id: String,
    /// Its name.
    pub name: String,
    /// Merchant or provider.
    pub owner: Owner,
    /// The secret masked: first and last 3 characters.
    pub secret_hint: String,
    /// When created, Unix seconds.
    pub created_unix_s: u64,
    /// When revoked, Unix seconds.
    pub revoked_unix_s: Option<u64>,
}

/// The key and mandate file of a data directory, for the operator
/// commands.
#[derive(Clone, Debug)]
pub struct KeyAdmin {
    /// `<data_dir>/keys.json`.
    path: PathBuf,
}

impl KeyAdmin {
    /// The file of `data_dir` (created on first change).
    pub fn new(data_dir: &Path) -> KeyAdmin {
        KeyAdmin {
            path: data_dir.join(KEYS_FILE),
        }
    }

    /// Creates a key for `owner`; the secret is returned once.
    ///
    /// # Errors
    /// A malformed MID or provider id, the file's errors, `KEYS_MAX`.
    pub fn create_key(&self, owner: Owner, name: &str) -> Result<NewKey, KeysError> {
        let prefix = match &owner {
            Owner::Merchant(mid) => {
                check_mid(mid)?;
                "MK"
            }
            Owner::Provider(pid) => {
                check_client_id("provider id", pid)?;
                "SP"
            }
        };
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(invalid("--name", "1 to 64 characters", name));
        }
        let mut secret_bytes = [0u8; SECRET_BYTES];
        random(&mut secret_bytes)?;
        let secret = hex::encode(secret_bytes);
        self.change(|file| {
            if file.keys.len() >= KEYS_MAX {
                return Err(KeysError::Full("keys"));
            }
            let client_id = loop {
                let mut r = [0u8; 8];
                random(&mut r)?;
                let n = u64::from_be_bytes(r) % 100_000_000;
                let id = format!("{prefix}-{:04}-{:04}", n / 10_000, n % 10_000);
                if !file.keys.iter().any(|k| k.client_id == id) {
                    break id;
                }
            };
            file.keys.push(KeyRecord {
                client_id: client_id.clone(),
                name: name.to_owned(),
                owner: owner.clone(),
                secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
                secret_hint: hint(&secret),
                created_unix_s: now_unix_s(),
                revoked_unix_s: None,
            });
            Ok(client_id)
        })
        .map(|client_id| NewKey { client_id, secret })
    }

    /// Every key, masked, revoked ones included.
    ///
    /// # Errors
    /// The file's errors.
    pub fn keys(&self) -> Result<Vec<KeyInfo>, KeysError> {
        Ok(read_file(&self.path)?
            .keys
            .into_iter()
            .map(|k| KeyInfo {
                client_id: k.client_id,
                name: k.name,
                owner: k.owner,
                secret_hint: k.secret_hint,
                created_unix_s: k.created_unix_s,
                revoked_unix_s: k.revoked_unix_s,
            })
            .collect())
    }

    /// Revokes key `client_id`, for good.
    ///
    /// # Errors
    /// [`KeysError::NotFound`] unless a key in force has that id; the
    /// file's errors.
    pub fn revoke_key(&self, client_id: &str) -> Result<(), KeysError> {
        self.change(|file| {
            let key = file
                .keys
                .iter_mut()
                .find(|k| k.client_id == client_id && k.revoked_unix_s.is_none())
                .ok_or_else(|| KeysError::NotFound(format!("no key in force `{client_id}`")))?;
            key.revoked_unix_s = Some(now_unix_s());
            Ok(())
        })
    }

    /// Grants `provider` a mandate for `merchant`; nothing changes when
    /// one is already in force.
    ///
    /// # Errors
    /// A malformed MID or provider id, the file's errors, `MANDATES_MAX`.
    pub fn grant_mandate(&self, merchant: &str, provider: &str) -> Result<(), KeysError> {
        check_mid(merchant)?;
        check_client_id("--provider", provider)?;
        self.change(|file| {
            if file.mandates.iter().any(|m| m.in_force(merchant, provider)) {
                return Ok(());
            }
            if file.mandates.len() >= MANDATES_MAX {
                return Err(KeysError::Full("mandates"));
            }
            file.mandates.push(Mandate {
                merchant: merchant.to_owned(),
                provider: provider.to_owned(),
                granted_unix_s: now_unix_s(),
                revoked_unix_s: None,
            });
            Ok(())
        })
    }

    /// Revokes the mandate of `merchant` to `provider`.
    ///
    /// # Errors
    /// [`KeysError::NotFound`] when none is in force; the file's errors.
    pub fn revoke_mandate(&self, merchant: &str, provider: &str) -> Result<(), KeysError> {
        self.change(|file| {
            let m = file
                .mandates
                .iter_mut()
                .find(|m| m.in_force(merchant, provider))
                .ok_or_else(|| {
                    KeysError::NotFound(format!("no mandate of {merchant} to {provider}"))
                })?;
            m.revoked_unix_s = Some(now_unix_s());
            Ok(())
        })
    }

    /// Every mandate, revoked ones included.
    ///
    /// # Errors
    /// The file's errors.
    pub fn mandates(&self) -> Result<Vec<Mandate>, KeysError> {
        Ok(read_file(&self.path)?.mandates)
    }

    /// Read, change, write atomically, under the lock file.
    fn change<R>(
        &self,
        f: impl FnOnce(&mut KeysFile) -> Result<R, KeysError>,
    ) -> Result<R, KeysError> {
        let _lock = LockFile::acquire(&self.path)?;
        let mut file = read_file(&self.path)?;
        let result = f(&mut file)?;
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| KeysError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.path, &bytes).map_err(|source| KeysError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(result)
    }
}

impl Mandate {
    fn in_force(&self, merchant: &str, provider: &str) -> bool {
        self.revoked_unix_s.is_none() && self.merchant == merchant && self.provider == provider
    }
}

/// `create_new` lock file beside the data file, removed on drop.
struct LockFile(PathBuf);

impl LockFile {
    fn acquire(path: &Path) -> Result<LockFile, KeysError> {
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
fn read_file(path: &Path) -> Result<KeysFile, KeysError> {
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

fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `abc…xyz`.
fn hint(secret: &str) -> String {
    let head = secret.get(..3).unwrap_or("");
    let tail = secret.get(secret.len().saturating_sub(3)..).unwrap_or("");
    format!("{head}…{tail}")
}

fn invalid(what: &'static str, expected: &'static str, found: &str) -> KeysError {
    KeysError::Invalid {
        what,
        expected,
        found: found.chars().take(64).collect(),
    }
}

/// A MID: 15 printable ASCII characters (ISO 8583 F42).
fn check_mid(mid: &str) -> Result<(), KeysError> {
    if mid.len() == 15 && mid.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Ok(())
    } else {
        Err(invalid("--merchant", "a 15-character MID", mid))
    }
}

/// `XX-0000-0000`.
pub(crate) fn is_client_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 12
        && b.iter().enumerate().all(|(i, c)| match i {
            0 | 1 => c.is_ascii_uppercase(),
            2 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

fn check_client_id(what: &'static str, id: &str) -> Result<(), KeysError> {
    if is_client_id(id) {
        Ok(())
    } else {
        Err(invalid(what, "XX-0000-0000", id))
    }
}

/// Equality that takes the same time wherever the first difference is.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Why a log-in was refused; the label of `switch_auth_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Too many failures: refused without checking.
    LockedOut,
    /// No such client id.
    UnknownClient,
    /// The secret does not match.
    BadSecret,
    /// The key was revoked.
    Revoked,
    /// The key file cannot be read: everything is refused.
    StoreUnavailable,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::LockedOut => "locked_out",
            Refusal::UnknownClient => "unknown_client",
            Refusal::BadSecret => "bad_secret",
            Refusal::Revoked => "revoked",
            Refusal::StoreUnavailable => "store_unavailable",
        }
    }
}

/// A key in force, as the server needs it.
#[derive(Clone, Debug)]
struct LiveKey {
    /// SHA-256 of the secret.
    hash: [u8; 32],
    /// Merchant or provider.
    owner: Owner,
    /// Revoked keys stay, so their use is logged as such.
    revoked: bool,
}

/// What the server knows from the file at one moment.
#[derive(Debug, Default)]
struct Snapshot {
    /// Keys by client id.
    keys: HashMap<String, LiveKey>,
    /// Provider id → MIDs whose mandates are in force.
    mandates: HashMap<String, Vec<String>>,
    /// Set when the file could not be read: refuse everything.
    unavailable: bool,
}

impl Snapshot {
    fn from_file(file: KeysFile) -> Snapshot {
        let mut s = Snapshot::default();
        for k in file.keys {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&k.secret_sha256, &mut hash).is_err() {
                continue;
            }
            let revoked = k.revoked_unix_s.is_some();
            s.keys.insert(
                k.client_id,
                LiveKey {
                    hash,
                    owner: k.owner,
                    revoked,
                },
            );
        }
        for m in file
            .mandates
            .into_iter()
            .filter(|m| m.revoked_unix_s.is_none())
        {
            s.mandates.entry(m.provider).or_default().push(m.merchant);
        }
        s
    }
}

/// File identity: a change in any part means a re-read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    /// Inode: a rename gives a new one.
    ino: u64,
    /// Size.
    len: u64,
    /// Modification time, s and ns.
    mtime: (i64, i64),
}

/// The file as last read.
#[derive(Debug)]
struct Cache {
    /// `None`: the file did not exist.
    stamp: Option<Stamp>,
    /// Its content.
    snapshot: Arc<Snapshot>,
}

/// The server's view of the keys and mandates, shared by connections.
#[derive(Debug)]
pub(crate) struct KeyStore {
    /// `<data_dir>/keys.json`.
    path: PathBuf,
    /// Last read content.
    cache: Mutex<Cache>,
    /// Failed log-ins.
    limiter: Mutex<Limiter>,
}

impl KeyStore {
    /// The store of `data_dir`, read now.
    pub(crate) fn open(data_dir: &Path) -> KeyStore {
        let store = KeyStore {
            path: data_dir.join(KEYS_FILE),
            cache: Mutex::new(Cache {
                stamp: None,
                snapshot: Arc::default(),
            }),
            limiter: Mutex::default(),
        };
        store.reload(stamp(&store.path));
        store
    }

    /// The current content, re-read if the file changed since last time.
    fn current(&self) -> Arc<Snapshot> {
        let now = stamp(&self.path);
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            (cache.stamp == now).then(|| cache.snapshot.clone())
        };
        cached.unwrap_or_else(|| self.reload(now))
    }

    /// Reads the file (stamped `stamp` just before) into the cache.
    fn reload(&self, stamp: Option<Stamp>) -> Arc<Snapshot> {
        let snapshot = match read_file(&self.path) {
            Ok(file) => Snapshot::from_file(file),
            Err(e) => {
                // Fail closed: a file that cannot be read grants nothing.
                tracing::error!(error = %e, "key file unreadable: refusing every key");
                Snapshot {
                    unavailable: true,
                    ..Snapshot::default()
                }
            }
        };
        let snapshot = Arc::new(snapshot);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.stamp = stamp;
        cache.snapshot = snapshot.clone();
        snapshot
    }

    /// Checks a log-in. On failure it is counted, logged and measured.
    ///
    /// # Errors
    /// Why it was refused.
    pub(crate) fn authenticate(
        &self,
        client_id: &str,
        secret: &[u8],
        peer: IpAddr,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let result = self.check(client_id, secret, peer, now_ms);
        let mut limiter = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(()) => limiter.succeed(client_id, peer),
            Err(refusal) => {
                if refusal != Refusal::LockedOut {
                    limiter.fail(client_id, peer, now_ms);
                }
                drop(limiter);
                metrics::counter!("switch_auth_failures_total", "reason" => refusal.label())
                    .increment(1);
                tracing::warn!(client_id, %peer, reason = refusal.label(), "internal-frame log-in refused");
            }
        }
        result
    }

    fn check(
        &self,
        client_id: &str,
        secret: &[u8],
        peer: IpAddr,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let locked = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .locked(client_id, peer, now_ms);
        if locked {
            return Err(Refusal::LockedOut);
        }
        let snapshot = self.current();
        if snapshot.unavailable {
            return Err(Refusal::StoreUnavailable);
        }
        let presented: [u8; 32] = Sha256::digest(secret).into();
        // Unknown ids are compared too, so timing does not tell them apart.
        let (expected, key) = match snapshot.keys.get(client_id) {
            Some(k) => (k.hash, Some(k)),
            None => ([0u8; 32], None),
        };
        let matches = ct_eq(&presented, &expected);
        match key {
            None => Err(Refusal::UnknownClient),
            Some(_) if !matches => Err(Refusal::BadSecret),
            Some(k) if k.revoked => Err(Refusal::Revoked),
            Some(_) => Ok(()),
        }
    }

    /// The MIDs key `client_id` may act for now, into `out`; false when
    /// the key is no longer in force (revoked, removed, file unreadable).
    pub(crate) fn merchants_for(&self, client_id: &str, out: &mut Vec<String>) -> bool {
        out.clear();
        let snapshot = self.current();
        let Some(key) = snapshot.keys.get(client_id).filter(|k| !k.revoked) else {
            return false;
        };
        match &key.owner {
            Owner::Merchant(mid) => out.push(mid.clone()),
            Owner::Provider(pid) => {
                out.extend(snapshot.mandates.get(pid).into_iter().flatten().cloned());
            }
        }
        true
    }
}

/// The file's identity now; `None` when it does not exist.
fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
    })
}

#[cfg(test)]
mod tests {
    use super::lockout::{ADDRESS_FAILURES_MAX, LOCKOUT_MS, PAIR_FAILURES_MAX};
    use super::*;

    fn dir() -> PathBuf {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("switch-keys-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    /// Another address than [`PEER`].
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const WRONG: &[u8] = b"wrong-secret-0000";

    /// A store with one merchant key.
    fn store_with_key() -> (KeyStore, NewKey) {
        let d = dir();
        let key = KeyAdmin::new(&d)
            .create_key(Owner::Merchant("DEMO00000000001".into()), "x")
            .expect("create");
        (KeyStore::open(&d), key)
    }

    #[test]
    fn keys_authenticate_until_revoked() {
        let d = dir();
        let admin = KeyAdmin::new(&d);
        let store = KeyStore::open(&d);
        let key = admin
            .create_key(Owner::Merchant("DEMO00000000001".into()), "till")
            .expect("create");
        assert!(is_client_id(&key.client_id) && key.client_id.starts_with("MK-"));
        assert_eq!(key.secret.len(), 64);
        let text = std::fs::read_to_string(d.join(KEYS_FILE)).expect("file");
        assert!(!text.contains(&key.secret), "only the hash is stored");
        let listed = admin.keys().expect("list");
        assert_eq!(listed[0].secret_hint.chars().count(), 7);
        assert!(!format!("{listed:?}{key:?}").contains(&key.secret));

        let ok = store.authenticate(&key.client_id, key.secret.as_bytes(), PEER, 0);
        assert_eq!(ok, Ok(()));
        let mut mids = Vec::new();
        assert!(store.merchants_for(&key.client_id, &mut mids));
        assert_eq!(mids, ["DEMO00000000001"]);
        let bad = store.authenticate(&key.client_id, b"0123456789abcdef", PEER, 0);
        assert_eq!(bad, Err(Refusal::BadSecret));

        admin.revoke_key(&key.client_id).expect("revoke");
        assert!(!store.merchants_for(&key.client_id, &mut mids), "at once");
        let again = store.authenticate(&key.client_id, key.secret.as_bytes(), PEER, 0);
        assert_eq!(again, Err(Refusal::Revoked));
        assert!(admin.revoke_key(&key.client_id).is_err());
    }

    #[test]
    fn mandates_scope_provider_keys() {
        let d = dir();
        let admin = KeyAdmin::new(&d);
        let store = KeyStore::open(&d);
        let key = admin
            .create_key(Owner::Provider("SP-0000-0001".into()), "books")
            .expect("create");
        let mut mids = Vec::new();
        assert!(store.merchants_for(&key.client_id, &mut mids));
        assert!(mids.is_empty());
        admin
            .grant_mandate("DEMO00000000002", "SP-0000-0001")
            .expect("grant");
        store.merchants_for(&key.client_id, &mut mids);
        assert_eq!(mids, ["DEMO00000000002"]);
        admin
            .revoke_mandate("DEMO00000000002", "SP-0000-0001")
            .expect("revoke");
        store.merchants_for(&key.client_id, &mut mids);
        assert!(mids.is_empty());
        assert!(admin.grant_mandate("short", "SP-0000-0001").is_err());
        assert!(admin.grant_mandate("DEMO00000000002", "sp-1").is_err());
    }

    #[test]
    fn failures_lock_out_for_a_minute() {
        let d = dir();
        let admin = KeyAdmin::new(&d);
        let store = KeyStore::open(&d);
        let key = admin
            .create_key(Owner::Merchant("DEMO00000000001".into()), "x")
            .expect("create");
        for _ in 0..PAIR_FAILURES_MAX {
            let r = store.authenticate(&key.client_id, b"wrong-secret-0000", PEER, 1_000);
            assert_eq!(r, Err(Refusal::BadSecret));
        }
        let right = key.secret.as_bytes();
        assert_eq!(
            store.authenticate(&key.client_id, right, PEER, 2_000),
            Err(Refusal::LockedOut)
        );
        assert_eq!(
            store.authenticate(&key.client_id, right, PEER, 1_000 + LOCKOUT_MS),
            Ok(())
        );
    }

    #[test]
    fn unreadable_file_refuses_everything() {
        let d = dir();
        let admin = KeyAdmin::new(&d);
        let key = admin
            .create_key(Owner::Merchant("DEMO00000000001".into()), "x")
            .expect("create");
        let store = KeyStore::open(&d);
        std::fs::write(d.join(KEYS_FILE), b"{ not json").expect("write");
        let r = store.authenticate(&key.client_id, key.secret.as_bytes(), PEER, 0);
        assert_eq!(r, Err(Refusal::StoreUnavailable));
    }

    #[test]
    fn a_pair_locked_out_from_one_address_leaves_another_working() {
        let (store, key) = store_with_key();
        let (id, right) = (key.client_id.as_str(), key.secret.as_bytes());
        for _ in 0..PAIR_FAILURES_MAX {
            assert_eq!(
                store.authenticate(id, WRONG, PEER, 1_000),
                Err(Refusal::BadSecret)
            );
        }
        let locked = store.authenticate(id, right, PEER, 2_000);
        assert_eq!(locked, Err(Refusal::LockedOut), "the failing pair");
        assert_eq!(store.authenticate(id, right, OTHER, 2_000), Ok(()));
        // Refusals while locked out do not count: the lockout is not renewed.
        assert_eq!(
            store.authenticate(id, right, PEER, 1_000 + LOCKOUT_MS),
            Ok(())
        );
    }

    #[test]
    fn unknown_ids_from_one_address_lock_no_known_id() {
        let (store, key) = store_with_key();
        let (id, right) = (key.client_id.as_str(), key.secret.as_bytes());
        for _ in 0..PAIR_FAILURES_MAX {
            let r = store.authenticate("MK-9999-9999", WRONG, PEER, 1_000);
            assert_eq!(r, Err(Refusal::UnknownClient));
        }
        let unknown = store.authenticate("MK-9999-9999", WRONG, PEER, 1_000);
        assert_eq!(unknown, Err(Refusal::LockedOut), "like a known id's pair");
        assert_eq!(store.authenticate(id, right, OTHER, 2_000), Ok(()));
        assert_eq!(store.authenticate(id, right, PEER, 2_000), Ok(()));
    }

    #[test]
    fn many_failures_across_ids_lock_the_address() {
        let (store, key) = store_with_key();
        let (id, right) = (key.client_id.as_str(), key.secret.as_bytes());
        // Under every pair's limit, but many ids: the address adds them up.
        for i in 0..ADDRESS_FAILURES_MAX - 1 {
            let unknown = format!("MK-9999-{:04}", i / (PAIR_FAILURES_MAX - 1));
            let r = store.authenticate(&unknown, WRONG, PEER, 1_000);
            assert_eq!(r, Err(Refusal::UnknownClient), "failure {i}");
        }
        assert_eq!(store.authenticate(id, right, PEER, 1_000), Ok(()));
        let last = store.authenticate(id, WRONG, PEER, 1_000);
        assert_eq!(last, Err(Refusal::BadSecret));
        let fresh = store.authenticate("MK-1234-5678", WRONG, PEER, 1_001);
        assert_eq!(fresh, Err(Refusal::LockedOut), "every id from there");
        let known = store.authenticate(id, right, PEER, 1_001);
        assert_eq!(known, Err(Refusal::LockedOut));
        assert_eq!(store.authenticate(id, right, OTHER, 1_001), Ok(()));
        let after = store.authenticate(id, right, PEER, 1_000 + LOCKOUT_MS);
        assert_eq!(after, Ok(()));
    }
}
