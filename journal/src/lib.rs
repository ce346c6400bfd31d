//! Write-behind journal for the switch: every state change becomes a record
//! `(record_type: u8, payload: &[u8])` that a background writer batches,
//! frames, writes to segment files and fsyncs (group commit). The processing
//! path never waits on disk; what waits is the response, until
//! [`Journal::ack`] says its record is durable.
//!
//! Layout:
//! - [`format`](crate::format) (private): capacity constants, frames, segment
//!   and snapshot headers, file names. Pure, no I/O.
//! - `storage`: the [`Storage`] file-layer trait the journal writes through;
//!   [`OsStorage`] is the real one. Tests plug in a simulated disk.
//! - `journal`: the [`Journal`] handle: open + recover, append, await
//!   durability, snapshot, retention floor, tail, shutdown, failed state.
//! - `writer`: the writer thread (reorder, batch, write, fsync, rotate,
//!   publish).
//! - `recovery`: snapshot + replay at open, torn-tail truncation, repair, and
//!   the operator tools [`verify`] and [`dump`].
//! - `tail`: the [`Tail`] reader: records after a position, following the
//!   live journal (the archive's drainer) or a directory offline.
//! - `metric`: `switch_journal_*` metric names.
//! - `error`: [`Error`] and the hot path's [`AppendError`].
//!
//! Usage (see `docs/journal.md`):
//! ```no_run
//! # async fn example() -> Result<(), journal::Error> {
//! use std::sync::Arc;
//! use journal::{Config, Journal, OsStorage, Replay};
//! let (journal, report) = Journal::open(Config::new("/var/lib/switch/journal"),
//!     Arc::new(OsStorage), |item| {
//!         match item {
//!             Replay::Snapshot { seq, bytes } => { /* load state */ }
//!             Replay::Record(record) => { /* apply record.payload */ }
//!         }
//!         Ok(())
//!     })?;
//! let seq = journal.append(1, b"state change").await?;
//! journal.ack(seq).await?; // now send the response
//! journal.shutdown()?;
//! # Ok(()) }
//! ```

mod error;
mod format;
mod journal;
mod metric;
mod recovery;
mod storage;
mod tail;
mod writer;

pub use error::{AppendError, BoxError, Error};
pub use format::{
    Record, BATCH_BYTES_MAX, BATCH_RECORDS_MAX, FLUSH_INTERVAL_MS_MAX, JOURNAL_QUEUE_DEPTH_MAX,
    RECORD_PAYLOAD_BYTES_MAX, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_PREALLOC_BYTES,
    SNAPSHOT_BYTES_MAX, TAIL_READ_BYTES_MAX,
};
pub use journal::{AckMode, Config, DurablePublisher, DurableWatch, Journal, Status};
pub use recovery::{
    dump, read_state, verify, Damage, RecoveryReport, Replay, SegmentDamage, SegmentSummary,
    VerifyReport,
};
pub use storage::{OsStorage, Storage, StorageFile, StorageReader};
pub use tail::Tail;
