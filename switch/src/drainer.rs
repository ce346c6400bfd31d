//! The drainer: journal records into the archive, write-behind and
//! batched, on its own thread.
//!
//! It tails the journal from the archive's watermark (only what is
//! durable), applies up to [`archive::BATCH_RECORDS_MAX`] records per
//! transaction as idempotent upserts, and publishes the new watermark: the
//! engine lets a payment (or an answer) leave memory only once the
//! watermark covers its last record, and the journal deletes a segment
//! only once both a snapshot and the watermark cover it (its retain
//! floor, with the webhook dispatcher's watermark: `retain`). A batch that fails is retried, whole, with a growing pause;
//! meanwhile `/readyz` says why, and memory, which waits for the archive,
//! fills until new payments are answered 96. Nothing is lost: the records
//! stay in the journal until the archive has them.
//!
//! Once an hour it also deletes payments past `archive.retention_days`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use archive::{Archive, BATCH_RECORDS_MAX, DELETE_PAYMENTS_MAX};
use journal::Journal;

use crate::archive_stage::{Progress, Store};
use crate::clock::Clock;
use crate::retain::RetainFloor;

/// Pause when the journal has nothing new.
const IDLE_PAUSE: Duration = Duration::from_millis(5);
/// First pause after a failed batch; it doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(100);
/// Longest pause between attempts while the archive fails.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);
/// How often payments past the retention period are deleted.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3_600);
/// How often segments the watermark now covers are deleted.
const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

/// The running drainer.
pub(crate) struct Drainer {
    /// Set to stop it.
    stop: Arc<AtomicBool>,
    /// Its thread.
    thread: Option<JoinHandle<()>>,
}

impl Drainer {
    /// Starts draining `journal` into `store` from the store's watermark;
    /// when the journal no longer holds the records after it (a new
    /// archive beside an old journal), the payments in memory are written
    /// first (`seed`), then the journal from its first record on disk.
    ///
    /// # Errors
    /// When the store's watermark cannot be read, seeding fails, or the
    /// journal cannot be tailed.
    pub(crate) fn start(
        journal: Arc<Journal>,
        mut store: Store,
        progress: Arc<Progress>,
        seed: impl FnOnce(&mut dyn Archive) -> anyhow::Result<()>,
        clock: Clock,
        retention_ms: u64,
        floor: Arc<RetainFloor>,
    ) -> anyhow::Result<Drainer> {
        let watermark = store
            .get()
            .watermark()
            .context("reading the archive's watermark")?;
        let tail = match journal.tail(watermark) {
            Ok(tail) => tail,
            Err(journal::Error::TailGap {
                wanted,
                first_available,
            }) => {
                tracing::warn!(
                    watermark,
                    wanted,
                    first_available,
                    "archive: the journal no longer holds the records after the archive's watermark; writing the payments in memory to the archive first"
                );
                seed(store.get()).context("writing the payments in memory to the archive")?;
                journal
                    .tail(first_available.saturating_sub(1))
                    .context("tailing the journal")?
            }
            Err(e) => return Err(e).context("tailing the journal"),
        };
        progress.advance(tail.position());
        floor.set_archive(watermark);
        let stop = Arc::new(AtomicBool::new(false));
        let run = Run {
            journal,
            store,
            progress,
            tail,
            stop: stop.clone(),
            clock,
            retention_ms,
            floor,
        };
        let thread = std::thread::Builder::new()
            .name("archive-drainer".into())
            .spawn(move || run.run())
            .context("starting the archive drainer")?;
        Ok(Drainer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops after the batch in progress (what is not archived yet is in
    /// the journal, and drained at the next start).
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("archive drainer panicked");
            }
        }
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The drainer thread's state.
struct Run {
    journal: Arc<Journal>,
    store: Store,
    progress: Arc<Progress>,
    tail: journal::Tail,
    stop: Arc<AtomicBool>,
    clock: Clock,
    retention_ms: u64,
    /// Where the watermark holds the journal's segments.
    floor: Arc<RetainFloor>,
}

impl Run {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn run(mut self) {
        let mut batch: Vec<(u64, Vec<u8>)> = Vec::with_capacity(BATCH_RECORDS_MAX);
        let mut last_release = Instant::now();
        let mut last_retention: Option<Instant> = None;
        let mut retention_pending = false;
        while !self.stopping() {
            if last_retention.is_none_or(|t| t.elapsed() >= RETENTION_INTERVAL) {
                retention_pending = true;
                last_retention = Some(Instant::now());
            }
            if retention_pending {
                // One bounded step per batch, so draining goes on meanwhile.
                retention_pending = self.retention_step();
            }
            batch.clear();
            let upto = self.journal.durable_seq();
            let read = self.tail.read(upto, BATCH_RECORDS_MAX, |r| {
                // Only payments go to the archive; other records (upstream
                // forwards and SAF) pass empty and are skipped there.
                let payload = if r.record_type == engine::record::RECORD_PAYMENT {
                    r.payload.to_vec()
                } else {
                    Vec::new()
                };
                batch.push((r.seq, payload));
            });
            if let Err(e) = read {
                // The journal itself is damaged or gone under the tail: the
                // journal's own health says so; keep trying from here.
                self.failed(&format!("reading the journal: {e}"));
                self.pause(RETRY_PAUSE_MAX);
                continue;
            }
            ::metrics::gauge!("switch_archive_lag_records")
                .set(self.journal.last_seq().saturating_sub(self.tail.position()) as f64);
            if batch.is_empty() {
                self.pause(IDLE_PAUSE);
            } else if !self.apply(&batch) {
                return;
            }
            if last_release.elapsed() >= RELEASE_INTERVAL {
                self.release();
                last_release = Instant::now();
            }
        }
    }

    /// Applies `batch` until it commits (or the drainer stops: false).
    fn apply(&mut self, batch: &[(u64, Vec<u8>)]) -> bool {
        let records: Vec<(u64, &[u8])> = batch.iter().map(|(s, p)| (*s, p.as_slice())).collect();
        let mut pause = RETRY_PAUSE_MIN;
        loop {
            let started = Instant::now();
            match self.store.get().apply(&records) {
                Ok(_) => {
                    ::metrics::histogram!("switch_archive_batch_seconds")
                        .record(started.elapsed().as_secs_f64());
                    ::metrics::counter!("switch_archive_records_total")
                        .increment(records.len() as u64);
                    let last = self.tail.position();
                    self.progress.advance(last);
                    ::metrics::gauge!("switch_archive_watermark").set(last as f64);
                    if self.progress.failure().is_some() {
                        tracing::info!("archive: writing again");
                        self.progress.set_failure(None);
                    }
                    self.floor.set_archive(last);
                    return true;
                }
                Err(e) => {
                    ::metrics::counter!("switch_archive_errors_total", "op" => "apply")
                        .increment(1);
                    self.failed(&e.to_string());
                    if self.stopping() {
                        return false;
                    }
                    self.pause(pause);
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                    if self.stopping() {
                        return false;
                    }
                }
            }
        }
    }

    /// Records a failure; warns at most once per budget window.
    fn failed(&self, why: &str) {
        crate::ratelog::warn_limited!(
            "archive_apply",
            error = why,
            "archive: a batch failed; retrying (records stay in the journal)"
        );
        self.progress.set_failure(Some(why.to_owned()));
    }

    /// Deletes the journal segments the watermark and a snapshot now cover.
    fn release(&self) {
        if let Err(e) = self.journal.release_covered() {
            crate::ratelog::warn_limited!("journal_release", error = %e, "journal: deleting covered segments failed");
        }
        if let Ok((segments, bytes)) = self.journal.disk_segments() {
            ::metrics::gauge!("switch_journal_segments").set(segments as f64);
            ::metrics::gauge!("switch_journal_disk_bytes").set(bytes as f64);
        }
    }

    /// Deletes up to [`DELETE_PAYMENTS_MAX`] payments created before the
    /// retention period; whether more may be left.
    fn retention_step(&mut self) -> bool {
        let cutoff_ms = self.clock.now_ms().saturating_sub(self.retention_ms);
        retention_step(self.store.get(), cutoff_ms)
    }

    /// Sleeps `d`, waking early to stop.
    fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// Deletes up to [`DELETE_PAYMENTS_MAX`] payments of `archive` created
/// before `cutoff_ms` (`archive.retention_days`), counted and logged;
/// whether more may be left. A failure is logged at a bounded rate and
/// tried again at the next step.
pub(crate) fn retention_step(archive: &mut dyn Archive, cutoff_ms: u64) -> bool {
    match archive.delete_created_before(cutoff_ms) {
        Ok(n) => {
            if n > 0 {
                ::metrics::counter!("switch_archive_deleted_total").increment(n as u64);
                tracing::info!(
                    deleted = n,
                    "archive: payments past archive.retention_days deleted"
                );
            }
            n == DELETE_PAYMENTS_MAX
        }
        Err(e) => {
            crate::ratelog::warn_limited!("archive_retention", error = %e, "archive: deleting payments past retention failed");
            false
        }
    }
}
