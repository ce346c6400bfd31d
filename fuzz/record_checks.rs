//! The body of the `journal_records` fuzz target, shared with
//! `engine/tests/record_fuzz.rs` (which runs the checked-in corpus and
//! random bytes through it on stable Rust). Journal records and snapshots
//! are read back at every start: whatever bytes a damaged file holds, the
//! decoders answer an error, never a panic, and what they accept encodes
//! back to the same bytes.

use engine::record;
use engine::upstream;

/// Decodes `data` as a payment record, a snapshot and an upstream record.
pub(crate) fn journal_records(data: &[u8]) {
    let _ = record::payment_id(data);
    let _ = record::forward_id(data);
    if let Ok(rec) = record::decode(data) {
        // Version 2 payloads encode back byte for byte (version 1 ones are
        // read, and written again as version 2).
        if data.first() == Some(&2) {
            let mut again = Vec::new();
            record::encode(
                &record::PaymentRecordRef {
                    payment: &rec.payment,
                    index: rec.index,
                    answer: rec.answer,
                },
                &mut again,
            );
            assert_eq!(again, data, "a payment record encodes back as read");
        }
    }
    let _ = record::decode_snapshot(data);
    if let Ok(rec) = upstream::decode(data) {
        let mut again = Vec::new();
        upstream::encode(&rec, &mut again);
        assert_eq!(again, data, "an upstream record encodes back as read");
    }
}
