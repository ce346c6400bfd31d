//! Forwarding through the engine's public doors, as the shell drives it:
//! a routed authorization waits for its issuer, repeats join it, how it
//! ended makes the payment and the SAF entries the contract asks for
//! (`../shared/upstream.md`), and a journal replayed after a crash reverses
//! every forward whose answer it does not hold.

use std::sync::{Arc, Mutex};

use codecs::card::{Pan, TokenKey};
use codecs::iso8583::datetime::Expiry;
use engine::upstream::{Outcome, SafEntry, SafKind, StandIn, RECORD_UPSTREAM};
use engine::{
    Channel, Code, Command, Engine, Journal, Merchant, MessageKey, Op, OriginalRef, Query,
    QueryReply, Reply, Request, Settings, Status, Wait,
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

fn engine(journal: &Recorder, stand_in: &StandIn) -> Engine {
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
        routing: engine::upstream::Routing {
            rules: vec![engine::upstream::RouteRule {
                digits: 1,
                lo: 4,
                hi: 4,
                route: engine::upstream::Route::Upstream(0),
            }],
            default: engine::upstream::Route::Local,
            upstreams: vec!["visa-sim".into()],
        },
        stand_in: stand_in.clone(),
        forwards_max: 1_000,
        saf_max: 1_000,
    };
    let key = TokenKey::new(b"door");
    let policy = risk::Policy::embedded(&engine::tokenizer(&key));
    let mut e = Engine::new(settings, key, policy, NOW_MS);
    e.set_journal(Box::new(journal.clone()));
    e
}

fn request(
    op: Op,
    stan: u32,
    original: Option<OriginalRef>,
    pan: &'static [u8],
) -> Request<'static> {
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
        pan: original.is_none().then(|| Pan::new(pan)).flatten(),
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

const VISA: &[u8] = b"4111111111111111";
const LOCAL: &[u8] = b"5555555555554444";

fn saf(e: &Engine) -> Vec<SafEntry> {
    match e.query(Query::Saf {
        upstream: None,
        limit: 100,
    }) {
        QueryReply::Saf(v) => v,
        other => panic!("{other:?}"),
    }
}

/// Ends forward `id` with the issuer's approval and F38 `auth`.
fn issuer_approves(e: &Engine, id: u64, auth: [u8; 6]) -> Reply {
    e.apply(
        Command::Upstream {
            forward: id,
            outcome: Outcome::Answered {
                code: Code::APPROVED,
                auth_code: Some(auth),
            },
        },
        NOW_MS,
    )
}

fn forwarded(e: &Engine, req: Request<'_>) -> (u64, Reply) {
    let r = e.apply(Command::Message(req), NOW_MS);
    match r.wait {
        Wait::Upstream(f) => (f.id, r),
        other => panic!("not forwarded: {other:?} {r:?}"),
    }
}

#[test]
fn a_routed_sale_waits_for_its_issuer_and_takes_its_decision() {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    let sale = request(Op::Sale, 1, None, VISA);
    let (id, r) = forwarded(&e, sale);
    let Wait::Upstream(f) = r.wait else {
        unreachable!()
    };
    assert_eq!(f.upstream, 0);
    assert!((1..=999_999).contains(&f.stan));
    {
        let records = journal.records.lock().expect("lock");
        assert_eq!(
            records.len(),
            1,
            "the forward is journaled before it leaves"
        );
        assert_eq!(records[0].0, RECORD_UPSTREAM);
        assert_eq!(r.record_seq, 1);
    }
    // A repeat while the issuer has it joins it: no second forward.
    let repeat = Request {
        repeat: true,
        ..sale
    };
    let j = e.apply(Command::Message(repeat), NOW_MS);
    assert_eq!(j.wait, Wait::Joined(id));
    assert_eq!(journal.records.lock().expect("lock").len(), 1);
    let done = e.apply(
        Command::Upstream {
            forward: id,
            outcome: Outcome::Answered {
                code: Code::APPROVED,
                auth_code: Some(*b"ISS001"),
            },
        },
        NOW_MS + 5,
    );
    assert_eq!(done.code, Code::APPROVED);
    assert_eq!(done.auth_code, Some(*b"ISS001"), "the issuer's F38");
    assert_eq!(done.rrn, r.rrn, "the F37 given when it was forwarded");
    assert_eq!(
        done.wait,
        Wait::Journal(2),
        "waits for the payment's record"
    );
    let p = payment(&e, done.payment_id.expect("payment"));
    assert_eq!(p.status, Status::Succeeded);
    let up = p.upstream.as_ref().expect("forwarding remembered");
    assert_eq!(
        (up.stan, up.transmission, up.mti),
        (f.stan, f.transmission, 200)
    );
    // Ended once: a second end (a late duplicate) changes nothing.
    let again = e.apply(
        Command::Upstream {
            forward: id,
            outcome: Outcome::TimedOut,
        },
        NOW_MS + 6,
    );
    assert_eq!(again.code, Code::SYSTEM_MALFUNCTION);
    assert!(saf(&e).is_empty());
    // The repeat now gets the same answer, from memory.
    let j = e.apply(Command::Message(repeat), NOW_MS + 7);
    assert_eq!(
        (j.code, j.auth_code, j.rrn),
        (done.code, done.auth_code, done.rrn)
    );
    assert!(!matches!(j.wait, Wait::Upstream(_) | Wait::Joined(_)));
}

#[test]
fn an_issuer_decline_is_the_terminals_answer() {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    let (id, _) = forwarded(&e, request(Op::PreAuth, 1, None, VISA));
    let done = e.apply(
        Command::Upstream {
            forward: id,
            outcome: Outcome::Answered {
                code: Code(*b"51"),
                auth_code: Some(*b"IGNORE"),
            },
        },
        NOW_MS,
    );
    assert_eq!(done.code, Code(*b"51"));
    assert_eq!(done.auth_code, None, "no F38 on a decline");
    assert_eq!(
        payment(&e, done.payment_id.expect("id")).status,
        Status::Declined
    );
}

#[test]
fn a_timeout_is_91_and_its_reversal_is_journaled_before_the_answer() {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    let (id, r) = forwarded(&e, request(Op::PreAuth, 1, None, VISA));
    let Wait::Upstream(f) = r.wait else {
        unreachable!()
    };
    let done = e.apply(
        Command::Upstream {
            forward: id,
            outcome: Outcome::TimedOut,
        },
        NOW_MS + 2_000,
    );
    assert_eq!(done.code, Code::UNAVAILABLE);
    let queued = saf(&e);
    assert_eq!(queued.len(), 1);
    let rev = &queued[0];
    assert_eq!(rev.kind, SafKind::TimeoutReversal);
    assert_eq!(
        (
            rev.original_mti,
            rev.original_stan,
            rev.original_transmission
        ),
        (100, f.stan, f.transmission),
        "F90 names the forwarded request"
    );
    assert_ne!(rev.stan, f.stan, "its own F11");
    let records = journal.records.lock().expect("lock");
    let saf_seq = records
        .iter()
        .position(|(t, p)| {
            *t == RECORD_UPSTREAM
                && matches!(
                    engine::upstream::decode(p),
                    Ok(engine::upstream::UpstreamRecord::SafQueued(_))
                )
        })
        .expect("the reversal is journaled") as u64
        + 1;
    assert!(
        matches!(done.wait, Wait::Journal(s) if s >= saf_seq),
        "the 91 waits for the reversal's record: {:?} vs {saf_seq}",
        done.wait
    );
    drop(records);
    // Delivered: the issuer answered it.
    assert_eq!(e.apply(Command::SafDone { id: rev.id }, NOW_MS).count, 1);
    assert!(saf(&e).is_empty());
    assert_eq!(e.apply(Command::SafDone { id: rev.id }, NOW_MS).count, 0);
}

#[test]
fn never_sent_is_91_without_a_reversal() {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    let (id, _) = forwarded(&e, request(Op::Sale, 1, None, VISA));
    let done = e.apply(
        Command::Upstream {
            forward: id,
            outcome: Outcome::NotSent,
        },
        NOW_MS,
    );
    assert_eq!(done.code, Code::UNAVAILABLE);
    assert!(saf(&e).is_empty());
}

#[test]
fn stand_in_approves_within_its_limit_with_an_advice_and_not_above() {
    let journal = Recorder::default();
    let stand_in = StandIn {
        enabled: true,
        amount_max_minor: vec![(978, 1_000)],
    };
    let e = engine(&journal, &stand_in);
    let (id, _) = forwarded(&e, request(Op::Sale, 1, None, VISA));
    let done = e.apply(
        Command::Upstream {
            forward: id,
            outcome: Outcome::NotSent,
        },
        NOW_MS,
    );
    assert_eq!(done.code, Code::APPROVED);
    assert!(done.auth_code.is_some(), "the switch's own F38");
    let p = payment(&e, done.payment_id.expect("id"));
    assert!(p.upstream.as_ref().is_some_and(|u| u.stood_in));
    let kinds: Vec<SafKind> = saf(&e).iter().map(|s| s.kind).collect();
    assert_eq!(kinds, vec![SafKind::StandIn]);
    let mut above = request(Op::Sale, 2, None, VISA);
    above.amount_minor = 1_001;
    let (id, _) = forwarded(&e, above);
    let done = e.apply(
        Command::Upstream {
            forward: id,
            outcome: Outcome::TimedOut,
        },
        NOW_MS,
    );
    assert_eq!(done.code, Code::UNAVAILABLE);
    let kinds: Vec<SafKind> = saf(&e).iter().map(|s| s.kind).collect();
    assert_eq!(kinds, vec![SafKind::StandIn, SafKind::TimeoutReversal]);
}

#[test]
fn a_capture_of_an_issuer_payment_is_advised_and_a_local_ones_is_not() {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    let auth = request(Op::PreAuth, 1, None, VISA);
    let (id, _) = forwarded(&e, auth);
    let done = issuer_approves(&e, id, *b"ISS002");
    assert_eq!(done.code, Code::APPROVED);
    let original = OriginalRef::Message(codecs::iso8583::f90::OriginalData {
        mti: codecs::iso8583::Mti::parse("0100").expect("mti"),
        stan: 1,
        transmission: *b"1123114959",
    });
    let capture = e.apply(
        Command::Message(request(Op::Capture, 2, Some(original), VISA)),
        NOW_MS + 10,
    );
    assert_eq!(capture.code, Code::APPROVED, "{capture:?}");
    let queued = saf(&e);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].kind, SafKind::Capture);
    assert_eq!(queued[0].auth_code, *b"ISS002");
    assert!(
        matches!(capture.wait, Wait::Journal(s) if s == journal.records.lock().expect("lock").len() as u64)
    );
    // A local payment's capture queues nothing.
    let local = e.apply(
        Command::Message(request(Op::PreAuth, 3, None, LOCAL)),
        NOW_MS,
    );
    assert_eq!(local.code, Code::APPROVED);
    assert!(matches!(local.wait, Wait::Journal(_)), "decided locally");
    let original = OriginalRef::Message(codecs::iso8583::f90::OriginalData {
        mti: codecs::iso8583::Mti::parse("0100").expect("mti"),
        stan: 3,
        transmission: *b"1123114959",
    });
    let c = e.apply(
        Command::Message(request(Op::Capture, 4, Some(original), LOCAL)),
        NOW_MS + 10,
    );
    assert_eq!(c.code, Code::APPROVED);
    assert_eq!(saf(&e).len(), 1);
}

/// A new engine with `records` replayed, as recovery does.
fn replayed(records: &[(u8, Vec<u8>)]) -> (Recorder, Engine) {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    for (i, (t, p)) in records.iter().enumerate() {
        e.replay_record(i as u64 + 1, *t, p).expect("replays");
    }
    (journal, e)
}

#[test]
fn after_a_crash_forwards_without_a_journaled_answer_are_reversed() {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    let (answered, _) = forwarded(&e, request(Op::Sale, 1, None, VISA));
    let (orphan, r) = forwarded(&e, request(Op::Sale, 2, None, VISA));
    let Wait::Upstream(f) = r.wait else {
        unreachable!()
    };
    issuer_approves(&e, answered, *b"ISS003");
    let records = journal.records.lock().expect("lock").clone();
    let (_, back) = replayed(&records);
    let r = back.apply(Command::ReverseOrphans, NOW_MS + 60_000);
    assert_eq!(r.count, 1, "only the forward whose answer was lost");
    let queued = saf(&back);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].forward, orphan);
    assert_eq!(queued[0].original_stan, f.stan);
    assert_eq!(back.apply(Command::ReverseOrphans, NOW_MS).count, 0, "once");
    // A snapshot carries the SAF to the next life.
    let mut snap = Vec::new();
    back.encode_snapshot(&mut snap);
    let (_, third) = replayed(&[]);
    third.replay_snapshot(10, &snap).expect("snapshot");
    assert_eq!(saf(&third), queued);
}

mod interleavings {
    //! Any interleaving of messages, repeats, issuer answers, timeouts and
    //! late duplicate ends: one upstream request per message key, one
    //! decision per key (every answer to it the same), one reversal per
    //! timed-out forward.

    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        /// Message `k` (a repeat when true).
        Send(u32, bool),
        /// Ends the `i`-th pending forward (modulo) with an outcome.
        End(usize, u8),
        /// Ends an already ended forward again (a late duplicate).
        EndAgain(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u32..6, any::<bool>()).prop_map(|(k, r)| Step::Send(k, r)),
            (0usize..8, 0u8..4).prop_map(|(i, o)| Step::End(i, o)),
            (0usize..8).prop_map(Step::EndAgain),
        ]
    }

    fn outcome(o: u8) -> Outcome {
        match o {
            0 => Outcome::Answered {
                code: Code::APPROVED,
                auth_code: Some(*b"ISS777"),
            },
            1 => Outcome::Answered {
                code: Code(*b"51"),
                auth_code: None,
            },
            2 => Outcome::TimedOut,
            _ => Outcome::NotSent,
        }
    }

    type Decision = (Code, Option<[u8; 6]>, [u8; 12]);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn one_forward_and_one_decision_per_key(steps in proptest::collection::vec(step(), 1..60)) {
            let journal = Recorder::default();
            let e = engine(&journal, &StandIn::default());
            let mut forwards_of: HashMap<u32, u32> = HashMap::new();
            let mut pending: Vec<(u64, u32)> = Vec::new();
            let mut ended: Vec<u64> = Vec::new();
            let mut waiting: Vec<(u64, u32, bool)> = Vec::new();
            let mut decided: HashMap<u32, Decision> = HashMap::new();
            let mut timeouts = 0usize;
            let settle = |k: u32, r: &Reply, decided: &mut HashMap<u32, Decision>| {
                let d = (r.code, r.auth_code, r.rrn);
                let first = *decided.entry(k).or_insert(d);
                prop_assert_eq!(first, d, "key {} answered two ways", k);
                Ok(())
            };
            for s in steps {
                match s {
                    Step::Send(k, repeat) => {
                        let req = Request { repeat, ..request(Op::PreAuth, k, None, VISA) };
                        let r = e.apply(Command::Message(req), NOW_MS);
                        match r.wait {
                            Wait::Upstream(f) => {
                                let n = forwards_of.entry(k).or_insert(0);
                                *n += 1;
                                prop_assert_eq!(*n, 1, "a second forward for key {}", k);
                                pending.push((f.id, k));
                            }
                            Wait::Joined(id) => {
                                prop_assert!(pending.iter().any(|&(p, pk)| p == id && pk == k));
                                waiting.push((id, k, repeat));
                            }
                            _ => settle(k, &r, &mut decided)?,
                        }
                    }
                    Step::End(i, o) => {
                        if pending.is_empty() {
                            continue;
                        }
                        let (id, k) = pending.remove(i % pending.len());
                        let out = outcome(o);
                        if out == Outcome::TimedOut {
                            timeouts += 1;
                        }
                        let r = e.apply(Command::Upstream { forward: id, outcome: out }, NOW_MS);
                        settle(k, &r, &mut decided)?;
                        ended.push(id);
                        // The joined repeats now get the same answer.
                        let (now, later): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|w| w.0 == id);
                        waiting = later;
                        for (_, k, repeat) in now {
                            let req = Request { repeat, ..request(Op::PreAuth, k, None, VISA) };
                            let r = e.apply(Command::Message(req), NOW_MS);
                            prop_assert!(!matches!(r.wait, Wait::Upstream(_) | Wait::Joined(_)));
                            settle(k, &r, &mut decided)?;
                        }
                    }
                    Step::EndAgain(i) => {
                        if ended.is_empty() {
                            continue;
                        }
                        let id = ended[i % ended.len()];
                        let before = journal.records.lock().expect("lock").len();
                        let r = e.apply(Command::Upstream { forward: id, outcome: Outcome::TimedOut }, NOW_MS);
                        prop_assert_eq!(r.code, Code::SYSTEM_MALFUNCTION);
                        prop_assert_eq!(journal.records.lock().expect("lock").len(), before, "nothing recorded");
                    }
                }
            }
            let reversals = saf(&e)
                .iter()
                .filter(|s| s.kind == SafKind::TimeoutReversal)
                .count();
            prop_assert_eq!(reversals, timeouts, "one reversal per timed-out forward");
        }
    }
}

#[test]
fn a_snapshot_taken_between_a_payment_and_its_answer_reverses_nothing() {
    // The payment names its forward, the forward is still pending and
    // the answer not yet remembered: what a snapshot walking memory in
    // the middle of an end sees. The payment proves the answer was
    // journaled: no reversal.
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    let (id, _) = forwarded(&e, request(Op::Sale, 1, None, VISA));
    let done = issuer_approves(&e, id, *b"ISS004");
    let paid = payment(&e, done.payment_id.expect("id"));
    let pending = match engine::upstream::decode(&journal.records.lock().expect("lock")[0].1) {
        Ok(engine::upstream::UpstreamRecord::Forward(p)) => p,
        other => panic!("{other:?}"),
    };
    let mut snap = Vec::new();
    engine::record::encode_snapshot(
        &mut snap,
        &mut |f| f(&paid),
        &mut |_| {},
        &mut |_| {},
        (&[pending], &[]),
    );
    let (_, back) = replayed(&[]);
    back.replay_snapshot(1, &snap).expect("snapshot");
    assert_eq!(back.apply(Command::ReverseOrphans, NOW_MS).count, 0);
    assert!(saf(&back).is_empty());
}

#[test]
fn a_refund_of_an_issuer_payment_is_the_issuers_to_decide() {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    let (id, r) = forwarded(&e, request(Op::Sale, 1, None, VISA));
    let Wait::Upstream(sale) = r.wait else {
        unreachable!()
    };
    let done = issuer_approves(&e, id, *b"ISS005");
    let pid = done.payment_id.expect("id");
    let original = OriginalRef::Payment(pid);
    // Local rules first: more than was captured never goes upstream.
    let mut too_much = request(Op::Refund, 2, Some(original), VISA);
    too_much.amount_minor = 1_001;
    let r = e.apply(Command::Message(too_much), NOW_MS);
    assert!(!matches!(r.wait, Wait::Upstream(_)), "{r:?}");
    assert!(!r.code.approved());
    // Declined by the issuer: nothing refunded.
    let mut refund = request(Op::Refund, 3, Some(original), VISA);
    refund.amount_minor = 400;
    let (rid, r) = forwarded(&e, refund);
    let Wait::Upstream(f) = r.wait else {
        unreachable!()
    };
    assert_eq!(
        f.original,
        Some((200, sale.stan, sale.transmission)),
        "F90 upstream"
    );
    let r = e.apply(
        Command::Upstream {
            forward: rid,
            outcome: Outcome::Answered {
                code: Code(*b"05"),
                auth_code: None,
            },
        },
        NOW_MS,
    );
    assert_eq!(r.code, Code(*b"05"));
    assert!(payment(&e, pid).refunds.is_empty());
    // Approved: refunded here, with the issuer's F38.
    let mut refund = request(Op::Refund, 4, Some(original), VISA);
    refund.amount_minor = 400;
    let (rid, _) = forwarded(&e, refund);
    let r = issuer_approves(&e, rid, *b"ISS006");
    assert_eq!((r.code, r.auth_code), (Code::APPROVED, Some(*b"ISS006")));
    assert_eq!(payment(&e, pid).refunds.len(), 1);
    // Its repeat gets the same answer.
    let again = e.apply(
        Command::Message(Request {
            repeat: true,
            amount_minor: 400,
            ..request(Op::Refund, 4, Some(original), VISA)
        }),
        NOW_MS,
    );
    assert_eq!((again.code, again.auth_code), (r.code, r.auth_code));
    // Timed out: 91, and a reversal of the refund request (F3 20).
    let mut refund = request(Op::Refund, 5, Some(original), VISA);
    refund.amount_minor = 100;
    let (rid, _) = forwarded(&e, refund);
    let r = e.apply(
        Command::Upstream {
            forward: rid,
            outcome: Outcome::TimedOut,
        },
        NOW_MS,
    );
    assert_eq!(r.code, Code::UNAVAILABLE);
    let queued = saf(&e);
    assert_eq!(queued.len(), 1);
    assert_eq!((queued[0].processing, queued[0].original_mti), (20, 200));
    assert_eq!(payment(&e, pid).refunds.len(), 1);
}

#[test]
fn a_reversal_of_an_issuer_payment_advises_what_was_held_and_what_is_left() {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    for (stan, replacement) in [(1u32, None), (2, Some(300u64))] {
        let (id, _) = forwarded(&e, request(Op::PreAuth, stan, None, VISA));
        issuer_approves(&e, id, *b"ISS010");
        let original = OriginalRef::Message(codecs::iso8583::f90::OriginalData {
            mti: codecs::iso8583::Mti::parse("0100").expect("mti"),
            stan,
            transmission: *b"1123114959",
        });
        let mut rev = request(Op::Reversal, stan + 100, Some(original), VISA);
        rev.replacement_minor = replacement;
        let r = e.apply(Command::Message(rev), NOW_MS);
        assert_eq!(r.code, Code::APPROVED, "{r:?}");
        let last = saf(&e).pop().expect("advised");
        assert_eq!(last.kind, SafKind::Reversal);
        assert_eq!(
            last.amount_minor, 1_000,
            "what the issuer held, not what is left"
        );
        assert_eq!(last.replacement_minor, replacement);
    }
}

#[test]
fn an_issuer_hold_that_expires_here_is_reversed_at_the_issuer() {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    let (id, _) = forwarded(&e, request(Op::PreAuth, 1, None, VISA));
    issuer_approves(&e, id, *b"ISS011");
    assert!(saf(&e).is_empty());
    let r = e.apply(
        Command::Tick {
            archived_seq: u64::MAX,
        },
        NOW_MS + HOLD_MS + 1,
    );
    assert_eq!(r.count, 1, "the hold ended");
    let queued = saf(&e);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].kind, SafKind::Reversal);
    assert_eq!(queued[0].amount_minor, 1_000, "what the issuer held");
}

#[test]
fn partial_captures_of_an_issuer_payment_are_each_advised_and_increments_refused() {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    let (id, _) = forwarded(&e, request(Op::PreAuth, 1, None, VISA));
    let payment_id = issuer_approves(&e, id, *b"ISS012")
        .payment_id
        .expect("payment");
    let original = OriginalRef::Message(codecs::iso8583::f90::OriginalData {
        mti: codecs::iso8583::Mti::parse("0100").expect("mti"),
        stan: 1,
        transmission: *b"1123114959",
    });
    let mut first = request(Op::Capture, 2, Some(original), VISA);
    (first.amount_minor, first.keep_open) = (300, true);
    assert_eq!(
        e.apply(Command::Message(first), NOW_MS).code,
        Code::APPROVED
    );
    let mut last = request(Op::Capture, 3, Some(original), VISA);
    last.amount_minor = 200;
    assert_eq!(e.apply(Command::Message(last), NOW_MS).code, Code::APPROVED);
    let advised: Vec<(SafKind, u64)> = saf(&e).iter().map(|s| (s.kind, s.amount_minor)).collect();
    assert_eq!(
        advised,
        [(SafKind::PartialCapture, 300), (SafKind::Capture, 200)]
    );
    // An increment of a payment its issuer decided is not forwarded: 12.
    let (id2, _) = forwarded(&e, request(Op::PreAuth, 4, None, VISA));
    issuer_approves(&e, id2, *b"ISS013");
    let of4 = OriginalRef::Message(codecs::iso8583::f90::OriginalData {
        mti: codecs::iso8583::Mti::parse("0100").expect("mti"),
        stan: 4,
        transmission: *b"1123114959",
    });
    let inc = Request {
        pan: Pan::new(VISA),
        ..request(Op::PreAuth, 5, Some(of4), VISA)
    };
    let r = e.apply(Command::Message(inc), NOW_MS);
    assert_eq!((r.code, r.wait), (Code::INVALID_TRANSACTION, Wait::Nothing));
    assert_eq!(payment(&e, payment_id).captured_minor, 500);
}

#[test]
fn a_reversal_of_a_partly_captured_issuer_hold_advises_the_rest_only() {
    let journal = Recorder::default();
    let e = engine(&journal, &StandIn::default());
    let (id, _) = forwarded(&e, request(Op::PreAuth, 1, None, VISA));
    issuer_approves(&e, id, *b"ISS014");
    let original = OriginalRef::Message(codecs::iso8583::f90::OriginalData {
        mti: codecs::iso8583::Mti::parse("0100").expect("mti"),
        stan: 1,
        transmission: *b"1123114959",
    });
    let mut part = request(Op::Capture, 2, Some(original), VISA);
    (part.amount_minor, part.keep_open) = (300, true);
    assert_eq!(e.apply(Command::Message(part), NOW_MS).code, Code::APPROVED);
    // Down to 600 authorized, 300 of it captured: the issuer held 700 and
    // keeps 300.
    let mut lower = request(Op::Reversal, 3, Some(original), VISA);
    lower.replacement_minor = Some(600);
    assert_eq!(
        e.apply(Command::Message(lower), NOW_MS).code,
        Code::APPROVED
    );
    let last = saf(&e).pop().expect("advised");
    assert_eq!(
        (last.kind, last.amount_minor, last.replacement_minor),
        (SafKind::Reversal, 700, Some(300))
    );
    // Then in full: the 300 still held is released, the capture stands.
    let all = request(Op::Reversal, 4, Some(original), VISA);
    assert_eq!(e.apply(Command::Message(all), NOW_MS).code, Code::APPROVED);
    let last = saf(&e).pop().expect("advised");
    assert_eq!(
        (last.kind, last.amount_minor, last.replacement_minor),
        (SafKind::Reversal, 300, None)
    );
}
