//! Journal records in, stored images out: the checks every store makes
//! the same way, written once so no store can skip one. A batch is
//! decoded whole before any write; a stored image is checked against the
//! id it was stored under when it is read back.

use engine::record::{self, PaymentRecord};
use engine::Payment;

use crate::store::BATCH_RECORDS_MAX;
use crate::ArchiveError;

/// A decoded record of a batch.
pub(crate) struct Row<'a> {
    /// Its journal seq, as stored (the version of what it writes).
    pub(crate) version: i64,
    /// What it says.
    pub(crate) rec: PaymentRecord,
    /// Its bytes, stored as the payment's image.
    pub(crate) payload: &'a [u8],
}

/// Decodes every record of a batch before a transaction starts, so a bad
/// one costs no write.
///
/// # Errors
/// [`ArchiveError::Limit`] past [`BATCH_RECORDS_MAX`] records or for a
/// seq or payment id past `i64::MAX`; [`ArchiveError::Record`] for a
/// payload that does not decode.
pub(crate) fn decode_batch<'a>(
    location: &str,
    records: &[(u64, &'a [u8])],
) -> Result<Vec<Row<'a>>, ArchiveError> {
    if records.len() > BATCH_RECORDS_MAX {
        return Err(ArchiveError::Limit {
            location: location.to_owned(),
            what: "batch records",
            got: records.len() as u64,
            max: BATCH_RECORDS_MAX as u64,
        });
    }
    let mut rows = Vec::with_capacity(records.len());
    for &(seq, payload) in records {
        if payload.is_empty() {
            // A record of another kind (upstream forwards and SAF): the
            // archive holds payments only; the drainer passes it empty.
            continue;
        }
        let rec = record::decode(payload).map_err(|source| ArchiveError::Record {
            location: location.to_owned(),
            seq,
            source,
        })?;
        let version = exact(location, "journal seq", seq)?;
        exact(location, "payment id", rec.payment.id)?;
        rows.push(Row {
            version,
            rec,
            payload,
        });
    }
    Ok(rows)
}

/// `v` as a signed 64-bit column, for values whose order matters (ids,
/// versions): beyond `i64::MAX` is refused, not wrapped.
///
/// # Errors
/// [`ArchiveError::Limit`] past `i64::MAX`.
pub(crate) fn exact(location: &str, what: &'static str, v: u64) -> Result<i64, ArchiveError> {
    i64::try_from(v).map_err(|_| ArchiveError::Limit {
        location: location.to_owned(),
        what,
        got: v,
        max: i64::MAX as u64,
    })
}

/// For columns that only filter by range (amounts, times): past
/// `i64::MAX` they read as `i64::MAX`, which keeps their order; the record
/// keeps the exact value.
pub(crate) fn clamped(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The payment in a stored record, checked against the id it was stored
/// under (the pair of the check made before writing it).
///
/// # Errors
/// [`ArchiveError::Corrupt`] when the image does not decode or is another
/// payment's.
pub(crate) fn image(location: &str, id: u64, bytes: &[u8]) -> Result<Payment, ArchiveError> {
    let corrupt = |reason: String| ArchiveError::Corrupt {
        location: location.to_owned(),
        reason,
    };
    let rec =
        record::decode(bytes).map_err(|e| corrupt(format!("payment {id}: stored record: {e}")))?;
    if rec.payment.id != id {
        return Err(corrupt(format!(
            "payment {id}: stored record is payment {}",
            rec.payment.id
        )));
    }
    Ok(rec.payment)
}
