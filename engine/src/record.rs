//! Journal records and snapshots: how state changes are written down.
//!
//! Every record is a whole payment image plus the index entry and the
//! answer the change produced, so replay is an idempotent upsert in
//! sequence order. Card data: the keyed token and the masked PAN only.
//! Version byte first; every read is checked and a short or inconsistent
//! payload is an error, never a panic.

use codecs::card::{CardToken, MaskedPan};

use crate::code::Code;
use crate::idempotency::{Answer, MessageKey};
use crate::lifecycle::{
    status_of_record_code, status_record_code, Activity, CartItem, Extras, Increment, Kind, More,
    Operation, Payment, Refund, INCREMENTS_PER_PAYMENT_MAX,
};
use crate::state::{OriginalKey, Target};

/// Record type of a payment image.
pub const RECORD_PAYMENT: u8 = 1;
/// Format version written first in every payload and snapshot. Version 2
/// added what an issuer-decided payment remembers of its forwarding
/// (right after the id, so [`forward_id`] reads it without the rest);
/// version 3 added the payment's tagged extensions ([`More`]) at its end.
/// Versions 1 and 2 are still read.
const VERSION: u8 = 3;
/// The version before upstream routing.
const VERSION_1: u8 = 1;
/// The version before the tagged extensions.
const VERSION_2: u8 = 2;
/// Most tagged extensions in one payment.
const EXTENSIONS_MAX: u8 = 64;
/// Magic at the start of a snapshot.
const SNAPSHOT_MAGIC: &[u8; 4] = b"SWSN";

pub use crate::bytes::{DecodeError, In, Out};

/// A change as written: the payment after it, and how to find and answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// The payment after the change.
    pub payment: Payment,
    /// The message key under which the change can be referenced (F90).
    pub index: Option<(OriginalKey, Target)>,
    /// The answer given, for repeats after a restart.
    pub answer: Option<(MessageKey, Answer)>,
}

const OPS: [Operation; 11] = [
    Operation::PreAuth,
    Operation::Sale,
    Operation::Capture,
    Operation::Refund,
    Operation::Reversal,
    Operation::RefundReversal,
    Operation::Expiry,
    Operation::AutoCapture,
    Operation::Flag,
    // Index 9 is the back office's (issue 20); 10 the lifecycle's.
    Operation::Unflag,
    Operation::Increment,
];

fn put_payment(o: &mut Out<'_>, p: &Payment) {
    o.u64(p.id);
    match &p.upstream {
        None => o.u8(0),
        Some(f) => {
            o.u8(1);
            o.u64(f.forward);
            o.text(&f.upstream);
            o.u32(f.stan);
            o.u64(f.transmission);
            o.u16(f.mti);
            o.u8(u8::from(f.stood_in));
        }
    }
    o.u32(p.merchant);
    o.bytes(&p.terminal);
    o.u8(match p.kind {
        Kind::PreAuth => 0,
        Kind::Sale => 1,
    });
    o.u8(status_record_code(p.status));
    o.u16(p.currency);
    o.u64(p.authorized_minor);
    o.u64(p.captured_minor);
    o.u8(p.refunds.len() as u8);
    for r in &p.refunds {
        o.u64(r.amount_minor);
        o.u8(u8::from(r.reversed));
    }
    o.bytes(&p.card_token.0);
    o.text(p.masked_pan.as_str());
    o.u64(p.created_ms);
    o.bytes(&p.auth_code);
    o.bytes(&p.rrn);
    o.u8(u8::from(p.scam));
    o.text(&p.flag_reasons);
    o.u8(p.history.len() as u8);
    for a in &p.history {
        o.u8(OPS.iter().position(|x| *x == a.op).unwrap_or(0) as u8);
        o.u64(a.amount_minor);
        o.u64(a.at_ms);
        o.bytes(&a.code.0);
    }
    match &p.extras {
        None => o.u8(0),
        Some(e) => {
            o.u8(1);
            o.text(&e.merchant_reference);
            o.text(&e.description);
            o.u8(e.cart.len() as u8);
            for c in &e.cart {
                o.text(&c.item);
                o.u32(c.quantity);
                o.u64(c.unit_price_minor);
                o.u32(c.refunded_quantity);
            }
        }
    }
    put_more(o, &p.more);
}

/// Extension tags of [`More`]; never reuse one.
const TAG_ECI: u8 = 1;
const TAG_CHANNEL: u8 = 2;
const TAG_REQUESTED: u8 = 3;
// Tags 4-9: the back office (issue 20).
const TAG_FLAGGED_BY: u8 = 4;
const TAG_FLAG_NOTE: u8 = 5;
const TAG_UNFLAG_REASON: u8 = 6;
const TAG_UNFLAGGED_BY: u8 = 7;
const TAG_UNFLAGGED_MS: u8 = 8;
// Tags 10-19: the lifecycle extensions (issue 20).
const TAG_CAPTURES: u8 = 10;
const TAG_HOLD_FROM: u8 = 11;
const TAG_INCREMENTS: u8 = 12;

/// Writes `more` as a count and tagged extensions (tag, u16 length, value),
/// one per field that is set, in increasing tag order.
fn put_more(o: &mut Out<'_>, more: &More) {
    let at = o.0.len();
    o.u8(0);
    let mut n = 0u8;
    let mut ext = |o: &mut Out<'_>, tag: u8, value: &dyn Fn(&mut Out<'_>)| {
        o.u8(tag);
        let len_at = o.0.len();
        o.u16(0);
        value(o);
        let len = (o.0.len() - len_at - 2).min(usize::from(u16::MAX)) as u16;
        o.0[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
        n += 1;
    };
    if let Some(eci) = more.eci {
        ext(o, TAG_ECI, &|o| o.u8(eci));
    }
    if let Some(channel) = more.channel {
        ext(o, TAG_CHANNEL, &|o| o.u8(channel));
    }
    if let Some(amount) = more.requested_minor {
        ext(o, TAG_REQUESTED, &|o| o.u64(amount));
    }
    if let Some(notes) = more.flag_notes.as_deref() {
        for (tag, text) in [
            (TAG_FLAGGED_BY, &notes.flagged_by),
            (TAG_FLAG_NOTE, &notes.flag_note),
            (TAG_UNFLAG_REASON, &notes.unflag_reason),
            (TAG_UNFLAGGED_BY, &notes.unflagged_by),
        ] {
            if let Some(text) = text {
                ext(o, tag, &|o| o.text(text));
            }
        }
        if let Some(at) = notes.unflagged_ms {
            ext(o, TAG_UNFLAGGED_MS, &|o| o.u64(at));
        }
    }
    if let Some(n) = more.captures {
        ext(o, TAG_CAPTURES, &|o| o.u16(n));
    }
    if let Some(at_ms) = more.hold_from_ms {
        ext(o, TAG_HOLD_FROM, &|o| o.u64(at_ms));
    }
    if !more.increments.is_empty() {
        ext(o, TAG_INCREMENTS, &|o| {
            o.u8(more.increments.len() as u8);
            for inc in &more.increments {
                o.u32(inc.stan);
                o.u64(inc.transmission);
                o.u64(inc.amount_minor);
                o.u8(u8::from(inc.reversed));
            }
        });
    }
    o.0[at] = n;
}

/// Reads the tagged extensions of a version-3 payment. A tag this version
/// does not know is skipped, so an older reader still reads a newer
/// record; a known tag must be read to its last byte.
fn get_more(i: &mut In<'_>) -> Result<More, DecodeError> {
    fn notes(more: &mut More) -> &mut crate::lifecycle::FlagNotes {
        more.flag_notes.get_or_insert_with(Box::default)
    }
    let n = i.u8()?;
    if n > EXTENSIONS_MAX {
        return Err(DecodeError("too many extensions"));
    }
    let mut more = More::default();
    let mut last = None;
    for _ in 0..n {
        let tag = i.u8()?;
        // In increasing order, each once: one way to write each payment.
        if last.is_some_and(|l| tag <= l) {
            return Err(DecodeError("extension tags out of order"));
        }
        last = Some(tag);
        let len = usize::from(i.u16()?);
        let mut v = In(i.take(len)?);
        match tag {
            TAG_ECI => more.eci = Some(v.u8()?),
            TAG_CHANNEL => more.channel = Some(v.u8()?),
            TAG_REQUESTED => more.requested_minor = Some(v.u64()?),
            TAG_FLAGGED_BY => notes(&mut more).flagged_by = Some(v.text()?),
            TAG_FLAG_NOTE => notes(&mut more).flag_note = Some(v.text()?),
            TAG_UNFLAG_REASON => notes(&mut more).unflag_reason = Some(v.text()?),
            TAG_UNFLAGGED_BY => notes(&mut more).unflagged_by = Some(v.text()?),
            TAG_UNFLAGGED_MS => notes(&mut more).unflagged_ms = Some(v.u64()?),
            TAG_CAPTURES => more.captures = Some(v.u16()?),
            TAG_HOLD_FROM => more.hold_from_ms = Some(v.u64()?),
            TAG_INCREMENTS => more.increments = get_increments(&mut v)?,
            _ => continue,
        }
        if !v.done() {
            return Err(DecodeError("extension longer than its value"));
        }
    }
    Ok(more)
}

/// The increments of tag 12: a count, then each one's F11, F7, amount and
/// whether it was reversed.
fn get_increments(i: &mut In<'_>) -> Result<Vec<Increment>, DecodeError> {
    let n = usize::from(i.u8()?);
    if n > INCREMENTS_PER_PAYMENT_MAX {
        return Err(DecodeError("too many increments"));
    }
    let mut increments = Vec::with_capacity(n);
    for _ in 0..n {
        increments.push(Increment {
            stan: i.u32()?,
            transmission: i.u64()?,
            amount_minor: i.u64()?,
            reversed: i.flag()?,
        });
    }
    Ok(increments)
}

fn get_payment(i: &mut In<'_>, version: u8) -> Result<Payment, DecodeError> {
    let id = i.u64()?;
    let upstream = if version >= VERSION_2 && i.flag()? {
        Some(Box::new(crate::lifecycle::Forwarded {
            forward: i.u64()?,
            upstream: i.text()?,
            stan: i.u32()?,
            transmission: i.u64()?,
            mti: i.u16()?,
            stood_in: i.flag()?,
        }))
    } else {
        None
    };
    let merchant = i.u32()?;
    let terminal = i.arr()?;
    let kind = match i.u8()? {
        0 => Kind::PreAuth,
        1 => Kind::Sale,
        _ => return Err(DecodeError("unknown payment kind")),
    };
    let status = status_of_record_code(i.u8()?).ok_or(DecodeError("unknown status"))?;
    let currency = i.u16()?;
    let authorized_minor = i.u64()?;
    let captured_minor = i.u64()?;
    let refunds = get_refunds(i)?;
    let card_token = CardToken(i.arr()?);
    let masked_pan =
        MaskedPan::from_masked(&i.text()?).ok_or(DecodeError("masked PAN shows too much"))?;
    let created_ms = i.u64()?;
    let auth_code = i.arr()?;
    let rrn = i.arr()?;
    let scam = i.flag()?;
    let flag_reasons = i.text()?;
    let history = get_history(i)?;
    let extras = if i.flag()? {
        Some(Box::new(get_extras(i)?))
    } else {
        None
    };
    let more = if version >= VERSION {
        get_more(i)?
    } else {
        More::default()
    };
    Ok(Payment {
        id,
        merchant,
        terminal,
        kind,
        status,
        currency,
        authorized_minor,
        captured_minor,
        refunds,
        card_token,
        masked_pan,
        created_ms,
        auth_code,
        rrn,
        scam,
        flag_reasons,
        history,
        extras,
        journal_seq: 0,
        upstream,
        more,
    })
}

fn get_refunds(i: &mut In<'_>) -> Result<Vec<Refund>, DecodeError> {
    let n = i.u8()?;
    let mut refunds = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        refunds.push(Refund {
            amount_minor: i.u64()?,
            reversed: i.flag()?,
        });
    }
    Ok(refunds)
}

fn get_history(i: &mut In<'_>) -> Result<Vec<Activity>, DecodeError> {
    let n = i.u8()?;
    let mut history = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let op = *OPS
            .get(usize::from(i.u8()?))
            .ok_or(DecodeError("unknown operation"))?;
        history.push(Activity {
            op,
            amount_minor: i.u64()?,
            at_ms: i.u64()?,
            code: Code(i.arr()?),
        });
    }
    Ok(history)
}

fn get_extras(i: &mut In<'_>) -> Result<Extras, DecodeError> {
    let merchant_reference = i.text()?;
    let description = i.text()?;
    let n = i.u8()?;
    let mut cart = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        cart.push(CartItem {
            item: i.text()?,
            quantity: i.u32()?,
            unit_price_minor: i.u64()?,
            refunded_quantity: i.u32()?,
        });
    }
    Ok(Extras {
        merchant_reference,
        description,
        cart,
    })
}

fn put_original_key(o: &mut Out<'_>, k: &OriginalKey, t: &Target) {
    o.u32(k.merchant);
    o.u16(k.mti);
    o.u32(k.stan);
    o.u64(k.transmission);
    o.u64(t.payment);
    match t.refund {
        None => o.u8(0),
        Some(r) => {
            o.u8(1);
            o.u8(r);
        }
    }
}

fn get_original_key(i: &mut In<'_>) -> Result<(OriginalKey, Target), DecodeError> {
    let key = OriginalKey {
        merchant: i.u32()?,
        mti: i.u16()?,
        stan: i.u32()?,
        transmission: i.u64()?,
    };
    let payment = i.u64()?;
    let refund = if i.flag()? { Some(i.u8()?) } else { None };
    Ok((key, Target { payment, refund }))
}

fn put_answer(o: &mut Out<'_>, k: &MessageKey, a: &Answer) {
    o.u16(k.mti);
    o.bytes(&k.terminal);
    o.u32(k.stan);
    o.u64(k.transmission);
    o.bytes(&a.code.0);
    o.bytes(&a.rrn);
    match a.auth_code {
        None => o.u8(0),
        Some(c) => {
            o.u8(1);
            o.bytes(&c);
        }
    }
    o.u32(a.content_crc);
    o.u64(a.at_ms);
}

fn get_answer(i: &mut In<'_>) -> Result<(MessageKey, Answer), DecodeError> {
    let key = MessageKey {
        mti: i.u16()?,
        terminal: i.arr()?,
        stan: i.u32()?,
        transmission: i.u64()?,
    };
    let code = Code(i.arr()?);
    let rrn = i.arr()?;
    let auth_code = if i.flag()? { Some(i.arr()?) } else { None };
    // Answers recovered from the journal are durable: nothing to wait for.
    let answer = Answer {
        code,
        rrn,
        auth_code,
        content_crc: i.u32()?,
        seq: 0,
        at_ms: i.u64()?,
    };
    Ok((key, answer))
}

/// Encodes a record payload into `buf` (cleared first).
pub fn encode(rec: &PaymentRecordRef<'_>, buf: &mut Vec<u8>) {
    buf.clear();
    let mut o = Out(buf);
    o.u8(VERSION);
    put_payment(&mut o, rec.payment);
    match rec.index {
        None => o.u8(0),
        Some((k, t)) => {
            o.u8(1);
            put_original_key(&mut o, &k, &t);
        }
    }
    match rec.answer {
        None => o.u8(0),
        Some((k, a)) => {
            o.u8(1);
            put_answer(&mut o, &k, &a);
        }
    }
}

/// A record to encode, borrowing the payment.
#[derive(Debug, Clone, Copy)]
pub struct PaymentRecordRef<'a> {
    /// The payment after the change.
    pub payment: &'a Payment,
    /// Index entry.
    pub index: Option<(OriginalKey, Target)>,
    /// Answer.
    pub answer: Option<(MessageKey, Answer)>,
}

/// The payment id of a payment record, read without decoding the rest
/// (recovery of records the archive already holds).
///
/// # Errors
/// When the payload is too short or of another version.
pub fn payment_id(payload: &[u8]) -> Result<u64, DecodeError> {
    let mut i = In(payload);
    if !matches!(i.u8()?, VERSION | VERSION_2 | VERSION_1) {
        return Err(DecodeError("unknown record version"));
    }
    i.u64()
}

/// The pending forward a payment record ends (an issuer-decided payment's
/// first record), read without decoding the rest: recovery of records the
/// archive already holds still closes their forwards.
///
/// # Errors
/// When the payload is too short or of an unknown version.
pub fn forward_id(payload: &[u8]) -> Result<Option<u64>, DecodeError> {
    let mut i = In(payload);
    match i.u8()? {
        VERSION_1 => Ok(None),
        VERSION | VERSION_2 => {
            i.u64()?;
            if i.flag()? {
                Ok(Some(i.u64()?))
            } else {
                Ok(None)
            }
        }
        _ => Err(DecodeError("unknown record version")),
    }
}

/// Decodes a record payload.
///
/// # Errors
/// [`DecodeError`] on an unknown version, truncation or bad values.
pub fn decode(payload: &[u8]) -> Result<PaymentRecord, DecodeError> {
    let mut i = In(payload);
    let version = i.u8()?;
    if !matches!(version, VERSION | VERSION_2 | VERSION_1) {
        return Err(DecodeError("unknown record version"));
    }
    let payment = get_payment(&mut i, version)?;
    let index = if i.flag()? {
        Some(get_original_key(&mut i)?)
    } else {
        None
    };
    let answer = if i.flag()? {
        Some(get_answer(&mut i)?)
    } else {
        None
    };
    if !i.done() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(PaymentRecord {
        payment,
        index,
        answer,
    })
}

/// What a snapshot holds.
#[derive(Debug, Default)]
pub struct SnapshotContents {
    /// Every payment.
    pub payments: Vec<Payment>,
    /// Every index entry.
    pub index: Vec<(OriginalKey, Target)>,
    /// Every remembered answer.
    pub answers: Vec<(MessageKey, Answer)>,
    /// Pending forwards (version 2).
    pub forwards: Vec<crate::upstream::Pending>,
    /// SAF entries (version 2).
    pub saf: Vec<crate::upstream::SafEntry>,
}

/// Writes a snapshot from walks over the state: each argument calls the
/// function it is given once per item of its kind.
#[allow(
    clippy::type_complexity,
    reason = "three walks, each a visitor over one map"
)]
pub fn encode_snapshot(
    buf: &mut Vec<u8>,
    payments: &mut dyn FnMut(&mut dyn FnMut(&Payment)),
    index: &mut dyn FnMut(&mut dyn FnMut(&OriginalKey, &Target)),
    answers: &mut dyn FnMut(&mut dyn FnMut(&MessageKey, &Answer)),
    upstream: (&[crate::upstream::Pending], &[crate::upstream::SafEntry]),
) {
    buf.clear();
    buf.extend_from_slice(SNAPSHOT_MAGIC);
    buf.push(VERSION);
    // Counts are patched in after each section.
    let section = |buf: &mut Vec<u8>, fill: &mut dyn FnMut(&mut Vec<u8>) -> u64| {
        let at = buf.len();
        buf.extend_from_slice(&[0; 8]);
        let n = fill(buf);
        buf[at..at + 8].copy_from_slice(&n.to_be_bytes());
    };
    section(buf, &mut |b| {
        let mut n = 0;
        payments(&mut |p| {
            put_payment(&mut Out(b), p);
            n += 1;
        });
        n
    });
    section(buf, &mut |b| {
        let mut n = 0;
        index(&mut |k, t| {
            put_original_key(&mut Out(b), k, t);
            n += 1;
        });
        n
    });
    section(buf, &mut |b| {
        let mut n = 0;
        answers(&mut |k, a| {
            put_answer(&mut Out(b), k, a);
            n += 1;
        });
        n
    });
    crate::upstream::put_snapshot(&mut Out(buf), upstream.0, upstream.1);
}

/// Reads a snapshot.
///
/// # Errors
/// [`DecodeError`] on a bad magic, version, truncation or bad values.
pub fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotContents, DecodeError> {
    let mut i = In(bytes);
    if i.take(4)? != SNAPSHOT_MAGIC {
        return Err(DecodeError("not a snapshot"));
    }
    let version = i.u8()?;
    if !matches!(version, VERSION | VERSION_2 | VERSION_1) {
        return Err(DecodeError("not a snapshot of a known version"));
    }
    let mut out = SnapshotContents::default();
    // Each entry is at least 8 bytes, which bounds every count by the input.
    let bounded = |n: u64, i: &In<'_>| {
        if n as usize > i.0.len() {
            Err(DecodeError("count past the end"))
        } else {
            Ok(n)
        }
    };
    let n = bounded(i.u64()?, &i)?;
    for _ in 0..n {
        out.payments.push(get_payment(&mut i, version)?);
    }
    let n = bounded(i.u64()?, &i)?;
    for _ in 0..n {
        out.index.push(get_original_key(&mut i)?);
    }
    let n = bounded(i.u64()?, &i)?;
    for _ in 0..n {
        out.answers.push(get_answer(&mut i)?);
    }
    if version >= VERSION_2 {
        (out.forwards, out.saf) = crate::upstream::get_snapshot(&mut i)?;
    }
    if !i.done() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::tests::payment;

    fn sample() -> PaymentRecord {
        let mut p = payment(Kind::Sale, 5_000);
        p.refund(1_000, 978, 7).expect("refund");
        p.flag("blocklist_card", 8);
        p.extras = Some(Box::new(Extras {
            merchant_reference: "order-1".into(),
            description: "two mugs".into(),
            cart: vec![CartItem {
                item: "mug".into(),
                quantity: 2,
                unit_price_minor: 2_500,
                refunded_quantity: 0,
            }],
        }));
        let key = OriginalKey {
            merchant: 0,
            mti: 200,
            stan: 7,
            transmission: 1_123_114_959,
        };
        let mkey = MessageKey {
            mti: 200,
            terminal: *b"DEMO0001",
            stan: 7,
            transmission: 1_123_114_959,
        };
        let answer = Answer {
            code: Code::APPROVED,
            rrn: *b"000000000042",
            auth_code: Some(*b"123456"),
            content_crc: 9,
            seq: 0,
            at_ms: 11,
        };
        p.more = More {
            eci: Some(5),
            channel: Some(59),
            requested_minor: Some(5_000),
            captures: Some(2),
            hold_from_ms: Some(12),
            increments: vec![Increment {
                stan: 8,
                transmission: 1_123_114_960,
                amount_minor: 700,
                reversed: true,
            }],
            flag_notes: Some(Box::new(crate::lifecycle::FlagNotes {
                flagged_by: Some("AB-0000-0001".into()),
                flag_note: Some("chargeback ré".into()),
                unflag_reason: Some("verified".into()),
                unflagged_by: Some("operator".into()),
                unflagged_ms: Some(12),
            })),
        };
        // Every operation is written by its index and read back.
        p.history.clear();
        for (n, op) in OPS.iter().enumerate() {
            p.record(*op, n as u64, 20 + n as u64, Code::APPROVED);
        }
        p.record_refused(Operation::Capture, 7, 13, Code::INVALID_AMOUNT);
        PaymentRecord {
            payment: p,
            index: Some((
                key,
                Target {
                    payment: 1,
                    refund: Some(0),
                },
            )),
            answer: Some((mkey, answer)),
        }
    }

    #[test]
    fn records_round_trip_and_hold_no_clear_pan() {
        let rec = sample();
        let mut buf = Vec::new();
        encode(
            &PaymentRecordRef {
                payment: &rec.payment,
                index: rec.index,
                answer: rec.answer,
            },
            &mut buf,
        );
        assert_eq!(decode(&buf).expect("decodes"), rec);
        assert!(!buf.windows(16).any(|w| w == b"4111111111111111"));
        for cut in 0..buf.len() {
            assert!(
                decode(&buf[..cut]).is_err(),
                "truncated at {cut} must not decode"
            );
        }
        let mut bad = buf.clone();
        bad[0] = 9;
        assert!(decode(&bad).is_err());
    }

    /// A record with no index and no answer, its payment's extensions
    /// `more`: its bytes end with the extension count, then two 0 flags.
    fn bare(more: More) -> (Payment, Vec<u8>) {
        let mut p = sample().payment;
        p.more = more;
        let mut buf = Vec::new();
        encode(
            &PaymentRecordRef {
                payment: &p,
                index: None,
                answer: None,
            },
            &mut buf,
        );
        (p, buf)
    }

    #[test]
    fn lifecycle_extensions_round_trip_and_are_bounded() {
        let increment = |n: u32| Increment {
            stan: n,
            transmission: 1_123_114_959 + u64::from(n),
            amount_minor: u64::from(n) * 100,
            reversed: n % 2 == 0,
        };
        for n in [0, 1, INCREMENTS_PER_PAYMENT_MAX as u32] {
            let more = More {
                captures: Some(n as u16),
                hold_from_ms: Some(u64::from(n) * 1_000),
                increments: (0..n).map(increment).collect(),
                ..More::default()
            };
            let (p, buf) = bare(more);
            assert_eq!(decode(&buf).expect("decodes").payment, p);
        }
        // One increment more than a payment may have is refused.
        let (_, buf) = bare(More {
            increments: (0..=INCREMENTS_PER_PAYMENT_MAX as u32)
                .map(increment)
                .collect(),
            ..More::default()
        });
        let refused = decode(&buf).expect_err("refused");
        assert_eq!(refused.0, "too many increments");
    }

    #[test]
    fn extensions_round_trip_and_unknown_tags_are_skipped() {
        let (p, buf) = bare(More::default());
        assert_eq!(buf[buf.len() - 3..], [0, 0, 0]);
        // A newer writer's tag 200 (3 bytes): read past, the rest intact.
        let mut newer = buf[..buf.len() - 3].to_vec();
        newer.extend_from_slice(&[1, 200, 0, 3, b'a', b'b', b'c', 0, 0]);
        assert_eq!(decode(&newer).expect("skips tag 200").payment, p);
        // A known tag longer than its value is refused, not misread.
        let mut long = buf[..buf.len() - 3].to_vec();
        long.extend_from_slice(&[1, TAG_ECI, 0, 2, 5, 5, 0, 0]);
        assert!(decode(&long).is_err());
        // Version 2 (no extensions) is still read.
        let mut v2 = buf.clone();
        v2[0] = VERSION_2;
        v2.remove(v2.len() - 3);
        assert_eq!(decode(&v2).expect("version 2").payment, p);
    }

    #[test]
    fn snapshots_round_trip() {
        let rec = sample();
        let mut buf = Vec::new();
        let (k, t) = rec.index.expect("index");
        let (mk, a) = rec.answer.expect("answer");
        encode_snapshot(
            &mut buf,
            &mut |f| f(&rec.payment),
            &mut |f| f(&k, &t),
            &mut |f| f(&mk, &a),
            (&[], &[]),
        );
        let s = decode_snapshot(&buf).expect("decodes");
        assert_eq!(
            (s.payments.len(), s.index.len(), s.answers.len()),
            (1, 1, 1)
        );
        assert_eq!(s.payments[0], rec.payment);
        assert!(decode_snapshot(&buf[..buf.len() - 1]).is_err());
        let mut huge = buf.clone();
        huge[5..13].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(
            decode_snapshot(&huge).is_err(),
            "a count past the end is refused before looping"
        );
    }
}
