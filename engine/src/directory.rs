//! The merchants and terminals the engine serves, as one value the shell
//! replaces on a running engine ([`crate::Engine::replace_directory`]):
//! terminals and merchants are added, disabled and changed without a
//! restart. Each message reads the directory once through an `ArcSwap`
//! (no lock, no reference count in the common case); a replacement is a
//! pointer swap, and messages already reading the old one finish with it.
//!
//! A merchant's index is stored in its payments, so a directory may only
//! grow: a replacement keeps every merchant at its index, with its F42
//! ([`Directory::follows`]). A merchant that goes is disabled, never
//! removed; a terminal that goes is kept as [`TerminalState::Removed`],
//! so its reversals still find their merchant.

use std::collections::HashMap;

use crate::merchant::Merchant;
use crate::state::MapHasher;

/// Most merchants, configured and added at run time together (the same
/// bound as the configuration's; indexes are `u32` in payments).
pub const MERCHANTS_MAX: usize = 10_000;
/// Most terminals of one merchant, removed ones included.
pub const TERMINALS_PER_MERCHANT_MAX: usize = 100_000;

// Merchant indexes are stored as u32.
const _: () = assert!(MERCHANTS_MAX <= u32::MAX as usize);

/// Whether a terminal may transact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TerminalState {
    /// Transacts.
    Enabled,
    /// Its authorizations, sales, refunds and captures get 58; its
    /// reversals are processed.
    Disabled,
    /// As disabled; kept so its reversals still find their merchant.
    Removed,
}

/// A terminal (F41) and what it may do; `None` settings inherit the
/// merchant's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terminal {
    /// F41.
    pub id: [u8; 8],
    /// Its merchant's index.
    pub merchant: u32,
    /// Whether it may transact.
    pub state: TerminalState,
    /// Refunds allowed; `None`: the merchant's `refunds_allowed`.
    pub refunds: Option<bool>,
    /// MO/TO allowed; `None`: the merchant's `moto_allowed`.
    pub moto: Option<bool>,
    /// Cancels over internal frames allowed; `None`: allowed (merchants
    /// have no such setting). ISO 8583 reversals only release money and
    /// are always processed.
    pub cancel: Option<bool>,
}

impl Terminal {
    /// An enabled terminal of merchant `merchant` that inherits every
    /// setting.
    pub fn enabled(id: [u8; 8], merchant: u32) -> Terminal {
        Terminal {
            id,
            merchant,
            state: TerminalState::Enabled,
            refunds: None,
            moto: None,
            cancel: None,
        }
    }

    /// Whether it may start or change payments (reversals aside).
    pub fn transacts(&self) -> bool {
        self.state == TerminalState::Enabled
    }
}

/// Why a directory was refused: the old one stays.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Over [`MERCHANTS_MAX`].
    #[error("{0} merchants, over the limit of {MERCHANTS_MAX}")]
    TooManyMerchants(usize),
    /// Over [`TERMINALS_PER_MERCHANT_MAX`].
    #[error("merchant `{0}` has more than {TERMINALS_PER_MERCHANT_MAX} terminals")]
    TooManyTerminals(String),
    /// Two merchants with one F42.
    #[error("merchant `{0}` appears twice")]
    MerchantTwice(String),
    /// One F41 given to two merchants.
    #[error("terminal `{0}` belongs to two merchants")]
    TerminalTwice(String),
    /// A terminal of a merchant index that does not exist.
    #[error("terminal `{terminal}` names merchant index {merchant}, which does not exist")]
    NoSuchMerchant {
        /// F41.
        terminal: String,
        /// The index it names.
        merchant: u32,
    },
    /// A merchant index that now names another merchant.
    #[error("merchant index {index} was `{was}` and would become `{now}`; indexes are stored in payments and never change")]
    Reordered {
        /// The index.
        index: u32,
        /// F42 before.
        was: String,
        /// F42 offered.
        now: String,
    },
    /// Fewer merchants than before.
    #[error(
        "{now} merchants offered, {was} already indexed; a merchant is disabled, never removed"
    )]
    Shrunk {
        /// Merchants before.
        was: usize,
        /// Merchants offered.
        now: usize,
    },
}

/// What the directory names as text in errors.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The merchants by index and the terminals by F41.
#[derive(Debug, Default)]
pub struct Directory {
    /// Merchants by index.
    merchants: Vec<Merchant>,
    /// F42 → merchant index (foldhash: SipHash was 3% of a message's
    /// instructions for these two lookups).
    by_id: HashMap<[u8; 15], u32, MapHasher>,
    /// F41 → terminal.
    terminals: HashMap<[u8; 8], Terminal, MapHasher>,
}

impl Directory {
    /// `merchants` by index, with the terminals each lists (enabled,
    /// inheriting), then `terminals`, which add terminals or replace a
    /// listed one's settings (same merchant).
    ///
    /// # Errors
    /// Over a limit, an F42 twice, an F41 of two merchants, a terminal of
    /// a merchant that does not exist.
    pub fn new(merchants: Vec<Merchant>, terminals: &[Terminal]) -> Result<Self, DirectoryError> {
        if merchants.len() > MERCHANTS_MAX {
            return Err(DirectoryError::TooManyMerchants(merchants.len()));
        }
        let mut by_id = HashMap::with_capacity_and_hasher(merchants.len(), MapHasher::default());
        let mut map = HashMap::with_hasher(MapHasher::default());
        let mut per_merchant = vec![0usize; merchants.len()];
        for (i, m) in merchants.iter().enumerate() {
            if by_id.insert(m.id, i as u32).is_some() {
                return Err(DirectoryError::MerchantTwice(text(&m.id)));
            }
            for t in &m.terminals {
                if map.insert(*t, Terminal::enabled(*t, i as u32)).is_some() {
                    return Err(DirectoryError::TerminalTwice(text(t)));
                }
                per_merchant[i] += 1;
            }
        }
        for t in terminals {
            let Some(count) = per_merchant.get_mut(t.merchant as usize) else {
                return Err(DirectoryError::NoSuchMerchant {
                    terminal: text(&t.id),
                    merchant: t.merchant,
                });
            };
            match map.insert(t.id, *t) {
                Some(listed) if listed.merchant != t.merchant => {
                    return Err(DirectoryError::TerminalTwice(text(&t.id)));
                }
                Some(_) => {}
                None => *count += 1,
            }
        }
        if let Some(i) = per_merchant
            .iter()
            .position(|&n| n > TERMINALS_PER_MERCHANT_MAX)
        {
            return Err(DirectoryError::TooManyTerminals(text(&merchants[i].id)));
        }
        Ok(Directory {
            merchants,
            by_id,
            terminals: map,
        })
    }

    /// Whether it may replace `old`: every merchant of `old` at its index.
    ///
    /// # Errors
    /// Fewer merchants, or an index naming another F42.
    pub fn follows(&self, old: &Directory) -> Result<(), DirectoryError> {
        if self.merchants.len() < old.merchants.len() {
            return Err(DirectoryError::Shrunk {
                was: old.merchants.len(),
                now: self.merchants.len(),
            });
        }
        for (i, (was, now)) in old.merchants.iter().zip(&self.merchants).enumerate() {
            if was.id != now.id {
                return Err(DirectoryError::Reordered {
                    index: i as u32,
                    was: text(&was.id),
                    now: text(&now.id),
                });
            }
        }
        Ok(())
    }

    /// Every merchant, by index.
    pub fn merchants(&self) -> &[Merchant] {
        &self.merchants
    }

    /// The merchant at `index`.
    pub fn merchant(&self, index: u32) -> Option<&Merchant> {
        self.merchants.get(index as usize)
    }

    /// The index of the merchant with F42 `mid`.
    pub fn merchant_index(&self, mid: &[u8; 15]) -> Option<u32> {
        self.by_id.get(mid).copied()
    }

    /// Terminal `tid`, whatever its state.
    pub fn terminal(&self, tid: &[u8; 8]) -> Option<&Terminal> {
        self.terminals.get(tid)
    }

    /// How many terminals, removed ones included.
    pub fn terminals_len(&self) -> usize {
        self.terminals.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant(id: &[u8; 15], terminals: Vec<[u8; 8]>) -> Merchant {
        crate::testing::merchant(id, terminals, vec![978], 0, true)
    }

    #[test]
    fn listed_terminals_are_enabled_and_settings_replace_them() {
        let off = Terminal {
            state: TerminalState::Disabled,
            refunds: Some(false),
            ..Terminal::enabled(*b"TERM0001", 0)
        };
        let added = Terminal::enabled(*b"TERM0003", 1);
        let d = Directory::new(
            vec![
                merchant(b"MERCHANT0000001", vec![*b"TERM0001", *b"TERM0002"]),
                merchant(b"MERCHANT0000002", vec![]),
            ],
            &[off, added],
        )
        .expect("valid");
        assert_eq!(d.terminal(b"TERM0001"), Some(&off));
        assert!(d.terminal(b"TERM0002").is_some_and(Terminal::transacts));
        assert_eq!(d.terminal(b"TERM0003").map(|t| t.merchant), Some(1));
        assert_eq!(d.merchant_index(b"MERCHANT0000002"), Some(1));
        assert_eq!(d.terminals_len(), 3);
    }

    #[test]
    fn a_terminal_of_two_merchants_or_of_none_is_refused() {
        let ms = || {
            vec![
                merchant(b"MERCHANT0000001", vec![*b"TERM0001"]),
                merchant(b"MERCHANT0000002", vec![]),
            ]
        };
        let moved = Terminal::enabled(*b"TERM0001", 1);
        assert_eq!(
            Directory::new(ms(), &[moved]).err(),
            Some(DirectoryError::TerminalTwice("TERM0001".into()))
        );
        let orphan = Terminal::enabled(*b"TERM0009", 7);
        assert!(matches!(
            Directory::new(ms(), &[orphan]),
            Err(DirectoryError::NoSuchMerchant { merchant: 7, .. })
        ));
        let twice = vec![
            merchant(b"MERCHANT0000001", vec![]),
            merchant(b"MERCHANT0000001", vec![]),
        ];
        assert!(matches!(
            Directory::new(twice, &[]),
            Err(DirectoryError::MerchantTwice(_))
        ));
    }

    #[test]
    fn a_replacement_keeps_every_index() {
        let a = merchant(b"MERCHANT0000001", vec![]);
        let b = merchant(b"MERCHANT0000002", vec![]);
        let old = Directory::new(vec![a.clone(), b.clone()], &[]).expect("valid");
        let grown = Directory::new(
            vec![a.clone(), b.clone(), merchant(b"MERCHANT0000003", vec![])],
            &[],
        )
        .expect("valid");
        assert_eq!(grown.follows(&old), Ok(()));
        let swapped = Directory::new(vec![b, a.clone()], &[]).expect("valid");
        assert!(matches!(
            swapped.follows(&old),
            Err(DirectoryError::Reordered { index: 0, .. })
        ));
        let shrunk = Directory::new(vec![a], &[]).expect("valid");
        assert_eq!(
            shrunk.follows(&old),
            Err(DirectoryError::Shrunk { was: 2, now: 1 })
        );
    }
}
