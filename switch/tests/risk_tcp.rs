//! The contract's risk defaults with no policy file, and policy reloads
//! under traffic, over real loopback TCP.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sca_requires_authentication_for_unauthenticated_ecommerce_above_30_eur() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let ecom = |amount, eci: &str| {
        preauth(&card(500 + amount), amount)
            .set(25, "59")
            .set(48, format!("4202{eci}"))
    };
    assert_eq!(c.call(&ecom(3_001, "07")).await.code(), "1A");
    assert_eq!(
        c.call(&ecom(3_000, "07")).await.code(),
        "00",
        "30.00 itself is not above the threshold"
    );
    assert_eq!(
        c.call(&ecom(3_002, "05")).await.code(),
        "00",
        "fully authenticated"
    );
    assert_eq!(
        c.call(&ecom(3_003, "02")).await.code(),
        "00",
        "fully authenticated (Mastercard)"
    );
    assert_eq!(
        c.call(&preauth(&card(9), 9_000).set(25, "00")).await.code(),
        "00",
        "card present is outside SCA"
    );
    assert_eq!(
        c.call(&preauth(&card(10), 9_000).set(25, "08"))
            .await
            .code(),
        "00",
        "MO/TO is outside SCA"
    );
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixth_authorization_of_a_card_within_60_s_gets_65() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let pan = card(77);
    for i in 0..5 {
        let r = if i % 2 == 0 {
            preauth(&pan, 100 + i)
        } else {
            sale(&pan, 100 + i)
        };
        assert_eq!(c.call(&r).await.code(), "00", "attempt {}", i + 1);
    }
    sw.clock.advance_ms(59_999);
    assert_eq!(
        c.call(&preauth(&pan, 200)).await.code(),
        "65",
        "sixth within 60 s"
    );
    assert_eq!(
        c.call(&sale(&pan, 201)).await.code(),
        "65",
        "and any after it in the window"
    );
    // Captures, refunds and other cards are not counted.
    assert_eq!(c.call(&preauth(&card(78), 200)).await.code(), "00");
    // Once the first attempts leave the window, the card is approved again.
    sw.clock.advance_ms(60_001);
    assert_eq!(c.call(&preauth(&pan, 202)).await.code(), "00");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reload_under_traffic_and_bad_policy_keeps_the_old_one() {
    let dir = data_dir();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, risk::DEFAULT_POLICY_TOML).expect("write policy");
    let p = policy.clone();
    let mut sw = TestSwitch::start_in(dir.clone(), move |c| c.risk.policy_file = Some(p)).await;
    // Traffic on another connection all along: never an error, never a stall.
    let addr = sw.iso;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let load = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let code = c.call(&preauth(&card(10_000 + n), 100)).await.code();
            assert_eq!(code, "00");
            n += 1;
        }
        n
    });
    let mut c = sw.client().await;
    let blocked = card(4242);
    assert_eq!(c.call(&preauth(&blocked, 100)).await.code(), "00");
    let with_block = risk::DEFAULT_POLICY_TOML.replace(
        "pans = [\"4000000000000002\"]",
        &format!("pans = [\"4000000000000002\", \"{blocked}\"]"),
    );
    assert_ne!(with_block, risk::DEFAULT_POLICY_TOML);
    std::fs::write(&policy, &with_block).expect("write policy");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while c.call(&preauth(&blocked, 100)).await.code() != "59" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "policy not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken policy is refused and the last good one stays.
    std::fs::write(
        &policy,
        "version = 1\n[defaults]\nflag_score_min = \"lots\"\n",
    )
    .expect("write policy");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (_, metrics) = sw.http_get("/metrics").await;
        if metrics.contains("switch_risk_policy_reloads_total{result=\"error\"}") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reload failure not counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        c.call(&preauth(&blocked, 100)).await.code(),
        "59",
        "old policy still in force"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = load.await.expect("load ran without errors");
    assert!(served > 0);
    sw.stop().await;
}
