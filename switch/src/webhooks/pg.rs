//! Webhooks in cluster mode (`docs/cluster.md`, Webhooks): the queue is a
//! PostgreSQL table beside `cluster_records`, so an event outlives the node
//! that queued it, and each node queues and delivers the events of the
//! shards it serves.
//!
//! - **Queueing** ([`start_feed`], a thread like the single node's
//!   dispatcher): the payment records of the shards this node writes,
//!   above each shard's mark in `webhook_marks`, become events
//!   ([`super::dispatcher::event_of`], the same function of the record);
//!   the events and the raised marks go in one transaction, so a mark
//!   never passes an event that is not queued. An event's id is made
//!   from the record's `cluster_records.n`, unique in the cluster, and a
//!   row already queued is left as it is (`ON CONFLICT DO NOTHING`), so a
//!   batch read twice (a crash before the commit, an old owner late)
//!   queues nothing twice.
//! - **Why no record is missed**: a shard's records are committed by one
//!   node at a time, one transaction after another, and a node takes a
//!   shard over only after the old owner's commits are in (the fence); so
//!   while this node writes a shard, every record of it below one it can
//!   read is readable too. The drainer deletes a shard's payment records
//!   only at or below its mark (`cluster_drain`), as the single node's
//!   journal keeps what its dispatcher has not read.
//! - **The start**: a node joining writes a mark at the highest `n` for
//!   every shard without one ([`install`]): the changes before the
//!   cluster had webhooks are not sent, as on a single node.
//! - **Delivery** ([`PgQueue`], the deliveries' [`Store`]): each node
//!   delivers the events of the shards it serves, with the single node's
//!   tasks (one per merchant with an endpoint, ordered per payment, the
//!   same backoff). During a hand-over both nodes may post the same event
//!   once: at least once, as the contract says; its id is the same.
//! - **Endpoints** are the cluster's: one row, `webhook_endpoints`, sealed
//!   under a key of `security.token_key_hex` (`super::endpoints`), set
//!   through any node (`switch webhooks set` with a node's `--config`, or
//!   internal frames) and read by every node when it looks for changes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::deliver::{Attempted, Store};
use super::dispatcher::{event_of, Dispatcher, MidOf};
use super::endpoints::EndpointView;
use super::queue::{Due, Outcome, Row, Status};
use crate::clock::Clock;

/// Records read per transaction, as the single node's dispatcher.
const BATCH_RECORDS_MAX: usize = super::dispatcher::BATCH_RECORDS_MAX;
/// Pause when a pass read less than a full batch.
const PASS_PAUSE: Duration = Duration::from_millis(50);
/// Pause after a failed pass (the session is opened again).
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How often the marks follow the records while no merchant has an
/// endpoint (nothing to queue; the drainer may delete behind them).
const ADVANCE_EVERY: Duration = Duration::from_secs(1);
/// Most finished events deleted per pruning step.
const PRUNE_ROWS_MAX: i64 = super::queue::PRUNE_ROWS_MAX as i64;
/// The advisory lock installing the tables takes (two nodes starting at
/// once would race on `CREATE TABLE IF NOT EXISTS`).
const INSTALL_LOCK: i64 = 0x5357_5748; // "SWWH"

/// The tables, idempotent. `webhook_events` has the columns of the single
/// node's `events` and the shard; `seq` is the record's `n`.
const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS webhook_marks (
    shard INT4 PRIMARY KEY,
    n     INT8 NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_events (
    seq                INT8 PRIMARY KEY,
    id                 TEXT NOT NULL,
    shard              INT4 NOT NULL,
    merchant           TEXT NOT NULL,
    payment_id         INT8 NOT NULL,
    type               TEXT NOT NULL,
    body               TEXT NOT NULL,
    status             TEXT NOT NULL,
    attempts           INT4 NOT NULL DEFAULT 0,
    queued_at_ms       INT8 NOT NULL,
    next_attempt_at_ms INT8 NOT NULL,
    last_status_code   INT4,
    last_attempt_at_ms INT8,
    last_error         TEXT,
    latency_from_ms    INT8
);
CREATE INDEX IF NOT EXISTS webhook_events_due_at
    ON webhook_events (merchant, status, next_attempt_at_ms, seq);
CREATE INDEX IF NOT EXISTS webhook_events_payment ON webhook_events (payment_id, status, seq);
CREATE INDEX IF NOT EXISTS webhook_events_queued ON webhook_events (status, queued_at_ms);
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id      INT4 PRIMARY KEY,
    version INT8 NOT NULL,
    sealed  BYTEA NOT NULL
);
INSERT INTO webhook_endpoints (id, version, sealed) VALUES (1, 0, '')
    ON CONFLICT (id) DO NOTHING;
";

/// A mark at the highest `n` now for each of shards `0..$1` without one.
const FIRST_MARKS: &str = "INSERT INTO webhook_marks (shard, n)
     SELECT s, (SELECT COALESCE(max(n), 0) FROM cluster_records)
     FROM generate_series(0, $1 - 1) AS s
     ON CONFLICT (shard) DO NOTHING";

/// Payment records of shards `$1` above their marks, oldest first, at most
/// `$2`: `(n, shard, payload)`. Each shard's rows are a prefix of its rows
/// above its mark, so raising the mark to the last one read skips none.
const NEXT_ROWS: &str = "SELECT r.n, r.shard, r.payload FROM webhook_marks m
     CROSS JOIN LATERAL (
         SELECT n, shard, payload FROM cluster_records
         WHERE shard = m.shard AND n > m.n AND record_type = 1
         ORDER BY n LIMIT $2) AS r
     WHERE m.shard = ANY($1)
     ORDER BY r.n LIMIT $2";

/// Raises each shard's mark.
const RAISE_MARKS: &str = "INSERT INTO webhook_marks (shard, n)
     SELECT s, m FROM UNNEST($1::int4[], $2::int8[]) AS u(s, m)
     ON CONFLICT (shard) DO UPDATE SET n = GREATEST(webhook_marks.n, EXCLUDED.n)";

/// The marks of shards `$1` to their highest `n` (no endpoint: nothing to
/// queue).
const MARKS_TO_TOP: &str = "UPDATE webhook_marks m SET n = t.n
     FROM (SELECT s AS shard, (SELECT max(n) FROM cluster_records WHERE shard = s) AS n
           FROM UNNEST($1::int4[]) AS s) AS t
     WHERE m.shard = t.shard AND t.n > m.n";

/// Queues events (`$8`: now, ms); an id already queued is left alone.
const INSERT_EVENTS: &str = "INSERT INTO webhook_events
     (seq, id, shard, merchant, payment_id, type, body, status, attempts,
      queued_at_ms, next_attempt_at_ms, latency_from_ms)
     SELECT u.seq, u.id, u.shard, u.merchant, u.payment_id, u.type, u.body, 'pending', 0,
            $8, $8, u.at
     FROM UNNEST($1::int8[], $2::text[], $3::int4[], $4::text[], $5::int8[], $6::text[],
                 $7::text[], $9::int8[]) AS u(seq, id, shard, merchant, payment_id, type, body, at)
     ON CONFLICT (seq) DO NOTHING";

/// The single node's `due` (earliest due first, each the earliest of its
/// payment not delivered), among the shards `$4` served here.
const DUE: &str = "SELECT e.id, e.body, e.attempts, e.queued_at_ms, e.latency_from_ms
     FROM webhook_events e
     WHERE e.merchant = $1 AND e.status = 'pending' AND e.next_attempt_at_ms <= $2
       AND e.shard = ANY($4)
       AND NOT EXISTS (SELECT 1 FROM webhook_events o
                       WHERE o.payment_id = e.payment_id AND o.status = 'pending'
                         AND o.seq < e.seq AND o.merchant = e.merchant)
     ORDER BY e.next_attempt_at_ms, e.seq LIMIT $3";

/// When the next of `DUE`'s events is due.
const NEXT_DUE: &str = "SELECT e.next_attempt_at_ms FROM webhook_events e
     WHERE e.merchant = $1 AND e.status = 'pending' AND e.shard = ANY($2)
       AND NOT EXISTS (SELECT 1 FROM webhook_events o
                       WHERE o.payment_id = e.payment_id AND o.status = 'pending'
                         AND o.seq < e.seq AND o.merchant = e.merchant)
     ORDER BY e.next_attempt_at_ms, e.seq LIMIT 1";

/// One attempt.
const RECORD: &str = "UPDATE webhook_events SET status = $2, attempts = attempts + 1,
     next_attempt_at_ms = $3, last_status_code = $4, last_attempt_at_ms = $5, last_error = $6
     WHERE seq = $1";

/// Creates the tables and the first marks of `shard_count` shards (see
/// the module's note), under an advisory lock.
///
/// # Errors
/// PostgreSQL's.
pub(crate) fn install(client: &mut postgres::Client, shard_count: u32) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INSTALL_LOCK])?;
    tx.batch_execute(SCHEMA)?;
    tx.execute(FIRST_MARKS, &[&i32::try_from(shard_count)?])?;
    tx.commit().context("installing the webhook tables")?;
    Ok(())
}

/// The shards now (served, for deliveries; written, for queueing).
pub(crate) type Shards = Arc<dyn Fn() -> Vec<i32> + Send + Sync>;

/// The deliveries' queue in cluster mode: `webhook_events` of the shards
/// this node serves, on a session of its own, opened again after an
/// error.
pub(crate) struct PgQueue {
    /// archive.url.
    url: String,
    /// The session, `None` after an error.
    client: Option<postgres::Client>,
    /// The shards served now.
    shards: Shards,
}

impl PgQueue {
    /// A queue on `url` (connected at its first use) of the shards
    /// `shards` gives.
    pub(crate) fn new(url: &str, shards: Shards) -> PgQueue {
        PgQueue {
            url: url.to_owned(),
            client: None,
            shards,
        }
    }

    /// Runs `f` with the session and the shards served; an error drops
    /// the session.
    fn with<R>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut postgres::Client, &[i32]) -> Result<R, postgres::Error>,
    ) -> anyhow::Result<R> {
        if self.client.is_none() {
            self.client = Some(crate::cluster_commit::connect(&self.url)?);
        }
        let Some(client) = self.client.as_mut() else {
            unreachable!("connected above")
        };
        let shards = (self.shards)();
        let r = f(client, &shards);
        if r.is_err() {
            self.close();
        }
        r.with_context(|| format!("webhooks in PostgreSQL: {what}"))
    }

    /// Drops the session (off the async runtime).
    fn close(&mut self) {
        if let Some(c) = self.client.take() {
            crate::blocking::drop_off_runtime(c);
        }
    }
}

impl Drop for PgQueue {
    fn drop(&mut self) {
        self.close();
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store for PgQueue {
    fn due(&mut self, merchant: &str, now_ms: u64, limit: usize) -> anyhow::Result<Vec<Due>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.with("reading due events", |c, shards| {
            c.query(DUE, &[&merchant, &int(now_ms), &limit, &shards])
        })?;
        Ok(rows
            .iter()
            .map(|r| Due {
                id: r.get(0),
                body: r.get(1),
                attempts: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
                queued_at_ms: uint(r.get(3)),
                latency_from_ms: r.get::<_, Option<i64>>(4).map(uint),
            })
            .collect())
    }

    fn next_due_ms(&mut self, merchant: &str) -> anyhow::Result<Option<u64>> {
        let row = self.with("reading the next due time", |c, shards| {
            c.query_opt(NEXT_DUE, &[&merchant, &shards])
        })?;
        Ok(row.map(|r| uint(r.get(0))))
    }

    fn record(&mut self, attempts: &[Attempted]) -> anyhow::Result<()> {
        self.with("recording attempts", |c, _| {
            let mut tx = c.transaction()?;
            let st = tx.prepare(RECORD)?;
            for (id, at_ms, code, error, outcome) in attempts {
                let Some(seq) = engine::events::seq_of_event_id(id) else {
                    continue;
                };
                let (status, next) = match *outcome {
                    Outcome::Delivered => (Status::Delivered, *at_ms),
                    Outcome::RetryAt(at) => (Status::Pending, at),
                    Outcome::Failed => (Status::Failed, *at_ms),
                };
                tx.execute(
                    &st,
                    &[
                        &int(seq),
                        &status.label(),
                        &int(next),
                        &code.map(i32::from),
                        &int(*at_ms),
                        &error.as_deref(),
                    ],
                )?;
            }
            tx.commit()
        })
    }

    fn pending(&mut self) -> anyhow::Result<(u64, Option<u64>)> {
        let row = self.with("counting pending events", |c, shards| {
            c.query_one(
                "SELECT count(*), min(queued_at_ms) FROM webhook_events
                 WHERE status = 'pending' AND shard = ANY($1)",
                &[&shards],
            )
        })?;
        Ok((uint(row.get(0)), row.get::<_, Option<i64>>(1).map(uint)))
    }

    fn pending_by_merchant(&mut self) -> anyhow::Result<Vec<(String, u64)>> {
        let rows = self.with("counting pending events per merchant", |c, shards| {
            c.query(
                "SELECT merchant, count(*) FROM webhook_events
                 WHERE status = 'pending' AND shard = ANY($1) GROUP BY merchant",
                &[&shards],
            )
        })?;
        Ok(rows.iter().map(|r| (r.get(0), uint(r.get(1)))).collect())
    }

    fn prune(&mut self, before_ms: u64) -> anyhow::Result<usize> {
        let n = self.with("pruning finished events", |c, shards| {
            c.execute(
                "DELETE FROM webhook_events WHERE seq IN (
                   SELECT seq FROM webhook_events
                   WHERE status IN ('delivered', 'failed') AND queued_at_ms < $1
                     AND shard = ANY($3) LIMIT $2)",
                &[&int(before_ms), &PRUNE_ROWS_MAX, &shards],
            )
        })?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// What the queueing thread needs.
pub(crate) struct Feed {
    /// archive.url.
    pub(crate) url: String,
    /// The shards this node writes now.
    pub(crate) shards: Shards,
    /// The endpoints now.
    pub(crate) endpoints: Arc<EndpointView>,
    /// The MID of a merchant index.
    pub(crate) mid_of: MidOf,
    /// For the queue's times.
    pub(crate) clock: Clock,
    /// Woken when events were queued.
    pub(crate) queued: Arc<tokio::sync::Notify>,
    /// `[webhooks] backlog_max` and the pending count.
    pub(crate) backlog: Arc<super::Backlog>,
}

/// Starts the queueing thread (see the module's note).
///
/// # Errors
/// When the thread cannot be started.
pub(crate) fn start_feed(feed: Feed) -> anyhow::Result<Dispatcher> {
    let stop = Arc::new(AtomicBool::new(false));
    let run = FeedRun {
        feed,
        stop: stop.clone(),
        client: None,
        advanced: None,
        full: false,
    };
    let thread = std::thread::Builder::new()
        .name("webhook-feed".into())
        .spawn(move || {
            super::lower_priority();
            run.run();
        })
        .context("starting the webhook feed")?;
    Ok(Dispatcher::of_thread(stop, thread))
}

/// The queueing thread's state.
struct FeedRun {
    feed: Feed,
    stop: Arc<AtomicBool>,
    /// Its session, `None` after an error.
    client: Option<postgres::Client>,
    /// When the marks last followed the records without endpoints.
    advanced: Option<Instant>,
    /// Whether the backlog was full at the last pass (counted once a time).
    full: bool,
}

impl FeedRun {
    fn run(mut self) {
        while !self.stop.load(Ordering::Acquire) {
            match self.pass() {
                Ok(true) => {}
                Ok(false) => self.pause(PASS_PAUSE),
                Err(e) => {
                    ::metrics::counter!("switch_webhook_feed_errors_total").increment(1);
                    crate::ratelog::warn_limited!(
                        "webhooks_feed",
                        error = %format!("{e:#}"),
                        "webhooks: queueing events in PostgreSQL failed; the records stay, retrying"
                    );
                    self.client = None;
                    self.pause(RETRY_PAUSE);
                }
            }
        }
    }

    /// One pass; whether it read a full batch (more may be waiting).
    fn pass(&mut self) -> anyhow::Result<bool> {
        let shards = (self.feed.shards)();
        if shards.is_empty() {
            return Ok(false);
        }
        if self.client.is_none() {
            self.client = Some(crate::cluster_commit::connect(&self.feed.url)?);
        }
        let Some(client) = self.client.as_mut() else {
            unreachable!("connected above")
        };
        if !self.feed.endpoints.known() {
            // Unread (PostgreSQL failing, or sealed under another key):
            // whether an event is wanted is not known, so nothing is
            // passed by.
            crate::ratelog::warn_limited!(
                "webhooks_endpoints_unknown",
                "webhooks: the endpoints have not been read yet; queueing waits"
            );
            self.feed.endpoints.refresh();
            return Ok(false);
        }
        let endpoints = self.feed.endpoints.get();
        if endpoints.is_empty() {
            if self.advanced.is_none_or(|t| t.elapsed() >= ADVANCE_EVERY) {
                client
                    .execute(MARKS_TO_TOP, &[&shards])
                    .context("raising the webhook marks")?;
                self.advanced = Some(Instant::now());
            }
            return Ok(false);
        }
        let room = usize::try_from(self.feed.backlog.room()).unwrap_or(usize::MAX);
        if room == 0 {
            if !self.full {
                self.full = true;
                ::metrics::counter!("switch_limit_reached_total", "limit" => "webhooks_backlog_max")
                    .increment(1);
            }
            crate::ratelog::warn_limited!("webhooks_backlog", "webhooks: the backlog is at webhooks.backlog_max; queueing waits for deliveries (cluster_records keeps the changes)");
            return Ok(false);
        }
        self.full = false;
        let limit = room.min(BATCH_RECORDS_MAX);
        let rows = client
            .query(NEXT_ROWS, &[&shards, &i64::try_from(limit)?])
            .context("reading cluster_records")?;
        if rows.is_empty() {
            return Ok(false);
        }
        let mut marks: BTreeMap<i32, i64> = BTreeMap::new();
        let mut ev = Events::default();
        for r in &rows {
            let (n, shard, payload): (i64, i32, &[u8]) = (r.get(0), r.get(1), r.get(2));
            let top = marks.entry(shard).or_default();
            *top = (*top).max(n);
            if let Some(e) = event_of(uint(n), payload, &endpoints, &self.feed.mid_of) {
                ev.push(shard, e);
            }
        }
        let (mark_shards, mark_ns): (Vec<i32>, Vec<i64>) = marks.into_iter().unzip();
        let now_ms = int(self.feed.clock.now_ms());
        let mut tx = client.transaction()?;
        let added = tx.execute(
            INSERT_EVENTS,
            &[
                &ev.seq,
                &ev.id,
                &ev.shard,
                &ev.merchant,
                &ev.payment_id,
                &ev.kind,
                &ev.body,
                &now_ms,
                &ev.at,
            ],
        )?;
        tx.execute(RAISE_MARKS, &[&mark_shards, &mark_ns])?;
        tx.commit().context("queueing events")?;
        self.feed.backlog.added(added);
        if added > 0 {
            self.feed.queued.notify_waiters();
        }
        Ok(rows.len() == limit)
    }

    /// Sleeps `d`, waking early to stop.
    fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// A batch of events as the columns `INSERT_EVENTS` unnests.
#[derive(Default)]
struct Events {
    seq: Vec<i64>,
    id: Vec<String>,
    shard: Vec<i32>,
    merchant: Vec<String>,
    payment_id: Vec<i64>,
    kind: Vec<&'static str>,
    body: Vec<String>,
    at: Vec<i64>,
}

impl Events {
    fn push(&mut self, shard: i32, e: super::queue::NewEvent) {
        self.seq.push(int(e.seq));
        self.id.push(e.id);
        self.shard.push(shard);
        self.merchant.push(e.merchant);
        self.payment_id.push(int(e.payment_id));
        self.kind.push(e.kind);
        self.body.push(e.body);
        self.at.push(int(e.changed_at_ms));
    }
}

/// The columns a [`Row`] is made of, in its order.
const ROW_COLUMNS: &str = "id, merchant, payment_id, type, status, attempts, last_status_code, \
     last_attempt_at_ms, next_attempt_at_ms, last_error";

fn row(r: &postgres::Row) -> Row {
    Row {
        id: r.get(0),
        merchant: r.get(1),
        payment_id: uint(r.get(2)),
        kind: r.get(3),
        status: r.get(4),
        attempts: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
        last_status_code: r
            .get::<_, Option<i32>>(6)
            .and_then(|c| u16::try_from(c).ok()),
        last_attempt_at_ms: r.get::<_, Option<i64>>(7).map(uint),
        next_attempt_at_ms: uint(r.get(8)),
        last_error: r.get(9),
    }
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit.min(super::LIST_ROWS_MAX)).unwrap_or(i64::MAX)
}

/// `switch webhooks list --events` in cluster mode: up to `limit` events,
/// of one payment in the order of its changes, or newest first of
/// `merchant` or all.
///
/// # Errors
/// PostgreSQL's.
pub(crate) fn rows(
    url: &str,
    merchant: Option<&str>,
    payment: Option<u64>,
    limit: usize,
) -> anyhow::Result<Vec<Row>> {
    let mut events = ClusterEvents::new(url);
    match payment {
        Some(id) => super::EventRows::payment_rows(&mut events, id, limit),
        None => {
            let mut c = crate::cluster_commit::connect(url)?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {ROW_COLUMNS} FROM webhook_events
                         WHERE $1::text IS NULL OR merchant = $1 ORDER BY seq DESC LIMIT $2"
                    ),
                    &[&merchant, &limit_of(limit)],
                )
                .context("listing webhook events")?;
            Ok(rows.iter().map(row).collect())
        }
    }
}

/// `switch webhooks resend` in cluster mode: event `id` pending again, due
/// at once, its retry limit counted from `now_ms`; whether it exists. The
/// node serving its shard delivers it.
///
/// # Errors
/// PostgreSQL's.
pub(crate) fn resend(url: &str, id: &str, now_ms: u64) -> anyhow::Result<bool> {
    super::EventRows::resend(&mut ClusterEvents::new(url), id, now_ms)
}

/// The cluster's events for back offices (internal frames) and the
/// commands: PostgreSQL's `webhook_events`, on a session of its own
/// (opened at first use, and again after an error).
pub(crate) struct ClusterEvents {
    /// archive.url.
    url: String,
    /// The session.
    client: Option<Box<postgres::Client>>,
}

impl ClusterEvents {
    /// Events at `url`.
    pub(crate) fn new(url: &str) -> ClusterEvents {
        ClusterEvents {
            url: url.to_owned(),
            client: None,
        }
    }

    fn with<R>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut postgres::Client) -> Result<R, postgres::Error>,
    ) -> anyhow::Result<R> {
        let client = match self.client.as_mut() {
            Some(c) => c,
            None => self
                .client
                .insert(Box::new(crate::cluster_commit::connect(&self.url)?)),
        };
        let r = f(client);
        if r.is_err() {
            self.client = None;
        }
        r.with_context(|| format!("webhook events in PostgreSQL: {what}"))
    }
}

impl Drop for ClusterEvents {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            crate::blocking::drop_off_runtime(c);
        }
    }
}

impl super::EventRows for ClusterEvents {
    fn payment_rows(&mut self, payment_id: u64, limit: usize) -> anyhow::Result<Vec<Row>> {
        let rows = self.with("listing a payment's events", |c| {
            c.query(
                &format!(
                    "SELECT {ROW_COLUMNS} FROM webhook_events WHERE payment_id = $1 ORDER BY seq LIMIT $2"
                ),
                &[&int(payment_id), &limit_of(limit)],
            )
        })?;
        Ok(rows.iter().map(row).collect())
    }

    fn merchant_rows(
        &mut self,
        merchants: &[String],
        payment_id: Option<u64>,
        status: Option<&str>,
        before_seq: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<(u64, Row)>> {
        let rows = self.with("listing a merchant's events", |c| {
            c.query(
                &format!(
                    "SELECT {ROW_COLUMNS}, seq FROM webhook_events
                     WHERE merchant = ANY($1) AND ($2::int8 IS NULL OR payment_id = $2)
                       AND ($3::text IS NULL OR status = $3) AND ($4::int8 IS NULL OR seq < $4)
                     ORDER BY seq DESC LIMIT $5"
                ),
                &[
                    &merchants,
                    &payment_id.map(int),
                    &status,
                    &before_seq.map(int),
                    &limit_of(limit),
                ],
            )
        })?;
        Ok(rows.iter().map(|r| (uint(r.get(10)), row(r))).collect())
    }

    fn event_row(&mut self, id: &str) -> anyhow::Result<Option<Row>> {
        let Some(seq) = engine::events::seq_of_event_id(id) else {
            return Ok(None);
        };
        let found = self.with("reading an event", |c| {
            c.query_opt(
                &format!("SELECT {ROW_COLUMNS} FROM webhook_events WHERE seq = $1"),
                &[&int(seq)],
            )
        })?;
        Ok(found.as_ref().map(row))
    }

    fn payment_ids(
        &mut self,
        merchants: &[String],
        status: &str,
        below_id: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<u64>> {
        let rows = self.with("listing payments by event status", |c| {
            c.query(
                "SELECT DISTINCT payment_id FROM webhook_events
                 WHERE merchant = ANY($1) AND status = $2 AND ($3::int8 IS NULL OR payment_id < $3)
                 ORDER BY payment_id DESC LIMIT $4",
                &[&merchants, &status, &below_id.map(int), &limit_of(limit)],
            )
        })?;
        Ok(rows.iter().map(|r| uint(r.get(0))).collect())
    }

    fn resend(&mut self, id: &str, now_ms: u64) -> anyhow::Result<bool> {
        let Some(seq) = engine::events::seq_of_event_id(id) else {
            return Ok(false);
        };
        let n = self.with("queueing an event again", |c| {
            c.execute(
                "UPDATE webhook_events SET status = 'pending', attempts = 0,
                 next_attempt_at_ms = 0, queued_at_ms = $2, latency_from_ms = $2
                 WHERE seq = $1",
                &[&int(seq), &int(now_ms)],
            )
        })?;
        Ok(n > 0)
    }
}
