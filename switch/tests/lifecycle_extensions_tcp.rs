//! The contract's lifecycle extensions over real loopback TCP:
//! incremental authorization (an 0100 with F90 raising an open
//! pre-authorization) and multiple partial captures (F48 subelement 22).

mod common;

use common::*;

/// An incremental authorization of `original` (an 0100) with `pan`.
fn increment(original: &Req, pan: &str, amount: u64) -> Req {
    preauth(pan, amount).set(90, original.f90())
}

/// A partial capture: F48 subelement 22 = 1, the rest stays held.
fn partial(original: &Req, amount: u64) -> Req {
    capture(original, amount).set(48, "22011")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_increment_raises_the_hold_that_captures_are_bounded_by() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let pan = card(201);
    let auth = preauth(&pan, 10_000);
    let first = c.call(&auth).await;
    assert_eq!(first.code(), "00");
    let inc = increment(&auth, &pan, 5_000);
    let raised = c.call(&inc).await;
    assert_eq!(
        (raised.mti.as_str(), raised.code().as_str()),
        ("0110", "00")
    );
    assert_eq!(raised.text(38), first.text(38), "the original's F38");
    assert_eq!(raised.text(4), "000000005000", "F4 echoed");
    // A repeat gets the very same answer and raises nothing.
    let again = c.call(&inc.clone().mti("0101")).await;
    assert_eq!(
        (again.code(), again.text(37), again.text(38)),
        (raised.code(), raised.text(37), raised.text(38))
    );
    // 15,000 authorized: 18,000 with 20% over-capture, not 18,001 (and
    // not 12,000 + 6,000 as two holds would allow twice).
    assert_eq!(c.call(&capture(&auth, 18_001)).await.code(), "13");
    assert_eq!(c.call(&capture(&auth, 18_000)).await.code(), "00");
    // Captured: no longer open.
    assert_eq!(c.call(&increment(&auth, &pan, 100)).await.code(), "12");
    // The refund bound shows one payment captured 18,000.
    assert_eq!(c.call(&refund(&auth, 18_001)).await.code(), "13");
    assert_eq!(c.call(&refund(&auth, 18_000)).await.code(), "00");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_that_cannot_raise_a_hold_get_12_or_25() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let pan = card(202);
    let auth = preauth(&pan, 10_000);
    assert_eq!(c.call(&auth).await.code(), "00");
    // Another card: not the same cardholder's hold.
    assert_eq!(
        c.call(&increment(&auth, &card(203), 1_000)).await.code(),
        "12"
    );
    // Another currency (one the merchant accepts).
    let dollars = increment(&auth, &pan, 1_000).set(49, "840");
    assert_eq!(c.call(&dollars).await.code(), "12");
    // An unknown original.
    let unknown = preauth(&pan, 1_000).set(90, preauth(&pan, 1).f90());
    assert_eq!(c.call(&unknown).await.code(), "25");
    // A sale is not a pre-authorization.
    let s = sale(&card(204), 1_000);
    assert_eq!(c.call(&s).await.code(), "00");
    assert_eq!(c.call(&increment(&s, &card(204), 100)).await.code(), "12");
    // None of them raised the hold: 12,000 is still the limit.
    assert_eq!(c.call(&capture(&auth, 12_001)).await.code(), "13");
    assert_eq!(c.call(&capture(&auth, 12_000)).await.code(), "00");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_captures_end_with_a_final_one_that_releases_the_rest() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let auth = preauth(&card(205), 10_000);
    assert_eq!(c.call(&auth).await.code(), "00");
    let first = partial(&auth, 3_000);
    let r = c.call(&first).await;
    assert_eq!((r.mti.as_str(), r.code().as_str()), ("0230", "00"));
    // A repeat of a partial capture: the same answer, captured once.
    let again = c.call(&first.clone().mti("0221")).await;
    assert_eq!(
        (again.code(), again.text(37), again.text(38)),
        (r.code(), r.text(37), r.text(38))
    );
    assert_eq!(c.call(&partial(&auth, 4_000)).await.code(), "00");
    // 7,000 captured of 12,000: 5,001 more is over the limit.
    assert_eq!(c.call(&partial(&auth, 5_001)).await.code(), "13");
    // No refund while the hold is open.
    assert_eq!(c.call(&refund(&auth, 100)).await.code(), "12");
    // F48.22 = 0 is final, as is a 0220 without it.
    let last = capture(&auth, 1_000).set(48, "22010");
    assert_eq!(c.call(&last).await.code(), "00");
    assert_eq!(c.call(&partial(&auth, 1)).await.code(), "12");
    assert_eq!(c.call(&capture(&auth, 1)).await.code(), "12");
    // 8,000 captured in all, the rest released.
    assert_eq!(c.call(&refund(&auth, 8_001)).await.code(), "13");
    assert_eq!(c.call(&refund(&auth, 8_000)).await.code(), "00");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_and_partial_captures_interleave_and_reverse() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let pan = card(206);
    let auth = preauth(&pan, 10_000);
    assert_eq!(c.call(&auth).await.code(), "00");
    assert_eq!(c.call(&partial(&auth, 11_000)).await.code(), "00");
    let inc = increment(&auth, &pan, 5_000);
    assert_eq!(
        c.call(&inc).await.code(),
        "00",
        "a partly captured hold is open"
    );
    // A reversal naming the increment takes back its 5,000 only.
    let undo = reversal(&inc);
    let r = c.call(&undo).await;
    assert_eq!((r.mti.as_str(), r.code().as_str()), ("0410", "00"));
    assert_eq!(c.call(&partial(&auth, 1_001)).await.code(), "13");
    // A reversal of the pre-authorization releases the rest; the 11,000
    // captured stand.
    assert_eq!(c.call(&reversal(&auth)).await.code(), "00");
    assert_eq!(c.call(&capture(&auth, 1)).await.code(), "12");
    assert_eq!(c.call(&refund(&auth, 11_001)).await.code(), "13");
    assert_eq!(c.call(&refund(&auth, 11_000)).await.code(), "00");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subelement_22_is_checked() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let auth = preauth(&card(207), 10_000);
    assert_eq!(c.call(&auth).await.code(), "00");
    let bad = capture(&auth, 100).set(48, "22012");
    assert_eq!(c.call(&bad).await.code(), "30");
    // Only a capture can leave a hold open.
    let s = sale(&card(208), 100).set(48, "22011");
    assert_eq!(c.call(&s).await.code(), "12");
    // Beside an ECI, in any order.
    let both = capture(&auth, 100).set(48, "22011420205");
    assert_eq!(c.call(&both).await.code(), "00");
    assert_eq!(c.call(&capture(&auth, 100)).await.code(), "00");
    sw.stop().await;
}

/// An increment restarts the hold, across a restart of the switch: the hold
/// outlives its first period and ends a full period after the increment,
/// keeping the partial captures made (refundable once it ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_hold_survives_a_restart_and_ends_a_period_after_its_increment() {
    const DAY_MS: u64 = 86_400_000;
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let pan = card(210);
    let auth = preauth(&pan, 1_000);
    assert_eq!(c.call(&auth).await.code(), "00");
    assert_eq!(c.call(&partial(&auth, 300)).await.code(), "00");
    sw.clock.advance_ms(3 * DAY_MS);
    let inc = increment(&auth, &pan, 500);
    let raised = c.call(&inc).await;
    assert_eq!(raised.code(), "00");
    sw.stop().await;
    let mut sw = TestSwitch::start_in(sw.dir.clone(), |_| {}).await;
    sw.clock.advance_ms(3 * DAY_MS);
    let mut c = sw.client().await;
    // The increment's answer was journaled with it.
    let again = c.call(&inc.clone().mti("0101")).await;
    assert_eq!(
        (again.code(), again.text(37), again.text(38)),
        (raised.code(), raised.text(37), raised.text(38))
    );
    // Past the first period's end (day 7), before the new one (day 10).
    sw.clock.advance_ms(4 * DAY_MS + 1_000);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        c.call(&partial(&auth, 100)).await.code(),
        "00",
        "still held"
    );
    sw.clock.advance_ms(3 * DAY_MS);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    // Captures of 1 until the sweeper ends the hold (every 100 ms).
    let mut captured = 400;
    loop {
        let code = c.call(&partial(&auth, 1)).await.code();
        if code == "12" {
            break;
        }
        assert_eq!(code, "00", "unexpected code");
        captured += 1;
        assert!(tokio::time::Instant::now() < deadline, "hold did not end");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The captures made stand, refundable; the rest was released.
    assert_eq!(c.call(&refund(&auth, captured + 1)).await.code(), "13");
    assert_eq!(c.call(&refund(&auth, captured)).await.code(), "00");
    sw.stop().await;
}
