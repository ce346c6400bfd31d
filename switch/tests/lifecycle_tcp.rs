//! Every lifecycle rule and response code of the contract, over real
//! loopback TCP, with a client built on the project's codec.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_management_echo() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    for code in ["001", "002", "301"] {
        let r = c
            .call(
                &Req::new("0800")
                    .set(7, "1123114959")
                    .set(11, "000001")
                    .set(70, code),
            )
            .await;
        assert_eq!(r.mti, "0810");
        assert_eq!(
            (r.code(), r.text(7), r.text(11), r.text(70)),
            (
                "00".into(),
                "1123114959".into(),
                "000001".into(),
                code.into()
            )
        );
    }
    let r = c
        .call(
            &Req::new("0800")
                .set(7, "1123114959")
                .set(11, "000002")
                .set(70, "999"),
        )
        .await;
    assert_eq!(r.code(), "12");
    sw.stop().await;
}

/// `limits.idle_timeout_s`: a connection quiet for the timeout is closed
/// (counted by reason), one with traffic more often than that stays open
/// well past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_busy_ones_stay_open() {
    let mut sw = TestSwitch::start_with(|c| c.limits.idle_timeout_s = 1).await;
    let echo = |stan: u32| {
        Req::new("0800")
            .set(7, "1123114959")
            .set(11, format!("{stan:06}"))
            .set(70, "301")
    };
    let started = std::time::Instant::now();
    let mut quiet = sw.client().await;
    assert_eq!(quiet.call(&echo(1)).await.code(), "00");
    let mut busy = sw.client().await;
    // 2.5 timeouts of traffic every 0.4 s: never idle for a whole second.
    for stan in 2..=8 {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_eq!(busy.call(&echo(stan)).await.code(), "00", "busy stays open");
    }
    assert!(started.elapsed().as_millis() >= 2_500);
    assert!(quiet.closed().await, "the quiet connection was closed");
    let (_, body) = sw.http_get("/metrics").await;
    assert!(
        body.lines()
            .any(|l| l.starts_with("switch_connections_closed_total")
                && l.contains("reason=\"idle_timeout\"")),
        "closed by idle timeout, counted: {body}"
    );
    assert_eq!(busy.call(&echo(9)).await.code(), "00");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preauth_then_capture_within_over_capture_limit() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let auth = preauth(&card(1), 10_000);
    let r = c.call(&auth).await;
    assert_eq!((r.mti.as_str(), r.code().as_str()), ("0110", "00"));
    assert_eq!(r.text(38).len(), 6);
    assert_eq!(r.text(37).len(), 12);
    for n in [2, 14, 35, 52, 55] {
        assert!(
            !r.fields.contains_key(&n),
            "response carries card field {n}"
        );
    }
    for n in [3, 4, 7, 11, 41, 42, 49] {
        assert_eq!(r.fields.get(&n), auth.fields.get(&n), "F{n} echoed");
    }
    // 20% over-capture: 12,000 allowed, 12,001 not.
    assert_eq!(c.call(&capture(&auth, 12_001)).await.code(), "13");
    let r = c.call(&capture(&auth, 12_000)).await;
    assert_eq!((r.mti.as_str(), r.code().as_str()), ("0230", "00"));
    assert_eq!(
        c.call(&capture(&auth, 100)).await.code(),
        "12",
        "one capture per pre-authorization"
    );
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_by_rrn_and_auth_code() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let auth = preauth(&card(2), 5_000);
    let r = c.call(&auth).await;
    let cap = capture(&auth, 4_000)
        .unset(90)
        .set(37, r.text(37))
        .set(38, r.text(38));
    assert_eq!(c.call(&cap).await.code(), "00");
    let wrong = capture(&auth, 1)
        .unset(90)
        .set(37, r.text(37))
        .set(38, "ZZZZZZ");
    assert_eq!(c.call(&wrong).await.code(), "25");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_two_has_no_over_capture_and_no_refunds() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let auth = preauth(&card(3), 1_000)
        .set(41, "DEMO0101")
        .set(42, "DEMO00000000002");
    assert_eq!(c.call(&auth).await.code(), "00");
    assert_eq!(c.call(&capture(&auth, 1_001)).await.code(), "13");
    assert_eq!(c.call(&capture(&auth, 1_000)).await.code(), "00");
    assert_eq!(c.call(&refund(&auth, 100)).await.code(), "58");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_partial_full_and_beyond() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let s = sale(&card(4), 1_000);
    let r = c.call(&s).await;
    assert_eq!((r.mti.as_str(), r.code().as_str()), ("0210", "00"));
    let r1 = c.call(&refund(&s, 400)).await;
    assert_eq!((r1.code().as_str(), r1.text(3).as_str()), ("00", "200000"));
    assert_eq!(
        c.call(&refund(&s, 601)).await.code(),
        "13",
        "more than is left"
    );
    assert_eq!(c.call(&refund(&s, 600)).await.code(), "00");
    assert_eq!(
        c.call(&refund(&s, 1)).await.code(),
        "13",
        "already refunded in full"
    );
    // Refund of a pre-authorization not yet captured: 12.
    let auth = preauth(&card(5), 1_000);
    c.call(&auth).await;
    assert_eq!(c.call(&refund(&auth, 100)).await.code(), "12");
    // Refund of an unknown original: 25.
    let ghost = sale(&card(6), 1_000);
    assert_eq!(c.call(&refund(&ghost, 100)).await.code(), "25");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversals_cancel_reverse_and_restore() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let auth = preauth(&card(7), 2_000);
    c.call(&auth).await;
    let r = c.call(&reversal(&auth)).await;
    assert_eq!((r.mti.as_str(), r.code().as_str()), ("0410", "00"));
    assert_eq!(
        c.call(&capture(&auth, 100)).await.code(),
        "12",
        "cancelled hold"
    );
    assert_eq!(
        c.call(&reversal(&auth)).await.code(),
        "12",
        "already cancelled"
    );

    let s = sale(&card(8), 3_000);
    c.call(&s).await;
    let r = c.call(&reversal(&s).mti("0420")).await;
    assert_eq!((r.mti.as_str(), r.code().as_str()), ("0430", "00"));
    assert_eq!(c.call(&refund(&s, 100)).await.code(), "12", "reversed sale");

    // Partial reversal through F95, then refund bounded by what is left.
    let s2 = sale(&card(9), 3_000);
    c.call(&s2).await;
    let partial = reversal(&s2).set(95, format!("{:012}{}", 1_000, "0".repeat(30)));
    assert_eq!(c.call(&partial).await.code(), "00");
    assert_eq!(c.call(&refund(&s2, 1_001)).await.code(), "13");
    // Reversal of a refund puts the amount back.
    let rf = refund(&s2, 1_000);
    assert_eq!(c.call(&rf).await.code(), "00");
    assert_eq!(c.call(&refund(&s2, 1)).await.code(), "13");
    assert_eq!(c.call(&reversal(&rf)).await.code(), "00");
    assert_eq!(c.call(&refund(&s2, 1_000)).await.code(), "00");

    let ghost = sale(&card(10), 1_000);
    assert_eq!(c.call(&reversal(&ghost)).await.code(), "25");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_codes() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let ok = || preauth(&card(11), 1_000);
    assert_eq!(c.call(&ok().set(42, "NOSUCHMERCHANT1")).await.code(), "03");
    assert_eq!(c.call(&ok().set(41, "NOSUCH01")).await.code(), "58");
    assert_eq!(
        c.call(&ok().set(41, "DEMO0101")).await.code(),
        "58",
        "terminal of another merchant"
    );
    assert_eq!(c.call(&ok().set(2, "4111111111111112")).await.code(), "14");
    assert_eq!(
        c.call(&ok().set(14, "2610")).await.code(),
        "54",
        "expired October 2026"
    );
    assert_eq!(
        c.call(&ok().set(14, "2611")).await.code(),
        "00",
        "valid through November 2026"
    );
    assert_eq!(c.call(&ok().set(4, "000000000000")).await.code(), "13");
    assert_eq!(
        c.call(&ok().set(49, "392")).await.code(),
        "12",
        "currency not accepted"
    );
    assert_eq!(
        c.call(&ok().set(3, "010000")).await.code(),
        "12",
        "processing code not handled"
    );
    assert_eq!(c.call(&ok().unset(42)).await.code(), "30");
    assert_eq!(
        c.call(&ok().set(7, "1323114959")).await.code(),
        "30",
        "month 13"
    );
    assert_eq!(c.call(&ok().set(14, "2813")).await.code(), "30");
    let r = c.call(&ok().mti("0300")).await;
    assert_eq!((r.mti.as_str(), r.code().as_str()), ("0310", "12"));
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_fields_get_30_with_key_fields_echoed() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let req = preauth(&card(12), 1_000);
    let mut wire = req.encode().to_vec();
    // F4 starts after MTI, bitmap, F2 (2 + 16) and F3 (6).
    let at = 4 + 8 + 18 + 6;
    wire[at] = b'X';
    c.send_raw(&wire).await;
    let r = c.recv().await.expect("answered");
    assert_eq!((r.mti.as_str(), r.code().as_str()), ("0110", "30"));
    assert_eq!(r.fields.get(&11), req.fields.get(&11));
    assert_eq!(r.fields.get(&41), req.fields.get(&41));
    assert!(!r.fields.contains_key(&4), "the bad field is not echoed");
    // The connection still works.
    assert_eq!(c.call(&preauth(&card(13), 1_000)).await.code(), "00");
    let (_, metrics) = sw.http_get("/metrics").await;
    assert!(
        metrics.contains("switch_codec_errors_total{kind=\"bad_content\"}"),
        "{metrics}"
    );
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswerable_frames_close_only_that_connection() {
    let mut sw = TestSwitch::start().await;
    let mut other = sw.client().await;
    // Garbage MTI.
    let mut c = sw.client().await;
    c.send_raw(b"ABCD\x00\x00").await;
    assert!(c.closed().await);
    // A response sent to the switch.
    let mut c = sw.client().await;
    c.send_raw(
        &Req::new("0110")
            .set(11, "000001")
            .set(41, "DEMO0001")
            .encode(),
    )
    .await;
    assert!(c.closed().await);
    // A length header over the limit: closed before the body is sent.
    let mut c = tokio::net::TcpStream::connect(sw.iso)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut c, &[0xff, 0xff])
        .await
        .expect("write");
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(TIMEOUT, tokio::io::AsyncReadExt::read(&mut c, &mut buf))
        .await
        .expect("in time");
    assert!(matches!(n, Ok(0) | Err(_)), "closed");
    // The other connection is unaffected.
    assert_eq!(other.call(&preauth(&card(14), 1_000)).await.code(), "00");
    let (_, metrics) = sw.http_get("/metrics").await;
    assert!(metrics.contains("reason=\"framing_error\""), "{metrics}");
    assert!(metrics.contains("reason=\"not_a_request\""), "{metrics}");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_get_the_same_answer_and_conflicts_get_94() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let auth = preauth(&card(15), 1_000);
    let first = c.call(&auth).await;
    let again = c.call(&auth.clone().mti("0101")).await;
    assert_eq!(again.mti, "0110");
    assert_eq!(
        (again.text(37), again.text(38), again.code()),
        (first.text(37), first.text(38), first.code())
    );
    let same = c.call(&auth).await;
    assert_eq!(
        (same.text(37), same.text(38)),
        (first.text(37), first.text(38)),
        "identical content: same answer"
    );
    let differs = c.call(&auth.clone().set(4, "000000000999")).await;
    assert_eq!(differs.code(), "94");
    // The repeat changed nothing: one capture still allowed, of the original amount.
    let cap = capture(&auth, 1_000);
    let r = c.call(&cap).await;
    assert_eq!(r.code(), "00");
    let r2 = c.call(&cap.clone().mti("0221")).await;
    assert_eq!(
        (r2.code(), r2.text(37)),
        (r.code(), r.text(37)),
        "repeat of the capture"
    );
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expire_after_the_hold_period() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let early = preauth(&card(16), 1_000);
    let late = preauth(&card(17), 1_000);
    c.call(&early).await;
    c.call(&late).await;
    // One second before the end of the hold, capture still works.
    sw.clock.advance_ms(7 * 86_400_000 - 1_000);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(c.call(&capture(&early, 1_000)).await.code(), "00");
    sw.clock.advance_ms(1_000);
    // The sweeper runs every 100 ms of real time.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let code = c.call(&capture(&late, 1_000)).await.code();
        if code == "12" {
            break;
        }
        assert_eq!(code, "00", "unexpected code");
        assert!(
            tokio::time::Instant::now() < deadline,
            "hold did not expire"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_capture_captures_after_its_hours() {
    let mut sw = TestSwitch::start_with(|c| c.merchants[0].auto_capture_h = Some(24)).await;
    let mut c = sw.client().await;
    let auth = preauth(&card(18), 1_000);
    c.call(&auth).await;
    sw.clock.advance_ms(24 * 3_600_000);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    // Once auto-captured, a refund is possible and a capture is not.
    loop {
        if c.call(&refund(&auth, 100)).await.code() == "00" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not auto-captured");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(c.call(&capture(&auth, 1_000)).await.code(), "12");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_all_get_answers_matched_by_stan() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let reqs: Vec<Req> = (0..200).map(|i| sale(&card(1000 + i), 100 + i)).collect();
    for r in &reqs {
        c.send_raw(&r.encode()).await;
    }
    let mut seen = std::collections::HashSet::new();
    for _ in &reqs {
        let r = c.recv().await.expect("answer");
        assert_eq!(r.code(), "00");
        assert!(seen.insert(r.text(11)));
    }
    assert_eq!(seen.len(), reqs.len());
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let mut sw = TestSwitch::start().await;
    assert_eq!(sw.http_get("/healthz").await.0, "HTTP/1.1 200 OK");
    assert_eq!(sw.http_get("/readyz").await.0, "HTTP/1.1 200 OK");
    assert_eq!(sw.http_get("/nope").await.0, "HTTP/1.1 404 Not Found");
    let mut c = sw.client().await;
    c.call(&preauth(&card(19), 1_000)).await;
    let (status, body) = sw.http_get("/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    for needle in [
        "switch_requests_total{mti=\"0100\",code=\"00\"}",
        "switch_request_duration_seconds_bucket",
        "switch_payments{status=\"uncaptured\"}",
        "switch_idempotency_entries",
        "switch_connections_open{listener=\"iso\"}",
    ] {
        assert!(body.contains(needle), "missing {needle} in\n{body}");
    }
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused() {
    let mut sw = TestSwitch::start_with(|c| c.limits.connections_max = 2).await;
    let mut a = sw.client().await;
    let mut b = sw.client().await;
    assert_eq!(a.call(&preauth(&card(40), 100)).await.code(), "00");
    assert_eq!(b.call(&preauth(&card(41), 100)).await.code(), "00");
    let mut c = sw.client().await;
    assert!(c.closed().await, "a third connection is closed at once");
    assert_eq!(
        a.call(&preauth(&card(42), 100)).await.code(),
        "00",
        "the others are unaffected"
    );
    let (_, metrics) = sw.http_get("/metrics").await;
    assert!(
        metrics.contains("switch_limit_reached_total{limit=\"connections_max\"}"),
        "{metrics}"
    );
    drop(a);
    // Once a connection ends, a new one is served.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let mut d = sw.client().await;
        d.send_raw(&preauth(&card(43), 100).encode()).await;
        if let Some(r) = d.recv_or_close().await {
            assert_eq!(r.code(), "00");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot not released");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(b);
    sw.stop().await;
}
