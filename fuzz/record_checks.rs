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
        // What is read encodes to what reads the same. Version 3 payloads
        // encode back byte for byte, but for the extensions of a newer
        // writer, which are skipped (so only ever shorter); versions 1
        // and 2 are written again as version 3.
        let mut again = Vec::new();
        record::encode(
            &record::PaymentRecordRef {
                payment: &rec.payment,
                index: rec.index,
                answer: rec.answer,
            },
            &mut again,
        );
        assert_eq!(
            record::decode(&again).expect("what is written reads"),
            rec,
            "a payment record reads back as written"
        );
        if data.first() == Some(&3) && again != data {
            assert!(
                again.len() < data.len(),
                "only skipped extensions may change a version-3 payload"
            );
        }
    }
    let _ = record::decode_snapshot(data);
    if let Ok(rec) = upstream::decode(data) {
        let mut again = Vec::new();
        upstream::encode(&rec, &mut again);
        assert_eq!(again, data, "an upstream record encodes back as read");
    }
}
