//! The server's side of the key file: log-ins checked against the keys in
//! force, with lockout, and the merchants a key may act for. The file is
//! re-read when its identity changes, so a revocation counts on the next
//! request; an unreadable file refuses everything.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::file::{read_file, KeysFile, Owner, KEYS_FILE};
use super::lockout::Limiter;

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
    /// The metric's and the log line's reason.
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
    /// Provider id → the mandates in force: MID, scopes (bits of
    /// `codecs::internal::scope`), granted.
    mandates: HashMap<String, Vec<(String, u8, u64)>>,
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
            let scopes = m.scopes.iter().fold(0, |bits, s| bits | s.bit());
            s.mandates
                .entry(m.provider)
                .or_default()
                .push((m.merchant, scopes, m.granted_unix_s));
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

    /// The MIDs key `client_id` may act for now in `scope` (a bit of
    /// `codecs::internal::scope`), into `out`: its own merchant, or the
    /// merchants whose mandates to its provider are in force and include
    /// `scope`. False when the key is no longer in force (revoked,
    /// removed, file unreadable).
    pub(crate) fn merchants_for(&self, client_id: &str, scope: u8, out: &mut Vec<String>) -> bool {
        out.clear();
        let snapshot = self.current();
        let Some(key) = snapshot.keys.get(client_id).filter(|k| !k.revoked) else {
            return false;
        };
        match &key.owner {
            Owner::Merchant(mid) => out.push(mid.clone()),
            Owner::Provider(pid) => out.extend(
                snapshot
                    .mandates
                    .get(pid)
                    .into_iter()
                    .flatten()
                    .filter(|(_, scopes, _)| scopes & scope != 0)
                    .map(|(mid, _, _)| mid.clone()),
            ),
        }
        true
    }

    /// The mandates in force that key `client_id`'s provider holds: (MID,
    /// scopes, granted), oldest first; empty for a merchant's key; `None`
    /// when the key is not in force.
    pub(crate) fn mandates_of(&self, client_id: &str) -> Option<Vec<(String, u8, u64)>> {
        let snapshot = self.current();
        let key = snapshot.keys.get(client_id).filter(|k| !k.revoked)?;
        Some(match &key.owner {
            Owner::Merchant(_) => Vec::new(),
            Owner::Provider(pid) => snapshot.mandates.get(pid).cloned().unwrap_or_default(),
        })
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
