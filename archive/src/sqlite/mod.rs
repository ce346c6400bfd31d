//! The embedded archive: one SQLite file in the data directory, bundled
//! SQLite (nothing to install), WAL, `synchronous=FULL`, one transaction
//! per batch. The schema and why each index exists: `schema.rs`.

mod list;
mod schema;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use engine::lifecycle::status_record_code;
use engine::{Answer, Code, ListFilter, MessageKey, OriginalKey, Payment, Target};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction};

use crate::records::{self, clamped, Row};
use crate::store::{Page, DELETE_PAYMENTS_MAX};
use crate::{Archive, ArchiveError};

/// The archive's file name inside the directory the caller gives.
pub const FILE_NAME: &str = "archive.sqlite";
/// The file's mode when this creates it: payments carry card tokens and
/// masked PANs, readable by the switch's user only.
const FILE_MODE: u32 = 0o600;

/// The SQLite archive. Open it with [`SqliteArchive::open`].
#[derive(Debug)]
pub struct SqliteArchive {
    /// The one connection: the trait is `Send`, not `Sync`, so one
    /// connection serves every call and its statement cache stays warm.
    conn: Connection,
    /// The file, named in every error.
    path: PathBuf,
}

impl SqliteArchive {
    /// Opens `dir/archive.sqlite`, creating it (mode 0600) and its tables
    /// when it does not exist. `dir` must exist.
    ///
    /// # Errors
    /// [`ArchiveError::Io`] when the file cannot be created or opened,
    /// [`ArchiveError::Corrupt`] when it is not SQLite, not a switch
    /// archive, of another schema version, or cannot be made durable
    /// (WAL, `synchronous=FULL`).
    pub fn open(dir: &Path) -> Result<Self, ArchiveError> {
        let path = dir.join(FILE_NAME);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|source| ArchiveError::Io {
                location: path.display().to_string(),
                source,
            })?;
        let conn = Connection::open(&path).map_err(|e| store_error(&path, e))?;
        let mut archive = SqliteArchive { conn, path };
        archive.prepare()?;
        Ok(archive)
    }

    /// Checks what the file is, makes it durable, lays it out if new.
    fn prepare(&mut self) -> Result<(), ArchiveError> {
        let kind = schema::kind(&self.conn).map_err(|e| self.fail(e))?;
        if let schema::Kind::Other(reason) = kind {
            return Err(self.corrupt(reason));
        }
        if let Err(reason) = schema::durable(&self.conn).map_err(|e| self.fail(e))? {
            return Err(self.corrupt(reason));
        }
        if let schema::Kind::New = kind {
            schema::create(&mut self.conn).map_err(|e| store_error(&self.path, e))?;
        }
        Ok(())
    }

    fn fail(&self, e: rusqlite::Error) -> ArchiveError {
        store_error(&self.path, e)
    }

    fn corrupt(&self, reason: String) -> ArchiveError {
        ArchiveError::Corrupt {
            location: self.path.display().to_string(),
            reason,
        }
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    /// The payment in a stored record, checked against its id.
    fn image(&self, id: u64, bytes: &[u8]) -> Result<Payment, ArchiveError> {
        records::image(&self.location(), id, bytes)
    }
}

/// Sorts an SQLite error into the archive's kinds, naming the file.
fn store_error(path: &Path, e: rusqlite::Error) -> ArchiveError {
    let location = path.display().to_string();
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    match code {
        Some(ErrorCode::DiskFull) => ArchiveError::Full { location },
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => ArchiveError::Corrupt {
            location,
            reason: e.to_string(),
        },
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly,
        ) => ArchiveError::Io {
            location,
            source: std::io::Error::other(e.to_string()),
        },
        _ => ArchiveError::Store {
            location,
            reason: e.to_string(),
        },
    }
}

/// Writes one record's payment, index entry and answer.
fn upsert(tx: &Transaction<'_>, row: &Row<'_>) -> rusqlite::Result<()> {
    let p = &row.rec.payment;
    let reference = p.extras.as_ref().map(|e| e.merchant_reference.as_str());
    tx.prepare_cached(schema::UPSERT_PAYMENT)?.execute(params![
        p.id as i64,
        row.version,
        p.merchant,
        &p.terminal[..],
        status_record_code(p.status),
        clamped(p.created_ms),
        clamped(p.authorized_minor),
        clamped(p.captured_minor),
        clamped(p.authorized_minor.max(p.captured_minor)),
        &p.rrn[..],
        &p.auth_code[..],
        reference,
        row.payload,
    ])?;
    if let Some((k, t)) = &row.rec.index {
        tx.prepare_cached(schema::UPSERT_ORIGINAL)?
            .execute(params![
                k.merchant,
                k.mti,
                k.stan,
                k.transmission as i64,
                row.version,
                t.payment as i64,
                t.refund,
            ])?;
    }
    if let Some((k, a)) = &row.rec.answer {
        tx.prepare_cached(schema::UPSERT_ANSWER)?.execute(params![
            k.mti,
            &k.terminal[..],
            k.stan,
            k.transmission as i64,
            row.version,
            p.id as i64,
            &a.code.0[..],
            &a.rrn[..],
            a.auth_code.as_ref().map(|c| &c[..]),
            a.content_crc,
            clamped(a.at_ms),
        ])?;
    }
    Ok(())
}

/// A blob column of a fixed size; another size is damage.
fn fixed<const N: usize>(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<[u8; N]> {
    let v: Vec<u8> = row.get(i)?;
    v.try_into().map_err(|v: Vec<u8>| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            format!("{} bytes, expected {N}", v.len()).into(),
        )
    })
}

impl Archive for SqliteArchive {
    fn apply(&mut self, records: &[(u64, &[u8])]) -> Result<u64, ArchiveError> {
        let rows = records::decode_batch(&self.location(), records)?;
        let top = rows.iter().map(|r| r.version).max().unwrap_or(0);
        let path = self.path.clone();
        let fail = |e| store_error(&path, e);
        let tx = self.conn.transaction().map_err(fail)?;
        for row in &rows {
            upsert(&tx, row).map_err(fail)?;
        }
        tx.prepare_cached(schema::RAISE_WATERMARK)
            .and_then(|mut s| s.execute([top]))
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
        self.watermark()
    }

    fn watermark(&self) -> Result<u64, ArchiveError> {
        let v: i64 = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'watermark'")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| self.fail(e))?;
        u64::try_from(v).map_err(|_| self.corrupt(format!("watermark {v} is negative")))
    }

    fn payment_id_max(&self) -> Result<u64, ArchiveError> {
        let v: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM payments")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(|e| self.fail(e))?;
        u64::try_from(v).map_err(|_| self.corrupt(format!("payment id {v} is negative")))
    }

    fn payment(&self, id: u64) -> Result<Option<Payment>, ArchiveError> {
        let Ok(key) = i64::try_from(id) else {
            return Ok(None);
        };
        let bytes: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT record FROM payments WHERE id = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(|e| self.fail(e))?;
        bytes.map(|b| self.image(id, &b)).transpose()
    }

    fn target(&self, key: &OriginalKey) -> Result<Option<Target>, ArchiveError> {
        let sql = "SELECT payment, refund FROM originals
            WHERE merchant = ?1 AND mti = ?2 AND stan = ?3 AND transmission = ?4";
        let found: Option<(i64, Option<u8>)> = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                let k = params![key.merchant, key.mti, key.stan, key.transmission as i64];
                s.query_row(k, |r| Ok((r.get(0)?, r.get(1)?))).optional()
            })
            .map_err(|e| self.fail(e))?;
        Ok(found.map(|(payment, refund)| Target {
            payment: payment as u64,
            refund,
        }))
    }

    fn payment_by_rrn(
        &self,
        merchant: u32,
        rrn: &[u8; 12],
        auth_code: &[u8; 6],
    ) -> Result<Option<Payment>, ArchiveError> {
        let sql = "SELECT id, record FROM payments
            WHERE merchant = ?1 AND rrn = ?2 AND auth_code = ?3 ORDER BY id DESC LIMIT 1";
        let found: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_row(params![merchant, &rrn[..], &auth_code[..]], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .map_err(|e| self.fail(e))?;
        found.map(|(id, b)| self.image(id as u64, &b)).transpose()
    }

    fn answer(&self, key: &MessageKey) -> Result<Option<Answer>, ArchiveError> {
        let sql = "SELECT code, rrn, auth_code, content_crc, at_ms FROM answers
            WHERE mti = ?1 AND terminal = ?2 AND stan = ?3 AND transmission = ?4";
        let k = params![
            key.mti,
            &key.terminal[..],
            key.stan,
            key.transmission as i64
        ];
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_row(k, |r| {
                    let auth: Option<Vec<u8>> = r.get(2)?;
                    Ok(Answer {
                        code: Code(fixed(r, 0)?),
                        rrn: fixed(r, 1)?,
                        auth_code: match auth {
                            None => None,
                            Some(_) => Some(fixed(r, 2)?),
                        },
                        content_crc: r.get(3)?,
                        seq: 0,
                        at_ms: r.get::<_, i64>(4)? as u64,
                    })
                })
                .optional()
            })
            .map_err(|e| self.fail(e))
    }

    fn list(
        &self,
        scope: &[u32],
        filter: &ListFilter<'_>,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Page, ArchiveError> {
        if !filter.needs_image() {
            return list::page(self, scope, filter, before_id, limit);
        }
        crate::store::filtered_page(filter, before_id, limit, |before, n| {
            list::page(self, scope, filter, before, n)
        })
    }

    fn open_holds(
        &self,
        merchant: u32,
        created_before_ms: u64,
        limit: usize,
    ) -> Result<Vec<Payment>, ArchiveError> {
        crate::store::check_open_holds_limit(&self.location(), limit)?;
        // `status = 0` (uncaptured) matches the partial index `payments_open`.
        let sql = "SELECT id, record FROM payments
            WHERE merchant = ?1 AND status = 0 AND created_ms < ?2
            ORDER BY created_ms LIMIT ?3";
        let rows: Vec<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                let rows = s.query_map(
                    params![merchant, created_before_ms as i64, limit as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                rows.collect()
            })
            .map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|(id, b)| self.image(*id as u64, b))
            .collect()
    }

    fn delete_created_before(&mut self, cutoff_ms: u64) -> Result<usize, ArchiveError> {
        let path = self.path.clone();
        let fail = |e| store_error(&path, e);
        let tx = self.conn.transaction().map_err(fail)?;
        let ids: Vec<i64> = {
            let mut s = tx
                .prepare_cached(
                    "SELECT id FROM payments WHERE created_ms < ?1 ORDER BY created_ms LIMIT ?2",
                )
                .map_err(fail)?;
            let rows = s
                .query_map(
                    params![clamped(cutoff_ms), DELETE_PAYMENTS_MAX as i64],
                    |r| r.get(0),
                )
                .map_err(fail)?;
            rows.collect::<rusqlite::Result<_>>().map_err(fail)?
        };
        for id in &ids {
            for sql in [
                "DELETE FROM originals WHERE payment = ?1",
                "DELETE FROM answers WHERE payment = ?1",
                "DELETE FROM payments WHERE id = ?1",
            ] {
                tx.prepare_cached(sql)
                    .and_then(|mut s| s.execute([id]))
                    .map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)?;
        Ok(ids.len())
    }
}
