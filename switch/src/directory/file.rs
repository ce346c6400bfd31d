//! `<data_dir>/directory.json`, the runtime overlay over the
//! configuration's merchants: merchants added at run time (each with the
//! index it was given), settings that override a configured merchant's,
//! and terminals (added, disabled, removed, with their own settings).
//! Written atomically under a lock file, as `keys.json`; every change is
//! appended to `<data_dir>/audit.log` first.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::DirectoryError;

/// The file, in the data directory.
pub(crate) const DIRECTORY_FILE: &str = "directory.json";
/// The audit log, in the data directory.
pub(crate) const AUDIT_FILE: &str = "audit.log";
/// Format version of the file.
const FILE_VERSION: u32 = 1;
/// Largest file read; checked before reading. A terminal entry is about
/// 150 bytes: 100,000 of them with their merchants fit well.
const FILE_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// Most terminal entries in the file (terminals added, or configured ones
/// with settings), removed ones included.
pub(crate) const TERMINAL_ENTRIES_MAX: usize = 100_000;
/// Most merchant entries (added at run time, or overrides).
pub(crate) const MERCHANT_ENTRIES_MAX: usize = engine::directory::MERCHANTS_MAX;
/// Longest terminal or merchant name, bytes.
pub(crate) const NAME_BYTES_MAX: usize = 64;
/// Longest `who` recorded in the audit log, bytes.
pub(crate) const WHO_BYTES_MAX: usize = 64;

/// A terminal's state, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    /// Transacts.
    Enabled,
    /// 58 but for reversals.
    Disabled,
    /// As disabled, and no longer listed as the merchant's.
    Removed,
}

/// A terminal entry: added at run time, or a configured one with settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TerminalEntry {
    /// F41, 8 characters.
    pub(crate) id: String,
    /// Its merchant's MID.
    pub(crate) merchant: String,
    /// For people.
    #[serde(default)]
    pub(crate) name: String,
    /// Whether it transacts.
    pub(crate) state: State,
    /// Refunds allowed; absent: the merchant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refunds: Option<bool>,
    /// MO/TO allowed; absent: the merchant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) moto: Option<bool>,
    /// Cancels over internal frames allowed; absent: allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cancel: Option<bool>,
}

/// Auto-capture: off, or after this many hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AutoCapture {
    /// Holds expire at the end of the hold period.
    Off,
    /// Captured in full after this many hours.
    Hours(u64),
}

/// A merchant entry: added at run time (`index` set), or settings over a
/// configured merchant's (`index` absent). Absent settings keep the
/// configured (or, for an added merchant, the default) value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MerchantEntry {
    /// F42, 15 characters.
    pub(crate) id: String,
    /// The index an added merchant was given (stored in its payments,
    /// never changed or reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) index: Option<u32>,
    /// For people.
    #[serde(default)]
    pub(crate) name: String,
    /// Whether it may transact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) enabled: Option<bool>,
    /// Accepted ISO 4217 numeric currencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) currencies: Option<Vec<u16>>,
    /// Over-capture percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) over_capture_pct: Option<u32>,
    /// Refunds allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refunds_allowed: Option<bool>,
    /// MO/TO allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) moto_allowed: Option<bool>,
    /// Hold period, hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hold_period_h: Option<u64>,
    /// Auto-capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) auto_capture: Option<AutoCapture>,
}

/// The file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectoryFile {
    /// [`FILE_VERSION`].
    pub(crate) version: u32,
    /// Added merchants and overrides.
    #[serde(default)]
    pub(crate) merchants: Vec<MerchantEntry>,
    /// Added terminals and settings.
    #[serde(default)]
    pub(crate) terminals: Vec<TerminalEntry>,
}

impl DirectoryFile {
    /// An empty overlay.
    pub(crate) fn empty() -> DirectoryFile {
        DirectoryFile {
            version: FILE_VERSION,
            ..DirectoryFile::default()
        }
    }
}

/// Reads the file; a missing file is an empty overlay. Checks size, JSON,
/// version and entry counts; what the entries mean is checked when the
/// directory is built (`super::build`).
///
/// # Errors
/// I/O, or a file this version does not write.
pub(crate) fn read(path: &Path) -> Result<DirectoryFile, DirectoryError> {
    let corrupt = |reason: String| DirectoryError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirectoryFile::empty()),
        Err(e) => return Err(DirectoryError::io(path, &e)),
    };
    let len = f
        .metadata()
        .map_err(|e| DirectoryError::io(path, &e))?
        .len();
    if len > FILE_BYTES_MAX {
        return Err(corrupt(format!("{len} bytes, over {FILE_BYTES_MAX}")));
    }
    let mut text = String::new();
    f.take(FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|e| DirectoryError::io(path, &e))?;
    parse(&text, &path.display().to_string())
}

/// Reads a directory from its JSON `text` (a file's, or PostgreSQL's in
/// cluster mode: `super::pg`), named `origin` in errors: version and
/// entry counts checked.
///
/// # Errors
/// A directory this version does not write.
pub(crate) fn parse(text: &str, origin: &str) -> Result<DirectoryFile, DirectoryError> {
    let corrupt = |reason: String| DirectoryError::Corrupt {
        path: origin.to_owned(),
        reason,
    };
    if text.len() as u64 > FILE_BYTES_MAX {
        return Err(corrupt(format!(
            "{} bytes, over {FILE_BYTES_MAX}",
            text.len()
        )));
    }
    let file: DirectoryFile = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    if file.version != FILE_VERSION {
        return Err(corrupt(format!(
            "version {}, expected {FILE_VERSION}",
            file.version
        )));
    }
    if file.terminals.len() > TERMINAL_ENTRIES_MAX {
        return Err(corrupt(format!(
            "{} terminal entries, over {TERMINAL_ENTRIES_MAX}",
            file.terminals.len()
        )));
    }
    if file.merchants.len() > MERCHANT_ENTRIES_MAX {
        return Err(corrupt(format!(
            "{} merchant entries, over {MERCHANT_ENTRIES_MAX}",
            file.merchants.len()
        )));
    }
    Ok(file)
}

/// Writes the file atomically (temp file 0600, fsync, rename, fsync of the
/// directory), as `keys.json`.
///
/// # Errors
/// I/O.
pub(crate) fn write(path: &Path, file: &DirectoryFile) -> Result<(), DirectoryError> {
    let mut bytes = serde_json::to_vec_pretty(file).map_err(|e| DirectoryError::Corrupt {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    crate::keys::write_atomic(path, &bytes).map_err(|e| DirectoryError::io(path, &e))
}

/// One line of the audit log.
#[derive(Debug, Serialize)]
pub(crate) struct AuditLine<'a> {
    /// When, RFC 3339 UTC.
    pub(crate) at: String,
    /// Who: `--by` (or $USER) for the command line, the client id for
    /// internal frames.
    pub(crate) who: &'a str,
    /// What was done (`terminal.add`, `merchant.disable`, ...).
    pub(crate) what: &'a str,
    /// F41 or F42.
    pub(crate) target: String,
    /// The entry before (null: none).
    pub(crate) before: serde_json::Value,
    /// The entry after (null: none).
    pub(crate) after: serde_json::Value,
}

/// Appends `line` to the audit log (0600) and fsyncs it, before the
/// directory file changes: a change the log does not show never happens.
///
/// # Errors
/// I/O.
pub(crate) fn audit(path: &Path, line: &AuditLine<'_>) -> Result<(), DirectoryError> {
    let mut bytes = serde_json::to_vec(line).map_err(|e| DirectoryError::Corrupt {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    let io = |e: std::io::Error| DirectoryError::io(path, &e);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// `unix_s` as RFC 3339 UTC (`2026-12-06T16:52:17Z`).
pub(crate) fn rfc3339(unix_s: u64) -> String {
    let (year, month, day) = codecs::iso8583::datetime::civil_from_days(unix_s / 86_400);
    let s = unix_s % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_434_550), "2026-11-23T11:49:10Z");
    }

    #[test]
    fn the_file_round_trips_and_bad_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("switch-directory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(DIRECTORY_FILE);
        assert_eq!(
            read(&path).expect("missing is empty"),
            DirectoryFile::empty()
        );
        let mut file = DirectoryFile::empty();
        file.terminals.push(TerminalEntry {
            id: "DEMO0001".into(),
            merchant: "DEMO00000000001".into(),
            name: "till 1".into(),
            state: State::Disabled,
            refunds: Some(false),
            moto: None,
            cancel: None,
        });
        file.merchants.push(MerchantEntry {
            id: "NEWM00000000001".into(),
            index: Some(2),
            auto_capture: Some(AutoCapture::Hours(24)),
            ..MerchantEntry::default()
        });
        write(&path, &file).expect("written");
        assert_eq!(read(&path).expect("read"), file);
        std::fs::write(&path, b"{\"version\": 1, \"terminals\": [").expect("write");
        assert!(matches!(read(&path), Err(DirectoryError::Corrupt { .. })));
        std::fs::write(&path, b"{\"version\": 9}").expect("write");
        let e = read(&path).expect_err("version");
        assert!(e.to_string().contains("version 9"), "{e}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
