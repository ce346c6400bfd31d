//! Evaluation does not allocate after start-up: a counting allocator
//! watches many evaluations, new cards, evictions and every rule firing.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use risk::{evaluate, CardToken, Channel, Context, Policy};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const POLICY: &str = r#"
version = 1
[defaults]
flag_score_min = 50
decline_score_min = 90
watch_list_score = 60
[defaults.sca]
threshold_minor = { 978 = 3000 }
attempted_score = 20
[defaults.amount_max_minor]
card_present = { 978 = 100000 }
[defaults.velocity.card]
count_max_60s = 5
amount_max_minor_60s = { 978 = 200000 }
amount_max_minor_24h = { 978 = 1000000 }
[defaults.velocity.card_moto]
count_max_1h = 3
[defaults.velocity.terminal]
count_max_24h = 100000
[merchants.DEMO00000000001.terminals.DEMO0001]
amount_max_minor = { 978 = 50000 }
[blocklist]
pans = ["4000000000000002"]
bins = ["510000-510099"]
terminals = [{ merchant = "DEMO00000000001", terminal = "DEMO0009" }]
"#;

#[test]
fn evaluation_does_not_allocate() {
    let policy = Policy::compile(POLICY, &tokenize).unwrap();
    let state = risk::RiskState::with_capacity(risk::Capacity {
        card_keys_max: risk::SHARDS * 8,
        terminal_keys_max: risk::SHARDS,
        watch_list_max: 16,
    });
    state
        .add_to_watch_list(tokenize("5500000000000004"))
        .unwrap();
    let channels = [
        Channel::CardPresent,
        Channel::MoTo,
        Channel::Ecommerce,
        Channel::Unknown,
    ];
    let terminals = ["DEMO0001", "DEMO0002", "DEMO0009"];
    let run = |from: u32, to: u32| {
        for n in from..to {
            let mut token = tokenize(CLEAN_PAN).0;
            token[..4].copy_from_slice(&(n % 5_000).to_le_bytes());
            let card_token = match n % 7 {
                0 => tokenize(BLOCKED_PAN),
                1 => tokenize("5500000000000004"),
                _ => CardToken(token),
            };
            let context = Context {
                amount_minor: u64::from(n % 13) * 1_000,
                card_token,
                channel: channels[n as usize % 4],
                eci: Some((n % 8) as u8),
                terminal_id: terminals[n as usize % 3],
                ..auth(CLEAN_PAN)
            };
            std::hint::black_box(evaluate(&policy, &state, &context, u64::from(n) * 500));
        }
    };
    run(0, 2_000);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run(2_000, 40_000);
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed) - before,
        0,
        "evaluation allocated"
    );
    assert!(state.velocity_evictions() > 0, "the run should evict");
}
