//! Risk: evaluating the default policy on a typical authorization (also
//! with the velocity table full, as on a busy switch), and velocity updates
//! with two threads contending. The peer beside us is a single
//! `Mutex<HashMap>` counter with std's hasher, the obvious design.

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use risk::{
    evaluate, Action, Bin, CardToken, Channel, Context, MessageKind, Policy, RiskState,
    VELOCITY_CARD_KEYS_MAX,
};

/// Distinct cards cycled through, so most attempts hit a warm key.
const CARDS: u32 = 10_000;
/// Clock step per attempt in the typical case: a card comes back every
/// `CARDS * TYPICAL_STEP_MS` = 100 s, so no attempt trips the 60 s limit
/// (at 1 ms a card came back every 10 s and most attempts measured a 65).
const TYPICAL_STEP_MS: u64 = 10;
/// Distinct cards that fill the full-table case's state before timing, as
/// a multiple of its card key capacity: far more cards than keys, as on a
/// busy switch, so every neighbourhood is full and LRU order is mixed.
const FILL_PER_CARD_KEY: usize = 4;

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
    // A busy switch: far more distinct cards than card keys, so the table
    // is full and each new card reads its whole neighbourhood, then evicts.
    // Every timed attempt is a card never seen before.
    let full = RiskState::new();
    let mut fresh = 0u32;
    let mut full_now_ms = 1_700_000_000_000u64;
    let mut new_card = || {
        fresh += 1;
        full_now_ms += TYPICAL_STEP_MS;
        (typical(card(fresh)), full_now_ms)
    };
    for _ in 0..FILL_PER_CARD_KEY * VELOCITY_CARD_KEYS_MAX {
        let (context, now_ms) = new_card();
        let decision = evaluate(&policy, &full, &context, now_ms);
        assert_eq!(decision.action, Action::Approve, "a new card's attempt");
    }
    // Nearly every slot is taken (a slot stays empty only if no card's
    // neighbourhood reached it), and new cards now evict.
    assert!(full.velocity_keys() >= VELOCITY_CARD_KEYS_MAX * 99 / 100);
    assert!(full.velocity_evictions() > 0, "the table is full");
    group.bench_function("default_policy_table_full", |b| {
        b.iter(|| {
            let (context, now_ms) = new_card();
            black_box(evaluate(&policy, &full, black_box(&context), now_ms))
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
