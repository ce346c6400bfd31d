//! Webhook events as a pure function of journal records: what a merchant
//! is told about a change, decided from the change's record alone.
//!
//! Every payment change is one journal record holding the payment after
//! it, whose last history entry is the activity the change appended. So
//! the event of a change is a function of (record, its journal sequence):
//! the same change always gives the same event, with the same id, however
//! often and after however many restarts it is computed. The shell tails
//! the journal, calls [`of_record`] and queues what comes out; it never
//! decides anything about a payment itself. No I/O, no clock.
//!
//! The body is the contract's JSON (`/work/shared/webhooks.md`, fuller copy
//! in `docs/webhooks.md`), written by hand here (the engine has no serde):
//! every string field is escaped, card data is the masked PAN only.

use std::fmt::Write as _;

use crate::lifecycle::{Activity, Operation, Payment};
use crate::record::PaymentRecord;

/// Longest body an event can have, bytes: every field is bounded (ids,
/// amounts as u64, an 8-byte terminal, a 12-byte RRN, a 6-byte auth code, a
/// 19-character masked PAN, each escaped at most 6 times its length), and
/// the merchant id is at most [`MERCHANT_ID_BYTES_MAX`]. The delivery queue
/// relies on it to bound its memory.
pub const EVENT_BODY_BYTES_MAX: usize = 1_024;
/// Longest merchant id written into a body (F42 is 15 characters).
pub const MERCHANT_ID_BYTES_MAX: usize = 32;
/// Prefix of every event id.
pub const EVENT_ID_PREFIX: &str = "evt_";

/// What an event says happened. Its `label` is the contract's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A pre-authorization was approved (a hold is in place).
    Authorized,
    /// A sale was approved (authorized and captured at once).
    Succeeded,
    /// An authorization (pre-authorization or sale) was declined.
    Declined,
    /// A pre-authorization was captured, by a request or automatically.
    Captured,
    /// A refund, full or partial.
    Refunded,
    /// A reversal (a cancelled hold, a reversed payment, in full or down to
    /// a replacement amount) or the reversal of a refund: the body's status
    /// and amounts say which.
    Cancelled,
    /// A hold ended uncaptured.
    Expired,
    /// The payment was marked as scam.
    FlaggedScam,
}

impl EventType {
    /// Every type, for tables and tests.
    pub const ALL: [EventType; 8] = [
        EventType::Authorized,
        EventType::Succeeded,
        EventType::Declined,
        EventType::Captured,
        EventType::Refunded,
        EventType::Cancelled,
        EventType::Expired,
        EventType::FlaggedScam,
    ];

    /// The contract's `type` string.
    pub const fn label(self) -> &'static str {
        match self {
            EventType::Authorized => "payment.authorized",
            EventType::Succeeded => "payment.succeeded",
            EventType::Declined => "payment.declined",
            EventType::Captured => "payment.captured",
            EventType::Refunded => "payment.refunded",
            EventType::Cancelled => "payment.cancelled",
            EventType::Expired => "payment.expired",
            EventType::FlaggedScam => "payment.flagged_scam",
        }
    }

    /// The type of `label`, for reading the queue back.
    pub fn of_label(label: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.label() == label)
    }

    /// The type of the change that appended `a`. An approved activity gives
    /// its operation's type; a declined one is `payment.declined` only for
    /// an authorization. A refused follow-up (a capture, refund or cancel
    /// answered 12 or 13, kept in the history) and a declined incremental
    /// authorization change no amount or status: no event. An approved
    /// increment is `payment.authorized` (the amount held changed); taking
    /// the scam flag off has no type in the contract: no event.
    pub fn of_activity(a: &Activity) -> Option<EventType> {
        if !a.code.approved() {
            return matches!(a.op, Operation::PreAuth | Operation::Sale)
                .then_some(EventType::Declined);
        }
        Some(match a.op {
            Operation::PreAuth => EventType::Authorized,
            Operation::Sale => EventType::Succeeded,
            Operation::Capture | Operation::AutoCapture => EventType::Captured,
            Operation::Refund => EventType::Refunded,
            Operation::Reversal | Operation::RefundReversal => EventType::Cancelled,
            Operation::Expiry => EventType::Expired,
            Operation::Flag => EventType::FlaggedScam,
            Operation::Increment => EventType::Authorized,
            Operation::Unflag => return None,
        })
    }
}

/// One event, ready to queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `evt_` and the journal sequence of the change (see [`event_id`]).
    pub id: String,
    /// What happened.
    pub kind: EventType,
    /// The payment it is about.
    pub payment_id: u64,
    /// The merchant's index (the shell knows where to send it).
    pub merchant: u32,
    /// The journal sequence of the change: the order of events per payment.
    pub seq: u64,
    /// When it happened, Unix seconds (the activity's time).
    pub created_s: u64,
    /// When it happened, Unix ms (the activity's time; the shell measures
    /// change-to-delivery latency from it).
    pub at_ms: u64,
    /// The contract's JSON, at most [`EVENT_BODY_BYTES_MAX`] bytes.
    pub body: String,
}

/// The id of the event of the change journaled at `seq`: `evt_` and the
/// sequence as 16 lower-case hex digits. The journal never gives a
/// sequence twice, so ids are unique; fixed width, so they sort as the
/// changes do.
pub fn event_id(seq: u64) -> String {
    format!("{EVENT_ID_PREFIX}{seq:016x}")
}

/// The journal sequence an event id was made from, `None` for anything
/// that is not an event id.
pub fn seq_of_event_id(id: &str) -> Option<u64> {
    let hex = id.strip_prefix(EVENT_ID_PREFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The history entry that says what the change journaled with this
/// payment image was: its last entry, except for an authorization the risk
/// rules flagged at once. That change appends two entries at the same
/// instant, the authorization and the flag, as a payment's first two: the
/// merchant is told of the authorization (with `scam` true in its body),
/// and `payment.flagged_scam` is kept for a flag after it.
pub fn entry_of_change(history: &[Activity]) -> Option<&Activity> {
    match history {
        [auth, flag]
            if flag.op == Operation::Flag
                && matches!(auth.op, Operation::PreAuth | Operation::Sale)
                && auth.at_ms == flag.at_ms =>
        {
            Some(auth)
        }
        _ => history.last(),
    }
}

/// The event of the change journaled at `seq` as `record`, for the
/// merchant whose MID is `merchant_id`; `None` when the change tells the
/// merchant nothing (a payment with no history).
pub fn of_record(seq: u64, record: &PaymentRecord, merchant_id: &str) -> Option<Event> {
    let p = &record.payment;
    let last = entry_of_change(&p.history)?;
    let kind = EventType::of_activity(last)?;
    let id = event_id(seq);
    let created_s = last.at_ms / 1_000;
    let body = body(&id, kind, created_s, merchant_id, p, last);
    Some(Event {
        id,
        kind,
        payment_id: p.id,
        merchant: p.merchant,
        seq,
        created_s,
        at_ms: last.at_ms,
        body,
    })
}

/// The contract's JSON for one event, fields in the contract's order.
fn body(
    id: &str,
    kind: EventType,
    created_s: u64,
    merchant_id: &str,
    p: &Payment,
    last: &Activity,
) -> String {
    let mut s = String::with_capacity(512);
    let mid = truncate(merchant_id, MERCHANT_ID_BYTES_MAX);
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "{{\"id\":{},\"type\":\"{}\",\"created\":{created_s},\"merchant_id\":{},",
        Json(id),
        kind.label(),
        Json(mid),
    );
    let _ = write!(
        s,
        "\"payment\":{{\"id\":\"{}\",\"status\":\"{}\",\"amount_minor\":{},\
         \"captured_minor\":{},\"refunded_minor\":{},\"currency\":{},",
        p.id,
        p.status.label(),
        p.authorized_minor,
        p.captured_minor,
        p.refunded_minor(),
        p.currency,
    );
    let _ = write!(
        s,
        "\"terminal_id\":{},\"rrn\":{},\"auth_code\":{},\"response_code\":{},\
         \"card\":{},\"scam\":{}}}}}",
        Json(&String::from_utf8_lossy(&p.terminal)),
        Json(&String::from_utf8_lossy(&p.rrn)),
        Json(&String::from_utf8_lossy(auth_code(p, last))),
        Json(&String::from_utf8_lossy(&last.code.0)),
        Json(p.masked_pan.as_str()),
        p.scam,
    );
    debug_assert!(s.len() <= EVENT_BODY_BYTES_MAX, "event body over its bound");
    s
}

/// The auth code to show: none for a declined authorization (the field
/// holds no approval), else the one given at approval.
fn auth_code<'a>(p: &'a Payment, last: &Activity) -> &'a [u8] {
    let declined = !last.code.approved() && matches!(last.op, Operation::PreAuth | Operation::Sale);
    if declined || p.auth_code.iter().all(|&b| b == 0 || b == b' ') {
        b""
    } else {
        &p.auth_code
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A JSON string literal (quotes and escapes).
struct Json<'a>(&'a str);

impl std::fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::lifecycle::tests::payment;
    use crate::lifecycle::{Kind, Status};
    use codecs::card::MaskedPan;
    use proptest::prelude::*;

    fn rec(p: Payment) -> PaymentRecord {
        PaymentRecord {
            payment: p,
            index: None,
            answer: None,
        }
    }

    fn json(e: &Event) -> serde_json::Value {
        serde_json::from_str(&e.body).expect("the body is JSON")
    }

    #[test]
    fn each_change_gives_the_contracts_type() {
        let mut p = payment(Kind::PreAuth, 1_000);
        p.record(Operation::PreAuth, 1_000, 1_764_979_200_123, Code::APPROVED);
        let e = of_record(7, &rec(p.clone()), "DEMO00000000001").expect("event");
        assert_eq!(e.kind, EventType::Authorized);
        assert_eq!(e.id, "evt_0000000000000007");
        assert_eq!(e.created_s, 1_764_979_200);
        assert_eq!(e.at_ms / 1_000, e.created_s);
        let v = json(&e);
        assert_eq!(v["type"], "payment.authorized");
        assert_eq!(v["merchant_id"], "DEMO00000000001");
        assert_eq!(v["payment"]["status"], "uncaptured");
        assert_eq!(v["payment"]["card"], "411111******1111");
        assert_eq!(v["payment"]["amount_minor"], 1_000);
        assert_eq!(v["payment"]["id"], "1");

        p.capture(900, 978, 0, false, 1_764_979_300_000)
            .expect("capture");
        let e = of_record(8, &rec(p.clone()), "M").expect("event");
        assert_eq!(e.kind, EventType::Captured);
        assert_eq!(json(&e)["payment"]["captured_minor"], 900);

        let i = p.refund(400, 978, 1_764_979_400_000).expect("refund");
        let v = json(&of_record(9, &rec(p.clone()), "M").expect("event"));
        assert_eq!(v["type"], "payment.refunded");
        assert_eq!(v["payment"]["status"], "partially_refunded");
        assert_eq!(v["payment"]["refunded_minor"], 400);

        p.reverse_refund(i, 1_764_979_500_000)
            .expect("reverse refund");
        let v = json(&of_record(10, &rec(p.clone()), "M").expect("event"));
        assert_eq!(v["type"], "payment.cancelled");
        assert_eq!(v["payment"]["refunded_minor"], 0);
        assert_eq!(v["payment"]["status"], "succeeded");

        p.flag("blocklist_card", 1_764_979_600_000);
        let v = json(&of_record(11, &rec(p.clone()), "M").expect("event"));
        assert_eq!(v["type"], "payment.flagged_scam");
        assert_eq!(v["payment"]["scam"], true);
    }

    #[test]
    fn declines_expiry_auto_capture_and_sales() {
        let mut d = payment(Kind::Sale, 500);
        d.status = Status::Declined;
        d.record(Operation::Sale, 500, 5_000, Code::DO_NOT_HONOR);
        let v = json(&of_record(1, &rec(d), "M").expect("event"));
        assert_eq!(v["type"], "payment.declined");
        assert_eq!(v["payment"]["response_code"], "05");
        assert_eq!(v["payment"]["auth_code"], "");

        let mut s = payment(Kind::Sale, 500);
        s.record(Operation::Sale, 500, 5_000, Code::APPROVED);
        let v = json(&of_record(2, &rec(s), "M").expect("event"));
        assert_eq!(v["type"], "payment.succeeded");
        assert_eq!(v["payment"]["auth_code"], "000001");

        let mut h = payment(Kind::PreAuth, 500);
        assert!(h.end_hold(false, 9_000));
        assert_eq!(
            of_record(3, &rec(h), "M").expect("event").kind,
            EventType::Expired
        );
        let mut a = payment(Kind::PreAuth, 500);
        assert!(a.end_hold(true, 9_000));
        assert_eq!(
            of_record(4, &rec(a), "M").expect("event").kind,
            EventType::Captured
        );

        let mut r = payment(Kind::PreAuth, 500);
        r.reverse(None, 9_000).expect("reverse");
        let v = json(&of_record(5, &rec(r), "M").expect("event"));
        assert_eq!(v["type"], "payment.cancelled");
        assert_eq!(v["payment"]["status"], "cancelled");

        assert_eq!(of_record(6, &rec(payment(Kind::Sale, 1)), "M"), None);
    }

    #[test]
    fn an_authorization_flagged_at_once_is_told_as_the_authorization() {
        let mut p = payment(Kind::Sale, 500);
        p.record(Operation::Sale, 500, 5_000, Code::APPROVED);
        p.flag("velocity", 5_000);
        let v = json(&of_record(1, &rec(p.clone()), "M").expect("event"));
        assert_eq!(v["type"], "payment.succeeded");
        assert_eq!(v["payment"]["scam"], true);
        // A flag after it (another instant) is its own event.
        let mut later = payment(Kind::Sale, 500);
        later.record(Operation::Sale, 500, 5_000, Code::APPROVED);
        later.flag("manual", 6_000);
        let v = json(&of_record(2, &rec(later), "M").expect("event"));
        assert_eq!(v["type"], "payment.flagged_scam");
        // Flagged again later: the last entry again.
        p.flag("manual", 7_000);
        let v = json(&of_record(3, &rec(p), "M").expect("event"));
        assert_eq!(v["type"], "payment.flagged_scam");
    }

    #[test]
    fn event_ids_round_trip_and_reject_others() {
        for seq in [0, 1, 255, u64::MAX] {
            assert_eq!(seq_of_event_id(&event_id(seq)), Some(seq));
        }
        for bad in [
            "",
            "evt_",
            "evt_12",
            "evt_000000000000000G",
            "xvt_0000000000000001",
        ] {
            assert_eq!(seq_of_event_id(bad), None, "{bad}");
        }
        assert!(event_id(9) < event_id(10));
    }

    #[test]
    fn strings_are_escaped() {
        let mut p = payment(Kind::Sale, 1);
        p.terminal = *b"T\"\\\n0001";
        p.record(Operation::Sale, 1, 0, Code::APPROVED);
        let e = of_record(1, &rec(p), "M\"X").expect("event");
        let v = json(&e);
        assert_eq!(v["merchant_id"], "M\"X");
        assert_eq!(v["payment"]["terminal_id"], "T\"\\\n0001");
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
        Operation::Unflag,
        Operation::Increment,
    ];

    proptest! {
        /// Every record gives at most one event, whose id is its sequence's
        /// alone, whose body is JSON within its bound, and which never holds
        /// the clear PAN (only its masked form).
        #[test]
        fn events_are_bounded_unique_and_masked(
            pan in "[1-9][0-9]{15,18}",
            ops in proptest::collection::vec((0usize..OPS.len(), any::<bool>(), any::<u64>()), 0..40),
            seq in any::<u64>(),
            other in any::<u64>(),
            amounts in (any::<u64>(), any::<u64>()),
            mid in "[ -~]{0,40}",
        ) {
            let mut p = payment(Kind::PreAuth, amounts.0);
            p.captured_minor = amounts.1;
            p.masked_pan = MaskedPan::new(pan.as_bytes());
            p.id = other;
            for (op, ok, at) in ops {
                let code = if ok { Code::APPROVED } else { Code::DO_NOT_HONOR };
                p.record(OPS[op], at, at, code);
            }
            let r = rec(p.clone());
            match of_record(seq, &r, &mid) {
                None => {
                    let silent = |a: &Activity| {
                        (!a.code.approved() && !matches!(a.op, Operation::PreAuth | Operation::Sale))
                            || (a.code.approved() && a.op == Operation::Unflag)
                    };
                    prop_assert!(entry_of_change(&p.history).is_none_or(silent));
                }
                Some(e) => {
                    prop_assert_eq!(&e.id, &event_id(seq));
                    prop_assert_eq!(seq_of_event_id(&e.id), Some(seq));
                    prop_assert!(e.body.len() <= EVENT_BODY_BYTES_MAX);
                    prop_assert!(!e.body.contains(&pan));
                    let v: serde_json::Value = serde_json::from_str(&e.body).expect("JSON");
                    prop_assert_eq!(v["id"].as_str(), Some(e.id.as_str()));
                    prop_assert_eq!(v["type"].as_str(), Some(e.kind.label()));
                    prop_assert_eq!(of_record(seq, &r, &mid), Some(e.clone()), "a pure function");
                    if seq != other {
                        prop_assert_ne!(of_record(other, &r, &mid).map(|e| e.id), Some(e.id));
                    }
                }
            }
        }
    }
}
