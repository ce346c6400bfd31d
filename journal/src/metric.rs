//! Metric names (Prometheus conventions, `switch_journal_` prefix) and the
//! few helpers that record them. Without an installed recorder these are
//! no-ops; install the recorder before opening the journal.

use std::time::Duration;

/// Gauge: records queued or reordering, not yet written.
pub(crate) const QUEUE_DEPTH: &str = "switch_journal_queue_depth";
/// Histogram: records per group commit.
pub(crate) const BATCH_RECORDS: &str = "switch_journal_batch_records";
/// Counter: bytes written to segment files.
pub(crate) const WRITTEN_BYTES: &str = "switch_journal_written_bytes_total";
/// Histogram: fsync latency of segment files.
pub(crate) const FSYNC_SECONDS: &str = "switch_journal_fsync_seconds";
/// Gauge: highest durable sequence.
pub(crate) const DURABLE_SEQ: &str = "switch_journal_durable_seq";
/// Counter: segment rotations.
pub(crate) const ROTATIONS: &str = "switch_journal_segment_rotations_total";
/// Counter: write or fsync failures (each one fails the journal).
pub(crate) const FAILURES: &str = "switch_journal_failures_total";
/// Gauge: 1 while the journal is in the failed state.
pub(crate) const FAILED: &str = "switch_journal_failed";
/// Counter: appends refused because the queue stayed full.
pub(crate) const QUEUE_FULL: &str = "switch_journal_queue_full_total";
/// Gauge: duration of the last recovery.
const REPLAY_SECONDS: &str = "switch_journal_replay_seconds";
/// Counter: records replayed at recovery.
const REPLAY_RECORDS: &str = "switch_journal_replay_records_total";
/// Counter: torn tails truncated at recovery.
const TRUNCATIONS: &str = "switch_journal_truncations_total";
/// Histogram: time to write, fsync and rename a snapshot.
pub(crate) const SNAPSHOT_SECONDS: &str = "switch_journal_snapshot_seconds";

pub(crate) fn replay(elapsed: Duration, records: u64) {
    metrics::gauge!(REPLAY_SECONDS).set(elapsed.as_secs_f64());
    metrics::counter!(REPLAY_RECORDS).increment(records);
}

pub(crate) fn truncated() {
    metrics::counter!(TRUNCATIONS).increment(1);
}
