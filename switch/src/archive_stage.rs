//! The archive stage: where payments live once they leave memory. The
//! drainer (`drainer.rs`) writes journal records into the archive and
//! publishes its watermark here; the engine's lookups
//! ([`engine::Wait::Archive`]), the back office's gets and lists and the
//! health check read through here.
//!
//! Lookups use their own connection to the store (the drainer has
//! another), behind a lock: they are rare (follow-ups and repeats of
//! payments memory let go, back-office reads), and each is one indexed
//! read. A request waiting for one blocks its own connection only: on the
//! multi-threaded runtime the wait is [`tokio::task::block_in_place`], so
//! the worker's other connections move to another thread. Every store call
//! runs on a thread outside the async runtime ([`off_runtime`]): the
//! PostgreSQL client blocks on a runtime of its own, which tokio forbids
//! inside another.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use archive::{Archive, ArchiveError};
use engine::{Fetch, Fetched, ListFilter, Payment};

use crate::config::ArchiveSettings;

pub(crate) use crate::blocking::off_runtime;

/// An archive store that is closed off the async runtime.
pub(crate) struct Store(Option<Box<dyn Archive>>);

impl Store {
    /// The store.
    pub(crate) fn get(&mut self) -> &mut dyn Archive {
        match &mut self.0 {
            Some(s) => &mut **s,
            None => unreachable!("a store is only taken when dropped"),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(store) = self.0.take() {
            off_runtime(move || drop(store));
        }
    }
}

/// Opens the store `settings.url` names: SQLite in `data_dir` when empty.
///
/// # Errors
/// When the store cannot be opened; the message names `archive.url` (with
/// any password hidden) or the file.
pub(crate) fn open_store(settings: &ArchiveSettings, data_dir: &Path) -> anyhow::Result<Store> {
    off_runtime(|| {
        let store: Box<dyn Archive> = if settings.url.is_empty() {
            let store = archive::SqliteArchive::open(data_dir)
                .with_context(|| format!("opening the archive in {}", data_dir.display()))?;
            Box::new(store)
        } else {
            let store = archive::PgArchive::connect(&settings.url)
                .with_context(|| format!("archive.url `{}`", settings.redacted_url()))?;
            Box::new(store)
        };
        Ok(Store(Some(store)))
    })
}

/// What the drainer reports, read by lookups, the timers and `/readyz`.
#[derive(Default)]
pub(crate) struct Progress {
    /// Every journal record up to it is in the archive.
    watermark: AtomicU64,
    /// Why the drainer cannot write now; `None` while it can.
    failure: Mutex<Option<String>>,
}

impl Progress {
    /// The archive's watermark.
    pub(crate) fn watermark(&self) -> u64 {
        self.watermark.load(Ordering::Acquire)
    }

    /// Publishes a new watermark (the drainer, after a commit).
    pub(crate) fn advance(&self, seq: u64) {
        self.watermark.fetch_max(seq, Ordering::AcqRel);
    }

    /// Records why writing fails (`None`: it works again).
    pub(crate) fn set_failure(&self, why: Option<String>) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    /// Why writing fails, if it does.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The archive as the rest of the switch sees it.
pub(crate) struct ArchiveStage {
    /// The lookups' connection.
    reader: Mutex<Store>,
    /// What the drainer reports.
    pub(crate) progress: Arc<Progress>,
    /// `archive.lag_records_max`.
    lag_records_max: u64,
}

/// Runs `f`, a blocking store call, without holding up the other tasks of
/// this runtime worker (on the multi-threaded runtime; tests' single
/// thread runs it in place).
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl ArchiveStage {
    /// The stage over `reader`, reporting the drainer's `progress`.
    pub(crate) fn new(reader: Store, progress: Arc<Progress>, lag_records_max: u64) -> Self {
        ArchiveStage {
            reader: Mutex::new(reader),
            progress,
            lag_records_max,
        }
    }

    fn with_reader<R: Send>(&self, f: impl FnOnce(&dyn Archive) -> R + Send) -> R {
        blocking(|| {
            let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
            let store = reader.get();
            off_runtime(move || f(store))
        })
    }

    /// Looks up what `fetch` asks for and adds it to `into`.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub(crate) fn lookup(&self, fetch: Fetch, into: &mut Fetched) -> Result<(), ArchiveError> {
        let started = std::time::Instant::now();
        // Before the read: the copy read holds at least this much.
        into.archived_seq = self.progress.watermark();
        let found = self.with_reader(|a| archive::fetch(a, fetch, into));
        ::metrics::histogram!("switch_archive_lookup_seconds")
            .record(started.elapsed().as_secs_f64());
        found
    }

    /// Payment `id` from the archive, if it belongs to one of `scope`'s
    /// merchants.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub(crate) fn payment(&self, scope: &[u32], id: u64) -> Result<Option<Payment>, ArchiveError> {
        let p = self.with_reader(|a| a.payment(id))?;
        Ok(p.filter(|p| scope.contains(&p.merchant)))
    }

    /// One page from the archive (see [`Archive::list`]).
    ///
    /// # Errors
    /// When the store cannot be read, or a limit is passed.
    pub(crate) fn list(
        &self,
        scope: &[u32],
        filter: &ListFilter<'_>,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<archive::Page, ArchiveError> {
        self.with_reader(|a| a.list(scope, filter, before_id, limit))
    }

    /// Open pre-authorizations of `merchant` created before
    /// `created_before_ms` (see [`Archive::open_holds`]).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub(crate) fn open_holds(
        &self,
        merchant: u32,
        created_before_ms: u64,
        limit: usize,
    ) -> Result<Vec<Payment>, ArchiveError> {
        self.with_reader(|a| a.open_holds(merchant, created_before_ms, limit))
    }

    /// Why the switch should not take traffic because of the archive:
    /// the drainer cannot write, or it is more than
    /// `archive.lag_records_max` records behind the journal's `last_seq`.
    pub(crate) fn unready(&self, last_seq: u64) -> Option<String> {
        if let Some(why) = self.progress.failure() {
            return Some(format!("archive failing: {why}"));
        }
        let lag = last_seq.saturating_sub(self.progress.watermark());
        (lag > self.lag_records_max).then(|| {
            format!(
                "archive behind: {lag} journal records not yet archived (archive.lag_records_max {})",
                self.lag_records_max
            )
        })
    }
}
