//! The PostgreSQL archive: the same tables as the SQLite file on a
//! server (`schema.rs`), a batch applied as one `INSERT … UNNEST` per
//! table in one transaction (`batch.rs`), list pages as one indexed walk
//! per merchant (`list.rs`), the URL shown in errors without its
//! password (`redact.rs`), and TLS from the URL's `sslrootcert`
//! (`tls.rs`).
//!
//! Reconnection is transparent, once per call: a call that finds the
//! connection broken (the server restarted, the network dropped it)
//! connects again and runs once more. That is safe because every write
//! is a versioned, idempotent upsert: a batch whose commit was sent but
//! not acknowledged is applied again to no effect. When the server is
//! still away the call fails with [`ArchiveError::Connect`], and the next
//! call tries again.

mod batch;
mod list;
pub(crate) mod redact;
pub(crate) mod schema;
mod tls;

use std::cell::RefCell;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use engine::{Answer, Code, ListFilter, MessageKey, OriginalKey, Payment, Target};
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls, Statement};

use crate::records::{self, clamped};
use crate::store::{Page, DELETE_PAYMENTS_MAX};
use crate::{Archive, ArchiveError};

/// How long to wait for the server to accept a connection, in ms, unless
/// the URL says `connect_timeout`: an unreachable server is an error
/// within this, not a hang of the drainer.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long sent data may stay unacknowledged before the connection is
/// given up, in ms (`TCP_USER_TIMEOUT`): a server that vanished mid-call
/// is an error, not a wait for the kernel's retransmissions (minutes).
const TCP_USER_TIMEOUT_MS: u64 = 10_000;
/// Idle time before TCP keepalive probes, in ms: a connection waiting
/// for an answer learns that the server's machine is gone within this
/// plus [`KEEPALIVE_PROBES_MAX`] probes [`KEEPALIVE_INTERVAL_MS`] apart.
const KEEPALIVE_IDLE_MS: u64 = 10_000;
/// Time between keepalive probes, in ms.
const KEEPALIVE_INTERVAL_MS: u64 = 5_000;
/// Keepalive probes unanswered before the connection is given up.
const KEEPALIVE_PROBES_MAX: u32 = 3;
/// Attempts per call: the call, and once more on a fresh connection when
/// the first found it broken.
const ATTEMPTS_MAX: usize = 2;
/// What the archive's sessions call themselves in `pg_stat_activity`,
/// unless the URL names one.
const APPLICATION_NAME: &str = "switch-archive";

/// The PostgreSQL archive. Open it with [`PgArchive::connect`].
pub struct PgArchive {
    /// The parsed URL with the timeouts added, for every reconnection.
    config: PgSession,
    /// The URL without its password, named in every error.
    location: String,
    /// The connection and its statements; `None` after a broken
    /// connection until the next call connects again. A `RefCell`: the
    /// trait's lookups take `&self`, and the archive is `Send`, not
    /// `Sync`, so one thread uses it at a time.
    session: RefCell<Option<Session>>,
}

impl std::fmt::Debug for PgArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not `config`: it holds the password.
        f.debug_struct("PgArchive")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// One connection and the statements prepared on it (a statement belongs
/// to its connection, so a reconnection prepares them again).
struct Session {
    /// The connection.
    client: Client,
    /// The fixed statements.
    statements: Statements,
    /// List queries by text, one per combination of filters in use; at
    /// most [`list::STATEMENTS_CACHED_MAX`].
    lists: HashMap<String, Statement>,
}

/// The statements every call uses, prepared once per connection.
struct Statements {
    /// [`schema::UPSERT_PAYMENTS`].
    upsert_payments: Statement,
    /// [`schema::UPSERT_ORIGINALS`].
    upsert_originals: Statement,
    /// [`schema::UPSERT_ANSWERS`].
    upsert_answers: Statement,
    /// [`schema::RAISE_WATERMARK`].
    raise_watermark: Statement,
    /// [`schema::WATERMARK`].
    watermark: Statement,
    /// [`schema::PAYMENT_ID_MAX`].
    payment_id_max: Statement,
    /// A payment's image by id.
    payment: Statement,
    /// An index entry by F90 key.
    target: Statement,
    /// The newest payment by merchant, F37 and F38.
    by_rrn: Statement,
    /// An answer by message key.
    answer: Statement,
    /// [`schema::DELETE_CREATED_BEFORE`].
    delete: Statement,
}

impl Statements {
    /// Prepares every statement on `client`.
    fn prepare(client: &mut Client) -> Result<Self, postgres::Error> {
        Ok(Statements {
            upsert_payments: client.prepare(schema::UPSERT_PAYMENTS)?,
            upsert_originals: client.prepare(schema::UPSERT_ORIGINALS)?,
            upsert_answers: client.prepare(schema::UPSERT_ANSWERS)?,
            raise_watermark: client.prepare(schema::RAISE_WATERMARK)?,
            watermark: client.prepare(schema::WATERMARK)?,
            payment_id_max: client.prepare(schema::PAYMENT_ID_MAX)?,
            payment: client.prepare("SELECT record FROM payments WHERE id = $1::int8")?,
            target: client.prepare(
                "SELECT payment, refund FROM originals WHERE merchant = $1::int8
                 AND mti = $2::int4 AND stan = $3::int8 AND transmission = $4::int8",
            )?,
            by_rrn: client.prepare(
                "SELECT id, record FROM payments WHERE merchant = $1::int8
                 AND rrn = $2::bytea AND auth_code = $3::bytea ORDER BY id DESC LIMIT 1",
            )?,
            answer: client.prepare(
                "SELECT code, rrn, auth_code, content_crc, at_ms FROM answers
                 WHERE mti = $1::int4 AND terminal = $2::bytea AND stan = $3::int8
                 AND transmission = $4::int8",
            )?,
            delete: client.prepare(schema::DELETE_CREATED_BEFORE)?,
        })
    }
}

impl PgArchive {
    /// Connects to the server at `url` (`postgresql://user:password@host:
    /// port/database`, or libpq's `key=value` form), checks that commits
    /// are durable there, and creates the archive's tables in the
    /// database's current schema when none exist.
    ///
    /// # Errors
    /// [`ArchiveError::Connect`] when the URL does not parse, or the
    /// server is unreachable within [`CONNECT_TIMEOUT_MS`] or refuses the
    /// user or the database; [`ArchiveError::Corrupt`] when the database
    /// holds tables of that name that are not an archive of this schema
    /// version; [`ArchiveError::Store`] when the server runs with
    /// `fsync = off`, or fails otherwise. Each names the URL without its
    /// password.
    pub fn connect(url: &str) -> Result<Self, ArchiveError> {
        let location = redact::redact(url);
        let config = session(url)?;
        let mut archive = PgArchive {
            config,
            location,
            session: RefCell::new(None),
        };
        let session = archive.open()?;
        *archive.session.get_mut() = Some(session);
        Ok(archive)
    }

    /// A new connection, its settings and statements, with the tables
    /// recognised (and laid out if new).
    fn open(&self) -> Result<Session, ArchiveError> {
        let mut client = self.config.connect().map_err(|e| self.connect_error(e))?;
        client
            .batch_execute(&schema::session_settings())
            .map_err(|e| self.error(e))?;
        if let Err(reason) = schema::durable(&mut client).map_err(|e| self.error(e))? {
            return Err(ArchiveError::Store {
                location: self.location.clone(),
                reason,
            });
        }
        if let Err(reason) = schema::prepare(&mut client).map_err(|e| self.error(e))? {
            return Err(self.corrupt(reason));
        }
        let statements = Statements::prepare(&mut client).map_err(|e| self.error(e))?;
        Ok(Session {
            client,
            statements,
            lists: HashMap::new(),
        })
    }

    /// Runs `op` on the session, connecting first when there is none or
    /// it is closed, and once more on a fresh connection when `op` finds
    /// the connection broken (see the module's comment for why that is
    /// safe).
    fn with_session<T>(
        &self,
        mut op: impl FnMut(&mut Session) -> Result<T, postgres::Error>,
    ) -> Result<T, ArchiveError> {
        let mut slot = self.session.try_borrow_mut().map_err(|_| self.in_use())?;
        let mut last = None;
        for _ in 0..ATTEMPTS_MAX {
            if slot.as_ref().is_some_and(|s| s.client.is_closed()) {
                *slot = None;
            }
            let session = match slot.as_mut() {
                Some(session) => session,
                None => slot.insert(self.open()?),
            };
            match op(session) {
                Ok(v) => return Ok(v),
                Err(e) if broken(&e) => {
                    *slot = None;
                    last = Some(e);
                }
                Err(e) => return Err(self.error(e)),
            }
        }
        Err(match last {
            Some(e) => self.error(e),
            None => self.in_use(),
        })
    }

    /// Sorts a driver error into the archive's kinds, naming the URL.
    fn error(&self, e: postgres::Error) -> ArchiveError {
        let location = self.location.clone();
        let reason = redact::scrub(describe(&e), self.config.config.get_password());
        let code = e.code();
        if broken(&e)
            || code
                .is_some_and(|c| *c == SqlState::INVALID_CATALOG_NAME || c.code().starts_with("28"))
        {
            ArchiveError::Connect { location, reason }
        } else if code == Some(&SqlState::DISK_FULL) {
            ArchiveError::Full { location }
        } else if code == Some(&SqlState::DATA_CORRUPTED)
            || code == Some(&SqlState::INDEX_CORRUPTED)
        {
            ArchiveError::Corrupt { location, reason }
        } else {
            ArchiveError::Store { location, reason }
        }
    }

    /// A connection that could not be made, whatever the driver says why.
    fn connect_error(&self, e: postgres::Error) -> ArchiveError {
        ArchiveError::Connect {
            location: self.location.clone(),
            reason: redact::scrub(describe(&e), self.config.config.get_password()),
        }
    }

    /// The database holds what is not an archive of this version.
    fn corrupt(&self, reason: String) -> ArchiveError {
        ArchiveError::Corrupt {
            location: self.location.clone(),
            reason,
        }
    }

    /// A call while another is running on this archive: impossible from
    /// one thread, since no call calls back into the archive; an error
    /// rather than a panic all the same.
    fn in_use(&self) -> ArchiveError {
        ArchiveError::Store {
            location: self.location.clone(),
            reason: "archive called again while a call on it was running".to_owned(),
        }
    }

    /// The payment in a stored record, checked against its id.
    fn image(&self, id: u64, bytes: &[u8]) -> Result<Payment, ArchiveError> {
        records::image(&self.location, id, bytes)
    }
}

/// A PostgreSQL session's settings: the URL parsed, with the archive's
/// bounds, and TLS when the URL names `sslrootcert` (`tls.rs`).
#[derive(Clone, Debug)]
pub struct PgSession {
    /// The driver's settings (a caller may add its own, such as a notice
    /// callback, before [`PgSession::connect`]).
    pub config: Config,
    /// TLS, when asked for.
    tls: Option<tls::PgTls>,
}

impl PgSession {
    /// A new connection, over TLS when the URL asked for it: the one
    /// place that picks the transport.
    ///
    /// # Errors
    /// The driver's: unreachable, refused, a failed handshake.
    pub fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            None => self.config.connect(NoTls),
            Some(tls) => self.config.connect(tls.clone()),
        }
    }

    /// Whether its connections are TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// `url` parsed (a URL or libpq's `key=value` form; several hosts with
/// `target_session_attrs=read-write` follow a failover), with the
/// archive's bounds on every wait the URL does not set itself: connecting,
/// unacknowledged writes (`TCP_USER_TIMEOUT`) and keepalives, so a server
/// that vanished without closing its connections is found in seconds; and
/// TLS when it names `sslrootcert`, the server's certificate verified
/// against that CA (`tls.rs`).
///
/// # Errors
/// [`ArchiveError::Connect`] when the URL does not parse, its TLS
/// parameters are refused, or the CA file cannot be read, naming the URL
/// without its password.
pub fn session(url: &str) -> Result<PgSession, ArchiveError> {
    let refused = |reason: String| ArchiveError::Connect {
        location: redact::redact(url),
        reason,
    };
    let prepared = tls::prepare(url).map_err(&refused)?;
    let mut config = Config::from_str(&prepared.url).map_err(|e| refused(describe(&e)))?;
    bound_waits(&mut config);
    let tls = match &prepared.root {
        None => None,
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| refused(format!("sslrootcert {path}: {e}")))?;
            let tls = tls::PgTls::from_pem(&pem)
                .map_err(|e| refused(format!("sslrootcert {path}: {e}")))?;
            Some(tls)
        }
    };
    Ok(PgSession { config, tls })
}

/// Adds the bounds on every wait the URL does not set itself.
fn bound_waits(config: &mut Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(Duration::from_millis(TCP_USER_TIMEOUT_MS));
    }
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_millis(KEEPALIVE_IDLE_MS))
        .keepalives_interval(Duration::from_millis(KEEPALIVE_INTERVAL_MS))
        .keepalives_retries(KEEPALIVE_PROBES_MAX);
}

/// Whether `e` means the connection is gone (closed, a socket error, the
/// server shutting down or refusing connections while it starts), so a
/// fresh connection may succeed where this one cannot.
fn broken(e: &postgres::Error) -> bool {
    let socket = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    e.is_closed()
        || socket
        || e.code().is_some_and(|c| {
            c.code().starts_with("08")
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        })
}

/// A driver error in one line: the server's severity, code and message
/// (and detail), or the driver's message with its causes.
pub(super) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            s.push_str(" (");
            s.push_str(detail);
            s.push(')');
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// A `BYTEA` column of a fixed size; another size is damage.
fn fixed<const N: usize>(
    location: &str,
    what: &str,
    bytes: &[u8],
) -> Result<[u8; N], ArchiveError> {
    bytes.try_into().map_err(|_| ArchiveError::Corrupt {
        location: location.to_owned(),
        reason: format!("{what} is {} bytes, expected {N}", bytes.len()),
    })
}

impl Archive for PgArchive {
    fn apply(&mut self, records: &[(u64, &[u8])]) -> Result<u64, ArchiveError> {
        let rows = records::decode_batch(&self.location, records)?;
        if rows.is_empty() {
            return self.watermark();
        }
        let top = rows.iter().map(|r| r.version).max().unwrap_or(0);
        let columns = batch::columns(&rows);
        let (p, o, a) = (&columns.payments, &columns.originals, &columns.answers);
        let value: i64 = self.with_session(|s| {
            let st = &s.statements;
            let mut tx = s.client.transaction()?;
            tx.execute(
                &st.upsert_payments,
                &[
                    &p.id,
                    &p.version,
                    &p.merchant,
                    &p.terminal,
                    &p.status,
                    &p.created_ms,
                    &p.authorized_minor,
                    &p.captured_minor,
                    &p.amount_minor,
                    &p.rrn,
                    &p.auth_code,
                    &p.merchant_reference,
                    &p.record,
                ],
            )?;
            if !o.merchant.is_empty() {
                tx.execute(
                    &st.upsert_originals,
                    &[
                        &o.merchant,
                        &o.mti,
                        &o.stan,
                        &o.transmission,
                        &o.version,
                        &o.payment,
                        &o.refund,
                    ],
                )?;
            }
            if !a.mti.is_empty() {
                tx.execute(
                    &st.upsert_answers,
                    &[
                        &a.mti,
                        &a.terminal,
                        &a.stan,
                        &a.transmission,
                        &a.version,
                        &a.payment,
                        &a.code,
                        &a.rrn,
                        &a.auth_code,
                        &a.content_crc,
                        &a.at_ms,
                    ],
                )?;
            }
            let value: i64 = tx.query_one(&st.raise_watermark, &[&top])?.try_get(0)?;
            tx.commit()?;
            Ok(value)
        })?;
        self.watermark_from(value)
    }

    fn watermark(&self) -> Result<u64, ArchiveError> {
        let value: i64 =
            self.with_session(|s| s.client.query_one(&s.statements.watermark, &[])?.try_get(0))?;
        self.watermark_from(value)
    }

    fn payment_id_max(&self) -> Result<u64, ArchiveError> {
        let value: i64 = self.with_session(|s| {
            s.client
                .query_one(&s.statements.payment_id_max, &[])?
                .try_get(0)
        })?;
        u64::try_from(value).map_err(|_| self.corrupt(format!("payment id {value} is negative")))
    }

    fn payment(&self, id: u64) -> Result<Option<Payment>, ArchiveError> {
        let Ok(key) = i64::try_from(id) else {
            return Ok(None);
        };
        let bytes: Option<Vec<u8>> = self.with_session(|s| {
            let row = s.client.query_opt(&s.statements.payment, &[&key])?;
            row.map(|r| r.try_get(0)).transpose()
        })?;
        bytes.map(|b| self.image(id, &b)).transpose()
    }

    fn target(&self, key: &OriginalKey) -> Result<Option<Target>, ArchiveError> {
        let k = (
            i64::from(key.merchant),
            i32::from(key.mti),
            i64::from(key.stan),
            key.transmission as i64,
        );
        let found: Option<(i64, Option<i16>)> = self.with_session(|s| {
            let row = s
                .client
                .query_opt(&s.statements.target, &[&k.0, &k.1, &k.2, &k.3])?;
            row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
        })?;
        let Some((payment, refund)) = found else {
            return Ok(None);
        };
        let refund = refund.map(u8::try_from).transpose().map_err(|_| {
            self.corrupt(format!("original of payment {payment}: refund {refund:?}"))
        })?;
        Ok(Some(Target {
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
        let merchant = i64::from(merchant);
        let found: Option<(i64, Vec<u8>)> = self.with_session(|s| {
            let row = s.client.query_opt(
                &s.statements.by_rrn,
                &[&merchant, &&rrn[..], &&auth_code[..]],
            )?;
            row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
        })?;
        found.map(|(id, b)| self.image(id as u64, &b)).transpose()
    }

    fn answer(&self, key: &MessageKey) -> Result<Option<Answer>, ArchiveError> {
        let k = (
            i32::from(key.mti),
            &key.terminal[..],
            i64::from(key.stan),
            key.transmission as i64,
        );
        let row = self.with_session(|s| {
            s.client
                .query_opt(&s.statements.answer, &[&k.0, &k.1, &k.2, &k.3])
        })?;
        row.map(|r| self.answer_from(&r)).transpose()
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
        crate::store::check_open_holds_limit(&self.location, limit)?;
        // `status = 0` (uncaptured) matches the partial index `payments_open`.
        let sql = "SELECT id, record FROM payments
            WHERE merchant = $1 AND status = 0 AND created_ms < $2
            ORDER BY created_ms LIMIT $3";
        let (merchant, before, limit) =
            (i64::from(merchant), created_before_ms as i64, limit as i64);
        let rows: Vec<(i64, Vec<u8>)> = self.with_session(|s| {
            let rows = s.client.query(sql, &[&merchant, &before, &limit])?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })?;
        rows.iter()
            .map(|(id, b)| self.image(*id as u64, b))
            .collect()
    }

    fn delete_created_before(&mut self, cutoff_ms: u64) -> Result<usize, ArchiveError> {
        let cutoff = clamped(cutoff_ms);
        let most = DELETE_PAYMENTS_MAX as i64;
        // One statement: its deletes commit together or not at all.
        let gone =
            self.with_session(|s| s.client.execute(&s.statements.delete, &[&cutoff, &most]))?;
        // At most DELETE_PAYMENTS_MAX, which fits.
        Ok(usize::try_from(gone).unwrap_or(DELETE_PAYMENTS_MAX))
    }
}

impl PgArchive {
    /// A stored answer, its fixed-size columns checked.
    fn answer_from(&self, r: &postgres::Row) -> Result<Answer, ArchiveError> {
        let location = &self.location;
        let auth: Option<&[u8]> = r.try_get(2).map_err(|e| self.error(e))?;
        let crc: i64 = r.try_get(3).map_err(|e| self.error(e))?;
        let at_ms: i64 = r.try_get(4).map_err(|e| self.error(e))?;
        Ok(Answer {
            code: Code(fixed(
                location,
                "answer code",
                r.try_get(0).map_err(|e| self.error(e))?,
            )?),
            rrn: fixed(
                location,
                "answer rrn",
                r.try_get(1).map_err(|e| self.error(e))?,
            )?,
            auth_code: auth
                .map(|a| fixed(location, "answer auth_code", a))
                .transpose()?,
            content_crc: u32::try_from(crc)
                .map_err(|_| self.corrupt(format!("answer content_crc {crc} is not a u32")))?,
            seq: 0,
            at_ms: at_ms as u64,
        })
    }

    /// A stored watermark as the trait gives it.
    fn watermark_from(&self, value: i64) -> Result<u64, ArchiveError> {
        u64::try_from(value).map_err(|_| self.corrupt(format!("watermark {value} is negative")))
    }
}
