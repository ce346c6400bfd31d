//! The payment lifecycle through the switch's engine (validate, risk,
//! lifecycle, idempotency; journal off), single-threaded and with two
//! threads contending; and the map choice behind the state: DashMap (used)
//! beside a single `Mutex<HashMap>` and papaya, on the payment map's access
//! pattern (insert a payment, then update it in place).
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use switch::bench_api::{card, Lifecycle};

/// Cards in rotation: many, so the default velocity rule (5 per card per
/// 60 s on the bench's frozen clock) never fires.
const CARDS: u64 = 1 << 20;

/// The message key of the `i`-th pair: unique over 10 million pairs
/// (the 10 demo terminals × 6-digit STANs, two per pair).
fn key(i: u64) -> ([u8; 8], u32) {
    let terminal = (i / 500_000) % 10 + 1;
    let mut t = *b"DEMO0000";
    t[6] = b'0' + (terminal / 10) as u8;
    t[7] = b'0' + (terminal % 10) as u8;
    (t, ((i % 500_000) * 2) as u32)
}

fn lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("lifecycle");
    let engine = Lifecycle::new();
    let mut i: u64 = 0;
    group.bench_function("preauth_then_capture/1_thread", |b| {
        b.iter(|| {
            i += 1;
            let (terminal, stan) = key(i);
            black_box(engine.preauth_then_capture(&card(i % CARDS), terminal, stan))
        })
    });
    assert!(
        Lifecycle::new().preauth_then_capture(&card(1), *b"DEMO0001", 2),
        "a pair is approved"
    );
    let engine = Arc::new(Lifecycle::new());
    let next = Arc::new(AtomicU64::new(0));
    group.bench_function("preauth_then_capture/2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    let (engine, next) = (engine.clone(), next.clone());
                    std::thread::spawn(move || {
                        for _ in 0..iters / 2 {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let (terminal, stan) = key(i);
                            black_box(engine.preauth_then_capture(
                                &card(i % CARDS),
                                terminal,
                                stan,
                            ));
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.join();
            }
            start.elapsed()
        })
    });
    group.finish();
}

/// What the payment map holds per entry, roughly (a payment is ~250 bytes).
#[derive(Clone)]
struct Value {
    amount: u64,
    _pad: [u64; 30],
}

/// Payments kept in each map while it is measured.
const KEYS: u64 = 1 << 18;

fn payment_map(c: &mut Criterion) {
    let mut group = c.benchmark_group("payment_map");
    let value = Value {
        amount: 1,
        _pad: [0; 30],
    };
    for threads in [1usize, 2] {
        // Sized at start and kept at KEYS entries (ids cycle), so growth and
        // rehashing do not drown the access cost being compared.
        let dash: Arc<dashmap::DashMap<u64, Value>> =
            Arc::new(dashmap::DashMap::with_capacity(KEYS as usize));
        let mutex: Arc<Mutex<HashMap<u64, Value>>> =
            Arc::new(Mutex::new(HashMap::with_capacity(KEYS as usize)));
        let papaya: Arc<papaya::HashMap<u64, Mutex<Value>>> =
            Arc::new(papaya::HashMap::with_capacity(KEYS as usize));
        let ids = Arc::new(AtomicU64::new(0));
        let run = |op: Arc<dyn Fn(u64) + Send + Sync>, iters: u64| -> Duration {
            let start = Instant::now();
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (op, ids) = (op.clone(), ids.clone());
                    std::thread::spawn(move || {
                        for _ in 0..iters / threads as u64 {
                            op(ids.fetch_add(1, Ordering::Relaxed) % KEYS);
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.join();
            }
            start.elapsed()
        };
        let (d, v) = (dash.clone(), value.clone());
        group.bench_function(format!("dashmap/{threads}_threads"), |b| {
            let (d, v) = (d.clone(), v.clone());
            b.iter_custom(|iters| {
                let (d, v) = (d.clone(), v.clone());
                run(
                    Arc::new(move |id| {
                        d.insert(id, v.clone());
                        if let Some(mut e) = d.get_mut(&id) {
                            e.amount += 1;
                        }
                    }),
                    iters,
                )
            })
        });
        let (m, v) = (mutex.clone(), value.clone());
        group.bench_function(format!("mutex_hashmap/{threads}_threads"), |b| {
            let (m, v) = (m.clone(), v.clone());
            b.iter_custom(|iters| {
                let (m, v) = (m.clone(), v.clone());
                run(
                    Arc::new(move |id| {
                        m.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id, v.clone());
                        if let Some(e) = m.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&id) {
                            e.amount += 1;
                        }
                    }),
                    iters,
                )
            })
        });
        let (p, v) = (papaya.clone(), value.clone());
        group.bench_function(format!("papaya/{threads}_threads"), |b| {
            let (p, v) = (p.clone(), v.clone());
            b.iter_custom(|iters| {
                let (p, v) = (p.clone(), v.clone());
                run(
                    Arc::new(move |id| {
                        let pinned = p.pin();
                        pinned.insert(id, Mutex::new(v.clone()));
                        if let Some(e) = pinned.get(&id) {
                            e.lock().unwrap_or_else(|e| e.into_inner()).amount += 1;
                        }
                    }),
                    iters,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lifecycle, payment_map);
criterion_main!(benches);
