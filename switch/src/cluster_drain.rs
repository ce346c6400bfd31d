//! Cluster mode's archive drainer (`docs/cluster.md`, Status): the payment
//! records of the shards this node writes, from `cluster_records` into the
//! archive's tables (`payments`, `originals`, `answers`) in the same
//! PostgreSQL, so that payments and answers can leave memory
//! (`Command::Retire`, idempotency rotation) and be read back by the
//! engine's archive lookups, as on a single node.
//!
//! - **Versions**: a row's version in the archive is its `cluster_records.n`.
//!   A shard's records are committed one owner at a time, in order (the
//!   fence), so `n` grows with every change of a payment, whichever node
//!   made it, and the archive's upserts keep the latest
//!   (`WHERE version < EXCLUDED.version`) even when two nodes write a shard's
//!   rows (a node draining what it loaded and the old owner's drainer,
//!   late).
//! - **Where each shard stands**: `cluster_drained (shard, n)`, every payment
//!   record of the shard up to `n` is in the archive. A node taking a shard
//!   over drains the rest before it serves the shard
//!   ([`drain_loaded`]), so every payment it loads is archived, and memory
//!   may let it go.
//! - **The watermark** (`archive_stage::Progress`, in this node's sequence
//!   numbers, what `Retire` and the idempotency rotation compare with): a
//!   pass reads the committed sequence `S` first, then the shards written,
//!   and drains every row of those shards; then every record this node
//!   committed up to `S` is archived: a record is only committed for a
//!   shard written at the time, and one whose shard stopped being written
//!   here is another node's to drain (memory may let its stale copy go).
//!
//! - **Retention**: once a second, the rows of the shards it writes that
//!   are archived and older than `cluster.records_retention_s` are
//!   deleted, counted card attempts after 25 h, and, sooner, the attempts
//!   and checkpoints below the begin mark of each shard's latest velocity
//!   checkpoint (which holds their counts). A takeover then loads
//!   only recent rows; the archive answers for the rest, and a node that
//!   loads a shard it served before lets its copies of the shard's
//!   payments go first (`Committer::acquire`).
//!
//! - **The archive's own retention** (`archive.retention_days`): the node
//!   serving shard 0 deletes the payments created before it, once an hour
//!   by the switch's clock ([`ARCHIVE_RETENTION_EVERY_MS`]), in steps of
//!   `archive::DELETE_PAYMENTS_MAX`, one a pass, as a single node's
//!   drainer does. One node at a time, whichever serves shard 0 (a step
//!   done twice during a hand-over deletes nothing more); simpler than
//!   the design's per-owner deletion (the archive's rows carry no shard).
//!
//! A pass that fails is retried with a growing pause; meanwhile
//! `/readyz` says why (`archive failing`) and memory, which waits for the
//! watermark, fills until new payments get 96, as on a single node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use archive::{Archive, BATCH_RECORDS_MAX};

use crate::archive_stage::Progress;
use crate::cluster_commit::Committer;

/// How often the node serving shard 0 starts deleting the archive's
/// payments past `archive.retention_days`, in ms of the switch's clock.
pub(crate) const ARCHIVE_RETENTION_EVERY_MS: u64 = 3_600_000;

/// Pause between passes: a pass drains everything written meanwhile, so
/// at 10,000 answers/s a pass is one archive transaction of about 1,500
/// rows (a WAL flush each), not dozens of small ones competing with the
/// committer's group commits for the flush.
const PASS_PAUSE: Duration = Duration::from_millis(100);
/// First pause after a failed pass; doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(100);
/// Longest pause between attempts while PostgreSQL fails.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);

/// Batches of [`BATCH_RECORDS_MAX`] rows one pass drains at most: a
/// drainer behind a sustained inflow (10,000 answers/s on this box) used
/// to stay in one pass for good, and so never deleted a row.
const PASS_BATCHES_MAX: usize = 64;
/// How often rows past `cluster.records_retention_s` are deleted.
const RETENTION_INTERVAL: Duration = Duration::from_secs(1);
/// Most rows one deletion removes: the pass calls it until fewer go, so no
/// transaction runs long.
const DELETE_ROWS_MAX: i64 = 10_000;
/// How long a counted card attempt (record type 3) is kept: the longest
/// velocity window (24 h) and an hour, as a takeover replays the counts.
const VELOCITY_RECORDS_KEPT_S: i64 = 25 * 3_600;

/// Most samples of `cluster_records`' highest `n` kept (one a second):
/// past it the oldest go, and rows are deleted a little later than due.
const SAMPLES_MAX: usize = 100_000;

/// Deletes payment records of `shards` archived (at or below their shard's
/// `cluster_drained` mark), turned into webhook events (at or below its
/// `webhook_marks` mark, `webhooks::pg`) and at or below `n` `$2`, at most
/// `$3`, by the `(shard, n)` index.
const DELETE_PAYMENT_ROWS: &str = "DELETE FROM cluster_records WHERE n IN (
     SELECT r.n FROM cluster_records r JOIN cluster_drained d ON d.shard = r.shard
     JOIN webhook_marks w ON w.shard = r.shard
     WHERE r.shard = ANY($1) AND r.record_type = 1 AND r.n <= LEAST(d.n, w.n, $2)
     ORDER BY r.n LIMIT $3)";

/// Deletes counted card attempts of `shards` at or below `n` `$2`, at most
/// `$3`.
const DELETE_VELOCITY_ROWS: &str = "DELETE FROM cluster_records WHERE n IN (
     SELECT n FROM cluster_records
     WHERE shard = ANY($1) AND record_type = 3 AND n <= $2
     ORDER BY n LIMIT $3)";

/// Deletes of `shards` the counted card attempts, velocity checkpoints and
/// their begin marks below the begin mark of the shard's latest checkpoint
/// (which holds their counts) and `n` `$2`, at most `$3`: one range per
/// shard of the partial index on velocity rows (`cluster_records_velocity`;
/// on `(shard, n)` a busy merchant's shard walked past every payment row
/// of the shard, and the first deletion under 10,000/s had not finished
/// after 150 s).
const DELETE_CHECKPOINTED_ROWS: &str = "DELETE FROM cluster_records WHERE n IN (
     SELECT r.n FROM (
         SELECT c.shard, (SELECT COALESCE(max(b.n), 0) FROM cluster_records b
                          WHERE b.shard = c.shard AND b.record_type = 5 AND b.n < c.n) AS n
         FROM (SELECT shard, max(n) AS n FROM cluster_records
               WHERE shard = ANY($1) AND record_type = 4 GROUP BY shard) AS c) AS m
     CROSS JOIN LATERAL (
         SELECT n FROM cluster_records
         WHERE shard = m.shard AND n < LEAST(m.n, $2) AND record_type IN (3, 4, 5)
         ORDER BY n LIMIT $3) AS r
     LIMIT $3)";

/// Payment records of `shards` above `after`, oldest first, at most
/// [`BATCH_RECORDS_MAX`]: `(n, shard, payload)`. One range of the
/// `(shard, n)` index per shard, so a node does not read the rows of the
/// other nodes' shards (the primary key's range would).
const NEXT_ROWS: &str = "SELECT r.n, r.shard, r.payload FROM UNNEST($2::int4[]) AS s(shard)
     CROSS JOIN LATERAL (
         SELECT n, shard, payload FROM cluster_records
         WHERE shard = s.shard AND n > $1 AND record_type = 1
         ORDER BY n LIMIT $3) AS r
     ORDER BY r.n LIMIT $3";

/// Raises each shard's drained mark.
const MARK_DRAINED: &str = "INSERT INTO cluster_drained (shard, n)
     SELECT s, m FROM UNNEST($1::int4[], $2::int8[]) AS u(s, m)
     ON CONFLICT (shard) DO UPDATE SET n = GREATEST(cluster_drained.n, EXCLUDED.n)";

/// Writes `rows` (`(n, shard, payload)`, payment records in `n` order)
/// into `archive` with their `n` as versions, then raises each shard's
/// `cluster_drained` mark. Returns how many were written.
///
/// # Errors
/// The archive's or PostgreSQL's.
pub(crate) fn write_rows(
    client: &mut postgres::Client,
    archive: &mut dyn Archive,
    rows: &[(i64, i32, &[u8])],
) -> anyhow::Result<usize> {
    for chunk in rows.chunks(BATCH_RECORDS_MAX) {
        let records: Vec<(u64, &[u8])> = chunk
            .iter()
            .map(|&(n, _, p)| (u64::try_from(n).unwrap_or(0), p))
            .collect();
        archive
            .apply(&records)
            .context("writing payment records into the archive")?;
    }
    let mut top: BTreeMap<i32, i64> = BTreeMap::new();
    for &(n, shard, _) in rows {
        let t = top.entry(shard).or_default();
        *t = (*t).max(n);
    }
    let (shards, marks): (Vec<i32>, Vec<i64>) = top.into_iter().unzip();
    client
        .execute(MARK_DRAINED, &[&shards, &marks])
        .context("raising cluster_drained")?;
    ::metrics::counter!("switch_cluster_archived_records_total").increment(rows.len() as u64);
    Ok(rows.len())
}

/// A shard being taken over: writes into the archive the payment records
/// among `rows` (`(n, record_type, payload)` of `shard`, every row loaded)
/// above the shard's drained mark `drained`, so every payment the node
/// loads is in the archive. Returns how many it wrote.
///
/// # Errors
/// The archive's or PostgreSQL's.
pub(crate) fn drain_loaded(
    client: &mut postgres::Client,
    archive: &mut dyn Archive,
    shard: i32,
    drained: i64,
    rows: &[(i64, i16, &[u8])],
) -> anyhow::Result<usize> {
    let left: Vec<(i64, i32, &[u8])> = rows
        .iter()
        .filter(|&&(n, t, _)| n > drained && t == i16::from(engine::record::RECORD_PAYMENT))
        .map(|&(n, _, p)| (n, shard, p))
        .collect();
    if left.is_empty() {
        return Ok(0);
    }
    write_rows(client, archive, &left)
}

/// A session on `cluster_records` and the archive's own (durable). The
/// drainer's first session commits its marks and deletions without
/// waiting for the WAL flush: each follows, in the WAL, the durable
/// archive commit it records, so a crash loses at most a mark, and those
/// rows are drained again.
pub(crate) fn sessions(url: &str) -> anyhow::Result<(postgres::Client, archive::PgArchive)> {
    let mut client = crate::cluster_commit::connect(url)?;
    client
        .batch_execute("SET synchronous_commit = off")
        .context("the drainer's session")?;
    let archive = archive::PgArchive::connect(url).context("the archive")?;
    Ok((client, archive))
}

/// How long a shard's load may wait for a lock (its fence row, held by a
/// commit of the old owner), in ms: past it the load fails and is tried
/// again at the loader's next look, after the other shards, so one row
/// held (by a frozen session, until PostgreSQL ends it, or by anything
/// else) does not hold every takeover back.
pub(crate) const LOAD_LOCK_WAIT_MS: u64 = 5_000;

/// The loader's sessions: as the drainer's, but its commits wait for the
/// flush and the synchronous standby (they move the fence and take id
/// blocks), its waits for a lock are bounded ([`LOAD_LOCK_WAIT_MS`]), it
/// is named `switch-cluster-load`, with the mark its session raises when
/// a commit's wait for the standby was cancelled (`Committer::acquire`
/// then refuses the load).
pub(crate) fn loader_sessions(
    url: &str,
) -> anyhow::Result<(postgres::Client, archive::PgArchive, Arc<AtomicBool>)> {
    let (mut client, unreplicated) =
        crate::cluster_commit::connect_watched(url, crate::cluster_commit::LOAD_SESSION_NAME)?;
    client
        .batch_execute(&format!("SET lock_timeout = {LOAD_LOCK_WAIT_MS}"))
        .context("the loader's session")?;
    let archive = archive::PgArchive::connect(url).context("the archive")?;
    Ok((client, archive, unreplicated))
}

/// The running drainer.
pub(crate) struct ClusterDrainer {
    /// Set to stop it.
    stop: Arc<AtomicBool>,
    /// Its thread.
    thread: Option<JoinHandle<()>>,
}

impl ClusterDrainer {
    /// Starts draining what `committer` writes into the archive at `url`,
    /// publishing to `progress`. Before any shard is loaded: what it drains
    /// starts above the highest `n` now.
    ///
    /// # Errors
    /// PostgreSQL's; when the thread cannot be started.
    pub(crate) fn start(
        url: &str,
        committer: Arc<Committer>,
        progress: Arc<Progress>,
        retention_s: u64,
        (clock, archive_retention_ms): (crate::Clock, u64),
    ) -> anyhow::Result<ClusterDrainer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (mut client, archive) = sessions(url)?;
        let after: i64 = client
            .query_one("SELECT COALESCE(max(n), 0) FROM cluster_records", &[])
            .context("reading cluster_records")?
            .get(0);
        // Counted card attempts older than 25 h at start: below this `n`
        // (the samples below cover the rest of the node's life).
        let velocity_floor: i64 = client
            .query_one(
                "SELECT COALESCE(max(n), 0) FROM cluster_records
                 WHERE at < now() - make_interval(secs => $1::float8)",
                &[&(VELOCITY_RECORDS_KEPT_S as f64)],
            )
            .context("reading cluster_records")?
            .get(0);
        let mut run = Run {
            url: url.to_owned(),
            committer,
            progress,
            stop: stop.clone(),
            sessions: Some((client, archive)),
            after,
            retention_s,
            deleted_at: std::time::Instant::now(),
            samples: std::collections::VecDeque::new(),
            velocity_floor,
            clock,
            archive_retention_ms,
            archive_retained_ms: None,
            archive_retention_pending: false,
        };
        let thread = std::thread::Builder::new()
            .name("cluster-drain".into())
            .spawn(move || run.run())
            .context("starting the cluster drainer")?;
        Ok(ClusterDrainer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops it after its current pass.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ClusterDrainer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The drainer thread's state.
struct Run {
    /// archive.url.
    url: String,
    /// What it drains.
    committer: Arc<Committer>,
    /// Where the watermark goes.
    progress: Arc<Progress>,
    /// Set to stop.
    stop: Arc<AtomicBool>,
    /// Its sessions: one for `cluster_records`, the archive's own.
    sessions: Option<(postgres::Client, archive::PgArchive)>,
    /// Highest `n` drained by this life: every row below it of the shards
    /// it writes is drained (loaded ones at their takeover, its own as
    /// committed, in order). At start, the highest `n` then, since every
    /// later row of its shards is its own or loaded by a takeover that
    /// drains it.
    after: i64,
    /// `cluster.records_retention_s`.
    retention_s: u64,
    /// When rows were last deleted.
    deleted_at: std::time::Instant,
    /// `cluster_records`' highest `n`, once a second, oldest first: every
    /// row at or below a sample's `n` was committed by its time (a row
    /// still committing then, milliseconds later).
    samples: std::collections::VecDeque<(std::time::Instant, i64)>,
    /// Counted card attempts at or below it were older than 25 h at start.
    velocity_floor: i64,
    /// The switch's clock: payments' creation times are on it.
    clock: crate::Clock,
    /// `archive.retention_days`, in ms.
    archive_retention_ms: u64,
    /// When this node last started the archive's retention (serving
    /// shard 0), by `clock`.
    archive_retained_ms: Option<u64>,
    /// Whether payments past retention may be left to delete.
    archive_retention_pending: bool,
}

impl Run {
    fn run(&mut self) {
        let mut pause = RETRY_PAUSE_MIN;
        while !self.stop.load(Ordering::Acquire) {
            match self.pass() {
                Ok(_) => {
                    pause = RETRY_PAUSE_MIN;
                    self.progress.set_failure(None);
                    std::thread::sleep(PASS_PAUSE);
                }
                Err(e) => {
                    ::metrics::counter!("switch_archive_errors_total", "op" => "cluster_drain")
                        .increment(1);
                    crate::ratelog::warn_limited!(
                        "cluster_drain",
                        error = %format!("{e:#}"),
                        "cluster: writing into the archive failed; retrying"
                    );
                    self.progress.set_failure(Some(format!("{e:#}")));
                    self.sessions = None;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                }
            }
        }
    }

    /// One pass; how many records it wrote.
    fn pass(&mut self) -> anyhow::Result<usize> {
        if self.sessions.is_none() {
            self.sessions = Some(sessions(&self.url)?);
        }
        let Some((client, archive)) = self.sessions.as_mut() else {
            unreachable!("connected above")
        };
        // The committed sequence before the shards: see the module's note.
        let committed = self.committer.committed_seq();
        let shards: Vec<i32> = self
            .committer
            .writing_shards()
            .into_iter()
            .filter_map(|s| i32::try_from(s).ok())
            .collect();
        let mut written = 0;
        let mut from = self.after;
        // Bounded, so a drainer behind a sustained inflow still deletes
        // rows between its batches; the watermark moves only once the
        // rows are all drained.
        let mut all = false;
        for _ in 0..PASS_BATCHES_MAX {
            let limit = BATCH_RECORDS_MAX as i64;
            let rows = client.query(NEXT_ROWS, &[&from, &shards, &limit])?;
            let batch: Vec<(i64, i32, &[u8])> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            if let Some(&(n, _, _)) = batch.last() {
                written += write_rows(client, archive, &batch)?;
                from = n;
            }
            if batch.len() < BATCH_RECORDS_MAX {
                all = true;
                break;
            }
        }
        self.after = from;
        if all {
            self.progress.advance(committed);
        }
        if self.deleted_at.elapsed() >= RETENTION_INTERVAL {
            self.deleted_at = std::time::Instant::now();
            self.delete_old_rows(&shards)?;
        }
        let mut sessions = self.sessions.take();
        self.archive_retention(sessions.as_mut().map(|(_, a)| a));
        self.sessions = sessions;
        Ok(written)
    }

    /// The archive's retention, by the node serving shard 0: started once
    /// every [`ARCHIVE_RETENTION_EVERY_MS`], one bounded step a pass
    /// until nothing is left.
    fn archive_retention(&mut self, archive: Option<&mut archive::PgArchive>) {
        let Some(archive) = archive else { return };
        if !self.committer.serves(0) {
            self.archive_retention_pending = false;
            return;
        }
        let now_ms = self.clock.now_ms();
        if self
            .archive_retained_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= ARCHIVE_RETENTION_EVERY_MS)
        {
            self.archive_retained_ms = Some(now_ms);
            self.archive_retention_pending = true;
        }
        if self.archive_retention_pending {
            let cutoff_ms = now_ms.saturating_sub(self.archive_retention_ms);
            self.archive_retention_pending = crate::drainer::retention_step(archive, cutoff_ms);
        }
    }

    /// Samples the highest `n`, then deletes of `shards` the payment rows
    /// archived and older than `cluster.records_retention_s`, the counted
    /// card attempts older than 25 h, and the attempts and checkpoints
    /// below the begin mark of each shard's latest velocity checkpoint, in
    /// steps of
    /// [`DELETE_ROWS_MAX`].
    fn delete_old_rows(&mut self, shards: &[i32]) -> anyhow::Result<()> {
        let Some((client, _)) = self.sessions.as_mut() else {
            return Ok(());
        };
        let top: i64 = client
            .query_one("SELECT COALESCE(max(n), 0) FROM cluster_records", &[])?
            .get(0);
        let now = std::time::Instant::now();
        if self.samples.len() == SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back((now, top));
        // The highest sample at least `age` old.
        let cut = |samples: &std::collections::VecDeque<(std::time::Instant, i64)>, age| {
            samples
                .iter()
                .take_while(|(at, _)| now.duration_since(*at) >= age)
                .last()
                .map(|&(_, n)| n)
        };
        let payments = cut(&self.samples, Duration::from_secs(self.retention_s));
        let velocity = cut(
            &self.samples,
            Duration::from_secs(VELOCITY_RECORDS_KEPT_S as u64),
        )
        .unwrap_or(0)
        .max(self.velocity_floor);
        // Samples older than both cuts are no longer needed but the last.
        while self.samples.len() > 1
            && now.duration_since(self.samples[1].0)
                >= Duration::from_secs(self.retention_s.max(VELOCITY_RECORDS_KEPT_S as u64))
        {
            self.samples.pop_front();
        }
        for (sql, below) in [
            (DELETE_PAYMENT_ROWS, payments.unwrap_or(0)),
            (DELETE_VELOCITY_ROWS, velocity),
            (DELETE_CHECKPOINTED_ROWS, i64::MAX),
        ] {
            if below == 0 {
                continue;
            }
            loop {
                let gone = client.execute(sql, &[&shards, &below, &DELETE_ROWS_MAX])?;
                ::metrics::counter!("switch_cluster_records_deleted_total").increment(gone);
                if gone < DELETE_ROWS_MAX as u64 {
                    break;
                }
            }
        }
        Ok(())
    }
}
