//! The timers, driven by [`crate::Command::Tick`] at the shell's clock:
//! end holds (expiry or auto-capture) and age out idempotency entries.
//! Each pass is bounded; tests drive it with a manual clock.

use crate::code::Code;
use crate::command::{Op, Reply};
use crate::commit::{self, ChangeParts};
use crate::engine::Engine;
use crate::holds::HOLDS_PER_PASS_MAX;

/// A hold whose end the journal refused (a full disk; in cluster mode, its
/// shard not served here or PostgreSQL reconnecting) is not ended: it is
/// tried again this long after.
pub const HOLD_RETRY_MS: u64 = 1_000;

/// What [`Engine::end_hold`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HoldEnd {
    /// Captured in full or expired, and journaled.
    Ended,
    /// Not due (an incremental authorization restarted it), or no longer
    /// held (captured, reversed, gone from memory).
    Left,
    /// The journal refused the record: the payment is as it was.
    Refused,
}

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
            let (mut ended, mut tried, mut refused) = (0, 0, Vec::new());
            while let Some(&(due_ms, id)) = due.first() {
                if due_ms > now_ms || tried == HOLDS_PER_PASS_MAX {
                    break;
                }
                due.pop_first();
                tried += 1;
                match self.end_hold(id, now_ms) {
                    HoldEnd::Ended => ended += 1,
                    HoldEnd::Left => {}
                    HoldEnd::Refused => refused.push(id),
                }
            }
            if !refused.is_empty() {
                metrics::counter!("switch_hold_ends_refused_total").increment(refused.len() as u64);
            }
            for id in refused {
                due.insert((now_ms + HOLD_RETRY_MS, id));
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
            match self.end_hold(p.id, now_ms) {
                HoldEnd::Ended => ended += 1,
                HoldEnd::Left => {}
                // Still open in the archive and back in memory: the timers
                // try it again.
                HoldEnd::Refused => self.state.queue_hold(crate::state::Hold {
                    due_ms: now_ms + HOLD_RETRY_MS,
                    payment: p.id,
                }),
            }
        }
        Reply {
            count: ended,
            ..Reply::of(Code::APPROVED, [b'0'; 12])
        }
    }

    /// Ends payment `id`'s hold if it is still held: captured in full when
    /// its merchant auto-captures, else expired. A hold ends only once its
    /// record is journaled: when the journal refuses it, the payment is put
    /// back as it was and no issuer advice is queued
    /// ([`HoldEnd::Refused`], tried again after [`HOLD_RETRY_MS`]). In
    /// cluster mode that keeps memory from running ahead of PostgreSQL: a
    /// hold of a shard another node serves is ended there, and one ended
    /// while PostgreSQL reconnects is ended on the next try.
    fn end_hold(&self, id: u64, now_ms: u64) -> HoldEnd {
        let _epoch = self.epochs.enter();
        let journal = &*self.journal;
        let mut advice = None;
        let outcome = self.state.with_payment(id, |p| {
            let dir = self.dir();
            let Some(m) = dir.merchant(p.merchant) else {
                return HoldEnd::Left;
            };
            let (due_ms, auto) = m.hold_end(p.hold_from_ms());
            // An incremental authorization restarted the hold since this
            // due time was queued: its own entry ends it later. A hold not
            // restarted ends when its entry says, whatever its merchant's
            // hold period became since (holds keep the end they were
            // given).
            if p.more.hold_from_ms.is_some() && due_ms > now_ms {
                return HoldEnd::Left;
            }
            // What is still held: partial captures stand.
            let rest = p.authorized_minor.saturating_sub(p.captured_minor);
            let before = p.clone();
            if !p.end_hold(auto, now_ms) {
                return HoldEnd::Left;
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
                HoldEnd::Ended
            } else {
                *p = before;
                advice = None;
                HoldEnd::Refused
            }
        });
        if let Some(e) = advice {
            let _ = self.queue_saf(e, true);
        }
        outcome.unwrap_or(HoldEnd::Left)
    }
}
