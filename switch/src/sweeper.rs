//! Background upkeep on the switch's clock: ends holds (expiry or
//! auto-capture), ages out idempotency entries, retires old payments and
//! refreshes gauges. Each pass is bounded; tests drive it with a manual clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::engine::Engine;
use crate::journal_stage::Change;
use crate::state::Hold;

/// Most holds taken from the queue per pass.
const HOLDS_PER_PASS_MAX: usize = 100_000;

/// Holds ordered by due time, owned by the sweeper task.
#[derive(Default)]
pub(crate) struct Sweeper {
    /// Min-heap of (due, payment).
    due: BinaryHeap<Reverse<(u64, u64)>>,
    /// Scratch for draining the state's queue.
    incoming: Vec<Hold>,
    /// Passes made, to run the full walks only every so often.
    passes: u64,
}

/// Retiring old payments is checked every 600th pass (1 min); once one is
/// old enough, it walks every payment (and index entry, if some went).
const RETIRE_EVERY_PASSES: u64 = 600;

impl Sweeper {
    /// One pass at `now_ms`; returns how many holds ended.
    pub(crate) fn pass(&mut self, engine: &Engine, now_ms: u64, window_ms: u64) -> usize {
        engine
            .state
            .drain_new_holds(&mut self.incoming, HOLDS_PER_PASS_MAX);
        for h in self.incoming.drain(..) {
            self.due.push(Reverse((h.due_ms, h.payment)));
        }
        let mut ended = 0;
        while let Some(&Reverse((due, id))) = self.due.peek() {
            if due > now_ms || ended == HOLDS_PER_PASS_MAX {
                break;
            }
            self.due.pop();
            let _epoch = engine.epochs.enter();
            let changed = engine.state.with_payment(id, |p| {
                let auto = engine
                    .merchants
                    .get(p.merchant as usize)
                    .is_some_and(|m| m.auto_capture_ms.is_some());
                let changed = p.end_hold(auto, now_ms);
                if changed {
                    // Holds end whatever the journal says; a failed journal
                    // is reported by /readyz and its own metrics.
                    let _ = engine.journal.record(&Change::Updated(p), false);
                }
                changed
            });
            if changed == Some(true) {
                ended += 1;
            }
        }
        engine.idempotency.rotate_if_due(now_ms, window_ms);
        ended
    }

    /// Whether this pass also retires old payments (every
    /// [`RETIRE_EVERY_PASSES`]th, the first included); the caller runs
    /// [`crate::state::State::retire`] off the runtime's workers, as it may
    /// walk the whole state.
    pub(crate) fn retire_due(&mut self) -> bool {
        let due = self.passes % RETIRE_EVERY_PASSES == 0;
        self.passes += 1;
        due
    }
}
