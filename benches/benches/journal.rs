//! Journal: append throughput (hand-off to the writer thread) and the cost of
//! a durable versus an immediate acknowledgement. The peer beside us is the
//! obvious design: `write` + `fdatasync` per record on the caller's thread.
//!
//! For the single-core figure run it pinned: `taskset -c 0 cargo bench
//! --bench journal`. Numbers depend on the disk's fsync latency.
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use journal::{AckMode, Config, Journal, OsStorage};

/// A typical authorization state change is a few hundred bytes.
const PAYLOAD: [u8; 200] = [0x5a; 200];

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("journal-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn open(dir: &PathBuf, ack: AckMode) -> Journal {
    let mut config = Config::new(dir);
    config.ack = ack;
    config.queue_wait = Duration::from_secs(5);
    Journal::open(config, Arc::new(OsStorage), |_| Ok(()))
        .expect("open journal")
        .0
}

/// Appends per second, immediate mode: what the processing path pays.
fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal_append");
    group.throughput(Throughput::Elements(1));
    let dir = scratch_dir("append");
    let journal = open(&dir, AckMode::Immediate);
    group.bench_function("append_200B_immediate", |b| {
        b.iter(|| {
            black_box(
                journal
                    .append_blocking(1, black_box(&PAYLOAD))
                    .expect("append"),
            )
        })
    });
    group.finish();
    journal.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One record appended and acknowledged: durable waits for its group's
/// fsync; immediate does not; the peer fsyncs each record itself.
fn ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal_ack");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for (name, ack) in [
        ("durable", AckMode::Durable),
        ("immediate", AckMode::Immediate),
    ] {
        let dir = scratch_dir(name);
        let journal = open(&dir, ack);
        group.bench_function(format!("append_ack_{name}"), |b| {
            b.iter(|| {
                let seq = journal.append_blocking(1, &PAYLOAD).expect("append");
                if ack == AckMode::Durable {
                    journal.wait_durable_blocking(seq).expect("durable");
                }
            })
        });
        // 64 requests in flight share one group commit.
        group.bench_function(format!("append64_ack_{name}"), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    let mut last = 0;
                    for _ in 0..64 {
                        last = journal.append_blocking(1, &PAYLOAD).expect("append");
                    }
                    if ack == AckMode::Durable {
                        journal.wait_durable_blocking(last).expect("durable");
                    }
                }
                started.elapsed() / 64
            })
        });
        journal.shutdown().expect("shutdown");
        let _ = std::fs::remove_dir_all(&dir);
    }
    let dir = scratch_dir("peer");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut file = std::fs::File::create(dir.join("log")).expect("file");
    group.bench_function("peer_write_fdatasync", |b| {
        b.iter(|| {
            file.write_all(&PAYLOAD).expect("write");
            file.sync_data().expect("fsync");
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, append, ack);
criterion_main!(benches);
