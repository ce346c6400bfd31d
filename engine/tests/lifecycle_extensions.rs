//! The lifecycle extensions of issue 20 through the engine's doors:
//! incremental authorizations (one payment per chain, the hold raised and
//! restarted, the original's F38) and partial captures (the rest held
//! until a final capture, the over-capture bound on the sum), with the
//! timers and a replayed journal.

use std::sync::{Arc, Mutex};

use codecs::card::{Pan, TokenKey};
use codecs::iso8583::datetime::Expiry;
use codecs::iso8583::f90::OriginalData;
use codecs::iso8583::Mti;
use engine::{
    Channel, Code, Command, Engine, Fetch, Fetched, Journal, Merchant, MessageKey, Op, OriginalRef,
    Query, QueryReply, Reply, Request, Settings, Stats, Status, Wait,
};

/// 2026-11-23T11:49:10Z.
const NOW_MS: u64 = 1_795_434_550_000;
const HOLD_MS: u64 = 7 * 86_400_000;
const MID: &[u8; 15] = b"DEMO00000000001";
const TID: [u8; 8] = *b"DEMO0001";
const F7: u64 = 1_123_114_959;
const CARD: &[u8] = b"4111111111111111";
const OTHER_CARD: &[u8] = b"5555555555554444";

/// Records as appended: (record type, payload).
type Records = Vec<(u8, Vec<u8>)>;

/// A journal that keeps what it is given.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Records>>);

impl Journal for Recorder {
    fn append(&self, record_type: u8, payload: &[u8]) -> Result<u64, Code> {
        let mut records = self.0.lock().expect("lock");
        records.push((record_type, payload.to_vec()));
        Ok(records.len() as u64)
    }
}

fn engine(journal: &Recorder) -> Engine {
    let merchant = Merchant {
        id: *MID,
        terminals: vec![TID],
        enabled: true,
        currencies: vec![978, 840],
        over_capture_pct: 20,
        refunds_allowed: true,
        moto_allowed: true,
        hold_period_ms: HOLD_MS,
        auto_capture_ms: None,
    };
    let settings = Settings {
        merchants: vec![merchant],
        payments_max: 1_000,
        idempotency_entries_max: 1_000,
        idempotency_window_ms: 30 * 86_400_000,
        routing: Default::default(),
        stand_in: Default::default(),
        forwards_max: 1_000,
        saf_max: 1_000,
    };
    let key = TokenKey::new(b"lifecycle");
    let policy = risk::Policy::embedded(&engine::tokenizer(&key));
    let mut e = Engine::new(settings, key, policy, NOW_MS);
    e.set_journal(Box::new(journal.clone()));
    e
}

/// F90 naming message (`mti`, `stan`).
fn f90(mti: &str, stan: u32) -> Option<OriginalRef> {
    let transmission: [u8; 10] = format!("{F7:010}").into_bytes().try_into().expect("10");
    Some(OriginalRef::Message(OriginalData {
        mti: Mti::parse(mti).expect("mti"),
        stan,
        transmission,
    }))
}

/// Message `stan` asking `op` for `amount`.
fn request(op: Op, stan: u32, amount: u64, original: Option<OriginalRef>) -> Request<'static> {
    let mti = match op {
        Op::PreAuth => 100,
        Op::Capture => 220,
        Op::Reversal => 400,
        _ => 200,
    };
    Request {
        op,
        key: Some(MessageKey {
            mti,
            terminal: TID,
            stan,
            transmission: F7,
        }),
        repeat: false,
        content_crc: stan ^ amount as u32,
        merchant_id: MID,
        terminal_id: TID,
        pan: op.authorizes().then(|| Pan::new(CARD)).flatten(),
        expiry: Expiry::parse(b"2812"),
        amount_minor: amount,
        currency: 978,
        original,
        replacement_minor: None,
        channel: Channel::CardPresent,
        eci: None,
        rrn: None,
        extras: None,
        keep_open: false,
    }
}

/// An incremental authorization: a 0100 naming `of` (an 0100's STAN).
fn increment(stan: u32, amount: u64, of: u32) -> Request<'static> {
    request(Op::PreAuth, stan, amount, f90("0100", of))
}

/// A capture of the 0100 `of`; partial when `keep_open`.
fn capture(stan: u32, amount: u64, of: u32, keep_open: bool) -> Request<'static> {
    Request {
        keep_open,
        ..request(Op::Capture, stan, amount, f90("0100", of))
    }
}

/// Applies `req`, answering the engine's archive lookups as an empty
/// archive would.
fn apply(e: &Engine, req: Request<'_>, now_ms: u64) -> Reply {
    let mut fetched = Fetched::default();
    let mut reply = e.apply(Command::Message(req), now_ms);
    for _ in 0..3 {
        let Wait::Archive(fetch) = reply.wait else {
            return reply;
        };
        match fetch {
            Fetch::Answer(_) => fetched.answer = Some(None),
            _ => fetched.original = Some(None),
        }
        let resume = Command::Resume {
            request: req,
            fetched: &fetched,
        };
        reply = e.apply(resume, now_ms);
    }
    reply
}

fn payment(e: &Engine, id: u64) -> engine::Payment {
    match e.query(Query::Payment { scope: &[0], id }) {
        QueryReply::Payment(Some(p)) => p,
        other => panic!("payment {id}: {other:?}"),
    }
}

fn stats(e: &Engine) -> Stats {
    match e.query(Query::Stats) {
        QueryReply::Stats(s) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_increment_raises_the_one_hold_and_answers_with_its_f38() {
    let e = engine(&Recorder::default());
    let first = apply(&e, request(Op::PreAuth, 1, 1_000, None), NOW_MS);
    assert_eq!(first.code, Code::APPROVED);
    let id = first.payment_id.expect("payment");
    let later = NOW_MS + 3_600_000;
    let raised = apply(&e, increment(2, 500, 1), later);
    assert_eq!(raised.code, Code::APPROVED);
    // The known defect: it used to open a second, independent hold.
    assert_eq!(raised.payment_id, Some(id));
    assert_eq!(stats(&e).payments, 1, "one payment per chain");
    assert_eq!(raised.auth_code, first.auth_code, "the original's F38");
    let p = payment(&e, id);
    assert_eq!((p.status, p.authorized_minor), (Status::Uncaptured, 1_500));
    assert_eq!(p.hold_from_ms(), later);
    // A further increment may name the first increment.
    assert_eq!(apply(&e, increment(3, 100, 2), later).code, Code::APPROVED);
    assert_eq!(payment(&e, id).authorized_minor, 1_600);
    // A repeat: the same answer, nothing changes.
    let again = Request {
        repeat: true,
        ..increment(2, 500, 1)
    };
    let r = apply(&e, again, later + 1);
    assert_eq!(
        (r.code, r.rrn, r.auth_code),
        (raised.code, raised.rrn, raised.auth_code)
    );
    assert_eq!(payment(&e, id).authorized_minor, 1_600);
    // Capture up to the raised limit (1,600 x 1.2), not above.
    assert_eq!(
        apply(&e, capture(4, 1_921, 1, false), later).code,
        Code::INVALID_AMOUNT
    );
    assert_eq!(
        apply(&e, capture(5, 1_920, 1, false), later).code,
        Code::APPROVED
    );
    // Captured: an increment is now 12.
    assert_eq!(
        apply(&e, increment(6, 100, 1), later).code,
        Code::INVALID_TRANSACTION
    );
    assert_eq!(stats(&e).payments, 1);
}

#[test]
fn increments_that_cannot_raise_the_hold_are_refused() {
    let e = engine(&Recorder::default());
    let id = apply(&e, request(Op::PreAuth, 1, 1_000, None), NOW_MS)
        .payment_id
        .expect("payment");
    assert_eq!(
        apply(&e, increment(2, 500, 99), NOW_MS).code,
        Code::UNABLE_TO_LOCATE
    );
    let other_card = Request {
        pan: Pan::new(OTHER_CARD),
        ..increment(3, 500, 1)
    };
    assert_eq!(
        apply(&e, other_card, NOW_MS).code,
        Code::INVALID_TRANSACTION
    );
    let other_currency = Request {
        currency: 840,
        ..increment(4, 500, 1)
    };
    assert_eq!(
        apply(&e, other_currency, NOW_MS).code,
        Code::INVALID_TRANSACTION
    );
    // F90 naming a partial capture of it, not a pre-authorization.
    assert_eq!(
        apply(&e, capture(5, 100, 1, true), NOW_MS).code,
        Code::APPROVED
    );
    let names_capture = request(Op::PreAuth, 6, 500, f90("0220", 5));
    assert_eq!(
        apply(&e, names_capture, NOW_MS).code,
        Code::INVALID_TRANSACTION
    );
    // A sale is not a pre-authorization.
    assert_eq!(
        apply(&e, request(Op::Sale, 7, 500, None), NOW_MS).code,
        Code::APPROVED
    );
    let of_sale = request(Op::PreAuth, 8, 500, f90("0200", 7));
    assert_eq!(apply(&e, of_sale, NOW_MS).code, Code::INVALID_TRANSACTION);
    let p = payment(&e, id);
    assert_eq!((p.authorized_minor, p.captured_minor), (1_000, 100));
    assert_eq!(stats(&e).payments, 2, "the pre-authorization and the sale");
    // A cancelled hold cannot be raised.
    assert_eq!(
        apply(&e, request(Op::Reversal, 9, 0, f90("0100", 1)), NOW_MS).code,
        Code::APPROVED
    );
    assert_eq!(
        apply(&e, increment(10, 500, 1), NOW_MS).code,
        Code::INVALID_TRANSACTION
    );
}

#[test]
fn an_increment_counts_as_an_authorization_attempt_for_velocity() {
    let e = engine(&Recorder::default());
    let id = apply(&e, request(Op::PreAuth, 1, 1_000, None), NOW_MS)
        .payment_id
        .expect("payment");
    // Four increments: five attempts of the card within 60 s.
    for stan in 2..=5 {
        assert_eq!(
            apply(&e, increment(stan, 10, 1), NOW_MS).code,
            Code::APPROVED
        );
    }
    // The sixth attempt is over the velocity rule: 65, the hold unchanged
    // and the payment flagged.
    assert_eq!(apply(&e, increment(6, 10, 1), NOW_MS).code, Code(*b"65"));
    let p = payment(&e, id);
    assert_eq!(p.authorized_minor, 1_040);
    assert!(p.scam, "flagged by the velocity rule");
    assert_eq!(stats(&e).payments, 1);
}

#[test]
fn the_hold_of_an_increment_ends_a_full_period_after_it() {
    let e = engine(&Recorder::default());
    let id = apply(&e, request(Op::PreAuth, 1, 1_000, None), NOW_MS)
        .payment_id
        .expect("payment");
    let tick = |at| e.apply(Command::Tick { archived_seq: 0 }, at).count;
    assert_eq!(tick(NOW_MS), 0, "queued");
    let later = NOW_MS + 86_400_000;
    assert_eq!(apply(&e, increment(2, 500, 1), later).code, Code::APPROVED);
    // The first period's end passes: still held.
    assert_eq!(tick(NOW_MS + HOLD_MS), 0);
    assert_eq!(payment(&e, id).status, Status::Uncaptured);
    assert_eq!(tick(later + HOLD_MS), 1);
    assert_eq!(payment(&e, id).status, Status::Expired);
}

#[test]
fn split_captures_end_with_a_final_one_that_releases_the_rest() {
    let e = engine(&Recorder::default());
    let id = apply(&e, request(Op::PreAuth, 1, 1_000, None), NOW_MS)
        .payment_id
        .expect("payment");
    let first = apply(&e, capture(2, 300, 1, true), NOW_MS);
    assert_eq!(first.code, Code::APPROVED);
    assert_eq!(payment(&e, id).status, Status::Uncaptured, "still open");
    // A repeat of a partial capture: its answer, and nothing captured again.
    let again = apply(
        &e,
        Request {
            repeat: true,
            ..capture(2, 300, 1, true)
        },
        NOW_MS,
    );
    assert_eq!((again.code, again.rrn), (first.code, first.rrn));
    assert_eq!(payment(&e, id).captured_minor, 300);
    // The sum is bounded: 300 + 901 > 1,200.
    assert_eq!(
        apply(&e, capture(3, 901, 1, true), NOW_MS).code,
        Code::INVALID_AMOUNT
    );
    assert_eq!(
        apply(&e, capture(4, 200, 1, false), NOW_MS).code,
        Code::APPROVED
    );
    let p = payment(&e, id);
    assert_eq!((p.status, p.captured_minor), (Status::Succeeded, 500));
    assert_eq!(
        apply(&e, capture(5, 1, 1, true), NOW_MS).code,
        Code::INVALID_TRANSACTION
    );
    assert_eq!(
        apply(&e, capture(6, 1, 1, false), NOW_MS).code,
        Code::INVALID_TRANSACTION
    );
}

#[test]
fn a_reversal_naming_an_increment_takes_back_its_amount_only() {
    let e = engine(&Recorder::default());
    let id = apply(&e, request(Op::PreAuth, 1, 1_000, None), NOW_MS)
        .payment_id
        .expect("payment");
    assert_eq!(apply(&e, increment(2, 500, 1), NOW_MS).code, Code::APPROVED);
    let undo = request(Op::Reversal, 3, 0, f90("0100", 2));
    assert_eq!(apply(&e, undo, NOW_MS).code, Code::APPROVED);
    let p = payment(&e, id);
    assert_eq!((p.status, p.authorized_minor), (Status::Uncaptured, 1_000));
    // Reversing the pre-authorization with a partial capture made: the
    // rest is released, the capture stands.
    assert_eq!(
        apply(&e, capture(4, 400, 1, true), NOW_MS).code,
        Code::APPROVED
    );
    let cancel = request(Op::Reversal, 5, 0, f90("0100", 1));
    assert_eq!(apply(&e, cancel, NOW_MS).code, Code::APPROVED);
    let p = payment(&e, id);
    assert_eq!((p.status, p.captured_minor), (Status::Succeeded, 400));
}

#[test]
fn a_replayed_journal_keeps_increments_captures_and_the_moved_hold() {
    let journal = Recorder::default();
    let e = engine(&journal);
    let id = apply(&e, request(Op::PreAuth, 1, 1_000, None), NOW_MS)
        .payment_id
        .expect("payment");
    let later = NOW_MS + 86_400_000;
    assert_eq!(apply(&e, increment(2, 500, 1), later).code, Code::APPROVED);
    assert_eq!(
        apply(&e, capture(3, 700, 1, true), later).code,
        Code::APPROVED
    );
    let second = engine(&Recorder::default());
    for (seq, (record_type, payload)) in journal.0.lock().expect("lock").iter().enumerate() {
        second
            .replay_record(seq as u64 + 1, *record_type, payload)
            .expect("replays");
    }
    second.requeue_holds();
    assert_eq!(payment(&second, id), payment(&e, id));
    // The increment is found by its F90 after the restart.
    let undo = request(Op::Reversal, 4, 0, f90("0100", 2));
    assert_eq!(apply(&second, undo, later).code, Code::APPROVED);
    assert_eq!(payment(&second, id).authorized_minor, 1_000);
    let tick = |at| second.apply(Command::Tick { archived_seq: 0 }, at).count;
    assert_eq!(
        tick(NOW_MS + HOLD_MS),
        0,
        "the hold restarted at the increment"
    );
    assert_eq!(tick(later + HOLD_MS), 1);
    let p = payment(&second, id);
    assert_eq!((p.status, p.captured_minor), (Status::Succeeded, 700));
}
