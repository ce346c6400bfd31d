//! Apply throughput of each store, side by side, in one run: not a gate
//! (ignored by default; timing in a shared CI box says little), a
//! measurement for docs/archive.md. Run it in release mode:
//!
//! ```text
//! cargo test --release -p archive --test throughput -- --ignored --nocapture
//! ```

use std::time::Instant;

use archive::contract;
use archive::testing::PgServer;
use archive::{Archive, PgArchive, SqliteArchive, BATCH_RECORDS_MAX};

/// Records applied per store: 49 full batches.
const RECORDS: u64 = 200_000;
/// Merchants the payments are spread over, so the merchant indexes see
/// interleaved inserts as in production.
const MERCHANTS: u64 = 16;

/// Every record of the run, encoded before the clock starts.
fn records() -> Vec<(u64, Vec<u8>)> {
    (1..=RECORDS)
        .map(|seq| {
            let merchant = 1 + (seq % MERCHANTS) as u32;
            let p = contract::payment(seq, merchant, 1_700_000_000_000 + seq, seq % 100_000);
            (seq, contract::record(&p))
        })
        .collect()
}

/// Applies `recs` in batches of [`BATCH_RECORDS_MAX`]; records per second.
fn measure(name: &str, a: &mut dyn Archive, recs: &[(u64, Vec<u8>)]) -> f64 {
    let started = Instant::now();
    for chunk in recs.chunks(BATCH_RECORDS_MAX) {
        let batch: Vec<(u64, &[u8])> = chunk.iter().map(|(s, r)| (*s, &r[..])).collect();
        a.apply(&batch).expect("apply");
    }
    let elapsed = started.elapsed();
    assert_eq!(a.watermark().expect("watermark"), RECORDS);
    let rate = recs.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{name}: {} records in {BATCH_RECORDS_MAX}-record batches in {:.2} s: {rate:.0} records/s",
        recs.len(),
        elapsed.as_secs_f64()
    );
    rate
}

#[test]
#[ignore = "a measurement: run in release mode with --ignored --nocapture"]
fn apply_throughput() {
    let recs = records();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sqlite = SqliteArchive::open(dir.path()).expect("sqlite");
    measure("sqlite", &mut sqlite, &recs);
    let server = PgServer::new().unwrap_or_else(|e| panic!("test server: {e}"));
    let url = server.create_database("throughput").expect("database");
    let mut pg = PgArchive::connect(&url).expect("postgres");
    measure("postgres", &mut pg, &recs);
    // Replayed: every record is at or below the stored version.
    measure("postgres replay", &mut pg, &recs);
}
