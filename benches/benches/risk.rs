//! Risk: evaluating the default policy on a typical authorization, and
//! velocity updates with two threads contending. The peer beside us is a
//! single `Mutex<HashMap>` counter with std's hasher, the obvious design.

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use risk::{evaluate, Action, Bin, CardToken, Channel, Context, MessageKind, Policy, RiskState};

/// Distinct cards cycled through, so most attempts hit a warm key.
const CARDS: u32 = 10_000;
/// Clock step per attempt in the typical case: a card comes back every
/// `CARDS * TYPICAL_STEP_MS` = 100 s, so no attempt trips the 60 s limit
/// (at 1 ms a card came back every 10 s and most attempts measured a 65).
const TYPICAL_STEP_MS: u64 = 10;

fn tokenize(pan: &str) -> CardToken {
    let mut token = [0u8; 32];
    for (i, byte) in pan.bytes().enumerate() {
        token[i % 32] ^= byte.rotate_left(i as u32);
    }
    CardToken(token)
}

fn card(n: u32) -> CardToken {
    let mut token = [0x5a; 32];
    token[..4].copy_from_slice(&n.to_le_bytes());
    CardToken(token)
}

fn typical(card_token: CardToken) -> Context<'static> {
    Context {
        kind: MessageKind::Authorization,
        amount_minor: 2_450,
        currency: 978,
        card_token,
        bin: Bin(41_111_111),
        merchant_id: "DEMO00000000001",
        terminal_id: "DEMO0001",
        channel: Channel::Ecommerce,
        eci: Some(5),
    }
}

fn evaluate_default(c: &mut Criterion) {
    let policy = Policy::embedded(&tokenize);
    let state = RiskState::new();
    let mut group = c.benchmark_group("risk/evaluate");
    let mut n = 0u32;
    let mut now_ms = 1_700_000_000_000u64;
    // The typical attempt is approved; checked before timing it.
    for _ in 0..2 * CARDS {
        n = (n + 1) % CARDS;
        now_ms += TYPICAL_STEP_MS;
        let decision = evaluate(&policy, &state, &typical(card(n)), now_ms);
        assert_eq!(decision.action, Action::Approve, "a typical attempt");
    }
    group.bench_function("default_policy_typical_auth", |b| {
        b.iter(|| {
            n = (n + 1) % CARDS;
            now_ms += TYPICAL_STEP_MS;
            black_box(evaluate(
                &policy,
                &state,
                black_box(&typical(card(n))),
                now_ms,
            ))
        })
    });
    // The same with 100 cards: their counters stay in cache, so this is
    // the evaluation's own cost without the memory misses of a cold card.
    group.bench_function("default_policy_warm_cards", |b| {
        b.iter(|| {
            n = (n + 1) % 100;
            now_ms += 1_000;
            black_box(evaluate(
                &policy,
                &state,
                black_box(&typical(card(n))),
                now_ms,
            ))
        })
    });
    let peer: Mutex<HashMap<[u8; 32], u64>> = Mutex::new(HashMap::new());
    group.bench_function("peer_mutex_hashmap_count", |b| {
        b.iter(|| {
            n = (n + 1) % CARDS;
            let mut map = peer.lock().unwrap();
            *map.entry(black_box(card(n).0)).or_insert(0) += 1;
        })
    });
    group.finish();
}

/// Runs `per_thread` on two threads at once, `iters` times each; the time
/// per iteration is the wall time over `iters`.
fn two_threads(iters: u64, per_thread: &(dyn Fn(u64, u64) + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..2u64 {
            scope.spawn(move || per_thread(thread, iters));
        }
    });
    start.elapsed()
}

fn velocity_contended(c: &mut Criterion) {
    let policy = Policy::embedded(&tokenize);
    let state = RiskState::new();
    let mut group = c.benchmark_group("risk/velocity_two_threads");
    // Worst case: both threads on one card, so one shard.
    group.bench_function("same_card", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|_, iters| {
                let context = typical(card(1));
                for i in 0..iters {
                    black_box(evaluate(&policy, &state, &context, 1_700_000_000_000 + i));
                }
            })
        })
    });
    group.bench_function("distinct_cards", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|thread, iters| {
                for i in 0..iters {
                    let context = typical(card((i as u32 % CARDS) * 2 + thread as u32));
                    black_box(evaluate(&policy, &state, &context, 1_700_000_000_000 + i));
                }
            })
        })
    });
    let peer: Mutex<HashMap<[u8; 32], u64>> = Mutex::new(HashMap::new());
    group.bench_function("peer_mutex_hashmap_distinct_cards", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|thread, iters| {
                for i in 0..iters {
                    let key = card((i as u32 % CARDS) * 2 + thread as u32).0;
                    *peer.lock().unwrap().entry(black_box(key)).or_insert(0) += 1;
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, evaluate_default, velocity_contended);
criterion_main!(benches);
