//! What risk answers: an action, a score, and the rules that fired.

/// The response codes risk can decline with (F39).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResponseCode {
    /// 59 suspected fraud: a block list matched.
    SuspectedFraud,
    /// 65 exceeds frequency limit: a velocity limit was passed.
    ExceedsFrequency,
    /// 61 exceeds amount limit: a merchant, terminal or channel limit.
    ExceedsAmount,
    /// 1A additional customer authentication required (SCA).
    ScaRequired,
    /// 05 do not honor: the score reached the policy's decline score.
    DoNotHonor,
}

impl ResponseCode {
    /// The two ASCII characters of F39.
    pub fn as_bytes(self) -> [u8; 2] {
        match self {
            ResponseCode::SuspectedFraud => *b"59",
            ResponseCode::ExceedsFrequency => *b"65",
            ResponseCode::ExceedsAmount => *b"61",
            ResponseCode::ScaRequired => *b"1A",
            ResponseCode::DoNotHonor => *b"05",
        }
    }

    /// F39 as a string.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseCode::SuspectedFraud => "59",
            ResponseCode::ExceedsFrequency => "65",
            ResponseCode::ExceedsAmount => "61",
            ResponseCode::ScaRequired => "1A",
            ResponseCode::DoNotHonor => "05",
        }
    }
}

/// Every rule risk has; each fires at most once per evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleId {
    /// The card token is on the block list (59, flagged).
    BlocklistCard,
    /// The BIN is in a blocked range (59, flagged).
    BlocklistBin,
    /// The terminal is blocked (59, flagged).
    BlocklistTerminal,
    /// Above the merchant's amount limit for the channel (61).
    AmountChannel,
    /// Above the terminal's amount limit (61).
    AmountTerminal,
    /// Not-authenticated e-commerce above the SCA threshold (1A).
    Sca,
    /// Authentication only attempted (ECI 06/01): adds to the score.
    EciAttempted,
    /// Card velocity over all channels (65, flagged).
    VelocityCard,
    /// Card velocity for MO/TO only (65, flagged).
    VelocityCardMoto,
    /// Terminal velocity (65, flagged).
    VelocityTerminal,
    /// The card is on the watch list: adds to the score.
    WatchList,
    /// The score reached the decline score (05) or the flag score.
    Score,
}

impl RuleId {
    /// Number of rules: the capacity of [`FiredRules`].
    pub const COUNT: usize = 12;

    /// Stable snake_case name, used as the metric label and in records.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::BlocklistCard => "blocklist_card",
            RuleId::BlocklistBin => "blocklist_bin",
            RuleId::BlocklistTerminal => "blocklist_terminal",
            RuleId::AmountChannel => "amount_channel",
            RuleId::AmountTerminal => "amount_terminal",
            RuleId::Sca => "sca",
            RuleId::EciAttempted => "eci_attempted",
            RuleId::VelocityCard => "velocity_card",
            RuleId::VelocityCardMoto => "velocity_card_moto",
            RuleId::VelocityTerminal => "velocity_terminal",
            RuleId::WatchList => "watch_list",
            RuleId::Score => "score",
        }
    }
}

/// One rule that fired and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fired {
    /// Which rule.
    pub rule: RuleId,
    /// Why, in words fit for the payment's record.
    pub reason: &'static str,
}

/// Why a rule fired; a byte in [`FiredRules`], words via [`Reason::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Reason {
    CardBlocked,
    BinBlocked,
    TerminalBlocked,
    AmountChannel,
    AmountTerminal,
    ScaRequired,
    EciAttempted,
    Count60s,
    Count1h,
    Count24h,
    Amount60s,
    Amount1h,
    Amount24h,
    Watched,
    ScoreDecline,
    ScoreFlag,
}

impl Reason {
    pub(crate) const COUNT_WINDOWS: [Reason; 3] =
        [Reason::Count60s, Reason::Count1h, Reason::Count24h];
    pub(crate) const AMOUNT_WINDOWS: [Reason; 3] =
        [Reason::Amount60s, Reason::Amount1h, Reason::Amount24h];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::CardBlocked => "card on the block list",
            Reason::BinBlocked => "card's BIN in a blocked range",
            Reason::TerminalBlocked => "terminal on the block list",
            Reason::AmountChannel => "amount over the merchant's limit for the channel",
            Reason::AmountTerminal => "amount over the terminal's limit",
            Reason::ScaRequired => "e-commerce not authenticated (ECI 07) above the SCA threshold",
            Reason::EciAttempted => "3-D Secure attempted, not completed (ECI 06/01)",
            Reason::Count60s => "attempts over the 60 s count limit",
            Reason::Count1h => "attempts over the 1 h count limit",
            Reason::Count24h => "attempts over the 24 h count limit",
            Reason::Amount60s => "amount over the 60 s amount limit",
            Reason::Amount1h => "amount over the 1 h amount limit",
            Reason::Amount24h => "amount over the 24 h amount limit",
            Reason::Watched => "card on the watch list (marked scam)",
            Reason::ScoreDecline => "score at or above the policy's decline score",
            Reason::ScoreFlag => "score at or above the policy's flag score",
        }
    }
}

/// The rules that fired, in evaluation order, in two fixed byte arrays:
/// no allocation, and a [`Decision`] small enough to return in registers.
#[derive(Clone, Copy)]
pub struct FiredRules {
    /// Rules; only the first `len` are meaningful.
    rules: [RuleId; RuleId::COUNT],
    /// Their reasons, parallel to `rules`.
    reasons: [Reason; RuleId::COUNT],
    /// How many fired.
    len: u8,
}

impl FiredRules {
    /// None fired; a constant, so building a decision copies it whole
    /// instead of storing it in pieces and reading it back (a stall).
    const EMPTY: FiredRules = FiredRules {
        rules: [RuleId::Score; RuleId::COUNT],
        reasons: [Reason::ScoreFlag; RuleId::COUNT],
        len: 0,
    };

    /// Each rule fires at most once, so the arrays never fill; a second
    /// push of one rule is a programming error.
    fn push(&mut self, rule: RuleId, reason: Reason) {
        debug_assert!(!self.iter().any(|f| f.rule == rule));
        let at = usize::from(self.len);
        if at < RuleId::COUNT {
            self.rules[at] = rule;
            self.reasons[at] = reason;
            self.len += 1;
        }
    }

    /// How many rules fired.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether no rule fired.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `index`th rule that fired.
    pub fn get(&self, index: usize) -> Option<Fired> {
        (index < self.len()).then(|| Fired {
            rule: self.rules[index],
            reason: self.reasons[index].as_str(),
        })
    }

    /// The fired rules in order.
    pub fn iter(&self) -> impl Iterator<Item = Fired> + '_ {
        (0..self.len()).filter_map(|index| self.get(index))
    }
}

impl std::fmt::Debug for FiredRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What the switch does with the payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Approve.
    Approve,
    /// Approve, and record the payment as flagged with the fired reasons.
    ApproveFlagged,
    /// Decline with `code`; `flagged` says whether to record it as scam.
    Decline {
        /// F39 to answer with.
        code: ResponseCode,
        /// Blocklist and velocity declines are flagged; amount and SCA are not.
        flagged: bool,
    },
}

impl Action {
    /// The metric label of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::ApproveFlagged => "approve_flagged",
            Action::Decline { .. } => "decline",
        }
    }
}

/// The outcome of one evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    /// Approve, approve and flag, or decline with a code.
    pub action: Action,
    /// Sum of the fired rules' scores (saturating).
    pub score: u32,
    /// Which rules fired, with reasons.
    pub fired: FiredRules,
}

impl Decision {
    /// Approved with nothing fired: the answer for non-authorizations.
    pub(crate) fn approve() -> Decision {
        Decision::APPROVE
    }

    const APPROVE: Decision = Decision {
        action: Action::Approve,
        score: 0,
        fired: FiredRules::EMPTY,
    };

    /// Whether the payment's record must carry the scam flag.
    pub fn is_flagged(&self) -> bool {
        matches!(
            self.action,
            Action::ApproveFlagged | Action::Decline { flagged: true, .. }
        )
    }

    /// The response code if declined.
    pub fn decline_code(&self) -> Option<ResponseCode> {
        match self.action {
            Action::Decline { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Builds a [`Decision`] while rules run.
pub(crate) struct Verdict {
    /// The decision so far.
    decision: Decision,
    /// The strongest decline so far; `ResponseCode`'s order is the priority.
    code: Option<ResponseCode>,
    /// Whether a flagging rule fired.
    flagged: bool,
}

impl Verdict {
    pub(crate) fn new() -> Verdict {
        Verdict {
            decision: Decision::approve(),
            code: None,
            flagged: false,
        }
    }

    /// Records a rule that only adds to the score.
    pub(crate) fn score(&mut self, rule: RuleId, reason: Reason, score: u32) {
        self.decision.fired.push(rule, reason);
        self.decision.score = self.decision.score.saturating_add(score);
    }

    /// Records a declining rule; the highest-priority code wins
    /// (59 before 65 before 61 before 1A before 05).
    pub(crate) fn decline(&mut self, rule: RuleId, reason: Reason, code: ResponseCode, flag: bool) {
        self.decision.fired.push(rule, reason);
        self.code = Some(self.code.map_or(code, |old| old.min(code)));
        if flag && rule != RuleId::Score {
            self.decision.score = self.decision.score.saturating_add(SCORE_FLAGGING_DECLINE);
        }
        self.flagged |= flag;
    }

    /// Marks the payment flagged without declining.
    pub(crate) fn flag(&mut self, rule: RuleId, reason: Reason) {
        self.decision.fired.push(rule, reason);
        self.flagged = true;
    }

    pub(crate) fn score_so_far(&self) -> u32 {
        self.decision.score
    }

    pub(crate) fn is_flagged(&self) -> bool {
        self.flagged
    }

    pub(crate) fn is_declined(&self) -> bool {
        self.code.is_some()
    }

    pub(crate) fn finish(mut self) -> Decision {
        self.decision.action = match self.code {
            Some(code) => Action::Decline {
                code,
                flagged: self.flagged,
            },
            None if self.flagged => Action::ApproveFlagged,
            None => Action::Approve,
        };
        self.decision
    }
}

/// Score a flagging decline (block list, velocity) adds, so the score of a
/// scam decline is high whatever the policy's weights.
pub const SCORE_FLAGGING_DECLINE: u32 = 100;
