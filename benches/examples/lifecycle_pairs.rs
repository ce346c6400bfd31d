//! Pre-authorization + capture pairs through the engine, N of them, for
//! instruction counts that a noisy machine cannot blur:
//!
//! ```text
//! cargo build --release -p benches --example lifecycle_pairs
//! perf stat -e instructions:u target/release/examples/lifecycle_pairs 1000000
//! ```
//!
//! Same pairs as `cargo bench --bench lifecycle` (distinct cards, keys
//! unique over 10 M pairs).

use std::hint::black_box;

use switch::bench_api::{card, Lifecycle};

/// Cards in rotation, as the criterion bench.
const CARDS: u64 = 1 << 20;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let engine = Lifecycle::new();
    let started = std::time::Instant::now();
    let mut approved = 0u64;
    for i in 0..n {
        let terminal = (i / 500_000) % 10 + 1;
        let mut t = *b"DEMO0000";
        t[6] = b'0' + (terminal / 10) as u8;
        t[7] = b'0' + (terminal % 10) as u8;
        let stan = ((i % 500_000) * 2) as u32;
        approved += u64::from(black_box(engine.preauth_then_capture(
            &card(i % CARDS),
            t,
            stan,
        )));
    }
    let per_pair = started.elapsed().as_nanos() as f64 / n as f64;
    println!("{approved} of {n} pairs approved, {per_pair:.0} ns per pair");
}
