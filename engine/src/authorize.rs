//! A payment message's first stages: validate (merchant, terminal,
//! currency, amount, card), then for a pre-authorization or sale the risk
//! stage and a new payment, journaled before it is indexed.

use codecs::card::{CardToken, MaskedPan};
use codecs::iso8583::datetime::civil_from_days;

use crate::code::Code;
use crate::command::{Channel, Op, OriginalRef, Reply, Request, Wait};
use crate::commit::{self, Change};
use crate::directory::Directory;
use crate::engine::Engine;
use crate::idempotency::Answer;
use crate::lifecycle::{Kind, More, Payment, Status};
use crate::record::PaymentRecordRef;
use crate::risk::RiskVerdict;
use crate::state::{OriginalKey, Target};
use crate::upstream::Route;

/// (Year within the century, month) of `now_ms`, for card expiry.
fn year_month(now_ms: u64) -> (u8, u8) {
    let (year, month, _) = civil_from_days(now_ms / 86_400_000);
    ((year % 100) as u8, month as u8)
}

impl Engine {
    /// Validate, then the operation's own stages.
    pub(crate) fn decide(
        &self,
        req: &Request<'_>,
        fetched: Option<&crate::command::Fetched>,
        now_ms: u64,
    ) -> Reply {
        // One load of the directory for the whole decision (each load is
        // about 160 instructions: callgrind, README "Merchant operations").
        let dir = self.dir();
        let merchant = match self.validate(req, &dir, now_ms) {
            Ok(m) => m,
            Err(code) => return self.refusal(req, code),
        };
        match req.op {
            Op::PreAuth if req.original.is_some() => self.increment(req, merchant, fetched, now_ms),
            Op::PreAuth | Op::Sale => self.authorize(req, merchant, &dir, fetched, now_ms),
            Op::Capture | Op::Refund | Op::Reversal => {
                self.follow_up(req, merchant, &dir, fetched, now_ms)
            }
        }
    }

    /// Merchant, terminal, currency, amount and card checks. The
    /// terminal's settings override its merchant's: a terminal that does
    /// not transact (disabled, removed) gets 58 for everything but
    /// reversals, which only release money; a cancel over internal frames
    /// (a reversal naming a payment id) is 58 when the terminal's cancels
    /// are off.
    fn validate(&self, req: &Request<'_>, dir: &Directory, now_ms: u64) -> Result<u32, Code> {
        let mid: [u8; 15] = req
            .merchant_id
            .try_into()
            .map_err(|_| Code::INVALID_MERCHANT)?;
        let m = dir.merchant_index(&mid).ok_or(Code::INVALID_MERCHANT)?;
        let merchant = dir.merchant(m).ok_or(Code::INVALID_MERCHANT)?;
        if !merchant.enabled {
            return Err(Code::INVALID_MERCHANT);
        }
        let terminal = dir
            .terminal(&req.terminal_id)
            .filter(|t| t.merchant == m)
            .ok_or(Code::NOT_PERMITTED_TERMINAL)?;
        if req.op == Op::Reversal {
            let cancel = matches!(req.original, Some(OriginalRef::Payment(_)));
            if cancel && terminal.cancel == Some(false) {
                return Err(Code::NOT_PERMITTED_TERMINAL);
            }
            return Ok(m);
        }
        if !terminal.transacts() {
            return Err(Code::NOT_PERMITTED_TERMINAL);
        }
        if req.op == Op::Refund && !terminal.refunds.unwrap_or(merchant.refunds_allowed) {
            return Err(Code::NOT_PERMITTED_TERMINAL);
        }
        if !merchant.currencies.contains(&req.currency) {
            return Err(Code::INVALID_TRANSACTION);
        }
        if req.amount_minor == 0 {
            return Err(Code::INVALID_AMOUNT);
        }
        if req.op.authorizes() {
            let moto_allowed = terminal.moto.unwrap_or(merchant.moto_allowed);
            Self::validate_card(req, moto_allowed, now_ms)?;
        }
        Ok(m)
    }

    fn validate_card(req: &Request<'_>, moto_allowed: bool, now_ms: u64) -> Result<(), Code> {
        if req.channel == Channel::MoTo && !moto_allowed {
            return Err(Code::NOT_PERMITTED_TERMINAL);
        }
        let pan = req.pan.ok_or(Code::FORMAT_ERROR)?;
        if !pan.luhn_ok() {
            return Err(Code::INVALID_CARD);
        }
        let (year, month) = year_month(now_ms);
        let expiry = req.expiry.ok_or(Code::FORMAT_ERROR)?;
        if expiry.is_expired_at(year, month) {
            return Err(Code::EXPIRED_CARD);
        }
        Ok(())
    }

    /// The key a message is found by as an original, within its merchant.
    pub(crate) fn own_key(req: &Request<'_>, merchant: u32) -> Option<OriginalKey> {
        req.key.map(|k| OriginalKey {
            merchant,
            mti: k.mti,
            stan: k.stan,
            transmission: k.transmission,
        })
    }

    /// Pre-authorization or sale: risk, then a new payment. When cards
    /// are counted elsewhere, first the card's verdict is asked for
    /// ([`Wait::Velocity`]; `fetched` brings it back).
    fn authorize(
        &self,
        req: &Request<'_>,
        m: u32,
        dir: &Directory,
        fetched: Option<&crate::command::Fetched>,
        now_ms: u64,
    ) -> Reply {
        let Some(pan) = req.pan else {
            return self.refusal(req, Code::FORMAT_ERROR);
        };
        let token = self.token_key.token(&pan);
        let Some(merchant) = dir.merchant(m) else {
            return self.refusal(req, Code::INVALID_MERCHANT);
        };
        let verdict = match self.risk_verdict(req, merchant, &token, fetched, now_ms) {
            Ok(v) => v,
            Err(ask) => return ask,
        };
        let mut code = match verdict {
            RiskVerdict::Decline { code, .. } => code,
            _ => Code::APPROVED,
        };
        // A local decline never goes upstream.
        if code.approved() {
            match self.routing.route(pan.expose()) {
                Route::Local => {}
                Route::Decline => code = Code::UNAVAILABLE,
                Route::Upstream(u) => {
                    let card = (token, pan.masked());
                    return self.forward(req, m, u, card, verdict.flag(), now_ms);
                }
            }
        }
        let approved = code.approved();
        let (auth_code, rrn) = self.assign_numbers(approved, req);
        let card = (token, pan.masked());
        let mut payment = self.new_payment(req, m, code, card, (auth_code, rrn), now_ms);
        payment.record(req.op.operation(), req.amount_minor, now_ms, code);
        if let Some(reason) = verdict.flag() {
            payment.flag(reason, now_ms);
            metrics::counter!("switch_flagged_payments_total").increment(1);
        }
        let hold_due = (payment.status == Status::Uncaptured).then(|| merchant.hold_end(now_ms).0);
        let answer = req.key.map(|k| {
            let a = Answer {
                code,
                rrn,
                auth_code: approved.then_some(auth_code),
                content_crc: req.content_crc,
                seq: 0,
                at_ms: now_ms,
            };
            (k, a)
        });
        let key = Self::own_key(req, m).filter(|_| approved);
        let reply = Reply {
            auth_code: approved.then_some(auth_code),
            payment_id: Some(payment.id),
            ..Reply::of(code, rrn)
        };
        self.insert(payment, key, hold_due, answer, reply)
    }

    /// The risk stage's verdict of an authorization attempt; when cards
    /// are counted elsewhere and `fetched` has no verdict of the card yet,
    /// the reply that asks for it ([`Wait::Velocity`]: nothing decided,
    /// nothing counted here, 91 from an edge that cannot ask).
    pub(crate) fn risk_verdict(
        &self,
        req: &Request<'_>,
        merchant: &crate::merchant::Merchant,
        token: &CardToken,
        fetched: Option<&crate::command::Fetched>,
        now_ms: u64,
    ) -> Result<RiskVerdict, Reply> {
        if !self.card_counted_elsewhere {
            return Ok(self.risk.evaluate(req, merchant, token, now_ms));
        }
        if let Some(card) = fetched.and_then(|f| f.velocity) {
            return Ok(self
                .risk
                .evaluate_with_card(req, merchant, token, &card, now_ms));
        }
        match self.risk.declined_before_velocity(req, merchant, token) {
            Some(declined_before) => Err(Reply {
                wait: Wait::Velocity {
                    token: token.0,
                    declined_before,
                },
                ..self.refusal(req, Code::UNAVAILABLE)
            }),
            None => Ok(self.risk.evaluate(req, merchant, token, now_ms)),
        }
    }

    /// A payment of merchant `m` as `req` starts it, with its card (token,
    /// masked PAN) and numbers (F38, F37), before risk's flags and its
    /// history; declined payments keep no amount.
    pub(crate) fn new_payment(
        &self,
        req: &Request<'_>,
        m: u32,
        code: Code,
        (card_token, masked_pan): (CardToken, MaskedPan),
        (auth_code, rrn): ([u8; 6], [u8; 12]),
        now_ms: u64,
    ) -> Payment {
        let approved = code.approved();
        let kind = if req.op == Op::Sale {
            Kind::Sale
        } else {
            Kind::PreAuth
        };
        let status = match (kind, approved) {
            (_, false) => Status::Declined,
            (Kind::Sale, true) => Status::Succeeded,
            (Kind::PreAuth, true) => Status::Uncaptured,
        };
        Payment {
            id: self.state.allocate_id(),
            merchant: m,
            terminal: req.terminal_id,
            kind,
            status,
            currency: req.currency,
            authorized_minor: if approved { req.amount_minor } else { 0 },
            captured_minor: if status == Status::Succeeded {
                req.amount_minor
            } else {
                0
            },
            refunds: Vec::new(),
            card_token,
            masked_pan,
            created_ms: now_ms,
            auth_code,
            rrn,
            scam: false,
            flag_reasons: String::new(),
            history: Vec::with_capacity(4),
            extras: req.extras.map(|e| Box::new(e.clone())),
            journal_seq: 0,
            upstream: None,
            more: More {
                eci: req.eci.map(|e| e.0),
                channel: Some(req.channel.code()),
                requested_minor: Some(req.amount_minor),
                ..More::default()
            },
        }
    }

    /// In memory first, journaled under the payment's lock, then indexed
    /// (see `commit` on snapshots); not journaled, so not done.
    pub(crate) fn insert(
        &self,
        payment: Payment,
        key: Option<OriginalKey>,
        hold_due: Option<u64>,
        answer: Option<(crate::idempotency::MessageKey, Answer)>,
        reply: Reply,
    ) -> Reply {
        let id = payment.id;
        let approved = reply.code.approved();
        let index = key.map(|k| {
            (
                k,
                Target {
                    payment: id,
                    refund: None,
                },
            )
        });
        let journal = &*self.journal;
        let recorded = self.state.insert(payment, key, hold_due, |p| {
            let change = Change::Answered(PaymentRecordRef {
                payment: p,
                index,
                answer,
            });
            let recorded = commit::record(journal, &change, approved);
            if let Ok(r) = recorded {
                p.journal_seq = r.seq;
            }
            recorded
        });
        match recorded {
            Ok(Ok(r)) => Reply {
                wait: Wait::of_seq(r.wait),
                record_seq: r.seq,
                ..reply
            },
            Ok(Err(code)) => {
                self.state.remove(id, key);
                Reply::of(code, reply.rrn)
            }
            Err(code) => Reply::of(code, reply.rrn),
        }
    }
}
