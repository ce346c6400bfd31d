//! The durable delivery queue, `<data_dir>/webhooks.sqlite`: one row per
//! event with its delivery status, and the dispatcher's watermark (the
//! last journal sequence it turned into events), written in the same
//! transaction as the events it covers, so the watermark never passes an
//! event that is not queued, and `INSERT OR IGNORE` on the event id makes
//! a batch replayed after a crash queue nothing twice. WAL; connections
//! open `synchronous=FULL`. The dispatcher commits its batches `NORMAL`
//! (they survive a crash of the switch) with a `FULL` commit every second,
//! and the journal's floor only follows the durable ones
//! ([`Queue::set_durable`], [`Queue::sync`]); the deliveries record
//! attempts `NORMAL` ([`Queue::open_for_attempts`]).
//!
//! The dispatcher's thread, the deliveries and the `switch webhooks`
//! commands each open their own connection (WAL: readers never block the
//! writer; writers wait up to [`BUSY_TIMEOUT`] for each other).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{params, Connection, OptionalExtension as _};

/// The queue's file name in the data directory.
pub(crate) const QUEUE_FILE: &str = "webhooks.sqlite";
/// Bodies hold masked card data and amounts: the switch's user only.
const FILE_MODE: u32 = 0o600;
/// How long a writer waits for another connection's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Most rows `events` lists.
pub(crate) const LIST_ROWS_MAX: usize = 10_000;
/// Most finished rows deleted per pruning step (one short transaction).
pub(crate) const PRUNE_ROWS_MAX: usize = 10_000;

/// Where an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Not delivered yet; retried until [`super::deliver::GIVE_UP_MS`].
    Pending,
    /// A 2xx answer.
    Delivered,
    /// Given up on.
    Failed,
}

impl Status {
    /// Its name in the table and in `list --events`.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }
}

/// An event to queue.
#[derive(Clone, Debug)]
pub(crate) struct NewEvent {
    /// `evt_…`.
    pub(crate) id: String,
    /// The merchant's MID.
    pub(crate) merchant: String,
    /// The payment.
    pub(crate) payment_id: u64,
    /// Journal sequence of the change: order per payment.
    pub(crate) seq: u64,
    /// `payment.…`.
    pub(crate) kind: &'static str,
    /// When the change was made, ms on the switch's clock.
    pub(crate) changed_at_ms: u64,
    /// The JSON body.
    pub(crate) body: String,
}

/// An event due for an attempt.
#[derive(Clone, Debug)]
pub(crate) struct Due {
    /// `evt_…`.
    pub(crate) id: String,
    /// The JSON body.
    pub(crate) body: String,
    /// Attempts so far.
    pub(crate) attempts: u32,
    /// When it was queued (or queued again), ms: the retry limit counts from it.
    pub(crate) queued_at_ms: u64,
    /// What `switch_webhook_delivery_seconds` counts from, ms: the change,
    /// or the resend (`None`: queued by a version without it).
    pub(crate) latency_from_ms: Option<u64>,
}

/// An event as `list --events` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    /// `evt_…`.
    pub(crate) id: String,
    /// The merchant's MID.
    pub(crate) merchant: String,
    /// The payment.
    pub(crate) payment_id: u64,
    /// `payment.…`.
    pub(crate) kind: String,
    /// pending, delivered or failed.
    pub(crate) status: String,
    /// Attempts so far.
    pub(crate) attempts: u32,
    /// The last answer's HTTP status (none: no answer, or no attempt).
    pub(crate) last_status_code: Option<u16>,
    /// The last attempt's time, ms.
    pub(crate) last_attempt_at_ms: Option<u64>,
    /// The next attempt's time, ms (pending events).
    pub(crate) next_attempt_at_ms: u64,
    /// Why the last attempt failed (no answer), for operators.
    pub(crate) last_error: Option<String>,
}

/// What an attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 2xx.
    Delivered,
    /// Not delivered; again at this time, ms.
    RetryAt(u64),
    /// Not delivered, and the retry limit is reached.
    Failed,
}

/// The queue.
#[derive(Debug)]
pub(crate) struct Queue {
    /// One connection per user of the queue.
    conn: Connection,
    /// The file, named in errors.
    path: PathBuf,
}

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    -- The journal sequence of the change, the rowid: the id is `evt_` and
    -- it in hex, so it is unique and no second index is kept for the id.
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    merchant TEXT NOT NULL,
    payment_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    queued_at_ms INTEGER NOT NULL,
    next_attempt_at_ms INTEGER NOT NULL,
    last_status_code INTEGER,
    last_attempt_at_ms INTEGER,
    last_error TEXT,
    latency_from_ms INTEGER
);
";

/// The columns of `events` as [`TABLES`] makes it, in its order.
const EVENT_COLUMNS: &str = "seq, id, merchant, payment_id, type, body, status, attempts, \
    queued_at_ms, next_attempt_at_ms, last_status_code, last_attempt_at_ms, last_error, \
    latency_from_ms";

/// Every index is written on every event queued and on most attempts:
/// three, each read by a query that cannot do without it.
const INDEXES: &str = "
-- Replaced: events_due sorted a merchant's whole backlog on each batch;
-- events_pending served only the per-merchant gauges (events_queued does).
DROP INDEX IF EXISTS events_due;
DROP INDEX IF EXISTS events_pending;
-- A merchant's due events, earliest due first: `due` reads the first
-- rows of it, whatever the backlog.
CREATE INDEX IF NOT EXISTS events_due_at ON events (merchant, status, next_attempt_at_ms, seq);
-- Whether a payment has an earlier event not delivered yet (order per payment).
CREATE INDEX IF NOT EXISTS events_payment ON events (payment_id, status, seq);
-- Pruning finished events by age; the oldest pending event; pending per merchant.
CREATE INDEX IF NOT EXISTS events_queued ON events (status, queued_at_ms);
";

/// A queue made when `events` was keyed by its id text gets the table
/// keyed by seq (rows copied as they are, in one transaction; a second
/// connection opening at the same time waits, then finds it done).
fn key_by_seq(conn: &Connection) -> rusqlite::Result<()> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let keyed_by_id: bool = tx.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('events') WHERE name = 'id' AND pk = 1",
        [],
        |r| r.get(0),
    )?;
    if keyed_by_id {
        let new_table = TABLES
            .split_once("CREATE TABLE IF NOT EXISTS events")
            .map(|(_, t)| format!("CREATE TABLE events{t}"))
            .unwrap_or_default();
        tx.execute_batch(&format!(
            "DROP INDEX IF EXISTS events_due;
             DROP INDEX IF EXISTS events_due_at;
             DROP INDEX IF EXISTS events_payment;
             DROP INDEX IF EXISTS events_queued;
             DROP INDEX IF EXISTS events_pending;
             ALTER TABLE events RENAME TO events_by_id;
             {new_table}
             INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM events_by_id;
             DROP TABLE events_by_id;"
        ))?;
    }
    tx.commit()
}

/// The journal sequence of event `id` as stored (`None`: not an event id).
fn seq_of(id: &str) -> Option<i64> {
    engine::events::seq_of_event_id(id).map(int)
}

/// A queue made before `latency_from_ms` existed gets it (its rows keep
/// NULL: their deliveries are not timed).
fn add_latency_column(conn: &Connection) -> rusqlite::Result<()> {
    let present: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('events') WHERE name = 'latency_from_ms'",
        [],
        |r| r.get(0),
    )?;
    if !present {
        conn.execute_batch("ALTER TABLE events ADD COLUMN latency_from_ms INTEGER")?;
    }
    Ok(())
}

/// Sequences and ids are u64; SQLite integers are i64: stored bit for bit.
fn int(v: u64) -> i64 {
    v as i64
}

fn uint(v: i64) -> u64 {
    v as u64
}

impl Queue {
    /// Opens `data_dir/webhooks.sqlite`, creating it (mode 0600).
    ///
    /// # Errors
    /// When the file cannot be created, is not SQLite, or cannot be made
    /// durable (WAL, `synchronous=FULL`).
    pub(crate) fn open(data_dir: &Path) -> anyhow::Result<Queue> {
        let path = data_dir.join(QUEUE_FILE);
        // SQLite creates the file: opening (and closing) a descriptor of it
        // here would drop every POSIX lock this process holds on it, those
        // of the queue's other connections too, and let another process
        // checkpoint under them (sqlite.org/howtocorrupt.html, 2.2). The
        // mode is set at once, before anything is written; the data
        // directory is 0700 meanwhile.
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(FILE_MODE))
            .with_context(|| format!("{}: setting mode 0600", path.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .with_context(|| format!("{}: journal_mode=WAL", path.display()))?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "{}: journal_mode is {mode}, expected wal",
            path.display()
        );
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(TABLES)
            .with_context(|| format!("{}: creating the tables", path.display()))?;
        add_latency_column(&conn)
            .with_context(|| format!("{}: adding latency_from_ms", path.display()))?;
        key_by_seq(&conn).with_context(|| format!("{}: keying events by seq", path.display()))?;
        conn.execute_batch(INDEXES)
            .with_context(|| format!("{}: creating the indexes", path.display()))?;
        Ok(Queue { conn, path })
    }

    /// Opens the queue for the deliveries: as [`Queue::open`], but its
    /// commits (attempts, pruning) are `synchronous=NORMAL`. WAL stays
    /// consistent; a power loss may forget the last attempts recorded,
    /// and those events are posted again, which the contract allows (at
    /// least once, ids for deduplication). The dispatcher's queueing, the
    /// resends and the endpoint commands keep their own `FULL` connections.
    ///
    /// # Errors
    /// As [`Queue::open`].
    pub(crate) fn open_for_attempts(data_dir: &Path) -> anyhow::Result<Queue> {
        let q = Queue::open(data_dir)?;
        q.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .with_context(|| q.ctx("synchronous=NORMAL"))?;
        Ok(q)
    }

    /// Makes the connection's later commits `synchronous=NORMAL` (`false`:
    /// they reach the OS, and survive a crash of the switch, but a power
    /// loss may take the last ones) or `FULL` (`true`: fsynced before the
    /// commit returns; a `FULL` commit makes every earlier one durable too,
    /// since the WAL is one file written in order).
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn set_durable(&self, full: bool) -> anyhow::Result<()> {
        self.conn
            .pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })
            .with_context(|| self.ctx("setting synchronous"))
    }

    /// Commits, durably whatever the connection's setting, everything
    /// committed on it so far (see [`Queue::set_durable`]).
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn sync(&self, now_ms: u64) -> anyhow::Result<()> {
        self.set_durable(true)?;
        let written = self
            .conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('synced_at_ms', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![int(now_ms)],
            )
            .with_context(|| self.ctx("syncing"));
        self.set_durable(false)?;
        written.map(|_| ())
    }

    fn ctx(&self, what: &str) -> String {
        format!("{}: {what}", self.path.display())
    }

    /// The dispatcher's watermark: the last journal sequence turned into
    /// events (`None`: never started).
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn watermark(&self) -> anyhow::Result<Option<u64>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'watermark'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|v| v.map(uint))
            .with_context(|| self.ctx("reading the watermark"))
    }

    /// Queues `events` and moves the watermark to `watermark`, in one
    /// transaction; an event already queued (same id) is left as it is.
    /// Returns how many were new.
    ///
    /// # Errors
    /// SQLite; nothing is changed then.
    pub(crate) fn enqueue(
        &mut self,
        events: &[NewEvent],
        watermark: u64,
        now_ms: u64,
    ) -> anyhow::Result<usize> {
        let path = self.path.display().to_string();
        let tx = self.conn.transaction()?;
        let mut added = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO events
                 (id, merchant, payment_id, seq, type, body, status, attempts,
                  queued_at_ms, next_attempt_at_ms, latency_from_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7, ?8)",
            )?;
            for e in events {
                added += insert.execute(params![
                    e.id,
                    e.merchant,
                    int(e.payment_id),
                    int(e.seq),
                    e.kind,
                    e.body,
                    int(now_ms),
                    int(e.changed_at_ms)
                ])?;
            }
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('watermark', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                params![int(watermark)],
            )?;
        }
        tx.commit()
            .with_context(|| format!("{path}: queueing events"))?;
        Ok(added)
    }

    /// Up to `limit` of `merchant`'s events due at `now_ms`, earliest due
    /// first (then in journal order), each the earliest of its payment not
    /// delivered yet (so a payment's events go one at a time, in order).
    /// It reads the first rows of `events_due_at`, not the whole backlog.
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn due(
        &self,
        merchant: &str,
        now_ms: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<Due>> {
        let mut st = self.conn.prepare_cached(
            "SELECT e.id, e.body, e.attempts, e.queued_at_ms, e.latency_from_ms FROM events e
             WHERE e.merchant = ?1 AND e.status = 'pending' AND e.next_attempt_at_ms <= ?2
               AND NOT EXISTS (SELECT 1 FROM events o
                               WHERE o.payment_id = e.payment_id AND o.status = 'pending'
                                 AND o.seq < e.seq AND o.merchant = e.merchant)
             ORDER BY e.next_attempt_at_ms, e.seq LIMIT ?3",
        )?;
        let rows = st.query_map(params![merchant, int(now_ms), limit as i64], |r| {
            Ok(Due {
                id: r.get(0)?,
                body: r.get(1)?,
                attempts: r.get(2)?,
                queued_at_ms: uint(r.get(3)?),
                latency_from_ms: r.get::<_, Option<i64>>(4)?.map(uint),
            })
        })?;
        rows.collect::<Result<_, _>>()
            .with_context(|| self.ctx("reading due events"))
    }

    /// The earliest time one of `merchant`'s pending events is due, of
    /// those [`Queue::due`] may give (the earliest of their payment: one
    /// waiting behind another is due when that one is done).
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn next_due_ms(&self, merchant: &str) -> anyhow::Result<Option<u64>> {
        self.conn
            .query_row(
                "SELECT e.next_attempt_at_ms FROM events e
                 WHERE e.merchant = ?1 AND e.status = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM events o
                                   WHERE o.payment_id = e.payment_id AND o.status = 'pending'
                                     AND o.seq < e.seq AND o.merchant = e.merchant)
                 ORDER BY e.next_attempt_at_ms, e.seq LIMIT 1",
                params![merchant],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|v| v.map(uint))
            .with_context(|| self.ctx("reading the next due time"))
    }

    /// Runs `f` in one transaction (one fsync for a batch of attempts):
    /// all of it is recorded, or none.
    ///
    /// # Errors
    /// `f`'s, or SQLite's.
    pub(crate) fn in_transaction<R>(
        &self,
        f: impl FnOnce(&Queue) -> anyhow::Result<R>,
    ) -> anyhow::Result<R> {
        let tx = self.conn.unchecked_transaction()?;
        let r = f(self)?;
        tx.commit()
            .with_context(|| self.ctx("committing attempts"))?;
        Ok(r)
    }

    /// Records an attempt at event `id` made at `now_ms`: its answer's
    /// status (none: no answer), why it failed, and what it came to.
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn record_attempt(
        &self,
        id: &str,
        now_ms: u64,
        status_code: Option<u16>,
        error: Option<&str>,
        outcome: Outcome,
    ) -> anyhow::Result<()> {
        let (status, next) = match outcome {
            Outcome::Delivered => (Status::Delivered, now_ms),
            Outcome::RetryAt(at) => (Status::Pending, at),
            Outcome::Failed => (Status::Failed, now_ms),
        };
        self.conn
            .prepare_cached(
                "UPDATE events SET status = ?2, attempts = attempts + 1,
                 next_attempt_at_ms = ?3, last_status_code = ?4,
                 last_attempt_at_ms = ?5, last_error = ?6
                 WHERE seq = ?1",
            )
            .and_then(|mut st| {
                st.execute(params![
                    seq_of(id),
                    status.label(),
                    int(next),
                    status_code,
                    int(now_ms),
                    error
                ])
            })
            .with_context(|| self.ctx("recording an attempt"))?;
        Ok(())
    }

    /// Queues event `id` again: pending, due at once (whatever the running
    /// switch's clock says), its retry limit counted from `now_ms`.
    /// Returns whether it exists.
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn resend(&self, id: &str, now_ms: u64) -> anyhow::Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE events SET status = 'pending', attempts = 0,
                 next_attempt_at_ms = 0, queued_at_ms = ?2, latency_from_ms = ?2
                 WHERE seq = ?1",
                params![seq_of(id), int(now_ms)],
            )
            .with_context(|| self.ctx("queueing an event again"))?;
        Ok(n > 0)
    }

    /// Up to `limit` events, newest first, of `merchant` or all.
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn rows(&self, merchant: Option<&str>, limit: usize) -> anyhow::Result<Vec<Row>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, merchant, payment_id, type, status, attempts, last_status_code,
                    last_attempt_at_ms, next_attempt_at_ms, last_error
             FROM events WHERE ?1 IS NULL OR merchant = ?1
             ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![merchant, limit.min(LIST_ROWS_MAX) as i64], row)?;
        rows.collect::<Result<_, _>>()
            .with_context(|| self.ctx("listing events"))
    }

    /// Up to `limit` events of payment `payment_id`, in the order of its
    /// changes: its delivery status for payment details.
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn payment_rows(&self, payment_id: u64, limit: usize) -> anyhow::Result<Vec<Row>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, merchant, payment_id, type, status, attempts, last_status_code,
                    last_attempt_at_ms, next_attempt_at_ms, last_error
             FROM events WHERE payment_id = ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st.query_map(
            params![int(payment_id), limit.min(LIST_ROWS_MAX) as i64],
            row,
        )?;
        rows.collect::<Result<_, _>>()
            .with_context(|| self.ctx("listing a payment's events"))
    }

    /// Up to `limit` events of `merchants` (newest first), optionally of
    /// one payment and in one status, before journal sequence `before_seq`
    /// (a page's cursor); each with its sequence.
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn merchant_rows(
        &self,
        merchants: &[String],
        payment_id: Option<u64>,
        status: Option<&str>,
        before_seq: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<(u64, Row)>> {
        let merchants = serde_json::to_string(merchants)?;
        let mut st = self.conn.prepare_cached(
            "SELECT id, merchant, payment_id, type, status, attempts, last_status_code,
                    last_attempt_at_ms, next_attempt_at_ms, last_error, seq
             FROM events
             WHERE merchant IN (SELECT value FROM json_each(?1))
               AND (?2 IS NULL OR payment_id = ?2)
               AND (?3 IS NULL OR status = ?3)
               AND (?4 IS NULL OR seq < ?4)
             ORDER BY seq DESC LIMIT ?5",
        )?;
        let rows = st.query_map(
            params![
                merchants,
                payment_id.map(int),
                status,
                before_seq.map(int),
                limit.min(LIST_ROWS_MAX) as i64
            ],
            |r| Ok((uint(r.get(10)?), row(r)?)),
        )?;
        rows.collect::<Result<_, _>>()
            .with_context(|| self.ctx("listing a merchant's events"))
    }

    /// Event `id`, if it is queued.
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn event_row(&self, id: &str) -> anyhow::Result<Option<Row>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, merchant, payment_id, type, status, attempts, last_status_code,
                    last_attempt_at_ms, next_attempt_at_ms, last_error
             FROM events WHERE seq = ?1",
        )?;
        let mut rows = st.query_map(params![seq_of(id)], row)?;
        rows.next()
            .transpose()
            .with_context(|| self.ctx("reading an event"))
    }

    /// Up to `limit` ids of payments of `merchants` with an event in
    /// `status`, below `below_id` (a page's cursor), largest first.
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn payment_ids(
        &self,
        merchants: &[String],
        status: &str,
        below_id: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<u64>> {
        let merchants = serde_json::to_string(merchants)?;
        let mut st = self.conn.prepare_cached(
            "SELECT DISTINCT payment_id FROM events
             WHERE merchant IN (SELECT value FROM json_each(?1)) AND status = ?2
               AND (?3 IS NULL OR payment_id < ?3)
             ORDER BY payment_id DESC LIMIT ?4",
        )?;
        let rows = st.query_map(
            params![
                merchants,
                status,
                below_id.map(int),
                limit.min(LIST_ROWS_MAX) as i64
            ],
            |r| r.get::<_, i64>(0).map(uint),
        )?;
        rows.collect::<Result<_, _>>()
            .with_context(|| self.ctx("listing payments by event status"))
    }

    /// Pending events and when the oldest was queued, ms.
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn pending(&self) -> anyhow::Result<(u64, Option<u64>)> {
        self.conn
            .query_row(
                "SELECT count(*), min(queued_at_ms) FROM events WHERE status = 'pending'",
                [],
                |r| Ok((uint(r.get(0)?), r.get::<_, Option<i64>>(1)?.map(uint))),
            )
            .with_context(|| self.ctx("counting pending events"))
    }

    /// Pending events per merchant (one row per merchant with any; at most
    /// as many as there are MIDs in the queue).
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn pending_by_merchant(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT merchant, count(*) FROM events WHERE status = 'pending' GROUP BY merchant",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, uint(r.get(1)?))))?;
        rows.collect::<Result<_, _>>()
            .with_context(|| self.ctx("counting pending events per merchant"))
    }

    /// Deletes up to [`PRUNE_ROWS_MAX`] delivered or failed events queued
    /// before `before_ms`; returns how many.
    ///
    /// # Errors
    /// SQLite.
    pub(crate) fn prune(&self, before_ms: u64) -> anyhow::Result<usize> {
        self.conn
            .execute(
                "DELETE FROM events WHERE seq IN (
                   SELECT seq FROM events WHERE status IN ('delivered', 'failed')
                   AND queued_at_ms < ?1 LIMIT ?2)",
                params![int(before_ms), PRUNE_ROWS_MAX as i64],
            )
            .with_context(|| self.ctx("pruning finished events"))
    }
}

/// A `Row` from the columns `rows` and `payment_rows` select.
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        merchant: r.get(1)?,
        payment_id: uint(r.get(2)?),
        kind: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        last_status_code: r.get(6)?,
        last_attempt_at_ms: r.get::<_, Option<i64>>(7)?.map(uint),
        next_attempt_at_ms: uint(r.get(8)?),
        last_error: r.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, payment_id: u64, merchant: &str) -> NewEvent {
        NewEvent {
            id: engine::events::event_id(seq),
            merchant: merchant.into(),
            payment_id,
            seq,
            kind: "payment.captured",
            changed_at_ms: seq,
            body: format!("{{\"seq\":{seq}}}"),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("webhooks-queue-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    /// The queue as its first version made it: keyed by the id text, no
    /// latency_from_ms, an index that is gone now.
    const FIRST_SCHEMA: &str = "
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE events (
            id TEXT PRIMARY KEY, merchant TEXT NOT NULL, payment_id INTEGER NOT NULL,
            seq INTEGER NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            queued_at_ms INTEGER NOT NULL, next_attempt_at_ms INTEGER NOT NULL,
            last_status_code INTEGER, last_attempt_at_ms INTEGER, last_error TEXT);
        CREATE INDEX events_due ON events (merchant, status, next_attempt_at_ms);
        CREATE INDEX events_payment ON events (payment_id, status, seq);
        CREATE INDEX events_queued ON events (status, queued_at_ms);
        CREATE INDEX events_pending ON events (status, merchant);";

    #[test]
    fn a_queue_from_the_first_version_is_keyed_by_seq_and_timed_from_now_on() {
        let d = dir("latency");
        {
            // The table as the first version made it (no latency_from_ms).
            let conn = Connection::open(d.join(QUEUE_FILE)).expect("sqlite");
            conn.execute_batch(FIRST_SCHEMA).expect("old schema");
            conn.execute(
                "INSERT INTO events (id, merchant, payment_id, seq, type, body, status,
                 queued_at_ms, next_attempt_at_ms) VALUES ('evt_0000000000000001', 'A', 1, 1,
                 'payment.authorized', '{}', 'pending', 5, 5)",
                [],
            )
            .expect("old row");
        }
        let mut q = Queue::open(&d).expect("open adds the column");
        q.enqueue(&[ev(2, 2, "A")], 2, 1_000).expect("enqueue");
        let due = q.due("A", 10_000, 10).expect("due");
        let from: Vec<Option<u64>> = due.iter().map(|d| d.latency_from_ms).collect();
        assert_eq!(
            from,
            [None, Some(2)],
            "old rows untimed, new ones from their change"
        );
        assert!(q.resend("evt_0000000000000001", 7_000).expect("resend"));
        let due = q.due("A", 10_000, 10).expect("due");
        assert_eq!(
            due[0].latency_from_ms,
            Some(7_000),
            "a resend counts from itself"
        );
        // The old row kept its id and is found by it; the table is keyed
        // by seq now, with the three indexes.
        let row = q
            .event_row("evt_0000000000000001")
            .expect("row")
            .expect("kept");
        assert_eq!(
            (row.payment_id, row.kind.as_str()),
            (1, "payment.authorized")
        );
        let pk: String = q
            .conn
            .query_row(
                "SELECT name FROM pragma_table_info('events') WHERE pk = 1",
                [],
                |r| r.get(0),
            )
            .expect("pk");
        assert_eq!(pk, "seq");
        let mut indexes: Vec<String> = q
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' AND sql IS NOT NULL")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .expect("indexes");
        indexes.sort();
        assert_eq!(
            indexes,
            ["events_due_at", "events_payment", "events_queued"]
        );
        drop(q);
        let q = Queue::open(&d).expect("reopens as it is");
        assert_eq!(q.rows(None, 10).expect("rows").len(), 2);
    }

    #[test]
    fn events_and_watermark_commit_together_and_once() {
        let d = dir("once");
        let mut q = Queue::open(&d).expect("open");
        assert_eq!(q.watermark().expect("wm"), None);
        let batch = [ev(1, 10, "A"), ev(2, 11, "A"), ev(3, 10, "B")];
        assert_eq!(q.enqueue(&batch, 5, 1_000).expect("enqueue"), 3);
        // The same batch again (a crash before the watermark was seen).
        assert_eq!(q.enqueue(&batch, 5, 2_000).expect("enqueue"), 0);
        assert_eq!(q.watermark().expect("wm"), Some(5));
        assert_eq!(q.enqueue(&[], 4, 2_000).expect("enqueue"), 0);
        assert_eq!(q.watermark().expect("wm"), Some(5), "never moves back");
        drop(q);
        let q = Queue::open(&d).expect("reopen");
        assert_eq!(q.pending().expect("pending"), (3, Some(1_000)));
        let mode = std::fs::metadata(d.join(QUEUE_FILE)).expect("file");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn back_office_reads_are_scoped_paged_and_filtered() {
        let d = dir("back-office");
        let mut q = Queue::open(&d).expect("open");
        let batch = [
            ev(1, 10, "A"),
            ev(2, 11, "A"),
            ev(3, 12, "B"),
            ev(4, 10, "A"),
            ev(5, 13, "A"),
        ];
        q.enqueue(&batch, 5, 0).expect("enqueue");
        let id = engine::events::event_id;
        q.record_attempt(&id(1), 7, Some(200), None, Outcome::Delivered)
            .expect("attempt");
        q.record_attempt(&id(2), 8, Some(503), None, Outcome::Failed)
            .expect("attempt");
        let a = ["A".to_string()];
        let ids = |rows: Vec<(u64, Row)>| rows.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        // Newest first, A's only, two a page, resumed below the cursor.
        let page = q.merchant_rows(&a, None, None, None, 2).expect("page");
        assert_eq!(ids(page), [5, 4]);
        let page = q.merchant_rows(&a, None, None, Some(4), 2).expect("page");
        assert_eq!(ids(page), [2, 1]);
        let both = ["A".to_string(), "B".to_string()];
        assert_eq!(
            ids(q.merchant_rows(&both, None, None, None, 9).expect("all")),
            [5, 4, 3, 2, 1]
        );
        assert!(q
            .merchant_rows(&[], None, None, None, 9)
            .expect("none")
            .is_empty());
        // By payment and by status.
        let of_10 = q
            .merchant_rows(&a, Some(10), None, None, 9)
            .expect("payment");
        assert_eq!(ids(of_10), [4, 1]);
        let failed = q
            .merchant_rows(&a, None, Some("failed"), None, 9)
            .expect("failed");
        assert_eq!(failed[0].1.last_status_code, Some(503));
        assert_eq!(ids(failed), [2]);
        // Payment ids with an event in a status, largest first, bounded.
        assert_eq!(
            q.payment_ids(&a, "pending", None, 9).expect("ids"),
            [13, 10]
        );
        assert_eq!(
            q.payment_ids(&a, "pending", Some(13), 9).expect("ids"),
            [10]
        );
        assert_eq!(q.payment_ids(&a, "pending", None, 1).expect("ids"), [13]);
        assert_eq!(
            q.payment_ids(&both, "delivered", None, 9).expect("ids"),
            [10]
        );
        assert!(q
            .payment_ids(&["B".to_string()], "failed", None, 9)
            .expect("ids")
            .is_empty());
        assert_eq!(
            q.event_row(&id(3)).expect("row").map(|r| r.merchant),
            Some("B".into())
        );
        assert_eq!(q.event_row("evt_nope").expect("row"), None);
    }

    #[test]
    fn an_event_behind_another_is_due_when_that_one_is() {
        let d = dir("behind");
        let mut q = Queue::open(&d).expect("open");
        q.enqueue(&[ev(1, 10, "A"), ev(2, 10, "A")], 2, 0)
            .expect("enqueue");
        q.record_attempt(
            &engine::events::event_id(1),
            0,
            None,
            None,
            Outcome::RetryAt(1_000),
        )
        .expect("attempt");
        // The second was due at 0, but waits behind the first: 1,000.
        assert_eq!(q.next_due_ms("A").expect("next"), Some(1_000));
        assert!(q.due("A", 999, 10).expect("due").is_empty());
    }

    #[test]
    fn a_payments_events_go_one_at_a_time_in_order() {
        let d = dir("order");
        let mut q = Queue::open(&d).expect("open");
        q.enqueue(&[ev(1, 10, "A"), ev(2, 10, "A"), ev(3, 11, "A")], 3, 0)
            .expect("enqueue");
        let ids = |q: &Queue, now| -> Vec<String> {
            q.due("A", now, 10)
                .expect("due")
                .into_iter()
                .map(|d| d.id)
                .collect()
        };
        assert_eq!(
            ids(&q, 0),
            [engine::events::event_id(1), engine::events::event_id(3)]
        );
        // The first fails and waits: the second waits behind it.
        q.record_attempt(
            &engine::events::event_id(1),
            0,
            Some(500),
            None,
            Outcome::RetryAt(1_000),
        )
        .expect("attempt");

        assert_eq!(ids(&q, 500), [engine::events::event_id(3)]);
        // Earliest due first: 3 (due since 0) before 1 (due at 1,000).
        assert_eq!(
            ids(&q, 1_000),
            [engine::events::event_id(3), engine::events::event_id(1)]
        );
        q.record_attempt(
            &engine::events::event_id(1),
            1_000,
            None,
            Some("refused"),
            Outcome::Failed,
        )
        .expect("attempt");
        assert_eq!(
            ids(&q, 1_000),
            [engine::events::event_id(2), engine::events::event_id(3)]
        );
        assert_eq!(q.next_due_ms("A").expect("next"), Some(0));
        let rows = q.rows(None, 10).expect("rows");
        let first = rows
            .iter()
            .find(|r| r.id == engine::events::event_id(1))
            .expect("row");
        assert_eq!((first.status.as_str(), first.attempts), ("failed", 2));
        assert!(q.resend(&first.id, 5_000).expect("resend"));
        assert!(!q.resend("evt_nope", 5_000).expect("resend"));
        assert_eq!(ids(&q, 5_000)[0], engine::events::event_id(1));
        let of_10: Vec<String> = q
            .payment_rows(10, 10)
            .expect("rows")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(
            of_10,
            [engine::events::event_id(1), engine::events::event_id(2)]
        );
        assert_eq!(q.prune(5_001).expect("prune"), 0, "none finished");
        let third = engine::events::event_id(3);
        q.record_attempt(&third, 6_000, Some(200), None, Outcome::Delivered)
            .expect("attempt");
        assert_eq!(q.prune(0).expect("prune"), 0, "queued at 0, not before");
        assert_eq!(q.prune(1).expect("prune"), 1);
        assert!(q
            .rows(None, 10)
            .expect("rows")
            .iter()
            .all(|r| r.id != third));
    }
}
