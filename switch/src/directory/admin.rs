//! Changes to the directory, for the command line and internal frames:
//! each takes the lock file, reads `directory.json`, checks the change by
//! resolving the new file over the configuration, appends it to the audit
//! log (fsynced), then writes the file atomically. A running switch picks
//! the file up within its poll interval; one that is not running reads it
//! when it starts. In cluster mode the same checks run on PostgreSQL's
//! overlay instead (`super::pg`), shared by every node.

use std::path::{Path, PathBuf};

use super::file::{self, DirectoryFile, MerchantEntry, TerminalEntry};
use super::{resolve, well_formed, AutoCapture, DirectoryError, Resolved, State};
use crate::config;

/// Settings of a terminal to change; `None` leaves one as it is; for the
/// overrides, `Some(None)` goes back to inheriting the merchant's.
#[derive(Clone, Debug, Default)]
pub(crate) struct TerminalPatch {
    /// New name.
    pub(crate) name: Option<String>,
    /// New state.
    pub(crate) state: Option<State>,
    /// Refunds: on, off, or inherit.
    pub(crate) refunds: Option<Option<bool>>,
    /// MO/TO: on, off, or inherit.
    pub(crate) moto: Option<Option<bool>>,
    /// Cancels: on, off, or inherit.
    pub(crate) cancel: Option<Option<bool>>,
}

/// Settings of a merchant to change; `None` leaves one as it is.
#[derive(Clone, Debug, Default)]
pub(crate) struct MerchantPatch {
    /// New name.
    pub(crate) name: Option<String>,
    /// Enabled.
    pub(crate) enabled: Option<bool>,
    /// Currencies.
    pub(crate) currencies: Option<Vec<u16>>,
    /// Over-capture percentage.
    pub(crate) over_capture_pct: Option<u32>,
    /// Refunds allowed.
    pub(crate) refunds_allowed: Option<bool>,
    /// MO/TO allowed.
    pub(crate) moto_allowed: Option<bool>,
    /// Hold period, hours.
    pub(crate) hold_period_h: Option<u64>,
    /// Auto-capture.
    pub(crate) auto_capture: Option<AutoCapture>,
}

/// The directory of one data directory over one configuration's
/// merchants, changed in the name of `who`.
pub(crate) struct Admin {
    /// Where the overlay is.
    store: Store,
    /// The configuration's merchants.
    config: Vec<config::Merchant>,
}

/// Where an [`Admin`]'s overlay is.
enum Store {
    /// One node's files.
    File {
        /// `<data_dir>/directory.json`.
        path: PathBuf,
        /// `<data_dir>/audit.log`.
        audit: PathBuf,
    },
    /// The cluster's row in PostgreSQL (`archive.url`).
    Pg(String),
}

/// Now, Unix seconds.
fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn json<T: serde::Serialize>(v: Option<&T>) -> serde_json::Value {
    v.and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(serde_json::Value::Null)
}

impl Admin {
    /// The directory of `data_dir` over `config`'s merchants.
    pub(crate) fn new(data_dir: &Path, config: &[config::Merchant]) -> Admin {
        Admin {
            store: Store::File {
                path: data_dir.join(file::DIRECTORY_FILE),
                audit: data_dir.join(file::AUDIT_FILE),
            },
            config: config.to_vec(),
        }
    }

    /// The cluster's directory in PostgreSQL at `url` over `config`'s
    /// merchants (cluster mode).
    pub(crate) fn cluster(url: &str, config: &[config::Merchant]) -> Admin {
        Admin {
            store: Store::Pg(url.to_owned()),
            config: config.to_vec(),
        }
    }

    /// The merchants and terminals as they stand (no lock: the file is
    /// replaced atomically, the row in one transaction).
    ///
    /// # Errors
    /// When the overlay cannot be read or does not resolve.
    pub(crate) fn current(&self) -> Result<Resolved, DirectoryError> {
        let f = match &self.store {
            Store::File { path, .. } => file::read(path)?,
            Store::Pg(url) => crate::blocking::off_runtime(|| {
                super::pg::read(&mut super::pg::connect(url)?).map(|(_, f)| f)
            })?,
        };
        resolve(&self.config, &f)
    }

    /// Under the lock: `change` edits the file and says what it did and
    /// to what (its audit `what`, `target`, and the entries before and
    /// after); the result is resolved, audited, then written.
    fn change(
        &self,
        who: &str,
        change: impl FnOnce(&mut DirectoryFile, &Resolved) -> Result<Audited, DirectoryError> + Send,
    ) -> Result<Resolved, DirectoryError> {
        if who.is_empty() || who.len() > file::WHO_BYTES_MAX || who.chars().any(char::is_control) {
            return Err(DirectoryError::Invalid(format!(
                "who `{who}`: expected 1 to {} printable bytes",
                file::WHO_BYTES_MAX
            )));
        }
        // Checked and resolved the same way wherever the overlay is.
        let checked =
            |f: &mut DirectoryFile| -> Result<(file::AuditLine<'_>, Resolved), DirectoryError> {
                let before = resolve(&self.config, f)?;
                let audited = change(f, &before)?;
                let after = resolve(&self.config, f)?;
                super::engine_directory(&after)?;
                let line = file::AuditLine {
                    at: file::rfc3339(now_unix_s()),
                    who,
                    what: audited.what,
                    target: audited.target,
                    before: audited.before,
                    after: audited.after,
                };
                Ok((line, after))
            };
        match &self.store {
            Store::File { path, audit } => {
                let _lock = crate::keys::LockFile::acquire(path)
                    .map_err(|e| DirectoryError::Locked(e.to_string()))?;
                let mut f = file::read(path)?;
                let (line, after) = checked(&mut f)?;
                file::audit(audit, &line)?;
                file::write(path, &f)?;
                Ok(after)
            }
            Store::Pg(url) => crate::blocking::off_runtime(|| {
                super::pg::change(url, |f| {
                    let (line, after) = checked(f)?;
                    let line =
                        serde_json::to_string(&line).map_err(|e| DirectoryError::Corrupt {
                            path: super::pg::ORIGIN.into(),
                            reason: e.to_string(),
                        })?;
                    Ok((line, after))
                })
            }),
        }
    }

    /// Adds terminal `tid` to merchant `mid` (enabled, inheriting its
    /// settings); a removed terminal of the same merchant comes back.
    ///
    /// # Errors
    /// A malformed F41, an unknown merchant, a terminal that exists (of
    /// this or another merchant), the merchant's terminal limit.
    pub(crate) fn add_terminal(
        &self,
        who: &str,
        tid: &str,
        mid: &str,
        name: &str,
    ) -> Result<Resolved, DirectoryError> {
        if !well_formed(tid, 8) {
            return Err(DirectoryError::Invalid(format!(
                "terminal `{tid}`: expected 8 printable characters (F41)"
            )));
        }
        self.change(who, |f, now| {
            if !now.merchants.iter().any(|m| m.id == mid) {
                return Err(DirectoryError::NotFound(format!("unknown merchant {mid}")));
            }
            let existing = now.terminals.iter().find(|t| t.id == tid);
            match existing {
                Some(t) if t.merchant != mid => {
                    return Err(DirectoryError::Conflict(format!(
                        "terminal {tid} already belongs to merchant {}",
                        t.merchant
                    )))
                }
                Some(t) if t.state != State::Removed => {
                    return Err(DirectoryError::Conflict(format!(
                        "terminal {tid} already belongs to merchant {mid}"
                    )))
                }
                _ => {}
            }
            let count = now.terminals.iter().filter(|t| t.merchant == mid).count();
            if existing.is_none() && count >= engine::directory::TERMINALS_PER_MERCHANT_MAX {
                return Err(DirectoryError::Full(format!(
                    "merchant {mid} has {count} terminals, the limit"
                )));
            }
            if existing.is_none() && f.terminals.len() >= file::TERMINAL_ENTRIES_MAX {
                return Err(DirectoryError::Full(format!(
                    "{} terminal entries in the directory file, the limit",
                    f.terminals.len()
                )));
            }
            let entry = TerminalEntry {
                id: tid.to_owned(),
                merchant: mid.to_owned(),
                name: name.to_owned(),
                state: State::Enabled,
                refunds: None,
                moto: None,
                cancel: None,
            };
            let before = f.terminals.iter().position(|t| t.id == tid);
            let old = before.map(|i| f.terminals.remove(i));
            f.terminals.push(entry.clone());
            Ok(Audited {
                what: "terminal.add",
                target: tid.to_owned(),
                before: json(old.as_ref()),
                after: json(Some(&entry)),
            })
        })
    }

    /// Changes terminal `tid` (any terminal, configured or added).
    ///
    /// # Errors
    /// An unknown terminal (or a removed one, for anything but its state).
    pub(crate) fn set_terminal(
        &self,
        who: &str,
        tid: &str,
        patch: &TerminalPatch,
        what: &'static str,
    ) -> Result<Resolved, DirectoryError> {
        self.change(who, |f, now| {
            let Some(view) = now.terminals.iter().find(|t| t.id == tid) else {
                return Err(DirectoryError::NotFound(format!("unknown terminal {tid}")));
            };
            if view.state == State::Removed && patch.state != Some(State::Enabled) {
                return Err(DirectoryError::NotFound(format!(
                    "terminal {tid} was removed; add it again"
                )));
            }
            let before = f.terminals.iter().find(|t| t.id == tid).cloned();
            let mut entry = before.clone().unwrap_or_else(|| TerminalEntry {
                id: view.id.clone(),
                merchant: view.merchant.clone(),
                name: view.name.clone(),
                state: view.state,
                refunds: view.refunds,
                moto: view.moto,
                cancel: view.cancel,
            });
            if let Some(n) = &patch.name {
                entry.name.clone_from(n);
            }
            entry.state = patch.state.unwrap_or(entry.state);
            entry.refunds = patch.refunds.unwrap_or(entry.refunds);
            entry.moto = patch.moto.unwrap_or(entry.moto);
            entry.cancel = patch.cancel.unwrap_or(entry.cancel);
            let entries = f.terminals.len();
            match f.terminals.iter_mut().find(|t| t.id == tid) {
                Some(slot) => *slot = entry.clone(),
                None if entries >= file::TERMINAL_ENTRIES_MAX => {
                    return Err(DirectoryError::Full(format!(
                        "{entries} terminal entries in the directory file, the limit"
                    )))
                }
                None => f.terminals.push(entry.clone()),
            }
            Ok(Audited {
                what,
                target: tid.to_owned(),
                before: json(before.as_ref()),
                after: json(Some(&entry)),
            })
        })
    }

    /// Adds merchant `mid` at the next index, with `patch`'s settings
    /// (currencies required).
    ///
    /// # Errors
    /// A malformed F42, a merchant that exists, no currencies, settings
    /// out of range, the merchant limit.
    pub(crate) fn add_merchant(
        &self,
        who: &str,
        mid: &str,
        patch: &MerchantPatch,
    ) -> Result<Resolved, DirectoryError> {
        if let Store::Pg(_) = self.store {
            // Each node's shards are the configuration's merchants'.
            return Err(DirectoryError::Invalid(
                "cluster mode: merchants are added in every node's configuration, not at run time"
                    .into(),
            ));
        }
        if !well_formed(mid, 15) {
            return Err(DirectoryError::Invalid(format!(
                "merchant `{mid}`: expected 15 printable characters (F42)"
            )));
        }
        if patch.currencies.as_ref().is_none_or(Vec::is_empty) {
            return Err(DirectoryError::Invalid(format!(
                "merchant {mid}: --currencies is required"
            )));
        }
        self.change(who, |f, now| {
            if now.merchants.iter().any(|m| m.id == mid) {
                return Err(DirectoryError::Conflict(format!(
                    "merchant {mid} exists already"
                )));
            }
            if now.merchants.len() >= engine::directory::MERCHANTS_MAX {
                return Err(DirectoryError::Full(format!(
                    "{} merchants, the limit",
                    now.merchants.len()
                )));
            }
            let mut entry = MerchantEntry {
                id: mid.to_owned(),
                index: Some(now.merchants.len() as u32),
                enabled: Some(true),
                ..MerchantEntry::default()
            };
            patch_merchant(&mut entry, patch);
            f.merchants.push(entry.clone());
            Ok(Audited {
                what: "merchant.add",
                target: mid.to_owned(),
                before: serde_json::Value::Null,
                after: json(Some(&entry)),
            })
        })
    }

    /// Changes merchant `mid` (configured or added).
    ///
    /// # Errors
    /// An unknown merchant, settings out of range.
    pub(crate) fn set_merchant(
        &self,
        who: &str,
        mid: &str,
        patch: &MerchantPatch,
        what: &'static str,
    ) -> Result<Resolved, DirectoryError> {
        self.change(who, |f, now| {
            if !now.merchants.iter().any(|m| m.id == mid) {
                return Err(DirectoryError::NotFound(format!("unknown merchant {mid}")));
            }
            let before = f.merchants.iter().find(|m| m.id == mid).cloned();
            let mut entry = before.clone().unwrap_or_else(|| MerchantEntry {
                id: mid.to_owned(),
                ..MerchantEntry::default()
            });
            patch_merchant(&mut entry, patch);
            match f.merchants.iter_mut().find(|m| m.id == mid) {
                Some(slot) => *slot = entry.clone(),
                None => f.merchants.push(entry.clone()),
            }
            Ok(Audited {
                what,
                target: mid.to_owned(),
                before: json(before.as_ref()),
                after: json(Some(&entry)),
            })
        })
    }
}

/// What a change did, for its audit line.
struct Audited {
    /// `terminal.add`, `merchant.set`, ...
    what: &'static str,
    /// F41 or F42.
    target: String,
    /// The entry before.
    before: serde_json::Value,
    /// The entry after.
    after: serde_json::Value,
}

fn patch_merchant(entry: &mut MerchantEntry, patch: &MerchantPatch) {
    if let Some(n) = &patch.name {
        entry.name.clone_from(n);
    }
    entry.enabled = patch.enabled.or(entry.enabled);
    if let Some(c) = &patch.currencies {
        entry.currencies = Some(c.clone());
    }
    entry.over_capture_pct = patch.over_capture_pct.or(entry.over_capture_pct);
    entry.refunds_allowed = patch.refunds_allowed.or(entry.refunds_allowed);
    entry.moto_allowed = patch.moto_allowed.or(entry.moto_allowed);
    entry.hold_period_h = patch.hold_period_h.or(entry.hold_period_h);
    entry.auto_capture = patch.auto_capture.or(entry.auto_capture);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(dir: &Path) -> Admin {
        let config = crate::Config::load(None, crate::Overrides::default()).expect("default");
        Admin::new(dir, &config.merchants)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("switch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn changes_are_checked_audited_and_kept() {
        let dir = temp_dir("directory-admin");
        let a = admin(&dir);
        let r = a
            .add_terminal("alice", "NEWT0001", "DEMO00000000002", "till")
            .expect("added");
        let t = r.terminals.iter().find(|t| t.id == "NEWT0001").expect("t");
        assert_eq!((t.state, t.name.as_str()), (State::Enabled, "till"));
        let e = a
            .add_terminal("alice", "NEWT0001", "DEMO00000000001", "")
            .expect_err("taken");
        assert!(
            e.to_string()
                .contains("already belongs to merchant DEMO00000000002"),
            "{e}"
        );
        let e = a
            .add_terminal("alice", "DEMO0001", "DEMO00000000002", "")
            .expect_err("taken");
        assert!(
            e.to_string()
                .contains("already belongs to merchant DEMO00000000001"),
            "{e}"
        );
        let e = a
            .add_terminal("alice", "SHORT", "DEMO00000000002", "")
            .expect_err("F41");
        assert!(e.to_string().contains("8 printable characters"), "{e}");
        let e = a
            .add_terminal("alice", "NEWT0002", "NOSUCHMERCHANT1", "")
            .expect_err("mid");
        assert!(
            e.to_string().contains("unknown merchant NOSUCHMERCHANT1"),
            "{e}"
        );
        let off = TerminalPatch {
            state: Some(State::Disabled),
            ..TerminalPatch::default()
        };
        a.set_terminal("bob", "DEMO0001", &off, "terminal.disable")
            .expect("disabled");
        let added = MerchantPatch {
            currencies: Some(vec![978]),
            refunds_allowed: Some(true),
            ..MerchantPatch::default()
        };
        let r = a
            .add_merchant("carol", "NEWM00000000001", &added)
            .expect("added");
        let m = r.merchants.last().expect("m");
        assert_eq!((m.index, m.configured, m.refunds_allowed), (2, false, true));
        // Read back by another admin, as a restart would.
        let r = admin(&dir).current().expect("read");
        let t = r.terminals.iter().find(|t| t.id == "DEMO0001").expect("t");
        assert_eq!(t.state, State::Disabled);
        assert_eq!(r.merchants.len(), 3);
        let log = std::fs::read_to_string(dir.join(file::AUDIT_FILE)).expect("audit");
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 3, "one line per change, none for refusals");
        assert_eq!(lines[1]["who"], "bob");
        assert_eq!(lines[1]["what"], "terminal.disable");
        assert_eq!(lines[1]["target"], "DEMO0001");
        assert_eq!(lines[1]["after"]["state"], "disabled");
        assert!(lines[1]["before"].is_null());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
