//! The one trait every archive store implements, and the limits its
//! callers live within.

use engine::{Answer, ListFilter, MessageKey, OriginalKey, Payment, Target};

use crate::ArchiveError;

/// Most journal records in one [`Archive::apply`]: one transaction and
/// one fsync per batch, so the drainer batches up to this and the write
/// lock is never held for more than a few milliseconds (4,096 records of
/// ~250 bytes is 1 MiB of WAL).
pub const BATCH_RECORDS_MAX: usize = 4_096;
/// Most payments in one [`Archive::list`] page: what one internal-frame
/// list answer carries (`codecs::internal::LIST_ROWS_MAX`) and more, for
/// exports that page through a period.
pub const PAGE_PAYMENTS_MAX: usize = 1_000;
/// Most merchants in one list scope: a service provider's own merchant
/// plus its mandates. Each is one indexed walk per page.
pub const SCOPE_MERCHANTS_MAX: usize = 64;
/// Most open pre-authorizations one [`Archive::open_holds`] returns: the
/// timers end them in steps.
pub const OPEN_HOLDS_MAX: usize = 10_000;
/// Most payments removed by one [`Archive::delete_created_before`]: the
/// retention pass calls it until it returns fewer, so no transaction
/// holds the write lock for long while the drainer waits.
pub const DELETE_PAYMENTS_MAX: usize = 10_000;

/// Most archived payments one list page reads to apply filters the
/// archive keeps no column for (scam, card's last 4, channel, ECI,
/// response code: `ListFilter::needs_image`), checked on each payment's
/// image: a page ends there with what it found (`more` when it found any,
/// so the next page goes on from its last row), so a rare filter costs at
/// most this many rows read per page.
pub const LIST_SCAN_PAYMENTS_MAX: usize = 10_000;

/// A list page for a filter that [`ListFilter::needs_image`]: pages of
/// `fetch` (the store's page for the column filters, newest first, from a
/// cursor) read until `limit` match, none are left, or
/// [`LIST_SCAN_PAYMENTS_MAX`] were read.
pub(crate) fn filtered_page(
    filter: &ListFilter<'_>,
    before_id: Option<u64>,
    limit: usize,
    mut fetch: impl FnMut(Option<u64>, usize) -> Result<Page, ArchiveError>,
) -> Result<Page, ArchiveError> {
    let mut found = Vec::new();
    let (mut cursor, mut read) = (before_id, 0usize);
    loop {
        let batch = fetch(cursor, PAGE_PAYMENTS_MAX)?;
        read += batch.payments.len();
        cursor = batch.payments.last().map(|p| p.id);
        for p in batch.payments {
            if filter.matches(&p) {
                if found.len() == limit {
                    return Ok(Page {
                        payments: found,
                        more: true,
                    });
                }
                found.push(p);
            }
        }
        if !batch.more || cursor.is_none() {
            return Ok(Page {
                payments: found,
                more: false,
            });
        }
        if read >= LIST_SCAN_PAYMENTS_MAX {
            let more = !found.is_empty();
            return Ok(Page {
                payments: found,
                more,
            });
        }
    }
}

/// One page of payments, newest first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Page {
    /// At most the limit asked for, highest id first.
    pub payments: Vec<Payment>,
    /// Whether more match below the last id (the next cursor).
    pub more: bool,
}

/// Where payments live after they leave memory: every payment for the
/// retention period, fed from the journal and looked up when memory has
/// no answer.
///
/// Writes are idempotent upserts keyed by payment id whose version is the
/// record's journal sequence, so replaying a batch twice, or batches out
/// of order, leaves the same state, and the archive can be rebuilt from
/// the journal. An implementation is used from one thread at a time
/// (`Send`, not `Sync`): the drainer owns it, or it sits behind a lock.
pub trait Archive: Send {
    /// Applies journal records (`(seq, payload)`, each payload an
    /// [`engine::record`] payment record, type
    /// [`engine::record::RECORD_PAYMENT`]) in one durable transaction:
    /// each payment, index entry and answer is stored unless the stored
    /// one has a version (seq) at or above the record's. Returns the
    /// watermark after the batch: the highest seq ever applied.
    ///
    /// # Errors
    /// [`ArchiveError::Limit`] past [`BATCH_RECORDS_MAX`] records,
    /// [`ArchiveError::Record`] for a payload that does not decode,
    /// [`ArchiveError::Full`], [`ArchiveError::Io`] and the rest when the
    /// store fails; then nothing of the batch was applied.
    fn apply(&mut self, records: &[(u64, &[u8])]) -> Result<u64, ArchiveError>;

    /// The highest journal seq applied (0 for a new archive): journal
    /// segments at or below it may go once a snapshot covers them too.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn watermark(&self) -> Result<u64, ArchiveError>;

    /// The highest payment id stored (0 for none). Memory is rebuilt at
    /// start from the newest snapshot and the records after it, which no
    /// longer hold the payments memory let go: the switch allocates new
    /// ids above this too, or a new payment would take an archived one's
    /// id and overwrite it here.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn payment_id_max(&self) -> Result<u64, ArchiveError>;

    /// Payment `id`.
    ///
    /// # Errors
    /// When the store cannot be read, or holds a damaged image.
    fn payment(&self, id: u64) -> Result<Option<Payment>, ArchiveError>;

    /// What an original message (F90's key) refers to.
    ///
    /// # Errors
    /// When the store cannot be read.
    fn target(&self, key: &OriginalKey) -> Result<Option<Target>, ArchiveError>;

    /// The newest payment of `merchant` with F37 `rrn` and F38 `auth_code`.
    ///
    /// # Errors
    /// When the store cannot be read, or holds a damaged image.
    fn payment_by_rrn(
        &self,
        merchant: u32,
        rrn: &[u8; 12],
        auth_code: &[u8; 6],
    ) -> Result<Option<Payment>, ArchiveError>;

    /// The answer given to message `key`, with its `at_ms` so the caller
    /// applies its own window; its `seq` is 0 (archived means durable).
    ///
    /// # Errors
    /// When the store cannot be read.
    fn answer(&self, key: &MessageKey) -> Result<Option<Answer>, ArchiveError>;

    /// One page of the payments of any merchant in `scope` matching
    /// `filter`, newest (highest id) first, ids below `before_id`.
    ///
    /// # Errors
    /// [`ArchiveError::Limit`] past [`PAGE_PAYMENTS_MAX`] or
    /// [`SCOPE_MERCHANTS_MAX`]; when the store cannot be read.
    fn list(
        &self,
        scope: &[u32],
        filter: &ListFilter<'_>,
        before_id: Option<u64>,
        limit: usize,
    ) -> Result<Page, ArchiveError>;

    /// Open pre-authorizations (status uncaptured) of `merchant` created
    /// before `created_before_ms`, oldest first, at most `limit`: the ones
    /// memory let go whose hold has ended, for the timers to expire or
    /// capture.
    ///
    /// # Errors
    /// [`ArchiveError::Limit`] past [`OPEN_HOLDS_MAX`]; when the store
    /// cannot be read, or holds a damaged image.
    fn open_holds(
        &self,
        merchant: u32,
        created_before_ms: u64,
        limit: usize,
    ) -> Result<Vec<Payment>, ArchiveError>;

    /// Removes up to [`DELETE_PAYMENTS_MAX`] payments created before
    /// `cutoff_ms`, with their index entries and answers, and answers
    /// given before it; returns how many payments went (call again while
    /// it returns the maximum). A record replayed later brings a payment
    /// back until the next pass.
    ///
    /// # Errors
    /// When the store fails; then nothing was removed.
    fn delete_created_before(&mut self, cutoff_ms: u64) -> Result<usize, ArchiveError>;
}

/// [`ArchiveError::Limit`] when `limit` is past [`OPEN_HOLDS_MAX`].
pub(crate) fn check_open_holds_limit(location: &str, limit: usize) -> Result<(), ArchiveError> {
    if limit > OPEN_HOLDS_MAX {
        return Err(ArchiveError::Limit {
            location: location.to_owned(),
            what: "open holds asked for",
            got: limit as u64,
            max: OPEN_HOLDS_MAX as u64,
        });
    }
    Ok(())
}
