//! The timers, driven by [`crate::Command::Tick`] at the shell's clock:
//! end holds (expiry or auto-capture) and age out idempotency entries.
//! Each pass is bounded; tests drive it with a manual clock.

use crate::code::Code;
use crate::command::{Op, Reply};
use crate::commit::{self, ChangeParts};
use crate::engine::Engine;
use crate::holds::HOLDS_PER_PASS_MAX;

impl Engine {
    /// One pass at `now_ms`: ends the holds due (at most
    /// [`HOLDS_PER_PASS_MAX`]) and lets old answers go once the archive
    /// holds them (`archived_seq`); the reply counts the holds ended.
    pub(crate) fn tick(&self, now_ms: u64, archived_seq: u64) -> Reply {
        let ended = self.with_timers(|t| {
            let (due, incoming) = (&mut t.due, &mut t.incoming);
            self.state.drain_new_holds(incoming, HOLDS_PER_PASS_MAX);
            for h in incoming.drain(..) {
                due.insert((h.due_ms, h.payment));
            }
            let mut ended = 0;
            while let Some(&(due_ms, id)) = due.first() {
                if due_ms > now_ms || ended == HOLDS_PER_PASS_MAX {
                    break;
                }
                due.pop_first();
                if self.end_hold(id, now_ms) {
                    ended += 1;
                }
            }
            ended
        });
        self.idempotency
            .rotate_if_due(now_ms, self.idempotency_window_ms, archived_seq);
        Reply {
            count: ended,
            ..Reply::of(Code::APPROVED, [b'0'; 12])
        }
    }

    /// Ends the holds of `payments`, open pre-authorizations the archive
    /// holds whose hold has ended (memory let them go): each is brought
    /// back into memory (unless memory has it, or is full) and its hold
    /// ended as the timers would. The reply counts the holds ended.
    pub(crate) fn end_archived_holds(
        &self,
        payments: &[crate::lifecycle::Payment],
        now_ms: u64,
    ) -> Reply {
        let mut ended = 0;
        let dir = self.dir();
        for p in payments {
            let Some(m) = dir.merchant(p.merchant) else {
                continue;
            };
            if m.hold_end(p.hold_from_ms()).0 > now_ms
                || p.status != crate::lifecycle::Status::Uncaptured
            {
                continue;
            }
            if self.state.bring_back(p.clone()).is_err() {
                break;
            }
            if self.end_hold(p.id, now_ms) {
                ended += 1;
            }
        }
        Reply {
            count: ended,
            ..Reply::of(Code::APPROVED, [b'0'; 12])
        }
    }

    /// Ends payment `id`'s hold if it is still held: captured in full when
    /// its merchant auto-captures, else expired. Holds end whatever the
    /// journal says (a failed journal is reported by the shell's health
    /// check and its own metrics), so the change is kept even when its
    /// record is refused.
    fn end_hold(&self, id: u64, now_ms: u64) -> bool {
        let _epoch = self.epochs.enter();
        let journal = &*self.journal;
        let mut advice = None;
        let changed = self.state.with_payment(id, |p| {
            let dir = self.dir();
            let Some(m) = dir.merchant(p.merchant) else {
                return false;
            };
            let (due_ms, auto) = m.hold_end(p.hold_from_ms());
            // An incremental authorization restarted the hold since this
            // due time was queued: its own entry ends it later. A hold not
            // restarted ends when its entry says, whatever its merchant's
            // hold period became since (holds keep the end they were
            // given).
            if p.more.hold_from_ms.is_some() && due_ms > now_ms {
                return false;
            }
            // What is still held: partial captures stand.
            let rest = p.authorized_minor.saturating_sub(p.captured_minor);
            if !p.end_hold(auto, now_ms) {
                return false;
            }
            // An issuer holds it too: told of the capture (0220) or of
            // the hold's end (0420) through the SAF.
            advice = if auto {
                self.saf_of_follow_up(p, Op::Capture, rest, None, now_ms)
            } else {
                self.saf_of_follow_up(p, Op::Reversal, rest, None, now_ms)
            };
            let change = ChangeParts::default().into_change(p);
            if let Ok(r) = commit::record(journal, &change, false) {
                p.journal_seq = r.seq;
            }
            true
        });
        if let Some(e) = advice {
            let _ = self.queue_saf(e, true);
        }
        changed == Some(true)
    }
}
