//! The `journal_records` fuzz target's check on stable Rust: every file of
//! its checked-in corpus (`fuzz/corpus/journal_records/`), real records
//! cut and flipped, and random bytes.

#[path = "../../fuzz/record_checks.rs"]
mod record_checks;

use std::path::Path;

use proptest::prelude::*;

/// Every corpus file.
fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/journal_records");
    let mut files: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_corpus_file_and_every_cut_and_flip_of_it_passes() {
    let files = corpus();
    assert!(
        files.len() >= 4,
        "the corpus is checked in: {}",
        files.len()
    );
    for f in &files {
        record_checks::journal_records(f);
        for n in 0..f.len() {
            record_checks::journal_records(&f[..n]);
            let mut flipped = f.clone();
            flipped[n] ^= 0x5a;
            record_checks::journal_records(&flipped);
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_are_errors_not_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        record_checks::journal_records(&data);
    }
}

/// The velocity seeds are valid, so the fuzzer mutates from records that
/// read: a counted attempt, and a checkpoint of two keys.
#[test]
fn the_velocity_seeds_read() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/journal_records");
    let attempt = std::fs::read(dir.join("velocity-attempt")).expect("seed");
    assert!(engine::velocity::decode_record(&attempt).is_some());
    let checkpoint = std::fs::read(dir.join("velocity-checkpoint")).expect("seed");
    let state = risk::RiskState::with_capacity(risk::Capacity {
        card_keys_max: 64,
        terminal_keys_max: 64,
        watch_list_max: 1,
    });
    assert_eq!(state.import_cards(&checkpoint), Ok(2));
}
