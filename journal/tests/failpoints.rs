//! Fault injection through the simulated file layer: write errors, fsync
//! errors, a full disk, a stalled disk (queue full), a failed snapshot.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{payload_for, Faults, SimDisk};
use journal::{
    AppendError, Config, Error, Journal, Replay, Status, BATCH_RECORDS_MAX, JOURNAL_QUEUE_DEPTH_MAX,
};

const DIR: &str = "/journal";

fn open(disk: &SimDisk) -> Journal {
    let mut config = Config::new(DIR);
    config.queue_wait = Duration::from_millis(30);
    Journal::open(config, Arc::new(disk.clone()), |_| Ok(()))
        .unwrap()
        .0
}

/// Appends 20 durable records, then applies `faults` and appends one more.
fn fail_with(faults: Faults) -> (SimDisk, Journal, u64) {
    let disk = SimDisk::new();
    let journal = open(&disk);
    for seq in 1..=20 {
        journal.try_append(1, &payload_for(1, seq)).unwrap();
    }
    journal.wait_durable_blocking(20).unwrap();
    disk.set_faults(faults);
    let seq = journal.try_append(1, &payload_for(1, 21)).unwrap();
    (disk, journal, seq)
}

fn assert_failed(disk: &SimDisk, journal: &Journal, seq: u64) {
    assert_eq!(journal.wait_durable_blocking(seq), Err(AppendError::Failed));
    assert_eq!(journal.status(), Status::Failed);
    assert_eq!(
        journal.durable_seq(),
        20,
        "nothing after the failure is durable"
    );
    assert_eq!(journal.try_append(1, b"x"), Err(AppendError::Failed));
    assert!(matches!(journal.shutdown(), Err(Error::Failed)));
    // Restart on the same disk: every record reported durable is there.
    disk.set_faults(Faults::default());
    let mut last = 0;
    let mut config = Config::new(DIR);
    config.repair = false;
    let (journal, _) = Journal::open(config, Arc::new(disk.clone()), |item| {
        if let Replay::Record(record) = item {
            last = record.seq;
        }
        Ok(())
    })
    .unwrap();
    assert!(last >= 20);
    journal.shutdown().unwrap();
}

#[test]
fn write_error_fails_the_journal() {
    let (disk, journal, seq) = fail_with(Faults {
        fail_writes: true,
        ..Faults::default()
    });
    assert_failed(&disk, &journal, seq);
}

#[test]
fn fsync_error_fails_the_journal_and_is_never_retried() {
    let (disk, journal, seq) = fail_with(Faults {
        fail_syncs: true,
        ..Faults::default()
    });
    assert_eq!(journal.wait_durable_blocking(seq), Err(AppendError::Failed));
    let calls = disk.sync_calls();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        disk.sync_calls(),
        calls,
        "no fsync retry after a failed fsync"
    );
    assert_failed(&disk, &journal, seq);
}

#[test]
fn full_disk_fails_the_journal() {
    let (disk, journal, seq) = fail_with(Faults {
        space_bytes: Some(0),
        ..Faults::default()
    });
    assert_failed(&disk, &journal, seq);
}

#[tokio::test(flavor = "current_thread")]
async fn async_waiters_see_the_failure() {
    let (_disk, journal, seq) = fail_with(Faults {
        fail_syncs: true,
        ..Faults::default()
    });
    assert_eq!(journal.wait_durable(seq).await, Err(AppendError::Failed));
    assert_eq!(journal.ack(seq).await, Err(AppendError::Failed));
    // A connection holding an answer hears it too, and does not wait.
    let mut watch = journal.durable_watch();
    assert_eq!(watch.changed().await, Err(AppendError::Failed));
    assert!(watch.durable_seq() < seq);
}

/// Clears the disk's faults when dropped.
struct Unstall(SimDisk);

impl Drop for Unstall {
    fn drop(&mut self) {
        self.0.set_faults(Faults::default());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn full_queue_waits_a_bounded_time_then_refuses() {
    let disk = SimDisk::new();
    let journal = open(&disk);
    disk.set_faults(Faults {
        stalled: true,
        ..Faults::default()
    });
    // Whatever happens below, the disk comes back before the journal is
    // dropped: dropping joins a writer that would otherwise wait for ever.
    let _unstall = Unstall(disk.clone());
    // The writer takes the first record and blocks writing it on the
    // stalled disk; only then is what the queue holds up to the test
    // alone (on a loaded machine the writer may start late, and would
    // otherwise take a batch out of a queue the test thinks is full).
    journal.try_append(1, b"r").expect("room");
    let deadline = Instant::now() + Duration::from_secs(10);
    while disk.stalled_waiters() == 0 {
        assert!(
            Instant::now() < deadline,
            "the writer never reached the disk"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut accepted = 1;
    while journal.try_append(1, b"r").is_ok() {
        accepted += 1;
        assert!(
            accepted <= JOURNAL_QUEUE_DEPTH_MAX + BATCH_RECORDS_MAX,
            "queue is bounded"
        );
    }
    assert!(accepted >= JOURNAL_QUEUE_DEPTH_MAX);
    let started = Instant::now();
    assert_eq!(journal.append(1, b"r").await, Err(AppendError::Full));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(25) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(
        journal.status(),
        Status::Running,
        "a full queue is not a failure"
    );
    disk.set_faults(Faults::default());
    let seq = journal.append(1, b"after").await.unwrap();
    journal.wait_durable(seq).await.unwrap();
    journal.shutdown().unwrap();
}

#[test]
fn failed_snapshot_leaves_the_journal_running() {
    let disk = SimDisk::new();
    let journal = open(&disk);
    let seq = journal.try_append(1, b"r").unwrap();
    journal.wait_durable_blocking(seq).unwrap();
    assert!(matches!(
        journal.snapshot(seq + 1, b"s"),
        Err(Error::SnapshotAhead { .. })
    ));
    disk.set_faults(Faults {
        space_bytes: Some(0),
        ..Faults::default()
    });
    assert!(matches!(
        journal.snapshot(seq, b"state"),
        Err(Error::Io { .. })
    ));
    disk.set_faults(Faults::default());
    assert_eq!(journal.status(), Status::Running);
    let next = journal.try_append(1, b"r").unwrap();
    journal.wait_durable_blocking(next).unwrap();
    journal.snapshot(next, b"state").unwrap();
    journal.shutdown().unwrap();
}
