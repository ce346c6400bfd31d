//! The holds the timers end: a min-heap by due time, fed from the state's
//! queue of new holds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::state::Hold;

/// Most holds taken from the queue, and ended, per timer pass.
pub(crate) const HOLDS_PER_PASS_MAX: usize = 100_000;

/// Holds ordered by due time.
#[derive(Default)]
pub(crate) struct Holds {
    /// Min-heap of (due, payment).
    pub(crate) due: BinaryHeap<Reverse<(u64, u64)>>,
    /// Scratch for draining the state's queue.
    pub(crate) incoming: Vec<Hold>,
}
