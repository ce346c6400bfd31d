//! The operator store: who may sign in, with which role, password hash,
//! second factor and state, in a JSON file (`operators_file`) that the
//! `vterm operators` commands and the admin pages change while the
//! terminal runs.
//!
//! - Every change takes the lock file `<file>.lock` (flock, so a crashed
//!   command leaves no stale lock), reads the file afresh, applies the
//!   change, writes a temp file (0600), fsyncs it, renames it over the
//!   file and fsyncs the directory: a reader sees the old file or the new,
//!   never a mix.
//! - The server re-reads the file when its identity (inode, size, mtime)
//!   changes, checked on each request, so a block counts on the next one.
//!   A file that no longer reads keeps the last good one in force (it is
//!   logged): a block that was written was read.
//! - Every change appends a line to `<file stem>.audit.log` beside it: when,
//!   who (`cli:<user>` or `web:<operator>`), what.
//! - Sessions follow the operator's `epoch`, raised by a block, a role
//!   change and a password reset: sessions of an older epoch are signed out.
//!
//! Without a file (a configuration given as text by an embedding program)
//! the store lives in memory and changes are lost at exit.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::config::{valid_operator_name, Operator, OPERATORS_MAX, OPERATOR_NAME_BYTES_MAX};
use crate::role::Role;
use crate::totp;

/// Format version of the file.
const FILE_VERSION: u32 = 1;
/// Largest file read; checked before reading. 1 000 operators take about
/// 300 KiB.
const FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// How long a change waits for another's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Longest `detail` in an audit line.
const AUDIT_DETAIL_BYTES_MAX: usize = 256;

/// Why a change or a read failed: the message is shown as is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
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
    /// Another change held the lock for [`LOCK_WAIT`].
    #[error("{0} is held by another change; try again")]
    Locked(PathBuf),
    /// The change is refused; the text says why.
    #[error("{0}")]
    Refused(String),
}

/// One operator as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    /// Sign-in name.
    pub(crate) name: String,
    /// What the operator may do.
    pub(crate) role: Role,
    /// Argon2id PHC string.
    pub(crate) password_hash: String,
    /// A blocked operator cannot sign in and is signed out.
    #[serde(default)]
    pub(crate) blocked: bool,
    /// The TOTP secret (base32) once enrolment was confirmed.
    #[serde(default)]
    pub(crate) totp_secret: Option<String>,
    /// Raised when sessions must end (block, role change, reset).
    #[serde(default)]
    pub(crate) epoch: u64,
    /// Last change, Unix seconds.
    #[serde(default)]
    pub(crate) changed_unix_s: u64,
}

impl Record {
    /// Whether sign-in needs a TOTP code.
    pub(crate) fn has_totp(&self) -> bool {
        self.totp_secret.is_some()
    }
}

/// The file's content.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreFile {
    /// [`FILE_VERSION`].
    version: u32,
    /// At most [`OPERATORS_MAX`], names unique.
    operators: Vec<Record>,
}

/// A change to the store, as the CLI and the admin pages ask for it.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// A new operator with a password hash.
    Add(String, Role, String),
    /// Blocked (true) or unblocked.
    Block(String, bool),
    /// A new password hash; the second factor cleared when asked.
    Reset(String, String, bool),
    /// A new role.
    SetRole(String, Role),
    /// One's own new password hash (other sessions end).
    OwnPassword(String, String),
    /// A confirmed TOTP secret.
    EnableTotp(String, String),
}

impl Change {
    fn name(&self) -> &str {
        match self {
            Change::Add(n, ..)
            | Change::Block(n, _)
            | Change::Reset(n, ..)
            | Change::SetRole(n, _)
            | Change::OwnPassword(n, _)
            | Change::EnableTotp(n, _) => n,
        }
    }
}

/// An audit line.
#[derive(Debug, Serialize)]
struct AuditLine<'a> {
    /// When, Unix seconds.
    at_unix_s: u64,
    /// `cli:<user>`, `web:<operator>` or `vterm.toml`.
    actor: &'a str,
    /// `add`, `block`, `unblock`, `reset`, `role`, `password`, `totp`, `seed`.
    action: &'static str,
    /// The operator changed.
    operator: &'a str,
    /// What changed, never a secret or hash.
    detail: String,
}

impl StoreFile {
    fn empty() -> StoreFile {
        StoreFile {
            version: FILE_VERSION,
            operators: Vec::new(),
        }
    }

    fn find_mut(&mut self, name: &str) -> Result<&mut Record, StoreError> {
        self.operators
            .iter_mut()
            .find(|r| r.name == name)
            .ok_or_else(|| StoreError::Refused(format!("no operator named `{name}`")))
    }

    /// Admins that can still sign in, other than `name`.
    fn other_admins(&self, name: &str) -> usize {
        self.operators
            .iter()
            .filter(|r| r.name != name && r.role == Role::Admin && !r.blocked)
            .count()
    }

    /// Applies a change; returns the audit action and detail.
    fn apply(&mut self, change: Change, now_s: u64) -> Result<(&'static str, String), StoreError> {
        let refused = |text: String| Err(StoreError::Refused(text));
        if let Change::Add(name, role, hash) = change {
            if !valid_operator_name(&name) {
                return refused(format!(
                    "operator names have 1..={OPERATOR_NAME_BYTES_MAX} letters, digits or `._@-`"
                ));
            }
            if self.operators.iter().any(|r| r.name == name) {
                return refused(format!("an operator named `{name}` exists"));
            }
            if self.operators.len() >= OPERATORS_MAX {
                return refused(format!("at most {OPERATORS_MAX} operators (OPERATORS_MAX)"));
            }
            self.operators.push(Record {
                name,
                role,
                password_hash: hash,
                blocked: false,
                totp_secret: None,
                epoch: 0,
                changed_unix_s: now_s,
            });
            return Ok(("add", format!("role {}", role.name())));
        }
        let name = change.name().to_string();
        let last_admin = self.other_admins(&name) == 0;
        let record = self.find_mut(&name)?;
        let is_admin = record.role == Role::Admin && !record.blocked;
        let done = match change {
            Change::Add(..) => unreachable!("handled above"),
            Change::Block(_, blocked) => {
                if blocked && is_admin && last_admin {
                    return refused("the last admin who can sign in cannot be blocked".into());
                }
                record.blocked = blocked;
                record.epoch += 1;
                (if blocked { "block" } else { "unblock" }, String::new())
            }
            Change::Reset(_, hash, clear_totp) => {
                record.password_hash = hash;
                if clear_totp {
                    record.totp_secret = None;
                }
                record.epoch += 1;
                let detail = if clear_totp {
                    "second factor cleared"
                } else {
                    ""
                };
                ("reset", detail.to_string())
            }
            Change::SetRole(_, role) => {
                if role != Role::Admin && is_admin && last_admin {
                    return refused("the last admin who can sign in keeps the admin role".into());
                }
                let detail = format!("{} -> {}", record.role.name(), role.name());
                record.role = role;
                record.epoch += 1;
                ("role", detail)
            }
            Change::OwnPassword(_, hash) => {
                record.password_hash = hash;
                record.epoch += 1;
                ("password", "own password changed".to_string())
            }
            Change::EnableTotp(_, secret) => {
                if totp::decode_secret(&secret).is_none() {
                    return refused("the TOTP secret is not base32".into());
                }
                record.totp_secret = Some(secret);
                ("totp", "second factor enrolled".to_string())
            }
        };
        record.changed_unix_s = now_s;
        Ok(done)
    }
}

/// The file's identity: a rename gives a new inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    /// Inode.
    ino: u64,
    /// Size.
    len: u64,
    /// Modification time (s, ns).
    mtime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
    })
}

/// The operators at one moment, by name.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// name → record.
    by_name: HashMap<String, Record>,
}

impl Snapshot {
    fn from_file(file: &StoreFile) -> Snapshot {
        Snapshot {
            by_name: file
                .operators
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect(),
        }
    }

    /// The operator named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Record> {
        self.by_name.get(name)
    }

    /// Every operator, by name.
    pub(crate) fn sorted(&self) -> Vec<&Record> {
        let mut all: Vec<&Record> = self.by_name.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// What the server holds of the file.
#[derive(Debug)]
struct Loaded {
    /// The identity the snapshot was read at.
    stamp: Option<Stamp>,
    /// The operators.
    snapshot: Arc<Snapshot>,
    /// The content, when the store has no file.
    memory: Option<StoreFile>,
}

/// The store, shared by the server's requests.
#[derive(Debug)]
pub(crate) struct Store {
    /// `operators_file`; `None`: in memory.
    path: Option<PathBuf>,
    /// The last read.
    loaded: Mutex<Loaded>,
    /// The last TOTP step accepted per operator: a code works once. At
    /// most [`OPERATORS_MAX`] entries (one per operator name known).
    totp_used: Mutex<HashMap<String, u64>>,
}

/// The lock file beside the store: held while this value lives.
struct LockGuard(#[allow(dead_code)] Flock<File>);

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// `<stem>.audit.log` beside the store.
pub(crate) fn audit_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}.audit.log"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn lock(path: &Path) -> Result<LockGuard, StoreError> {
    let lock = lock_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock)
        .map_err(io(&lock))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => return Ok(LockGuard(held)),
            Err((back, _)) if Instant::now() < deadline => {
                file = back;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return Err(StoreError::Locked(lock)),
        }
    }
}

/// Reads and checks the file; a missing file is an empty store.
fn read_file(path: &Path) -> Result<StoreFile, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoreFile::empty()),
        Err(e) => return Err(io(path)(e)),
    };
    let len = file.metadata().map_err(io(path))?.len();
    if len > FILE_BYTES_MAX {
        return Err(corrupt(format!("{len} bytes, over {FILE_BYTES_MAX}")));
    }
    let mut text = String::new();
    file.take(FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(io(path))?;
    let store: StoreFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if store.version != FILE_VERSION {
        return Err(corrupt(format!(
            "version {}, expected {FILE_VERSION}",
            store.version
        )));
    }
    if store.operators.len() > OPERATORS_MAX {
        return Err(corrupt(format!("over {OPERATORS_MAX} operators")));
    }
    for (i, r) in store.operators.iter().enumerate() {
        if !valid_operator_name(&r.name) || store.operators[..i].iter().any(|o| o.name == r.name) {
            return Err(corrupt(format!("operator {i}: bad or repeated name")));
        }
    }
    Ok(store)
}

/// Temp file (0600), fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Appends audit lines (0600, append only) and syncs them.
fn append_audit(path: &Path, lines: &[AuditLine<'_>]) -> Result<(), StoreError> {
    let audit = audit_path(path);
    let mut text = String::new();
    for line in lines {
        let mut line_text = serde_json::to_string(line).unwrap_or_default();
        line_text.push('\n');
        text.push_str(&line_text);
    }
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&audit)
        .map_err(io(&audit))?;
    f.write_all(text.as_bytes()).map_err(io(&audit))?;
    f.sync_data().map_err(io(&audit))
}

fn audit_line<'a>(
    now_s: u64,
    actor: &'a str,
    action: &'static str,
    operator: &'a str,
    mut detail: String,
) -> AuditLine<'a> {
    if detail.len() > AUDIT_DETAIL_BYTES_MAX {
        let mut end = AUDIT_DETAIL_BYTES_MAX;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
    }
    tracing::info!(actor, action, operator, detail, "operator store changed");
    AuditLine {
        at_unix_s: now_s,
        actor,
        action,
        operator,
        detail,
    }
}

impl Store {
    /// Opens the store, adding each of `seeds` (the `[[operators]]` of
    /// `vterm.toml`) whose name it does not hold.
    ///
    /// # Errors
    /// When the file cannot be read, locked or written.
    pub(crate) fn open(
        path: Option<PathBuf>,
        seeds: &[Operator],
        now_s: u64,
    ) -> Result<Store, StoreError> {
        let mut file = match &path {
            Some(p) => {
                let _lock = lock(p)?;
                let mut file = read_file(p)?;
                let added = seed(&mut file, seeds, now_s);
                if !added.is_empty() || stamp(p).is_none() {
                    write_file(p, &file)?;
                    let lines: Vec<AuditLine<'_>> = added
                        .iter()
                        .map(|(n, r)| {
                            audit_line(now_s, "vterm.toml", "seed", n, format!("role {}", r.name()))
                        })
                        .collect();
                    append_audit(p, &lines)?;
                }
                Some(file)
            }
            None => {
                let mut file = StoreFile::empty();
                seed(&mut file, seeds, now_s);
                Some(file)
            }
        };
        let snapshot = Arc::new(Snapshot::from_file(
            file.as_ref().unwrap_or(&StoreFile::empty()),
        ));
        let memory = if path.is_none() { file.take() } else { None };
        Ok(Store {
            loaded: Mutex::new(Loaded {
                stamp: path.as_deref().and_then(stamp),
                snapshot,
                memory,
            }),
            path,
            totp_used: Mutex::default(),
        })
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The operators now: the file is read again when it changed.
    pub(crate) fn current(&self) -> Arc<Snapshot> {
        let Some(path) = &self.path else {
            return self.loaded().snapshot.clone();
        };
        let now = stamp(path);
        let mut loaded = self.loaded();
        if now != loaded.stamp {
            match read_file(path) {
                Ok(file) => {
                    loaded.snapshot = Arc::new(Snapshot::from_file(&file));
                    tracing::info!(path = %path.display(), "operator store read again");
                }
                Err(e) => {
                    tracing::error!(error = %e, "operator store unreadable: the last good one stays")
                }
            }
            loaded.stamp = now;
        }
        loaded.snapshot.clone()
    }

    /// Applies a change under the lock and audits it as `actor`. Blocking
    /// (file I/O and the lock): call it off the async threads.
    ///
    /// # Errors
    /// [`StoreError::Refused`] with the reason, or the file's error.
    pub(crate) fn change(&self, actor: &str, change: Change, now_s: u64) -> Result<(), StoreError> {
        let name = change.name().to_string();
        let Some(path) = &self.path else {
            let mut loaded = self.loaded();
            let file = loaded.memory.get_or_insert_with(StoreFile::empty);
            let (action, detail) = file.apply(change, now_s)?;
            audit_line(now_s, actor, action, &name, detail);
            loaded.snapshot = Arc::new(Snapshot::from_file(file));
            return Ok(());
        };
        let _lock = lock(path)?;
        let mut file = read_file(path)?;
        let (action, detail) = file.apply(change, now_s)?;
        write_file(path, &file)?;
        append_audit(path, &[audit_line(now_s, actor, action, &name, detail)])?;
        let mut loaded = self.loaded();
        loaded.snapshot = Arc::new(Snapshot::from_file(&file));
        loaded.stamp = stamp(path);
        Ok(())
    }

    /// Whether `code` is a fresh TOTP code of `secret_b32` for `name` at
    /// `now_s`; a code accepted is not accepted again.
    pub(crate) fn use_totp(&self, name: &str, secret_b32: &str, code: &str, now_s: u64) -> bool {
        let Some(secret) = totp::decode_secret(secret_b32) else {
            return false;
        };
        let mut used = self.totp_used.lock().unwrap_or_else(|e| e.into_inner());
        let last = used.get(name).copied();
        let Some(step) = totp::verify(&secret, code, now_s, last) else {
            return false;
        };
        if used.len() >= OPERATORS_MAX && !used.contains_key(name) {
            // Names of operators since removed: the steps they hold are
            // long past, so forgetting them reopens nothing.
            used.retain(|_, s| s.saturating_add(2 * totp::SKEW_STEPS) >= step);
        }
        used.insert(name.to_string(), step);
        true
    }
}

fn write_file(path: &Path, file: &StoreFile) -> Result<(), StoreError> {
    assert!(file.operators.len() <= OPERATORS_MAX);
    let text = serde_json::to_vec_pretty(file).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &text)
}

/// Adds the seeds the file lacks; returns their names and roles. A seed
/// that differs from what the store holds is not applied: the store rules.
fn seed(file: &mut StoreFile, seeds: &[Operator], now_s: u64) -> Vec<(String, Role)> {
    let mut added = Vec::new();
    for s in seeds {
        match file.operators.iter().find(|r| r.name == s.name) {
            Some(r) if r.password_hash != s.password_hash || r.role != s.role => {
                tracing::warn!(
                    operator = %s.name,
                    "vterm.toml's entry differs from the operator store, which is used; change the store with `vterm operators`"
                );
            }
            Some(_) => {}
            None if file.operators.len() < OPERATORS_MAX => {
                file.operators.push(Record {
                    name: s.name.clone(),
                    role: s.role,
                    password_hash: s.password_hash.clone(),
                    blocked: false,
                    totp_secret: None,
                    epoch: 0,
                    changed_unix_s: now_s,
                });
                added.push((s.name.clone(), s.role));
            }
            None => tracing::warn!(operator = %s.name, "operator store full: not added"),
        }
    }
    added
}

/// Every operator in the file at `path`, for `vterm operators list`.
///
/// # Errors
/// When the file cannot be read.
pub(crate) fn list(path: &Path) -> Result<Vec<Record>, StoreError> {
    Ok(read_file(path)?.operators)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("vterm-store-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    fn seed_alice() -> Vec<Operator> {
        vec![Operator {
            name: "alice".into(),
            password_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA".into(),
            role: Role::Admin,
        }]
    }

    #[test]
    fn changes_are_written_atomically_audited_and_seen_by_another_store() {
        let path = dir().join("operators.json");
        let a = Store::open(Some(path.clone()), &seed_alice(), 10).expect("open");
        let b = Store::open(Some(path.clone()), &seed_alice(), 11).expect("open again");
        let mode = std::fs::metadata(&path).expect("file").mode() & 0o777;
        assert_eq!(mode, 0o600);
        a.change(
            "cli:root",
            Change::Add("bob".into(), Role::Viewer, "h".into()),
            12,
        )
        .expect("add");
        let snapshot = b.current();
        assert_eq!(snapshot.get("bob").expect("b sees bob").role, Role::Viewer);
        b.change("web:alice", Change::Block("bob".into(), true), 13)
            .expect("block");
        let bob = a.current().get("bob").cloned().expect("bob");
        assert!(bob.blocked && bob.epoch == 1);
        let audit = std::fs::read_to_string(audit_path(&path)).expect("audit");
        let lines: Vec<&str> = audit.lines().collect();
        assert_eq!(lines.len(), 3, "{audit}");
        assert!(lines[0].contains(r#""action":"seed""#) && lines[0].contains("alice"));
        assert!(
            lines[1].contains(r#""actor":"cli:root""#) && lines[1].contains(r#""action":"add""#)
        );
        assert!(lines[2].contains(r#""action":"block""#) && lines[2].contains(r#""at_unix_s":13"#));
        assert!(!path.with_file_name("operators.json.tmp").exists());
    }

    #[test]
    fn refusals_say_why() {
        let store = Store::open(None, &seed_alice(), 0).expect("memory");
        let refused = |change: Change| match store.change("t", change, 1) {
            Err(StoreError::Refused(text)) => text,
            other => panic!("{other:?}"),
        };
        assert!(refused(Change::Add("alice".into(), Role::Viewer, "h".into())).contains("exists"));
        assert!(refused(Change::Add("a b".into(), Role::Viewer, "h".into())).contains("letters"));
        assert!(refused(Change::Block("carol".into(), true)).contains("no operator"));
        assert!(refused(Change::Block("alice".into(), true)).contains("last admin"));
        assert!(refused(Change::SetRole("alice".into(), Role::Viewer)).contains("last admin"));
        store
            .change("t", Change::Add("bob".into(), Role::Admin, "h".into()), 1)
            .expect("second admin");
        store
            .change("t", Change::SetRole("alice".into(), Role::Viewer), 2)
            .expect("now alice may stop being admin");
        for i in 0..OPERATORS_MAX - 2 {
            store
                .change(
                    "t",
                    Change::Add(format!("op{i}"), Role::Viewer, "h".into()),
                    3,
                )
                .expect("room");
        }
        assert!(
            refused(Change::Add("one-more".into(), Role::Viewer, "h".into()))
                .contains("OPERATORS_MAX")
        );
    }

    #[test]
    fn a_totp_code_works_once() {
        let store = Store::open(None, &seed_alice(), 0).expect("memory");
        let secret = totp::new_secret_b32();
        let bytes = totp::decode_secret(&secret).expect("b32");
        let code = totp::code_at(&bytes, 1_000_000);
        assert!(!store.use_totp("alice", &secret, "000000x", 1_000_000));
        assert!(store.use_totp("alice", &secret, &code, 1_000_000));
        assert!(
            !store.use_totp("alice", &secret, &code, 1_000_010),
            "replayed"
        );
        let next = totp::code_at(&bytes, 1_000_030);
        assert!(store.use_totp("alice", &secret, &next, 1_000_031));
    }

    #[test]
    fn a_corrupt_file_is_refused_at_open_and_the_last_good_stays_later() {
        let path = dir().join("operators.json");
        std::fs::write(&path, "{not json").expect("write");
        assert!(matches!(
            Store::open(Some(path.clone()), &[], 0),
            Err(StoreError::Corrupt { .. })
        ));
        std::fs::remove_file(&path).expect("rm");
        let store = Store::open(Some(path.clone()), &seed_alice(), 0).expect("open");
        std::fs::write(&path, "{\"version\": 9, \"operators\": []}").expect("write");
        assert!(store.current().get("alice").is_some(), "last good");
    }
}
