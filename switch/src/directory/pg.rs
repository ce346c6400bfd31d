//! The directory overlay in cluster mode (`docs/cluster.md`, Run-time
//! terminals and merchants): one row of PostgreSQL instead of each node's
//! `directory.json`, so a terminal added or a merchant's setting changed
//! through any node (internal frames, `switch terminals`, `switch
//! merchants set`) is the same on every node. The row holds the file's
//! JSON and a version; a change reads it `FOR UPDATE`, so two changes at
//! once apply one after the other, never one over the other, and appends
//! its audit line to `cluster_directory_audit` in the same transaction (a
//! change the audit does not show never happens). Every node reads the
//! version every `super::POLL_INTERVAL` and the row when it moved
//! ([`super::Watch`]).

use anyhow::Context as _;

use super::file::{self, DirectoryFile};
use super::DirectoryError;

/// The advisory lock installing the tables takes.
const INSTALL_LOCK: i64 = 0x5357_4449; // "SWDI"
/// The row's key.
const ROW: i32 = 1;
/// What errors name as the directory's origin.
pub(crate) const ORIGIN: &str = "PostgreSQL cluster_directory";

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS cluster_directory (
    id      INT4 PRIMARY KEY,
    version INT8 NOT NULL,
    body    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cluster_directory_audit (
    n    BIGSERIAL PRIMARY KEY,
    at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    line TEXT NOT NULL
);
";

/// Creates the tables and the empty overlay, idempotent.
///
/// # Errors
/// PostgreSQL's.
pub(crate) fn install(client: &mut postgres::Client) -> anyhow::Result<()> {
    let empty = text(&DirectoryFile::empty())?;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INSTALL_LOCK])?;
    tx.batch_execute(SCHEMA)?;
    tx.execute(
        "INSERT INTO cluster_directory (id, version, body) VALUES ($1, 0, $2)
         ON CONFLICT (id) DO NOTHING",
        &[&ROW, &empty],
    )?;
    tx.commit().context("installing the directory tables")?;
    Ok(())
}

fn text(f: &DirectoryFile) -> Result<String, DirectoryError> {
    serde_json::to_string(f).map_err(|e| DirectoryError::Corrupt {
        path: ORIGIN.into(),
        reason: e.to_string(),
    })
}

fn pg(e: postgres::Error) -> DirectoryError {
    // The server's message, not only "db error".
    let reason = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    DirectoryError::Io {
        path: ORIGIN.into(),
        reason,
    }
}

/// A session on `url`.
///
/// # Errors
/// When it cannot be opened.
pub(crate) fn connect(url: &str) -> Result<postgres::Client, DirectoryError> {
    crate::cluster_commit::connect(url).map_err(|e| DirectoryError::Io {
        path: ORIGIN.into(),
        reason: format!("{e:#}"),
    })
}

/// The overlay's version now.
///
/// # Errors
/// PostgreSQL's.
pub(crate) fn version(client: &mut postgres::Client) -> Result<i64, DirectoryError> {
    client
        .query_one(
            "SELECT version FROM cluster_directory WHERE id = $1",
            &[&ROW],
        )
        .map(|r| r.get(0))
        .map_err(pg)
}

/// The overlay and its version.
///
/// # Errors
/// PostgreSQL's, or an overlay this version does not write.
pub(crate) fn read(client: &mut postgres::Client) -> Result<(i64, DirectoryFile), DirectoryError> {
    let row = client
        .query_one(
            "SELECT version, body FROM cluster_directory WHERE id = $1",
            &[&ROW],
        )
        .map_err(pg)?;
    let body: String = row.get(1);
    Ok((row.get(0), file::parse(&body, ORIGIN)?))
}

/// One change: `change` edits the overlay read under the row's lock and
/// returns its audit line (JSON, `file::AuditLine`) and what the caller
/// wants back; the line and
/// the new overlay (version + 1) commit together, or nothing does.
///
/// # Errors
/// `change`'s, PostgreSQL's, or an overlay this version does not write.
pub(crate) fn change<T>(
    url: &str,
    change: impl FnOnce(&mut DirectoryFile) -> Result<(String, T), DirectoryError>,
) -> Result<T, DirectoryError> {
    let mut client = connect(url)?;
    let mut tx = client.transaction().map_err(pg)?;
    let row = tx
        .query_one(
            "SELECT body FROM cluster_directory WHERE id = $1 FOR UPDATE",
            &[&ROW],
        )
        .map_err(pg)?;
    let body: String = row.get(0);
    let mut f = file::parse(&body, ORIGIN)?;
    let (line, out) = change(&mut f)?;
    tx.execute(
        "INSERT INTO cluster_directory_audit (line) VALUES ($1)",
        &[&line],
    )
    .map_err(pg)?;
    tx.execute(
        "UPDATE cluster_directory SET version = version + 1, body = $2 WHERE id = $1",
        &[&ROW, &text(&f)?],
    )
    .map_err(pg)?;
    tx.commit().map_err(pg)?;
    Ok(out)
}
