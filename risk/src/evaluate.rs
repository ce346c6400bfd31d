//! The evaluation: one authorization against a policy, in a fixed order.
//!
//! Block lists, amount limits and SCA only read the policy; velocity then
//! records the attempt (every authorization counts, declined or not) and
//! compares; the score comes last. When several rules decline, the code is
//! chosen by priority: 59, then 65, then 61, then 1A, then 05.

use crate::context::{Channel, Context, EciClass, MessageKind};
use crate::decision::{Decision, ResponseCode, RuleId, Verdict};
use crate::key::{self, Key, Subject};
use crate::metrics;
use crate::policy::{CurrencyAmounts, Policy, Rules, VelocityLimits};
use crate::state::RiskState;
use crate::velocity::{Table, Totals};

/// Judges one transaction at `now_ms` (milliseconds on any monotonic-enough
/// clock the switch chooses; only differences matter).
///
/// Only [`MessageKind::Authorization`] runs the rules and counts for
/// velocity; other kinds are approved with nothing fired. Does not
/// allocate; takes one shard lock per velocity key (two by default: the
/// card and the terminal).
pub fn evaluate(
    policy: &Policy,
    state: &RiskState,
    context: &Context<'_>,
    now_ms: u64,
) -> Decision {
    if context.kind != MessageKind::Authorization {
        return Decision::approve();
    }
    let (rules, terminal_limits) = policy.rules_for(context.merchant_id, context.terminal_id);
    let mut verdict = Verdict::new();
    blocklists(policy, context, &mut verdict);
    amount_limits(rules, terminal_limits, context, &mut verdict);
    sca(rules, context, &mut verdict);
    velocity(rules, state, context, now_ms, &mut verdict);
    score(rules, &mut verdict);
    let decision = verdict.finish();
    metrics::decision(&decision);
    decision
}

fn blocklists(policy: &Policy, context: &Context<'_>, verdict: &mut Verdict) {
    const CODE: ResponseCode = ResponseCode::SuspectedFraud;
    if policy.is_card_blocked(&context.card_token) {
        verdict.decline(RuleId::BlocklistCard, "card on the block list", CODE, true);
    }
    if policy.is_bin_blocked(context.bin) {
        verdict.decline(
            RuleId::BlocklistBin,
            "card's BIN in a blocked range",
            CODE,
            true,
        );
    }
    if policy.is_terminal_blocked(context.merchant_id, context.terminal_id) {
        verdict.decline(
            RuleId::BlocklistTerminal,
            "terminal on the block list",
            CODE,
            true,
        );
    }
}

fn amount_limits(
    rules: &Rules,
    terminal: Option<&CurrencyAmounts>,
    context: &Context<'_>,
    verdict: &mut Verdict,
) {
    const CODE: ResponseCode = ResponseCode::ExceedsAmount;
    let channel_max = rules.amount_max_minor[context.channel.index()].get(context.currency);
    if channel_max.is_some_and(|max| context.amount_minor > max) {
        verdict.decline(
            RuleId::AmountChannel,
            "amount over the merchant's limit for the channel",
            CODE,
            false,
        );
    }
    let terminal_max = terminal.and_then(|limits| limits.get(context.currency));
    if terminal_max.is_some_and(|max| context.amount_minor > max) {
        verdict.decline(
            RuleId::AmountTerminal,
            "amount over the terminal's limit",
            CODE,
            false,
        );
    }
}

fn sca(rules: &Rules, context: &Context<'_>, verdict: &mut Verdict) {
    // MO/TO and card-present payments are outside SCA.
    if context.channel != Channel::Ecommerce {
        return;
    }
    match EciClass::of(context.eci) {
        EciClass::FullyAuthenticated => {}
        EciClass::Attempted => {
            if rules.eci_attempted_score > 0 {
                let reason = "3-D Secure attempted, not completed (ECI 06/01)";
                verdict.score(RuleId::EciAttempted, reason, rules.eci_attempted_score);
            }
        }
        EciClass::NotAuthenticated => {
            let threshold = rules.sca_threshold_minor.get(context.currency).unwrap_or(0);
            if context.amount_minor > threshold {
                let reason = "e-commerce not authenticated (ECI 07) above the SCA threshold";
                verdict.decline(RuleId::Sca, reason, ResponseCode::ScaRequired, false);
            }
        }
    }
}

fn velocity(
    rules: &Rules,
    state: &RiskState,
    context: &Context<'_>,
    now_ms: u64,
    verdict: &mut Verdict,
) {
    // Amounts count only for attempts no other rule declined, so a 61 or
    // 1A does not use up the cardholder's allowance; counts take every one.
    let amount_minor = if verdict.is_declined() {
        None
    } else {
        Some(context.amount_minor)
    };
    let card = Key::card(context.card_token, Subject::Card, 0);
    let card_totals = subject(
        &state.cards,
        card,
        &rules.velocity[Subject::Card as usize],
        context,
        amount_minor,
        now_ms,
    );
    if let Some(reason) = card_totals.exceeded {
        verdict.decline(
            RuleId::VelocityCard,
            reason,
            ResponseCode::ExceedsFrequency,
            true,
        );
    }
    if context.channel == Channel::MoTo {
        let limits = &rules.velocity[Subject::CardMoto as usize];
        let moto = Key::card(context.card_token, Subject::CardMoto, 0);
        if let Some(reason) =
            subject(&state.cards, moto, limits, context, amount_minor, now_ms).exceeded
        {
            verdict.decline(
                RuleId::VelocityCardMoto,
                reason,
                ResponseCode::ExceedsFrequency,
                true,
            );
        }
    }
    let id = key::terminal_id(context.merchant_id, context.terminal_id);
    let terminal = Key {
        id,
        subject: Subject::Terminal,
        currency: 0,
    };
    let limits = &rules.velocity[Subject::Terminal as usize];
    if let Some(reason) = subject(
        &state.terminals,
        terminal,
        limits,
        context,
        amount_minor,
        now_ms,
    )
    .exceeded
    {
        verdict.decline(
            RuleId::VelocityTerminal,
            reason,
            ResponseCode::ExceedsFrequency,
            true,
        );
    }
    if card_totals.watched && rules.watch_list_score > 0 {
        verdict.score(
            RuleId::WatchList,
            "card on the watch list (marked scam)",
            rules.watch_list_score,
        );
    }
}

/// What one subject's velocity check found.
struct Checked {
    /// The first window over its limit, as a reason.
    exceeded: Option<&'static str>,
    /// Whether the count key is marked (watch list).
    watched: bool,
}

/// Records the attempt under the subject's count key and, if the policy
/// limits amounts in this currency, under its amount key; then compares.
fn subject(
    table: &Table,
    count_key: Key,
    limits: &VelocityLimits,
    context: &Context<'_>,
    amount_minor: Option<u64>,
    now_ms: u64,
) -> Checked {
    const COUNT_REASONS: [&str; 3] = [
        "attempts over the 60 s count limit",
        "attempts over the 1 h count limit",
        "attempts over the 24 h count limit",
    ];
    const AMOUNT_REASONS: [&str; 3] = [
        "amount over the 60 s amount limit",
        "amount over the 1 h amount limit",
        "amount over the 24 h amount limit",
    ];
    let counts = table.observe(&count_key, now_ms, 0);
    let mut checked = Checked {
        exceeded: None,
        watched: counts.marked,
    };
    let over_count = (0..3).find(|&w| limits.count_max[w].is_some_and(|max| counts.count[w] > max));
    if let Some(window) = over_count {
        checked.exceeded = Some(COUNT_REASONS[window]);
        return checked;
    }
    let Some(amount_minor) = amount_minor else {
        return checked;
    };
    if !limits.limits_amount(context.currency) {
        return checked;
    }
    let amount_key = Key {
        currency: context.currency,
        ..count_key
    };
    let amounts: Totals = table.observe(&amount_key, now_ms, amount_minor);
    let over_amount = (0..3).find(|&w| {
        let max = limits.amount_max_minor[w].get(context.currency);
        max.is_some_and(|max| amounts.amount_minor[w] > max)
    });
    checked.exceeded = over_amount.map(|window| AMOUNT_REASONS[window]);
    checked
}

fn score(rules: &Rules, verdict: &mut Verdict) {
    let score = verdict.score_so_far();
    if !verdict.is_declined() && rules.decline_score_min.is_some_and(|min| score >= min) {
        let reason = "score at or above the policy's decline score";
        verdict.decline(RuleId::Score, reason, ResponseCode::DoNotHonor, true);
    } else if !verdict.is_flagged() && rules.flag_score_min.is_some_and(|min| score >= min) {
        verdict.flag(RuleId::Score, "score at or above the policy's flag score");
    }
}
