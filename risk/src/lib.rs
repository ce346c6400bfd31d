//! Risk: judges an authorization against a policy, purely and synchronously.
//!
//! No I/O, no clock (`now_ms` is a parameter), no async, no allocation on
//! the evaluation path. The switch calls it between validate and lifecycle.
//!
//! # Layout
//! - `context`: what is judged ([`Context`]): amount, card token, BIN,
//!   merchant, terminal, channel, ECI.
//! - `policy`: the compiled, immutable [`Policy`]; `policy/source` parses
//!   and validates its TOML, `policy/default_policy.toml` is the embedded
//!   default ([`DEFAULT_POLICY_TOML`]).
//! - `evaluate`: the rules, in order ([`evaluate`]).
//! - `decision`: the answer ([`Decision`]): action, score, fired rules.
//! - `state`: what persists between evaluations ([`RiskState`]): velocity
//!   and the watch list, independent of the policy so reloads keep it.
//! - `velocity`: bounded, sharded, time-windowed counters.
//! - `key`: fixed-size card and terminal keys and their hasher.
//! - `metrics`: `switch_risk_*` metrics with static labels.
//! - `error`: [`PolicyError`], [`WatchListFull`].
//!
//! # Use
//! ```
//! use risk::{evaluate, Bin, CardToken, Channel, Context, MessageKind, Policy, RiskState};
//!
//! let tokenize = |pan: &str| CardToken([pan.len() as u8; 32]); // the switch's HMAC
//! let policy = std::sync::Arc::new(Policy::embedded(&tokenize));
//! let state = RiskState::new();
//! let context = Context {
//!     kind: MessageKind::Authorization,
//!     amount_minor: 1_000,
//!     currency: 978,
//!     card_token: CardToken([7; 32]),
//!     bin: Bin(41_111_111),
//!     merchant_id: "DEMO00000000001",
//!     terminal_id: "DEMO0001",
//!     channel: Channel::CardPresent,
//!     eci: None,
//! };
//! let decision = evaluate(&policy, &state, &context, 1_700_000_000_000);
//! assert_eq!(decision.action, risk::Action::Approve);
//! ```

mod context;
mod decision;
mod error;
mod evaluate;
mod key;
mod metrics;
mod policy;
mod state;
mod velocity;

pub use context::{Bin, CardToken, Channel, Context, EciClass, MessageKind};
pub use decision::{
    Action, Decision, Fired, FiredRules, ResponseCode, RuleId, SCORE_FLAGGING_DECLINE,
};
pub use error::{CheckpointError, PolicyError, WatchListFull};
pub use evaluate::{
    count_card, declined_before_velocity, evaluate, evaluate_with_card, recount_card, CardCount,
    CardVerdict,
};
pub use policy::{Policy, DEFAULT_POLICY_TOML, POLICY_BYTES_MAX};
pub use state::{
    Capacity, RiskState, VELOCITY_CARD_KEYS_MAX, VELOCITY_TERMINAL_KEYS_MAX, WATCH_LIST_MAX,
};
pub use velocity::{COUNT_60S_MAX, RECENT_EVENTS_MAX, SHARDS};
