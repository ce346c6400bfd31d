//! The PostgreSQL archive's tables: how a database is recognised, the
//! tables and indexes (those of the SQLite file, column for column), the
//! batch upserts, and the session settings that bound every wait.
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
//! meta       key PK → value: application_id, schema_version, watermark
//! ```
//!
//! Unsigned engine values go in the next wider signed type (`u32` in
//! `BIGINT`); keys stored `as i64` (F7, payment ids of targets) are a
//! bijection, so equality lookups hold. The merchant reference is `BYTEA`,
//! not `TEXT`: a text column refuses a NUL byte and depends on the
//! database's encoding, and only equality is asked of it.

use postgres::{Client, Transaction};

/// `meta.application_id`: "SWAR" (switch archive), as the SQLite file's
/// `application_id`, so tables of another program are refused.
pub(super) const APPLICATION_ID: i64 = i32::from_be_bytes(*b"SWAR") as i64;
/// `meta.schema_version`: the tables' version; another one is refused (no
/// migration exists yet).
pub(super) const SCHEMA_VERSION: i64 = 1;
/// The tables a switch archive has, to tell a new database from one
/// holding part of an archive or another program's table of that name.
const TABLES: [&str; 4] = ["payments", "originals", "answers", "meta"];

/// The tables and indexes of [`SCHEMA_VERSION`].
pub(super) const SCHEMA: &str = "
CREATE TABLE payments (
    id BIGINT PRIMARY KEY,
    version BIGINT NOT NULL,
    merchant BIGINT NOT NULL,
    terminal BYTEA NOT NULL,
    status SMALLINT NOT NULL,
    created_ms BIGINT NOT NULL,
    authorized_minor BIGINT NOT NULL,
    captured_minor BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    rrn BYTEA NOT NULL,
    auth_code BYTEA NOT NULL,
    merchant_reference BYTEA,
    record BYTEA NOT NULL
);
CREATE INDEX payments_merchant_id ON payments (merchant, id);
CREATE INDEX payments_rrn ON payments (merchant, rrn, auth_code);
CREATE INDEX payments_reference ON payments (merchant, merchant_reference, id)
    WHERE merchant_reference IS NOT NULL;
CREATE INDEX payments_created ON payments (created_ms);
CREATE INDEX payments_open ON payments (merchant, created_ms) WHERE status = 0;
CREATE TABLE originals (
    merchant BIGINT NOT NULL,
    mti INTEGER NOT NULL,
    stan BIGINT NOT NULL,
    transmission BIGINT NOT NULL,
    version BIGINT NOT NULL,
    payment BIGINT NOT NULL,
    refund SMALLINT,
    PRIMARY KEY (merchant, mti, stan, transmission)
);
CREATE INDEX originals_payment ON originals (payment);
CREATE TABLE answers (
    mti INTEGER NOT NULL,
    terminal BYTEA NOT NULL,
    stan BIGINT NOT NULL,
    transmission BIGINT NOT NULL,
    version BIGINT NOT NULL,
    payment BIGINT NOT NULL,
    code BYTEA NOT NULL,
    rrn BYTEA NOT NULL,
    auth_code BYTEA,
    content_crc BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (mti, terminal, stan, transmission)
);
CREATE INDEX answers_payment ON answers (payment);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('watermark', 0);
";

/// Upsert of a batch's payments, one array per column (one row per
/// payment id: the batch is folded first, since one statement may not
/// update a row twice). A stored version at or above the record's wins.
pub(super) const UPSERT_PAYMENTS: &str = "
INSERT INTO payments (id, version, merchant, terminal, status, created_ms,
    authorized_minor, captured_minor, amount_minor, rrn, auth_code,
    merchant_reference, record)
SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::bytea[],
    $5::int2[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::bytea[],
    $11::bytea[], $12::bytea[], $13::bytea[])
ON CONFLICT (id) DO UPDATE SET
    version = EXCLUDED.version, merchant = EXCLUDED.merchant,
    terminal = EXCLUDED.terminal, status = EXCLUDED.status,
    created_ms = EXCLUDED.created_ms,
    authorized_minor = EXCLUDED.authorized_minor,
    captured_minor = EXCLUDED.captured_minor,
    amount_minor = EXCLUDED.amount_minor, rrn = EXCLUDED.rrn,
    auth_code = EXCLUDED.auth_code,
    merchant_reference = EXCLUDED.merchant_reference, record = EXCLUDED.record
WHERE payments.version < EXCLUDED.version";

/// Upsert of a batch's index entries, versioned like payments.
pub(super) const UPSERT_ORIGINALS: &str = "
INSERT INTO originals (merchant, mti, stan, transmission, version, payment, refund)
SELECT * FROM UNNEST($1::int8[], $2::int4[], $3::int8[], $4::int8[], $5::int8[],
    $6::int8[], $7::int2[])
ON CONFLICT (merchant, mti, stan, transmission) DO UPDATE SET
    version = EXCLUDED.version, payment = EXCLUDED.payment, refund = EXCLUDED.refund
WHERE originals.version < EXCLUDED.version";

/// Upsert of a batch's remembered answers, versioned like payments.
pub(super) const UPSERT_ANSWERS: &str = "
INSERT INTO answers (mti, terminal, stan, transmission, version, payment, code,
    rrn, auth_code, content_crc, at_ms)
SELECT * FROM UNNEST($1::int4[], $2::bytea[], $3::int8[], $4::int8[], $5::int8[],
    $6::int8[], $7::bytea[], $8::bytea[], $9::bytea[], $10::int8[], $11::int8[])
ON CONFLICT (mti, terminal, stan, transmission) DO UPDATE SET
    version = EXCLUDED.version, payment = EXCLUDED.payment, code = EXCLUDED.code,
    rrn = EXCLUDED.rrn, auth_code = EXCLUDED.auth_code,
    content_crc = EXCLUDED.content_crc, at_ms = EXCLUDED.at_ms
WHERE answers.version < EXCLUDED.version";

/// Raises the watermark, never lowers it, and says where it is.
pub(super) const RAISE_WATERMARK: &str = "
UPDATE meta SET value = GREATEST(value, $1::int8) WHERE key = 'watermark'
RETURNING value";

/// The watermark.
pub(super) const WATERMARK: &str = "SELECT value FROM meta WHERE key = 'watermark'";

/// The highest payment id (0 for none): the primary key's last entry.
pub(super) const PAYMENT_ID_MAX: &str = "SELECT COALESCE(MAX(id), 0)::int8 FROM payments";

/// Up to `$2` payments created before `$1`, with their index entries and
/// answers, in one statement (the CTEs all run, in one snapshot).
pub(super) const DELETE_CREATED_BEFORE: &str = "
WITH gone AS (
    SELECT id FROM payments WHERE created_ms < $1::int8
    ORDER BY created_ms LIMIT $2::int8 FOR UPDATE
), originals_gone AS (
    DELETE FROM originals WHERE payment IN (SELECT id FROM gone)
), answers_gone AS (
    DELETE FROM answers WHERE payment IN (SELECT id FROM gone)
)
DELETE FROM payments WHERE id IN (SELECT id FROM gone)";

/// How long one statement may run before the server cancels it, in ms:
/// a batch of `BATCH_RECORDS_MAX` takes tens of ms, a lookup one, so this
/// only fires on a lock held by someone else or a sick server; the call
/// then fails instead of stalling the drainer.
pub(super) const STATEMENT_TIMEOUT_MS: u64 = 10_000;

/// How long a session may sit inside a transaction between two
/// statements before the server ends it, in ms. Ours send their
/// statements back to back, so this fires only on a client frozen
/// mid-transaction (a paused process or VM), whose locks would otherwise
/// stay held: in cluster mode, the fence rows of its shards and the
/// archive rows a new owner writes at its takeover.
pub const IDLE_IN_TRANSACTION_MS: u64 = 3_000;

/// Per-session settings: bounded waits, and `synchronous_commit = on`
/// (a commit is flushed to the server's WAL before it returns, whatever
/// the database or role default says: a payment leaves memory only once
/// its archive write is durable).
pub(super) fn session_settings() -> String {
    format!(
        "SET statement_timeout = {STATEMENT_TIMEOUT_MS}; \
         SET lock_timeout = {STATEMENT_TIMEOUT_MS}; \
         SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}; \
         SET synchronous_commit = on;"
    )
}

/// Whether a commit here survives a crash of the server's machine: the
/// settings read back (a server with `fsync = off` loses commits on a
/// power cut, and is refused).
///
/// # Errors
/// When the settings cannot be read.
pub(super) fn durable(client: &mut Client) -> Result<Result<(), String>, postgres::Error> {
    for (name, want) in [("fsync", "on"), ("synchronous_commit", "on")] {
        let got: String = client.query_one(&format!("SHOW {name}"), &[])?.try_get(0)?;
        if got != want {
            return Ok(Err(format!(
                "server setting {name} is {got}, expected {want}"
            )));
        }
    }
    Ok(Ok(()))
}

/// What a database holds.
pub(super) enum Kind {
    /// None of the archive's tables: a new archive, to be laid out.
    New,
    /// An archive of this schema.
    Ours,
    /// Something else, and why.
    Other(String),
}

/// Reads what the current schema holds of the archive's tables, and the
/// `meta` rows that say what they are.
///
/// # Errors
/// When the catalog or `meta` cannot be read (a `meta` table of another
/// shape is [`Kind::Other`], not an error).
pub(super) fn kind(tx: &mut Transaction<'_>) -> Result<Kind, postgres::Error> {
    let found: Vec<String> = tx
        .query(
            "SELECT tablename::text FROM pg_tables
             WHERE schemaname = current_schema() AND tablename = ANY($1::text[])
             ORDER BY tablename",
            &[&&TABLES[..]],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if found.is_empty() {
        return Ok(Kind::New);
    }
    if !found.iter().any(|t| t == "meta") {
        return Ok(Kind::Other(format!(
            "tables {} but no meta (not a switch archive)",
            found.join(", ")
        )));
    }
    let sql = "SELECT (SELECT value FROM meta WHERE key = 'application_id'),
                      (SELECT value FROM meta WHERE key = 'schema_version')";
    // A `meta` of another program may lack these columns: read it inside
    // a savepoint so that refusal is an answer, not a failed transaction.
    let mut probe = tx.transaction()?;
    let row = match probe.query_one(sql, &[]) {
        Ok(row) => row,
        Err(e) if e.code().is_some_and(|c| c.code().starts_with("42")) => {
            return Ok(Kind::Other(format!(
                "table meta is not a switch archive's: {}",
                super::describe(&e)
            )));
        }
        Err(e) => return Err(e),
    };
    let app: Option<i64> = row.try_get(0)?;
    let version: Option<i64> = row.try_get(1)?;
    probe.commit()?;
    Ok(match (app, version) {
        (Some(APPLICATION_ID), Some(SCHEMA_VERSION)) => Kind::Ours,
        (Some(APPLICATION_ID), v) => Kind::Other(format!(
            "schema version {}, expected {SCHEMA_VERSION}",
            v.map_or_else(|| "missing".to_owned(), |v| v.to_string())
        )),
        (a, _) => Kind::Other(format!(
            "meta application_id {}, expected {APPLICATION_ID:#x} (not a switch archive)",
            a.map_or_else(|| "missing".to_owned(), |a| format!("{a:#x}"))
        )),
    })
}

/// Recognises the database, laying out a new archive, in one transaction
/// that holds an advisory lock, so two switches starting on one new
/// database do not both create it.
///
/// # Errors
/// When the server fails; `Ok(Err(reason))` when the database holds
/// something that is not an archive of this version.
pub(super) fn prepare(client: &mut Client) -> Result<Result<(), String>, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1::int8)", &[&APPLICATION_ID])?;
    match kind(&mut tx)? {
        Kind::Ours => {}
        Kind::Other(reason) => return Ok(Err(reason)),
        Kind::New => {
            tx.batch_execute(SCHEMA)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('application_id', $1::int8),
                     ('schema_version', $2::int8)",
                &[&APPLICATION_ID, &SCHEMA_VERSION],
            )?;
        }
    }
    tx.commit()?;
    Ok(Ok(()))
}
