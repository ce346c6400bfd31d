//! The business metrics of the dashboard over real TCP: decisions by
//! channel, operation and code over ISO 8583 and internal frames, approved
//! amounts by currency and operation, repeats not counted twice, and the
//! per-merchant labels with their cardinality limit. One test in this
//! binary: the per-merchant switch is process-wide, and metrics are too.

mod common;

use common::{capture, card, preauth, sale, TestSwitch};
use switch::{KeyAdmin, Owner};
use switch_client::{Client, MotoPayment};

/// The value of the series `name{labels}` in a Prometheus text page (0
/// when absent). `labels` as the page writes them, in its order.
fn value(page: &str, name: &str, labels: &str) -> f64 {
    let series = format!("{name}{{{labels}}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

#[tokio::test]
async fn decisions_and_amounts_by_channel_currency_and_merchant() {
    let mut sw = TestSwitch::start_with(|c| {
        c.metrics.merchant_labels = true;
        c.metrics.merchant_labels_max = 1;
    })
    .await;
    let (_, before) = sw.http_get("/metrics").await;
    let mut iso = sw.client().await;

    // ISO 8583: a sale, a pre-authorization captured in part, a sale
    // declined for a bad card number, and a repeat of the sale.
    let s = sale(&card(1), 1_000);
    assert_eq!(iso.call(&s).await.code(), "00");
    assert_eq!(iso.call(&s.clone().mti("0201")).await.code(), "00");
    let p = preauth(&card(2), 5_000);
    assert_eq!(iso.call(&p).await.code(), "00");
    assert_eq!(iso.call(&capture(&p, 4_000)).await.code(), "00");
    let mut bad = card(3).into_bytes();
    let last = bad.len() - 1;
    bad[last] = if bad[last] == b'9' {
        b'0'
    } else {
        bad[last] + 1
    };
    let bad = String::from_utf8(bad).expect("digits");
    assert_eq!(iso.call(&sale(&bad, 700)).await.code(), "14");
    // Merchant 2 (over the label limit of 1): a sale in its terminal.
    let m2 = sale(&card(4), 300)
        .set(41, "DEMO0101")
        .set(42, "DEMO00000000002");
    assert_eq!(iso.call(&m2).await.code(), "00");

    // Internal frames: a MO/TO sale of 250 in USD.
    let key = KeyAdmin::new(&sw.dir)
        .create_key(Owner::Merchant("DEMO00000000001".into()), "dash")
        .expect("key");
    let frames = Client::connect(sw.frame, &key.client_id, &key.secret)
        .await
        .expect("log-in");
    let moto = frames
        .authorize_moto(&MotoPayment {
            pan: card(5),
            expiry_yymm: "2812".into(),
            cvv2: None,
            cardholder_name: None,
            merchant_reference: "dash-1".into(),
            description: None,
            currency: 840,
            amount_minor: 250,
            terminal_id: "DEMO0001".into(),
            cart: Vec::new(),
        })
        .await
        .expect("moto");
    assert!(moto.approved(), "{moto:?}");

    let (_, page) = sw.http_get("/metrics").await;
    let delta =
        |name: &str, labels: &str| value(&page, name, labels) - value(&before, name, labels);
    let decisions = "switch_decisions_total";
    assert_eq!(
        delta(decisions, r#"channel="iso",op="sale",code="00""#),
        2.0,
        "the repeat is not counted"
    );
    assert_eq!(
        delta(decisions, r#"channel="iso",op="sale",code="14""#),
        1.0
    );
    assert_eq!(
        delta(decisions, r#"channel="iso",op="preauth",code="00""#),
        1.0
    );
    assert_eq!(
        delta(decisions, r#"channel="iso",op="capture",code="00""#),
        1.0
    );
    assert_eq!(
        delta(decisions, r#"channel="frames",op="sale",code="00""#),
        1.0
    );
    let amounts = "switch_amount_minor_total";
    assert_eq!(
        delta(amounts, r#"currency="978",op="sale""#),
        1_300.0,
        "declines add nothing"
    );
    assert_eq!(delta(amounts, r#"currency="978",op="preauth""#), 5_000.0);
    assert_eq!(delta(amounts, r#"currency="978",op="capture""#), 4_000.0);
    assert_eq!(delta(amounts, r#"currency="840",op="sale""#), 250.0);

    // The first merchant seen has its label; the second is over the limit.
    let per = "switch_merchant_decisions_total";
    assert_eq!(
        delta(
            per,
            r#"merchant="DEMO00000000001",op="sale",result="approved""#
        ),
        2.0
    );
    assert_eq!(
        delta(
            per,
            r#"merchant="DEMO00000000001",op="sale",result="declined""#
        ),
        1.0
    );
    assert_eq!(
        delta(per, r#"merchant="other",op="sale",result="approved""#),
        1.0
    );
    assert!(!page.contains(r#"merchant="DEMO00000000002""#));
    assert_eq!(
        delta(
            "switch_merchant_amount_minor_total",
            r#"merchant="DEMO00000000001",currency="978",op="sale""#
        ),
        1_000.0
    );
    assert!(
        delta(
            "switch_limit_reached_total",
            r#"limit="metrics_merchant_labels_max""#
        ) >= 1.0
    );
    sw.stop().await;
}
