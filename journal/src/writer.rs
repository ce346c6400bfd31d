//! The writer thread: takes frames off the queue in sequence order, batches
//! them, writes them to the active segment, fsyncs the group, rotates
//! segments, and publishes the durable sequence.
//!
//! Appenders assign sequence numbers themselves (an atomic counter) and may
//! reach the queue out of order; the writer parks early frames in a ring of
//! `JOURNAL_QUEUE_DEPTH_MAX` slots (indexed by `seq % depth`) until the gap
//! closes. The ring cannot alias: every sequence assigned but not yet placed
//! holds one of at most `JOURNAL_QUEUE_DEPTH_MAX` queue reservations.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError};

use crate::error::{io, Error};
use crate::format::{
    segment_header, segment_name, BATCH_BYTES_MAX, BATCH_RECORDS_MAX, FRAME_BYTES_MAX,
    JOURNAL_QUEUE_DEPTH_MAX, SEGMENT_HEADER_BYTES,
};
use crate::journal::{AckMode, Shared, Status};
use crate::metric;
use crate::storage::{Storage, StorageFile};

/// Pooled frame buffers larger than this are freed rather than reused, so one
/// large record does not pin memory in every pool slot.
const POOL_BUFFER_BYTES_MAX: usize = 4 << 10;

/// Queued records at which immediate mode stops gathering and writes at
/// once: half a batch, well under the queue's depth, so appenders never
/// find the queue full because the writer was waiting.
const GATHER_RECORDS_MAX: usize = BATCH_RECORDS_MAX / 2;
const _: () = assert!(GATHER_RECORDS_MAX < JOURNAL_QUEUE_DEPTH_MAX / 2);

/// What appenders send to the writer.
pub(crate) enum Msg {
    /// One encoded frame and its sequence number.
    Record {
        /// Sequence inside `frame`, kept beside it to place it without parsing.
        seq: u64,
        /// The whole frame, in a buffer from the pool.
        frame: Vec<u8>,
    },
    /// Shutdown was requested: look at `closing`.
    Wake,
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    /// Counters and wake-ups shared with the handle.
    pub(crate) shared: Arc<Shared>,
    /// The queue's receiving end; dropping it makes appends fail.
    pub(crate) rx: Receiver<Msg>,
    /// Where segment files go.
    pub(crate) storage: Arc<dyn Storage>,
    /// The journal directory.
    pub(crate) dir: PathBuf,
    /// Whether every group is fsynced or only every `flush_interval`.
    pub(crate) ack: AckMode,
    /// Longest time written data stays unsynced in immediate mode.
    pub(crate) flush_interval: Duration,
    /// Rotation size.
    pub(crate) segment_bytes: u64,
    /// The active segment.
    pub(crate) file: Box<dyn StorageFile>,
    /// Its path, for error messages.
    pub(crate) active: PathBuf,
    /// Logical size of the active segment, batched bytes included.
    pub(crate) file_bytes: u64,
    /// Records in the active segment, batched ones included.
    pub(crate) file_records: u64,
    /// Frames placed but not yet written: one write call per flush.
    pub(crate) batch: Vec<u8>,
    /// Records placed since the last fsync (the batch-size histogram).
    pub(crate) group_records: usize,
    /// Frames that arrived before their predecessors.
    pub(crate) reorder: Vec<Option<Vec<u8>>>,
    /// Sequence the next placed frame must carry.
    pub(crate) next_seq: u64,
    /// Last sequence handed to `write_all`.
    pub(crate) written_seq: u64,
    /// Last sequence fsynced.
    pub(crate) synced_seq: u64,
    /// When the last fsync finished (immediate mode's flush clock).
    pub(crate) last_sync: Instant,
}

impl Writer {
    /// Creates the writer for a freshly created active segment.
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: Receiver<Msg>,
        storage: Arc<dyn Storage>,
        config: &crate::Config,
        file: Box<dyn StorageFile>,
        next_seq: u64,
    ) -> Writer {
        let active = config.dir.join(segment_name(next_seq));
        Writer {
            shared,
            rx,
            storage,
            dir: config.dir.clone(),
            ack: config.ack,
            flush_interval: config.flush_interval,
            segment_bytes: config.segment_bytes,
            file,
            active,
            file_bytes: SEGMENT_HEADER_BYTES as u64,
            file_records: 0,
            batch: Vec::with_capacity(BATCH_BYTES_MAX + FRAME_BYTES_MAX),
            group_records: 0,
            reorder: (0..JOURNAL_QUEUE_DEPTH_MAX).map(|_| None).collect(),
            next_seq,
            written_seq: next_seq - 1,
            synced_seq: next_seq - 1,
            last_sync: Instant::now(),
        }
    }

    /// The thread body: runs until shutdown or the first I/O error.
    pub(crate) fn run(mut self) {
        match self.run_loop() {
            Ok(()) => self.shared.publish(self.synced_seq, Status::Closed),
            Err(error) => {
                tracing::error!(%error, durable_seq = self.synced_seq,
                    "journal write failed; journal is now failed");
                metrics::counter!(metric::FAILURES).increment(1);
                metrics::gauge!(metric::FAILED).set(1.0);
                self.shared.publish(self.synced_seq, Status::Failed);
            }
        }
        // Appenders waiting for space must see the final status.
        self.shared.space.notify_waiters();
    }

    fn run_loop(&mut self) -> Result<(), Error> {
        let queue_depth = metrics::gauge!(metric::QUEUE_DEPTH);
        let batch_records = metrics::histogram!(metric::BATCH_RECORDS);
        loop {
            let first = if self.synced_seq < self.written_seq {
                self.rx.recv_deadline(self.last_sync + self.flush_interval)
            } else {
                self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            };
            match first {
                Ok(msg) => {
                    self.accept(msg)?;
                    self.gather();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.finish(),
            }
            // One batch: up to BATCH_RECORDS_MAX messages per write.
            for _ in 1..BATCH_RECORDS_MAX {
                match self.rx.try_recv() {
                    Ok(msg) => self.accept(msg)?,
                    Err(_) => break,
                }
            }
            self.flush_batch()?;
            let sync_due =
                self.ack == AckMode::Durable || self.last_sync.elapsed() >= self.flush_interval;
            if sync_due && self.synced_seq < self.written_seq {
                batch_records.record(self.group_records as f64);
                self.sync()?;
            }
            let in_flight = self.shared.in_flight.load(Ordering::SeqCst);
            queue_depth.set(in_flight as f64);
            self.shared.space.notify_waiters();
            if in_flight == 0 && self.shared.closing.load(Ordering::SeqCst) {
                return self.finish();
            }
        }
    }

    /// Immediate mode: lets records gather until the next flush is due, so
    /// one wake-up and one `write` serve every record of the interval rather
    /// than a handful each (appenders do not wait for the writer in this
    /// mode, and the loss window stays `flush_interval` plus the queue).
    /// Durable mode never waits here: its appenders wait for the fsync.
    fn gather(&self) {
        if self.ack != AckMode::Immediate
            || self.rx.len() >= GATHER_RECORDS_MAX
            || self.shared.closing.load(Ordering::SeqCst)
        {
            return;
        }
        let due = self.last_sync + self.flush_interval;
        let wait = due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait.min(self.flush_interval));
        }
    }

    /// Writes and fsyncs whatever is left.
    fn finish(&mut self) -> Result<(), Error> {
        self.flush_batch()?;
        if self.synced_seq < self.written_seq {
            self.sync()?;
        }
        Ok(())
    }

    /// Places `msg` (and any frames it unblocks) in sequence order.
    fn accept(&mut self, msg: Msg) -> Result<(), Error> {
        let Msg::Record { seq, frame } = msg else {
            return Ok(());
        };
        let depth = JOURNAL_QUEUE_DEPTH_MAX as u64;
        debug_assert!(
            seq >= self.next_seq && seq - self.next_seq < depth,
            "ring cannot alias"
        );
        if seq != self.next_seq {
            let slot = &mut self.reorder[(seq % depth) as usize];
            debug_assert!(slot.is_none(), "each sequence arrives once");
            *slot = Some(frame);
            return Ok(());
        }
        self.place(frame)?;
        while let Some(frame) = self.reorder[(self.next_seq % depth) as usize].take() {
            self.place(frame)?;
        }
        Ok(())
    }

    /// Appends the frame carrying `next_seq` to the batch, rotating first if
    /// it would cross the segment size.
    fn place(&mut self, frame: Vec<u8>) -> Result<(), Error> {
        let len = frame.len() as u64;
        if self.file_records > 0 && self.file_bytes + len > self.segment_bytes {
            self.flush_batch()?;
            self.rotate()?;
        }
        if self.batch.len() + frame.len() > BATCH_BYTES_MAX {
            self.flush_batch()?;
        }
        self.batch.extend_from_slice(&frame);
        self.file_bytes += len;
        self.file_records += 1;
        self.group_records += 1;
        self.next_seq += 1;
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if frame.capacity() <= POOL_BUFFER_BYTES_MAX {
            // A full pool just frees the buffer.
            let _ = self.shared.pool.push(frame);
        }
        Ok(())
    }

    /// One write call for everything placed.
    fn flush_batch(&mut self) -> Result<(), Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let active = &self.active;
        let to_error = |source| Error::Io {
            file: active.clone(),
            source,
        };
        self.file.write_all(&self.batch).map_err(to_error)?;
        metrics::counter!(metric::WRITTEN_BYTES).increment(self.batch.len() as u64);
        self.batch.clear();
        self.written_seq = self.next_seq - 1;
        Ok(())
    }

    /// fsyncs the active segment and publishes the durable sequence. Never
    /// retried: an error fails the journal.
    fn sync(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        let active = &self.active;
        let to_error = |source| Error::Io {
            file: active.clone(),
            source,
        };
        self.file.sync().map_err(to_error)?;
        self.last_sync = Instant::now();
        metrics::histogram!(metric::FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::gauge!(metric::DURABLE_SEQ).set(self.written_seq as f64);
        self.synced_seq = self.written_seq;
        self.group_records = 0;
        self.shared.publish(self.synced_seq, Status::Running);
        Ok(())
    }

    /// Seals the active segment (fsync) and starts one at `next_seq`, durable
    /// (header fsynced, directory fsynced) before any record goes in it.
    fn rotate(&mut self) -> Result<(), Error> {
        if self.synced_seq < self.written_seq {
            self.sync()?;
        }
        let first_seq = self.next_seq;
        let path = self.dir.join(segment_name(first_seq));
        let mut file = self.storage.create_segment(&path).map_err(io(&path))?;
        file.write_all(&segment_header(first_seq))
            .map_err(io(&path))?;
        file.sync().map_err(io(&path))?;
        self.storage.sync_dir(&self.dir).map_err(io(&self.dir))?;
        self.file = file;
        self.file_bytes = SEGMENT_HEADER_BYTES as u64;
        self.file_records = 0;
        self.shared.segments_lock().push((first_seq, path.clone()));
        self.active = path;
        metrics::counter!(metric::ROTATIONS).increment(1);
        Ok(())
    }
}
