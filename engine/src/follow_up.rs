//! Capture, refund by amount, or reversal of an earlier payment: find the
//! original, apply the lifecycle's transition, journal it, index the
//! message.

use crate::code::Code;
use crate::command::{Fetch, Fetched, Op, OriginalRef, Reply, Request, Wait};
use crate::commit::ChangeParts;
use crate::directory::Directory;
use crate::engine::Engine;
use crate::idempotency::Answer;
use crate::lifecycle::Payment;
use crate::state::{OriginalKey, Target};

/// Why a payment a request names is not in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotHere {
    /// The archive may hold it: ask.
    Ask(Fetch),
    /// Answer with this code (25: neither memory nor the archive has it;
    /// 96: memory is full).
    Refuse(Code),
}

impl NotHere {
    /// The reply for it, with F37 `rrn`.
    pub(crate) fn reply(self, rrn: [u8; 12]) -> Reply {
        match self {
            NotHere::Ask(fetch) => Reply::fetch(fetch, rrn),
            NotHere::Refuse(code) => Reply::of(code, rrn),
        }
    }
}

/// F7 of an original (F90's digits) as a number, as keys hold it.
pub(crate) fn transmission_number(o: &codecs::iso8583::f90::OriginalData) -> u64 {
    o.transmission
        .iter()
        .fold(0u64, |v, &d| v * 10 + u64::from(d.wrapping_sub(b'0')))
}

impl Engine {
    /// What the archive returned for the original, if it was asked and
    /// the answer cannot predate a change memory had (else it is asked
    /// again: a payment let go after a change the copy lacks).
    fn fetched_original<'f>(
        &self,
        fetched: Option<&'f Fetched>,
    ) -> Option<Option<&'f (Target, Payment)>> {
        let f = fetched?;
        let found = f.original.as_ref()?;
        if found.is_some() && self.state.may_be_stale(f.archived_seq) {
            metrics::counter!("switch_archive_lookups_stale_total").increment(1);
            return None;
        }
        Some(found.as_ref())
    }

    /// What a refusal of a change of payment `id` with `code` means: a 25
    /// for a payment memory let go between [`Engine::ensure_payment`] and
    /// the change (a retire pass on another thread took it, archived) is
    /// not an answer, the archive is asked again for it; anything else is
    /// the answer.
    pub(crate) fn let_go_meanwhile(&self, id: u64, code: Code) -> NotHere {
        if code == Code::UNABLE_TO_LOCATE && !self.state.contains(id) {
            metrics::counter!("switch_archive_lookups_total", "what" => "payment").increment(1);
            return NotHere::Ask(Fetch::Payment(id));
        }
        NotHere::Refuse(code)
    }

    /// Makes sure payment `id` is in memory: it is, or the archive's copy
    /// in `fetched` is brought back; else the archive is to be asked.
    ///
    /// # Errors
    /// [`NotHere::Ask`] when the archive was not asked yet; 25 when it has
    /// no such payment; 96 when memory is full.
    pub(crate) fn ensure_payment(&self, id: u64, fetched: Option<&Fetched>) -> Result<(), NotHere> {
        if self.state.contains(id) {
            return Ok(());
        }
        match self.fetched_original(fetched) {
            None => {
                metrics::counter!("switch_archive_lookups_total", "what" => "payment").increment(1);
                Err(NotHere::Ask(Fetch::Payment(id)))
            }
            Some(Some((_, p))) if p.id == id => {
                self.state.bring_back(p.clone()).map_err(NotHere::Refuse)
            }
            Some(_) => Err(NotHere::Refuse(Code::UNABLE_TO_LOCATE)),
        }
    }

    /// The payment (and refund) `req` names as its original, within
    /// merchant `m`, in memory (brought back from the archive if need be).
    ///
    /// # Errors
    /// As [`Engine::ensure_payment`].
    pub(crate) fn original(
        &self,
        req: &Request<'_>,
        m: u32,
        fetched: Option<&Fetched>,
    ) -> Result<Target, NotHere> {
        let Some(original) = req.original else {
            return Err(NotHere::Refuse(Code::UNABLE_TO_LOCATE));
        };
        let (found, fetch, key) = match original {
            OriginalRef::Message(o) => {
                let key = OriginalKey {
                    merchant: m,
                    mti: o.mti.without_repeat().number(),
                    stan: o.stan,
                    transmission: transmission_number(&o),
                };
                (self.state.find(&key), Fetch::Original(key), Some(key))
            }
            OriginalRef::Rrn(rrn, auth_code) => {
                let found = self
                    .state
                    .find_by_rrn(m, rrn, auth_code)
                    .map(|payment| Target {
                        payment,
                        refund: None,
                    });
                let fetch = Fetch::Rrn {
                    merchant: m,
                    rrn,
                    auth_code,
                };
                (found, fetch, None)
            }
            OriginalRef::Payment(payment) => {
                let target = Target {
                    payment,
                    refund: None,
                };
                (Some(target), Fetch::Payment(payment), None)
            }
        };
        if let Some(target) = found {
            self.ensure_payment(target.payment, fetched)?;
            return Ok(target);
        }
        match self.fetched_original(fetched) {
            None => {
                metrics::counter!("switch_archive_lookups_total", "what" => "original")
                    .increment(1);
                Err(NotHere::Ask(fetch))
            }
            Some(Some((target, p))) => {
                self.state.bring_back(p.clone()).map_err(NotHere::Refuse)?;
                if let Some(key) = key {
                    self.state.index(key, *target);
                }
                Ok(*target)
            }
            Some(None) => Err(NotHere::Refuse(Code::UNABLE_TO_LOCATE)),
        }
    }

    /// Capture, refund or reversal of an earlier payment; a refund of an
    /// issuer-decided payment goes to its issuer first.
    pub(crate) fn follow_up(
        &self,
        req: &Request<'_>,
        m: u32,
        dir: &Directory,
        fetched: Option<&Fetched>,
        now_ms: u64,
    ) -> Reply {
        let target = match self.original(req, m, fetched) {
            Ok(target) => target,
            Err(not_here) => return not_here.reply(self.rrn_of(req)),
        };
        if req.op == Op::Refund && target.refund.is_none() {
            if let Some(reply) = self.forward_refund(req, m, target.payment, now_ms) {
                return reply;
            }
        }
        self.follow_up_target(req, m, target, dir, None, now_ms)
    }

    /// A refund its issuer approved, made here with the issuer's F38 (or
    /// the switch's own when it gave none).
    pub(crate) fn follow_up_here(
        &self,
        req: &Request<'_>,
        m: u32,
        issuer_auth: Option<[u8; 6]>,
        now_ms: u64,
    ) -> Reply {
        match self.original(req, m, None) {
            Ok(target) => self.follow_up_target(req, m, target, &self.dir(), issuer_auth, now_ms),
            Err(not_here) => not_here.reply(self.rrn_of(req)),
        }
    }

    /// The change of `target` `req` asks for.
    fn follow_up_target(
        &self,
        req: &Request<'_>,
        m: u32,
        target: Target,
        dir: &Directory,
        issuer_auth: Option<[u8; 6]>,
        now_ms: u64,
    ) -> Reply {
        let own = Self::own_key(req, m);
        let rrn = self.rrn_of(req);
        let fresh_auth = issuer_auth.unwrap_or_else(|| self.assign_auth_code());
        let mut auth_code = fresh_auth;
        let mut advice = None;
        let held = std::cell::Cell::new(0);
        // Captured so far of a hold still open: the issuer holds the rest
        // only, so an advised F95 is the rest left, not the total.
        let open_captured = std::cell::Cell::new(0);
        let applied = self.commit_existing(
            m,
            target.payment,
            |p| {
                // An issuer-decided payment's capture or reversal is
                // advised through the SAF: no room, no change (96, the
                // terminal tries again).
                if p.upstream.is_some()
                    && matches!(req.op, Op::Capture | Op::Reversal)
                    && !self.upstream.saf_room()
                {
                    metrics::counter!("switch_limit_reached_total", "limit" => "saf_entries_max")
                        .increment(1);
                    return Err(Code::SYSTEM_MALFUNCTION);
                }
                // What the payment holds: an open hold's rest (partial
                // captures stand), else what was captured.
                if p.status == crate::lifecycle::Status::Uncaptured {
                    held.set(p.authorized_minor.saturating_sub(p.captured_minor));
                    open_captured.set(p.captured_minor);
                } else {
                    held.set(p.authorized_minor.max(p.captured_minor));
                }
                self.transition(p, req, target, dir, now_ms)
            },
            |p, &refund| {
                // A refund's reversal is not advised: the refund's own
                // forward is not kept with the payment (docs/routing.md).
                advice = target
                    .refund
                    .is_none()
                    .then(|| {
                        // A capture's own amount; a reversal's, what was
                        // held before it (F95 what is left after a partial
                        // one).
                        let (amount, replacement) = match req.op {
                            Op::Capture => (req.amount_minor, None),
                            _ => (
                                held.get(),
                                req.replacement_minor
                                    .map(|k| k.saturating_sub(open_captured.get())),
                            ),
                        };
                        self.saf_of_follow_up(p, req.op, amount, replacement, now_ms)
                    })
                    .flatten();
                auth_code = Self::auth_code_of(req, p, fresh_auth);
                ChangeParts {
                    index: own.map(|k| {
                        (
                            k,
                            Target {
                                payment: p.id,
                                refund,
                            },
                        )
                    }),
                    answer: req.key.map(|k| {
                        let answer = Answer {
                            code: Code::APPROVED,
                            rrn,
                            auth_code: Some(auth_code),
                            content_crc: req.content_crc,
                            seq: 0,
                            at_ms: now_ms,
                        };
                        (k, answer)
                    }),
                }
            },
        );
        match applied {
            Err(code) => {
                self.record_refused(m, target.payment, req, code, now_ms);
                self.let_go_meanwhile(target.payment, code).reply(rrn)
            }
            Ok((refund, recorded)) => {
                if let Some(own) = own {
                    let target = Target {
                        payment: target.payment,
                        refund,
                    };
                    self.state.index(own, target);
                }
                let mut wait = recorded.wait;
                let mut record_seq = recorded.seq;
                if let Some(e) = advice {
                    // After the change's record, so the answer waiting for
                    // the advice waits for both.
                    if let Ok(seq) = self.queue_saf(e, true) {
                        record_seq = record_seq.max(seq);
                        if wait != 0 {
                            wait = seq;
                        }
                    }
                }
                Reply {
                    auth_code: Some(auth_code),
                    payment_id: Some(target.payment),
                    wait: Wait::of_seq(wait),
                    record_seq,
                    ..Reply::of(Code::APPROVED, rrn)
                }
            }
        }
    }

    /// Writes a follow-up the lifecycle refused (12 or 13) into payment
    /// `id`'s history, bounded by `HISTORY_REFUSED_MAX`: one more journal
    /// record, the payment otherwise unchanged. Nothing waits for it and
    /// nothing depends on it: the answer stays the refusal whatever
    /// happens here (a journal that refuses the record loses only the
    /// entry). Other refusals (25, 96) concern no payment's life.
    fn record_refused(&self, m: u32, id: u64, req: &Request<'_>, code: Code, now_ms: u64) {
        if code != Code::INVALID_TRANSACTION && code != Code::INVALID_AMOUNT {
            return;
        }
        let amount_minor = match req.op {
            Op::Reversal => req.replacement_minor.unwrap_or(0),
            _ => req.amount_minor,
        };
        let refused = |p: &mut Payment| {
            if p.record_refused(req.op.operation(), amount_minor, now_ms, code) {
                Ok(())
            } else {
                // The history is full of real operations: nothing to write.
                Err(code)
            }
        };
        if self
            .commit_existing(m, id, refused, |_, _| ChangeParts::default())
            .is_ok()
        {
            metrics::counter!("switch_refused_operations_recorded_total").increment(1);
        }
    }

    /// The lifecycle's transition for `req` on `p`; a refund's index.
    fn transition(
        &self,
        p: &mut Payment,
        req: &Request<'_>,
        target: Target,
        dir: &Directory,
        now_ms: u64,
    ) -> Result<Option<u8>, Code> {
        let over_capture_pct = dir.merchant(p.merchant).map_or(0, |m| m.over_capture_pct);
        match (req.op, target.refund) {
            (Op::Capture, None) => {
                let first = p.more.captures.is_none();
                p.capture(
                    req.amount_minor,
                    req.currency,
                    over_capture_pct,
                    req.keep_open,
                    now_ms,
                )?;
                // Capture by an edited cart (internal frames).
                match req.extras.map(|e| e.cart.as_slice()) {
                    Some(lines) if !lines.is_empty() => p.capture_cart(lines, first).map(|()| None),
                    _ => Ok(None),
                }
            }
            (Op::Refund, None) => p.refund(req.amount_minor, req.currency, now_ms).map(Some),
            (Op::Reversal, None) => match Self::increment_named(p, req) {
                // The original is an incremental authorization: only
                // what it added is taken back.
                Some(i) => p
                    .reverse_increment(i, req.replacement_minor, over_capture_pct, now_ms)
                    .map(|()| None),
                None => p.reverse(req.replacement_minor, now_ms).map(|()| None),
            },
            (Op::Reversal, Some(i)) => p.reverse_refund(i, now_ms).map(|()| None),
            _ => Err(Code::INVALID_TRANSACTION),
        }
    }

    /// The increment of `p` that `req`'s F90 names, if its original is an
    /// incremental authorization rather than the pre-authorization.
    fn increment_named(p: &Payment, req: &Request<'_>) -> Option<usize> {
        match req.original {
            Some(OriginalRef::Message(o)) if o.mti.without_repeat().number() == 100 => {
                p.increment_of(o.stan, transmission_number(&o))
            }
            _ => None,
        }
    }

    /// A refund gets a fresh F38; the other follow-ups repeat the payment's.
    fn auth_code_of(req: &Request<'_>, p: &Payment, fresh: [u8; 6]) -> [u8; 6] {
        if req.op == Op::Refund {
            fresh
        } else {
            p.auth_code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_let_go_before_its_change_is_asked_for_again() {
        let e = crate::testing::engine(1_795_434_550_000);
        // Not in memory (a retire pass took it): ask the archive again.
        assert_eq!(
            e.let_go_meanwhile(42, Code::UNABLE_TO_LOCATE),
            NotHere::Ask(Fetch::Payment(42))
        );
        // Any other refusal is the answer.
        assert_eq!(
            e.let_go_meanwhile(42, Code::INVALID_AMOUNT),
            NotHere::Refuse(Code::INVALID_AMOUNT)
        );
        // In memory, a 25 stands (another merchant's payment).
        let p = crate::lifecycle::tests::payment(crate::lifecycle::Kind::Sale, 100);
        e.state.insert(p, None, None, |_| ()).expect("room");
        assert_eq!(
            e.let_go_meanwhile(1, Code::UNABLE_TO_LOCATE),
            NotHere::Refuse(Code::UNABLE_TO_LOCATE)
        );
    }
}
