//! The journal on the real file system: concurrent tokio appenders awaiting
//! durability, snapshot, restart, verify and dump, and the replay rate.

use std::sync::Arc;
use std::time::Instant;

use journal::{dump, verify, AckMode, Config, Journal, OsStorage, Replay};

/// A journal, the snapshot it replayed and the type-3 seqs it replayed.
type Opened = (Journal, Option<(u64, Vec<u8>)>, Vec<u64>);

fn open(config: Config) -> Opened {
    let mut snapshot = None;
    let mut seqs = Vec::new();
    let (journal, _) = Journal::open(config, Arc::new(OsStorage), |item| {
        match item {
            Replay::Snapshot { seq, bytes } => snapshot = Some((seq, bytes.to_vec())),
            // Type 3 records carry their own seq, so order is checkable.
            Replay::Record(record) if record.record_type == 3 => {
                assert_eq!(record.payload, record.seq.to_le_bytes());
                seqs.push(record.seq);
            }
            Replay::Record(_) => {}
        }
        Ok(())
    })
    .unwrap();
    (journal, snapshot, seqs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_snapshot_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.segment_bytes = journal::SEGMENT_BYTES_MIN;
    let (journal, _, _) = open(config.clone());
    let journal = Arc::new(journal);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let got = journal.append(2, &[0; 8]).await.unwrap();
                journal.ack(got).await.unwrap();
                assert!(journal.durable_seq() >= got);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(journal.durable_seq(), 400);
    journal.shutdown().unwrap();

    // Second run writes checkable payloads, snapshots at 450, and stops.
    let mut config2 = config.clone();
    config2.ack = AckMode::Immediate;
    let (journal, snapshot, seqs) = open(config2);
    assert!(snapshot.is_none());
    assert!(seqs.is_empty());
    for seq in 401..=500u64 {
        assert_eq!(journal.try_append(3, &seq.to_le_bytes()).unwrap(), seq);
        if seq == 450 {
            journal.wait_durable(seq).await.unwrap();
            journal.snapshot(seq, b"state at 450").unwrap();
        }
    }
    journal.shutdown().unwrap();
    assert_eq!(
        journal.durable_seq(),
        500,
        "shutdown flushes and fsyncs the queue"
    );

    let report = verify(&OsStorage, dir.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let mut dumped = 0;
    let total = dump(&OsStorage, dir.path(), |_| dumped += 1).unwrap();
    assert_eq!(total, dumped);
    assert!(report.segments.last().unwrap().last_seq == Some(500));

    let (journal, snapshot, seqs) = open(config);
    assert_eq!(snapshot, Some((450, b"state at 450".to_vec())));
    assert_eq!(seqs, (451..=500).collect::<Vec<_>>());
    assert_eq!(journal.last_seq(), 500);
    journal.shutdown().unwrap();
}

/// Replay rate on the real file system. Debug builds are slow; run with
/// `cargo test -p journal --release --test os -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run in release"]
fn replay_rate() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.ack = AckMode::Immediate;
    // Filling as fast as possible outruns fsync; wait rather than refuse.
    config.queue_wait = std::time::Duration::from_secs(5);
    let records = 2_000_000u64;
    let (journal, _, _) = open(config.clone());
    let payload = [7u8; 100];
    for _ in 0..records {
        journal.append_blocking(1, &payload).unwrap();
    }
    journal.shutdown().unwrap();
    let started = Instant::now();
    let mut count = 0u64;
    let (journal, report) = Journal::open(config, Arc::new(OsStorage), |_| {
        count += 1;
        Ok(())
    })
    .unwrap();
    let elapsed = started.elapsed();
    journal.shutdown().unwrap();
    assert_eq!(count, records);
    let rate = records as f64 / elapsed.as_secs_f64();
    eprintln!("replayed {records} records of 100 B in {elapsed:?} ({rate:.0} records/s); report {report:?}");
    assert!(rate > 1_000_000.0, "replay below 1M records/s: {rate:.0}");
}

/// Bursts of appends from two threads, each burst synced in one or more
/// groups: after every burst a durable watch reaches the burst's last
/// record. (A task once passed the sequence on to connections and could
/// skip a group synced while it was publishing the one before; its
/// answers then waited for a later record, for ever after the last burst.)
#[test]
fn a_durable_watch_sees_every_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _, _) = open(Config::new(dir.path()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut watch = journal.durable_watch();
    for burst in 0..2_000u64 {
        let last = std::thread::scope(|s| {
            let appender = || {
                (0..1 + burst % 3)
                    .map(|_| journal.append_blocking(1, b"x").unwrap())
                    .max()
                    .unwrap_or(0)
            };
            let other = s.spawn(appender);
            appender().max(other.join().unwrap())
        });
        let reached = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while watch.durable_seq() < last {
                    watch.changed().await?;
                }
                Ok::<(), journal::AppendError>(())
            })
            .await
        });
        assert_eq!(
            reached,
            Ok(Ok(())),
            "burst {burst}: record {last} is durable (journal at {}), the watch says {}",
            journal.durable_seq(),
            watch.durable_seq()
        );
    }
    journal.shutdown().unwrap();
    // Closed: the watch says so rather than waiting.
    assert_eq!(
        rt.block_on(watch.changed()),
        Err(journal::AppendError::Closed)
    );
}

/// Segments are extended with zeros ahead of their data (so a group
/// commit's fdatasync need not also commit a new file size), and a restart
/// takes those zeros as the clean end of the segment: every record comes
/// back, nothing is truncated, verify calls the directory clean.
#[test]
fn zeros_written_ahead_are_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(dir.path());
    let records = 3_000u64;
    let (journal, _, _) = open(config.clone());
    for seq in 1..=records {
        assert_eq!(journal.try_append(3, &seq.to_le_bytes()).unwrap(), seq);
        if seq % 100 == 0 {
            journal.wait_durable_blocking(seq).unwrap();
        }
    }
    journal.shutdown().unwrap();
    let segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segments.len(), 1);
    // Header (24) plus 3,000 frames of 17 + 8 bytes.
    let written = 24 + records * 25;
    let on_disk = std::fs::metadata(&segments[0]).unwrap().len();
    assert!(
        on_disk >= written + journal::SEGMENT_PREALLOC_BYTES / 2,
        "{on_disk} bytes on disk for {written} written"
    );
    let bytes = std::fs::read(&segments[0]).unwrap();
    assert!(bytes[written as usize..].iter().all(|&b| b == 0));

    let report = verify(&OsStorage, dir.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    let mut replayed = Vec::new();
    let (journal, recovery) = Journal::open(config, Arc::new(OsStorage), |item| {
        if let Replay::Record(r) = item {
            replayed.push(r.seq);
        }
        Ok(())
    })
    .unwrap();
    journal.shutdown().unwrap();
    assert_eq!(replayed, (1..=records).collect::<Vec<_>>());
    assert!(recovery.truncated.is_none(), "{recovery:?}");
    assert!(recovery.dropped.is_empty(), "{recovery:?}");
    assert_eq!(recovery.next_seq, records + 1);
    // The zeros stayed where they were: nothing was cut.
    assert_eq!(std::fs::metadata(&segments[0]).unwrap().len(), on_disk);
}

/// The `.seg` files of `dir`, oldest first.
fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

#[test]
fn verify_finds_a_segment_cut_short_of_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(dir.path());
    let records = 100u64;
    let (journal, _, _) = open(config.clone());
    for seq in 1..=records {
        assert_eq!(journal.try_append(3, &seq.to_le_bytes()).unwrap(), seq);
    }
    journal.wait_durable_blocking(records).unwrap();
    journal.snapshot(records, b"state").unwrap();
    journal.shutdown().unwrap();
    assert!(verify(&OsStorage, dir.path()).unwrap().is_clean());

    // Cut the segment at a frame boundary (header 24 B, frames 25 B) below
    // what the snapshot says was durable: every frame left is valid.
    let segment = &segments(dir.path())[0];
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap();
    file.set_len(24 + 40 * 25).unwrap();
    let report = verify(&OsStorage, dir.path()).unwrap();
    assert!(
        report.segments.iter().all(|s| s.damage.is_none()),
        "{report:?}"
    );
    assert!(!report.is_clean(), "{report:?}");
    assert!(
        report
            .gaps
            .iter()
            .any(|g| g.contains("end at seq 40") && g.contains("snapshot seq 100")),
        "{report:?}"
    );

    // Without its segment at all, the snapshot still says one was there.
    std::fs::remove_file(segment).unwrap();
    let report = verify(&OsStorage, dir.path()).unwrap();
    assert!(!report.is_clean(), "{report:?}");
}

#[test]
fn files_are_created_for_the_owner_alone() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("journal");
    let (journal, _, _) = open(Config::new(&dir));
    let seq = journal.try_append(3, &1u64.to_le_bytes()).unwrap();
    journal.wait_durable_blocking(seq).unwrap();
    journal.snapshot(seq, b"state").unwrap();
    journal.shutdown().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "snap")));
    assert!(files
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "seg")));
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}
