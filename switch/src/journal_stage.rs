//! The journal stage: every state change becomes a record handed to the
//! write-behind journal; the answer waits for its sequence in `durable` mode.

use crate::code::Code;
use crate::lifecycle::Payment;

/// A state change to record.
#[derive(Debug)]
pub(crate) enum Change<'a> {
    /// A payment was created (approved or declined).
    Created(&'a Payment),
    /// A payment changed (capture, refund, reversal, expiry, flag).
    Updated(&'a Payment),
}

/// Where records go.
pub(crate) enum JournalStage {
    /// No journal: nothing is recorded and nothing waits.
    Off,
}

impl JournalStage {
    /// The durable sequence for answers to wait on; `None` when nothing waits.
    pub(crate) fn durable_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            JournalStage::Off => None,
        }
    }

    /// Why the journal cannot take records, when it has failed.
    pub(crate) fn failure(&self) -> Option<String> {
        match self {
            JournalStage::Off => None,
        }
    }

    /// Records `change`; returns the sequence the answer must wait for (0:
    /// none). `wait` is false for changes whose answer need not wait
    /// (declines).
    ///
    /// # Errors
    /// 96 when the journal cannot take the record (full past the enqueue
    /// timeout, or failed).
    pub(crate) fn record(&self, change: &Change<'_>, wait: bool) -> Result<u64, Code> {
        let _ = (change, wait);
        match self {
            JournalStage::Off => Ok(0),
        }
    }
}
