//! The journal stage: the engine's records go to the write-behind journal
//! ([`engine::Journal`]); in `durable` mode an answer waits for its
//! sequence. Also the health the journal reports.

use std::sync::Arc;

use engine::Code;
use journal::{AckMode, AppendError, DurableWatch, Journal, Status};

/// Where records go.
#[derive(Clone)]
pub(crate) enum JournalStage {
    /// No journal: nothing is recorded and nothing waits (before recovery,
    /// and tests of the pipeline alone).
    Off,
    /// Records go to the journal.
    On(Arc<Journal>),
    /// Cluster mode: records go to PostgreSQL (`cluster_commit`).
    Cluster(Arc<crate::cluster_commit::Committer>),
}

impl JournalStage {
    /// Flushes and closes the journal (after every connection has drained).
    ///
    /// # Errors
    /// When the journal failed (now or earlier) on a write or fsync: the
    /// process must not report a clean stop.
    pub(crate) fn shutdown(&self) -> Result<(), journal::Error> {
        match self {
            JournalStage::On(journal) => {
                if let Err(e) = journal.shutdown() {
                    tracing::error!(error = %e, "journal shutdown failed");
                    return Err(e);
                }
            }
            JournalStage::Cluster(c) => {
                if let Err(e) = c.shutdown() {
                    tracing::error!(error = %e, "cluster committer shutdown");
                    return Err(journal::Error::Failed);
                }
            }
            JournalStage::Off => {}
        }
        Ok(())
    }

    /// The durable sequence for answers to wait on, woken by the journal's
    /// writer itself; `None` when nothing waits.
    pub(crate) fn durable_watch(&self) -> Option<DurableWatch> {
        match self {
            JournalStage::Off => None,
            JournalStage::On(journal) => Some(journal.durable_watch()),
            JournalStage::Cluster(c) => Some(c.durable_watch()),
        }
    }

    /// The last sequence handed out (0 without a journal).
    pub(crate) fn last_seq(&self) -> u64 {
        match self {
            JournalStage::Off => 0,
            JournalStage::Cluster(c) => c.last_seq(),
            JournalStage::On(journal) => journal.last_seq(),
        }
    }

    /// Why the journal cannot take records, when it has failed.
    pub(crate) fn failure(&self) -> Option<String> {
        match self {
            JournalStage::On(journal) if journal.status() == Status::Failed => {
                Some("journal failed: a write or fsync error; not approving (restart after fixing the disk)".into())
            }
            JournalStage::Cluster(c) if c.failed() => {
                Some("cluster committer stopped: a batch was fenced or PostgreSQL failed".into())
            }
            _ => None,
        }
    }
}

impl engine::Journal for JournalStage {
    fn keeps_records(&self) -> bool {
        matches!(self, JournalStage::On(_) | JournalStage::Cluster(_))
    }

    fn answers_wait(&self) -> bool {
        match self {
            JournalStage::On(j) => j.ack_mode() == AckMode::Durable,
            JournalStage::Cluster(_) => true,
            JournalStage::Off => false,
        }
    }

    /// Appends the record; its sequence. 96 when the journal cannot take
    /// it (full past the enqueue timeout, failed or closed).
    fn append(&self, record_type: u8, payload: &[u8]) -> Result<u64, Code> {
        let journal = match self {
            JournalStage::On(journal) => journal,
            JournalStage::Off => return Ok(0),
            JournalStage::Cluster(c) => return engine::Journal::append(&**c, record_type, payload),
        };
        match journal.append_blocking(record_type, payload) {
            Ok(seq) => Ok(seq),
            Err(e) => {
                let reason = match e {
                    AppendError::Full => "full",
                    AppendError::Failed => "failed",
                    AppendError::Closed => "closed",
                    _ => "other",
                };
                metrics::counter!("switch_journal_rejected_total", "reason" => reason).increment(1);
                Err(Code::SYSTEM_MALFUNCTION)
            }
        }
    }
}
