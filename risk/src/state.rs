//! The state risk keeps between evaluations: velocity counters and the
//! watch list. Independent of the policy, so a policy reload keeps it.

use crate::context::CardToken;
use crate::error::{CheckpointError, WatchListFull};
use crate::key::{Key, Subject};
use crate::metrics::{DecisionMetrics, TableName};
use crate::velocity::Table;

/// Default most card keys tracked (a card's count key, plus one per
/// currency with an amount limit, plus its MO/TO keys). 280 bytes each
/// written at start-up (slot, probe entry and older periods' counts),
/// plus 416 reserved for amounts and committed only once a policy limits
/// amounts.
pub const VELOCITY_CARD_KEYS_MAX: usize = 65_536;
/// Default most terminal keys tracked.
pub const VELOCITY_TERMINAL_KEYS_MAX: usize = 16_384;
/// Default most cards on the watch list.
pub const WATCH_LIST_MAX: usize = 65_536;

/// How much state to reserve; see the constants for the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Most card velocity keys; beyond, a key evicts the least recently
    /// seen of the 8 slots it may occupy.
    pub card_keys_max: usize,
    /// Most terminal velocity keys; evicted as for cards.
    pub terminal_keys_max: usize,
    /// Most watch-listed cards; adding beyond is refused.
    pub watch_list_max: usize,
}

impl Default for Capacity {
    fn default() -> Capacity {
        Capacity {
            card_keys_max: VELOCITY_CARD_KEYS_MAX,
            terminal_keys_max: VELOCITY_TERMINAL_KEYS_MAX,
            watch_list_max: WATCH_LIST_MAX,
        }
    }
}

/// Velocity counters and the watch list, shared by all connections
/// (`Arc<RiskState>`, or a plain reference: every method takes `&self`).
pub struct RiskState {
    /// Card count and amount keys, and the watch list.
    pub(crate) cards: Table,
    /// Terminal count and amount keys.
    pub(crate) terminals: Table,
    /// Decision counters, registered when the state is made.
    pub(crate) decisions: DecisionMetrics,
}

impl RiskState {
    /// State with the default capacity.
    pub fn new() -> RiskState {
        RiskState::with_capacity(Capacity::default())
    }

    /// State with the given capacity, all reserved now so evaluation never
    /// allocates.
    ///
    /// # Panics
    /// If a key capacity is 0.
    pub fn with_capacity(capacity: Capacity) -> RiskState {
        RiskState {
            cards: Table::new(
                TableName::Card,
                capacity.card_keys_max,
                capacity.watch_list_max,
            ),
            terminals: Table::new(TableName::Terminal, capacity.terminal_keys_max, 0),
            decisions: DecisionMetrics::new(),
        }
    }

    /// Puts a card on the watch list (a payment was marked scam by hand):
    /// its later attempts score the policy's `watch_list_score` more.
    /// `Ok(false)` if it already was; each call is one holder, so call it
    /// once per payment flagged. The list survives policy reloads and
    /// velocity eviction; it is not persisted, so the switch re-adds marked
    /// cards from its journal at start-up.
    ///
    /// # Errors
    /// [`WatchListFull`] when the list holds `watch_list_max` cards.
    pub fn add_to_watch_list(&self, token: CardToken) -> Result<bool, WatchListFull> {
        self.cards.mark(&Key::card(token, Subject::Card, 0))
    }

    /// One flagged payment of the card lets go of its place on the watch
    /// list (its scam flag was taken off): the card leaves the list when
    /// no other flagged payment holds it (each [`RiskState::add_to_watch_list`]
    /// is one holder). Returns whether it left the list now.
    pub fn remove_from_watch_list(&self, token: CardToken) -> bool {
        self.cards.unmark(&Key::card(token, Subject::Card, 0))
    }

    /// Takes the cards `keep` takes (by token) off the watch list,
    /// whatever holds them, before their watch records are replayed from
    /// elsewhere (a takeover of their card shard, cluster mode). How many.
    pub fn forget_watches(&self, keep: &dyn Fn(&[u8; 32]) -> bool) -> usize {
        self.cards.unmark_where(keep)
    }

    /// Whether a card is on the watch list.
    pub fn is_watched(&self, token: CardToken) -> bool {
        self.cards.is_marked(&Key::card(token, Subject::Card, 0))
    }

    /// Appends the card velocity keys of the cards `keep` takes (by
    /// token) to `out`, each with its whole state: a checkpoint that
    /// [`RiskState::import_cards`] sets again exactly (the watch list is
    /// not in it). Returns how many keys.
    pub fn export_cards(&self, keep: &dyn Fn(&[u8; 32]) -> bool, out: &mut Vec<u8>) -> usize {
        self.cards.export_where(keep, out)
    }

    /// Sets the card keys of a checkpoint ([`RiskState::export_cards`]'s
    /// bytes) to their state there, whatever was counted here before; other
    /// keys are untouched, and nothing is set unless all of it decodes.
    /// Returns how many keys.
    ///
    /// # Errors
    /// [`CheckpointError`] for bytes that are not such a checkpoint.
    pub fn import_cards(&self, bytes: &[u8]) -> Result<usize, CheckpointError> {
        self.cards.import(bytes)
    }

    /// Forgets what was counted for the cards `keep` takes (by token), so
    /// a checkpoint and the attempts after it set their counts exactly.
    /// Returns how many keys.
    pub fn reset_cards(&self, keep: &dyn Fn(&[u8; 32]) -> bool) -> usize {
        self.cards.reset_where(keep)
    }

    /// Velocity keys tracked now (cards and terminals).
    pub fn velocity_keys(&self) -> usize {
        self.cards.len() + self.terminals.len()
    }

    /// Velocity keys evicted since start because their neighbourhood was full.
    pub fn velocity_evictions(&self) -> u64 {
        self.cards.evictions() + self.terminals.evictions()
    }
}

impl Default for RiskState {
    fn default() -> RiskState {
        RiskState::new()
    }
}
