//! The compiled, immutable policy: what the rules compare against.
//!
//! Built once from TOML ([`source`]) and then only read, so the switch can
//! share it as `Arc<Policy>` and swap a reloaded one in atomically. It holds
//! no counters: velocity and the watch list live in
//! [`RiskState`](crate::RiskState), so a reload keeps them.

pub(crate) mod source;

use std::collections::{HashMap, HashSet};

use crate::context::{Bin, CardToken, Channel};
use crate::error::PolicyError;
use crate::key::{self, KeyHasherBuild, Subject};

/// The embedded default policy, what the switch runs with when given no
/// policy file. See `docs/risk.md`.
pub const DEFAULT_POLICY_TOML: &str = include_str!("default_policy.toml");

/// Largest policy source accepted.
pub const POLICY_BYTES_MAX: usize = 4 << 20;

/// Per-currency amounts in minor units, sorted by currency; a handful of
/// entries, so a linear scan beats hashing.
#[derive(Clone, Debug, Default)]
pub(crate) struct CurrencyAmounts(Box<[(u16, u64)]>);

impl CurrencyAmounts {
    pub(crate) fn get(&self, currency: u16) -> Option<u64> {
        self.0
            .iter()
            .find(|(c, _)| *c == currency)
            .map(|&(_, amount)| amount)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Velocity limits for one subject (card, card MO/TO, terminal) over the
/// 60 s, 1 h and 24 h windows; `None` / empty is no limit.
#[derive(Clone, Debug, Default)]
pub(crate) struct VelocityLimits {
    /// Most attempts in each window.
    pub(crate) count_max: [Option<u32>; 3],
    /// Most amount in each window, per currency.
    pub(crate) amount_max_minor: [CurrencyAmounts; 3],
}

impl VelocityLimits {
    /// Whether any limit is set, i.e. whether the subject is counted.
    pub(crate) fn is_active(&self) -> bool {
        self.count_max.iter().any(Option::is_some)
            || self.amount_max_minor.iter().any(|t| !t.is_empty())
    }
}

/// One merchant's rules, the defaults merged in.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rules {
    /// An approved payment with at least this score is flagged.
    pub(crate) flag_score_min: Option<u32>,
    /// A payment with at least this score is declined 05.
    pub(crate) decline_score_min: Option<u32>,
    /// Score a watch-listed card adds.
    pub(crate) watch_list_score: u32,
    /// Not-authenticated e-commerce above this gets 1A; a currency not
    /// listed has threshold 0 (always 1A).
    pub(crate) sca_threshold_minor: CurrencyAmounts,
    /// Score an attempted authentication (ECI 06/01) adds.
    pub(crate) eci_attempted_score: u32,
    /// Most amount per authorization, by channel.
    pub(crate) amount_max_minor: [CurrencyAmounts; Channel::COUNT],
    /// Velocity limits by subject.
    pub(crate) velocity: [VelocityLimits; Subject::COUNT],
}

/// A merchant's rules and its terminals' amount limits.
#[derive(Clone, Debug)]
pub(crate) struct Merchant {
    pub(crate) rules: Rules,
    /// Terminal id (packed) → most amount per authorization, all channels.
    pub(crate) terminals: HashMap<u64, CurrencyAmounts, KeyHasherBuild>,
}

/// A compiled risk policy. Immutable and cheap to share (`Arc<Policy>`).
///
/// Holds no clear PAN: block-listed PANs are tokenized while compiling by
/// the closure the switch passes, and only the tokens are kept.
#[derive(Debug)]
pub struct Policy {
    /// Rules for merchants the policy does not name.
    pub(crate) defaults: Rules,
    /// Merchant id (packed) → its rules.
    pub(crate) merchants: HashMap<u128, Merchant, KeyHasherBuild>,
    /// Blocked card tokens.
    pub(crate) blocked_cards: HashSet<CardToken, KeyHasherBuild>,
    /// One bit per blocked token ([`card_filter_bit`]): a token whose bit is
    /// clear is not blocked, without hashing it (a few are blocked, most
    /// cards are not).
    pub(crate) blocked_cards_filter: u64,
    /// Blocked BIN ranges (inclusive), sorted and merged.
    pub(crate) blocked_bins: Box<[(u32, u32)]>,
    /// Blocked terminals, packed with their merchant.
    pub(crate) blocked_terminals: HashSet<[u8; 32], KeyHasherBuild>,
}

impl Policy {
    /// Compiles a policy from TOML. `tokenize` turns each block-listed PAN
    /// into the same keyed token the switch computes for incoming cards;
    /// the PAN is not kept.
    ///
    /// # Errors
    /// [`PolicyError`] naming the line and key of the first problem: bad
    /// TOML, an unknown key, a value out of range.
    pub fn compile(
        source: &str,
        tokenize: &dyn Fn(&str) -> CardToken,
    ) -> Result<Policy, PolicyError> {
        source::compile(source, tokenize)
    }

    /// The embedded default policy ([`DEFAULT_POLICY_TOML`]).
    ///
    /// # Panics
    /// Never: the embedded source is compiled by the crate's tests.
    pub fn embedded(tokenize: &dyn Fn(&str) -> CardToken) -> Policy {
        match source::compile(DEFAULT_POLICY_TOML, tokenize) {
            Ok(policy) => policy,
            Err(error) => panic!("embedded default policy is invalid: {error}"),
        }
    }

    /// The rules for a merchant, and its terminal's amount limits if the
    /// policy sets any.
    pub(crate) fn rules_for(
        &self,
        merchant_id: &str,
        terminal_id: &str,
    ) -> (&Rules, Option<&CurrencyAmounts>) {
        if self.merchants.is_empty() {
            return (&self.defaults, None);
        }
        let Some(merchant) = pack_merchant(merchant_id).and_then(|id| self.merchants.get(&id))
        else {
            return (&self.defaults, None);
        };
        let terminal = if merchant.terminals.is_empty() {
            None
        } else {
            pack_terminal(terminal_id).and_then(|id| merchant.terminals.get(&id))
        };
        (&merchant.rules, terminal)
    }

    pub(crate) fn is_card_blocked(&self, token: &CardToken) -> bool {
        self.blocked_cards_filter & card_filter_bit(token) != 0
            && self.blocked_cards.contains(token)
    }

    pub(crate) fn is_bin_blocked(&self, bin: Bin) -> bool {
        // The last range starting at or below the BIN is the only candidate.
        let after = self.blocked_bins.partition_point(|&(low, _)| low <= bin.0);
        after > 0
            && self
                .blocked_bins
                .get(after - 1)
                .is_some_and(|&(_, high)| bin.0 <= high)
    }

    pub(crate) fn is_terminal_blocked(&self, merchant_id: &str, terminal_id: &str) -> bool {
        !self.blocked_terminals.is_empty()
            && self
                .blocked_terminals
                .contains(&key::terminal_id(merchant_id, terminal_id))
    }
}

/// A token's bit in [`Policy::blocked_cards_filter`]: its first eight
/// bytes, mixed, pick one of 64.
pub(crate) fn card_filter_bit(token: &CardToken) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&token.0[..8]);
    let mixed = u64::from_le_bytes(word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    1 << (mixed >> 58)
}

/// A merchant id as a map key: its bytes, zero-padded, and its length in
/// the last byte; `None` if longer than the contract allows.
pub(crate) fn pack_merchant(merchant_id: &str) -> Option<u128> {
    let bytes = merchant_id.as_bytes();
    if bytes.len() > key::MERCHANT_ID_BYTES_MAX {
        return None;
    }
    let mut packed = [0u8; 16];
    packed[..bytes.len()].copy_from_slice(bytes);
    packed[15] = bytes.len() as u8;
    Some(u128::from_le_bytes(packed))
}

/// A terminal id as a map key; `None` if longer than the contract allows.
pub(crate) fn pack_terminal(terminal_id: &str) -> Option<u64> {
    let bytes = terminal_id.as_bytes();
    if bytes.len() > key::TERMINAL_ID_BYTES_MAX {
        return None;
    }
    // Eight bytes leave no room for a length; ids are printable, never NUL,
    // so zero padding cannot make two ids equal.
    let mut packed = [0u8; 8];
    packed[..bytes.len()].copy_from_slice(bytes);
    Some(u64::from_le_bytes(packed))
}
