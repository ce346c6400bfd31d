//! The internal-frame listener over loopback TCP, driven by the
//! `switch-client` library: API-key log-in, MO/TO sale and
//! pre-authorization, capture, refunds (by amount and by cart line),
//! cancel, get, list with filters and paging, mark as scam; the
//! cross-merchant matrix, mandates, revocation, rate limiting, garbage
//! frames, and no CVV2 in the data directory.

mod common;

use std::time::Duration;

use common::{card, TestSwitch, START_MS, TIMEOUT};
use switch::{KeyAdmin, Owner, Scope};
use switch_client::{
    CartItem, Client, ClientError, EventKind, ListQuery, MotoPayment, PaymentStatus, Reply,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MID1: &str = "DEMO00000000001";
const MID2: &str = "DEMO00000000002";
/// A CVV2 that appears nowhere else, to look for in the data directory.
const CVV2: &str = "7391";

/// A key in `sw`'s data directory: (client id, secret).
fn key(sw: &TestSwitch, owner: Owner) -> (String, String) {
    let k = KeyAdmin::new(&sw.dir)
        .create_key(owner, "test")
        .expect("create key");
    (k.client_id, k.secret)
}

fn merchant_key(sw: &TestSwitch, mid: &str) -> (String, String) {
    key(sw, Owner::Merchant(mid.into()))
}

async fn connect(sw: &TestSwitch, key: &(String, String)) -> Client {
    common::frames_client(sw.frame, key).await
}

fn order(seed: u64, amount_minor: u64, reference: &str, terminal: &str) -> MotoPayment {
    MotoPayment {
        pan: card(seed),
        expiry_yymm: "2812".into(),
        cvv2: Some(CVV2.into()),
        cardholder_name: Some("Ada Lovelace".into()),
        merchant_reference: reference.into(),
        description: Some("tea by phone".into()),
        currency: 978,
        amount_minor,
        terminal_id: terminal.into(),
        cart: Vec::new(),
    }
}

fn tea_cart() -> Vec<CartItem> {
    vec![
        CartItem {
            item: "Tea".into(),
            quantity: 3,
            unit_price_minor: 1000,
        },
        CartItem {
            item: "Pot".into(),
            quantity: 1,
            unit_price_minor: 2000,
        },
    ]
}

fn assert_code(reply: &Reply, code: &str) {
    assert_eq!(reply.code(), code, "reply: {reply:?}");
}

#[tokio::test]
async fn moto_lifecycle_over_tcp() {
    let mut sw = TestSwitch::start().await;
    let c = connect(&sw, &merchant_key(&sw, MID1)).await;

    // One-step sale with a cart: refund one line, then the rest by amount.
    let mut sale = order(1, 5000, "ORD-1", "DEMO0001");
    sale.cart = tea_cart();
    let r = c.authorize_moto(&sale).await.expect("sale");
    assert_code(&r, "00");
    let id = r.payment_id.expect("payment id");
    assert_eq!(r.status, Some(PaymentStatus::Succeeded));
    assert_eq!(r.amount_captured_minor, Some(5000));
    assert_eq!(r.auth_code.as_deref().map(str::len), Some(6));
    let masked = r.masked_pan.clone().expect("masked pan");
    assert!(masked.contains('*') && !masked.contains(&card(1)));

    let two_teas = [CartItem {
        item: "Tea".into(),
        quantity: 2,
        unit_price_minor: 1000,
    }];
    let r = c
        .refund_lines(id, &two_teas, Some("broken"))
        .await
        .expect("refund");
    assert_code(&r, "00");
    assert_eq!(r.amount_refunded_minor, Some(2000));
    assert_eq!(r.status, Some(PaymentStatus::PartiallyRefunded));
    // Only one tea left to refund; an unknown line is 12.
    assert_code(&c.refund_lines(id, &two_teas, None).await.expect("r"), "13");
    let cake = [CartItem {
        item: "Cake".into(),
        quantity: 1,
        unit_price_minor: 1000,
    }];
    assert_code(&c.refund_lines(id, &cake, None).await.expect("r"), "12");
    let r = c.get_payment(id).await.expect("get");
    let refused: Vec<(EventKind, u64, &str)> = r
        .history
        .iter()
        .filter(|h| h.kind == EventKind::RefundRefused)
        .map(|h| (h.kind, h.amount_minor, h.result_code.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            (EventKind::RefundRefused, 2000, "13"),
            (EventKind::RefundRefused, 1000, "12")
        ],
        "refused line refunds, at the lines' total"
    );
    assert_code(&c.refund(id, 3001, None).await.expect("r"), "13");
    let r = c.refund(id, 3000, None).await.expect("refund rest");
    assert_code(&r, "00");
    assert_eq!(r.status, Some(PaymentStatus::Refunded));

    // Two steps: pre-authorize, over-capture within 20 %, refund, cancel.
    let r = c
        .preauthorize_moto(&order(2, 1000, "ORD-2", "DEMO0002"))
        .await
        .expect("p");
    assert_code(&r, "00");
    assert_eq!(r.status, Some(PaymentStatus::Uncaptured));
    let hold = r.payment_id.expect("id");
    assert_code(&c.refund(hold, 100, None).await.expect("r"), "12");
    assert_code(&c.capture(hold, Some(1201)).await.expect("c"), "13");
    let r = c.capture(hold, Some(1200)).await.expect("capture");
    assert_code(&r, "00");
    assert_eq!(r.amount_captured_minor, Some(1200));
    assert_code(&c.capture(hold, None).await.expect("c"), "12");
    assert_code(&c.refund(hold, 200, None).await.expect("r"), "00");

    let r = c
        .preauthorize_moto(&order(3, 700, "ORD-3", "DEMO0001"))
        .await
        .expect("p");
    let cancel_me = r.payment_id.expect("id");
    let r = c.cancel(cancel_me).await.expect("cancel");
    assert_code(&r, "00");
    assert_eq!(r.status, Some(PaymentStatus::Cancelled));
    assert_code(&c.capture(cancel_me, None).await.expect("c"), "12");

    // The history tells the story, oldest first.
    let r = c.get_payment(hold).await.expect("get");
    assert_code(&r, "00");
    // Refused operations are in it too, with their code.
    let kinds: Vec<(EventKind, &str)> = r
        .history
        .iter()
        .map(|h| (h.kind, h.result_code.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Preauthorized, "00"),
            (EventKind::RefundRefused, "12"),
            (EventKind::CaptureRefused, "13"),
            (EventKind::Captured, "00"),
            // (`capture` without an amount of a payment that is no hold
            // is refused at the edge, before the engine: not recorded.)
            (EventKind::Refunded, "00"),
        ]
    );
    assert_eq!(r.history[2].amount_minor, 1201, "the amount asked");
    assert_eq!(r.amount_authorized_minor, Some(1000));
    assert_eq!(r.amount_refunded_minor, Some(200));
    assert_eq!(r.merchant_reference.as_deref(), Some("ORD-2"));
    assert_eq!(r.terminal_id.as_deref(), Some("DEMO0002"));
    assert_eq!(r.created_unix_s, Some(START_MS / 1000));
    let r = c.get_payment(cancel_me).await.expect("get");
    assert_eq!(r.history.last().map(|h| h.kind), Some(EventKind::Cancelled));

    // Mark as scam.
    let r = c.mark_scam(id, Some("chargeback")).await.expect("scam");
    assert_code(&r, "00");
    assert_eq!(r.scam, Some(true));
    let r = c.get_payment(id).await.expect("get");
    assert_eq!(r.scam, Some(true));
    assert_eq!(
        r.history.last().map(|h| h.kind),
        Some(EventKind::MarkedScam)
    );

    // Card checks still apply: Luhn, expiry, CVV2 form is the codec's.
    let mut bad = order(4, 100, "ORD-4", "DEMO0001");
    bad.pan = "4111111111111112".into();
    assert_code(&c.authorize_moto(&bad).await.expect("r"), "14");
    let mut old = order(4, 100, "ORD-4", "DEMO0001");
    old.expiry_yymm = "2001".into();
    assert_code(&c.authorize_moto(&old).await.expect("r"), "54");
    assert_code(&c.get_payment(999_999).await.expect("r"), "25");
    let mut blocked = order(4, 100, "ORD-5", "DEMO0001");
    blocked.pan = "4000000000000002".into();
    let r = c.authorize_moto(&blocked).await.expect("r");
    assert_code(&r, "59");
    assert_eq!(r.status, Some(PaymentStatus::Declined));

    drop(c);
    sw.stop().await;
    assert_no_cvv2(&sw.dir);
}

#[tokio::test]
async fn list_filters_and_pages() {
    let mut sw = TestSwitch::start().await;
    let c = connect(&sw, &merchant_key(&sw, MID1)).await;
    let mut ids = Vec::new();
    for i in 0..7u64 {
        let terminal = if i % 2 == 0 { "DEMO0001" } else { "DEMO0003" };
        let r = c
            .authorize_moto(&order(10 + i, 1000 + i * 100, &format!("L-{i}"), terminal))
            .await
            .expect("sale");
        assert_code(&r, "00");
        ids.push(r.payment_id.expect("id"));
        sw.clock.advance_ms(10_000);
    }
    c.preauthorize_moto(&order(30, 5000, "L-hold", "DEMO0001"))
        .await
        .expect("p");

    // Pages of 3, newest first, until no cursor.
    let mut seen = Vec::new();
    let mut query = ListQuery {
        status: Some(PaymentStatus::Succeeded),
        limit: Some(3),
        ..ListQuery::default()
    };
    for _ in 0..10 {
        let r = c.list_payments(&query).await.expect("list");
        assert_code(&r, "00");
        assert!(r.rows.len() <= 3);
        seen.extend(r.rows.iter().map(|row| row.payment_id));
        match r.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let page = |q: ListQuery| {
        let c = &c;
        async move { c.list_payments(&q).await.expect("list").rows }
    };
    let by_ref = page(ListQuery {
        merchant_reference: Some("L-3".into()),
        ..ListQuery::default()
    })
    .await;
    assert_eq!(by_ref.len(), 1);
    assert_eq!(by_ref[0].merchant_reference.as_deref(), Some("L-3"));
    assert_eq!(by_ref[0].amount_authorized_minor, 1300);
    let by_terminal = page(ListQuery {
        terminal_id: Some("DEMO0003".into()),
        ..ListQuery::default()
    })
    .await;
    assert_eq!(by_terminal.len(), 3);
    let by_amount = page(ListQuery {
        amount_min_minor: Some(1200),
        amount_max_minor: Some(1400),
        ..ListQuery::default()
    })
    .await;
    assert_eq!(by_amount.len(), 3);
    let start_s = START_MS / 1000;
    let by_date = page(ListQuery {
        created_from_unix_s: Some(start_s + 10),
        created_to_unix_s: Some(start_s + 30),
        ..ListQuery::default()
    })
    .await;
    let got: Vec<u64> = by_date.iter().map(|r| r.payment_id).collect();
    assert_eq!(got, [ids[3], ids[2], ids[1]]);
    let holds = page(ListQuery {
        status: Some(PaymentStatus::Uncaptured),
        ..ListQuery::default()
    })
    .await;
    assert_eq!(holds.len(), 1);
    sw.stop().await;
}

#[tokio::test]
async fn back_office_details_scam_workflow_and_filters() {
    let mut sw = TestSwitch::start().await;
    let key = merchant_key(&sw, MID1);
    let c = connect(&sw, &key).await;
    let sale = c
        .authorize_moto(&order(50, 5000, "BO-1", "DEMO0001"))
        .await
        .expect("sale");
    assert_code(&sale, "00");
    let id = sale.payment_id.expect("id");

    // The detail: the F38 it was approved with, and how it was authorized.
    let r = c.get_payment(id).await.expect("get");
    assert_eq!(r.auth_code, sale.auth_code, "the approval's F38");
    let d = &r.details;
    let rrn = d.rrn.clone().expect("rrn");
    assert_eq!(rrn.len(), 12);
    assert_eq!(d.channel, Some(8), "MO/TO");
    assert_eq!((d.eci, d.stood_in), (None, None));
    assert_eq!(d.auth_result_code.map(|c| c.to_string()), Some("00".into()));
    assert_eq!(d.amount_requested_minor, Some(5000));

    // A declined MO/TO names the payment it made; its detail says why.
    let mut blocked = order(51, 777, "BO-2", "DEMO0001");
    blocked.pan = "4000000000000002".into();
    let r = c.authorize_moto(&blocked).await.expect("declined");
    assert_code(&r, "59");
    let declined = r.payment_id.expect("a declined MO/TO names its payment");
    let r = c.get_payment(declined).await.expect("get");
    assert_eq!(r.status, Some(PaymentStatus::Declined));
    assert_eq!(r.auth_code, None);
    assert_eq!(r.amount_authorized_minor, Some(0));
    assert_eq!(r.details.amount_requested_minor, Some(777));
    assert_eq!(
        r.details.auth_result_code.map(|c| c.to_string()),
        Some("59".into())
    );

    // A refused capture changes nothing but the history.
    assert_code(&c.capture(id, Some(10)).await.expect("capture"), "12");
    let r = c.get_payment(id).await.expect("get");
    assert_eq!(r.status, Some(PaymentStatus::Succeeded));
    assert_eq!(
        r.history.last().map(|h| (h.kind, h.result_code.as_str())),
        Some((EventKind::CaptureRefused, "12"))
    );

    // Mark, filter, unmark: who and why are kept.
    let r = c.mark_scam(id, Some("chargeback")).await.expect("mark");
    assert_code(&r, "00");
    assert_eq!(r.details.flagged_by.as_deref(), Some(key.0.as_str()));
    assert_eq!(r.details.flag_note.as_deref(), Some("chargeback"));
    assert_eq!(r.details.flag_reasons.as_deref(), Some("manual"));
    let ids = |q: ListQuery| {
        let c = &c;
        async move {
            let r = c.list_payments(&q).await.expect("list");
            assert_code(&r, "00");
            r.rows
                .iter()
                .map(|row| row.payment_id)
                .collect::<Vec<u64>>()
        }
    };
    let flagged = ListQuery {
        scam: Some(true),
        ..ListQuery::default()
    };
    // The declined payment's card is on the block list: flagged by risk.
    assert_eq!(ids(flagged.clone()).await, [declined, id]);
    let r = c
        .unmark_scam(id, "customer verified")
        .await
        .expect("unmark");
    assert_code(&r, "00");
    assert_eq!(r.scam, Some(false));
    assert_eq!(r.details.unflagged_by.as_deref(), Some(key.0.as_str()));
    assert_eq!(
        r.details.unflag_reason.as_deref(),
        Some("customer verified")
    );
    assert_eq!(r.details.unflagged_unix_s, Some(START_MS / 1000));
    let r = c.get_payment(id).await.expect("get");
    assert_eq!(
        r.history.last().map(|h| h.kind),
        Some(EventKind::UnmarkedScam)
    );
    assert_eq!(ids(flagged).await, [declined]);
    let unflagged = ListQuery {
        scam: Some(false),
        ..ListQuery::default()
    };
    assert_eq!(ids(unflagged).await, [id]);
    assert_code(&c.unmark_scam(id, "again").await.expect("u"), "12");

    // The other filters.
    let q = ListQuery::default;
    assert_eq!(
        ids(ListQuery {
            rrn: Some(rrn),
            ..q()
        })
        .await,
        [id]
    );
    let auth = sale.auth_code.clone();
    assert_eq!(
        ids(ListQuery {
            auth_code: auth,
            ..q()
        })
        .await,
        [id]
    );
    let last4 = "0002".to_string(); // the blocked card's
    assert_eq!(
        ids(ListQuery {
            last4: Some(last4),
            ..q()
        })
        .await,
        [declined]
    );
    assert_eq!(
        ids(ListQuery {
            channel: Some(8),
            ..q()
        })
        .await,
        [declined, id]
    );
    assert!(ids(ListQuery {
        channel: Some(0),
        ..q()
    })
    .await
    .is_empty());
    assert!(ids(ListQuery {
        eci: Some(5),
        ..q()
    })
    .await
    .is_empty());
    let code = |s: &[u8; 2]| switch_client::ResultCode::new(*s).ok();
    let by_code = ListQuery {
        result_code: code(b"59"),
        ..q()
    };
    assert_eq!(ids(by_code).await, [declined]);
    let by_statuses = ListQuery {
        statuses: vec![PaymentStatus::Declined, PaymentStatus::Uncaptured],
        ..q()
    };
    assert_eq!(ids(by_statuses).await, [declined]);
    let both = ListQuery {
        statuses: vec![PaymentStatus::Declined, PaymentStatus::Succeeded],
        limit: Some(1),
        ..q()
    };
    let r = c.list_payments(&both).await.expect("list");
    assert_eq!(r.rows.len(), 1, "the page size holds");
    assert!(r.next_cursor.is_some());
    // The page size has a maximum; nothing past it is sent.
    let too_big = ListQuery {
        limit: Some(101),
        ..q()
    };
    assert!(matches!(
        c.list_payments(&too_big).await,
        Err(ClientError::Encode(_))
    ));
    sw.stop().await;
}

/// Every operation of key `c` on payment `id` is answered 25, as if the
/// payment did not exist, and listing does not show it.
async fn assert_cannot_touch(c: &Client, id: u64) {
    assert_code(&c.get_payment(id).await.expect("get"), "25");
    assert_code(&c.capture(id, None).await.expect("capture"), "25");
    assert_code(&c.refund(id, 100, None).await.expect("refund"), "25");
    let line = [CartItem {
        item: "Tea".into(),
        quantity: 1,
        unit_price_minor: 1000,
    }];
    assert_code(
        &c.refund_lines(id, &line, None).await.expect("refund"),
        "25",
    );
    assert_code(&c.cancel(id).await.expect("cancel"), "25");
    assert_code(&c.mark_scam(id, None).await.expect("scam"), "25");
    assert_code(&c.unmark_scam(id, "not mine").await.expect("unmark"), "25");
    let rows = c
        .list_payments(&ListQuery::default())
        .await
        .expect("list")
        .rows;
    assert!(rows.iter().all(|r| r.payment_id != id), "listed: {rows:?}");
}

#[tokio::test]
async fn keys_act_only_for_their_merchants() {
    let mut sw = TestSwitch::start().await;
    let key_a = merchant_key(&sw, MID1);
    let key_b = merchant_key(&sw, MID2);
    let a = connect(&sw, &key_a).await;
    let b = connect(&sw, &key_b).await;

    let mut sale = order(40, 5000, "B-1", "DEMO0101");
    sale.cart = tea_cart();
    let r = b.authorize_moto(&sale).await.expect("b sale");
    assert_code(&r, "00");
    let b_sale = r.payment_id.expect("id");
    let r = b
        .preauthorize_moto(&order(41, 800, "B-2", "DEMO0101"))
        .await
        .expect("b hold");
    let b_hold = r.payment_id.expect("id");
    let r = a
        .authorize_moto(&order(42, 900, "A-1", "DEMO0001"))
        .await
        .expect("a sale");
    let a_sale = r.payment_id.expect("id");

    // A cannot see or change B's payments, nor take payments on B's terminal.
    assert_cannot_touch(&a, b_sale).await;
    assert_cannot_touch(&a, b_hold).await;
    let r = a
        .authorize_moto(&order(43, 100, "X", "DEMO0101"))
        .await
        .expect("r");
    assert_code(&r, "58");
    // And the other way round.
    assert_cannot_touch(&b, a_sale).await;
    assert_code(&b.get_payment(b_sale).await.expect("get"), "00");

    // A provider without a mandate acts for nobody.
    const PID: &str = "SP-0000-0042";
    let key_p = key(&sw, Owner::Provider(PID.into()));
    let p = connect(&sw, &key_p).await;
    assert_cannot_touch(&p, b_hold).await;
    assert_cannot_touch(&p, a_sale).await;
    assert_code(
        &p.authorize_moto(&order(44, 100, "P", "DEMO0101"))
            .await
            .expect("r"),
        "58",
    );

    // A mandate for reporting only: B's payments can be read, not
    // changed; the provider sees what it holds.
    let admin = KeyAdmin::new(&sw.dir);
    let known = |mid: &str| [MID1, MID2].contains(&mid);
    admin
        .grant_mandate(MID2, PID, &[Scope::Reporting], &known)
        .expect("grant reporting");
    assert_code(&p.get_payment(b_hold).await.expect("get"), "00");
    assert_code(&p.capture(b_hold, Some(800)).await.expect("capture"), "25");
    assert_code(&p.cancel(b_hold).await.expect("cancel"), "25");
    assert_code(
        &p.authorize_moto(&order(46, 100, "P", "DEMO0101"))
            .await
            .expect("r"),
        "58",
    );
    let held = p.list_mandates().await.expect("mandates");
    assert_code(&held, "00");
    assert_eq!(held.mandates.len(), 1, "{held:?}");
    assert_eq!(held.mandates[0].merchant_id, MID2);
    assert_eq!(held.mandates[0].scopes, 4, "reporting");
    assert!(
        a.list_mandates()
            .await
            .expect("merchant key")
            .mandates
            .is_empty(),
        "a merchant's key holds no mandates"
    );

    // With B's full mandate: B's payments only, from the next request on.
    admin
        .grant_mandate(MID2, PID, &Scope::all(), &known)
        .expect("grant");
    assert_code(&p.get_payment(b_hold).await.expect("get"), "00");
    assert_code(&p.capture(b_hold, Some(800)).await.expect("capture"), "00");
    let rows = p
        .list_payments(&ListQuery::default())
        .await
        .expect("list")
        .rows;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let r = p
        .authorize_moto(&order(45, 300, "P-1", "DEMO0101"))
        .await
        .expect("p sale");
    assert_code(&r, "00");
    assert_cannot_touch(&p, a_sale).await;

    // Revoking the mandate takes effect on the next request.
    admin.revoke_mandate(MID2, PID).expect("revoke mandate");
    assert_cannot_touch(&p, b_hold).await;

    // A revoked key: the open connection's next request is refused and
    // closed, and it cannot log in again.
    admin.revoke_key(&key_a.0).expect("revoke key");
    let r = a.get_payment(a_sale).await;
    match r {
        Ok(reply) => assert_code(&reply, "58"),
        Err(e) => assert!(matches!(e, ClientError::Closed), "{e}"),
    }
    assert!(matches!(
        a.get_payment(a_sale).await,
        Err(ClientError::Closed | ClientError::Io(_))
    ));
    let again = Client::connect(sw.frame, &key_a.0, &key_a.1).await;
    assert!(
        matches!(&again, Err(ClientError::Authentication { result_code, .. }) if result_code == "58"),
        "{again:?}"
    );
    // B is unaffected.
    assert_code(&b.get_payment(b_sale).await.expect("get"), "00");
    sw.stop().await;
}

#[tokio::test]
async fn log_in_first_and_rate_limited() {
    let mut sw = TestSwitch::start().await;
    let good = merchant_key(&sw, MID1);

    // Anything before a log-in is refused, and the connection closed.
    let c = Client::open(sw.frame).await.expect("open");
    assert_code(&c.get_payment(1).await.expect("reply"), "58");
    assert!(c.get_payment(1).await.is_err(), "closed");

    // Five bad secrets lock the client id out from this address for 60 s.
    for _ in 0..5 {
        let r = Client::connect(sw.frame, &good.0, "0000000000000000000000000000000000").await;
        assert!(
            matches!(r, Err(ClientError::Authentication { .. })),
            "{r:?}"
        );
    }
    let locked = Client::connect(sw.frame, &good.0, &good.1).await;
    match locked {
        Err(ClientError::Authentication {
            result_code,
            message,
        }) => {
            assert_eq!(result_code, "58");
            assert!(message.contains("retry later"), "{message}");
        }
        other => panic!("expected a lock-out, got {other:?}"),
    }
    sw.clock.advance_ms(61_000);
    let c = connect(&sw, &good).await;
    assert_code(&c.get_payment(1).await.expect("reply"), "25");

    let (_, metrics) = sw.http_get("/metrics").await;
    assert!(metrics.contains("switch_auth_failures_total"), "{metrics}");
    let secret_logged = metrics.contains(&good.1);
    assert!(!secret_logged);
    sw.stop().await;
}

#[tokio::test]
async fn garbage_is_answered_or_closed_without_harm() {
    let mut sw = TestSwitch::start().await;
    let k = merchant_key(&sw, MID1);
    let c = connect(&sw, &k).await;
    let r = c
        .authorize_moto(&order(50, 100, "G-1", "DEMO0001"))
        .await
        .expect("sale");
    let id = r.payment_id.expect("id");

    // Junk that is not a frame: the connection is closed, unanswered.
    let mut junk = tokio::net::TcpStream::connect(sw.frame)
        .await
        .expect("connect");
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(TIMEOUT, junk.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer to junk");

    // A well-delimited frame with a broken body: answered 30, stays open.
    let mut raw = tokio::net::TcpStream::connect(sw.frame)
        .await
        .expect("connect");
    let mut frame = b"SW\x01\x07".to_vec();
    frame.extend_from_slice(&77u64.to_be_bytes());
    frame.extend_from_slice(&5u32.to_be_bytes());
    frame.extend_from_slice(&[0x01, 0x00, 0x09, 0xff, 0xff]); // truncated field
    raw.write_all(&frame).await.expect("write");
    let mut head = [0u8; 16];
    tokio::time::timeout(TIMEOUT, raw.read_exact(&mut head))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(&head[..4], b"SW\x01\x80");
    assert_eq!(u64::from_be_bytes(head[4..12].try_into().expect("8")), 77);
    let len = u32::from_be_bytes(head[12..16].try_into().expect("4")) as usize;
    let mut body = vec![0u8; len];
    raw.read_exact(&mut body).await.expect("body");
    assert_eq!(&body[..5], b"\x40\x00\x0230", "result code 30");

    // The other connection did not notice.
    assert_code(&c.get_payment(id).await.expect("get"), "00");
    sw.stop().await;
}

#[tokio::test]
async fn pipelined_requests_all_come_back() {
    let mut sw = TestSwitch::start().await;
    let c = std::sync::Arc::new(connect(&sw, &merchant_key(&sw, MID1)).await);
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .authorize_moto(&order(100 + i, 100 + i, &format!("P-{i}"), "DEMO0001"))
                .await
                .expect("sale");
            (i, r)
        }));
    }
    for t in tasks {
        let (i, r) = tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("in time")
            .expect("task");
        assert_code(&r, "00");
        assert_eq!(
            r.amount_authorized_minor,
            Some(100 + i),
            "matched by request id"
        );
        assert_eq!(
            r.merchant_reference.as_deref(),
            Some(format!("P-{i}").as_str())
        );
    }
    sw.stop().await;
}

/// No file under `dir` contains the test CVV2 in clear.
fn assert_no_cvv2(dir: &std::path::Path) {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).expect("read");
            files += 1;
            assert!(
                !bytes.windows(CVV2.len()).any(|w| w == CVV2.as_bytes()),
                "CVV2 found in {}",
                path.display()
            );
        }
    }
    assert!(files > 0, "the data directory holds files");
}

/// The operator commands, through the binary: create, list (masked),
/// revoke; mandates grant, list, revoke.
#[tokio::test]
async fn keys_and_mandates_commands() {
    let mut sw = TestSwitch::start().await;
    let dir = sw.dir.to_str().expect("utf-8 dir").to_owned();
    let switch = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
            .args(args)
            .output()
            .expect("run switch");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let created = switch(&[
        "keys",
        "create",
        "--data-dir",
        &dir,
        "--merchant",
        MID1,
        "--name",
        "cli",
    ]);
    let field = |name: &str| {
        created
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .expect("field printed")
    };
    let (id, secret) = (field("client_id:"), field("secret:"));
    assert_eq!(secret.len(), 64);
    let listed = switch(&["keys", "list", "--data-dir", &dir]);
    assert!(
        listed.contains(&id) && !listed.contains(&secret),
        "{listed}"
    );
    assert!(listed.contains(&format!("{}…{}", &secret[..3], &secret[61..])));
    let c = connect(&sw, &(id.clone(), secret.clone())).await;
    assert_code(&c.get_payment(1).await.expect("reply"), "25");

    // A grant needs a provider with a key and a merchant this switch
    // serves; each refusal says which.
    let refused = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
            .args(args)
            .output()
            .expect("run switch");
        assert!(!out.status.success(), "{args:?} must fail");
        String::from_utf8(out.stderr).expect("utf-8")
    };
    let grant = |mid: &'static str, scopes: &'static str| {
        [
            "mandates",
            "grant",
            "--data-dir",
            dir.as_str(),
            "--merchant",
            mid,
            "--provider",
            "SP-0000-0007",
            "--scopes",
            scopes,
        ]
    };
    let why = refused(&grant(MID2, "payments"));
    assert!(why.contains("has no key in force"), "{why}");
    switch(&[
        "keys",
        "create",
        "--data-dir",
        &dir,
        "--provider",
        "SP-0000-0007",
        "--name",
        "psp",
    ]);
    let why = refused(&grant("NOPE00000000009", "payments"));
    assert!(why.contains("not configured"), "{why}");
    let why = refused(&grant(MID2, "payments,admin"));
    assert!(why.contains("--scopes"), "{why}");
    let said = switch(&grant(MID2, "reporting,refunds"));
    assert!(said.contains("refunds,reporting"), "{said}");
    let mandates = switch(&["mandates", "list", "--data-dir", &dir]);
    assert!(
        mandates.contains("SP-0000-0007")
            && mandates.contains("in force")
            && mandates.contains("refunds,reporting"),
        "{mandates}"
    );
    switch(&[
        "mandates",
        "revoke",
        "--data-dir",
        &dir,
        "--merchant",
        MID2,
        "--provider",
        "SP-0000-0007",
    ]);
    assert!(switch(&["mandates", "list", "--data-dir", &dir]).contains("revoked"));

    switch(&["keys", "revoke", "--data-dir", &dir, &id]);
    assert!(switch(&["keys", "list", "--data-dir", &dir]).contains("revoked"));
    assert!(c.get_payment(1).await.map_or(true, |r| r.code() == "58"));
    sw.stop().await;
}
