//! Records written to a store in batches of [`BATCH_RECORDS_MAX`], for the
//! one-off writers (seeding a new archive, `switch archive rebuild`); the
//! drainer has its own loop, which retries a failed batch.

use crate::{Archive, ArchiveError, BATCH_RECORDS_MAX};

/// Pushes records, applies them a full batch at a time.
pub struct Batches<'a> {
    /// Where they go.
    store: &'a mut dyn Archive,
    /// The batch being filled, at most [`BATCH_RECORDS_MAX`].
    records: Vec<(u64, Vec<u8>)>,
    /// Records applied so far.
    applied: u64,
    /// The first failure: later records are dropped, and
    /// [`Batches::finish`] returns it.
    failed: Option<ArchiveError>,
}

impl<'a> Batches<'a> {
    /// Batches into `store`.
    pub fn new(store: &'a mut dyn Archive) -> Self {
        Batches {
            store,
            records: Vec::with_capacity(BATCH_RECORDS_MAX),
            applied: 0,
            failed: None,
        }
    }

    /// Adds record `seq`; applies the batch when it is full.
    pub fn push(&mut self, seq: u64, payload: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.records.push((seq, payload.to_vec()));
        if self.records.len() == BATCH_RECORDS_MAX {
            if let Err(e) = self.flush() {
                self.failed = Some(e);
            }
        }
    }

    fn flush(&mut self) -> Result<(), ArchiveError> {
        let batch: Vec<(u64, &[u8])> = self
            .records
            .iter()
            .map(|(s, p)| (*s, p.as_slice()))
            .collect();
        if !batch.is_empty() {
            self.store.apply(&batch)?;
        }
        self.applied += batch.len() as u64;
        self.records.clear();
        Ok(())
    }

    /// Applies what is left; how many records were applied in all.
    ///
    /// # Errors
    /// The first batch that failed (what came after it was not applied).
    pub fn finish(mut self) -> Result<u64, ArchiveError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.flush()?;
        Ok(self.applied)
    }
}
