//! Capture, refund by amount, or reversal of an earlier payment: find the
//! original, apply the lifecycle's transition, journal it, index the
//! message.

use crate::code::Code;
use crate::command::{Op, OriginalRef, Reply, Request, Wait};
use crate::commit::ChangeParts;
use crate::engine::Engine;
use crate::idempotency::Answer;
use crate::lifecycle::Payment;
use crate::state::{OriginalKey, Target};

impl Engine {
    /// The payment (and refund) `req` names as its original, within
    /// merchant `m`.
    fn original(&self, req: &Request<'_>, m: u32) -> Option<Target> {
        match req.original? {
            OriginalRef::Message(o) => self.state.find(&OriginalKey {
                merchant: m,
                mti: o.mti.without_repeat().number(),
                stan: o.stan,
                transmission: o
                    .transmission
                    .iter()
                    .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0')),
            }),
            OriginalRef::Rrn(rrn, auth) => {
                self.state.find_by_rrn(m, rrn, auth).map(|payment| Target {
                    payment,
                    refund: None,
                })
            }
            OriginalRef::Payment(payment) => Some(Target {
                payment,
                refund: None,
            }),
        }
    }

    /// Capture, refund or reversal of an earlier payment.
    pub(crate) fn follow_up(&self, req: &Request<'_>, m: u32, now_ms: u64) -> Reply {
        let Some(target) = self.original(req, m) else {
            return self.refusal(req, Code::UNABLE_TO_LOCATE);
        };
        let own = Self::own_key(req, m);
        let rrn = self.rrn_of(req);
        let fresh_auth = self.assign_auth_code();
        let mut auth_code = fresh_auth;
        let applied = self.commit_existing(
            m,
            target.payment,
            |p| self.transition(p, req, target, now_ms),
            |p, &refund| {
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
            Err(code) => Reply::of(code, rrn),
            Ok((refund, seq)) => {
                if let Some(own) = own {
                    let target = Target {
                        payment: target.payment,
                        refund,
                    };
                    self.state.index(own, target);
                }
                Reply {
                    auth_code: Some(auth_code),
                    payment_id: Some(target.payment),
                    wait: Wait::of_seq(seq),
                    ..Reply::of(Code::APPROVED, rrn)
                }
            }
        }
    }

    /// The lifecycle's transition for `req` on `p`; a refund's index.
    fn transition(
        &self,
        p: &mut Payment,
        req: &Request<'_>,
        target: Target,
        now_ms: u64,
    ) -> Result<Option<u8>, Code> {
        let merchant = &self.merchants[p.merchant as usize];
        match (req.op, target.refund) {
            (Op::Capture, None) => p
                .capture(
                    req.amount_minor,
                    req.currency,
                    merchant.over_capture_pct,
                    now_ms,
                )
                .map(|()| None),
            (Op::Refund, None) => p.refund(req.amount_minor, req.currency, now_ms).map(Some),
            (Op::Reversal, None) => p.reverse(req.replacement_minor, now_ms).map(|()| None),
            (Op::Reversal, Some(i)) => p.reverse_refund(i, now_ms).map(|()| None),
            _ => Err(Code::INVALID_TRANSACTION),
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
