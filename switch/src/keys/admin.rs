//! The operator commands' side of the key file (`switch keys`, `switch
//! mandates`): create, list and revoke keys, grant and revoke mandates.
//! Every change is read, change, write atomically, under the lock file.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::file::{
    random, read_file, write_atomic, KeyRecord, KeysError, KeysFile, LockFile, Mandate, Owner,
    Scope, KEYS_FILE, KEYS_MAX, MANDATES_MAX,
};

/// Secret size, bytes of randomness.
const SECRET_BYTES: usize = 32;

// Two hex characters per byte, and the wire's secret field holds 16..=64.
const _: () = assert!(SECRET_BYTES * 2 <= 64 && SECRET_BYTES * 2 >= 16);

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

    /// Grants `provider` a mandate for `merchant` with `scopes`; when one
    /// is already in force, its scopes become `scopes`. `merchant_known`
    /// says whether the switch serves a merchant (its configuration and
    /// the merchants added at runtime); the provider must hold a key in
    /// force. Returns whether anything changed.
    ///
    /// # Errors
    /// A malformed MID or provider id, a merchant the switch does not
    /// serve, a provider without a key, the file's errors, `MANDATES_MAX`.
    pub fn grant_mandate(
        &self,
        merchant: &str,
        provider: &str,
        scopes: &[Scope],
        merchant_known: &dyn Fn(&str) -> bool,
    ) -> Result<bool, KeysError> {
        check_mid(merchant)?;
        check_client_id("--provider", provider)?;
        if !merchant_known(merchant) {
            return Err(KeysError::NotFound(format!(
                "merchant {merchant} is not configured on this switch (see `switch merchants list`)"
            )));
        }
        let scopes = Scope::all()
            .into_iter()
            .filter(|s| scopes.contains(s))
            .collect::<Vec<_>>();
        self.change(|file| {
            let registered = file.keys.iter().any(|k| {
                k.revoked_unix_s.is_none() && k.owner == Owner::Provider(provider.to_owned())
            });
            if !registered {
                return Err(KeysError::NotFound(format!(
                    "provider {provider} has no key in force: create one first \
                     (`switch keys create --provider {provider} --name ...`)"
                )));
            }
            if let Some(m) = file
                .mandates
                .iter_mut()
                .find(|m| m.in_force(merchant, provider))
            {
                let changed = m.scopes != scopes;
                m.scopes = scopes;
                return Ok(changed);
            }
            if file.mandates.len() >= MANDATES_MAX {
                return Err(KeysError::Full("mandates"));
            }
            file.mandates.push(Mandate {
                merchant: merchant.to_owned(),
                provider: provider.to_owned(),
                granted_unix_s: now_unix_s(),
                revoked_unix_s: None,
                scopes,
            });
            Ok(true)
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
    /// In force for this merchant and provider (granted, not revoked).
    fn in_force(&self, merchant: &str, provider: &str) -> bool {
        self.revoked_unix_s.is_none() && self.merchant == merchant && self.provider == provider
    }
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
pub(super) fn is_client_id(id: &str) -> bool {
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
