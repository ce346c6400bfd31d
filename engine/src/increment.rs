//! Incremental authorization: a 0100 whose F90 names an open
//! pre-authorization of the same merchant and card raises that hold by its
//! amount. One payment: its authorized amount is the sum, its hold period
//! starts again, and the answer carries the original's F38.
//!
//! Stages: find the original (memory, or the archive), check that it can
//! be raised (open pre-authorization, same card, same currency, decided
//! here), then risk (an increment is an authorization attempt: the
//! blocklist, the velocity count and the other rules apply to it as to a
//! new 0100), then the change, journaled with the message's index entry
//! (so a reversal naming the increment takes back its amount only).

use std::cell::Cell;

use crate::code::Code;
use crate::command::{Fetched, OriginalRef, Reply, Request, Wait};
use crate::commit::ChangeParts;
use crate::engine::Engine;
use crate::idempotency::Answer;
use crate::lifecycle::{Kind, Operation, Payment, Status};
use crate::risk::RiskVerdict;
use crate::state::{Hold, Target};

/// Whether `p` may be raised by `req` (card token `token`).
///
/// # Errors
/// 25 for another merchant's payment (it does not exist for this one); 12
/// for a payment an issuer decided (increments are not forwarded:
/// docs/routing.md, "Known gaps"), one that is not an open
/// pre-authorization, another card or another currency.
fn may_raise(
    p: &Payment,
    m: u32,
    req: &Request<'_>,
    token: &codecs::card::CardToken,
) -> Result<(), Code> {
    if p.merchant != m {
        return Err(Code::UNABLE_TO_LOCATE);
    }
    if p.upstream.is_some()
        || p.kind != Kind::PreAuth
        || p.status != Status::Uncaptured
        || p.card_token != *token
        || p.currency != req.currency
    {
        return Err(Code::INVALID_TRANSACTION);
    }
    Ok(())
}

impl Engine {
    /// An incremental authorization of merchant `m` (validated: card,
    /// amount, currency accepted).
    pub(crate) fn increment(
        &self,
        req: &Request<'_>,
        m: u32,
        fetched: Option<&Fetched>,
        now_ms: u64,
    ) -> Reply {
        // F90 must name a pre-authorization (the original 0100 or an
        // earlier increment of it), not a capture or refund of it.
        let names_preauth = match req.original {
            Some(OriginalRef::Message(o)) => o.mti.without_repeat().number() == 100,
            _ => true,
        };
        let target = match self.original(req, m, fetched) {
            Ok(t) if t.refund.is_none() && names_preauth => t,
            Ok(_) => return self.refusal(req, Code::INVALID_TRANSACTION),
            Err(not_here) => return not_here.reply(self.rrn_of(req)),
        };
        let Some(pan) = req.pan else {
            return self.refusal(req, Code::FORMAT_ERROR);
        };
        let token = self.token_key.token(&pan);
        // Checked before risk, so a refused reference is not counted as an
        // attempt; checked again under the payment's lock below.
        let checked = self
            .state
            .with_payment(target.payment, |p| may_raise(p, m, req, &token))
            .unwrap_or(Err(Code::UNABLE_TO_LOCATE));
        if let Err(code) = checked {
            return self
                .let_go_meanwhile(target.payment, code)
                .reply(self.rrn_of(req));
        }
        let dir = self.dir();
        let Some(merchant) = dir.merchant(m) else {
            return self.refusal(req, Code::INVALID_MERCHANT);
        };
        let verdict = match self.risk_verdict(req, merchant, &token, fetched, now_ms) {
            Ok(v) => v,
            Err(ask) => return ask,
        };
        self.raise(req, m, target, &token, verdict, now_ms)
    }

    /// Raises the hold of `target` as `req` asks, or records the risk
    /// stage's decline of it; journaled with the message's index entry and
    /// answer; the hold's new end goes to the timers.
    fn raise(
        &self,
        req: &Request<'_>,
        m: u32,
        target: Target,
        token: &codecs::card::CardToken,
        verdict: RiskVerdict,
        now_ms: u64,
    ) -> Reply {
        let rrn = self.rrn_of(req);
        let dir = self.dir();
        let Some(merchant) = dir.merchant(m) else {
            return self.refusal(req, Code::INVALID_MERCHANT);
        };
        let code = match verdict {
            RiskVerdict::Decline { code, .. } => code,
            _ => Code::APPROVED,
        };
        let auth_code = Cell::new(None);
        let key = req
            .key
            .map(|k| (k.stan, k.transmission))
            .unwrap_or_default();
        let own = Self::own_key(req, m).filter(|_| code.approved());
        let applied = self.commit_existing(
            m,
            target.payment,
            |p| {
                may_raise(p, m, req, token)?;
                if let Some(reason) = verdict.flag() {
                    p.flag(reason, now_ms);
                    metrics::counter!("switch_flagged_payments_total").increment(1);
                }
                if code.approved() {
                    p.increment(req.amount_minor, req.currency, key, now_ms)?;
                } else {
                    // A declined increment leaves the hold as it was; the
                    // attempt is in the payment's history.
                    p.record(Operation::Increment, req.amount_minor, now_ms, code);
                }
                Ok(())
            },
            |p, ()| {
                auth_code.set(code.approved().then_some(p.auth_code));
                ChangeParts {
                    index: own.map(|k| {
                        let t = Target {
                            payment: p.id,
                            refund: None,
                        };
                        (k, t)
                    }),
                    answer: req.key.map(|k| {
                        let answer = Answer {
                            code,
                            rrn,
                            auth_code: auth_code.get(),
                            content_crc: req.content_crc,
                            seq: 0,
                            at_ms: now_ms,
                        };
                        (k, answer)
                    }),
                }
            },
        );
        let recorded = match applied {
            Ok(((), recorded)) => recorded,
            Err(code) => return self.let_go_meanwhile(target.payment, code).reply(rrn),
        };
        if code.approved() {
            if let Some(own) = own {
                let t = Target {
                    payment: target.payment,
                    refund: None,
                };
                self.state.index(own, t);
            }
            // The hold's period starts again: its new end goes to the
            // timers (the old entry finds it not yet due).
            self.state.queue_hold(Hold {
                due_ms: merchant.hold_end(now_ms).0,
                payment: target.payment,
            });
        }
        Reply {
            auth_code: auth_code.get(),
            payment_id: Some(target.payment),
            wait: Wait::of_seq(recorded.wait),
            record_seq: recorded.seq,
            ..Reply::of(code, rrn)
        }
    }
}
