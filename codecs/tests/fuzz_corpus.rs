//! Every checked-in fuzz corpus file (`fuzz/corpus/<target>/*`) through the
//! same checks as the fuzz targets, on stable Rust, so CI keeps the seeds
//! and every crash that was fixed.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use codecs::iso8583::Profile;

/// A fuzz target's check over one input.
type Check = fn(&[u8]);

/// The fuzz target directories and the check each one runs.
const TARGETS: &[(&str, Check)] = &[
    ("iso_decode_ascii", |d| {
        checks::iso_decode(&Profile::ASCII, d)
    }),
    ("iso_decode_ascii_hex", |d| {
        checks::iso_decode(&Profile::ASCII_HEX, d)
    }),
    ("iso_round_trip", checks::iso_round_trip_selected),
    ("framing_chunks", checks::framing_chunks),
    ("internal_decode", checks::internal_decode),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn every_corpus_file_passes_its_target_check() {
    let mut total = 0;
    for (target, check) in TARGETS {
        let dir = corpus_dir().join(target);
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        let mut files = 0;
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let data =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            files += 1;
        }
        assert!(files > 0, "{target}: no seed in {}", dir.display());
        total += files;
    }
    assert!(total >= TARGETS.len());
}

#[test]
fn the_ascii_seeds_are_valid_messages() {
    // The seeds were written by pyiso8583; they must decode cleanly, or the
    // fuzzer starts from nothing.
    for (target, profile) in [
        ("iso_decode_ascii", &Profile::ASCII),
        ("iso_decode_ascii_hex", &Profile::ASCII_HEX),
    ] {
        for entry in std::fs::read_dir(corpus_dir().join(target)).expect("corpus dir") {
            let path = entry.expect("directory entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("crash-"))
            {
                continue;
            }
            let data = std::fs::read(&path).expect("seed");
            if let Err(e) = codecs::iso8583::Message::decode(profile, &data) {
                panic!("{}: {e}", path.display());
            }
        }
    }
}

#[test]
fn the_internal_seeds_are_valid_frames() {
    use codecs::internal::{Frame, Request, Response};
    for entry in std::fs::read_dir(corpus_dir().join("internal_decode")).expect("corpus dir") {
        let path = entry.expect("directory entry").path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("crash-"))
        {
            continue;
        }
        let data = std::fs::read(&path).expect("seed");
        let Ok(Some((frame, _))) = Frame::parse(&data) else {
            panic!("{}: not a whole frame", path.display());
        };
        let request = Request::parse(&frame).map(|_| ());
        let response = Response::parse(&frame).map(|_| ());
        assert!(
            request.is_ok() || response.is_ok(),
            "{}: {request:?} {response:?}",
            path.display()
        );
    }
}
