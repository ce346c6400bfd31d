//! The SQLite archive's file: how it is recognised, its tables, and the
//! settings that make a commit durable.
//!
//! ```text
//! payments   id PK | version (journal seq) | merchant | terminal | status
//!            | created_ms | authorized_minor | captured_minor | amount_minor
//!            | rrn | auth_code | merchant_reference | record (engine bytes)
//!   payments_merchant_id (merchant, id)          list pages, newest first
//!   payments_rrn (merchant, rrn, auth_code)      follow-ups by F37 + F38
//!   payments_reference (merchant, ref, id)       list by merchant reference
//!   payments_created (created_ms)                retention
//! originals  (merchant, mti, stan, transmission) PK → payment, refund | version
//!   originals_payment (payment)                  retention
//! answers    (mti, terminal, stan, transmission) PK → code, rrn, auth_code,
//!            content_crc, at_ms, payment | version
//!   answers_payment (payment)                    retention
//! meta       key PK → value (the watermark)
//! ```
//!
//! The payment's columns are copies of what its record holds, for the
//! lookups' indexes; the record is the truth and is what a lookup returns.

use rusqlite::Connection;

/// `PRAGMA application_id`: "SWAR" (switch archive), so a file that is
/// SQLite but not ours is refused instead of written into.
pub(super) const APPLICATION_ID: i32 = i32::from_be_bytes(*b"SWAR");
/// `PRAGMA user_version`: the schema's version; a file of another one is
/// refused (no migration exists yet).
pub(super) const SCHEMA_VERSION: i32 = 1;
/// How long a statement waits for another connection's write lock (an
/// operator's `sqlite3` shell, a backup) before failing, in ms.
pub(super) const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Prepared statements kept per connection: the fixed ones plus the list
/// query's variants (one per combination of filters in use).
pub(super) const STATEMENTS_CACHED_MAX: usize = 64;

/// Page cache per connection, KiB (SQLite's default is 2 MiB).
const CACHE_KIB: i64 = 128 * 1024;

/// WAL pages (4 KiB) after which a commit checkpoints into the file (64 MiB).
const CHECKPOINT_PAGES: i64 = 16_384;

/// The tables and indexes of [`SCHEMA_VERSION`].
pub(super) const SCHEMA: &str = "
CREATE TABLE payments (
    id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL,
    merchant INTEGER NOT NULL,
    terminal BLOB NOT NULL,
    status INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    authorized_minor INTEGER NOT NULL,
    captured_minor INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    rrn BLOB NOT NULL,
    auth_code BLOB NOT NULL,
    merchant_reference TEXT,
    record BLOB NOT NULL
);
CREATE INDEX payments_merchant_id ON payments (merchant, id);
CREATE INDEX payments_rrn ON payments (merchant, rrn, auth_code);
CREATE INDEX payments_reference ON payments (merchant, merchant_reference, id)
    WHERE merchant_reference IS NOT NULL;
CREATE INDEX payments_created ON payments (created_ms);
CREATE INDEX payments_open ON payments (merchant, created_ms) WHERE status = 0;
CREATE TABLE originals (
    merchant INTEGER NOT NULL,
    mti INTEGER NOT NULL,
    stan INTEGER NOT NULL,
    transmission INTEGER NOT NULL,
    version INTEGER NOT NULL,
    payment INTEGER NOT NULL,
    refund INTEGER,
    PRIMARY KEY (merchant, mti, stan, transmission)
) WITHOUT ROWID;
CREATE INDEX originals_payment ON originals (payment);
CREATE TABLE answers (
    mti INTEGER NOT NULL,
    terminal BLOB NOT NULL,
    stan INTEGER NOT NULL,
    transmission INTEGER NOT NULL,
    version INTEGER NOT NULL,
    payment INTEGER NOT NULL,
    code BLOB NOT NULL,
    rrn BLOB NOT NULL,
    auth_code BLOB,
    content_crc INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (mti, terminal, stan, transmission)
) WITHOUT ROWID;
CREATE INDEX answers_payment ON answers (payment);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('watermark', 0);
";

/// Upsert of a payment: a stored version at or above the record's wins.
pub(super) const UPSERT_PAYMENT: &str = "
INSERT INTO payments (id, version, merchant, terminal, status, created_ms,
    authorized_minor, captured_minor, amount_minor, rrn, auth_code,
    merchant_reference, record)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (id) DO UPDATE SET
    version = excluded.version, merchant = excluded.merchant,
    terminal = excluded.terminal, status = excluded.status,
    created_ms = excluded.created_ms,
    authorized_minor = excluded.authorized_minor,
    captured_minor = excluded.captured_minor,
    amount_minor = excluded.amount_minor, rrn = excluded.rrn,
    auth_code = excluded.auth_code,
    merchant_reference = excluded.merchant_reference, record = excluded.record
WHERE excluded.version > payments.version";

/// Upsert of an index entry, versioned like payments.
pub(super) const UPSERT_ORIGINAL: &str = "
INSERT INTO originals (merchant, mti, stan, transmission, version, payment, refund)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (merchant, mti, stan, transmission) DO UPDATE SET
    version = excluded.version, payment = excluded.payment, refund = excluded.refund
WHERE excluded.version > originals.version";

/// Upsert of a remembered answer, versioned like payments.
pub(super) const UPSERT_ANSWER: &str = "
INSERT INTO answers (mti, terminal, stan, transmission, version, payment, code,
    rrn, auth_code, content_crc, at_ms)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
ON CONFLICT (mti, terminal, stan, transmission) DO UPDATE SET
    version = excluded.version, payment = excluded.payment, code = excluded.code,
    rrn = excluded.rrn, auth_code = excluded.auth_code,
    content_crc = excluded.content_crc, at_ms = excluded.at_ms
WHERE excluded.version > answers.version";

/// Raises the watermark, never lowers it.
pub(super) const RAISE_WATERMARK: &str = "
UPDATE meta SET value = max(value, ?1) WHERE key = 'watermark'";

/// What a file says it is.
pub(super) enum Kind {
    /// Empty: a new archive, to be laid out.
    New,
    /// An archive of this schema.
    Ours,
    /// Something else, and why.
    Other(String),
}

/// Reads the header fields that say what the file is. A file that is not
/// SQLite fails here with "file is not a database".
pub(super) fn kind(conn: &Connection) -> rusqlite::Result<Kind> {
    let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    Ok(match (app, version, objects) {
        (0, 0, 0) => Kind::New,
        (APPLICATION_ID, SCHEMA_VERSION, _) => Kind::Ours,
        (APPLICATION_ID, v, _) => {
            Kind::Other(format!("schema version {v}, expected {SCHEMA_VERSION}"))
        }
        (a, _, _) => Kind::Other(format!(
            "application_id {a:#x}, expected {APPLICATION_ID:#x} (not a switch archive)"
        )),
    })
}

/// Lays out a new archive in one transaction.
pub(super) fn create(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// WAL (readers never block the drainer's writes) and `synchronous=FULL`
/// (a commit is on disk when it returns: a payment leaves memory only
/// after its archive write is committed, so the commit must survive a
/// power cut, which WAL with NORMAL does not promise). Read back, since
/// SQLite answers a mode it cannot set with the mode it kept.
pub(super) fn durable(conn: &Connection) -> rusqlite::Result<Result<(), String>> {
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED_MAX);
    // Index pages stay in SQLite's own cache instead of being read back
    // from the file (the kernel's copy) on every batch: past a gigabyte of
    // archive, SQLite's default 2 MiB made the drainer 3x slower. Pages are
    // allocated as used, so an idle connection costs nothing.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    // A checkpoint copies the WAL's pages into the file and fsyncs it; at
    // SQLite's default (every 1,000 pages) that was once per batch and a
    // quarter of the drainer's time. Less often, a page the next batches
    // change again is written to the file once.
    conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Ok(Err(format!("journal_mode is {mode}, expected wal")));
    }
    // 2 is FULL.
    if sync != 2 {
        return Ok(Err(format!("synchronous is {sync}, expected 2 (FULL)")));
    }
    Ok(Ok(()))
}
