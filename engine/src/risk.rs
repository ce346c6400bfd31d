//! The risk stage: builds the risk crate's context from a request, turns
//! its decision into a response code and a flag, and holds the compiled
//! policy behind an atomic pointer so a reload never stops traffic.

use std::sync::Arc;

use arc_swap::ArcSwap;
use codecs::card::{CardToken, TokenKey};

use crate::code::Code;
use crate::command::{Channel, Request};
use crate::merchant::Merchant;

/// What the risk stage decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RiskVerdict {
    /// Go on.
    Approve,
    /// Go on, but flag the payment.
    ApproveFlagged {
        /// Rule that flagged.
        reason: &'static str,
    },
    /// Decline with `code`; flag when `flag` is set.
    Decline {
        /// F39.
        code: Code,
        /// Rule that flagged, if any.
        flag: Option<&'static str>,
    },
}

impl RiskVerdict {
    /// The flag reason, if any.
    pub(crate) fn flag(&self) -> Option<&'static str> {
        match *self {
            RiskVerdict::Approve => None,
            RiskVerdict::ApproveFlagged { reason } => Some(reason),
            RiskVerdict::Decline { flag, .. } => flag,
        }
    }
}

/// The risk rules in force and the state they keep.
pub(crate) struct RiskStage {
    /// The compiled policy; swapped whole on reload (readers never wait).
    policy: ArcSwap<risk::Policy>,
    /// Velocity counters and watch list; kept across reloads.
    state: risk::RiskState,
}

/// Turns a block-listed PAN into the card token the risk crate compares,
/// for compiling a policy with `key`.
pub fn tokenizer(key: &TokenKey) -> impl Fn(&str) -> risk::CardToken + '_ {
    move |pan: &str| risk::CardToken(key.token_of_digits(pan.as_bytes()).0)
}

fn channel(c: Channel) -> risk::Channel {
    match c {
        Channel::CardPresent => risk::Channel::CardPresent,
        Channel::MoTo => risk::Channel::MoTo,
        Channel::Ecommerce => risk::Channel::Ecommerce,
        Channel::Other => risk::Channel::Unknown,
    }
}

impl RiskStage {
    /// Evaluates with `policy` (compiled by the shell, from a file or the
    /// embedded default).
    pub(crate) fn new(policy: risk::Policy) -> Self {
        RiskStage {
            policy: ArcSwap::from_pointee(policy),
            state: risk::RiskState::new(),
        }
    }

    /// Swaps in a new policy; velocity counters and the watch list stay.
    pub(crate) fn replace(&self, policy: risk::Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Puts a card on the watch list (a payment was marked as scam by hand).
    pub(crate) fn watch(&self, token: &CardToken) {
        if self
            .state
            .add_to_watch_list(risk::CardToken(token.0))
            .is_err()
        {
            metrics::counter!("switch_limit_reached_total", "limit" => "watch_list_max")
                .increment(1);
            tracing::warn!("risk watch list full: card not added");
        }
    }

    /// One flagged payment of the card lets go of the watch list (its flag
    /// was taken off); the card stays while another flagged payment holds
    /// it. Returns whether it left the list.
    pub(crate) fn unwatch(&self, token: &CardToken) -> bool {
        self.state.remove_from_watch_list(risk::CardToken(token.0))
    }

    /// Whether the card is on the watch list.
    #[cfg(test)]
    pub(crate) fn watched(&self, token: &CardToken) -> bool {
        self.state.is_watched(risk::CardToken(token.0))
    }

    /// Tracked velocity keys, for the gauge.
    pub(crate) fn velocity_keys(&self) -> usize {
        self.state.velocity_keys()
    }

    /// The risk crate's context of an authorization with card `pan`.
    fn context<'a>(
        req: &'a Request<'_>,
        pan: &'a codecs::card::Pan<'_>,
        merchant: &'a Merchant,
        token: &CardToken,
    ) -> risk::Context<'a> {
        risk::Context {
            kind: risk::MessageKind::Authorization,
            amount_minor: req.amount_minor,
            currency: req.currency,
            card_token: risk::CardToken(token.0),
            bin: risk::Bin::from_pan(pan.expose()).unwrap_or(risk::Bin(0)),
            merchant_id: std::str::from_utf8(&merchant.id).unwrap_or_default(),
            terminal_id: std::str::from_utf8(&req.terminal_id).unwrap_or_default(),
            channel: channel(req.channel),
            eci: req.eci.map(|e| e.0),
        }
    }

    /// Evaluates an authorization.
    pub(crate) fn evaluate(
        &self,
        req: &Request<'_>,
        merchant: &Merchant,
        token: &CardToken,
        now_ms: u64,
    ) -> RiskVerdict {
        let Some(pan) = req.pan else {
            return RiskVerdict::Approve;
        };
        let context = Self::context(req, &pan, merchant, token);
        let policy = self.policy.load();
        verdict_of(&risk::evaluate(&policy, &self.state, &context, now_ms))
    }

    /// Evaluates an authorization whose card another node counted
    /// (`card`: its verdict): every other rule runs here.
    pub(crate) fn evaluate_with_card(
        &self,
        req: &Request<'_>,
        merchant: &Merchant,
        token: &CardToken,
        card: &risk::CardVerdict,
        now_ms: u64,
    ) -> RiskVerdict {
        let Some(pan) = req.pan else {
            return RiskVerdict::Approve;
        };
        let context = Self::context(req, &pan, merchant, token);
        let policy = self.policy.load();
        let decision = risk::evaluate_with_card(&policy, &self.state, &context, card, now_ms);
        verdict_of(&decision)
    }

    /// Whether a rule before velocity declines an authorization (what the
    /// node counting the card needs); `None` without a card (nothing to
    /// count).
    pub(crate) fn declined_before_velocity(
        &self,
        req: &Request<'_>,
        merchant: &Merchant,
        token: &CardToken,
    ) -> Option<bool> {
        let pan = req.pan?;
        let context = Self::context(req, &pan, merchant, token);
        let policy = self.policy.load();
        Some(risk::declined_before_velocity(&policy, &context))
    }

    /// Counts the card of `ask` here at `now_ms` (this node counts it).
    pub(crate) fn count_card(
        &self,
        ask: &crate::command::VelocityAsk,
        now_ms: u64,
    ) -> risk::CardCount {
        let context = Self::ask_context(ask);
        let policy = self.policy.load();
        risk::count_card(&policy, &self.state, &context, ask.declined_before, now_ms)
    }

    /// The card keys of the cards `keep` takes, as a checkpoint.
    pub(crate) fn export_cards(
        &self,
        keep: &dyn Fn(&[u8; 32]) -> bool,
        out: &mut Vec<u8>,
    ) -> usize {
        self.state.export_cards(keep, out)
    }

    /// Sets the card keys of a checkpoint.
    pub(crate) fn import_cards(&self, bytes: &[u8]) -> Result<usize, risk::CheckpointError> {
        self.state.import_cards(bytes)
    }

    /// Takes the cards `keep` takes off the watch list.
    pub(crate) fn forget_watches(&self, keep: &dyn Fn(&[u8; 32]) -> bool) -> usize {
        self.state.forget_watches(keep)
    }

    /// Forgets the counts of the cards `keep` takes.
    pub(crate) fn reset_cards(&self, keep: &dyn Fn(&[u8; 32]) -> bool) -> usize {
        self.state.reset_cards(keep)
    }

    /// Records again an attempt counted here or by the card's previous
    /// counting node (`recorded`: the keys that took it).
    pub(crate) fn recount_card(&self, ask: &crate::command::VelocityAsk, at_ms: u64, recorded: u8) {
        let context = Self::ask_context(ask);
        let policy = self.policy.load();
        risk::recount_card(&policy, &self.state, &context, recorded, at_ms);
    }

    /// The risk crate's context of an ask.
    fn ask_context(ask: &crate::command::VelocityAsk) -> risk::Context<'_> {
        risk::Context {
            kind: risk::MessageKind::Authorization,
            amount_minor: ask.amount_minor,
            currency: ask.currency,
            card_token: risk::CardToken(ask.token),
            // Block lists do not run here.
            bin: risk::Bin(0),
            merchant_id: std::str::from_utf8(&ask.merchant_id).unwrap_or_default(),
            terminal_id: std::str::from_utf8(&ask.terminal_id).unwrap_or_default(),
            channel: channel(ask.channel),
            eci: None,
        }
    }
}

/// The engine's verdict of a risk decision.
fn verdict_of(decision: &risk::Decision) -> RiskVerdict {
    let reason = decision.fired.get(0).map(|f| f.rule.as_str());
    match decision.action {
        risk::Action::Approve => RiskVerdict::Approve,
        risk::Action::ApproveFlagged => RiskVerdict::ApproveFlagged {
            reason: reason.unwrap_or("score"),
        },
        risk::Action::Decline { code, flagged } => RiskVerdict::Decline {
            code: Code(code.as_bytes()),
            flag: if flagged {
                reason.or(Some("risk"))
            } else {
                None
            },
        },
    }
}
