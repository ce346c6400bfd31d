//! The holds the timers end: an ordered set by due time, fed from the
//! state's queue of new holds. A set, not a heap, so a hold whose payment
//! leaves memory for the archive (under pressure) leaves it too: the set
//! holds only the holds of payments in memory, and the archive's open
//! holds are ended through [`crate::Command::EndHolds`].

use std::collections::BTreeSet;

use crate::state::Hold;

/// Most holds taken from the queue, and ended, per timer pass.
pub(crate) const HOLDS_PER_PASS_MAX: usize = 100_000;

/// Holds ordered by due time.
#[derive(Default)]
pub(crate) struct Holds {
    /// (due, payment), earliest first.
    pub(crate) due: BTreeSet<(u64, u64)>,
    /// Scratch for draining the state's queue.
    pub(crate) incoming: Vec<Hold>,
}
