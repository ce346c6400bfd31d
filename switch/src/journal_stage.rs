//! The journal stage: every state change becomes a record handed to the
//! write-behind journal; in `durable` mode the answer waits for its
//! sequence. Also recovery at start and periodic snapshots.
//!
//! Snapshot consistency: each change is applied to memory before its
//! record gets a sequence number, inside an epoch guard. A snapshot reads
//! the last sequence S, flips the epoch and waits for the old epoch's
//! guards to finish, so every change with a sequence up to S is visible in
//! the walk that follows. Later changes may be in the snapshot too; replay
//! of full payment images is idempotent, so that is harmless.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use journal::{AckMode, AppendError, DurableWatch, Journal, Status};

use crate::code::Code;
use crate::lifecycle::Payment;
use crate::record::{self, PaymentRecordRef};

/// A state change to record: the payment after it, with the index entry
/// and answer it produced when it came from a keyed message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// A payment changed, no message key (sweeps, internal frames).
    Updated(&'a Payment),
    /// A change made by a keyed message, with its index entry and answer.
    Answered(PaymentRecordRef<'a>),
}

impl<'a> Change<'a> {
    fn as_record(&self) -> PaymentRecordRef<'a> {
        match *self {
            Change::Updated(payment) => PaymentRecordRef {
                payment,
                index: None,
                answer: None,
            },
            Change::Answered(r) => r,
        }
    }
}

thread_local! {
    /// Encoding buffer reused per thread: no allocation per record after warm-up.
    static ENCODE_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// Two-epoch guard counter (see the module docs).
#[derive(Default)]
pub(crate) struct Epochs {
    /// The epoch new guards join (0 or 1).
    current: AtomicUsize,
    /// Guards active per epoch.
    active: [AtomicU64; 2],
}

/// Held while a change is applied and recorded.
pub(crate) struct EpochGuard<'a> {
    /// The counter to release.
    counter: &'a AtomicU64,
}

impl Drop for EpochGuard<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Epochs {
    /// Joins the current epoch.
    pub(crate) fn enter(&self) -> EpochGuard<'_> {
        loop {
            let e = self.current.load(Ordering::SeqCst);
            let counter = &self.active[e & 1];
            counter.fetch_add(1, Ordering::SeqCst);
            if self.current.load(Ordering::SeqCst) == e {
                return EpochGuard { counter };
            }
            counter.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Flips the epoch and waits (bounded) until the old one is empty.
    /// Returns whether it emptied in time.
    pub(crate) fn flip_and_wait(&self, timeout: Duration) -> bool {
        let old = self.current.fetch_xor(1, Ordering::SeqCst) & 1;
        let deadline = std::time::Instant::now() + timeout;
        while self.active[old].load(Ordering::SeqCst) != 0 {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }
}

/// The journal in use.
pub(crate) struct JournalOn {
    /// The write-behind log.
    pub(crate) journal: Arc<Journal>,
}

/// Where records go.
pub(crate) enum JournalStage {
    /// No journal: nothing is recorded and nothing waits (tests of the
    /// pipeline alone).
    Off,
    /// Records go to the journal.
    On(JournalOn),
}

impl JournalStage {
    /// Wraps an opened journal.
    pub(crate) fn on(journal: Arc<Journal>) -> Self {
        JournalStage::On(JournalOn { journal })
    }

    /// Flushes and closes the journal (after every connection has drained).
    pub(crate) fn shutdown(&self) {
        if let JournalStage::On(on) = self {
            if let Err(e) = on.journal.shutdown() {
                tracing::error!(error = %e, "journal shutdown failed");
            }
        }
    }

    /// The durable sequence for answers to wait on, woken by the journal's
    /// writer itself; `None` when nothing waits.
    pub(crate) fn durable_watch(&self) -> Option<DurableWatch> {
        match self {
            JournalStage::Off => None,
            JournalStage::On(on) => Some(on.journal.durable_watch()),
        }
    }

    /// Why the journal cannot take records, when it has failed.
    pub(crate) fn failure(&self) -> Option<String> {
        match self {
            JournalStage::On(on) if on.journal.status() == Status::Failed => {
                Some("journal failed: a write or fsync error; not approving (restart after fixing the disk)".into())
            }
            _ => None,
        }
    }

    /// Records `change`; returns the sequence the answer must wait for (0:
    /// none). `wait` is false for changes whose answer need not wait
    /// (declines, sweeps); in `immediate` mode nothing waits.
    ///
    /// # Errors
    /// 96 when the journal cannot take the record (full past the enqueue
    /// timeout, failed or closed).
    pub(crate) fn record(&self, change: &Change<'_>, wait: bool) -> Result<u64, Code> {
        let JournalStage::On(on) = self else {
            return Ok(0);
        };
        let appended = ENCODE_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            record::encode(&change.as_record(), &mut buf);
            on.journal.append_blocking(record::RECORD_PAYMENT, &buf)
        });
        match appended {
            Ok(seq) if wait && on.journal.ack_mode() == AckMode::Durable => Ok(seq),
            Ok(_) => Ok(0),
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
