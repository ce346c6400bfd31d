//! Errors: [`Error`] for opening, recovery, snapshots and operator tools;
//! [`AppendError`], small and `Copy`, for the hot path.

use std::path::PathBuf;

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A journal file fails its checks somewhere other than a torn tail.
    #[error("journal corruption in {} at byte {offset}: {reason}", .file.display())]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first damaged frame or header in `file`.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The file layer failed.
    #[error("journal I/O error on {}: {source}", .file.display())]
    Io {
        /// The file or directory being accessed.
        file: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The queue to the writer stayed full for the whole bounded wait.
    #[error("journal queue full (JOURNAL_QUEUE_DEPTH_MAX records waiting)")]
    Full,
    /// A write or fsync failed earlier; the journal accepts nothing more.
    #[error("journal failed after a write or fsync error; restart to recover")]
    Failed,
    /// The journal was shut down.
    #[error("journal closed")]
    Closed,
    /// A payload over `RECORD_PAYLOAD_BYTES_MAX`.
    #[error("record payload larger than RECORD_PAYLOAD_BYTES_MAX")]
    PayloadTooLarge,
    /// A [`crate::Config`] value out of range.
    #[error("invalid journal config: {0}")]
    Config(&'static str),
    /// A snapshot must not claim records that are not yet durable.
    #[error("snapshot at seq {seq} is ahead of the durable seq {durable_seq}")]
    SnapshotAhead {
        /// The sequence the snapshot claimed to cover.
        seq: u64,
        /// The durable sequence at the time.
        durable_seq: u64,
    },
    /// A tail was asked to start at records the journal no longer holds:
    /// the segments were deleted (covered by a snapshot). Seed from the
    /// snapshot, then tail from its seq.
    #[error("journal tail gap: record {wanted} is gone; the first segment on disk starts at {first_available}")]
    TailGap {
        /// The first sequence the tail needed.
        wanted: u64,
        /// The first sequence a segment on disk still holds.
        first_available: u64,
    },
    /// A tail was asked to start after records the journal has not made
    /// durable: whoever keeps that position (the archive watermark) holds
    /// records this journal does not.
    #[error("journal tail after seq {after_seq} is ahead of the durable seq {durable_seq}")]
    TailAhead {
        /// The position asked for.
        after_seq: u64,
        /// The journal's durable sequence at the time.
        durable_seq: u64,
    },
    /// The replay callback refused a snapshot or record.
    #[error("replay stopped at seq {seq}: {source}")]
    Apply {
        /// The snapshot's or record's sequence number.
        seq: u64,
        /// The callback's error.
        #[source]
        source: BoxError,
    },
}

/// The error a replay callback may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an append or a durability wait failed (hot path: small and `Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Queue full for the whole bounded wait: the switch answers 96.
    #[error("journal queue full")]
    Full,
    /// The journal is in the failed state: stop approving, report not-ready.
    #[error("journal failed")]
    Failed,
    /// The journal was shut down before the record became durable.
    #[error("journal closed")]
    Closed,
    /// A payload over `RECORD_PAYLOAD_BYTES_MAX`: a programming error upstream.
    #[error("record payload larger than RECORD_PAYLOAD_BYTES_MAX")]
    PayloadTooLarge,
}

impl From<AppendError> for Error {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Full => Error::Full,
            AppendError::Failed => Error::Failed,
            AppendError::Closed => Error::Closed,
            AppendError::PayloadTooLarge => Error::PayloadTooLarge,
        }
    }
}

/// Attaches a path to an I/O error.
pub(crate) fn io(file: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let file = file.into();
    move |source| Error::Io { file, source }
}
