//! How a change leaves the engine: every change is applied to memory,
//! encoded as a journal record and handed to the [`Journal`] the shell
//! gives the engine, inside an epoch guard; a change the journal refuses is
//! rolled back (not journaled, so not done).
//!
//! Snapshot consistency: each change is applied to memory before its
//! record gets a sequence number, inside an epoch guard. A snapshot reads
//! the last sequence S, flips the epoch and waits for the old epoch's
//! guards to finish, so every change with a sequence up to S is visible in
//! the walk that follows. Later changes may be in the snapshot too; replay
//! of full payment images is idempotent, so that is harmless.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::code::Code;
use crate::lifecycle::Payment;
use crate::record::{self, PaymentRecordRef};

/// Where the engine's records go: the shell's write-behind journal. The
/// engine never waits on it; it only learns each record's sequence, which
/// an answer may wait for and which the archive's watermark is compared
/// with before a payment leaves memory.
pub trait Journal: Send + Sync {
    /// Appends one record of `record_type`; returns its sequence (0 when
    /// records are not kept).
    ///
    /// # Errors
    /// The response code to answer with when the record cannot be taken
    /// (96: the journal is full past its wait, failed or closed).
    fn append(&self, record_type: u8, payload: &[u8]) -> Result<u64, Code>;

    /// Whether an answer waits for its record to be durable (`durable`
    /// acknowledgement) before it leaves.
    fn answers_wait(&self) -> bool {
        true
    }

    /// Whether records are kept at all: when not, the engine does not
    /// encode them (tests and benchmarks of the pipeline alone).
    fn keeps_records(&self) -> bool {
        true
    }
}

/// No journal: nothing is recorded and nothing waits (tests and benchmarks
/// of the pipeline alone).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoJournal;

impl Journal for NoJournal {
    fn append(&self, _record_type: u8, _payload: &[u8]) -> Result<u64, Code> {
        Ok(0)
    }

    fn answers_wait(&self) -> bool {
        false
    }

    fn keeps_records(&self) -> bool {
        false
    }
}

/// A state change to record: the payment after it, with the index entry
/// and answer it produced when it came from a keyed message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// A payment changed, no message key (timers, internal frames).
    Updated(&'a Payment),
    /// A change made by a keyed message, with its index entry and answer.
    Answered(PaymentRecordRef<'a>),
}

impl<'a> Change<'a> {
    fn as_record(&self) -> PaymentRecordRef<'a> {
        match *self {
            Change::Updated(payment) => PaymentRecordRef {
                payment,
                index: None,
                answer: None,
            },
            Change::Answered(r) => r,
        }
    }
}

thread_local! {
    /// Encoding buffer reused per thread: no allocation per record after warm-up.
    static ENCODE_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// A record the journal took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// Its sequence (0: records are not kept).
    pub(crate) seq: u64,
    /// The sequence the answer waits for (0: none): `seq` when the change
    /// asked to wait and the journal acknowledges durably.
    pub(crate) wait: u64,
}

/// Encodes `change` and appends it to `journal`; `wait` is false for
/// changes whose answer need not wait (declines, timers).
pub(crate) fn record(
    journal: &dyn Journal,
    change: &Change<'_>,
    wait: bool,
) -> Result<Recorded, Code> {
    if !journal.keeps_records() {
        return Ok(Recorded::default());
    }
    let seq = ENCODE_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        record::encode(&change.as_record(), &mut buf);
        journal.append(record::RECORD_PAYMENT, &buf)
    })?;
    let wait = if wait && journal.answers_wait() {
        seq
    } else {
        0
    };
    Ok(Recorded { seq, wait })
}

/// Applies `transition` to `p`, then journals the change it describes;
/// when the journal refuses it, `p` is put back as it was. The one
/// sequence every change of an existing payment goes through. Returns the
/// transition's result and the record; its sequence also goes into
/// [`Payment::journal_seq`].
///
/// `transition` returns its result and the change to record (built from
/// the payment after the transition).
///
/// # Errors
/// The transition's code, or the journal's (96).
pub(crate) fn commit_update<R>(
    journal: &dyn Journal,
    p: &mut Payment,
    wait: bool,
    transition: impl FnOnce(&mut Payment) -> Result<R, Code>,
    change: impl FnOnce(&Payment, &R) -> ChangeParts,
) -> Result<(R, Recorded), Code> {
    let saved = p.clone();
    let result = match transition(p) {
        Ok(r) => r,
        Err(code) => {
            // A refused transition may have started to write; it is undone.
            *p = saved;
            return Err(code);
        }
    };
    let parts = change(p, &result);
    let recorded = record(journal, &parts.into_change(p), wait);
    match recorded {
        Ok(r) => {
            p.journal_seq = r.seq;
            Ok((result, r))
        }
        Err(code) => {
            // Not journaled, so not done: put the payment back.
            *p = saved;
            Err(code)
        }
    }
}

impl crate::engine::Engine {
    /// [`commit_update`] on payment `id`, which must belong to merchant
    /// `m` (another merchant's payment does not exist for it: 25, as a
    /// missing one).
    ///
    /// # Errors
    /// 25, the transition's code, or the journal's (96).
    pub(crate) fn commit_existing<R>(
        &self,
        m: u32,
        id: u64,
        transition: impl FnOnce(&mut Payment) -> Result<R, Code>,
        change: impl FnOnce(&Payment, &R) -> ChangeParts,
    ) -> Result<(R, Recorded), Code> {
        let journal = &*self.journal;
        self.state
            .with_payment(id, |p| {
                if p.merchant != m {
                    return Err(Code::UNABLE_TO_LOCATE);
                }
                commit_update(journal, p, true, transition, change)
            })
            .unwrap_or(Err(Code::UNABLE_TO_LOCATE))
    }
}

/// What a keyed message adds to a payment's record: its index entry and
/// answer (both absent for timers and internal-frame changes).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ChangeParts {
    /// The message's key and what it points at.
    pub(crate) index: Option<(crate::state::OriginalKey, crate::state::Target)>,
    /// The answer, for repeats after a restart.
    pub(crate) answer: Option<(crate::idempotency::MessageKey, crate::idempotency::Answer)>,
}

impl ChangeParts {
    pub(crate) fn into_change(self, payment: &Payment) -> Change<'_> {
        if self.index.is_none() && self.answer.is_none() {
            return Change::Updated(payment);
        }
        Change::Answered(PaymentRecordRef {
            payment,
            index: self.index,
            answer: self.answer,
        })
    }
}

/// Two-epoch guard counter (see the module docs).
#[derive(Default)]
pub(crate) struct Epochs {
    /// The epoch new guards join (0 or 1).
    current: AtomicUsize,
    /// Guards active per epoch.
    active: [AtomicU64; 2],
}

/// Held while a change is applied and recorded.
pub(crate) struct EpochGuard<'a> {
    /// The counter to release.
    counter: &'a AtomicU64,
}

impl Drop for EpochGuard<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Epochs {
    /// Joins the current epoch.
    pub(crate) fn enter(&self) -> EpochGuard<'_> {
        loop {
            let e = self.current.load(Ordering::SeqCst);
            let counter = &self.active[e & 1];
            counter.fetch_add(1, Ordering::SeqCst);
            if self.current.load(Ordering::SeqCst) == e {
                return EpochGuard { counter };
            }
            counter.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Flips the epoch; returns the old one, for [`Epochs::drained`].
    pub(crate) fn flip(&self) -> usize {
        self.current.fetch_xor(1, Ordering::SeqCst) & 1
    }

    /// Whether every guard of epoch `old` has finished.
    pub(crate) fn drained(&self, old: usize) -> bool {
        self.active[old & 1].load(Ordering::SeqCst) == 0
    }
}
