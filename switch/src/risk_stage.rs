//! The risk stage: builds the risk crate's context from a request, turns
//! its decision into a response code and a flag, and holds the compiled
//! policy behind an atomic pointer so a reload never stops traffic.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use codecs::card::{CardToken, TokenKey};

use crate::code::Code;
use crate::engine::MerchantRt;
use crate::request::{Channel, Request};

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
    /// Where the policy comes from (`risk.policy_file`), if not embedded.
    source: Option<PathBuf>,
    /// Turns block-listed PANs into tokens while compiling.
    token_key: TokenKey,
}

fn tokenizer(key: &TokenKey) -> impl Fn(&str) -> risk::CardToken + '_ {
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
    /// The policy from `risk.policy_file`, or the embedded default.
    ///
    /// # Errors
    /// When the policy file cannot be read or is invalid (the message names
    /// the file, line and key).
    pub(crate) fn new(
        config: &crate::config::Config,
        token_key: &TokenKey,
    ) -> anyhow::Result<Self> {
        let source = config.risk.policy_file.clone();
        let policy = match &source {
            None => risk::Policy::embedded(&tokenizer(token_key)),
            Some(path) => Self::compile_file(path, token_key)?,
        };
        Ok(RiskStage {
            policy: ArcSwap::from_pointee(policy),
            state: risk::RiskState::new(),
            source,
            token_key: token_key.clone(),
        })
    }

    fn compile_file(path: &std::path::Path, token_key: &TokenKey) -> anyhow::Result<risk::Policy> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading risk policy {}", path.display()))?;
        risk::Policy::compile(&text, &tokenizer(token_key))
            .with_context(|| format!("risk policy {}", path.display()))
    }

    /// The policy file, if any (watched for changes).
    pub(crate) fn source(&self) -> Option<&std::path::Path> {
        self.source.as_deref()
    }

    /// Recompiles the policy file and swaps it in; on error the old policy
    /// stays, the error is logged and counted.
    pub(crate) fn reload(&self) -> bool {
        let Some(path) = &self.source else {
            return false;
        };
        match Self::compile_file(path, &self.token_key) {
            Ok(policy) => {
                self.policy.store(Arc::new(policy));
                metrics::counter!("switch_risk_policy_reloads_total", "result" => "ok")
                    .increment(1);
                tracing::info!(file = %path.display(), "risk policy reloaded");
                true
            }
            Err(e) => {
                metrics::counter!("switch_risk_policy_reloads_total", "result" => "error")
                    .increment(1);
                tracing::error!(
                    error = format!("{e:#}"),
                    "risk policy reload failed; keeping the old policy"
                );
                false
            }
        }
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

    /// Tracked velocity keys, for the gauge.
    pub(crate) fn velocity_keys(&self) -> usize {
        self.state.velocity_keys()
    }

    /// Evaluates an authorization.
    pub(crate) fn evaluate(
        &self,
        req: &Request<'_>,
        merchant: &MerchantRt,
        token: &CardToken,
        now_ms: u64,
    ) -> RiskVerdict {
        let Some(pan) = req.pan else {
            return RiskVerdict::Approve;
        };
        let context = risk::Context {
            kind: risk::MessageKind::Authorization,
            amount_minor: req.amount_minor,
            currency: req.currency,
            card_token: risk::CardToken(token.0),
            bin: risk::Bin::from_pan(pan.expose()).unwrap_or(risk::Bin(0)),
            merchant_id: std::str::from_utf8(&merchant.id).unwrap_or_default(),
            terminal_id: std::str::from_utf8(&req.terminal_id).unwrap_or_default(),
            channel: channel(req.channel),
            eci: req.eci.map(|e| e.0),
        };
        let policy = self.policy.load();
        let decision = risk::evaluate(&policy, &self.state, &context, now_ms);
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
}
