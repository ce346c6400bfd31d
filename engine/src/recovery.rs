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

impl Engine {
    /// Applies a recovered snapshot to the state.
    ///
    /// # Errors
    /// When the snapshot does not decode.
    pub fn replay_snapshot(&self, bytes: &[u8]) -> Result<(), ReplayError> {
        let s = record::decode_snapshot(bytes)?;
        for p in s.payments {
            self.state.restore(p);
        }
        for (k, t) in s.index {
            self.state.index(k, t);
        }
        for (k, a) in s.answers {
            self.idempotency.store(k, a);
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
        if record_type != record::RECORD_PAYMENT {
            return Err(ReplayError::UnknownType { seq, record_type });
        }
        let rec = record::decode(payload)?;
        self.state.restore(rec.payment);
        if let Some((k, t)) = rec.index {
            self.state.index(k, t);
        }
        if let Some((k, a)) = rec.answer {
            self.idempotency.store(k, a);
        }
        Ok(())
    }

    /// After recovery: queue the holds of uncaptured payments for the timers.
    pub fn requeue_holds(&self) {
        self.state.requeue_holds(|p| {
            self.merchants
                .get(p.merchant as usize)
                .map_or(p.created_ms, |m| m.hold_end(p.created_ms).0)
        });
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

    /// Writes the whole state as a snapshot into `buf`.
    pub fn encode_snapshot(&self, buf: &mut Vec<u8>) {
        record::encode_snapshot(
            buf,
            &mut |f| self.state.for_each(|p| f(p)),
            &mut |f| self.state.for_each_index(|k, t| f(k, t)),
            &mut |f| self.idempotency.for_each(|k, a| f(k, a)),
        );
    }
}
