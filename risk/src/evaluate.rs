//! The evaluation: one authorization against a policy, in a fixed order.
//!
//! Block lists, amount limits and SCA only read the policy; velocity then
//! records the attempt (every authorization counts, declined or not) and
//! compares; the score comes last. When several rules decline, the code is
//! chosen by priority: 59, then 65, then 61, then 1A, then 05.

use crate::context::{Channel, Context, EciClass, MessageKind};
use crate::decision::{Decision, Reason, ResponseCode, RuleId, Verdict};
use crate::key::{self, Key, Subject};
use crate::policy::{CurrencyAmounts, Policy, Rules, VelocityLimits};
use crate::state::RiskState;
use crate::velocity::{Need, Table, Totals};

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
    // The card's counters are read last, and are rarely in cache (a card
    // comes back minutes or days later): their loads start now, under the
    // rules before them.
    let card_hash = card_key(context, Subject::Card).hash64();
    state.cards.prefetch(card_hash);
    decide(policy, state, context, now_ms, Card::Count(card_hash))
}

/// What the card's counts found, at the node that counts the card
/// (cluster mode, `docs/cluster.md` "Velocity across nodes"): per card
/// subject (all channels, MO/TO) the window over its limit, if any, and
/// whether the count key is on the watch list. Four bytes on the wire
/// ([`CardVerdict::to_bytes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CardVerdict {
    /// Over a limit: [all channels, MO/TO].
    exceeded: [Option<Reason>; 2],
    /// On the watch list: [all channels, MO/TO].
    watched: [bool; 2],
}

/// The reasons a card subject's check can give, by their wire number
/// (index + 1; 0 is none).
const CARD_REASONS: [Reason; 6] = [
    Reason::Count60s,
    Reason::Count1h,
    Reason::Count24h,
    Reason::Amount60s,
    Reason::Amount1h,
    Reason::Amount24h,
];

impl CardVerdict {
    /// The four bytes sent back to the asking node.
    pub fn to_bytes(self) -> [u8; 4] {
        let number = |r: Option<Reason>| {
            r.and_then(|r| CARD_REASONS.iter().position(|c| *c == r))
                .map_or(0, |i| i as u8 + 1)
        };
        [
            number(self.exceeded[0]),
            number(self.exceeded[1]),
            u8::from(self.watched[0]),
            u8::from(self.watched[1]),
        ]
    }

    /// Reads [`CardVerdict::to_bytes`]; `None` for bytes it never writes.
    pub fn from_bytes(bytes: [u8; 4]) -> Option<CardVerdict> {
        let reason = |n: u8| match n {
            0 => Some(None),
            n => CARD_REASONS.get(usize::from(n) - 1).map(|r| Some(*r)),
        };
        let flag = |b: u8| match b {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        };
        Some(CardVerdict {
            exceeded: [reason(bytes[0])?, reason(bytes[1])?],
            watched: [flag(bytes[2])?, flag(bytes[3])?],
        })
    }

    /// Whether a card limit was exceeded.
    pub fn exceeded(&self) -> bool {
        self.exceeded.iter().any(Option::is_some)
    }
}

/// Whether a rule before velocity (block lists, amount limits, SCA)
/// declines: what the counting node needs to know to count the amount
/// ([`count_card`]). Reads the policy only.
pub fn declined_before_velocity(policy: &Policy, context: &Context<'_>) -> bool {
    let (rules, terminal_limits) = policy.rules_for(context.merchant_id, context.terminal_id);
    let mut verdict = Verdict::new();
    blocklists(policy, context, &mut verdict);
    amount_limits(rules, terminal_limits, context, &mut verdict);
    sca(rules, context, &mut verdict);
    verdict.is_declined()
}

/// Counts the card's attempt (its all-channel and MO/TO keys, and its
/// amount when `declined_before` is false, as [`evaluate`] does) and
/// compares with the limits: the card's half of [`evaluate`], run where
/// the card is counted. [`evaluate_with_card`] is the other half.
pub fn count_card(
    policy: &Policy,
    state: &RiskState,
    context: &Context<'_>,
    declined_before: bool,
    now_ms: u64,
) -> CardCount {
    let mut out = CardCount::default();
    if context.kind != MessageKind::Authorization {
        return out;
    }
    let (rules, _) = policy.rules_for(context.merchant_id, context.terminal_id);
    let amount_minor = (!declined_before).then_some(context.amount_minor);
    for (i, subject) in [Subject::Card, Subject::CardMoto].into_iter().enumerate() {
        let limits = &rules.velocity[subject as usize];
        if subject == Subject::CardMoto && !(context.channel == Channel::MoTo && limits.is_active())
        {
            continue;
        }
        let key = card_key(context, subject);
        let hash = key.hash64();
        let checked = check(
            &state.cards,
            (key, hash),
            limits,
            context,
            amount_minor,
            now_ms,
        );
        out.verdict.exceeded[i] = checked.exceeded;
        out.verdict.watched[i] = checked.watched;
        out.recorded |= CardCount::COUNT_BITS[i];
        if checked.amount_counted {
            out.recorded |= CardCount::AMOUNT_BITS[i];
        }
    }
    out
}

/// What [`count_card`] found and what it recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CardCount {
    /// The verdict, for the node deciding the payment.
    pub verdict: CardVerdict,
    /// Which keys took the attempt ([`CardCount::COUNT_BITS`],
    /// [`CardCount::AMOUNT_BITS`]): kept with the attempt, so that
    /// [`recount_card`] records exactly these again, whatever the counts
    /// it replays over.
    pub recorded: u8,
}

impl CardCount {
    /// The count key took it: [all channels, MO/TO].
    pub const COUNT_BITS: [u8; 2] = [1, 2];
    /// The amount key took it: [all channels, MO/TO].
    pub const AMOUNT_BITS: [u8; 2] = [4, 8];
}

/// Records again an attempt [`count_card`] recorded (`recorded`, its
/// [`CardCount::recorded`]) at its `at_ms`, checking no limit: a new
/// counting node rebuilds the card's counts from the attempts kept. Over
/// counts it already held it only adds (never fewer than the attempts).
pub fn recount_card(
    policy: &Policy,
    state: &RiskState,
    context: &Context<'_>,
    recorded: u8,
    at_ms: u64,
) {
    let (rules, _) = policy.rules_for(context.merchant_id, context.terminal_id);
    for (i, subject) in [Subject::Card, Subject::CardMoto].into_iter().enumerate() {
        if recorded & CardCount::COUNT_BITS[i] == 0 {
            continue;
        }
        let limits = &rules.velocity[subject as usize];
        let key = card_key(context, subject);
        let need = Need {
            windows: limits.count_max.map(|max| max.is_some()),
            amounts: false,
        };
        state
            .cards
            .observe_hashed(&key, key.hash64(), at_ms, 0, need);
        if recorded & CardCount::AMOUNT_BITS[i] != 0 {
            let amount_key = Key {
                currency: context.currency,
                ..key
            };
            let need = Need {
                windows: [true; 3],
                amounts: true,
            };
            state
                .cards
                .observe(&amount_key, at_ms, context.amount_minor, need);
        }
    }
}

/// [`evaluate`], with the card's counts done elsewhere ([`count_card`])
/// and their outcome in `card`: every other rule, the terminal's counts
/// and the score run here, in the same order and with the same codes.
pub fn evaluate_with_card(
    policy: &Policy,
    state: &RiskState,
    context: &Context<'_>,
    card: &CardVerdict,
    now_ms: u64,
) -> Decision {
    if context.kind != MessageKind::Authorization {
        return Decision::approve();
    }
    decide(policy, state, context, now_ms, Card::Given(card))
}

/// The rules in their fixed order, the card's part as `card` says, and
/// the decision recorded: [`evaluate`] and [`evaluate_with_card`] alike.
#[inline]
fn decide(
    policy: &Policy,
    state: &RiskState,
    context: &Context<'_>,
    now_ms: u64,
    card: Card<'_>,
) -> Decision {
    let (rules, terminal_limits) = policy.rules_for(context.merchant_id, context.terminal_id);
    let mut verdict = Verdict::new();
    blocklists(policy, context, &mut verdict);
    amount_limits(rules, terminal_limits, context, &mut verdict);
    sca(rules, context, &mut verdict);
    velocity(rules, state, context, now_ms, card, &mut verdict);
    score(rules, &mut verdict);
    let decision = verdict.finish();
    state.decisions.record(&decision);
    decision
}

/// Where the card's velocity comes from.
#[derive(Clone, Copy)]
enum Card<'a> {
    /// Counted here; the hash of the card's count key (prefetched).
    Count(u64),
    /// Counted elsewhere ([`count_card`]).
    Given(&'a CardVerdict),
}

fn blocklists(policy: &Policy, context: &Context<'_>, verdict: &mut Verdict) {
    const CODE: ResponseCode = ResponseCode::SuspectedFraud;
    if policy.is_card_blocked(&context.card_token) {
        verdict.decline(RuleId::BlocklistCard, Reason::CardBlocked, CODE, true);
    }
    if policy.is_bin_blocked(context.bin) {
        verdict.decline(RuleId::BlocklistBin, Reason::BinBlocked, CODE, true);
    }
    if policy.is_terminal_blocked(context.merchant_id, context.terminal_id) {
        verdict.decline(
            RuleId::BlocklistTerminal,
            Reason::TerminalBlocked,
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
        verdict.decline(RuleId::AmountChannel, Reason::AmountChannel, CODE, false);
    }
    let terminal_max = terminal.and_then(|limits| limits.get(context.currency));
    if terminal_max.is_some_and(|max| context.amount_minor > max) {
        verdict.decline(RuleId::AmountTerminal, Reason::AmountTerminal, CODE, false);
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
                let reason = Reason::EciAttempted;
                verdict.score(RuleId::EciAttempted, reason, rules.eci_attempted_score);
            }
        }
        EciClass::NotAuthenticated => {
            let threshold = rules.sca_threshold_minor.get(context.currency).unwrap_or(0);
            if context.amount_minor > threshold {
                let reason = Reason::ScaRequired;
                verdict.decline(RuleId::Sca, reason, ResponseCode::ScaRequired, false);
            }
        }
    }
}

/// The count key of a card subject ([`Subject::Card`], [`Subject::CardMoto`]).
fn card_key(context: &Context<'_>, subject: Subject) -> Key {
    Key {
        id: context.card_token.0,
        subject,
        currency: 0,
    }
}

fn velocity(
    rules: &Rules,
    state: &RiskState,
    context: &Context<'_>,
    now_ms: u64,
    card: Card<'_>,
    verdict: &mut Verdict,
) {
    // Amounts count only for attempts no other rule declined, so a 61 or
    // 1A does not use up the cardholder's allowance; counts take every one.
    let amount_minor = if verdict.is_declined() {
        None
    } else {
        Some(context.amount_minor)
    };
    let subjects = [
        (Subject::Card, RuleId::VelocityCard, &state.cards),
        (Subject::CardMoto, RuleId::VelocityCardMoto, &state.cards),
        (
            Subject::Terminal,
            RuleId::VelocityTerminal,
            &state.terminals,
        ),
    ];
    for (subject, rule, table) in subjects {
        let limits = &rules.velocity[subject as usize];
        // The card is always counted (the contract's limit, and its key
        // holds the watch list); MO/TO and terminals only while limited,
        // so one busy terminal is not a lock every thread shares for nothing.
        let counted = match subject {
            Subject::Card => true,
            Subject::CardMoto => context.channel == Channel::MoTo && limits.is_active(),
            Subject::Terminal => limits.is_active(),
        };
        if !counted {
            continue;
        }
        let card_hash = match (card, subject) {
            (Card::Given(given), Subject::Card | Subject::CardMoto) => {
                let i = usize::from(subject == Subject::CardMoto);
                if let Some(reason) = given.exceeded[i] {
                    verdict.decline(rule, reason, ResponseCode::ExceedsFrequency, true);
                }
                if given.watched[i] && rules.watch_list_score > 0 {
                    let reason = Reason::Watched;
                    verdict.score(RuleId::WatchList, reason, rules.watch_list_score);
                }
                continue;
            }
            (Card::Given(_), Subject::Terminal) => 0,
            (Card::Count(hash), _) => hash,
        };
        // Packing the terminal id costs a few copies: only when counted.
        let key = match subject {
            Subject::Card | Subject::CardMoto => card_key(context, subject),
            Subject::Terminal => Key {
                id: key::terminal_id(context.merchant_id, context.terminal_id),
                subject,
                currency: 0,
            },
        };
        // The card's was hashed for its prefetch.
        let hash = if subject == Subject::Card {
            card_hash
        } else {
            key.hash64()
        };
        let checked = check(table, (key, hash), limits, context, amount_minor, now_ms);
        if let Some(reason) = checked.exceeded {
            verdict.decline(rule, reason, ResponseCode::ExceedsFrequency, true);
        }
        if checked.watched && rules.watch_list_score > 0 {
            let reason = Reason::Watched;
            verdict.score(RuleId::WatchList, reason, rules.watch_list_score);
        }
    }
}

/// What one subject's velocity check found.
struct Checked {
    /// The first window over its limit, as a reason.
    exceeded: Option<Reason>,
    /// Whether the count key is marked (watch list).
    watched: bool,
    /// Whether the amount was recorded under the amount key.
    amount_counted: bool,
}

/// Records the attempt under the subject's count key and, if the policy
/// limits amounts in this currency (and nothing declined it), under its
/// amount key; then compares with the limits.
fn check(
    table: &Table,
    (count_key, count_hash): (Key, u64),
    limits: &VelocityLimits,
    context: &Context<'_>,
    amount_minor: Option<u64>,
    now_ms: u64,
) -> Checked {
    let need = Need {
        windows: limits.count_max.map(|max| max.is_some()),
        amounts: false,
    };
    let counts = table.observe_hashed(&count_key, count_hash, now_ms, 0, need);
    let mut checked = Checked {
        exceeded: None,
        watched: counts.marked,
        amount_counted: false,
    };
    let over_count = (0..3).find(|&w| limits.count_max[w].is_some_and(|max| counts.count[w] > max));
    if let Some(window) = over_count {
        checked.exceeded = Some(Reason::COUNT_WINDOWS[window]);
        return checked;
    }
    let Some(amount_minor) = amount_minor else {
        return checked;
    };
    let maxes = limits
        .amount_max_minor
        .each_ref()
        .map(|table| table.get(context.currency));
    if maxes.iter().all(Option::is_none) {
        return checked;
    }
    let amount_key = Key {
        currency: context.currency,
        ..count_key
    };
    let need = Need {
        windows: maxes.map(|max| max.is_some()),
        amounts: true,
    };
    let amounts: Totals = table.observe(&amount_key, now_ms, amount_minor, need);
    checked.amount_counted = true;
    let over_amount = (0..3).find(|&w| maxes[w].is_some_and(|max| amounts.amount_minor[w] > max));
    checked.exceeded = over_amount.map(|window| Reason::AMOUNT_WINDOWS[window]);
    checked
}

fn score(rules: &Rules, verdict: &mut Verdict) {
    let score = verdict.score_so_far();
    if !verdict.is_declined() && rules.decline_score_min.is_some_and(|min| score >= min) {
        let reason = Reason::ScoreDecline;
        verdict.decline(RuleId::Score, reason, ResponseCode::DoNotHonor, true);
    } else if !verdict.is_flagged() && rules.flag_score_min.is_some_and(|min| score >= min) {
        verdict.flag(RuleId::Score, Reason::ScoreFlag);
    }
}
