//! Velocity: the contract's 60 s limit at its exact boundaries, the other
//! windows and subjects, and exact counts under two threads.

mod common;

use std::sync::Arc;

use common::*;
use risk::{evaluate, Action, Channel, Context, MessageKind, Policy, ResponseCode, RuleId};

const T0: u64 = 1_700_000_000_000;
const VELOCITY_DECLINE: Action = Action::Decline {
    code: ResponseCode::ExceedsFrequency,
    flagged: true,
};

#[test]
fn sixth_attempt_within_60_s_is_declined_and_approved_after() {
    let policy = Policy::embedded(&tokenize);
    let state = small_state();
    let card = auth(CLEAN_PAN);
    for n in 0..5 {
        assert_eq!(
            evaluate(&policy, &state, &card, T0 + n).action,
            Action::Approve,
            "attempt {}",
            n + 1
        );
    }
    // Sixth, 59 999 ms after the first: inside the window.
    let sixth = evaluate(&policy, &state, &card, T0 + 59_999);
    assert_eq!(sixth.action, VELOCITY_DECLINE);
    assert_eq!(sixth.fired.get(0).unwrap().rule, RuleId::VelocityCard);
    // Any after it in the window too.
    assert_eq!(
        evaluate(&policy, &state, &card, T0 + 59_999).action,
        VELOCITY_DECLINE
    );
    // At T0 + 60 004 the five first are 60 000+ ms old and out; the two
    // declined attempts at T0 + 59 999 still count: 3 in the window.
    assert_eq!(
        evaluate(&policy, &state, &card, T0 + 60_004).action,
        Action::Approve
    );
}

#[test]
fn window_is_half_open_at_exactly_60_s() {
    let policy = Policy::embedded(&tokenize);
    let state = small_state();
    let card = auth(CLEAN_PAN);
    for _ in 0..5 {
        assert_eq!(evaluate(&policy, &state, &card, T0).action, Action::Approve);
    }
    // 60 000 ms after five attempts at T0 they no longer count: window is (now - 60 s, now].
    assert_eq!(
        evaluate(&policy, &state, &card, T0 + 60_000).action,
        Action::Approve
    );
    let state = small_state();
    for _ in 0..5 {
        evaluate(&policy, &state, &card, T0);
    }
    assert_eq!(
        evaluate(&policy, &state, &card, T0 + 59_999).action,
        VELOCITY_DECLINE
    );
}

#[test]
fn declined_attempts_count_and_other_kinds_do_not() {
    let policy = Policy::embedded(&tokenize);
    let state = small_state();
    let card = auth(CLEAN_PAN);
    // Four 1A declines count as attempts.
    let sca = ecom(CLEAN_PAN, 10_000, 978, Some(7));
    for n in 0..4 {
        assert_eq!(
            evaluate(&policy, &state, &sca, T0 + n).decline_code(),
            Some(ResponseCode::ScaRequired)
        );
    }
    for kind in [
        MessageKind::Capture,
        MessageKind::Refund,
        MessageKind::Reversal,
        MessageKind::Other,
    ] {
        for n in 0..10 {
            evaluate(&policy, &state, &Context { kind, ..card }, T0 + 10 + n);
        }
    }
    assert_eq!(
        evaluate(&policy, &state, &card, T0 + 100).action,
        Action::Approve,
        "5th"
    );
    assert_eq!(
        evaluate(&policy, &state, &card, T0 + 101).action,
        VELOCITY_DECLINE,
        "6th"
    );
    // Another card is untouched.
    assert_eq!(
        evaluate(&policy, &state, &auth("5500000000000004"), T0 + 102).action,
        Action::Approve
    );
}

#[test]
fn counters_survive_a_policy_reload() {
    let state = small_state();
    let card = auth(CLEAN_PAN);
    let old = Arc::new(Policy::embedded(&tokenize));
    for n in 0..5 {
        assert_eq!(
            evaluate(&old, &state, &card, T0 + n).action,
            Action::Approve
        );
    }
    let new = Arc::new(Policy::compile(risk::DEFAULT_POLICY_TOML, &tokenize).unwrap());
    assert_eq!(
        evaluate(&new, &state, &card, T0 + 10).action,
        VELOCITY_DECLINE
    );
}

const POLICY: &str = r#"
version = 1
[defaults.velocity.card]
count_max_60s = 15
count_max_1h = 20
amount_max_minor_24h = { 978 = 10000 }
[defaults.velocity.card_moto]
count_max_24h = 2
[defaults.velocity.terminal]
count_max_60s = 3
amount_max_minor_60s = { 752 = 500 }
[defaults.amount_max_minor]
card_present = { 978 = 8000 }
[merchants.DEMO00000000002.velocity.card]
count_max_1h = "off"
"#;

#[test]
fn hour_count_limit() {
    let policy = Policy::compile(POLICY, &tokenize).unwrap();
    let state = small_state();
    let burst = |n: u64| Context {
        amount_minor: 1,
        terminal_id: if n % 2 == 0 { "T1" } else { "T2" },
        ..auth(CLEAN_PAN)
    };
    for n in 0..20u64 {
        assert_eq!(
            evaluate(&policy, &state, &burst(n), T0 + n * 61_000).action,
            Action::Approve,
            "burst {n}"
        );
    }
    // 20 attempts 61 s apart (never 15 in 60 s, never 3 on a terminal):
    // the 21st in the hour is declined.
    assert_eq!(
        evaluate(&policy, &state, &burst(21), T0 + 20 * 61_000).action,
        VELOCITY_DECLINE
    );
    // Merchant 2 lifted the 1 h limit.
    let other = Context {
        merchant_id: MERCHANT_2,
        ..burst(21)
    };
    assert_eq!(
        evaluate(&policy, &state, &other, T0 + 20 * 61_000 + 1).action,
        Action::Approve
    );
}

#[test]
fn day_amount_limit_counts_only_undeclined_amounts_per_currency() {
    let policy = Policy::compile(POLICY, &tokenize).unwrap();
    let state = small_state();
    let card = |amount_minor, currency, n: u64| Context {
        amount_minor,
        currency,
        terminal_id: if n % 2 == 0 { "T1" } else { "T2" },
        ..auth(CLEAN_PAN)
    };
    // 61 (over 8000): its amount does not count.
    assert_eq!(
        evaluate(&policy, &state, &card(9_000, 978, 0), T0).decline_code(),
        Some(ResponseCode::ExceedsAmount)
    );
    assert_eq!(
        evaluate(&policy, &state, &card(6_000, 978, 1), T0 + 60_000).action,
        Action::Approve
    );
    assert_eq!(
        evaluate(&policy, &state, &card(4_000, 978, 2), T0 + 120_000).action,
        Action::Approve
    );
    // SEK has no day limit and its own terminal 60 s limit.
    assert_eq!(
        evaluate(&policy, &state, &card(400, 752, 3), T0 + 180_000).action,
        Action::Approve
    );
    let over = evaluate(&policy, &state, &card(1, 978, 4), T0 + 240_000);
    assert_eq!(over.action, VELOCITY_DECLINE);
    assert_eq!(
        over.fired.get(0).unwrap().reason,
        "amount over the 24 h amount limit"
    );
    // A day later the amount is free again.
    assert_eq!(
        evaluate(&policy, &state, &card(1, 978, 5), T0 + 240_000 + 86_400_000).action,
        Action::Approve
    );
}

#[test]
fn terminal_limits() {
    let policy = Policy::compile(POLICY, &tokenize).unwrap();
    let state = small_state();
    let pans = [
        "4111111111111111",
        "5500000000000004",
        "340000000000009",
        "6011000000000004",
    ];
    for (n, pan) in pans.iter().take(3).enumerate() {
        assert_eq!(
            evaluate(&policy, &state, &auth(pan), T0 + n as u64).action,
            Action::Approve
        );
    }
    let fourth = evaluate(&policy, &state, &auth(pans[3]), T0 + 3);
    assert_eq!(fourth.action, VELOCITY_DECLINE);
    assert_eq!(fourth.fired.get(0).unwrap().rule, RuleId::VelocityTerminal);
    // Same terminal id at another merchant is another terminal.
    let elsewhere = Context {
        merchant_id: MERCHANT_2,
        ..auth(pans[3])
    };
    assert_eq!(
        evaluate(&policy, &state, &elsewhere, T0 + 4).action,
        Action::Approve
    );
    // 60 s amount per terminal in SEK.
    let sek = |pan, amount_minor| Context {
        amount_minor,
        currency: 752,
        terminal_id: "SEK1",
        ..auth(pan)
    };
    assert_eq!(
        evaluate(&policy, &state, &sek(pans[0], 500), T0 + 100_000).action,
        Action::Approve
    );
    assert_eq!(
        evaluate(&policy, &state, &sek(pans[1], 1), T0 + 100_001).action,
        VELOCITY_DECLINE
    );
}

#[test]
fn moto_velocity_counts_moto_only() {
    let policy = Policy::compile(POLICY, &tokenize).unwrap();
    let state = small_state();
    let moto = |n: u64| Context {
        channel: Channel::MoTo,
        terminal_id: if n % 2 == 0 { "T1" } else { "T2" },
        ..auth(CLEAN_PAN)
    };
    let present = Context {
        terminal_id: "T9",
        ..auth(CLEAN_PAN)
    };
    assert_eq!(
        evaluate(&policy, &state, &moto(0), T0).action,
        Action::Approve
    );
    assert_eq!(
        evaluate(&policy, &state, &present, T0 + 120_000).action,
        Action::Approve
    );
    assert_eq!(
        evaluate(&policy, &state, &moto(1), T0 + 240_000).action,
        Action::Approve
    );
    let third = evaluate(&policy, &state, &moto(2), T0 + 360_000);
    assert_eq!(third.action, VELOCITY_DECLINE);
    assert_eq!(third.fired.get(0).unwrap().rule, RuleId::VelocityCardMoto);
    // Card present is not limited by the MO/TO counter.
    assert_eq!(
        evaluate(&policy, &state, &present, T0 + 480_000).action,
        Action::Approve
    );
}

#[test]
fn two_threads_count_exactly() {
    const PER_THREAD: u64 = 20_000;
    const LIMIT: u32 = 25_000;
    let policy = Arc::new(
        Policy::compile(
            &format!("version = 1\n[defaults.velocity.card]\ncount_max_24h = {LIMIT}\n"),
            &tokenize,
        )
        .unwrap(),
    );
    // One subject only: card and terminal counters are each exact, but an
    // attempt sees them one after the other, so two limits at once need not
    // agree on which attempt was the last one under both.
    let state = Arc::new(small_state());
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (policy, state) = (Arc::clone(&policy), Arc::clone(&state));
            std::thread::spawn(move || {
                let card = auth(CLEAN_PAN);
                let mut approved = 0u32;
                for n in 0..PER_THREAD {
                    // All in one 24 h bucket: every attempt sees the exact count so far.
                    if evaluate(&policy, &state, &card, T0 - T0 % 3_600_000 + n).action
                        == Action::Approve
                    {
                        approved += 1;
                    }
                }
                approved
            })
        })
        .collect();
    let approved: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // Each attempt observed count k for a distinct k in 1..=40 000: exactly
    // LIMIT of them were at or under the limit.
    assert_eq!(approved, LIMIT);
    let next = evaluate(
        &policy,
        &state,
        &auth(CLEAN_PAN),
        T0 - T0 % 3_600_000 + PER_THREAD,
    );
    assert_eq!(next.action, VELOCITY_DECLINE);
    assert_eq!(next.fired.get(0).unwrap().rule, RuleId::VelocityCard);
}

#[test]
fn velocity_memory_is_bounded() {
    let policy = Policy::embedded(&tokenize);
    let state = risk::RiskState::with_capacity(risk::Capacity {
        card_keys_max: risk::SHARDS * 4,
        terminal_keys_max: risk::SHARDS,
        watch_list_max: 1,
    });
    for n in 0..5_000u32 {
        let mut token = [0u8; 32];
        token[..4].copy_from_slice(&n.to_le_bytes());
        let context = Context {
            card_token: risk::CardToken(token),
            ..auth(CLEAN_PAN)
        };
        evaluate(&policy, &state, &context, T0);
    }
    assert!(state.velocity_keys() <= risk::SHARDS * 4);
    assert_eq!(
        state.velocity_keys() as u64 + state.velocity_evictions(),
        5_000
    );
}

/// The card counted at another place (cluster mode: `count_card` where the
/// card is counted, `evaluate_with_card` where the payment is decided, the
/// verdict crossing as four bytes) decides every attempt as `evaluate`
/// does on one state: same action, same rules fired, for counts, MO/TO
/// counts, amounts (not counted after a 61), terminals and watched cards.
#[test]
fn the_card_counted_elsewhere_decides_as_one_evaluation() {
    let policy = Policy::compile(POLICY, &tokenize).unwrap();
    let one = small_state();
    let (here, there) = (small_state(), small_state());
    for s in [&one, &there] {
        s.add_to_watch_list(tokenize(BLOCKED_PAN)).unwrap();
    }
    let pans = [CLEAN_PAN, "5555555555554444", BLOCKED_PAN];
    let mut seed: u64 = 7;
    let mut declined = 0;
    let mut kept = Vec::new();
    let mut attempt = || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let pick = (seed >> 33) as usize;
        Context {
            amount_minor: [500, 3_000, 9_000][pick % 3],
            currency: [978, 752][(pick / 3) % 2],
            channel: [Channel::CardPresent, Channel::MoTo][(pick / 6) % 2],
            terminal_id: ["T1", "T2"][(pick / 12) % 2],
            merchant_id: [MERCHANT_1, MERCHANT_2][(pick / 24) % 2],
            ..auth(pans[(pick / 48) % 3])
        }
    };
    for n in 0..400_u64 {
        let context = attempt();
        let now_ms = T0 + n * 7_000;
        let whole = evaluate(&policy, &one, &context, now_ms);
        let before = risk::declined_before_velocity(&policy, &context);
        let counted = risk::count_card(&policy, &there, &context, before, now_ms);
        kept.push((context, counted.recorded, now_ms));
        let card = counted.verdict;
        let card = risk::CardVerdict::from_bytes(card.to_bytes()).expect("its own bytes");
        let split = risk::evaluate_with_card(&policy, &here, &context, &card, now_ms);
        assert_eq!(split.action, whole.action, "attempt {n}: {context:?}");
        let rules = |d: &risk::Decision| d.fired.iter().map(|f| f.rule).collect::<Vec<_>>();
        assert_eq!(rules(&split), rules(&whole), "attempt {n}");
        declined += usize::from(card.exceeded());
    }
    assert!(
        declined > 10,
        "the sequence must reach card limits: {declined}"
    );
    // A new counting node rebuilds the counts from the attempts kept:
    // the next attempts get the same verdicts as on the node that counted.
    let rebuilt = small_state();
    rebuilt.add_to_watch_list(tokenize(BLOCKED_PAN)).unwrap();
    for (context, recorded, at_ms) in &kept {
        risk::recount_card(&policy, &rebuilt, context, *recorded, *at_ms);
    }
    for n in 400..500_u64 {
        let context = attempt();
        let now_ms = T0 + n * 7_000;
        let before = risk::declined_before_velocity(&policy, &context);
        let a = risk::count_card(&policy, &there, &context, before, now_ms);
        let b = risk::count_card(&policy, &rebuilt, &context, before, now_ms);
        assert_eq!(a, b, "attempt {n} after the rebuild");
    }
    assert_eq!(risk::CardVerdict::from_bytes([7, 0, 0, 0]), None);
    assert_eq!(risk::CardVerdict::from_bytes([0, 0, 2, 0]), None);
}
