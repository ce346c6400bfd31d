//! A blocklisted card over real loopback TCP, counted in
//! `switch_flagged_payments_total`. Its own test binary: the metrics
//! recorder is per process, so a test in `risk_tcp.rs` flagging a payment
//! at the same time made the exact count race.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocklisted_card_gets_59_and_is_flagged() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    assert_eq!(
        c.call(&preauth("4000000000000002", 1_000)).await.code(),
        "59"
    );
    assert_eq!(
        c.call(&sale("4000000000000002", 1).set(25, "08"))
            .await
            .code(),
        "59"
    );
    let (_, metrics) = sw.http_get("/metrics").await;
    assert!(
        metrics.contains("switch_flagged_payments_total 2"),
        "{metrics}"
    );
    sw.stop().await;
}
