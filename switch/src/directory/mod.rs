//! Merchants and terminals at run time: the configuration's merchants
//! with the overlay in `<data_dir>/directory.json` (`file`), resolved into
//! what the engine serves ([`resolve`], [`engine_directory`]), changed by
//! the `switch terminals` and `switch merchants` commands and by internal
//! frames (`admin`), every change in `<data_dir>/audit.log`. The running
//! switch checks the file's identity every [`POLL_INTERVAL`] and swaps a
//! changed one into the engine ([`Watch`]); a file that does not resolve
//! leaves the last good directory in force.
//!
//! Merchant indexes are stored in payments: configured merchants take
//! 0..n in configuration order, added ones the next free index when added,
//! kept in the file; a merchant is disabled, never removed, and a removed
//! terminal stays in the file (its reversals still find their merchant).

mod admin;
mod file;
pub(crate) mod pg;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use admin::{Admin, MerchantPatch, TerminalPatch};
pub(crate) use file::{AutoCapture, State, DIRECTORY_FILE};

use crate::config;

/// How often the running switch checks the file (a change applies within
/// this plus one read: well inside the contract's 2 s).
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Why a directory change or file was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirectoryError {
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not what this version writes.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An argument is malformed (names it and what was expected).
    #[error("{0}")]
    Invalid(String),
    /// No such merchant or terminal.
    #[error("{0}")]
    NotFound(String),
    /// The change contradicts the directory (a terminal of another
    /// merchant, one that exists already).
    #[error("{0}")]
    Conflict(String),
    /// A limit is reached.
    #[error("{0}")]
    Full(String),
    /// Another command holds the lock file.
    #[error("{0}")]
    Locked(String),
    /// The engine refused the directory (indexes would move).
    #[error("{0}")]
    Engine(#[from] engine::DirectoryError),
}

impl DirectoryError {
    pub(crate) fn io(path: &Path, e: &std::io::Error) -> DirectoryError {
        DirectoryError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

/// A merchant as it stands: configured or added, with the overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MerchantView {
    /// F42.
    pub(crate) id: String,
    /// Its index (stored in payments).
    pub(crate) index: u32,
    /// For people.
    pub(crate) name: String,
    /// In the configuration (else added at run time).
    pub(crate) configured: bool,
    /// Whether it may transact.
    pub(crate) enabled: bool,
    /// Currencies.
    pub(crate) currencies: Vec<u16>,
    /// Over-capture percentage.
    pub(crate) over_capture_pct: u32,
    /// Refunds allowed.
    pub(crate) refunds_allowed: bool,
    /// MO/TO allowed.
    pub(crate) moto_allowed: bool,
    /// Hold period, hours.
    pub(crate) hold_period_h: u64,
    /// Auto-capture after hours, or off.
    pub(crate) auto_capture_h: Option<u64>,
}

/// A terminal as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TerminalView {
    /// F41.
    pub(crate) id: String,
    /// Its merchant's F42.
    pub(crate) merchant: String,
    /// For people.
    pub(crate) name: String,
    /// Whether it transacts.
    pub(crate) state: State,
    /// Refunds allowed, else the merchant's.
    pub(crate) refunds: Option<bool>,
    /// MO/TO allowed, else the merchant's.
    pub(crate) moto: Option<bool>,
    /// Cancels over internal frames allowed, else allowed.
    pub(crate) cancel: Option<bool>,
}

/// The merchants (by index) and terminals (configured first, then added,
/// in file order) as they stand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// By index.
    pub(crate) merchants: Vec<MerchantView>,
    /// Every terminal, removed ones included.
    pub(crate) terminals: Vec<TerminalView>,
}

/// The MIDs of the merchants this switch serves, by index: the
/// configuration's, then those added at run time in `data_dir`
/// (`switch merchants add`).
///
/// # Errors
/// When `<data_dir>/directory.json` cannot be read or does not resolve
/// over the configuration.
pub(crate) fn merchant_ids(
    config: &crate::Config,
    data_dir: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    let resolved = Admin::new(data_dir, &config.merchants)
        .current()
        .map_err(|e| anyhow::anyhow!("{}: {e}", data_dir.display()))?;
    Ok(resolved.merchants.into_iter().map(|m| m.id).collect())
}

/// Whether `id` is `n` printable ASCII characters (F41: 8, F42: 15).
pub(crate) fn well_formed(id: &str, n: usize) -> bool {
    id.len() == n && id.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// Checks a merchant's settings as the configuration does.
fn check_merchant(m: &MerchantView) -> Result<(), DirectoryError> {
    let bad = |what: &str| {
        Err(DirectoryError::Invalid(format!(
            "merchant {}: {what}",
            m.id
        )))
    };
    if m.currencies.is_empty()
        || m.currencies.len() > 32
        || m.currencies.iter().any(|&c| c == 0 || c > 999)
    {
        return bad("currencies: expected 1 to 32 ISO 4217 numeric codes, 1..=999");
    }
    if m.over_capture_pct > 100 {
        return bad("over-capture percentage: expected 0..=100");
    }
    if !(1..=744).contains(&m.hold_period_h) {
        return bad("hold hours: expected 1..=744");
    }
    if m.auto_capture_h
        .is_some_and(|h| h == 0 || h > m.hold_period_h)
    {
        return bad("auto-capture hours: expected 1 up to the hold hours");
    }
    if m.name.len() > file::NAME_BYTES_MAX {
        return bad("name: too long");
    }
    Ok(())
}

/// A configured merchant as a view.
fn configured(i: usize, m: &config::Merchant) -> MerchantView {
    MerchantView {
        id: m.id.clone(),
        index: i as u32,
        name: m.name.clone(),
        configured: true,
        enabled: m.enabled,
        currencies: m.currencies.clone(),
        over_capture_pct: m.over_capture_pct,
        refunds_allowed: m.refunds_allowed,
        moto_allowed: m.moto_allowed,
        hold_period_h: m.hold_period_h,
        auto_capture_h: m.auto_capture_h,
    }
}

/// Applies the settings an entry carries.
fn overlay(view: &mut MerchantView, e: &file::MerchantEntry) {
    if !e.name.is_empty() {
        view.name.clone_from(&e.name);
    }
    view.enabled = e.enabled.unwrap_or(view.enabled);
    if let Some(c) = &e.currencies {
        view.currencies.clone_from(c);
    }
    view.over_capture_pct = e.over_capture_pct.unwrap_or(view.over_capture_pct);
    view.refunds_allowed = e.refunds_allowed.unwrap_or(view.refunds_allowed);
    view.moto_allowed = e.moto_allowed.unwrap_or(view.moto_allowed);
    view.hold_period_h = e.hold_period_h.unwrap_or(view.hold_period_h);
    match e.auto_capture {
        Some(AutoCapture::Off) => view.auto_capture_h = None,
        Some(AutoCapture::Hours(h)) => view.auto_capture_h = Some(h),
        None => {}
    }
}

/// The configuration's merchants with the file's overlay.
///
/// # Errors
/// An entry that is malformed, names what does not exist, moves a
/// configured terminal to another merchant, or gives an added merchant an
/// index that is not the next one (the configuration must not grow in
/// front of merchants added at run time).
pub(crate) fn resolve(
    config: &[config::Merchant],
    file: &file::DirectoryFile,
) -> Result<Resolved, DirectoryError> {
    let mut merchants: Vec<MerchantView> = config
        .iter()
        .enumerate()
        .map(|(i, m)| configured(i, m))
        .collect();
    let mut by_id: HashMap<String, usize> = merchants
        .iter()
        .map(|m| (m.id.clone(), m.index as usize))
        .collect();
    for e in &file.merchants {
        if !well_formed(&e.id, 15) {
            return Err(DirectoryError::Invalid(format!(
                "merchant `{}`: expected 15 printable characters (F42)",
                e.id
            )));
        }
        let at = place(e, &mut merchants, &mut by_id)?;
        overlay(&mut merchants[at], e);
        check_merchant(&merchants[at])?;
    }
    if merchants.len() > engine::directory::MERCHANTS_MAX {
        return Err(DirectoryError::Full(format!(
            "more than {} merchants",
            engine::directory::MERCHANTS_MAX
        )));
    }
    let terminals = resolve_terminals(config, file, &by_id)?;
    Ok(Resolved {
        merchants,
        terminals,
    })
}

/// The index of entry `e`'s merchant: a configured one's, or the next
/// one for a merchant added at run time (pushed with default settings).
fn place(
    e: &file::MerchantEntry,
    merchants: &mut Vec<MerchantView>,
    by_id: &mut HashMap<String, usize>,
) -> Result<usize, DirectoryError> {
    match (e.index, by_id.get(&e.id)) {
        (None, Some(&at)) if merchants[at].configured => Ok(at),
        (None, _) => Err(DirectoryError::NotFound(format!(
            "merchant {}: settings for a merchant not in the configuration",
            e.id
        ))),
        (Some(_), Some(_)) => Err(DirectoryError::Conflict(format!(
            "merchant {} is in the configuration and added at run time",
            e.id
        ))),
        (Some(index), None) if index as usize == merchants.len() => {
            merchants.push(MerchantView {
                id: e.id.clone(),
                index,
                name: String::new(),
                configured: false,
                enabled: true,
                currencies: Vec::new(),
                over_capture_pct: 0,
                refunds_allowed: false,
                moto_allowed: false,
                hold_period_h: 168,
                auto_capture_h: None,
            });
            by_id.insert(e.id.clone(), index as usize);
            Ok(index as usize)
        }
        (Some(index), None) => Err(DirectoryError::Conflict(format!(
            "merchant {} was added with index {index}, but the next index is {} (merchants added to the configuration must come after those added at run time)",
            e.id,
            merchants.len()
        ))),
    }
}

/// Configured terminals, then the file's entries over them or added.
fn resolve_terminals(
    config: &[config::Merchant],
    file: &file::DirectoryFile,
    by_id: &HashMap<String, usize>,
) -> Result<Vec<TerminalView>, DirectoryError> {
    let mut terminals = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for m in config {
        for t in &m.terminals {
            at.insert(t.clone(), terminals.len());
            terminals.push(TerminalView {
                id: t.clone(),
                merchant: m.id.clone(),
                name: String::new(),
                state: State::Enabled,
                refunds: None,
                moto: None,
                cancel: None,
            });
        }
    }
    for e in &file.terminals {
        if !well_formed(&e.id, 8) {
            return Err(DirectoryError::Invalid(format!(
                "terminal `{}`: expected 8 printable characters (F41)",
                e.id
            )));
        }
        if !by_id.contains_key(&e.merchant) {
            return Err(DirectoryError::NotFound(format!(
                "terminal {}: unknown merchant {}",
                e.id, e.merchant
            )));
        }
        if e.name.len() > file::NAME_BYTES_MAX {
            return Err(DirectoryError::Invalid(format!(
                "terminal {}: name over {} bytes",
                e.id,
                file::NAME_BYTES_MAX
            )));
        }
        let view = TerminalView {
            id: e.id.clone(),
            merchant: e.merchant.clone(),
            name: e.name.clone(),
            state: e.state,
            refunds: e.refunds,
            moto: e.moto,
            cancel: e.cancel,
        };
        match at.get(&e.id) {
            Some(&i) if terminals[i].merchant != e.merchant => {
                return Err(DirectoryError::Conflict(format!(
                    "terminal {} already belongs to merchant {}",
                    e.id, terminals[i].merchant
                )))
            }
            Some(&i) => terminals[i] = view,
            None => {
                at.insert(e.id.clone(), terminals.len());
                terminals.push(view);
            }
        }
    }
    Ok(terminals)
}

/// What the engine serves for `resolved`.
///
/// # Errors
/// Over the engine's limits (terminals per merchant).
pub(crate) fn engine_directory(resolved: &Resolved) -> Result<engine::Directory, DirectoryError> {
    let mut index: HashMap<&str, u32> = HashMap::new();
    let merchants = resolved
        .merchants
        .iter()
        .map(|m| {
            index.insert(&m.id, m.index);
            engine::Merchant {
                id: m.id.as_bytes().try_into().unwrap_or([b' '; 15]),
                terminals: Vec::new(),
                enabled: m.enabled,
                currencies: m.currencies.clone(),
                over_capture_pct: m.over_capture_pct,
                refunds_allowed: m.refunds_allowed,
                moto_allowed: m.moto_allowed,
                hold_period_ms: m.hold_period_h * 3_600_000,
                auto_capture_ms: m.auto_capture_h.map(|h| h * 3_600_000),
            }
        })
        .collect();
    let terminals: Vec<engine::Terminal> = resolved
        .terminals
        .iter()
        .filter_map(|t| {
            Some(engine::Terminal {
                id: t.id.as_bytes().try_into().ok()?,
                merchant: *index.get(t.merchant.as_str())?,
                state: match t.state {
                    State::Enabled => engine::TerminalState::Enabled,
                    State::Disabled => engine::TerminalState::Disabled,
                    State::Removed => engine::TerminalState::Removed,
                },
                refunds: t.refunds,
                moto: t.moto,
                cancel: t.cancel,
            })
        })
        .collect();
    Ok(engine::Directory::new(merchants, &terminals)?)
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

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
    })
}

/// The running switch's view of the overlay: what it last applied.
pub(crate) struct Watch {
    /// `<data_dir>/directory.json`, or the cluster's row.
    source: Source,
    /// The configuration's merchants the overlay goes over.
    config: Vec<config::Merchant>,
    /// What is in force, to log what a reload changes.
    resolved: Resolved,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Source::Pg { client, .. } = &mut self.source {
            if let Some(c) = client.take() {
                crate::blocking::drop_off_runtime(c);
            }
        }
    }
}

/// Where a [`Watch`] reads the overlay.
enum Source {
    /// One node's file.
    File {
        /// `<data_dir>/directory.json`.
        path: PathBuf,
        /// The file's identity when last read (`None`: absent).
        stamp: Option<Stamp>,
    },
    /// The cluster's row in PostgreSQL (`pg`).
    Pg {
        /// archive.url.
        url: String,
        /// The session, `None` after an error (opened again at the next
        /// poll).
        client: Option<Box<postgres::Client>>,
        /// The row's version last applied.
        version: i64,
    },
}

impl Watch {
    /// The directory of `data_dir` over `config`'s merchants, read now.
    ///
    /// # Errors
    /// When the file cannot be read or does not resolve: the switch does
    /// not start on a directory it cannot trust (a disabled terminal
    /// would come back enabled).
    pub(crate) fn open(
        data_dir: &Path,
        config: &[config::Merchant],
    ) -> Result<(Watch, engine::Directory), DirectoryError> {
        let path = data_dir.join(DIRECTORY_FILE);
        let stamp = stamp(&path);
        let resolved = resolve(config, &file::read(&path)?)?;
        let directory = engine_directory(&resolved)?;
        let watch = Watch {
            source: Source::File { path, stamp },
            config: config.to_vec(),
            resolved,
        };
        Ok((watch, directory))
    }

    /// The cluster's directory in PostgreSQL at `url` (its tables made if
    /// need be) over `config`'s merchants, read now.
    ///
    /// # Errors
    /// As [`Watch::open`], or PostgreSQL's.
    pub(crate) fn open_cluster(
        url: &str,
        config: &[config::Merchant],
    ) -> Result<(Watch, engine::Directory), DirectoryError> {
        let (client, version, resolved) = crate::blocking::off_runtime(|| {
            let mut client = pg::connect(url)?;
            pg::install(&mut client).map_err(|e| DirectoryError::Io {
                path: pg::ORIGIN.into(),
                reason: format!("{e:#}"),
            })?;
            let (version, f) = pg::read(&mut client)?;
            Ok::<_, DirectoryError>((client, version, resolve(config, &f)?))
        })?;
        let directory = engine_directory(&resolved)?;
        let watch = Watch {
            source: Source::Pg {
                url: url.to_owned(),
                client: Some(Box::new(client)),
                version,
            },
            config: config.to_vec(),
            resolved,
        };
        Ok((watch, directory))
    }

    /// When the file changed since last time: reads it, and calls `apply`
    /// with the directory it resolves to, logging one line per merchant or
    /// terminal that changed. `Ok(false)`: unchanged.
    ///
    /// # Errors
    /// When the file cannot be read, does not resolve, or `apply` refuses
    /// it: what is in force stays.
    pub(crate) fn poll(
        &mut self,
        apply: impl FnOnce(engine::Directory) -> Result<(), engine::DirectoryError>,
    ) -> Result<bool, DirectoryError> {
        let read = match &mut self.source {
            Source::File { path, stamp: was } => {
                let now = stamp(path);
                if now == *was {
                    return Ok(false);
                }
                // Whatever the outcome: a bad file is reported once per
                // change, not on every poll.
                let had_file = was.is_some();
                *was = now;
                if now.is_none() && had_file {
                    // Read as empty, it would enable every terminal
                    // disabled here.
                    return Err(DirectoryError::Corrupt {
                        path: path.display().to_string(),
                        reason: "the file disappeared; the last directory stays in force (restore the file, or restart to start from the configuration alone)".into(),
                    });
                }
                file::read(path)?
            }
            Source::Pg {
                url,
                client,
                version,
            } => {
                let changed = crate::blocking::off_runtime(|| {
                    let c = match client {
                        Some(c) => c,
                        None => client.insert(Box::new(pg::connect(url)?)),
                    };
                    if pg::version(c)? == *version {
                        return Ok(None);
                    }
                    pg::read(c).map(Some)
                });
                match changed {
                    Ok(None) => return Ok(false),
                    Ok(Some((v, f))) => {
                        // A row that does not resolve is reported once
                        // per change, as a bad file is.
                        *version = v;
                        f
                    }
                    Err(e) => {
                        *client = None;
                        return Err(e);
                    }
                }
            }
        };
        let resolved = resolve(&self.config, &read)?;
        apply(engine_directory(&resolved)?)?;
        log_changes(&self.resolved, &resolved);
        self.resolved = resolved;
        Ok(true)
    }
}

/// One log line per merchant or terminal that differs.
fn log_changes(old: &Resolved, new: &Resolved) {
    for m in &new.merchants {
        let before = old.merchants.get(m.index as usize);
        if before != Some(m) {
            tracing::info!(merchant = %m.id, index = m.index, enabled = m.enabled, added = before.is_none(), "directory: merchant changed");
        }
    }
    let before: HashMap<&str, &TerminalView> =
        old.terminals.iter().map(|t| (t.id.as_str(), t)).collect();
    for t in &new.terminals {
        if before.get(t.id.as_str()) != Some(&t) {
            tracing::info!(terminal = %t.id, merchant = %t.merchant, state = ?t.state, refunds = ?t.refunds, moto = ?t.moto, cancel = ?t.cancel, "directory: terminal changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Vec<config::Merchant> {
        crate::Config::load(None, crate::Overrides::default())
            .expect("default")
            .merchants
    }

    fn added(id: &str, index: u32) -> file::MerchantEntry {
        file::MerchantEntry {
            id: id.into(),
            index: Some(index),
            currencies: Some(vec![978]),
            ..file::MerchantEntry::default()
        }
    }

    #[test]
    fn a_file_that_disappears_leaves_the_last_directory_in_force() {
        let dir = std::env::temp_dir().join(format!("switch-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let admin = Admin::new(&dir, &config());
        let off = TerminalPatch {
            state: Some(State::Disabled),
            ..TerminalPatch::default()
        };
        admin
            .set_terminal("test", "DEMO0001", &off, "terminal.disable")
            .expect("disabled");
        let (mut watch, _) = Watch::open(&dir, &config()).expect("opens");
        assert!(!watch.poll(|_| Ok(())).expect("unchanged"));
        std::fs::remove_file(dir.join(DIRECTORY_FILE)).expect("remove");
        let mut applied = false;
        let e = watch
            .poll(|_| {
                applied = true;
                Ok(())
            })
            .expect_err("refused");
        assert!(e.to_string().contains("disappeared"), "{e}");
        assert!(!applied, "nothing swapped in");
        // Back again: applied.
        admin
            .set_terminal("test", "DEMO0002", &off, "terminal.disable")
            .expect("disabled");
        assert!(watch.poll(|_| Ok(())).expect("applied"));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn an_added_merchant_keeps_its_index_or_the_file_is_refused() {
        let mut f = file::DirectoryFile::empty();
        f.merchants.push(added("NEWM00000000001", 2));
        let r = resolve(&config(), &f).expect("resolves");
        assert_eq!(
            (r.merchants[2].id.as_str(), r.merchants[2].index),
            ("NEWM00000000001", 2)
        );
        // The configuration grew in front of it: index 2 is taken.
        let mut grown = config();
        let mut third = grown[1].clone();
        third.id = "CONF00000000003".into();
        third.terminals = vec!["CONF0003".into()];
        grown.push(third);
        let e = resolve(&grown, &f).expect_err("index taken");
        assert!(
            e.to_string()
                .contains("was added with index 2, but the next index is 3"),
            "{e}"
        );
        // A terminal entry moving a configured terminal to another merchant.
        let mut f = file::DirectoryFile::empty();
        f.terminals.push(file::TerminalEntry {
            id: "DEMO0001".into(),
            merchant: "DEMO00000000002".into(),
            name: String::new(),
            state: State::Enabled,
            refunds: None,
            moto: None,
            cancel: None,
        });
        let e = resolve(&config(), &f).expect_err("moved");
        assert!(
            e.to_string()
                .contains("already belongs to merchant DEMO00000000001"),
            "{e}"
        );
    }
}
