//! The contract every [`Archive`] implementation passes, written once:
//! an implementation's test target gives a [`Harness`] and calls [`run`]
//! (or each case, for separate test names). Records are made with the
//! engine's own encoder, so the suite checks the format the drainer will
//! feed. Panics on a broken contract, as tests do.

use codecs::card::{CardToken, MaskedPan};
use engine::lifecycle::Kind;
use engine::record::{encode, PaymentRecordRef};
use engine::{Answer, Code, Extras, ListFilter, MessageKey, OriginalKey, Payment, Status, Target};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::{Archive, ArchiveError, BATCH_RECORDS_MAX, PAGE_PAYMENTS_MAX};

/// Makes stores for the suite.
pub trait Harness {
    /// A new, empty store called `name` (unique within one run).
    fn create(&self, name: &str) -> Box<dyn Archive>;
    /// Store `name` opened again, as after a restart (the handle from
    /// [`Harness::create`] has been dropped).
    fn reopen(&self, name: &str) -> Box<dyn Archive>;
}

/// Every case.
pub fn run(h: &dyn Harness) {
    round_trip(h);
    versions(h);
    replay_is_idempotent(h);
    watermark(h);
    payment_id_max(h);
    delete_by_cutoff(h);
    open_holds(h);
    list_pages(h);
    list_filters(h);
    survives_reopen(h);
    refuses_bad_input(h);
}

/// A payment with values derived from `id`.
pub fn payment(id: u64, merchant: u32, created_ms: u64, amount_minor: u64) -> Payment {
    Payment {
        id,
        merchant,
        terminal: *b"TERM0001",
        kind: Kind::Sale,
        status: Status::Succeeded,
        currency: 978,
        authorized_minor: amount_minor,
        captured_minor: amount_minor,
        refunds: Vec::new(),
        card_token: CardToken([id as u8; 32]),
        masked_pan: MaskedPan::from_masked("411111******1111").expect("masked"),
        created_ms,
        auth_code: digits(id),
        rrn: digits(id),
        scam: false,
        flag_reasons: String::new(),
        history: Vec::new(),
        extras: None,
        journal_seq: 0,
        upstream: None,
        more: Default::default(),
    }
}

fn digits<const N: usize>(mut v: u64) -> [u8; N] {
    let mut out = [b'0'; N];
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out
}

/// The F90 key and answer key the suite gives payment `p`.
pub fn keys(p: &Payment) -> (OriginalKey, MessageKey) {
    let stan = (p.id % 1_000_000) as u32;
    let original = OriginalKey {
        merchant: p.merchant,
        mti: 200,
        stan,
        transmission: 1_231_235_959,
    };
    let message = MessageKey {
        mti: 200,
        terminal: p.terminal,
        stan,
        transmission: 1_231_235_959,
    };
    (original, message)
}

/// The engine's record of `p` with its index entry and answer.
pub fn record(p: &Payment) -> Vec<u8> {
    let (original, message) = keys(p);
    let answer = Answer {
        code: Code::APPROVED,
        rrn: p.rrn,
        auth_code: Some(p.auth_code),
        content_crc: p.id as u32,
        seq: 0,
        at_ms: p.created_ms + u64::from(p.status.code()),
    };
    let target = Target {
        payment: p.id,
        refund: None,
    };
    let mut buf = Vec::new();
    encode(
        &PaymentRecordRef {
            payment: p,
            index: Some((original, target)),
            answer: Some((message, answer)),
        },
        &mut buf,
    );
    buf
}

fn apply(a: &mut dyn Archive, records: &[(u64, Vec<u8>)]) -> u64 {
    let batch: Vec<(u64, &[u8])> = records.iter().map(|(s, r)| (*s, &r[..])).collect();
    a.apply(&batch).expect("apply")
}

/// Everything a store says about payments `ids`, for comparing two.
fn state(a: &dyn Archive, ids: &[u64]) -> Vec<String> {
    let mut out = vec![format!("watermark {}", a.watermark().expect("watermark"))];
    for &id in ids {
        let p = a.payment(id).expect("payment");
        let (original, message) = keys(&payment(id, 1, 0, 0));
        let t = a.target(&original).expect("target");
        let ans = a.answer(&message).expect("answer");
        out.push(format!("{p:?} {t:?} {ans:?}"));
    }
    let page = a
        .list(&[1, 2], &ListFilter::default(), None, PAGE_PAYMENTS_MAX)
        .expect("list");
    out.push(format!("{page:?}"));
    out
}

/// Every lookup finds what a batch stored; unknown keys find nothing.
pub fn round_trip(h: &dyn Harness) {
    let mut a = h.create("round_trip");
    let mut p2 = payment(2, 1, 2_000, 700);
    p2.extras = Some(Box::new(Extras {
        merchant_reference: "order-2".into(),
        ..Extras::default()
    }));
    let ps = [payment(1, 1, 1_000, 500), p2, payment(3, 2, 3_000, 900)];
    let recs: Vec<_> = ps.iter().zip(10..).map(|(p, s)| (s, record(p))).collect();
    assert_eq!(apply(&mut *a, &recs), 12);
    for p in &ps {
        assert_eq!(a.payment(p.id).expect("payment").as_ref(), Some(p));
        let (original, message) = keys(p);
        let t = a.target(&original).expect("target").expect("found");
        assert_eq!((t.payment, t.refund), (p.id, None));
        let ans = a.answer(&message).expect("answer").expect("found");
        assert_eq!(
            (ans.code, ans.rrn, ans.auth_code),
            (Code::APPROVED, p.rrn, Some(p.auth_code))
        );
        assert_eq!(
            (ans.seq, ans.at_ms, ans.content_crc),
            (0, p.created_ms + 2, p.id as u32)
        );
        let by_rrn = a
            .payment_by_rrn(p.merchant, &p.rrn, &p.auth_code)
            .expect("rrn");
        assert_eq!(by_rrn.as_ref(), Some(p));
    }
    assert_eq!(a.payment(4).expect("payment"), None);
    assert_eq!(a.payment(u64::MAX).expect("payment"), None);
    assert_eq!(
        a.payment_by_rrn(2, &ps[0].rrn, &ps[0].auth_code)
            .expect("rrn"),
        None
    );
    let (original, message) = keys(&payment(4, 1, 0, 0));
    assert_eq!(a.target(&original).expect("target"), None);
    assert_eq!(a.answer(&message).expect("answer"), None);
}

/// A newer version replaces; an older or equal one changes nothing.
pub fn versions(h: &dyn Harness) {
    let mut a = h.create("versions");
    let p = payment(1, 1, 1_000, 500);
    apply(&mut *a, &[(10, record(&p))]);
    let mut newer = p.clone();
    newer.status = Status::Refunded;
    apply(&mut *a, &[(20, record(&newer))]);
    assert_eq!(a.payment(1).expect("payment"), Some(newer.clone()));
    let mut older = p.clone();
    older.status = Status::Reversed;
    apply(&mut *a, &[(15, record(&older)), (20, record(&older))]);
    assert_eq!(a.payment(1).expect("payment"), Some(newer.clone()));
    let (_, message) = keys(&p);
    let ans = a.answer(&message).expect("answer").expect("found");
    assert_eq!(ans.at_ms, newer.created_ms + u64::from(newer.status.code()));
    assert_eq!(a.watermark().expect("watermark"), 20);
}

/// Replaying a batch twice, or its records in any order and grouping,
/// leaves the state that applying it once in order leaves.
pub fn replay_is_idempotent(h: &dyn Harness) {
    let events = prop::collection::vec((1u64..8, 0usize..8, 1u64..10_000), 1..40);
    let strategy = events.prop_flat_map(|ev| {
        let order: Vec<usize> = (0..ev.len()).collect();
        (Just(ev), Just(order).prop_shuffle(), 1usize..6)
    });
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::cell::Cell::new(0u32);
    runner
        .run(&strategy, |(events, order, chunk)| {
            case.set(case.get() + 1);
            let case = case.get();
            let recs: Vec<(u64, Vec<u8>)> = events
                .iter()
                .zip(1u64..)
                .map(|(&(id, status, amount), seq)| {
                    let mut p = payment(id, 1 + (id % 2) as u32, id * 1_000, amount);
                    p.status = Status::ALL[status];
                    (seq, record(&p))
                })
                .collect();
            let mut once = h.create(&format!("replay_once_{case}"));
            apply(&mut *once, &recs);
            let mut twice = h.create(&format!("replay_shuffled_{case}"));
            let shuffled: Vec<_> = order.iter().map(|&i| recs[i].clone()).collect();
            for part in shuffled.chunks(chunk) {
                apply(&mut *twice, part);
            }
            apply(&mut *twice, &recs);
            let ids: Vec<u64> = (1..8).collect();
            prop_assert_eq!(state(&*once, &ids), state(&*twice, &ids));
            Ok(())
        })
        .expect("replay leaves the same state");
}

/// The watermark starts at 0, never goes down, and survives a reopen.
pub fn watermark(h: &dyn Harness) {
    let mut a = h.create("watermark");
    assert_eq!(a.watermark().expect("watermark"), 0);
    let p = payment(1, 1, 1_000, 500);
    assert_eq!(apply(&mut *a, &[(5, record(&p))]), 5);
    assert_eq!(apply(&mut *a, &[(3, record(&p))]), 5);
    assert_eq!(apply(&mut *a, &[]), 5);
    assert_eq!(apply(&mut *a, &[(9, record(&p)), (7, record(&p))]), 9);
    drop(a);
    let a = h.reopen("watermark");
    assert_eq!(a.watermark().expect("watermark"), 9);
}

/// The highest payment id is 0 for a new store, follows what is applied
/// (in any order), and survives a reopen.
pub fn payment_id_max(h: &dyn Harness) {
    let mut a = h.create("id_max");
    assert_eq!(a.payment_id_max().expect("id max"), 0);
    let (p7, p3) = (payment(7, 1, 1_000, 500), payment(3, 1, 1_000, 500));
    apply(&mut *a, &[(1, record(&p7)), (2, record(&p3))]);
    assert_eq!(a.payment_id_max().expect("id max"), 7);
    drop(a);
    let a = h.reopen("id_max");
    assert_eq!(a.payment_id_max().expect("id max"), 7);
}

/// Payments created before the cutoff go, with their index entries and
/// answers; later ones stay.
pub fn delete_by_cutoff(h: &dyn Harness) {
    let mut a = h.create("delete");
    let ps: Vec<_> = (1..=3).map(|id| payment(id, 1, id * 100, 10)).collect();
    let recs: Vec<_> = ps.iter().zip(1..).map(|(p, s)| (s, record(p))).collect();
    apply(&mut *a, &recs);
    assert_eq!(a.delete_created_before(250).expect("delete"), 2);
    assert_eq!(a.delete_created_before(250).expect("delete"), 0);
    for p in &ps {
        let kept = p.created_ms >= 250;
        let (original, message) = keys(p);
        assert_eq!(a.payment(p.id).expect("payment").is_some(), kept);
        assert_eq!(a.target(&original).expect("target").is_some(), kept);
        assert_eq!(a.answer(&message).expect("answer").is_some(), kept);
    }
    assert_eq!(a.watermark().expect("watermark"), 3);
}

/// Open pre-authorizations of one merchant created before the cutoff,
/// oldest first, within the limit; a hold that ended (a newer image) is no
/// longer open.
pub fn open_holds(h: &dyn Harness) {
    let mut a = h.create("open_holds");
    let hold = |id: u64, merchant: u32, created_ms: u64| Payment {
        kind: Kind::PreAuth,
        status: Status::Uncaptured,
        captured_minor: 0,
        ..payment(id, merchant, created_ms, 10)
    };
    let ps = [
        hold(1, 1, 300),
        hold(2, 1, 100),
        hold(3, 2, 100),
        payment(4, 1, 50, 10),
        hold(5, 1, 900),
        hold(6, 1, 200),
    ];
    let recs: Vec<_> = ps.iter().zip(1..).map(|(p, s)| (s, record(p))).collect();
    apply(&mut *a, &recs);
    let ids = |a: &dyn Archive, before, limit| -> Vec<u64> {
        let found = a.open_holds(1, before, limit).expect("open holds");
        found.iter().map(|p| p.id).collect()
    };
    assert_eq!(ids(&*a, 500, 10), [2, 6, 1]);
    assert_eq!(ids(&*a, 500, 2), [2, 6]);
    assert_eq!(ids(&*a, 100, 10), Vec::<u64>::new());
    // Payment 2's hold ends: a newer image, not open any more.
    let ended = Payment {
        status: Status::Expired,
        ..ps[1].clone()
    };
    apply(&mut *a, &[(10, record(&ended))]);
    assert_eq!(ids(&*a, 500, 10), [6, 1]);
    assert!(matches!(
        a.open_holds(1, 500, crate::OPEN_HOLDS_MAX + 1),
        Err(ArchiveError::Limit { .. })
    ));
}

/// Pages come newest first and the cursor walks them without a gap or a
/// repeat; a scope of two merchants merges both.
pub fn list_pages(h: &dyn Harness) {
    let mut a = h.create("list_pages");
    let recs: Vec<_> = (1..=25u64)
        .map(|id| (id, record(&payment(id, 1 + u32::from(id % 5 == 0), id, id))))
        .collect();
    apply(&mut *a, &recs);
    let all = ListFilter::default();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = a.list(&[1], &all, cursor, 7).expect("list");
        assert!(page.payments.len() <= 7);
        seen.extend(page.payments.iter().map(|p| p.id));
        cursor = page.payments.last().map(|p| p.id);
        if !page.more {
            break;
        }
    }
    let want: Vec<u64> = (1..=25).rev().filter(|id| id % 5 != 0).collect();
    assert_eq!(seen, want);
    let both = a.list(&[2, 1, 2], &all, Some(21), 5).expect("list");
    let ids: Vec<u64> = both.payments.iter().map(|p| p.id).collect();
    assert_eq!((ids, both.more), (vec![20, 19, 18, 17, 16], true));
    let none = a.list(&[3], &all, None, 5).expect("list");
    assert_eq!(none, crate::Page::default());
    let zero = a.list(&[1], &all, None, 0).expect("list");
    assert!(zero.payments.is_empty() && zero.more);
}

/// Each filter keeps what the engine's list keeps.
pub fn list_filters(h: &dyn Harness) {
    let mut a = h.create("list_filters");
    let mut ps: Vec<Payment> = (1..=12u64)
        .map(|id| payment(id, 1, id * 10, id * 100))
        .collect();
    ps[2].status = Status::Refunded;
    ps[3].terminal = *b"TERM0002";
    ps[4].captured_minor = 0;
    ps[4].authorized_minor = 5_000;
    ps[5].extras = Some(Box::new(Extras {
        merchant_reference: "order-6".into(),
        ..Extras::default()
    }));
    let recs: Vec<_> = ps.iter().zip(1..).map(|(p, s)| (s, record(p))).collect();
    apply(&mut *a, &recs);
    let ids = |f: ListFilter<'_>| -> Vec<u64> {
        let page = a.list(&[1], &f, None, 100).expect("list");
        page.payments.iter().map(|p| p.id).collect()
    };
    let f = ListFilter::default;
    assert_eq!(
        ids(ListFilter {
            status: Some(Status::Refunded),
            ..f()
        }),
        vec![3]
    );
    assert_eq!(
        ids(ListFilter {
            terminal: Some(*b"TERM0002"),
            ..f()
        }),
        vec![4]
    );
    assert_eq!(
        ids(ListFilter {
            merchant_reference: Some("order-6"),
            ..f()
        }),
        vec![6]
    );
    assert_eq!(
        ids(ListFilter {
            from_ms: Some(100),
            to_ms: Some(120),
            ..f()
        }),
        vec![11, 10]
    );
    let amounts = ListFilter {
        amount_min_minor: Some(1_100),
        amount_max_minor: Some(5_000),
        ..f()
    };
    assert_eq!(ids(amounts), vec![12, 11, 5]);
    list_filters_back_office(h);
}

/// The back office's filters: some on columns (statuses, F37, F38), the
/// others on each payment's image (scam, last 4, channel, ECI, code),
/// paged through as the column filters are.
pub fn list_filters_back_office(h: &dyn Harness) {
    let mut a = h.create("list_filters_back_office");
    let mut ps: Vec<Payment> = (1..=30u64)
        .map(|id| payment(id, 1, id * 10, id * 100))
        .collect();
    ps[1].status = Status::Declined;
    ps[1].history.push(engine::lifecycle::Activity {
        op: engine::lifecycle::Operation::Sale,
        amount_minor: 200,
        at_ms: 20,
        code: Code(*b"51"),
    });
    ps[2].status = Status::Refunded;
    for i in [4, 9, 14, 19, 24] {
        ps[i].scam = true;
    }
    ps[6].masked_pan = MaskedPan::from_masked("411111******4242").expect("masked");
    ps[7].more.channel = Some(59);
    ps[7].more.eci = Some(5);
    ps[8].more.channel = Some(8);
    let recs: Vec<_> = ps.iter().zip(1..).map(|(p, s)| (s, record(p))).collect();
    apply(&mut *a, &recs);
    let ids = |f: ListFilter<'_>, limit: usize| -> Vec<u64> {
        let (mut seen, mut cursor) = (Vec::new(), None);
        loop {
            let page = a.list(&[1], &f, cursor, limit).expect("list");
            assert!(page.payments.len() <= limit);
            seen.extend(page.payments.iter().map(|p| p.id));
            cursor = page.payments.last().map(|p| p.id);
            if !page.more {
                return seen;
            }
        }
    };
    let f = ListFilter::default;
    let statuses = [Status::Declined, Status::Refunded];
    let several = ListFilter {
        statuses: &statuses,
        ..f()
    };
    assert_eq!(ids(several, 100), vec![3, 2]);
    let scam = ListFilter {
        scam: Some(true),
        ..f()
    };
    assert_eq!(ids(scam, 2), vec![25, 20, 15, 10, 5], "paged by 2");
    assert_eq!(
        ids(
            ListFilter {
                scam: Some(false),
                ..f()
            },
            100
        )
        .len(),
        25
    );
    assert_eq!(
        ids(
            ListFilter {
                rrn: Some(digits(12)),
                ..f()
            },
            10
        ),
        vec![12]
    );
    assert_eq!(
        ids(
            ListFilter {
                auth_code: Some(digits(13)),
                ..f()
            },
            10
        ),
        vec![13]
    );
    assert_eq!(
        ids(
            ListFilter {
                last4: Some(*b"4242"),
                ..f()
            },
            10
        ),
        vec![7]
    );
    assert_eq!(
        ids(
            ListFilter {
                channel: Some(59),
                ..f()
            },
            10
        ),
        vec![8]
    );
    assert_eq!(
        ids(
            ListFilter {
                eci: Some(5),
                ..f()
            },
            10
        ),
        vec![8]
    );
    assert_eq!(
        ids(
            ListFilter {
                code: Some(Code(*b"51")),
                ..f()
            },
            10
        ),
        vec![2]
    );
}

/// What was committed is there after a reopen, and writes go on.
pub fn survives_reopen(h: &dyn Harness) {
    let mut a = h.create("reopen");
    let ps: Vec<_> = (1..=5).map(|id| payment(id, 1, id, id)).collect();
    let recs: Vec<_> = ps.iter().zip(1..).map(|(p, s)| (s, record(p))).collect();
    apply(&mut *a, &recs);
    drop(a);
    let mut a = h.reopen("reopen");
    for p in &ps {
        assert_eq!(a.payment(p.id).expect("payment").as_ref(), Some(p));
    }
    assert_eq!(apply(&mut *a, &[(6, record(&payment(6, 1, 6, 6)))]), 6);
    let page = a
        .list(&[1], &ListFilter::default(), None, 10)
        .expect("list");
    assert_eq!(page.payments.len(), 6);
}

/// Limits and undecodable records are errors, and a refused batch
/// applies nothing.
pub fn refuses_bad_input(h: &dyn Harness) {
    let mut a = h.create("bad_input");
    let good = record(&payment(1, 1, 1, 1));
    let bad = [(2, good.clone()), (3, vec![1, 2, 3])];
    let batch: Vec<(u64, &[u8])> = bad.iter().map(|(s, r)| (*s, &r[..])).collect();
    let err = a.apply(&batch).expect_err("bad record");
    assert!(matches!(err, ArchiveError::Record { seq: 3, .. }), "{err}");
    assert_eq!(a.payment(1).expect("payment"), None);
    assert_eq!(a.watermark().expect("watermark"), 0);
    let many = vec![(1u64, &good[..]); BATCH_RECORDS_MAX + 1];
    assert!(matches!(a.apply(&many), Err(ArchiveError::Limit { .. })));
    let page = a.list(&[1], &ListFilter::default(), None, PAGE_PAYMENTS_MAX + 1);
    assert!(matches!(page, Err(ArchiveError::Limit { .. })));
    let scope: Vec<u32> = (0..1_000).collect();
    let wide = a.list(&scope, &ListFilter::default(), None, 1);
    assert!(matches!(wide, Err(ArchiveError::Limit { .. })));
}
