//! The tail reader and the retain floor on the real file system: a tail
//! following a live journal across rotations, its bound, restarts, gaps,
//! corruption; the floor against snapshots, release and recovery; a
//! drainer deleting under its own tail; and the read rate (ignored).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use journal::{
    dump, verify, AckMode, Config, Error, Journal, OsStorage, Record, Replay, Tail,
    SEGMENT_BYTES_MIN,
};
use proptest::prelude::*;

/// Longest any test waits for the tail to catch up before failing.
const CATCH_UP_WAIT_MAX: Duration = Duration::from_secs(60);

/// The payload for `seq`: the seq itself, then 0..240 bytes derived from it,
/// so a record read back can be checked against its seq alone.
fn payload_for(seq: u64) -> Vec<u8> {
    let extra = (seq.wrapping_mul(7919) % 240) as usize;
    let mut out = seq.to_le_bytes().to_vec();
    out.extend((0..extra).map(|i| (seq as u8) ^ (i as u8)));
    out
}

/// Checks a record read back against what was appended for its seq.
fn check(record: Record<'_>) {
    assert_eq!(record.record_type, 3, "seq {}", record.seq);
    assert_eq!(
        record.payload,
        payload_for(record.seq),
        "seq {}",
        record.seq
    );
}

/// Small segments (many rotations) and a long queue wait (appenders outrun
/// fsync and should wait rather than be refused).
fn config(dir: &Path) -> Config {
    let mut config = Config::new(dir);
    config.segment_bytes = SEGMENT_BYTES_MIN;
    config.queue_wait = Duration::from_secs(10);
    config
}

/// The state a test replays: the records applied, as `(count, sum of seqs,
/// xor of payload crcs)`, so two replays compare whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct State {
    count: u64,
    seq_sum: u64,
    crc_xor: u32,
}

impl State {
    fn apply(&mut self, record: Record<'_>) {
        self.count += 1;
        self.seq_sum += record.seq;
        self.crc_xor ^= crc32c::crc32c(record.payload);
    }

    fn to_bytes(self) -> Vec<u8> {
        let mut out = self.count.to_le_bytes().to_vec();
        out.extend_from_slice(&self.seq_sum.to_le_bytes());
        out.extend_from_slice(&self.crc_xor.to_le_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> State {
        State {
            count: u64::from_le_bytes(bytes[..8].try_into().unwrap()),
            seq_sum: u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
            crc_xor: u32::from_le_bytes(bytes[16..20].try_into().unwrap()),
        }
    }

    /// The state after records `1..=last` as the tests append them.
    fn upto(last: u64) -> State {
        let mut state = State::default();
        for seq in 1..=last {
            let payload = payload_for(seq);
            state.apply(Record {
                seq,
                record_type: 3,
                payload: &payload,
            });
        }
        state
    }
}

/// Opens the journal, replaying into a [`State`].
fn open(config: Config) -> (Journal, State, Option<u64>) {
    let mut state = State::default();
    let (journal, report) = Journal::open(config, Arc::new(OsStorage), |item| {
        match item {
            Replay::Snapshot { bytes, .. } => state = State::from_bytes(bytes),
            Replay::Record(record) => state.apply(record),
        }
        Ok(())
    })
    .unwrap();
    (journal, state, report.snapshot_seq)
}

/// Appends records `from..=to` and waits until they are durable.
fn append_range(journal: &Journal, from: u64, to: u64) {
    for seq in from..=to {
        assert_eq!(journal.append_blocking(3, &payload_for(seq)).unwrap(), seq);
    }
    journal.wait_durable_blocking(to).unwrap();
}

/// The `.seg` files in `dir`, oldest first.
fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap();
            (stem.parse().unwrap(), p)
        })
        .collect();
    out.sort();
    out
}

/// Reads everything up to `last` (or the end), checking order and content.
fn read_all(tail: &mut Tail, upto: u64, last: u64) -> u64 {
    let started = Instant::now();
    let mut next = tail.position() + 1;
    while tail.position() < last {
        assert!(
            started.elapsed() < CATCH_UP_WAIT_MAX,
            "tail stuck at {tail:?}"
        );
        let got = tail
            .read(upto, 1000, |record| {
                assert_eq!(record.seq, next);
                check(record);
                next += 1;
            })
            .unwrap();
        if got == 0 {
            break;
        }
    }
    tail.position()
}

/// What appender `thread` writes as its `i`th record: a payload that can
/// be checked against its own first 16 bytes.
fn payload_of(thread: u64, i: u64) -> Vec<u8> {
    let key = thread << 32 | i;
    let mut out = payload_for(key);
    out.extend_from_slice(&key.to_le_bytes());
    out
}

#[test]
fn tail_follows_a_live_journal_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _, _) = open(config(dir.path()));
    let journal = Arc::new(journal);
    let threads = 4u64;
    let per_thread = 2_000u64;
    let total = threads * per_thread;
    let reader = {
        let journal = journal.clone();
        std::thread::spawn(move || {
            let mut tail = journal.tail(0).unwrap();
            let mut seen: Vec<(u64, Vec<u8>)> = Vec::new();
            let (mut max, mut reads) = (1usize, 0u64);
            let started = Instant::now();
            while tail.position() < total {
                assert!(started.elapsed() < CATCH_UP_WAIT_MAX, "stuck: {tail:?}");
                let durable = journal.durable_seq();
                // Vary the batch size so reads stop anywhere in a buffer.
                max = max * 7 % 997 + 1;
                let got = tail
                    .read(durable, max, |record| {
                        assert!(record.seq <= durable, "never above the bound");
                        seen.push((record.seq, record.payload.to_vec()));
                    })
                    .unwrap();
                assert!(got <= max);
                reads += 1;
                if got == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            (seen, reads)
        })
    };
    // Seqs are assigned at append: each appender notes which it got.
    let appended: Vec<(u64, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let journal = &journal;
                s.spawn(move || {
                    (0..per_thread)
                        .map(|i| {
                            let payload = payload_of(thread, i);
                            let seq = journal.append_blocking(3, &payload).unwrap();
                            // As the switch in durable mode: the tail catches
                            // up often and reads right behind the writer.
                            if i % 2 == 0 {
                                journal.wait_durable_blocking(seq).unwrap();
                            }
                            (seq, payload)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let (seen, reads) = reader.join().unwrap();
    let mut appended = appended;
    appended.sort();
    assert_eq!(seen.len() as u64, total);
    for (k, ((seq, payload), expected)) in seen.iter().zip(&appended).enumerate() {
        assert_eq!(*seq, k as u64 + 1, "every seq once, in order");
        assert_eq!(payload, &expected.1, "seq {seq} payload intact");
    }
    let rotations = segments(dir.path()).len();
    assert!(rotations > 20, "only {rotations} segments");
    eprintln!("{total} records over {rotations} segments in {reads} reads");
    journal.shutdown().unwrap();
}

#[test]
fn tail_never_returns_a_record_above_upto() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _, _) = open(config(dir.path()));
    let last = 600u64;
    append_range(&journal, 1, last);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
    let reads = proptest::collection::vec((0..last + 50, 0usize..80), 1..40);
    runner
        .run(&(0..last, reads), |(after, reads)| {
            let mut tail = journal.tail(after).unwrap();
            for (upto, max) in reads {
                let before = tail.position();
                let mut next = before + 1;
                let got = tail
                    .read(upto, max, |record| {
                        assert_eq!(record.seq, next);
                        assert!(record.seq <= upto, "{} above {upto}", record.seq);
                        check(record);
                        next += 1;
                    })
                    .unwrap();
                let expected = upto.min(last).saturating_sub(before).min(max as u64);
                prop_assert_eq!(got as u64, expected);
                prop_assert_eq!(tail.position(), before + expected);
            }
            Ok(())
        })
        .unwrap();
    journal.shutdown().unwrap();
}

#[test]
fn tail_across_restart_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _, _) = open(config(dir.path()));
    append_range(&journal, 1, 300);
    journal.shutdown().unwrap();

    // Offline, after a clean stop: everything, then the end.
    let mut tail = Tail::open(Arc::new(OsStorage), dir.path(), 0).unwrap();
    assert_eq!(read_all(&mut tail, u64::MAX, 300), 300);
    assert_eq!(tail.read(u64::MAX, 10, |_| {}).unwrap(), 0);

    let (journal, state, _) = open(config(dir.path()));
    assert_eq!(state, State::upto(300));
    let mut tail = journal.tail(150).unwrap();
    assert_eq!(read_all(&mut tail, u64::MAX, 300), 300);
    assert_eq!(
        tail.read(u64::MAX, 10, |_| {}).unwrap(),
        0,
        "bounded by durable"
    );
    append_range(&journal, 301, 400);
    assert_eq!(read_all(&mut tail, journal.durable_seq(), 400), 400);
    // The tail keeps its place across the journal's stop and a new start.
    journal.shutdown().unwrap();
    let (journal, _, _) = open(config(dir.path()));
    let mut tail = journal.tail(399).unwrap();
    append_range(&journal, 401, 450);
    assert_eq!(read_all(&mut tail, journal.durable_seq(), 450), 450);
    journal.shutdown().unwrap();
}

#[test]
fn gap_when_segments_are_gone_and_ahead_when_beyond_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _, _) = open(config(dir.path()));
    append_range(&journal, 1, 300);
    // No floor: the snapshot deletes every segment it covers.
    journal.snapshot(250, &State::upto(250).to_bytes()).unwrap();
    let first = segments(dir.path())[0].0;
    assert!(first > 1 && first <= 251, "first segment {first}");
    match journal.tail(0) {
        Err(Error::TailGap {
            wanted: 1,
            first_available,
        }) => assert_eq!(first_available, first),
        other => panic!("expected TailGap, got {other:?}"),
    }
    let offline = Tail::open(Arc::new(OsStorage), dir.path(), first - 2);
    assert!(matches!(offline, Err(Error::TailGap { .. })), "{offline:?}");
    // From the snapshot on, the records are there.
    let mut tail = journal.tail(250).unwrap();
    assert_eq!(read_all(&mut tail, u64::MAX, 300), 300);
    match journal.tail(301) {
        Err(Error::TailAhead {
            after_seq: 301,
            durable_seq: 300,
        }) => {}
        other => panic!("expected TailAhead, got {other:?}"),
    }
    journal.shutdown().unwrap();
}

/// Segments deleted under a tail with no floor: the tail says gap.
#[test]
fn tail_without_floor_reports_a_gap_when_deleted_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _, _) = open(config(dir.path()));
    append_range(&journal, 1, 300);
    let mut tail = journal.tail(0).unwrap();
    assert_eq!(tail.read(u64::MAX, 5, |_| {}).unwrap(), 5);
    journal.snapshot(300, &State::upto(300).to_bytes()).unwrap();
    // The open segment still reads (the tail holds it open); the next is gone.
    let result = read_until_error(&mut tail);
    assert!(matches!(result, Error::TailGap { .. }), "{result:?}");
    journal.shutdown().unwrap();
}

fn read_until_error(tail: &mut Tail) -> Error {
    for _ in 0..10_000 {
        match tail.read(u64::MAX, 100, check) {
            Ok(0) => panic!("ended without an error at {tail:?}"),
            Ok(_) => {}
            Err(error) => return error,
        }
    }
    panic!("no error after 10,000 reads")
}

#[test]
fn the_floor_keeps_segments_a_snapshot_covers_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _, _) = open(config(dir.path()));
    append_range(&journal, 1, 1_000);
    let floor = 300u64;
    journal.set_retain_floor(floor);
    journal.set_retain_floor(100); // monotonic: ignored
    journal.snapshot(900, &State::upto(900).to_bytes()).unwrap();
    let kept = segments(dir.path());
    let (count, bytes) = journal.disk_segments().unwrap();
    assert_eq!(count, kept.len());
    assert_eq!(
        bytes,
        kept.iter()
            .map(|s| std::fs::metadata(&s.1).unwrap().len())
            .sum::<u64>()
    );
    // Every record above the floor is still on disk, nothing wholly below it.
    assert!(kept[0].0 <= floor + 1, "first kept {}", kept[0].0);
    assert!(
        kept[1].0 > floor + 1,
        "a segment at or below the floor stayed"
    );
    let mut tail = journal.tail(floor).unwrap();
    assert_eq!(read_all(&mut tail, u64::MAX, 1_000), 1_000);
    drop(tail);
    assert_eq!(journal.release_covered().unwrap(), 0, "floor did not move");

    // Restart with the floor: open keeps them too; replay is the snapshot
    // plus 901..=1000; verify and dump read the kept segments.
    journal.shutdown().unwrap();
    let mut with_floor = config(dir.path());
    with_floor.retain_floor = Some(floor);
    let (journal, state, snapshot) = open(with_floor);
    assert_eq!(snapshot, Some(900));
    assert_eq!(state, State::upto(1_000));
    let on_disk = segments(dir.path());
    assert_eq!(on_disk[0], kept[0], "open deleted what the floor keeps");
    let report = verify(&OsStorage, dir.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let mut dumped = Vec::new();
    dump(&OsStorage, dir.path(), |r| dumped.push(r.seq)).unwrap();
    assert_eq!(dumped, (kept[0].0..=1_000).collect::<Vec<_>>());

    // The archive catches up: raising the floor and releasing deletes the
    // rest the snapshot covers, and a tail from the old floor now gaps.
    journal.set_retain_floor(950);
    let released = journal.release_covered().unwrap();
    assert!(released > 0);
    let left = segments(dir.path());
    assert!(
        left[0].0 <= 901 && left[0].0 > floor + 1,
        "first left {}",
        left[0].0
    );
    assert_eq!(journal.disk_segments().unwrap().0, left.len());
    assert!(matches!(journal.tail(floor), Err(Error::TailGap { .. })));
    append_range(&journal, 1_001, 1_100);
    journal.shutdown().unwrap();
    let (journal, state, _) = open(config(dir.path()));
    assert_eq!(state, State::upto(1_100));
    journal.shutdown().unwrap();
}

#[test]
fn open_without_the_floor_deletes_what_the_snapshot_covers() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _, _) = open(config(dir.path()));
    append_range(&journal, 1, 600);
    journal.set_retain_floor(0);
    journal.snapshot(500, &State::upto(500).to_bytes()).unwrap();
    assert_eq!(segments(dir.path())[0].0, 1, "floor 0 keeps everything");
    journal.shutdown().unwrap();

    // The floor given at open is honoured at open.
    let mut with_floor = config(dir.path());
    with_floor.retain_floor = Some(0);
    let (journal, state, _) = open(with_floor);
    assert_eq!(state, State::upto(600));
    assert_eq!(segments(dir.path())[0].0, 1);
    journal.shutdown().unwrap();

    // No floor: recovery removes them, as it always did.
    let (journal, state, _) = open(config(dir.path()));
    assert_eq!(state, State::upto(600));
    let first = segments(dir.path())[0].0;
    assert!(first > 1 && first <= 501, "first {first}");
    journal.shutdown().unwrap();
}

/// A drainer thread tails the journal, "applies" to an archive, sets the
/// floor to its watermark and releases, while the main thread appends and
/// snapshots at the durable seq: the tail is never cut off, and segments
/// do go.
#[test]
fn a_drainer_releasing_under_its_own_tail_never_loses_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.ack = AckMode::Immediate;
    let (journal, _, _) = open(config);
    let journal = Arc::new(journal);
    journal.set_retain_floor(0);
    let total = 6_000u64;
    let drainer = {
        let journal = journal.clone();
        std::thread::spawn(move || {
            let mut archive = State::default();
            let mut tail = journal.tail(0).unwrap();
            let (mut released, mut max) = (0, 1usize);
            let started = Instant::now();
            while tail.position() < total {
                assert!(started.elapsed() < CATCH_UP_WAIT_MAX, "stuck: {tail:?}");
                max = max * 13 % 509 + 1;
                let got = tail
                    .read(journal.durable_seq(), max, |r| {
                        check(r);
                        archive.apply(r);
                    })
                    .unwrap();
                journal.set_retain_floor(tail.position());
                released += journal.release_covered().unwrap();
                if got == 0 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
            (archive, released)
        })
    };
    for seq in 1..=total {
        assert_eq!(journal.append_blocking(3, &payload_for(seq)).unwrap(), seq);
        if seq % 500 == 0 {
            let durable = journal.durable_seq();
            let state = State::upto(durable).to_bytes();
            journal.snapshot(durable, &state).unwrap();
        }
    }
    let (archive, released) = drainer.join().unwrap();
    assert_eq!(archive, State::upto(total));
    let durable = journal.durable_seq();
    journal
        .snapshot(durable, &State::upto(durable).to_bytes())
        .unwrap();
    let left = journal.disk_segments().unwrap().0;
    assert!(released > 0, "the drainer released nothing");
    assert!(left <= 2, "{left} segments left after the last snapshot");
    journal.shutdown().unwrap();
}

/// Flips one byte in the middle of a sealed segment's records, and zeroes
/// a range in another: a live tail and an offline one both say Corruption,
/// naming the file and an offset inside it.
#[test]
fn corruption_inside_a_sealed_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _, _) = open(config(dir.path()));
    append_range(&journal, 1, 400);
    let sealed = segments(dir.path());
    assert!(sealed.len() > 4);
    let flipped = damage(&sealed[1].1, |data| {
        let mid = data.len() / 2;
        data[mid] ^= 0x40;
    });
    let mut tail = journal.tail(0).unwrap();
    expect_corruption(read_until_error(&mut tail), &sealed[1].1, flipped);
    let mut offline = Tail::open(Arc::new(OsStorage), dir.path(), 0).unwrap();
    expect_corruption(read_until_error(&mut offline), &sealed[1].1, flipped);
    // Past the damage, the tail reads on.
    let after = sealed[2].0 - 1;
    let mut tail = journal.tail(after).unwrap();
    assert_eq!(read_all(&mut tail, u64::MAX, 400), 400);

    let zeroed = damage(&sealed[3].1, |data| {
        let mid = data.len() / 3;
        data[mid..mid + 40].fill(0);
    });
    let mut tail = journal.tail(sealed[2].0).unwrap();
    expect_corruption(read_until_error(&mut tail), &sealed[3].1, zeroed);
    journal.shutdown().unwrap();
}

/// Changes the record bytes of a segment file in place; returns the offset
/// of the changed middle.
fn damage(path: &Path, change: impl FnOnce(&mut Vec<u8>)) -> u64 {
    let mut bytes = std::fs::read(path).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    let mut records = bytes[..end].to_vec();
    let before = records.clone();
    change(&mut records);
    let at = records
        .iter()
        .zip(&before)
        .position(|(a, b)| a != b)
        .unwrap();
    bytes[..end].copy_from_slice(&records);
    std::fs::write(path, bytes).unwrap();
    at as u64
}

fn expect_corruption(error: Error, path: &Path, changed_at: u64) {
    match error {
        Error::Corruption { file, offset, .. } => {
            assert_eq!(file, path);
            assert!(offset >= 24 && offset <= changed_at, "offset {offset}");
        }
        other => panic!("expected Corruption, got {other:?}"),
    }
}

/// Tail read rate from the page cache: 1M records of 250 bytes, offline
/// and live. Run with
/// `cargo test -p journal --release --test tail -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run in release"]
fn tail_read_rate() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.ack = AckMode::Immediate;
    config.queue_wait = Duration::from_secs(5);
    let records = 1_000_000u64;
    let (journal, _, _) = open(config);
    let payload = [7u8; 250];
    for _ in 0..records {
        journal.append_blocking(1, &payload).unwrap();
    }
    journal.wait_durable_blocking(records).unwrap();
    for round in 0..3 {
        let started = Instant::now();
        let mut tail = journal.tail(0).unwrap();
        let mut bytes = 0u64;
        while tail.position() < records {
            tail.read(records, 4096, |r| bytes += r.payload.len() as u64)
                .unwrap();
        }
        let live = started.elapsed();
        let started = Instant::now();
        let mut tail = Tail::open(Arc::new(OsStorage), dir.path(), 0).unwrap();
        while tail.read(u64::MAX, 4096, |_| {}).unwrap() > 0 {}
        let offline = started.elapsed();
        assert_eq!(tail.position(), records);
        assert_eq!(bytes, records * 250);
        let rate = |d: Duration| records as f64 / d.as_secs_f64();
        eprintln!(
            "round {round}: live {live:?} ({:.0} records/s), offline {offline:?} ({:.0} records/s)",
            rate(live),
            rate(offline)
        );
    }
    journal.shutdown().unwrap();
}
