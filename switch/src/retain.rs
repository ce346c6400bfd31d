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

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal in a fresh directory with small segments, holding `n`
    /// durable records of about 1 KiB (several per segment), and a snapshot
    /// covering them all.
    fn journal(name: &str, floor: u64, n: u64) -> (Arc<journal::Journal>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("retain-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = journal::Config::new(&dir);
        config.segment_bytes = 4 << 10;
        config.retain_floor = Some(floor);
        let (j, _) = journal::Journal::open(config, Arc::new(journal::OsStorage), |_| Ok(()))
            .expect("journal opens");
        for _ in 0..n {
            let seq = j.append_blocking(1, &[7u8; 1_000]).expect("append");
            j.wait_durable_blocking(seq).expect("durable");
        }
        j.snapshot(n, b"state").expect("snapshot");
        (Arc::new(j), dir)
    }

    fn segments(j: &journal::Journal) -> usize {
        j.release_covered().expect("release");
        j.disk_segments().expect("segments").0
    }

    #[test]
    fn segments_stay_until_both_readers_passed_them() {
        let (j, dir) = journal("both", 0, 40);
        let floor = RetainFloor::new(j.clone(), 0, Some(0));
        let all = segments(&j);
        assert!(all >= 8, "{all} segments");
        // The archive has everything; the webhook queue nothing: all stay.
        floor.set_archive(40);
        assert_eq!(segments(&j), all);
        // The webhook queue catches up halfway, then fully.
        floor.set_webhooks(20);
        let half = segments(&j);
        assert!(half < all && half > 1, "{half} of {all}");
        floor.set_webhooks(40);
        assert!(segments(&j) < half);
        j.shutdown().expect("shutdown");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn without_a_webhook_watermark_the_archive_alone_decides() {
        assert_eq!(RetainFloor::at_open(30, None), 30);
        assert_eq!(RetainFloor::at_open(30, Some(10)), 10);
        let (j, dir) = journal("archive", 0, 40);
        let floor = RetainFloor::new(j.clone(), 0, None);
        let all = segments(&j);
        floor.set_archive(40);
        assert!(segments(&j) < all);
        j.shutdown().expect("shutdown");
        let _ = std::fs::remove_dir_all(dir);
    }
}
