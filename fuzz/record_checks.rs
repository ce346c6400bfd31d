//! The body of the `journal_records` fuzz target, shared with
//! `engine/tests/record_fuzz.rs` (which runs the checked-in corpus and
//! random bytes through it on stable Rust). Journal records and snapshots
//! are read back at every start: whatever bytes a damaged file holds, the
//! decoders answer an error, never a panic, and what they accept encodes
//! back to the same bytes.

use engine::record;
use engine::upstream;

/// Decodes `data` as a payment record, a snapshot, an upstream record, a
/// counted card attempt and a velocity checkpoint.
pub(crate) fn journal_records(data: &[u8]) {
    velocity_records(data);
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

/// A counted attempt and a velocity checkpoint's cards: refused or read,
/// never a panic; the cards a checkpoint set export to bytes that read.
fn velocity_records(data: &[u8]) {
    let _ = engine::velocity::decode_record(data);
    let _ = engine::velocity::checkpoint_shard(data);
    thread_local! {
        // Made once: a state costs more than the check.
        static STATES: [risk::RiskState; 2] = std::array::from_fn(|_| {
            risk::RiskState::with_capacity(risk::Capacity {
                card_keys_max: 64,
                terminal_keys_max: 64,
                watch_list_max: 1,
            })
        });
    }
    STATES.with(|[state, other]| {
        if state.import_cards(data).is_ok() {
            let mut again = Vec::new();
            let keys = state.export_cards(&|_| true, &mut again);
            assert_eq!(
                other.import_cards(&again),
                Ok(keys),
                "a checkpoint's cards export to one that reads"
            );
        }
    });
}
