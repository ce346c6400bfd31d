//! Recovery and snapshots: journal records and snapshots replayed into the
//! state at start, and the state written as a snapshot. The shell reads
//! and writes the files; the engine only turns bytes into state and back.

use crate::engine::Engine;
use crate::record::{self, DecodeError};

/// Why a recovered item could not be applied: recovery stops there.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A payload that does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A record of a type this version does not know.
    #[error("record {seq} has unknown type {record_type}")]
    UnknownType {
        /// The record's sequence.
        seq: u64,
        /// Its type.
        record_type: u8,
    },
}

/// The record types this version writes: payments, upstream tables,
/// counted card attempts, velocity checkpoints and their begin marks
/// (cluster mode).
///
/// # Errors
/// [`ReplayError::UnknownType`] for any other.
fn known_record(seq: u64, record_type: u8) -> Result<(), ReplayError> {
    if record_type == record::RECORD_PAYMENT
        || record_type == crate::upstream::RECORD_UPSTREAM
        || record_type == crate::velocity::RECORD_VELOCITY
        || record_type == crate::velocity::RECORD_VELOCITY_CHECKPOINT
        || record_type == crate::velocity::RECORD_VELOCITY_CHECKPOINT_BEGIN
        || record_type == crate::velocity::RECORD_WATCH
    {
        Ok(())
    } else {
        Err(ReplayError::UnknownType { seq, record_type })
    }
}

impl Engine {
    /// Applies a recovered snapshot, covering journal records up to `seq`,
    /// to the state.
    ///
    /// # Errors
    /// When the snapshot does not decode.
    pub fn replay_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), ReplayError> {
        let s = record::decode_snapshot(bytes)?;
        for mut p in s.payments {
            // Its last change is at or below `seq`; a later one is replayed
            // after and sets its own.
            p.journal_seq = seq;
            self.state.restore(p);
        }
        for (k, t) in s.index {
            self.state.index(k, t);
        }
        for (k, a) in s.answers {
            self.idempotency.store(k, a);
        }
        for p in s.forwards {
            self.upstream.add_forward(p);
        }
        for e in s.saf {
            self.upstream.add_saf(e);
        }
        Ok(())
    }

    /// Applies recovered record `seq` of `record_type` to the state.
    ///
    /// # Errors
    /// When the record's type is unknown or its payload does not decode.
    pub fn replay_record(
        &self,
        seq: u64,
        record_type: u8,
        payload: &[u8],
    ) -> Result<(), ReplayError> {
        known_record(seq, record_type)?;
        if record_type == crate::upstream::RECORD_UPSTREAM {
            self.replay_upstream(crate::upstream::decode(payload)?);
            return Ok(());
        }
        if record_type == crate::velocity::RECORD_VELOCITY {
            let (ask, at_ms, recorded) = crate::velocity::decode_record(payload)
                .ok_or(DecodeError("velocity record: length or byte"))?;
            self.replay_velocity(&ask, at_ms, recorded);
            return Ok(());
        }
        if record_type == crate::velocity::RECORD_VELOCITY_CHECKPOINT {
            self.replay_velocity_checkpoint(payload)
                .map_err(DecodeError)?;
            return Ok(());
        }
        if record_type == crate::velocity::RECORD_VELOCITY_CHECKPOINT_BEGIN {
            // A mark for the load's choice of rows: nothing to set.
            return Ok(());
        }
        if record_type == crate::velocity::RECORD_WATCH {
            let (token, on) = crate::velocity::decode_watch(payload)
                .ok_or(DecodeError("watch record: length or byte"))?;
            self.replay_watch(&token, on);
            return Ok(());
        }
        let mut rec = record::decode(payload)?;
        rec.payment.journal_seq = seq;
        if let Some(f) = &rec.payment.upstream {
            // The issuer's answer is journaled: its forward has ended.
            self.upstream.take_forward(f.forward);
        }
        self.state.restore(rec.payment);
        if let Some((k, t)) = rec.index {
            self.state.index(k, t);
        }
        if let Some((k, a)) = rec.answer {
            self.idempotency.store(k, a);
        }
        Ok(())
    }

    /// Recovered record `seq` that the archive already holds (at or below
    /// its watermark): not put in memory, which the archive answers for
    /// (lookups, open holds), unless memory holds its payment (from the
    /// snapshot), which it then brings up to date; else only its payment
    /// id is kept from reuse. With
    /// [`Engine::assume_answers_archived_through`] and
    /// [`Engine::reserve_ids_through`], recovery then costs what the
    /// archive does not hold yet, and memory stays within its limit.
    ///
    /// # Errors
    /// When the record's type is unknown or its payload does not decode.
    pub fn replay_archived_record(
        &self,
        seq: u64,
        record_type: u8,
        payload: &[u8],
    ) -> Result<(), ReplayError> {
        known_record(seq, record_type)?;
        if record_type == crate::upstream::RECORD_UPSTREAM
            || record_type == crate::velocity::RECORD_VELOCITY
            || record_type == crate::velocity::RECORD_VELOCITY_CHECKPOINT
            || record_type == crate::velocity::RECORD_VELOCITY_CHECKPOINT_BEGIN
            || record_type == crate::velocity::RECORD_WATCH
        {
            return self.replay_record(seq, record_type, payload);
        }
        if let Some(forward) = record::forward_id(payload)? {
            self.upstream.take_forward(forward);
        }
        let id = record::payment_id(payload)?;
        if self.state.contains(id) {
            return self.replay_record(seq, record_type, payload);
        }
        self.state.bump_id(id);
        Ok(())
    }

    /// After recovery: payment ids allocated from now on are above `id`,
    /// the archive's highest ([`Engine::replay_snapshot`] and
    /// [`Engine::replay_record`] only see the payments memory still holds;
    /// one it let go may have the highest id).
    pub fn reserve_ids_through(&self, id: u64) {
        self.state.bump_id(id);
    }

    /// Cluster mode: payment ids come only from the blocks given by
    /// [`Engine::reserve_ids_through`]; an id seen in a replayed record
    /// or a payment read back from the archive (perhaps another node's,
    /// in that node's block) no longer moves the next id.
    pub fn take_ids_from_blocks(&self) {
        self.state.take_ids_from_blocks();
    }

    /// After recovery beside an archive that holds payments: answers that
    /// left memory in an earlier life may be there, so a repeat whose F7
    /// is at or before `now_ms` asks it (the summary of what left memory
    /// starts empty; without this such a repeat was taken for a new
    /// message and approved again).
    pub fn assume_answers_archived_through(&self, now_ms: u64) {
        self.idempotency.assume_left_through(now_ms);
    }

    /// After recovery: queue the holds of uncaptured payments for the timers.
    pub fn requeue_holds(&self) {
        let dir = self.dir();
        self.state.requeue_holds(|p| {
            dir.merchant(p.merchant)
                .map_or(p.created_ms, |m| m.hold_end(p.hold_from_ms()).0)
        });
    }

    /// After payments were loaded by [`Engine::replay_record`] while the
    /// engine runs (cluster mode's takeover of a shard): queue the holds of
    /// those of `payments` that are uncaptured, as [`Engine::requeue_holds`]
    /// does for all of them after recovery. A hold queued twice ends once.
    pub fn requeue_holds_of(&self, payments: impl IntoIterator<Item = u64>) {
        let dir = self.dir();
        for id in payments {
            let due = self.state.with_payment(id, |p| {
                (p.status == crate::lifecycle::Status::Uncaptured).then(|| {
                    dir.merchant(p.merchant)
                        .map_or(p.created_ms, |m| m.hold_end(p.hold_from_ms()).0)
                })
            });
            if let Some(Some(due_ms)) = due {
                self.state.queue_hold(crate::state::Hold {
                    due_ms,
                    payment: id,
                });
            }
        }
    }

    /// Lets every payment of the merchants (by index) `of` says go from
    /// memory, whatever its state: cluster mode, before a node loads a
    /// shard it served before, so that no copy older than the archive's
    /// (another node changed it meanwhile) outlives the load. Returns how
    /// many.
    pub fn forget_payments_of(&self, of: impl Fn(u32) -> bool) -> usize {
        self.state.forget_where(of)
    }

    /// After recovery: the risk watch list again, from the payments in
    /// memory marked as scam by hand (flag rule `manual`) and not unmarked:
    /// one hold of its card per such payment, as when they were marked.
    /// Returns how many. (Payments that left memory for the archive before
    /// the restart are not read: their cards are watched again only when
    /// marked again; docs/internal-api.md says so.)
    pub fn rewatch_flagged(&self) -> usize {
        let mut n = 0;
        self.state.for_each(|p| {
            if p.scam && p.flag_reasons.split(',').any(|r| r == "manual") {
                self.risk.watch(&p.card_token);
                n += 1;
            }
        });
        n
    }

    /// Starts a snapshot: flips the epoch and returns the old one. Every
    /// change journaled before the flip is in memory once
    /// [`Engine::epoch_drained`] says so.
    pub fn flip_epoch(&self) -> usize {
        self.epochs.flip()
    }

    /// Whether every change of epoch `old` has finished.
    pub fn epoch_drained(&self, old: usize) -> bool {
        self.epochs.drained(old)
    }

    /// Every payment in memory as a journal record, then every index entry
    /// with its payment, each under the payment's last journal sequence:
    /// for an archive that lacks records a snapshot covers (a new archive
    /// beside an old journal). Calls `f(seq, payload)`.
    pub fn export_records(&self, mut f: impl FnMut(u64, &[u8])) {
        let mut buf = Vec::with_capacity(512);
        self.state.for_each(|p| {
            let rec = record::PaymentRecordRef {
                payment: p,
                index: None,
                answer: None,
            };
            record::encode(&rec, &mut buf);
            f(p.journal_seq, &buf);
        });
        self.state.for_each_index(|k, t| {
            if let Some(p) = self.state.get(t.payment) {
                let rec = record::PaymentRecordRef {
                    payment: &p,
                    index: Some((*k, *t)),
                    answer: None,
                };
                record::encode(&rec, &mut buf);
                f(p.journal_seq, &buf);
            }
        });
    }

    /// Writes the whole state as a snapshot into `buf`.
    pub fn encode_snapshot(&self, buf: &mut Vec<u8>) {
        record::encode_snapshot(
            buf,
            &mut |f| self.state.for_each(|p| f(p)),
            &mut |f| self.state.for_each_index(|k, t| f(k, t)),
            &mut |f| self.idempotency.for_each(|k, a| f(k, a)),
            (
                &self.upstream.forwards_list(),
                &self.upstream.saf_list(None, usize::MAX),
            ),
        );
    }
}
