//! Forwarding's stages: an authorization routed to an issuer becomes a
//! pending forward (journaled before it leaves); how it ended makes the
//! payment, the SAF entries it needs and the terminal's answer; captures
//! and reversals of issuer-decided payments queue their advices.
//!
//! Every table change is made in memory first, then journaled (undone if
//! the journal refuses), inside the epoch guard of [`Engine::apply`], as
//! for payments (`commit`'s module comment says why).

use std::cell::RefCell;

use crate::code::Code;
use crate::command::{Op, Reply, Request, Wait};
use crate::engine::Engine;
use crate::idempotency::Answer;
use crate::lifecycle::{Payment, Status};
use crate::state::OriginalKey;
use crate::upstream::{
    transmission_of, ForwardOp, ForwardRef, Forwarded, Making, Outcome, Pending, SafEntry, SafKind,
    UpstreamRecord, RECORD_UPSTREAM,
};

thread_local! {
    static ENCODE_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

impl Engine {
    /// Journals an upstream record; its sequence (0: records not kept).
    fn record_upstream(&self, rec: &UpstreamRecord) -> Result<u64, Code> {
        if !self.journal.keeps_records() {
            return Ok(0);
        }
        ENCODE_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            crate::upstream::encode(rec, &mut buf);
            self.journal.append(RECORD_UPSTREAM, &buf)
        })
    }

    /// The sequence an answer waits for, given the record it depends on.
    fn answer_wait(&self, seq: u64) -> Wait {
        if self.journal.answers_wait() {
            Wait::of_seq(seq)
        } else {
            Wait::Nothing
        }
    }

    /// A routed authorization: a pending forward, journaled; the shell
    /// sends it once durable ([`Wait::Upstream`]). 91 at once when the
    /// forwards or the SAF are full (a forward that times out needs room
    /// for its reversal).
    pub(crate) fn forward(
        &self,
        req: &Request<'_>,
        m: u32,
        upstream: u16,
        card: (codecs::card::CardToken, codecs::card::MaskedPan),
        flag: Option<&'static str>,
        now_ms: u64,
    ) -> Reply {
        self.forward_made(req, m, upstream, card, flag, None, now_ms)
    }

    /// [`Engine::forward`], for a refund of `refund_of` too: (its payment,
    /// and the forwarded authorization as the issuer saw it).
    #[allow(clippy::too_many_arguments, reason = "one forward's parts")]
    fn forward_made(
        &self,
        req: &Request<'_>,
        m: u32,
        upstream: u16,
        card: (codecs::card::CardToken, codecs::card::MaskedPan),
        flag: Option<&'static str>,
        refund_of: Option<(u64, (u16, u32, u64))>,
        now_ms: u64,
    ) -> Reply {
        let rrn = self.rrn_of(req);
        if let Err(limit) = self.upstream.forward_room() {
            metrics::counter!("switch_limit_reached_total", "limit" => limit).increment(1);
            return Reply::of(Code::UNAVAILABLE, rrn);
        }
        let Some(name) = self.routing.upstreams.get(usize::from(upstream)) else {
            return Reply::of(Code::UNAVAILABLE, rrn);
        };
        let id = self.upstream.next_id();
        let stan = self.upstream.next_stan();
        let transmission = transmission_of(now_ms);
        let pending = Pending {
            id,
            upstream: name.clone(),
            stan,
            transmission,
            mti: if req.op == Op::PreAuth { 100 } else { 200 },
            processing: if req.op == Op::Refund { 20 } else { 0 },
            key: req.key,
            created_ms: now_ms,
            merchant: m,
            merchant_id: self.dir().merchant(m).map_or([b' '; 15], |m| m.id),
            terminal: req.terminal_id,
            amount_minor: req.amount_minor,
            currency: req.currency,
            rrn,
            making: Some(Box::new(Making {
                op: match req.op {
                    Op::PreAuth => ForwardOp::PreAuth,
                    Op::Refund => ForwardOp::Refund,
                    _ => ForwardOp::Sale,
                },
                terminal: req.terminal_id,
                card,
                content_crc: req.content_crc,
                flag,
                extras: req.extras.map(|e| Box::new(e.clone())),
                refund_of: refund_of.map(|r| r.0),
            })),
        };
        let rec = UpstreamRecord::Forward(pending);
        let seq = self.record_upstream(&rec);
        let UpstreamRecord::Forward(pending) = rec else {
            return Reply::of(Code::SYSTEM_MALFUNCTION, rrn);
        };
        // In memory before the shell can send it (it sends only once the
        // record is durable, after this returns).
        self.upstream.add_forward(pending);
        match seq {
            Ok(seq) => Reply {
                wait: Wait::Upstream(ForwardRef {
                    id,
                    upstream,
                    stan,
                    transmission,
                    original: refund_of.map(|r| r.1),
                }),
                record_seq: seq,
                ..Reply::of(Code::UNAVAILABLE, rrn)
            },
            Err(code) => {
                self.upstream.take_forward(id);
                Reply::of(code, rrn)
            }
        }
    }

    /// [`crate::Command::Upstream`]: the payment with the issuer's
    /// decision, or 91 (reversed when it was sent), or a stand-in approval
    /// (with its 0120 advice). The answer waits for every record it made.
    pub(crate) fn upstream_ended(&self, forward: u64, outcome: Outcome, now_ms: u64) -> Reply {
        let Some((p, making)) = self.upstream.begin_end(forward) else {
            // Ended already, or unknown: nothing to answer.
            return Reply::of(Code::SYSTEM_MALFUNCTION, [b'0'; 12]);
        };
        let mut last_seq = 0;
        if outcome == Outcome::TimedOut {
            match self.queue_saf(
                self.saf_of_forward(&p, SafKind::TimeoutReversal, now_ms),
                true,
            ) {
                Ok(seq) => last_seq = seq,
                Err(code) => {
                    // Not journaled: the forward stays pending, so a crash
                    // or the next attempt still reverses it.
                    self.upstream.restore_making(forward, making);
                    return Reply::of(code, p.rrn);
                }
            }
        }
        if let Some(pid) = making.refund_of {
            let reply = self.end_refund(&p, &making, pid, outcome, now_ms);
            last_seq = last_seq.max(reply.record_seq);
            self.upstream.take_forward(forward);
            let _ = self.record_upstream(&UpstreamRecord::ForwardDone(forward));
            return Reply {
                wait: self.answer_wait(last_seq),
                record_seq: last_seq,
                ..reply
            };
        }
        let (code, auth_code, stood_in) = match outcome {
            Outcome::Answered { code, auth_code } => {
                (code, auth_code.filter(|_| code.approved()), false)
            }
            Outcome::TimedOut | Outcome::NotSent => {
                if self.stand_in.allows(p.currency, p.amount_minor) {
                    metrics::counter!("switch_upstream_stand_in_total", "upstream" => p.upstream.clone())
                        .increment(1);
                    (Code::APPROVED, Some(self.assign_auth_code()), true)
                } else {
                    (Code::UNAVAILABLE, None, false)
                }
            }
        };
        let reply = self.make_forwarded_payment(&p, &making, code, auth_code, stood_in, now_ms);
        last_seq = last_seq.max(reply.record_seq);
        let made = reply.code == code;
        if made && stood_in {
            let mut advice = self.saf_of_forward(&p, SafKind::StandIn, now_ms);
            advice.auth_code = auth_code.unwrap_or([b' '; 6]);
            advice.code = code;
            if let Ok(seq) = self.queue_saf(advice, true) {
                last_seq = last_seq.max(seq);
            }
        }
        if !made && code.approved() && !stood_in {
            // The issuer approved but the payment could not be kept (memory
            // or journal full): the terminal gets 96, and the issuer's hold
            // is reversed rather than left orphaned.
            if let Ok(seq) = self.queue_saf(
                self.saf_of_forward(&p, SafKind::TimeoutReversal, now_ms),
                true,
            ) {
                last_seq = last_seq.max(seq);
            }
        }
        self.upstream.take_forward(forward);
        if !made {
            let _ = self.record_upstream(&UpstreamRecord::ForwardDone(forward));
        }
        Reply {
            wait: self.answer_wait(last_seq),
            record_seq: last_seq,
            ..reply
        }
    }

    /// A refund of an issuer-decided payment goes to its issuer, once the
    /// local rules allow it (amount, currency, status): `None` when the
    /// payment was decided here.
    pub(crate) fn forward_refund(
        &self,
        req: &Request<'_>,
        m: u32,
        payment: u64,
        now_ms: u64,
    ) -> Option<Reply> {
        let p = self.state.get(payment)?;
        let f = p.upstream.as_ref()?;
        let u = self.routing.index_of(&f.upstream)?;
        let mut trial = p.clone();
        if let Err(code) = trial.refund(req.amount_minor, req.currency, now_ms) {
            return Some(self.refusal(req, code));
        }
        let original = (f.mti, f.stan, f.transmission);
        let card = (p.card_token, p.masked_pan);
        Some(self.forward_made(req, m, u, card, None, Some((payment, original)), now_ms))
    }

    /// How a forwarded refund ended: approved by the issuer, the refund is
    /// made here (as a local one would be, with the issuer's F38 when it
    /// gives one); else the terminal gets the issuer's code, or 91.
    fn end_refund(
        &self,
        p: &Pending,
        making: &Making,
        payment: u64,
        outcome: Outcome,
        now_ms: u64,
    ) -> Reply {
        let (code, auth_code) = match outcome {
            Outcome::Answered { code, auth_code } => (code, auth_code),
            Outcome::TimedOut | Outcome::NotSent => (Code::UNAVAILABLE, None),
        };
        let req = Request {
            original: Some(crate::command::OriginalRef::Payment(payment)),
            ..request_of(p, making)
        };
        let mut reply = if code.approved() {
            self.follow_up_here(&req, p.merchant, auth_code, now_ms)
        } else {
            Reply::of(code, p.rrn)
        };
        if code.approved() && !reply.code.approved() {
            // The issuer refunded, but the refund could not be made here
            // (the payment changed meanwhile, or memory let it go): the
            // terminal gets the refusal and the issuer a reversal.
            reply.wait = Wait::Nothing;
            if let Ok(seq) = self.queue_saf(
                self.saf_of_forward(p, SafKind::TimeoutReversal, now_ms),
                true,
            ) {
                reply.record_seq = reply.record_seq.max(seq);
            }
        }
        if let Some(k) = p.key {
            self.idempotency.store(
                k,
                Answer {
                    code: reply.code,
                    rrn: reply.rrn,
                    auth_code: reply.auth_code.filter(|_| reply.code.approved()),
                    content_crc: making.content_crc,
                    seq: reply.record_seq,
                    at_ms: now_ms,
                },
            );
        }
        reply
    }

    /// The payment an issuer (or stand-in) decided, recorded with the
    /// terminal's answer; its reply.
    fn make_forwarded_payment(
        &self,
        p: &Pending,
        making: &Making,
        code: Code,
        auth_code: Option<[u8; 6]>,
        stood_in: bool,
        now_ms: u64,
    ) -> Reply {
        let req = request_of(p, making);
        let op = req.op;
        let approved = code.approved();
        let auth = auth_code.unwrap_or([b' '; 6]);
        let mut payment =
            self.new_payment(&req, p.merchant, code, making.card, (auth, p.rrn), now_ms);
        payment.record(op.operation(), p.amount_minor, now_ms, code);
        if let Some(reason) = making.flag {
            payment.flag(reason, now_ms);
        }
        payment.upstream = Some(Box::new(Forwarded {
            forward: p.id,
            upstream: p.upstream.clone(),
            stan: p.stan,
            transmission: p.transmission,
            mti: p.mti,
            stood_in,
        }));
        let hold_due = (payment.status == Status::Uncaptured).then(|| {
            self.dir()
                .merchant(p.merchant)
                .map_or(now_ms, |m| m.hold_end(now_ms).0)
        });
        let answer = p.key.map(|k| {
            let a = Answer {
                code,
                rrn: p.rrn,
                auth_code: approved.then_some(auth),
                content_crc: making.content_crc,
                seq: 0,
                at_ms: now_ms,
            };
            (k, a)
        });
        let key = p
            .key
            .map(|k| OriginalKey {
                merchant: p.merchant,
                mti: k.mti,
                stan: k.stan,
                transmission: k.transmission,
            })
            .filter(|_| approved);
        let reply = Reply {
            auth_code: approved.then_some(auth),
            payment_id: Some(payment.id),
            ..Reply::of(code, p.rrn)
        };
        let out = self.insert(payment, key, hold_due, answer, reply);
        if out.code == code {
            if let Some((k, mut a)) = answer {
                a.seq = out.record_seq;
                self.idempotency.store(k, a);
            }
        }
        out
    }

    /// A SAF entry for forward `p`.
    fn saf_of_forward(&self, p: &Pending, kind: SafKind, now_ms: u64) -> SafEntry {
        SafEntry {
            id: self.upstream.next_id(),
            kind,
            upstream: p.upstream.clone(),
            stan: self.upstream.next_stan(),
            transmission: transmission_of(now_ms),
            created_ms: now_ms,
            original_mti: p.mti,
            original_stan: p.stan,
            original_transmission: p.transmission,
            forward: p.id,
            processing: p.processing,
            amount_minor: p.amount_minor,
            replacement_minor: None,
            currency: p.currency,
            terminal: p.terminal,
            merchant_id: p.merchant_id,
            rrn: p.rrn,
            auth_code: [b' '; 6],
            code: Code::UNAVAILABLE,
        }
    }

    /// The advice of a capture or reversal of issuer-decided payment `p`.
    pub(crate) fn saf_of_follow_up(
        &self,
        p: &Payment,
        op: Op,
        amount_minor: u64,
        replacement_minor: Option<u64>,
        now_ms: u64,
    ) -> Option<SafEntry> {
        let f = p.upstream.as_ref()?;
        let kind = match op {
            // A partial capture leaves the hold open, here and at the
            // issuer.
            Op::Capture if p.status == crate::lifecycle::Status::Uncaptured => {
                SafKind::PartialCapture
            }
            Op::Capture => SafKind::Capture,
            Op::Reversal => SafKind::Reversal,
            _ => return None,
        };
        Some(SafEntry {
            id: self.upstream.next_id(),
            kind,
            upstream: f.upstream.clone(),
            stan: self.upstream.next_stan(),
            transmission: transmission_of(now_ms),
            created_ms: now_ms,
            original_mti: f.mti,
            original_stan: f.stan,
            original_transmission: f.transmission,
            forward: 0,
            processing: 0,
            amount_minor,
            replacement_minor,
            currency: p.currency,
            terminal: p.terminal,
            merchant_id: self.dir().merchant(p.merchant).map_or([b' '; 15], |m| m.id),
            rrn: p.rrn,
            auth_code: p.auth_code,
            code: Code::APPROVED,
        })
    }

    /// Queues `e`; beyond `saf.entries_max` only when `force` (a reversal
    /// or advice of something already done, which must not be lost: the
    /// forwards stop before the limit, so these stay bounded by them).
    pub(crate) fn queue_saf(&self, e: SafEntry, force: bool) -> Result<u64, Code> {
        if !force && !self.upstream.saf_room() {
            metrics::counter!("switch_limit_reached_total", "limit" => "saf_entries_max")
                .increment(1);
            return Err(Code::SYSTEM_MALFUNCTION);
        }
        let id = e.id;
        let rec = UpstreamRecord::SafQueued(e);
        let seq = self.record_upstream(&rec);
        let UpstreamRecord::SafQueued(e) = rec else {
            return Err(Code::SYSTEM_MALFUNCTION);
        };
        self.upstream.add_saf(e);
        match seq {
            Ok(seq) => Ok(seq),
            Err(code) => {
                self.upstream.remove_saf(id);
                Err(code)
            }
        }
    }

    /// [`crate::Command::SafDone`].
    pub(crate) fn saf_done(&self, id: u64) -> Reply {
        let Some(e) = self.upstream.remove_saf(id) else {
            return Reply::of(Code::UNABLE_TO_LOCATE, [b'0'; 12]);
        };
        match self.record_upstream(&UpstreamRecord::SafDone(id)) {
            Ok(seq) => Reply {
                count: 1,
                record_seq: seq,
                ..Reply::of(Code::APPROVED, e.rrn)
            },
            Err(code) => {
                self.upstream.add_saf(e);
                Reply::of(code, [b'0'; 12])
            }
        }
    }

    /// [`crate::Command::ReverseOrphans`]: each forward still pending after
    /// recovery whose answer was not journaled gets a reversal; the rest
    /// (answered, the closing record lost) just end.
    pub(crate) fn reverse_orphans(&self, now_ms: u64) -> Reply {
        let mut reversed = 0;
        let orphans = self.upstream.forwards_list();
        if orphans.is_empty() {
            return Reply::of(Code::APPROVED, [b'0'; 12]);
        }
        // A payment naming its forward proves the answer was journaled,
        // even when a snapshot caught it before its answer was remembered:
        // one pass over memory for all of them.
        let ids: std::collections::HashSet<u64> = orphans.iter().map(|p| p.id).collect();
        let mut made = std::collections::HashSet::new();
        self.state.for_each(|pay| {
            if let Some(f) = pay.upstream.as_ref().filter(|f| ids.contains(&f.forward)) {
                made.insert(f.forward);
            }
        });
        for p in orphans {
            let answered =
                made.contains(&p.id) || p.key.is_some_and(|k| self.idempotency.get(&k).is_some());
            if !answered && !self.upstream.saf_has_forward(p.id) {
                let e = self.saf_of_forward(&p, SafKind::TimeoutReversal, now_ms);
                if self.queue_saf(e, true).is_err() {
                    continue;
                }
                reversed += 1;
            }
            self.upstream.take_forward(p.id);
            let _ = self.record_upstream(&UpstreamRecord::ForwardDone(p.id));
        }
        Reply {
            count: reversed,
            ..Reply::of(Code::APPROVED, [b'0'; 12])
        }
    }

    /// Replays an upstream record (recovery).
    pub(crate) fn replay_upstream(&self, rec: UpstreamRecord) {
        match rec {
            UpstreamRecord::Forward(p) => self.upstream.add_forward(p),
            UpstreamRecord::ForwardDone(id) => {
                self.upstream.take_forward(id);
            }
            UpstreamRecord::SafQueued(e) => self.upstream.add_saf(e),
            UpstreamRecord::SafDone(id) => {
                self.upstream.remove_saf(id);
            }
        }
    }
}

/// The terminal's request a forward stands for, as far as making its
/// payment (or its refund) needs it: no card (the token and masked PAN
/// are kept apart), no original.
fn request_of<'a>(p: &'a Pending, making: &'a Making) -> Request<'a> {
    Request {
        op: match making.op {
            ForwardOp::PreAuth => Op::PreAuth,
            ForwardOp::Sale => Op::Sale,
            ForwardOp::Refund => Op::Refund,
        },
        key: p.key,
        repeat: false,
        content_crc: making.content_crc,
        merchant_id: &p.merchant_id,
        terminal_id: making.terminal,
        pan: None,
        expiry: None,
        amount_minor: p.amount_minor,
        currency: p.currency,
        original: None,
        replacement_minor: None,
        channel: crate::command::Channel::Other,
        eci: None,
        rrn: Some(p.rrn),
        extras: making.extras.as_deref(),
        keep_open: false,
    }
}
