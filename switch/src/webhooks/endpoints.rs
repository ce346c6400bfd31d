//! The merchants' webhook endpoints, `<data_dir>/webhooks.json`: its JSON
//! format and limits, the commands that change it (under a lock file,
//! written atomically, mode 0600: it holds the signing secrets, which the
//! switch needs in clear to sign), and the running switch's view of it,
//! re-read when the file's identity changes.
//!
//! In cluster mode the same JSON is one row of PostgreSQL
//! (`webhook_endpoints`, shared by every node), sealed with AES-256-GCM
//! under a key derived from `security.token_key_hex` (the same on every
//! node, [`cluster_key`]): the database holds no secret in clear. A change
//! reads the row `FOR UPDATE`; every node reads its version when it looks
//! for changes.

use std::collections::HashMap;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::keys::{random, write_atomic, LockFile};

/// The file, in the data directory.
pub(crate) const ENDPOINTS_FILE: &str = "webhooks.json";
/// Format version of the file.
const FILE_VERSION: u32 = 1;
/// Largest file read; checked before reading.
const FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Most endpoints (one per merchant).
pub(crate) const ENDPOINTS_MAX: usize = 10_000;
/// Longest URL accepted, bytes.
pub(crate) const URL_BYTES_MAX: usize = 2_048;
/// Longest MID accepted (F42 is 15).
const MID_BYTES_MAX: usize = 15;
/// Prefix of every signing secret.
pub(crate) const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret: 256 bits, 43 URL-safe characters.
const SECRET_RANDOM_BYTES: usize = 32;

/// One merchant's endpoint as stored. Its `Debug` masks the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Endpoint {
    /// The merchant's MID.
    pub(crate) merchant: String,
    /// Where events are posted (http or https).
    pub(crate) url: String,
    /// The signing secret, `whsec_…`; never logged, shown once at `set`.
    pub(crate) secret: String,
    /// When set, Unix seconds.
    pub(crate) created_unix_s: u64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("merchant", &self.merchant)
            .field("url", &self.url)
            .field("secret", &self.secret_masked())
            .field("created_unix_s", &self.created_unix_s)
            .finish()
    }
}

impl Endpoint {
    /// The secret as `list` shows it: the prefix and its last 4 characters.
    pub(crate) fn secret_masked(&self) -> String {
        let tail: String = self
            .secret
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{SECRET_PREFIX}…{tail}")
    }
}

/// The file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct EndpointsFile {
    /// [`FILE_VERSION`].
    version: u32,
    /// One per merchant.
    endpoints: Vec<Endpoint>,
}

/// Checks a webhook URL: http or https, a host, no credentials, bounded.
///
/// # Errors
/// What is wrong with it.
pub(crate) fn check_url(url: &str) -> anyhow::Result<reqwest::Url> {
    if url.len() > URL_BYTES_MAX {
        bail!("--url: longer than {URL_BYTES_MAX} bytes");
    }
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--url `{url}`"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        bail!("--url `{url}`: expected an http or https URL");
    }
    if parsed.host().is_none() {
        bail!("--url `{url}`: expected a host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        bail!("--url: credentials in the URL are not accepted (they would be logged and shown)");
    }
    Ok(parsed)
}

fn check_mid(mid: &str) -> anyhow::Result<()> {
    if mid.is_empty()
        || mid.len() > MID_BYTES_MAX
        || !mid.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        bail!("--merchant `{mid}`: expected a MID of 1 to {MID_BYTES_MAX} printable characters");
    }
    Ok(())
}

/// A new secret: `whsec_` and 32 random bytes in URL-safe base64.
fn new_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; SECRET_RANDOM_BYTES];
    random(&mut bytes)?;
    Ok(format!("{SECRET_PREFIX}{}", base64_url(&bytes)))
}

/// URL-safe base64 without padding (RFC 4648 §5).
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            let six = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[six as usize]));
        }
    }
    out
}

/// What [`cluster_key`] derives the sealing key from, with the token key.
const SEAL_CONTEXT: &[u8] = b"switch webhook endpoints v1";
/// Bytes of a sealed row's nonce, before the ciphertext and its tag.
const NONCE_BYTES: usize = 12;

/// The key that seals the endpoints in PostgreSQL (cluster mode):
/// HMAC-SHA-256 of [`SEAL_CONTEXT`] under `security.token_key_hex`.
///
/// # Errors
/// A key that is not hex.
pub(crate) fn cluster_key(token_key_hex: &str) -> anyhow::Result<[u8; 32]> {
    use hmac::Mac as _;
    let key = hex::decode(token_key_hex).context("security.token_key_hex")?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key)
        .map_err(|_| anyhow::anyhow!("security.token_key_hex: unusable as a key"))?;
    mac.update(SEAL_CONTEXT);
    Ok(mac.finalize().into_bytes().into())
}

fn aead(key: &[u8; 32]) -> anyhow::Result<aws_lc_rs::aead::LessSafeKey> {
    let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key)
        .map_err(|_| anyhow::anyhow!("webhook endpoints: the sealing key"))?;
    Ok(aws_lc_rs::aead::LessSafeKey::new(unbound))
}

/// `file` sealed under `key`: a random nonce, then the JSON encrypted and
/// its tag.
fn seal(file: &EndpointsFile, key: &[u8; 32]) -> anyhow::Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_BYTES];
    random(&mut nonce)?;
    let mut data = serde_json::to_vec(file)?;
    aead(key)?
        .seal_in_place_append_tag(
            aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
            aws_lc_rs::aead::Aad::from(SEAL_CONTEXT),
            &mut data,
        )
        .map_err(|_| anyhow::anyhow!("webhook endpoints: sealing failed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Ok(out)
}

/// Opens [`seal`]'s bytes (none: no endpoints yet), checked as the file is.
fn unseal(bytes: &[u8], key: &[u8; 32]) -> anyhow::Result<EndpointsFile> {
    if bytes.is_empty() {
        return Ok(EndpointsFile {
            version: FILE_VERSION,
            endpoints: Vec::new(),
        });
    }
    if bytes.len() > FILE_BYTES_MAX as usize + 64 || bytes.len() < NONCE_BYTES {
        bail!("webhook endpoints in PostgreSQL: {} bytes", bytes.len());
    }
    let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
    let mut data = sealed.to_vec();
    let nonce = aws_lc_rs::aead::Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| anyhow::anyhow!("webhook endpoints: nonce"))?;
    let plain = aead(key)?
        .open_in_place(nonce, aws_lc_rs::aead::Aad::from(SEAL_CONTEXT), &mut data)
        .map_err(|_| {
            anyhow::anyhow!(
                "webhook endpoints in PostgreSQL do not open: another security.token_key_hex sealed them"
            )
        })?;
    let text = std::str::from_utf8(plain).context("webhook endpoints: UTF-8")?;
    parse(text, "PostgreSQL webhook_endpoints")
}

/// The cluster's row of endpoints in PostgreSQL (cluster mode).
#[derive(Clone)]
pub(crate) struct ClusterEndpoints {
    /// archive.url.
    pub(crate) url: String,
    /// [`cluster_key`].
    pub(crate) key: [u8; 32],
}

impl std::fmt::Debug for ClusterEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterEndpoints")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ClusterEndpoints {
    /// Its version and endpoints, on `client`.
    fn read(&self, client: &mut postgres::Client) -> anyhow::Result<(i64, EndpointsFile)> {
        let row = client.query_one(
            "SELECT version, sealed FROM webhook_endpoints WHERE id = 1",
            &[],
        )?;
        let sealed: Vec<u8> = row.get(1);
        Ok((row.get(0), unseal(&sealed, &self.key)?))
    }

    /// Its version now.
    fn version(&self, client: &mut postgres::Client) -> anyhow::Result<i64> {
        Ok(client
            .query_one("SELECT version FROM webhook_endpoints WHERE id = 1", &[])?
            .get(0))
    }

    /// One change under the row's lock.
    fn change<R>(
        &self,
        f: impl FnOnce(&mut EndpointsFile) -> anyhow::Result<R>,
    ) -> anyhow::Result<R> {
        let mut client = crate::cluster_commit::connect(&self.url)?;
        let mut tx = client.transaction()?;
        let row = tx.query_one(
            "SELECT sealed FROM webhook_endpoints WHERE id = 1 FOR UPDATE",
            &[],
        )?;
        let sealed: Vec<u8> = row.get(0);
        let mut file = unseal(&sealed, &self.key)?;
        let r = f(&mut file)?;
        tx.execute(
            "UPDATE webhook_endpoints SET version = version + 1, sealed = $1 WHERE id = 1",
            &[&seal(&file, &self.key)?],
        )?;
        tx.commit().context("writing the webhook endpoints")?;
        Ok(r)
    }
}

fn read_file(path: &Path) -> anyhow::Result<EndpointsFile> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(EndpointsFile {
                version: FILE_VERSION,
                endpoints: Vec::new(),
            })
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let len = f.metadata()?.len();
    if len > FILE_BYTES_MAX {
        bail!("{}: {len} bytes, over {FILE_BYTES_MAX}", path.display());
    }
    let mut text = String::new();
    f.take(FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// The endpoints of JSON `text` (named `origin` in errors): version and
/// count checked.
fn parse(text: &str, origin: &str) -> anyhow::Result<EndpointsFile> {
    let file: EndpointsFile = serde_json::from_str(text).with_context(|| origin.to_owned())?;
    if file.version != FILE_VERSION {
        bail!(
            "{origin}: version {}, expected {FILE_VERSION}",
            file.version
        );
    }
    if file.endpoints.len() > ENDPOINTS_MAX {
        bail!("{origin}: more than {ENDPOINTS_MAX} endpoints");
    }
    Ok(file)
}

/// The commands' access to the file: read, change, write atomically,
/// under the lock file; or, in cluster mode, to the cluster's row.
#[derive(Debug)]
pub(crate) struct EndpointAdmin {
    /// `<data_dir>/webhooks.json`.
    path: PathBuf,
    /// The cluster's row instead (cluster mode).
    cluster: Option<ClusterEndpoints>,
}

impl EndpointAdmin {
    /// The file of the switch whose data directory is `data_dir`.
    pub(crate) fn new(data_dir: &Path) -> EndpointAdmin {
        EndpointAdmin {
            path: data_dir.join(ENDPOINTS_FILE),
            cluster: None,
        }
    }

    /// The cluster's endpoints in PostgreSQL (cluster mode).
    pub(crate) fn cluster(at: ClusterEndpoints) -> EndpointAdmin {
        EndpointAdmin {
            path: PathBuf::new(),
            cluster: Some(at),
        }
    }

    fn change<R: Send>(
        &self,
        f: impl FnOnce(&mut EndpointsFile) -> anyhow::Result<R> + Send,
    ) -> anyhow::Result<R> {
        if let Some(c) = &self.cluster {
            return crate::blocking::off_runtime(|| c.change(f));
        }
        let _lock = LockFile::acquire(&self.path)?;
        let mut file = read_file(&self.path)?;
        let r = f(&mut file)?;
        let bytes = serde_json::to_vec_pretty(&file)?;
        write_atomic(&self.path, &bytes)
            .with_context(|| format!("writing {}", self.path.display()))?;
        Ok(r)
    }

    /// Registers or replaces `merchant`'s endpoint; returns its new secret.
    ///
    /// # Errors
    /// A bad MID or URL, the limit, or the file.
    pub(crate) fn set(&self, merchant: &str, url: &str, now_s: u64) -> anyhow::Result<String> {
        check_mid(merchant)?;
        check_url(url)?;
        let secret = new_secret()?;
        let endpoint = Endpoint {
            merchant: merchant.to_owned(),
            url: url.to_owned(),
            secret: secret.clone(),
            created_unix_s: now_s,
        };
        self.change(|file| {
            if let Some(e) = file.endpoints.iter_mut().find(|e| e.merchant == merchant) {
                *e = endpoint;
            } else {
                if file.endpoints.len() >= ENDPOINTS_MAX {
                    bail!("{ENDPOINTS_MAX} endpoints: limit reached");
                }
                file.endpoints.push(endpoint);
            }
            Ok(())
        })?;
        Ok(secret)
    }

    /// Removes `merchant`'s endpoint.
    ///
    /// # Errors
    /// None registered, or the file.
    pub(crate) fn remove(&self, merchant: &str) -> anyhow::Result<()> {
        self.change(|file| {
            let before = file.endpoints.len();
            file.endpoints.retain(|e| e.merchant != merchant);
            if file.endpoints.len() == before {
                bail!("no webhook endpoint for merchant `{merchant}`");
            }
            Ok(())
        })
    }

    /// Every endpoint.
    ///
    /// # Errors
    /// The file.
    pub(crate) fn list(&self) -> anyhow::Result<Vec<Endpoint>> {
        if let Some(c) = &self.cluster {
            return crate::blocking::off_runtime(|| {
                let mut client = crate::cluster_commit::connect(&c.url)?;
                Ok(c.read(&mut client)?.1.endpoints)
            });
        }
        Ok(read_file(&self.path)?.endpoints)
    }
}

/// What tells a rewritten file from the one read before: the atomic write
/// renames a new file over it (a new inode), and size and time change too.
type FileIdentity = (u64, u64, i64, i64);

/// The endpoints by MID, as the running switch sees them.
pub(crate) type EndpointMap = HashMap<String, Endpoint>;

/// The running switch's view of the file, shared by the dispatcher and the
/// deliveries: re-read when the file's identity (inode, size, mtime)
/// changes; a file that does not read keeps the last good view (logged).
pub(crate) struct EndpointView {
    /// The file.
    path: PathBuf,
    /// The cluster's row instead (cluster mode), and a session on it
    /// (`None` after an error, opened again at the next look).
    cluster: Option<(
        ClusterEndpoints,
        std::sync::Mutex<Option<Box<postgres::Client>>>,
    )>,
    /// The current endpoints.
    current: RwLock<Arc<EndpointMap>>,
    /// Identity of the file the current view was read from (inode, size,
    /// modification time; `Some(None)`: no file), or the row's version,
    /// `None` before the first read.
    identity: std::sync::Mutex<Option<Identity>>,
}

/// What the view was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Identity {
    /// The file's (none: no file).
    File(Option<FileIdentity>),
    /// The row's version.
    Row(i64),
}

impl Drop for EndpointView {
    fn drop(&mut self) {
        if let Some((_, session)) = &self.cluster {
            let taken = session
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(c) = taken {
                crate::blocking::drop_off_runtime(c);
            }
        }
    }
}

impl EndpointView {
    /// Reads `<data_dir>/webhooks.json` (none: no endpoints).
    pub(crate) fn open(data_dir: &Path) -> EndpointView {
        let view = EndpointView {
            path: data_dir.join(ENDPOINTS_FILE),
            cluster: None,
            current: RwLock::new(Arc::new(HashMap::new())),
            identity: std::sync::Mutex::new(None),
        };
        view.refresh();
        view
    }

    /// Reads the cluster's row (cluster mode).
    pub(crate) fn cluster(at: ClusterEndpoints) -> EndpointView {
        let view = EndpointView {
            path: PathBuf::new(),
            cluster: Some((at, std::sync::Mutex::new(None))),
            current: RwLock::new(Arc::new(HashMap::new())),
            identity: std::sync::Mutex::new(None),
        };
        view.refresh();
        view
    }

    /// The cluster's endpoints if their version is not `seen`: `Ok(None)`
    /// when unchanged.
    fn read_row(
        at: &ClusterEndpoints,
        session: &std::sync::Mutex<Option<Box<postgres::Client>>>,
        seen: Option<Identity>,
    ) -> anyhow::Result<Option<(Identity, EndpointsFile)>> {
        let mut session = session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot: &mut Option<Box<postgres::Client>> = &mut session;
        let read = crate::blocking::off_runtime(|| {
            let session = slot;
            let client = match session.as_mut() {
                Some(c) => c,
                None => session.insert(Box::new(crate::cluster_commit::connect(&at.url)?)),
            };
            if seen == Some(Identity::Row(at.version(client)?)) {
                return Ok(None);
            }
            let (version, file) = at.read(client)?;
            Ok(Some((Identity::Row(version), file)))
        });
        if read.is_err() {
            *session = None;
        }
        read
    }

    /// Whether the endpoints have been read at least once (none read yet:
    /// an error since the start, so "no endpoint" is not known).
    pub(crate) fn known(&self) -> bool {
        self.identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// The endpoints now.
    pub(crate) fn get(&self) -> Arc<EndpointMap> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the file if it changed; returns whether the view changed.
    pub(crate) fn refresh(&self) -> bool {
        let mut seen = self
            .identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let read = if let Some((at, session)) = &self.cluster {
            match Self::read_row(at, session, *seen) {
                Ok(None) => return false,
                Ok(Some(read)) => Ok(read),
                Err(e) => Err(e),
            }
        } else {
            let identity = Identity::File(
                std::fs::metadata(&self.path)
                    .ok()
                    .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec())),
            );
            if *seen == Some(identity) {
                return false;
            }
            read_file(&self.path).map(|file| (identity, file))
        };
        let (identity, map) = match read {
            Ok((identity, file)) => (
                identity,
                file.endpoints
                    .into_iter()
                    .map(|e| (e.merchant.clone(), e))
                    .collect(),
            ),
            Err(e) => {
                crate::ratelog::warn_limited!("webhooks_file", error = %e, "webhooks: the endpoint file does not read; keeping the endpoints read before");
                return false;
            }
        };
        *seen = Some(identity);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(map);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_endpoints_open_under_their_key_only() {
        let key = cluster_key("00112233445566778899aabbccddeeff").expect("key");
        let other = cluster_key("ffeeddccbbaa99887766554433221100").expect("key");
        assert_ne!(key, other);
        let file = EndpointsFile {
            version: FILE_VERSION,
            endpoints: vec![Endpoint {
                merchant: "DEMO00000000001".into(),
                url: "https://shop.example/hook".into(),
                secret: "whsec_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into(),
                created_unix_s: 1,
            }],
        };
        let sealed = seal(&file, &key).expect("seal");
        let clear = serde_json::to_vec(&file).expect("json");
        assert!(
            !sealed
                .windows(12)
                .any(|w| clear.windows(12).any(|c| c == w)),
            "nothing of the JSON in clear"
        );
        assert_ne!(
            sealed,
            seal(&file, &key).expect("seal"),
            "a fresh nonce each time"
        );
        let opened = unseal(&sealed, &key).expect("opens");
        assert_eq!(opened.endpoints, file.endpoints);
        assert!(unseal(&sealed, &other).is_err(), "another key");
        let mut bent = sealed.clone();
        let last = bent.len() - 1;
        bent[last] ^= 1;
        assert!(unseal(&bent, &key).is_err(), "a changed byte");
        assert!(unseal(&[], &key).expect("empty").endpoints.is_empty());
        assert!(unseal(&[1, 2, 3], &key).is_err());
        assert!(cluster_key("not hex").is_err());
    }

    #[test]
    fn urls_are_http_or_https_only() {
        assert!(check_url("https://example.com/hook").is_ok());
        assert!(check_url("http://127.0.0.1:9/x").is_ok());
        for bad in [
            "ftp://x/",
            "file:///etc/passwd",
            "https://u:p@x/",
            "nonsense",
            "http://",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://x/{}", "a".repeat(URL_BYTES_MAX))).is_err());
    }

    #[test]
    fn secrets_are_long_and_url_safe() {
        let s = new_secret().expect("secret");
        let random = s.strip_prefix(SECRET_PREFIX).expect("prefix");
        assert!(random.len() >= 43, "{s}");
        assert!(random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(s, new_secret().expect("secret"));
        assert_eq!(base64_url(b"\xfb\xff"), "-_8");
        assert_eq!(base64_url(b"Man"), "TWFu");
    }

    #[test]
    fn set_replace_remove_and_the_view_follows() {
        let dir = std::env::temp_dir().join(format!("webhooks-endpoints-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let admin = EndpointAdmin::new(&dir);
        let view = EndpointView::open(&dir);
        assert!(view.get().is_empty());
        assert!(!view.refresh(), "no file, no change");
        let s1 = admin.set("M1", "http://127.0.0.1:1/a", 5).expect("set");
        assert!(view.refresh());
        assert_eq!(view.get()["M1"].secret, s1);
        assert!(!view.refresh(), "the same file is not read again");
        assert!(
            !format!("{:?}", view.get()["M1"]).contains(&s1[6..]),
            "Debug masks the secret"
        );
        let s2 = admin.set("M1", "http://127.0.0.1:1/b", 6).expect("replace");
        assert_ne!(s1, s2);
        view.refresh();
        assert_eq!(view.get()["M1"].url, "http://127.0.0.1:1/b");
        let mode = std::fs::metadata(dir.join(ENDPOINTS_FILE))
            .expect("file")
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        admin.remove("M1").expect("remove");
        assert!(admin.remove("M1").is_err());
        view.refresh();
        assert!(view.get().is_empty());
        assert!(admin.set("", "http://x/", 1).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
