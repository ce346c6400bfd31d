//! Invariants over random contexts.

mod common;

use common::*;
use proptest::prelude::*;
use risk::{evaluate, Action, Bin, CardToken, Channel, Context, MessageKind, Policy, ResponseCode};

const POLICY: &str = r#"
version = 1
[defaults]
flag_score_min = 50
decline_score_min = 90
watch_list_score = 60
[defaults.sca]
threshold_minor = { 978 = 3000, 840 = 3000, 752 = 30000 }
attempted_score = 20
[defaults.amount_max_minor]
card_present = { 978 = 100000, 840 = 100000 }
moto = { 978 = 20000 }
ecommerce = { 978 = 50000, 752 = 500000 }
[defaults.velocity.card]
count_max_60s = 5
[merchants.DEMO00000000001.terminals.DEMO0002]
amount_max_minor = { 978 = 5000, 752 = 1000 }
[blocklist]
pans = ["4000000000000002"]
bins = ["510000-510099"]
"#;

fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        Just(Channel::CardPresent),
        Just(Channel::MoTo),
        Just(Channel::Ecommerce),
        Just(Channel::Unknown)
    ]
}

fn context(token: [u8; 32]) -> impl Strategy<Value = Context<'static>> {
    (
        0u64..1_000_000,
        prop_oneof![Just(978u16), Just(840u16), Just(752u16), Just(826u16)],
        channel(),
        proptest::option::of(0u8..10),
        prop_oneof![Just("DEMO0001"), Just("DEMO0002")],
        prop_oneof![Just(MERCHANT_1), Just(MERCHANT_2)],
        10_000_000u32..99_999_999,
    )
        .prop_map(
            move |(amount_minor, currency, channel, eci, terminal_id, merchant_id, bin)| Context {
                kind: MessageKind::Authorization,
                amount_minor,
                currency,
                card_token: CardToken(token),
                bin: Bin(bin),
                merchant_id,
                terminal_id,
                channel,
                eci,
            },
        )
}

proptest! {
    /// Raising the amount never turns a decline by an amount rule (61, or
    /// 1A which is also an amount threshold) into an approval.
    #[test]
    fn raising_the_amount_keeps_amount_declines(
        context in context([1; 32]),
        raise in 0u64..10_000_000,
        watched in any::<bool>(),
    ) {
        let policy = Policy::compile(POLICY, &tokenize).unwrap();
        let low = small_state();
        let high = small_state();
        if watched {
            low.add_to_watch_list(context.card_token).unwrap();
            high.add_to_watch_list(context.card_token).unwrap();
        }
        let before = evaluate(&policy, &low, &context, 0);
        let raised = Context { amount_minor: context.amount_minor + raise, ..context };
        let after = evaluate(&policy, &high, &raised, 0);
        if let Some(ResponseCode::ExceedsAmount | ResponseCode::ScaRequired) = before.decline_code() {
            prop_assert!(after.decline_code().is_some(), "{before:?} then {after:?}");
        }
    }

    /// A block-listed card is never approved, whatever else holds: any
    /// amount, channel, ECI, merchant, history or watch list.
    #[test]
    fn a_blocked_card_is_never_approved(
        context in context(tokenize(BLOCKED_PAN).0),
        earlier in 0usize..8,
        watched in any::<bool>(),
        embedded in any::<bool>(),
    ) {
        let policy = if embedded { Policy::embedded(&tokenize) } else { Policy::compile(POLICY, &tokenize).unwrap() };
        let state = small_state();
        if watched {
            state.add_to_watch_list(context.card_token).unwrap();
        }
        for n in 0..earlier {
            evaluate(&policy, &state, &context, n as u64);
        }
        let decision = evaluate(&policy, &state, &context, 10);
        prop_assert_eq!(decision.action, Action::Decline { code: ResponseCode::SuspectedFraud, flagged: true });
    }

    /// The card's 60 s count matches a naive model at every step, for any
    /// spacing of attempts.
    #[test]
    fn sixty_second_count_matches_a_model(gaps in proptest::collection::vec(0u64..30_000, 1..60)) {
        let policy = Policy::embedded(&tokenize);
        let state = small_state();
        let card = auth(CLEAN_PAN);
        let mut times = Vec::new();
        let mut now = 1_000_000u64;
        for gap in gaps {
            now += gap;
            times.push(now);
            let in_window = times.iter().filter(|&&t| now - t < 60_000).count();
            let declined = evaluate(&policy, &state, &card, now).decline_code() == Some(ResponseCode::ExceedsFrequency);
            prop_assert_eq!(declined, in_window > 5, "at {} with {} in window", now, in_window);
        }
    }
}
