//! The journal handle: open and recover, append, await durability, snapshot,
//! shut down.
//!
//! Appending: `try_append` checks the payload size, reserves one of
//! `JOURNAL_QUEUE_DEPTH_MAX` queue slots (a CAS on `in_flight`), takes the
//! next sequence number from an atomic counter, encodes the frame (CRC
//! included) into a pooled buffer on the caller's thread, and sends it. No
//! lock, no allocation after warm-up. The caller keeps the sequence number
//! and awaits `wait_durable(seq)`; the writer publishes the durable sequence
//! after every group fsync through an atomic, a tokio `watch` (async
//! waiters) and a condvar (blocking waiters).
//!
//! Retention: a segment is deleted only when every record in it is at or
//! below both the newest snapshot's seq and the retain floor (the archive's
//! watermark, when an archive is fed from the journal through a
//! [`crate::Tail`]); with no floor set, the snapshot alone decides.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Sender, TrySendError};
use crossbeam::queue::ArrayQueue;
use tokio::sync::{watch, Notify};

use crate::error::{io, AppendError, BoxError, Error};
use crate::format::{
    encode_frame, parse_name, segment_header, segment_name, snapshot_header, snapshot_name,
    FileKind, FLUSH_INTERVAL_MS_MAX, JOURNAL_QUEUE_DEPTH_MAX, RECORD_PAYLOAD_BYTES_MAX,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SNAPSHOT_BYTES_MAX,
};
use crate::metric;
use crate::recovery::{recover, RecoveryReport, Replay};
use crate::storage::Storage;
use crate::tail::Tail;
use crate::writer::{Msg, Writer};

/// When a state-changing response may leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// Only after its record is fsynced (`ack` waits for durability).
    #[default]
    Durable,
    /// At once; the writer fsyncs at least every `flush_interval`, so a power
    /// loss loses at most that interval plus the queue (`ack` does not wait).
    Immediate,
}

/// Whether the journal accepts records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Accepting and writing.
    Running,
    /// A write or fsync failed: stop approving, report not-ready, restart.
    Failed,
    /// Shut down cleanly.
    Closed,
}

/// Journal settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding segments and snapshots (created if missing).
    pub dir: PathBuf,
    /// Durable (default) or immediate acknowledgement.
    pub ack: AckMode,
    /// Immediate mode's fsync interval; at most `FLUSH_INTERVAL_MS_MAX`.
    pub flush_interval: Duration,
    /// Rotation size, `SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX`.
    pub segment_bytes: u64,
    /// How long `append` waits for queue space before `Full`.
    pub queue_wait: Duration,
    /// Keep the valid prefix of a corrupt journal instead of refusing to open.
    pub repair: bool,
    /// The retain floor at open (see [`Journal::set_retain_floor`]): the
    /// archive watermark, read before the journal opens, so recovery keeps
    /// the segments the archive has not taken yet. `None`: no floor.
    pub retain_floor: Option<u64>,
}

impl Config {
    /// Defaults: durable acks, 5 ms flush interval, 64 MiB segments, 20 ms
    /// queue wait, no repair.
    pub fn new(dir: impl Into<PathBuf>) -> Config {
        Config {
            dir: dir.into(),
            ack: AckMode::Durable,
            flush_interval: Duration::from_millis(FLUSH_INTERVAL_MS_MAX),
            segment_bytes: SEGMENT_BYTES_MAX,
            queue_wait: Duration::from_millis(20),
            repair: false,
            retain_floor: None,
        }
    }

    fn check(&self) -> Result<(), Error> {
        if self.flush_interval > Duration::from_millis(FLUSH_INTERVAL_MS_MAX) {
            return Err(Error::Config("flush_interval above FLUSH_INTERVAL_MS_MAX"));
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(Error::Config(
                "segment_bytes outside SEGMENT_BYTES_MIN..=MAX",
            ));
        }
        Ok(())
    }
}

/// Durable sequence and status, published together by the writer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Every record at or below this is fsynced.
    durable_seq: u64,
    /// Running, failed or closed.
    status: Status,
}

/// State shared by the handle, appenders and the writer thread.
pub(crate) struct Shared {
    /// Durable sequence for lock-free reads.
    durable_seq: AtomicU64,
    /// `Status` as u8 for lock-free reads.
    status: AtomicU8,
    /// Async waiters' wake-up.
    progress: watch::Sender<Progress>,
    /// Blocking waiters' wake-up (the mutex guards nothing but the wait).
    blocking: (Mutex<()>, Condvar),
    /// Blocking waiters present: the writer skips the condvar otherwise.
    blocking_waiters: AtomicUsize,
    /// Shutdown requested: appends refuse, the writer drains and stops.
    pub(crate) closing: AtomicBool,
    /// Queue reservations: sequences assigned (or about to be) but not yet
    /// placed by the writer. At most `JOURNAL_QUEUE_DEPTH_MAX`.
    pub(crate) in_flight: AtomicUsize,
    /// Next sequence to assign.
    next_seq: AtomicU64,
    /// Wakes async appenders waiting for queue space.
    pub(crate) space: Notify,
    /// Frame buffers returned by the writer, so appends do not allocate.
    pub(crate) pool: ArrayQueue<Vec<u8>>,
    /// Segments on disk `(first_seq, path)`, oldest first; the last is active.
    segments: Mutex<Vec<(u64, PathBuf)>>,
}

impl Shared {
    /// Publishes progress to every kind of waiter.
    pub(crate) fn publish(&self, durable_seq: u64, status: Status) {
        self.durable_seq.store(durable_seq, Ordering::SeqCst);
        self.status.store(status as u8, Ordering::SeqCst);
        self.progress.send_replace(Progress {
            durable_seq,
            status,
        });
        if self.blocking_waiters.load(Ordering::SeqCst) > 0 {
            let _guard = self.blocking.0.lock().unwrap_or_else(|e| e.into_inner());
            self.blocking.1.notify_all();
        }
    }

    /// Every record at or below this sequence is fsynced.
    pub(crate) fn durable_seq(&self) -> u64 {
        self.durable_seq.load(Ordering::SeqCst)
    }

    fn status(&self) -> Status {
        match self.status.load(Ordering::SeqCst) {
            0 => Status::Running,
            1 => Status::Failed,
            _ => Status::Closed,
        }
    }

    /// The segment list; poisoning is ignored (the list stays consistent).
    pub(crate) fn segments_lock(&self) -> MutexGuard<'_, Vec<(u64, PathBuf)>> {
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The durable sequence as a connection task sees it: read at once, and
/// awaited for the writer's next group commit. The writer thread wakes the
/// holders itself, with no task in between.
#[derive(Clone)]
pub struct DurableWatch {
    /// The writer's published progress.
    rx: watch::Receiver<Progress>,
}

impl std::fmt::Debug for DurableWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableWatch")
            .field("durable_seq", &self.durable_seq())
            .finish()
    }
}

impl DurableWatch {
    /// Every record at or below this sequence is fsynced.
    pub fn durable_seq(&self) -> u64 {
        self.rx.borrow().durable_seq
    }

    /// Waits for the writer's next publication (a group commit, or the
    /// journal stopping). A publication made since the last call returns at
    /// once, so none is missed.
    ///
    /// # Errors
    /// `Failed` or `Closed` once the journal has stopped: nothing more will
    /// become durable ([`DurableWatch::durable_seq`] gives its last word).
    pub async fn changed(&mut self) -> Result<(), AppendError> {
        let stopped = |status| match status {
            Status::Running => Ok(()),
            Status::Failed => Err(AppendError::Failed),
            Status::Closed => Err(AppendError::Closed),
        };
        // Stopped before the call: no publication will come.
        stopped(self.rx.borrow().status)?;
        if self.rx.changed().await.is_err() {
            return Err(AppendError::Closed);
        }
        let status = self.rx.borrow_and_update().status;
        stopped(status)
    }
}

/// Publishes a durable sequence to [`DurableWatch`]es from a writer that is
/// not this crate's (cluster mode's PostgreSQL committer): the connections
/// wait on it as they wait on the journal.
#[derive(Debug)]
pub struct DurablePublisher {
    /// What the watches read.
    tx: watch::Sender<Progress>,
}

impl DurablePublisher {
    /// A publisher at durable sequence 0, running, and its first watch.
    pub fn new() -> (Self, DurableWatch) {
        let (tx, rx) = watch::channel(Progress {
            durable_seq: 0,
            status: Status::Running,
        });
        (DurablePublisher { tx }, DurableWatch { rx })
    }

    /// Every record at or below `durable_seq` is durable.
    pub fn publish(&self, durable_seq: u64) {
        self.tx
            .send_modify(|p| p.durable_seq = p.durable_seq.max(durable_seq));
    }

    /// Nothing more will become durable: held answers never leave.
    pub fn fail(&self) {
        self.tx.send_modify(|p| p.status = Status::Failed);
    }

    /// A watch of this publisher.
    pub fn watch(&self) -> DurableWatch {
        DurableWatch {
            rx: self.tx.subscribe(),
        }
    }
}

/// The write-behind journal. Share it as `Arc<Journal>`; every method takes
/// `&self`.
pub struct Journal {
    /// State shared with the writer thread.
    shared: Arc<Shared>,
    /// Queue to the writer; capacity `JOURNAL_QUEUE_DEPTH_MAX + 1` (one slot
    /// for the shutdown wake-up).
    tx: Sender<Msg>,
    /// The writer thread, joined by `shutdown`.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// File layer, for snapshots.
    storage: Arc<dyn Storage>,
    /// Journal directory.
    dir: PathBuf,
    /// Acknowledgement mode, for `ack`.
    ack: AckMode,
    /// Bounded wait for queue space.
    queue_wait: Duration,
    /// One snapshot at a time.
    snapshot_lock: Mutex<()>,
    /// Seq of the newest snapshot on disk (0 for none): half of the
    /// retention bound.
    snapshot_seq: AtomicU64,
    /// The retain floor (`None`: no floor): the other half. A mutex, not an
    /// atomic, so that "not set" and a monotonic raise stay simple; held
    /// for a comparison only, never across I/O.
    retain_floor: Mutex<Option<u64>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("durable_seq", &self.durable_seq())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Recovers `config.dir` and starts the writer. `apply` receives the
    /// newest valid snapshot (if any), then every later record in sequence
    /// order, before this returns.
    ///
    /// # Errors
    /// [`Error::Corruption`] naming file and offset (unless `config.repair`),
    /// [`Error::Io`], [`Error::Config`], or [`Error::Apply`] from `apply`.
    pub fn open(
        config: Config,
        storage: Arc<dyn Storage>,
        mut apply: impl FnMut(Replay<'_>) -> Result<(), BoxError>,
    ) -> Result<(Journal, RecoveryReport), Error> {
        config.check()?;
        let dir = config.dir.clone();
        let floor = config.retain_floor.unwrap_or(u64::MAX);
        let recovered = recover(&*storage, &dir, config.repair, floor, &mut apply)?;
        let next_seq = recovered.report.next_seq;
        let path = dir.join(segment_name(next_seq));
        let mut file = storage.create_segment(&path).map_err(io(&path))?;
        file.write_all(&segment_header(next_seq))
            .map_err(io(&path))?;
        file.sync().map_err(io(&path))?;
        storage.sync_dir(&dir).map_err(io(&dir))?;
        let mut segments = recovered.segments;
        segments.push((next_seq, path));
        let durable_seq = next_seq - 1;
        let progress = Progress {
            durable_seq,
            status: Status::Running,
        };
        let shared = Arc::new(Shared {
            durable_seq: AtomicU64::new(durable_seq),
            status: AtomicU8::new(Status::Running as u8),
            progress: watch::Sender::new(progress),
            blocking: (Mutex::new(()), Condvar::new()),
            blocking_waiters: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            next_seq: AtomicU64::new(next_seq),
            space: Notify::new(),
            pool: ArrayQueue::new(JOURNAL_QUEUE_DEPTH_MAX),
            segments: Mutex::new(segments),
        });
        for _ in 0..JOURNAL_QUEUE_DEPTH_MAX {
            let _ = shared.pool.push(Vec::with_capacity(256));
        }
        let (tx, rx) = bounded(JOURNAL_QUEUE_DEPTH_MAX + 1);
        let writer = Writer::new(shared.clone(), rx, storage.clone(), &config, file, next_seq);
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run())
            .map_err(io(&dir))?;
        let journal = Journal {
            shared,
            tx,
            writer: Mutex::new(Some(handle)),
            storage,
            dir,
            ack: config.ack,
            queue_wait: config.queue_wait,
            snapshot_lock: Mutex::new(()),
            snapshot_seq: AtomicU64::new(recovered.report.snapshot_seq.unwrap_or(0)),
            retain_floor: Mutex::new(config.retain_floor),
        };
        Ok((journal, recovered.report))
    }

    /// Queues one record without waiting; returns its sequence number.
    ///
    /// # Errors
    /// `Full` when `JOURNAL_QUEUE_DEPTH_MAX` records are queued, `Failed`,
    /// `Closed`, `PayloadTooLarge`.
    pub fn try_append(&self, record_type: u8, payload: &[u8]) -> Result<u64, AppendError> {
        let result = self.try_append_quiet(record_type, payload);
        if result == Err(AppendError::Full) {
            metrics::counter!(metric::QUEUE_FULL).increment(1);
        }
        result
    }

    /// Queues one record, waiting up to `Config::queue_wait` for space
    /// without blocking the thread; returns its sequence number.
    ///
    /// # Errors
    /// As [`Journal::try_append`]; `Full` only after the bounded wait.
    pub async fn append(&self, record_type: u8, payload: &[u8]) -> Result<u64, AppendError> {
        let deadline = tokio::time::Instant::now() + self.queue_wait;
        loop {
            let space = self.shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.try_append_quiet(record_type, payload) {
                Err(AppendError::Full) => {}
                result => return result,
            }
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                return self.try_append(record_type, payload);
            }
        }
    }

    /// [`Journal::append`] for threads outside tokio: waits (sleeping in
    /// short steps) up to `Config::queue_wait` for space.
    ///
    /// # Errors
    /// As [`Journal::try_append`]; `Full` only after the bounded wait.
    pub fn append_blocking(&self, record_type: u8, payload: &[u8]) -> Result<u64, AppendError> {
        let deadline = Instant::now() + self.queue_wait;
        loop {
            match self.try_append_quiet(record_type, payload) {
                Err(AppendError::Full) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(AppendError::Full) => return self.try_append(record_type, payload),
                result => return result,
            }
        }
    }

    fn try_append_quiet(&self, record_type: u8, payload: &[u8]) -> Result<u64, AppendError> {
        if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
            return Err(AppendError::PayloadTooLarge);
        }
        self.check_running()?;
        let reserved =
            self.shared
                .in_flight
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < JOURNAL_QUEUE_DEPTH_MAX).then_some(n + 1)
                });
        if reserved.is_err() {
            return Err(AppendError::Full);
        }
        let seq = self.shared.next_seq.fetch_add(1, Ordering::SeqCst);
        let mut frame = self.shared.pool.pop().unwrap_or_default();
        frame.clear();
        encode_frame(&mut frame, seq, record_type, payload);
        match self.tx.try_send(Msg::Record { seq, frame }) {
            Ok(()) => Ok(seq),
            // The reservation guarantees room: only a stopped writer refuses.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                Err(self.check_running().err().unwrap_or(AppendError::Failed))
            }
        }
    }

    fn check_running(&self) -> Result<(), AppendError> {
        match self.shared.status() {
            Status::Failed => Err(AppendError::Failed),
            Status::Closed => Err(AppendError::Closed),
            Status::Running if self.shared.closing.load(Ordering::SeqCst) => {
                Err(AppendError::Closed)
            }
            Status::Running => Ok(()),
        }
    }

    /// Waits, without blocking the thread, until record `seq` is durable.
    ///
    /// # Errors
    /// `Failed` or `Closed` if the journal stops before `seq` is durable.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), AppendError> {
        if self.durable_seq() >= seq {
            return Ok(());
        }
        let mut rx = self.shared.progress.subscribe();
        let progress = match rx
            .wait_for(|p| p.durable_seq >= seq || p.status != Status::Running)
            .await
        {
            Ok(progress) => *progress,
            Err(_) => return Err(AppendError::Closed),
        };
        Self::outcome(progress, seq)
    }

    /// [`Journal::wait_durable`] for threads outside tokio.
    ///
    /// # Errors
    /// `Failed` or `Closed` if the journal stops before `seq` is durable.
    pub fn wait_durable_blocking(&self, seq: u64) -> Result<(), AppendError> {
        let (lock, condvar) = &self.shared.blocking;
        self.shared.blocking_waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let progress = loop {
            let status = self.shared.status();
            let durable_seq = self.durable_seq();
            if durable_seq >= seq || status != Status::Running {
                break Progress {
                    durable_seq,
                    status,
                };
            }
            guard = condvar.wait(guard).unwrap_or_else(|e| e.into_inner());
        };
        drop(guard);
        self.shared.blocking_waiters.fetch_sub(1, Ordering::SeqCst);
        Self::outcome(progress, seq)
    }

    fn outcome(progress: Progress, seq: u64) -> Result<(), AppendError> {
        match progress.status {
            _ if progress.durable_seq >= seq => Ok(()),
            Status::Failed => Err(AppendError::Failed),
            _ => Err(AppendError::Closed),
        }
    }

    /// What a connection task awaits before sending a state-changing
    /// response: durability in `Durable` mode, nothing in `Immediate` mode
    /// (unless the journal has failed).
    ///
    /// # Errors
    /// `Failed` or `Closed`.
    pub async fn ack(&self, seq: u64) -> Result<(), AppendError> {
        match self.ack {
            AckMode::Durable => self.wait_durable(seq).await,
            AckMode::Immediate => match self.shared.status() {
                Status::Failed => Err(AppendError::Failed),
                _ => Ok(()),
            },
        }
    }

    /// A watch on the durable sequence, for tasks that hold answers until
    /// their records are durable.
    pub fn durable_watch(&self) -> DurableWatch {
        DurableWatch {
            rx: self.shared.progress.subscribe(),
        }
    }

    /// Every record at or below this sequence is fsynced.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq.load(Ordering::SeqCst)
    }

    /// Highest sequence assigned so far (0 for none).
    pub fn last_seq(&self) -> u64 {
        self.shared.next_seq.load(Ordering::SeqCst) - 1
    }

    /// Running, failed (stop approving, report not-ready) or closed.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// The acknowledgement mode it was opened with.
    pub fn ack_mode(&self) -> AckMode {
        self.ack
    }

    /// Durably stores `bytes` as the switch state covering every record up to
    /// `seq` (tmp file, fsync, rename, directory fsync), then deletes older
    /// snapshots and the segments it covers, except those holding records
    /// above the retain floor. Blocking I/O: call it from a blocking thread
    /// (`spawn_blocking`).
    ///
    /// # Errors
    /// [`Error::SnapshotAhead`] when `seq > durable_seq()` (await it first),
    /// [`Error::Failed`], [`Error::Config`] over `SNAPSHOT_BYTES_MAX`, or
    /// [`Error::Io`] (the journal itself stays usable).
    pub fn snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), Error> {
        let _one_at_a_time = self.snapshot_lock.lock().unwrap_or_else(|e| e.into_inner());
        let durable_seq = self.durable_seq();
        if seq > durable_seq {
            return Err(Error::SnapshotAhead { seq, durable_seq });
        }
        if bytes.len() as u64 > SNAPSHOT_BYTES_MAX {
            return Err(Error::Config("snapshot larger than SNAPSHOT_BYTES_MAX"));
        }
        self.check_running()?;
        let started = Instant::now();
        let path = self.dir.join(snapshot_name(seq));
        let temp = self.dir.join(format!("{}.tmp", snapshot_name(seq)));
        let written = self.write_snapshot_file(&temp, seq, bytes);
        if written.is_err() {
            let _ = self.storage.remove(&temp);
        }
        written?;
        self.storage.rename(&temp, &path).map_err(io(&path))?;
        self.storage.sync_dir(&self.dir).map_err(io(&self.dir))?;
        self.snapshot_seq.fetch_max(seq, Ordering::SeqCst);
        self.remove_segments(self.retention_bound())?;
        self.remove_older_snapshots(seq)?;
        metrics::histogram!(metric::SNAPSHOT_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn write_snapshot_file(&self, temp: &Path, seq: u64, bytes: &[u8]) -> Result<(), Error> {
        let mut file = self.storage.create(temp).map_err(io(temp))?;
        file.write_all(&snapshot_header(seq, bytes))
            .map_err(io(temp))?;
        file.write_all(bytes).map_err(io(temp))?;
        file.sync().map_err(io(temp))
    }

    /// Sets the retain floor: segments holding any record above `seq` are
    /// kept even when a snapshot covers them, so a [`crate::Tail`] reading
    /// above `seq` finds them. The drainer sets it to the archive's
    /// watermark after each batch it applies. Monotonic: a lower `seq` than
    /// the floor already set changes nothing; `u64::MAX` means no floor
    /// (as before any call, unless [`Config::retain_floor`] set one).
    ///
    /// Memory only, no I/O: segments the raised floor uncovers are deleted
    /// by the next [`Journal::snapshot`] or [`Journal::release_covered`].
    pub fn set_retain_floor(&self, seq: u64) {
        let mut floor = self.retain_floor.lock().unwrap_or_else(|e| e.into_inner());
        *floor = Some(floor.map_or(seq, |old| old.max(seq)));
    }

    /// The seq up to which records may leave the disk: the lower of the
    /// newest snapshot's seq (0 for none) and the retain floor.
    fn retention_bound(&self) -> u64 {
        let floor = *self.retain_floor.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot_seq = self.snapshot_seq.load(Ordering::SeqCst);
        snapshot_seq.min(floor.unwrap_or(u64::MAX))
    }

    /// Deletes the segments that became covered since the last snapshot
    /// because the retain floor rose; returns how many. Blocking I/O (a
    /// delete per segment and a directory fsync when any went): call it
    /// from a blocking thread, after [`Journal::set_retain_floor`].
    ///
    /// A tail is never cut off by this: the floor is the archive watermark,
    /// the drainer's tail reads only above it, and a segment goes only when
    /// all its records are at or below the floor. (A tail keeps reading a
    /// segment it has open even if the name goes.)
    ///
    /// # Errors
    /// [`Error::Io`]; the journal stays usable.
    pub fn release_covered(&self) -> Result<usize, Error> {
        let removed = self.remove_segments(self.retention_bound())?;
        if removed > 0 {
            self.storage.sync_dir(&self.dir).map_err(io(&self.dir))?;
        }
        Ok(removed)
    }

    /// Segments on disk and their bytes (zeros written ahead included), for
    /// a gauge of the journal kept for the archive. Opens each segment to
    /// read its length: call it from a blocking thread, now and then.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn disk_segments(&self) -> Result<(usize, u64), Error> {
        let paths: Vec<PathBuf> = self
            .shared
            .segments_lock()
            .iter()
            .map(|s| s.1.clone())
            .collect();
        let (mut count, mut bytes) = (0, 0);
        for path in &paths {
            let file = match self.storage.open_read(path) {
                Ok(file) => file,
                // Deleted since the list was copied: not on disk.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(path)(e)),
            };
            count += 1;
            bytes += file.len_bytes().map_err(io(path))?;
        }
        Ok((count, bytes))
    }

    /// A reader of the records after `after_seq`, following this journal as
    /// it grows: see [`Tail`].
    ///
    /// # Errors
    /// [`Error::TailGap`] when record `after_seq + 1` is no longer on disk,
    /// [`Error::TailAhead`] when `after_seq` is above the durable seq,
    /// [`Error::Corruption`] for a bad segment header, [`Error::Io`].
    pub fn tail(&self, after_seq: u64) -> Result<Tail, Error> {
        let durable_seq = self.durable_seq();
        if after_seq > durable_seq {
            return Err(Error::TailAhead {
                after_seq,
                durable_seq,
            });
        }
        Tail::start(
            self.storage.clone(),
            &self.dir,
            after_seq,
            Some(self.shared.clone()),
        )
    }

    /// Deletes segments whose every record is at or below `bound` (never the
    /// active one); returns how many. The caller fsyncs the directory.
    fn remove_segments(&self, bound: u64) -> Result<usize, Error> {
        // Taken off the list under the lock, so concurrent callers delete
        // disjoint sets.
        let covered: Vec<PathBuf> = {
            let mut segments = self.shared.segments_lock();
            let count = (1..segments.len())
                .take_while(|&i| segments[i].0 <= bound.saturating_add(1))
                .count();
            segments.drain(..count).map(|s| s.1).collect()
        };
        for path in &covered {
            self.storage.remove(path).map_err(io(path))?;
        }
        Ok(covered.len())
    }

    /// Deletes snapshots older than `seq`, then fsyncs the directory (for
    /// these and the segments deleted before).
    fn remove_older_snapshots(&self, seq: u64) -> Result<(), Error> {
        for name in self.storage.list(&self.dir).map_err(io(&self.dir))? {
            if let Some((FileKind::Snapshot, older)) = parse_name(&name) {
                if older < seq {
                    let path = self.dir.join(name);
                    self.storage.remove(&path).map_err(io(&path))?;
                }
            }
        }
        self.storage.sync_dir(&self.dir).map_err(io(&self.dir))
    }

    /// Stops accepting records, writes and fsyncs everything queued, and
    /// joins the writer. Later calls return at once.
    ///
    /// # Errors
    /// [`Error::Failed`] if the journal failed before or during the flush.
    pub fn shutdown(&self) -> Result<(), Error> {
        if !self.shared.closing.swap(true, Ordering::SeqCst) {
            // The spare queue slot guarantees room for the wake-up.
            let _ = self.tx.try_send(Msg::Wake);
        }
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                self.shared.publish(self.durable_seq(), Status::Failed);
            }
        }
        match self.status() {
            Status::Failed => Err(Error::Failed),
            _ => Ok(()),
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
