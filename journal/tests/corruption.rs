//! Corruption tests: random bit flips and zeroed ranges in journal files are
//! all detected (recovery stops naming the file, verify reports it); only
//! damage that touches the last frame of the last segment, which cannot be
//! told from a torn write, is truncated, and then only as a prefix.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{payload_for, Rng, SimDisk, State};
use journal::{verify, Config, Error, Journal, Replay, SEGMENT_BYTES_MIN};

const DIR: &str = "/journal";
const SEED: u64 = 0xC0FFEE;

fn config() -> Config {
    let mut config = Config::new(DIR);
    config.segment_bytes = SEGMENT_BYTES_MIN;
    config
}

/// A clean journal of `records` records over several segments, plus an
/// optional snapshot at `snapshot_at`.
fn build(records: u64, snapshot_at: Option<u64>) -> State {
    let disk = SimDisk::new();
    let (journal, _) = Journal::open(config(), Arc::new(disk.clone()), |_| Ok(())).unwrap();
    for seq in 1..=records {
        assert_eq!(journal.try_append(3, &payload_for(SEED, seq)).unwrap(), seq);
        if seq % 16 == 0 || seq == records {
            journal.wait_durable_blocking(seq).unwrap();
        }
        if Some(seq) == snapshot_at {
            journal.snapshot(seq, b"snapshot state").unwrap();
        }
    }
    journal.shutdown().unwrap();
    disk.state()
}

/// Frame start offsets of a clean segment and the seq of its first frame.
fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        starts.push(at);
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 17 + len;
    }
    starts
}

/// Opens a damaged image; returns the last seq replayed or the error.
fn recover(state: State, repair: bool) -> (Result<u64, Error>, SimDisk) {
    let disk = SimDisk::from_state(state);
    let mut config = config();
    config.repair = repair;
    let mut last = 0;
    let result = Journal::open(config, Arc::new(disk.clone()), |item| {
        match item {
            Replay::Snapshot { seq, .. } => last = seq,
            Replay::Record(record) => {
                assert_eq!(record.seq, last + 1, "replay is gap-free");
                assert_eq!(
                    record.payload,
                    payload_for(SEED, record.seq),
                    "no altered record"
                );
                last = record.seq;
            }
        }
        Ok(())
    });
    (
        result.map(|(j, _)| {
            j.shutdown().unwrap();
            last
        }),
        disk,
    )
}

fn segments(files: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<(PathBuf, Vec<u8>)> {
    files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
        .map(|(p, b)| (p.clone(), b.clone()))
        .collect()
}

/// A clean journal of 300 records over several segments: the record count,
/// the image and its segments.
fn several_segments() -> (u64, State, Vec<(PathBuf, Vec<u8>)>) {
    let records = 300;
    let clean = build(records, None);
    let segs = segments(&clean.files());
    assert!(segs.len() >= 4, "workload spans several segments");
    (records, clean, segs)
}

#[test]
fn bit_flips_and_zeroed_ranges_are_detected() {
    let (records, clean, segs) = several_segments();
    let mut rng = Rng(SEED);
    let (mut detected, mut truncated) = (0, 0);
    for case in 0..400 {
        let (index, (path, bytes)) = {
            let i = rng.below(segs.len() as u64) as usize;
            (i, &segs[i])
        };
        let mut damaged = bytes.clone();
        let start = rng.below(bytes.len() as u64) as usize;
        let end = if rng.below(2) == 0 {
            damaged[start] ^= 1 << rng.below(8);
            start + 1
        } else {
            let end = (start + 1 + rng.below(64) as usize).min(bytes.len());
            damaged[start..end].fill(0);
            end
        };
        if damaged == *bytes {
            continue; // zeroing zeros changes nothing
        }
        let mut state = clean.clone();
        state.set_file(path, damaged);
        let starts = frame_starts(bytes);
        let is_last = index + 1 == segs.len();
        let touches_last_frame = is_last && end > *starts.last().unwrap();
        let context = format!("case {case}: {} bytes {start}..{end}", path.display());
        let (result, disk) = recover(state, false);
        match result {
            Err(Error::Corruption { file, .. }) => {
                assert_eq!(&file, path, "{context}");
                assert!(
                    !verify(&disk, Path::new(DIR)).unwrap().is_clean(),
                    "{context}"
                );
                detected += 1;
            }
            Ok(last) if touches_last_frame => {
                // Torn-tail look-alike: a prefix that keeps every frame
                // before the damaged one.
                let first_seq = records - starts.len() as u64 + 1;
                let damaged_frame = starts.iter().filter(|s| **s <= start).count() as u64;
                assert!(
                    last + 1 >= first_seq + damaged_frame.saturating_sub(1),
                    "{context}"
                );
                assert!(last < records, "{context}");
                truncated += 1;
            }
            other => panic!("{context}: damage not detected: {other:?}"),
        }
    }
    eprintln!("{detected} detected, {truncated} truncated as torn tails");
    assert!(detected > 300);
}

/// Zeros from a frame position to the end of a segment (what the writer
/// writes ahead of its data) end the segment cleanly, in any segment; a
/// single other byte after them makes them damage like any other.
#[test]
fn zeros_to_the_end_of_a_segment_are_its_end_and_nothing_else_is() {
    let (records, clean, segs) = several_segments();
    let mut rng = Rng(SEED ^ 0x5);
    for (index, (path, bytes)) in segs.iter().enumerate() {
        let is_last = index + 1 == segs.len();
        let zeros = 1 + rng.below(5_000) as usize;
        let mut padded = bytes.clone();
        padded.resize(bytes.len() + zeros, 0);
        let mut state = clean.clone();
        state.set_file(path, padded.clone());
        let (result, disk) = recover(state, false);
        assert_eq!(
            result.unwrap(),
            records,
            "{} + {zeros} zeros",
            path.display()
        );
        assert!(verify(&disk, Path::new(DIR)).unwrap().is_clean());
        assert_eq!(disk.state().files()[path], padded, "zeros left in place");

        // One non-zero byte anywhere in the zeros: the frame that starts
        // there fails its check and no valid frame follows.
        let at = bytes.len() + rng.below(zeros as u64) as usize;
        let mut dirty = padded;
        dirty[at] = 1 + rng.below(255) as u8;
        let mut state = clean.clone();
        state.set_file(path, dirty);
        let (result, disk) = recover(state, false);
        if is_last {
            // A torn tail: cut back to the last whole frame.
            assert_eq!(result.unwrap(), records);
            assert_eq!(disk.state().files()[path], *bytes, "cut at the zeros");
        } else {
            match result {
                Err(Error::Corruption { file, .. }) => assert_eq!(&file, path),
                other => panic!("{}: byte at {at} not detected: {other:?}", path.display()),
            }
        }
    }
}

#[test]
fn corrupt_snapshot_stops_the_start() {
    let clean = build(100, Some(64));
    let files = clean.files();
    let (path, bytes) = files
        .iter()
        .find(|(p, _)| p.extension().is_some_and(|e| e == "snap"))
        .expect("snapshot written");
    let mut rng = Rng(7);
    for _ in 0..50 {
        let mut damaged = bytes.clone();
        let at = rng.below(bytes.len() as u64) as usize;
        damaged[at] ^= 1 << rng.below(8);
        let mut state = clean.clone();
        state.set_file(path, damaged);
        match recover(state, false).0 {
            Err(Error::Corruption { file, .. }) => assert_eq!(&file, path),
            other => panic!("snapshot damage at {at} not detected: {other:?}"),
        }
    }
    assert_eq!(recover(clean, false).0.unwrap(), 100);
}

#[test]
fn repair_keeps_the_valid_prefix_and_reports_the_rest() {
    let clean = build(300, None);
    let segs = segments(&clean.files());
    let (path, bytes) = &segs[1];
    let starts = frame_starts(bytes);
    let mut damaged = bytes.clone();
    damaged[starts[2] + 20] ^= 0x40;
    let mut state = clean.clone();
    state.set_file(path, damaged);
    assert!(matches!(
        recover(state.clone(), false).0,
        Err(Error::Corruption { .. })
    ));

    let disk = SimDisk::from_state(state);
    let mut config = config();
    config.repair = true;
    let mut last = 0;
    let (journal, report) = Journal::open(config, Arc::new(disk.clone()), |item| {
        if let Replay::Record(record) = item {
            last = record.seq;
        }
        Ok(())
    })
    .unwrap();
    let first_seq = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
    assert_eq!(last, first_seq + 1, "kept the two frames before the damage");
    assert_eq!(report.next_seq, last + 1);
    assert_eq!(
        report.dropped.len(),
        segs.len() - 1,
        "damaged tail plus later segments"
    );
    assert_eq!(report.dropped[0].file, *path);
    assert_eq!(report.dropped[0].offset, starts[2] as u64);
    journal.shutdown().unwrap();
    assert!(verify(&disk, Path::new(DIR)).unwrap().is_clean());
}
