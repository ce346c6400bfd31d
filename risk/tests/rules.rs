//! A table of cases for every rule and every default.

mod common;

use common::*;
use risk::{evaluate, Action, Channel, Context, MessageKind, Policy, ResponseCode, RuleId};

/// What a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Approve,
    Flag,
    Decline(ResponseCode, bool),
}

fn check(name: &str, policy: &Policy, context: &Context<'_>, expect: Expect, rules: &[RuleId]) {
    let state = small_state();
    let decision = evaluate(policy, &state, context, 1_000_000);
    let got = match decision.action {
        Action::Approve => Expect::Approve,
        Action::ApproveFlagged => Expect::Flag,
        Action::Decline { code, flagged } => Expect::Decline(code, flagged),
    };
    assert_eq!(got, expect, "{name}: {decision:?}");
    let fired: Vec<RuleId> = decision.fired.iter().map(|f| f.rule).collect();
    assert_eq!(fired, rules, "{name}: fired");
    assert!(
        decision.fired.iter().all(|f| !f.reason.is_empty()),
        "{name}: reasons"
    );
}

use Expect::*;
use ResponseCode::*;

#[test]
fn embedded_defaults() {
    let policy = Policy::embedded(&tokenize);
    let sca = |pan, amount, currency, eci| ecom(pan, amount, currency, eci);
    let cases: Vec<(&str, Context<'static>, Expect, Vec<RuleId>)> = vec![
        (
            "card present, large amount",
            Context {
                amount_minor: 99_999_999,
                ..auth(CLEAN_PAN)
            },
            Approve,
            vec![],
        ),
        (
            "ecom ECI 07 at EUR 30.00",
            sca(CLEAN_PAN, 3_000, 978, Some(7)),
            Approve,
            vec![],
        ),
        (
            "ecom ECI 07 above EUR 30.00",
            sca(CLEAN_PAN, 3_001, 978, Some(7)),
            Decline(ScaRequired, false),
            vec![RuleId::Sca],
        ),
        (
            "ecom no ECI above EUR 30.00",
            sca(CLEAN_PAN, 3_001, 978, None),
            Decline(ScaRequired, false),
            vec![RuleId::Sca],
        ),
        (
            "ecom unknown ECI above EUR 30.00",
            sca(CLEAN_PAN, 3_001, 978, Some(3)),
            Decline(ScaRequired, false),
            vec![RuleId::Sca],
        ),
        (
            "ecom ECI 05 large",
            sca(CLEAN_PAN, 99_999_999, 978, Some(5)),
            Approve,
            vec![],
        ),
        (
            "ecom ECI 02 large",
            sca(CLEAN_PAN, 99_999_999, 978, Some(2)),
            Approve,
            vec![],
        ),
        (
            "ecom ECI 06 scores",
            sca(CLEAN_PAN, 99_999_999, 978, Some(6)),
            Approve,
            vec![RuleId::EciAttempted],
        ),
        (
            "ecom ECI 01 scores",
            sca(CLEAN_PAN, 5_000, 978, Some(1)),
            Approve,
            vec![RuleId::EciAttempted],
        ),
        (
            "ecom ECI 07 at USD 30.00",
            sca(CLEAN_PAN, 3_000, 840, Some(7)),
            Approve,
            vec![],
        ),
        (
            "ecom ECI 07 above USD 30.00",
            sca(CLEAN_PAN, 3_001, 840, Some(7)),
            Decline(ScaRequired, false),
            vec![RuleId::Sca],
        ),
        (
            "ecom ECI 07 at SEK 300",
            sca(CLEAN_PAN, 30_000, 752, Some(7)),
            Approve,
            vec![],
        ),
        (
            "ecom ECI 07 above SEK 300",
            sca(CLEAN_PAN, 30_001, 752, Some(7)),
            Decline(ScaRequired, false),
            vec![RuleId::Sca],
        ),
        (
            "ecom ECI 07 unlisted currency",
            sca(CLEAN_PAN, 1, 826, Some(7)),
            Decline(ScaRequired, false),
            vec![RuleId::Sca],
        ),
        (
            "ecom ECI 07 zero amount",
            sca(CLEAN_PAN, 0, 826, Some(7)),
            Approve,
            vec![],
        ),
        (
            "MO/TO is outside SCA",
            Context {
                amount_minor: 99_999_999,
                channel: Channel::MoTo,
                eci: Some(7),
                ..auth(CLEAN_PAN)
            },
            Approve,
            vec![],
        ),
        (
            "unknown channel is outside SCA",
            Context {
                amount_minor: 99_999_999,
                channel: Channel::Unknown,
                ..auth(CLEAN_PAN)
            },
            Approve,
            vec![],
        ),
        (
            "blocked card",
            auth(BLOCKED_PAN),
            Decline(SuspectedFraud, true),
            vec![RuleId::BlocklistCard],
        ),
        (
            "blocked card beats SCA",
            sca(BLOCKED_PAN, 10_000, 978, Some(7)),
            Decline(SuspectedFraud, true),
            vec![RuleId::BlocklistCard, RuleId::Sca],
        ),
    ];
    for (name, context, expect, rules) in cases {
        check(name, &policy, &context, expect, &rules);
    }
    let blocked = evaluate(&policy, &small_state(), &auth(BLOCKED_PAN), 0);
    assert!(blocked.is_flagged());
    assert!(blocked.score >= risk::SCORE_FLAGGING_DECLINE);
    assert_eq!(
        blocked.decline_code().map(ResponseCode::as_bytes),
        Some(*b"59")
    );
}

#[test]
fn other_message_kinds_are_not_judged() {
    let policy = Policy::embedded(&tokenize);
    for kind in [
        MessageKind::Capture,
        MessageKind::Refund,
        MessageKind::Reversal,
        MessageKind::Other,
    ] {
        let context = Context {
            kind,
            ..ecom(BLOCKED_PAN, 1_000_000, 978, Some(7))
        };
        check("non-authorization", &policy, &context, Approve, &[]);
    }
}

const POLICY: &str = r#"
version = 1

[defaults]
flag_score_min = 50
decline_score_min = 70
watch_list_score = 60

[defaults.sca]
threshold_minor = { 978 = 3000 }
attempted_score = 20

[defaults.amount_max_minor]
card_present = { 978 = 100000 }
moto = { 978 = 20000 }

[merchants.DEMO00000000002.sca]
threshold_minor = { 978 = 10000 }

[merchants.DEMO00000000001.terminals.DEMO0002]
amount_max_minor = { 978 = 5000 }

[blocklist]
bins = ["510000-510099", "5412"]
tokens = ["a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5"]
terminals = [{ merchant = "DEMO00000000001", terminal = "DEMO0009" }]
"#;

#[test]
fn configured_rules() {
    let policy = Policy::compile(POLICY, &tokenize).unwrap();
    let amount = |amount_minor, channel| Context {
        amount_minor,
        channel,
        ..auth(CLEAN_PAN)
    };
    let cases: Vec<(&str, Context<'static>, Expect, Vec<RuleId>)> = vec![
        (
            "card present at limit",
            amount(100_000, Channel::CardPresent),
            Approve,
            vec![],
        ),
        (
            "card present over limit",
            amount(100_001, Channel::CardPresent),
            Decline(ExceedsAmount, false),
            vec![RuleId::AmountChannel],
        ),
        (
            "MO/TO at its limit",
            amount(20_000, Channel::MoTo),
            Approve,
            vec![],
        ),
        (
            "MO/TO over its limit",
            amount(20_001, Channel::MoTo),
            Decline(ExceedsAmount, false),
            vec![RuleId::AmountChannel],
        ),
        (
            "ecom has no amount limit",
            ecom(CLEAN_PAN, 999_999, 978, Some(5)),
            Approve,
            vec![],
        ),
        (
            "other currency unlimited",
            Context {
                currency: 840,
                ..amount(999_999, Channel::CardPresent)
            },
            Approve,
            vec![],
        ),
        (
            "terminal limit",
            Context {
                terminal_id: "DEMO0002",
                ..amount(5_001, Channel::CardPresent)
            },
            Decline(ExceedsAmount, false),
            vec![RuleId::AmountTerminal],
        ),
        (
            "terminal at limit",
            Context {
                terminal_id: "DEMO0002",
                ..amount(5_000, Channel::CardPresent)
            },
            Approve,
            vec![],
        ),
        (
            "terminal and channel limits",
            Context {
                terminal_id: "DEMO0002",
                ..amount(100_001, Channel::CardPresent)
            },
            Decline(ExceedsAmount, false),
            vec![RuleId::AmountChannel, RuleId::AmountTerminal],
        ),
        (
            "merchant 2 SCA threshold",
            Context {
                merchant_id: MERCHANT_2,
                ..ecom(CLEAN_PAN, 10_000, 978, Some(7))
            },
            Approve,
            vec![],
        ),
        (
            "merchant 1 keeps default threshold",
            ecom(CLEAN_PAN, 3_001, 978, Some(7)),
            Decline(ScaRequired, false),
            vec![RuleId::Sca],
        ),
        (
            "61 before 1A",
            Context {
                terminal_id: "DEMO0002",
                ..ecom(CLEAN_PAN, 5_001, 978, Some(7))
            },
            Decline(ExceedsAmount, false),
            vec![RuleId::AmountTerminal, RuleId::Sca],
        ),
        (
            "BIN range",
            Context {
                bin: risk::Bin(51_000_042),
                ..auth(CLEAN_PAN)
            },
            Decline(SuspectedFraud, true),
            vec![RuleId::BlocklistBin],
        ),
        (
            "BIN range end",
            Context {
                bin: risk::Bin(51_009_999),
                ..auth(CLEAN_PAN)
            },
            Decline(SuspectedFraud, true),
            vec![RuleId::BlocklistBin],
        ),
        (
            "BIN after range",
            Context {
                bin: risk::Bin(51_010_000),
                ..auth(CLEAN_PAN)
            },
            Approve,
            vec![],
        ),
        (
            "BIN prefix",
            Context {
                bin: risk::Bin(54_129_999),
                ..auth(CLEAN_PAN)
            },
            Decline(SuspectedFraud, true),
            vec![RuleId::BlocklistBin],
        ),
        (
            "token in hex",
            Context {
                card_token: risk::CardToken([0xA5; 32]),
                ..auth(CLEAN_PAN)
            },
            Decline(SuspectedFraud, true),
            vec![RuleId::BlocklistCard],
        ),
        (
            "blocked terminal",
            Context {
                terminal_id: "DEMO0009",
                ..auth(CLEAN_PAN)
            },
            Decline(SuspectedFraud, true),
            vec![RuleId::BlocklistTerminal],
        ),
        (
            "same terminal id, other merchant",
            Context {
                merchant_id: MERCHANT_2,
                terminal_id: "DEMO0009",
                ..auth(CLEAN_PAN)
            },
            Approve,
            vec![],
        ),
        (
            "59 before 61",
            Context {
                terminal_id: "DEMO0009",
                ..amount(100_001, Channel::CardPresent)
            },
            Decline(SuspectedFraud, true),
            vec![RuleId::BlocklistTerminal, RuleId::AmountChannel],
        ),
        (
            "no block list from defaults once replaced",
            auth(BLOCKED_PAN),
            Approve,
            vec![],
        ),
    ];
    for (name, context, expect, rules) in cases {
        check(name, &policy, &context, expect, &rules);
    }
}

#[test]
fn watch_list_and_score() {
    let policy = Policy::compile(POLICY, &tokenize).unwrap();
    let state = small_state();
    let context = ecom(CLEAN_PAN, 1_000, 978, Some(5));
    assert_eq!(
        evaluate(&policy, &state, &context, 0).action,
        Action::Approve
    );
    assert_eq!(state.add_to_watch_list(context.card_token), Ok(true));
    assert_eq!(state.add_to_watch_list(context.card_token), Ok(false));
    assert!(state.is_watched(context.card_token));
    // Watched (60) ≥ flag score (50): approved and flagged.
    let decision = evaluate(&policy, &state, &context, 1);
    assert_eq!(decision.action, Action::ApproveFlagged);
    assert_eq!(decision.score, 60);
    let fired: Vec<RuleId> = decision.fired.iter().map(|f| f.rule).collect();
    assert_eq!(fired, [RuleId::WatchList, RuleId::Score]);
    // Watched (60) + attempted (20) ≥ decline score (70): 05, flagged.
    let attempted = ecom(CLEAN_PAN, 1_000, 978, Some(6));
    let decision = evaluate(&policy, &state, &attempted, 2);
    assert_eq!(
        decision.action,
        Action::Decline {
            code: DoNotHonor,
            flagged: true
        }
    );
    assert_eq!(decision.score, 80);
    // Attempted alone (20) is under both.
    let other = ecom(BLOCKED_PAN, 1_000, 978, Some(6));
    assert_eq!(evaluate(&policy, &state, &other, 3).action, Action::Approve);
    // A reloaded policy keeps the watch list: it lives in the state.
    let reloaded = Policy::embedded(&tokenize);
    assert_eq!(
        evaluate(&reloaded, &state, &context, 4).action,
        Action::ApproveFlagged
    );
}

#[test]
fn watch_list_is_bounded() {
    let state = small_state();
    for n in 0..64u8 {
        assert_eq!(state.add_to_watch_list(risk::CardToken([n; 32])), Ok(true));
    }
    assert_eq!(
        state.add_to_watch_list(risk::CardToken([200; 32])),
        Err(risk::WatchListFull { max: 64 })
    );
}
