//! The journal's retain floor as the minimum of its readers' watermarks:
//! the archive drainer's and the webhook dispatcher's. The journal deletes
//! a segment only once a snapshot and the floor cover it, so a segment one
//! of them has not read yet stays on disk whatever the other has read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// No watermark of this reader (it does not run): it holds nothing.
const NONE: u64 = u64::MAX;

/// The two watermarks, and the journal they hold.
#[derive(Debug)]
pub(crate) struct RetainFloor {
    /// The journal whose floor this sets.
    journal: Arc<journal::Journal>,
    /// The archive's watermark.
    archive: AtomicU64,
    /// The webhook dispatcher's watermark ([`NONE`] when it does not run).
    webhooks: AtomicU64,
}

impl RetainFloor {
    /// The floor of `journal`, from the watermarks read before it opened.
    pub(crate) fn new(journal: Arc<journal::Journal>, archive: u64, webhooks: Option<u64>) -> Self {
        let floor = RetainFloor {
            journal,
            archive: AtomicU64::new(archive),
            webhooks: AtomicU64::new(webhooks.unwrap_or(NONE)),
        };
        floor.publish();
        floor
    }

    /// The floor to open the journal with.
    pub(crate) fn at_open(archive: u64, webhooks: Option<u64>) -> u64 {
        archive.min(webhooks.unwrap_or(NONE))
    }

    /// The archive took every record up to `seq`.
    pub(crate) fn set_archive(&self, seq: u64) {
        self.archive.fetch_max(seq, Ordering::AcqRel);
        self.publish();
    }

    /// The dispatcher queued the events of every record up to `seq`.
    pub(crate) fn set_webhooks(&self, seq: u64) {
        let _ = self
            .webhooks
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(if w == NONE { seq } else { w.max(seq) })
            });
        self.publish();
    }

    fn publish(&self) {
        let floor = self
            .archive
            .load(Ordering::Acquire)
            .min(self.webhooks.load(Ordering::Acquire));
        // The journal keeps the highest floor it was given: both readers only
        // move forward, so their minimum does too.
        self.journal.set_retain_floor(floor);
    }
}
