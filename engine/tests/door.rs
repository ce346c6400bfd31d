//! The engine through its public doors only, as the shell uses it: replies
//! name what they made, a record the journal refuses undoes its change,
//! the timers end holds when due, and a journal replayed into a new engine
//! answers repeats as the first one did.

use std::sync::{Arc, Mutex};

use codecs::card::{Pan, TokenKey};
use codecs::iso8583::datetime::Expiry;
use engine::{
    Channel, Code, Command, Engine, Journal, Merchant, MessageKey, Op, OriginalRef, Query,
    QueryReply, Reply, Request, Settings, Stats, Status, Wait,
};

/// 2026-11-23T11:49:10Z.
const NOW_MS: u64 = 1_795_434_550_000;
const HOLD_MS: u64 = 7 * 86_400_000;
const MID: &[u8; 15] = b"DEMO00000000001";
const TID: [u8; 8] = *b"DEMO0001";

/// Records as appended: (record type, payload).
type Records = Vec<(u8, Vec<u8>)>;

/// A journal that keeps what it is given, or refuses everything.
#[derive(Clone, Default)]
struct Recorder {
    /// What was appended, in order.
    records: Arc<Mutex<Records>>,
    /// Refuse every append with 96.
    refuse: Arc<Mutex<bool>>,
}

impl Journal for Recorder {
    fn append(&self, record_type: u8, payload: &[u8]) -> Result<u64, Code> {
        if *self.refuse.lock().expect("lock") {
            return Err(Code::SYSTEM_MALFUNCTION);
        }
        let mut records = self.records.lock().expect("lock");
        records.push((record_type, payload.to_vec()));
        Ok(records.len() as u64)
    }
}

fn engine(journal: &Recorder) -> Engine {
    let merchant = Merchant {
        id: *MID,
        terminals: vec![TID],
        enabled: true,
        currencies: vec![978],
        over_capture_pct: 0,
        refunds_allowed: true,
        moto_allowed: true,
        hold_period_ms: HOLD_MS,
        auto_capture_ms: None,
    };
    let settings = Settings {
        merchants: vec![merchant],
        payments_max: 1_000,
        idempotency_entries_max: 1_000,
        idempotency_window_ms: 3_600_000,
        routing: Default::default(),
        stand_in: Default::default(),
        forwards_max: 1_000,
        saf_max: 1_000,
    };
    let key = TokenKey::new(b"door");
    let policy = risk::Policy::embedded(&engine::tokenizer(&key));
    let mut e = Engine::new(settings, key, policy, NOW_MS);
    e.set_journal(Box::new(journal.clone()));
    e
}

fn request(op: Op, stan: u32, original: Option<OriginalRef>) -> Request<'static> {
    let mti = match op {
        Op::PreAuth => 100,
        Op::Capture => 220,
        _ => 200,
    };
    Request {
        op,
        key: Some(MessageKey {
            mti,
            terminal: TID,
            stan,
            transmission: 1_123_114_959,
        }),
        repeat: false,
        content_crc: stan,
        merchant_id: MID,
        terminal_id: TID,
        pan: original
            .is_none()
            .then(|| Pan::new(b"4111111111111111"))
            .flatten(),
        expiry: Expiry::parse(b"2812"),
        amount_minor: 1_000,
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
fn a_reply_names_the_payment_it_made_and_what_it_waits_for() {
    let journal = Recorder::default();
    let e = engine(&journal);
    let r = e.apply(Command::Message(request(Op::Sale, 1, None)), NOW_MS);
    assert_eq!(r.code, Code::APPROVED);
    assert_eq!(r.wait, Wait::Journal(1), "the sale's record is the first");
    let id = r.payment_id.expect("a payment id");
    let p = payment(&e, id);
    assert_eq!((p.rrn, Some(p.auth_code)), (r.rrn, r.auth_code));
    assert_eq!(p.status, Status::Succeeded);
    let other = e.query(Query::Payment { scope: &[1], id });
    assert!(
        matches!(other, QueryReply::Payment(None)),
        "not another merchant's"
    );
}

#[test]
fn a_record_the_journal_refuses_undoes_its_change() {
    let journal = Recorder::default();
    let e = engine(&journal);
    let auth = e.apply(Command::Message(request(Op::PreAuth, 1, None)), NOW_MS);
    let id = auth.payment_id.expect("id");
    let before = payment(&e, id);
    *journal.refuse.lock().expect("lock") = true;
    let of_it = Some(OriginalRef::Payment(id));
    let capture = e.apply(Command::Message(request(Op::Capture, 2, of_it)), NOW_MS);
    assert_eq!(capture.code, Code::SYSTEM_MALFUNCTION);
    let scam = Command::MarkScam {
        merchant: 0,
        payment: id,
        reason: "manual",
        by: "AB-0000-0001",
        note: None,
        fetched: None,
    };
    assert_eq!(e.apply(scam, NOW_MS).code, Code::SYSTEM_MALFUNCTION);
    assert_eq!(payment(&e, id), before, "capture and flag both undone");
    let payments = stats(&e).payments;
    let sale = e.apply(Command::Message(request(Op::Sale, 3, None)), NOW_MS);
    assert_eq!(
        (sale.code, sale.payment_id),
        (Code::SYSTEM_MALFUNCTION, None)
    );
    assert_eq!(stats(&e).payments, payments, "the refused sale is not kept");
}

#[test]
fn a_refused_follow_up_is_journaled_in_the_history_and_changes_nothing_else() {
    let journal = Recorder::default();
    let e = engine(&journal);
    let auth = e.apply(Command::Message(request(Op::PreAuth, 1, None)), NOW_MS);
    let id = auth.payment_id.expect("id");
    let before = payment(&e, id);
    let records = journal.records.lock().expect("lock").len();
    let of_it = Some(OriginalRef::Payment(id));
    let mut too_much = request(Op::Capture, 2, of_it);
    too_much.amount_minor = 5_000;
    let capture = e.apply(Command::Message(too_much), NOW_MS + 1);
    assert_eq!(capture.code, Code::INVALID_AMOUNT);
    assert_eq!(capture.wait, Wait::Nothing, "a refusal waits for nothing");
    let refund = e.apply(Command::Message(request(Op::Refund, 3, of_it)), NOW_MS + 2);
    assert_eq!(refund.code, Code::INVALID_TRANSACTION);
    let after = payment(&e, id);
    assert_eq!(
        (after.status, after.authorized_minor, after.captured_minor),
        (
            before.status,
            before.authorized_minor,
            before.captured_minor
        )
    );
    let refused: Vec<_> = after.history[before.history.len()..]
        .iter()
        .map(|a| (a.op.label(), a.amount_minor, a.code))
        .collect();
    assert_eq!(
        refused,
        [
            ("capture", 5_000, Code::INVALID_AMOUNT),
            ("refund", 1_000, Code::INVALID_TRANSACTION)
        ]
    );
    assert_eq!(
        journal.records.lock().expect("lock").len(),
        records + 2,
        "each refusal is one record"
    );
    // A refusal is no capture: the right amount still captures.
    let capture = e.apply(Command::Message(request(Op::Capture, 4, of_it)), NOW_MS + 3);
    assert_eq!(capture.code, Code::APPROVED);
}

#[test]
fn the_timers_end_a_hold_when_it_is_due() {
    let journal = Recorder::default();
    let e = engine(&journal);
    let auth = e.apply(Command::Message(request(Op::PreAuth, 1, None)), NOW_MS);
    let id = auth.payment_id.expect("id");
    let tick = |at| {
        e.apply(
            Command::Tick {
                archived_seq: u64::MAX,
            },
            at,
        )
    };
    assert_eq!(tick(NOW_MS + HOLD_MS - 1).count, 0);
    assert_eq!(payment(&e, id).status, Status::Uncaptured);
    assert_eq!(tick(NOW_MS + HOLD_MS).count, 1);
    assert_eq!(payment(&e, id).status, Status::Expired);
    assert_eq!(tick(NOW_MS + 2 * HOLD_MS).count, 0, "once");
}

#[test]
fn a_hold_whose_end_the_journal_refuses_stays_open_and_is_ended_on_a_later_pass() {
    let journal = Recorder::default();
    let e = engine(&journal);
    let auth = e.apply(Command::Message(request(Op::PreAuth, 1, None)), NOW_MS);
    let id = auth.payment_id.expect("id");
    let records = journal.records.lock().expect("lock").len();
    let tick = |at| {
        e.apply(
            Command::Tick {
                archived_seq: u64::MAX,
            },
            at,
        )
        .count
    };
    *journal.refuse.lock().expect("lock") = true;
    let due = NOW_MS + HOLD_MS;
    assert_eq!(tick(due), 0, "refused: not ended");
    assert_eq!(
        payment(&e, id).status,
        Status::Uncaptured,
        "memory as it was"
    );
    *journal.refuse.lock().expect("lock") = false;
    assert_eq!(
        tick(due + engine::HOLD_RETRY_MS - 1),
        0,
        "tried again only after the retry delay"
    );
    assert_eq!(tick(due + engine::HOLD_RETRY_MS), 1);
    assert_eq!(payment(&e, id).status, Status::Expired);
    assert_eq!(
        journal.records.lock().expect("lock").len(),
        records + 1,
        "the end is journaled once"
    );
}

#[test]
fn in_cluster_mode_a_replayed_payment_of_another_node_s_block_does_not_move_the_next_id() {
    // Node one makes a sale in its block 9.
    let journal = Recorder::default();
    let one = engine(&journal);
    one.reserve_ids_through(9 << 40);
    let theirs = one
        .apply(Command::Message(request(Op::Sale, 1, None)), NOW_MS)
        .payment_id
        .expect("an id");
    assert_eq!(theirs >> 40, 9);
    // Node two, in cluster mode, holds block 5 and loads that sale (a
    // shard taken over): its next sale's id is still in block 5.
    let two = engine(&Recorder::default());
    two.take_ids_from_blocks();
    two.reserve_ids_through(5 << 40);
    let replay = |e: &Engine| {
        for (record_type, payload) in journal.records.lock().expect("lock").iter() {
            e.replay_record(0, *record_type, payload).expect("replays");
        }
    };
    replay(&two);
    let ours = two
        .apply(Command::Message(request(Op::Sale, 2, None)), NOW_MS)
        .payment_id
        .expect("an id");
    assert_eq!(ours, (5 << 40) + 1, "from its own block");
    assert_eq!(payment(&two, theirs).id, theirs, "the loaded sale is there");
    // A single node moves above every id it replays (its own, from its
    // journal): the same replay there takes the next id above it.
    let single = engine(&Recorder::default());
    single.reserve_ids_through(5 << 40);
    replay(&single);
    let next = single
        .apply(Command::Message(request(Op::Sale, 2, None)), NOW_MS)
        .payment_id
        .expect("an id");
    assert_eq!(next, theirs + 1);
}

#[test]
fn holds_of_payments_loaded_while_running_end_once_requeued() {
    let journal = Recorder::default();
    let first = engine(&journal);
    let auth = first.apply(Command::Message(request(Op::PreAuth, 1, None)), NOW_MS);
    let id = auth.payment_id.expect("id");
    let second = engine(&Recorder::default());
    for (record_type, payload) in journal.records.lock().expect("lock").iter() {
        second
            .replay_record(0, *record_type, payload)
            .expect("replays");
    }
    let tick = |at| {
        second
            .apply(
                Command::Tick {
                    archived_seq: u64::MAX,
                },
                at,
            )
            .count
    };
    assert_eq!(
        tick(NOW_MS + HOLD_MS),
        0,
        "a loaded hold is not queued by itself"
    );
    second.requeue_holds_of([id, id, 999]);
    assert_eq!(tick(NOW_MS + HOLD_MS), 1, "queued twice, ended once");
    assert_eq!(payment(&second, id).status, Status::Expired);
    second.requeue_holds_of([id]);
    assert_eq!(tick(NOW_MS + 2 * HOLD_MS), 0, "an ended hold is not queued");
}

#[test]
fn a_replayed_journal_answers_repeats_as_the_first_engine_did() {
    let journal = Recorder::default();
    let first = engine(&journal);
    let auth = first.apply(Command::Message(request(Op::PreAuth, 1, None)), NOW_MS);
    let of_it = Some(OriginalRef::Payment(auth.payment_id.expect("id")));
    let capture = first.apply(Command::Message(request(Op::Capture, 2, of_it)), NOW_MS);
    assert_eq!(capture.code, Code::APPROVED);

    let second = engine(&Recorder::default());
    let records = journal.records.lock().expect("lock").clone();
    for (seq, (record_type, payload)) in records.iter().enumerate() {
        second
            .replay_record(seq as u64 + 1, *record_type, payload)
            .expect("replays");
    }
    let repeat = |r: &Reply, req: Request<'static>| {
        let again = second.apply(
            Command::Message(Request {
                repeat: true,
                ..req
            }),
            NOW_MS,
        );
        assert_eq!(
            (again.code, again.rrn, again.auth_code),
            (r.code, r.rrn, r.auth_code)
        );
    };
    repeat(&auth, request(Op::PreAuth, 1, None));
    repeat(&capture, request(Op::Capture, 2, of_it));
    let bad = second.replay_record(99, 7, b"");
    assert!(bad.is_err(), "an unknown record type stops recovery");
}

/// A counted attempt of card `token` at the door, at `now_ms`: its verdict.
fn count(e: &Engine, token: [u8; 32], now_ms: u64) -> risk::CardVerdict {
    let ask = engine::velocity::VelocityAsk {
        token,
        merchant_id: *MID,
        terminal_id: TID,
        amount_minor: 1_000,
        currency: 978,
        channel: Channel::CardPresent,
        declined_before: false,
    };
    match e.apply(Command::Velocity(ask), now_ms).wait {
        Wait::Counted { card, .. } => card,
        other => panic!("not counted: {other:?}"),
    }
}

#[test]
fn a_velocity_checkpoint_and_the_attempts_after_it_give_the_next_counting_engine_the_same_verdicts()
{
    let (ours, theirs, also_ours) = ([2; 32], [3; 32], [4; 32]);
    let journal = Recorder::default();
    let first = engine(&journal);
    for i in 0..3 {
        count(&first, ours, NOW_MS + i * 1_000);
        count(&first, theirs, NOW_MS + i * 1_000);
    }
    let keep = |t: &[u8; 32]| *t == ours || *t == also_ours;
    let done = first
        .checkpoint_velocity(7, NOW_MS + 3_000, &keep)
        .expect("recorded");
    assert_eq!(done.keys, 1, "one count key of the card: {done:?}");
    count(&first, ours, NOW_MS + 4_000);
    let records = journal.records.lock().expect("lock").clone();
    let at = usize::try_from(done.seq).expect("seq") - 1;
    assert_eq!(records[at].0, engine::velocity::RECORD_VELOCITY_CHECKPOINT);
    assert_eq!(engine::velocity::checkpoint_shard(&records[at].1), Some(7));

    // The next counting engine counted the shard's cards before (stale
    // counts of an earlier time it served the shard; one card the
    // checkpoint does not hold): forgotten, then the checkpoint and the
    // one attempt after it.
    let next = engine(&Recorder::default());
    for i in 0..6 {
        count(&next, ours, NOW_MS + i * 100);
        count(&next, also_ours, NOW_MS + i * 100);
    }
    assert_eq!(next.reset_velocity_of(&keep), 2);
    for (seq, (record_type, payload)) in records.iter().enumerate().skip(at) {
        next.replay_record(seq as u64 + 1, *record_type, payload)
            .expect("replays");
    }
    // Both have counted 4 attempts in 60 s: the fifth passes, the sixth
    // and later are over the limit, at both.
    for i in 0..3 {
        let t = NOW_MS + 5_000 + i * 1_000;
        let (a, b) = (count(&first, ours, t), count(&next, ours, t));
        assert_eq!(a, b, "attempt {}", 5 + i);
        assert_eq!(
            a == risk::CardVerdict::default(),
            i == 0,
            "attempt {}",
            5 + i
        );
    }
    let (a, b) = (
        count(&first, also_ours, NOW_MS + 9_000),
        count(&next, also_ours, NOW_MS + 9_000),
    );
    assert_eq!((a, b), Default::default(), "a card first counted now");
    // A checkpoint of another version or cut short stops the replay.
    let mut bad = records[at].1.clone();
    bad[12] = 9;
    assert!(next
        .replay_record(99, engine::velocity::RECORD_VELOCITY_CHECKPOINT, &bad)
        .is_err());
    assert!(next
        .replay_record(99, engine::velocity::RECORD_VELOCITY_CHECKPOINT, &bad[..5])
        .is_err());
}
