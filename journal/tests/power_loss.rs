//! Power-loss tests: seeded workloads run on the simulated disk, which
//! records every operation; each crash point replays a prefix of that trace,
//! forgets unsynced data and tears what is left of it, then recovers.
//! After every crash, recovery must yield exactly a prefix of the appended
//! records that includes every record reported durable before the crash.
//!
//! `JOURNAL_CRASH_WORKLOADS` (default 16) and `JOURNAL_CRASH_POINTS` (default
//! 120 per workload) scale the run; a failure prints workload and crash seeds.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{payload_for, Op, Rng, SimDisk, State};
use journal::{verify, AckMode, Config, Journal, Replay, SEGMENT_BYTES_MIN};

const DIR: &str = "/journal";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(ack: AckMode) -> Config {
    let mut config = Config::new(DIR);
    config.ack = ack;
    config.segment_bytes = SEGMENT_BYTES_MIN;
    config.flush_interval = Duration::from_millis(1);
    config
}

/// What a workload did: the trace, and after how many operations each
/// sequence was reported durable.
struct Workload {
    trace: Vec<Op>,
    /// `(trace length when observed, durable seq observed)`, increasing.
    durable_marks: Vec<(usize, u64)>,
    appended: u64,
}

fn run_workload(seed: u64) -> Workload {
    let mut rng = Rng(seed);
    let disk = SimDisk::new();
    let ack = if rng.below(2) == 0 {
        AckMode::Durable
    } else {
        AckMode::Immediate
    };
    let storage: Arc<dyn journal::Storage> = Arc::new(disk.clone());
    let (journal, _) = Journal::open(config(ack), storage, |_| Ok(())).expect("open empty");
    let records = 40 + rng.below(120);
    let mut durable_marks = Vec::new();
    let mut seq = 0;
    while seq < records {
        let group = 1 + rng.below(8);
        for _ in 0..group.min(records - seq) {
            seq = journal
                .try_append(7, &payload_for(seed, seq + 1))
                .expect("append");
        }
        if rng.below(4) != 0 {
            journal.wait_durable_blocking(seq).expect("durable");
            durable_marks.push((disk.trace_len(), seq));
            if rng.below(8) == 0 {
                journal.snapshot(seq, &seq.to_le_bytes()).expect("snapshot");
            }
        }
    }
    journal.shutdown().expect("shutdown");
    durable_marks.push((disk.trace_len(), journal.durable_seq()));
    Workload {
        trace: disk.trace(),
        durable_marks,
        appended: seq,
    }
}

/// Recovers a crashed image and checks the prefix property.
fn check_crash(workload: &Workload, seed: u64, cut: usize, crash_seed: u64) {
    let image = State::replay(&workload.trace[..cut]).crash(&mut Rng(crash_seed));
    let durable = workload
        .durable_marks
        .iter()
        .take_while(|(at, _)| *at <= cut)
        .last()
        .map_or(0, |m| m.1);
    let disk = SimDisk::from_state(image);
    let storage: Arc<dyn journal::Storage> = Arc::new(disk.clone());
    let context = format!("workload seed {seed}, cut {cut}, crash seed {crash_seed}");
    let mut last = 0;
    let mut snapshot = None;
    let (journal, report) = Journal::open(config(AckMode::Durable), storage, |item| {
        match item {
            Replay::Snapshot { seq, bytes } => {
                assert_eq!(bytes, seq.to_le_bytes(), "{context}: snapshot content");
                snapshot = Some(seq);
                last = seq;
            }
            Replay::Record(record) => {
                assert_eq!(record.seq, last + 1, "{context}: records in order, no gap");
                assert_eq!(record.payload, payload_for(seed, record.seq), "{context}");
                last = record.seq;
            }
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{context}: recovery failed: {e}"));
    assert!(
        last >= durable,
        "{context}: lost durable records: recovered up to {last}, durable {durable}"
    );
    assert!(last <= workload.appended, "{context}: invented records");
    assert_eq!(report.next_seq, last + 1, "{context}");
    assert_eq!(report.snapshot_seq, snapshot, "{context}");
    // After recovery the directory is clean and the journal keeps going.
    let seq = journal
        .try_append(7, &payload_for(seed, last + 1))
        .expect("append after crash");
    journal
        .wait_durable_blocking(seq)
        .expect("durable after crash");
    journal.shutdown().expect("shutdown");
    let report = verify(&disk, Path::new(DIR)).expect("verify");
    assert!(
        report.is_clean(),
        "{context}: verify after recovery: {report:?}"
    );
}

#[test]
fn recovery_after_power_loss_yields_a_durable_prefix() {
    let workloads = env_or("JOURNAL_CRASH_WORKLOADS", 16);
    let points = env_or("JOURNAL_CRASH_POINTS", 120);
    let base = env_or("JOURNAL_CRASH_SEED", 0x5EED);
    let mut crashes = 0;
    for w in 0..workloads {
        let seed = base + w;
        let workload = run_workload(seed);
        let mut rng = Rng(seed.rotate_left(17));
        for _ in 0..points {
            let cut = rng.below(workload.trace.len() as u64 + 1) as usize;
            check_crash(&workload, seed, cut, rng.next());
            crashes += 1;
        }
    }
    eprintln!("checked {crashes} crash points");
}
