//! Captures over internal frames, driven by the `switch-client` library:
//! partial captures (the not-final flag) and capture by an edited cart
//! (the lines replace the payment's cart and their total is captured,
//! within the over-capture limit), with refunds by line following the
//! captured cart.

mod common;

use common::{card, TestSwitch, TIMEOUT};
use switch::{KeyAdmin, Owner};
use switch_client::{CartItem, Client, MotoPayment, PaymentStatus, Reply};

async fn connect(sw: &TestSwitch) -> Client {
    let k = KeyAdmin::new(&sw.dir)
        .create_key(Owner::Merchant("DEMO00000000001".into()), "test")
        .expect("create key");
    tokio::time::timeout(TIMEOUT, Client::connect(sw.frame, &k.client_id, &k.secret))
        .await
        .expect("in time")
        .expect("log-in accepted")
}

fn line(item: &str, quantity: u32, unit_price_minor: u64) -> CartItem {
    CartItem {
        item: item.into(),
        quantity,
        unit_price_minor,
    }
}

/// A MO/TO pre-authorization of `amount_minor` with `cart`.
fn order(seed: u64, amount_minor: u64, cart: Vec<CartItem>) -> MotoPayment {
    MotoPayment {
        pan: card(seed),
        expiry_yymm: "2812".into(),
        cvv2: None,
        cardholder_name: None,
        merchant_reference: format!("ORD-{seed}"),
        description: None,
        currency: 978,
        amount_minor,
        terminal_id: "DEMO0001".into(),
        cart,
    }
}

fn assert_code(reply: &Reply, code: &str) {
    assert_eq!(reply.code(), code, "reply: {reply:?}");
}

#[tokio::test]
async fn split_captures_by_edited_carts_and_refunds_by_their_lines() {
    let mut sw = TestSwitch::start().await;
    let c = connect(&sw).await;
    let ordered = vec![line("Tea", 3, 1_000), line("Pot", 1, 2_000)];
    let r = c
        .preauthorize_moto(&order(301, 5_000, ordered))
        .await
        .expect("preauth");
    assert_code(&r, "00");
    let hold = r.payment_id.expect("id");
    // First shipment: two teas, not final.
    let r = c
        .capture_cart(hold, &[line("Tea", 2, 1_000)], true)
        .await
        .expect("capture");
    assert_code(&r, "00");
    assert_eq!(r.status, Some(PaymentStatus::Uncaptured), "still held");
    assert_eq!(r.amount_captured_minor, Some(2_000));
    // Last shipment: the pot and a cup the customer added; final.
    let last = [line("Pot", 1, 2_000), line("Cup", 1, 500)];
    let r = c.capture_cart(hold, &last, false).await.expect("capture");
    assert_code(&r, "00");
    assert_eq!(r.status, Some(PaymentStatus::Succeeded));
    assert_eq!(r.amount_captured_minor, Some(4_500));
    assert_code(
        &c.capture_partial(hold, Some(1), true).await.expect("c"),
        "12",
    );
    // The cart is what was captured: two teas (not three), the cup.
    let refund = |lines: Vec<CartItem>| {
        let c = &c;
        async move { c.refund_lines(hold, &lines, None).await.expect("refund") }
    };
    assert_code(&refund(vec![line("Tea", 3, 1_000)]).await, "13");
    assert_code(&refund(vec![line("Cup", 1, 500)]).await, "00");
    assert_code(&refund(vec![line("Tea", 2, 1_000)]).await, "00");
    let r = refund(vec![line("Pot", 1, 2_000)]).await;
    assert_code(&r, "00");
    assert_eq!(r.status, Some(PaymentStatus::Refunded));
    sw.stop().await;
}

#[tokio::test]
async fn an_edited_cart_is_bounded_by_the_over_capture_limit() {
    let mut sw = TestSwitch::start().await;
    let c = connect(&sw).await;
    let r = c
        .preauthorize_moto(&order(302, 1_000, vec![line("Mug", 1, 1_000)]))
        .await
        .expect("preauth");
    let hold = r.payment_id.expect("id");
    // 20% over-capture: 1,200 at most.
    let over = [line("Mug", 1, 1_000), line("Spoon", 1, 201)];
    assert_code(&c.capture_cart(hold, &over, false).await.expect("c"), "13");
    let r = c
        .capture_cart(hold, &[line("Mug", 1, 1_000), line("Spoon", 1, 200)], false)
        .await
        .expect("c");
    assert_code(&r, "00");
    assert_eq!(r.amount_captured_minor, Some(1_200));
    sw.stop().await;
}

#[tokio::test]
async fn a_final_capture_without_an_amount_takes_what_is_left_of_the_hold() {
    let mut sw = TestSwitch::start().await;
    let c = connect(&sw).await;
    let r = c
        .preauthorize_moto(&order(303, 1_000, Vec::new()))
        .await
        .expect("preauth");
    let hold = r.payment_id.expect("id");
    let r = c.capture_partial(hold, Some(300), true).await.expect("c");
    assert_code(&r, "00");
    assert_eq!(r.status, Some(PaymentStatus::Uncaptured));
    let r = c.capture_partial(hold, None, false).await.expect("c");
    assert_code(&r, "00");
    assert_eq!(
        (r.status, r.amount_captured_minor),
        (Some(PaymentStatus::Succeeded), Some(1_000))
    );
    sw.stop().await;
}
