//! Webhooks against real receivers on loopback (`docs/webhooks.md`): an
//! axum server in this process that checks every signature, and a Python
//! receiver with its standard library alone (`tests/pyiso/webhook_receiver.py`)
//! beside a switch process killed with -9 between a change and its
//! delivery. Endpoints are set with the `switch webhooks` command, as an
//! operator would; delivery status is read from the queue's SQLite file.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

const M1: &str = "DEMO00000000001";
const M2: &str = "DEMO00000000002";
/// The attempt timeout the tests configure (`webhooks.timeout_ms`).
const TIMEOUT_MS: u64 = 300;

/// What the receiver answers next.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// Longer than the switch's timeout.
    Hang,
    /// 307 to this same endpoint (a client that follows it posts again).
    Redirect,
}

/// A received POST.
#[derive(Clone, Debug)]
struct Got {
    signature: String,
    content_type: String,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// An axum receiver: answers from its plan (then 200), records every POST.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    plan: Arc<Mutex<VecDeque<Answer>>>,
    /// Requests being answered now, and the most at once.
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    /// Answer when the plan is empty.
    otherwise: Arc<Mutex<Option<Answer>>>,
}

async fn hook(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let n = r.now.fetch_add(1, Ordering::SeqCst) + 1;
    r.most.fetch_max(n, Ordering::SeqCst);
    r.got.lock().unwrap().push(Got {
        signature: header("switch-signature"),
        content_type: header("content-type"),
        body: body.to_vec(),
    });
    let answer = r
        .plan
        .lock()
        .unwrap()
        .pop_front()
        .or(*r.otherwise.lock().unwrap())
        .unwrap_or(Answer::Status(200));
    let mut out = HeaderMap::new();
    let code = match answer {
        Answer::Status(s) => StatusCode::from_u16(s).unwrap(),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK
        }
        Answer::Redirect => {
            out.insert("location", "/hook".parse().unwrap());
            StatusCode::TEMPORARY_REDIRECT
        }
    };
    r.now.fetch_sub(1, Ordering::SeqCst);
    (code, out)
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let r = Receiver::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, addr)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Got> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} events received",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `switch webhooks …` on `dir`; its stdout.
fn webhooks(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .arg("webhooks")
        .arg(args[0])
        .arg("--data-dir")
        .arg(dir)
        .args(&args[1..])
        .output()
        .expect("switch runs");
    assert!(
        out.status.success(),
        "switch webhooks {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Sets `mid`'s endpoint; returns the secret (the last line, alone).
fn set_endpoint(dir: &Path, mid: &str, url: &str) -> String {
    let out = webhooks(dir, &["set", "--merchant", mid, "--url", url]);
    let secret = out.lines().last().expect("a line").to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() >= 6 + 43,
        "{out}"
    );
    secret
}

/// Checks the contract's signature of `got` with `secret`; returns `t`.
fn verify(got: &Got, secret: &str) -> u64 {
    let (t, v1) = got
        .signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .unwrap_or_else(|| panic!("Switch-Signature `{}`", got.signature));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    let want = hex::encode(mac.finalize().into_bytes());
    assert_eq!(
        v1,
        want,
        "signature of {}",
        String::from_utf8_lossy(&got.body)
    );
    t.parse().expect("t in seconds")
}

/// One event's row in the queue: (status, attempts, last code, next attempt ms).
fn row(dir: &Path, id: &str) -> (String, u32, Option<u16>, u64) {
    let c = rusqlite::Connection::open(dir.join("webhooks.sqlite")).unwrap();
    c.query_row(
        "SELECT status, attempts, last_status_code, next_attempt_at_ms FROM events WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64)),
    )
    .unwrap_or_else(|e| panic!("event {id}: {e}"))
}

/// Polls the queue until event `id` holds `cond`.
async fn wait_row(
    dir: &Path,
    id: &str,
    cond: impl Fn(&(String, u32, Option<u16>, u64)) -> bool,
) -> (String, u32, Option<u16>, u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = row(dir, id);
        if cond(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "event {id} is {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every event id in the queue, in journal order.
fn queued_ids(dir: &Path, merchant: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(dir.join("webhooks.sqlite")).expect("the queue opens");
    let mut st = c
        .prepare("SELECT id FROM events WHERE merchant = ?1 ORDER BY seq")
        .expect("the queue reads");
    st.query_map([merchant], |r| r.get(0))
        .and_then(Iterator::collect)
        .expect("the queue reads")
}

async fn wait_queued(dir: &Path, merchant: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let ids = queued_ids(dir, merchant);
        if ids.len() >= n {
            return ids;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} events queued",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn short_timeout(c: &mut switch::Config) {
    c.webhooks.timeout_ms = TIMEOUT_MS;
}

#[tokio::test]
async fn events_are_signed_in_order_per_payment_and_masked() {
    let (rx, addr) = Receiver::start().await;
    let dir = data_dir();
    let secret = set_endpoint(&dir, M1, &format!("http://{addr}/hook"));
    let mut sw = TestSwitch::start_in(dir.clone(), short_timeout).await;
    let mut c = sw.client().await;
    let pan = card(7);
    let auth = preauth(&pan, 1_000);
    assert_eq!(c.call(&auth).await.code(), "00");
    assert_eq!(c.call(&capture(&auth, 900)).await.code(), "00");
    assert_eq!(c.call(&refund(&auth, 300)).await.code(), "00");
    let other = card(8);
    assert_eq!(c.call(&sale(&other, 500)).await.code(), "00");
    // Blocklisted: declined (59) and flagged by the risk rules at once,
    // told as the decline with scam true.
    let blocked = "4000000000000002";
    assert_eq!(c.call(&sale(blocked, 600)).await.code(), "59");
    let got = rx.wait_for(5).await;
    assert_eq!(got.len(), 5, "one event per change");
    // The dispatcher and the deliveries run at nice 10 (authorizations
    // first when the machine is busy); the threads of this test binary's
    // other switches are named the same and lowered the same.
    let nice: Vec<(String, i64)> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // Field 19 (nice), counted after the ")" ending the name.
            let nice = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(16)?
                .parse()
                .ok()?;
            comm.starts_with("webhook-")
                .then(|| (comm.trim().to_owned(), nice))
        })
        .collect();
    assert!(
        nice.iter().any(|(n, _)| n == "webhook-dispatc")
            && nice.iter().any(|(n, _)| n == "webhook-deliver"),
        "{nice:?}"
    );
    assert!(nice.iter().all(|&(_, n)| n == 10), "{nice:?}");

    let mut ids = std::collections::HashSet::new();
    let mut of_preauth = Vec::new();
    for g in &got {
        let t = verify(g, &secret);
        assert_eq!(t, sw.clock.now_s(), "t is the switch's clock");
        assert_eq!(g.content_type, "application/json");
        let body = String::from_utf8_lossy(&g.body);
        assert!(
            !body.contains(&pan) && !body.contains(&other) && !body.contains(blocked),
            "{body}"
        );
        let v = g.json();
        let id = v["id"].as_str().expect("id").to_owned();
        assert!(id.starts_with("evt_"), "{id}");
        assert!(ids.insert(id), "ids are unique");
        assert_eq!(v["merchant_id"], M1);
        let card = v["payment"]["card"].as_str().expect("card");
        assert!(
            (card.starts_with("411111") || card.starts_with("400000")) && card.contains("******"),
            "{card}"
        );
        if card.ends_with(&pan[pan.len() - 4..]) {
            of_preauth.push(v);
        } else if card.ends_with("0002") {
            assert_eq!(v["type"], "payment.declined");
            assert_eq!(v["payment"]["response_code"], "59");
            assert_eq!(v["payment"]["scam"], true);
            assert_eq!(v["payment"]["status"], "declined");
        } else {
            assert_eq!(v["type"], "payment.succeeded");
            assert_eq!(v["payment"]["amount_minor"], 500);
        }
    }
    let types: Vec<&str> = of_preauth
        .iter()
        .map(|v| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["payment.authorized", "payment.captured", "payment.refunded"],
        "a payment's events arrive in the order of its changes"
    );
    assert_eq!(of_preauth[2]["payment"]["refunded_minor"], 300);
    assert_eq!(of_preauth[2]["payment"]["status"], "partially_refunded");
    assert_eq!(of_preauth[1]["payment"]["captured_minor"], 900);
    assert_eq!(of_preauth[0]["payment"]["terminal_id"], "DEMO0001");
    assert_eq!(of_preauth[0]["payment"]["response_code"], "00");
    for id in &ids {
        wait_row(&dir, id, |r| r.0 == "delivered").await;
    }

    // A merchant the switch does not serve, or a URL that is not http(s),
    // is refused with the reason.
    for (mid, url, why) in [
        (
            "NOSUCHMERCHANT1",
            "http://127.0.0.1:1/",
            "not a merchant of this switch",
        ),
        (M1, "ftp://127.0.0.1/", "http or https"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
            .args([
                "webhooks",
                "set",
                "--merchant",
                mid,
                "--url",
                url,
                "--data-dir",
            ])
            .arg(&dir)
            .output()
            .expect("switch runs");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{err}");
        assert!(out.stdout.is_empty(), "no secret printed");
    }

    // The list shows the endpoint with its secret masked, and the events.
    let list = webhooks(&dir, &["list"]);
    assert!(list.contains(M1) && !list.contains(&secret[6..]), "{list}");
    let events = webhooks(&dir, &["list", "--events"]);
    assert_eq!(events.matches("delivered").count(), 5, "{events}");
    let payment = of_preauth[0]["payment"]["id"].as_str().unwrap().to_owned();
    let of_payment = webhooks(&dir, &["list", "--events", "--payment", &payment]);
    let types: Vec<&str> = of_payment
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        types,
        ["payment.authorized", "payment.captured", "payment.refunded"],
        "{of_payment}"
    );

    // A second merchant's endpoint set on the running switch is used
    // within a second, with its own secret.
    let (rx2, addr2) = Receiver::start().await;
    let secret2 = set_endpoint(&dir, M2, &format!("http://{addr2}/hook"));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let m2 = sale(&card(9), 700).set(41, "DEMO0101").set(42, M2);
    assert_eq!(c.call(&m2).await.code(), "00");
    let got2 = rx2.wait_for(1).await;
    verify(&got2[0], &secret2);
    assert_eq!(got2[0].json()["merchant_id"], M2);
    assert_eq!(
        rx.got().len(),
        5,
        "nothing of merchant 2 goes to merchant 1"
    );
    // Removed: nothing more is queued for merchant 2.
    webhooks(&dir, &["remove", "--merchant", M2]);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        c.call(&sale(&card(10), 701).set(41, "DEMO0101").set(42, M2))
            .await
            .code(),
        "00"
    );
    assert_eq!(c.call(&sale(&card(11), 702)).await.code(), "00");
    rx.wait_for(6).await;
    assert_eq!(queued_ids(&dir, M2).len(), 1);
    sw.stop().await;
}

#[tokio::test]
async fn retries_back_off_on_the_switchs_clock_then_fail_and_resend() {
    let (rx, addr) = Receiver::start().await;
    rx.plan
        .lock()
        .unwrap()
        .extend([Answer::Status(500), Answer::Hang, Answer::Redirect]);
    let dir = data_dir();
    let secret = set_endpoint(&dir, M1, &format!("http://{addr}/hook"));
    let mut sw = TestSwitch::start_in(dir.clone(), short_timeout).await;
    let mut c = sw.client().await;
    assert_eq!(c.call(&sale(&card(21), 100)).await.code(), "00");
    let id = wait_queued(&dir, M1, 1).await.remove(0);

    // First attempt: 500; the next one 0.8 to 1 s later on the switch's clock.
    let t0 = sw.clock.now_ms();
    let (_, attempts, code, next) = wait_row(&dir, &id, |r| r.1 == 1).await;
    assert_eq!((attempts, code), (1, Some(500)));
    assert!(
        (t0 + 800..=t0 + 1_000).contains(&next),
        "next at +{}",
        next - t0
    );
    // The clock does not move: no second attempt, however long we wait.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.got().len(), 1, "no attempt before its time");
    // A second later: the receiver hangs past the timeout; then 2 s.
    sw.clock.advance_ms(1_000);
    let t1 = sw.clock.now_ms();
    let (_, _, code, next) = wait_row(&dir, &id, |r| r.1 == 2).await;
    assert_eq!(code, None, "no answer within the timeout");
    assert!(
        (t1 + 1_600..=t1 + 2_000).contains(&next),
        "next at +{}",
        next - t1
    );
    sw.clock.advance_ms(2_000);
    // A redirect is not followed: a failed attempt, 4 s later again.
    let t2 = sw.clock.now_ms();
    let (_, _, code, next) = wait_row(&dir, &id, |r| r.1 == 3).await;
    assert_eq!(code, Some(307));
    assert!(
        (t2 + 3_200..=t2 + 4_000).contains(&next),
        "next at +{}",
        next - t2
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.got().len(), 3, "the redirect is not followed");
    sw.clock.advance_ms(4_000);
    let (status, attempts, code, _) = wait_row(&dir, &id, |r| r.0 != "pending").await;
    assert_eq!(
        (status.as_str(), attempts, code),
        ("delivered", 4, Some(200))
    );
    let got = rx.got();
    assert_eq!(got.len(), 4);
    let first = got[0].json()["id"].clone();
    for g in &got {
        verify(g, &secret);
        assert_eq!(g.json()["id"], first, "the same id on every attempt");
    }

    // An endpoint that keeps failing: failed once 3 days have passed.
    *rx.otherwise.lock().unwrap() = Some(Answer::Status(503));
    assert_eq!(c.call(&sale(&card(22), 100)).await.code(), "00");
    let failing = wait_queued(&dir, M1, 2).await.remove(1);
    wait_row(&dir, &failing, |r| r.1 == 1).await;
    sw.clock.advance_ms(3 * 86_400_000);
    let (status, attempts, code, _) = wait_row(&dir, &failing, |r| r.0 != "pending").await;
    assert_eq!((status.as_str(), attempts, code), ("failed", 2, Some(503)));
    let events = webhooks(&dir, &["list", "--events"]);
    assert!(
        events
            .lines()
            .any(|l| l.contains(&failing) && l.contains("failed")),
        "{events}"
    );
    // The recorder is global to this test binary, and the back office's
    // test fails an event too: at least this one is counted.
    let (_, metrics) = sw.http_get("/metrics").await;
    let failed = metric_sum(
        &metrics,
        "switch_webhook_deliveries_total{result=\"failed\"}",
    );
    assert!(failed.is_some_and(|n| n >= 1.0), "{metrics}");

    // Resent by the operator once the receiver is back: delivered, same id.
    *rx.otherwise.lock().unwrap() = None;
    let before = rx.got().len();
    webhooks(&dir, &["resend", "--event", &failing]);
    let (status, attempts, _, _) = wait_row(&dir, &failing, |r| r.0 == "delivered").await;
    assert_eq!((status.as_str(), attempts), ("delivered", 1));
    let got = rx.got();
    assert_eq!(got.len(), before + 1);
    assert_eq!(got[before].json()["id"], failing.as_str());

    // Change-to-delivery latency: the first event's retries took 7 s on
    // the switch's clock (only this test moves it), and the resent one
    // counts from its resend, not from its change 3 days before.
    let (_, metrics) = sw.http_get("/metrics").await;
    let m = |name: &str| metric_sum(&metrics, name).unwrap_or(0.0);
    let count = m("switch_webhook_delivery_seconds_count");
    let within_5s = m("switch_webhook_delivery_seconds_bucket{le=\"5\"}");
    let within_1d = m("switch_webhook_delivery_seconds_bucket{le=\"86400\"}");
    assert!(count >= 2.0, "{metrics}");
    assert!(
        count - within_5s >= 1.0,
        "the retried delivery took over 5 s: {metrics}"
    );
    assert_eq!(
        within_1d, count,
        "no delivery measured from before its resend: {metrics}"
    );
    sw.stop().await;
}

/// A receiver that takes connections and never answers; counts them.
#[derive(Clone, Default)]
struct Dead {
    accepted: Arc<AtomicUsize>,
    /// When each connection came.
    at: Arc<Mutex<Vec<Instant>>>,
}

impl Dead {
    /// The most connections that came within `window` of each other.
    fn most_within(&self, window: Duration) -> usize {
        let at = self.at.lock().unwrap();
        at.iter()
            .map(|&t| at.iter().filter(|&&u| u >= t && u < t + window).count())
            .max()
            .unwrap_or(0)
    }
}

impl Dead {
    async fn start() -> (Dead, SocketAddr) {
        use tokio::io::AsyncReadExt as _;
        let d = Dead::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dead = d.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                dead.accepted.fetch_add(1, Ordering::SeqCst);
                dead.at.lock().unwrap().push(Instant::now());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        (d, addr)
    }
}

#[tokio::test]
async fn a_dead_receiver_holds_only_its_own_merchant() {
    let (dead, dead_addr) = Dead::start().await;
    let (live, live_addr) = Receiver::start().await;
    let dir = data_dir();
    set_endpoint(&dir, M1, &format!("http://{dead_addr}/hook"));
    let secret = set_endpoint(&dir, M2, &format!("http://{live_addr}/hook"));
    let mut sw = TestSwitch::start_in(dir.clone(), |c| {
        short_timeout(c);
        c.metrics.merchant_labels = true;
    })
    .await;
    let mut c = sw.client().await;
    const DEAD_EVENTS: usize = 200;
    for i in 0..DEAD_EVENTS as u64 {
        assert_eq!(c.call(&sale(&card(100 + i), 100 + i)).await.code(), "00");
    }
    for i in 0..5 {
        let m2 = sale(&card(1_000 + i), 10 + i)
            .set(41, "DEMO0101")
            .set(42, M2);
        assert_eq!(c.call(&m2).await.code(), "00");
    }
    let started = Instant::now();
    let got = live.wait_for(5).await;
    for g in &got {
        verify(g, &secret);
    }
    assert!(
        started.elapsed() < Duration::from_millis(TIMEOUT_MS * 3),
        "merchant 2 waited {:?} behind merchant 1's dead endpoint",
        started.elapsed()
    );
    wait_queued(&dir, M1, DEAD_EVENTS).await;
    // Keep the dead endpoint failing for a few rounds of the clock.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(TIMEOUT_MS + 300)).await;
        sw.clock.advance_ms(3_600_000);
    }
    assert!(
        dead.accepted.load(Ordering::SeqCst) >= 8,
        "the dead endpoint was tried"
    );
    // At most 8 requests at once to it: a new one starts only when one
    // ends (here at the timeout), so no more than 8 connections come
    // within half a timeout.
    let most = dead.most_within(Duration::from_millis(TIMEOUT_MS / 2));
    assert!(
        (1..=8).contains(&most),
        "{most} requests at once to one endpoint (INFLIGHT_PER_MERCHANT_MAX is 8)"
    );
    // The gauges (process-wide: other tests' switches in this binary set
    // them too, so they are polled until this switch's values show).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, metrics) = sw.http_get("/metrics").await;
        let depth = metric_sum(&metrics, "switch_webhook_queue_depth").unwrap_or(0.0);
        let oldest = metric_sum(&metrics, "switch_webhook_oldest_pending_seconds").unwrap_or(0.0);
        // Per merchant too ([metrics] merchant_labels): merchant 2's is empty.
        let of = |mid: &str| {
            let name = format!("switch_merchant_webhook_queue_depth{{merchant=\"{mid}\"}}");
            metric_sum(&metrics, &name)
        };
        if depth >= (DEAD_EVENTS - 8 * 4) as f64
            && oldest >= 3_600.0
            && of(M1).is_some_and(|d| d >= (DEAD_EVENTS - 8 * 4) as f64)
            && of(M2) == Some(0.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue depth {depth}, oldest pending {oldest} s on the switch's clock, per merchant {:?} {:?}",
            of(M1),
            of(M2)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Merchant 2 still gets its events at once.
    let m2 = sale(&card(2_000), 99).set(41, "DEMO0101").set(42, M2);
    assert_eq!(c.call(&m2).await.code(), "00");
    live.wait_for(6).await;
    let delivered = format!(
        "switch_merchant_webhook_deliveries_total{{merchant=\"{M2}\",result=\"delivered\"}}"
    );
    let deadline = Instant::now() + TIMEOUT;
    while metric_sum(&sw.http_get("/metrics").await.1, &delivered) != Some(6.0) {
        assert!(Instant::now() < deadline, "{delivered} is not 6");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sw.stop().await;
}

#[tokio::test]
async fn addresses_outside_allow_networks_are_refused() {
    let (rx, addr) = Receiver::start().await;
    let dir = data_dir();
    set_endpoint(&dir, M1, &format!("http://{addr}/hook"));
    let by_name = format!("http://localhost:{}/hook", addr.port());
    set_endpoint(&dir, M2, &by_name);
    let mut sw = TestSwitch::start_in(dir.clone(), |c| {
        short_timeout(c);
        c.webhooks.allow_networks = vec!["10.0.0.0/8".into()];
    })
    .await;
    let mut c = sw.client().await;
    assert_eq!(c.call(&sale(&card(41), 100)).await.code(), "00");
    let m2 = sale(&card(42), 100).set(41, "DEMO0101").set(42, M2);
    assert_eq!(c.call(&m2).await.code(), "00");
    for mid in [M1, M2] {
        let id = wait_queued(&dir, mid, 1).await.remove(0);
        let (status, ..) = wait_row(&dir, &id, |r| r.1 >= 1).await;
        assert_eq!(status, "pending");
        let c = rusqlite::Connection::open(dir.join("webhooks.sqlite")).unwrap();
        let error: String = c
            .query_row("SELECT last_error FROM events WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .unwrap();
        assert!(error.contains("allow_networks"), "{mid}: {error}");
    }
    assert!(rx.got().is_empty(), "nothing reached a refused address");
    sw.stop().await;
}

/// The Python receiver: its port and the path it writes a line per event to.
struct PyReceiver {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl PyReceiver {
    fn start(port: u16, secret: &str, out: &Path) -> PyReceiver {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/pyiso/webhook_receiver.py"
        );
        let child = std::process::Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(out)
            .env("WEBHOOK_SECRET", secret)
            .spawn()
            .expect("python3 runs");
        PyReceiver {
            child,
            out: out.to_path_buf(),
        }
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_event_survives_kill_9_before_delivery_with_its_id() {
    let dir = data_dir();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // The receiver is down: nothing listens on its port yet.
    let port = free_port();
    let secret = set_endpoint(&dir, M1, &format!("http://127.0.0.1:{port}/hook"));
    let launch = Launch {
        dir: &dir,
        config: None,
        logs: &logs,
        log_level: "info",
    };
    let (mut p, mut c) = launch.start("before").await;
    let pan = card(31);
    let auth = preauth(&pan, 2_000);
    assert_eq!(c.call(&auth).await.code(), "00");
    assert_eq!(c.call(&capture(&auth, 2_000)).await.code(), "00");
    let ids = wait_queued(&dir, M1, 2).await;
    wait_row(&dir, &ids[0], |r| r.1 >= 1).await;
    p.kill9();

    let out = dir.join("received.jsonl");
    let rx = PyReceiver::start(port, &secret, &out);
    let (mut p, _c) = launch.start("after").await;
    let deadline = Instant::now() + TIMEOUT;
    let lines = loop {
        let lines = rx.lines();
        if lines.len() >= 2 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 2 events at the Python receiver; see {}",
            lines.len(),
            p.log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let got: Vec<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids, "the same events, once each, in order");
    for l in &lines {
        assert_eq!(l["verified"], true, "{l}");
        assert_eq!(
            l["fresh"], true,
            "t within 5 minutes of the receiver's clock: {l}"
        );
        assert!(!l["body"].as_str().unwrap().contains(&pan));
    }
    assert_eq!(lines[0]["type"], "payment.authorized");
    assert_eq!(lines[1]["type"], "payment.captured");
    for id in &ids {
        wait_row(&dir, id, |r| r.0 == "delivered").await;
    }
    p.stop().await;
}

#[tokio::test]
async fn https_endpoints_speak_tls() {
    // A plain-HTTP receiver behind an https URL: the switch's TLS client
    // (rustls, aws-lc-rs) starts a handshake, which fails; a failed
    // attempt with its reason, and nothing reaches the receiver's handler.
    let (rx, addr) = Receiver::start().await;
    let dir = data_dir();
    set_endpoint(&dir, M1, &format!("https://{addr}/hook"));
    let mut sw = TestSwitch::start_in(dir.clone(), short_timeout).await;
    let mut c = sw.client().await;
    assert_eq!(c.call(&sale(&card(51), 100)).await.code(), "00");
    let id = wait_queued(&dir, M1, 1).await.remove(0);
    let (status, _, code, _) = wait_row(&dir, &id, |r| r.1 >= 1).await;
    assert_eq!((status.as_str(), code), ("pending", None));
    let conn = rusqlite::Connection::open(dir.join("webhooks.sqlite")).unwrap();
    let error: String = conn
        .query_row("SELECT last_error FROM events WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(!error.is_empty() && !error.contains("/hook"), "{error}");
    assert!(rx.got().is_empty());
    sw.stop().await;
}

#[tokio::test]
async fn every_acknowledged_sale_is_told_once_per_id_across_kill_9() {
    let (rx, addr) = Receiver::start().await;
    let dir = data_dir();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let secret = set_endpoint(&dir, M1, &format!("http://{addr}/hook"));
    let launch = Launch {
        dir: &dir,
        config: None,
        logs: &logs,
        log_level: "info",
    };
    let mut rng = Rng(crash_seed());
    let (mut p, _c) = launch.start("load").await;
    let sales: Vec<Req> = (0..400).map(|i| sale(&card(rng.next()), 100 + i)).collect();
    // Killed while sales are answered and events queued and delivered.
    let window = Duration::from_millis(rng.range(20, 300));
    let answered = pipeline_for(p.iso, &sales, window).await;
    p.kill9();
    let acknowledged: Vec<(String, String)> = answered
        .iter()
        .filter(|(_, r)| r.code() == "00")
        .map(|(_, r)| (r.text(37), r.text(38)))
        .collect();
    let (mut p, _c) = launch.start("after").await;
    let deadline = Instant::now() + TIMEOUT * 2;
    loop {
        let got: std::collections::HashSet<(String, String)> = rx
            .got()
            .iter()
            .map(|g| {
                let v = g.json();
                let pay = &v["payment"];
                (
                    pay["rrn"].as_str().unwrap().to_owned(),
                    pay["auth_code"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let missing = acknowledged.iter().filter(|a| !got.contains(a)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged sales never told (window {window:?}); see {}",
            acknowledged.len(),
            p.log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A repeat after the crash (delivered, not yet recorded) has the same id.
    let mut id_of: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for g in rx.got() {
        verify(&g, &secret);
        let v = g.json();
        let rrn = v["payment"]["rrn"].as_str().unwrap().to_owned();
        let id = v["id"].as_str().unwrap().to_owned();
        let first = id_of.entry(rrn.clone()).or_insert_with(|| id.clone());
        assert_eq!(*first, id, "one change, one id: payment {rrn}");
    }
    eprintln!(
        "{} sales acknowledged before kill -9 after {window:?}; {} posts for {} events",
        acknowledged.len(),
        rx.got().len(),
        id_of.len()
    );
    p.stop().await;
}

/// A back office over internal frames: its merchant's events with their
/// delivery status (listed, paged, by payment and status, in payment
/// details and as a list filter), a resend, and its endpoint read, set
/// (the new secret signs what follows), removed; scoped to the key's
/// merchants and mandates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_office_reads_resends_and_sets_webhooks_over_frames() {
    use switch_client::{ListQuery, WebhookStatus};
    let (rx, addr) = Receiver::start().await;
    let url = format!("http://{addr}/hook");
    let dir = data_dir();
    let secret = set_endpoint(&dir, M1, &url);
    let mut sw = TestSwitch::start_in(dir.clone(), short_timeout).await;
    let admin = switch::KeyAdmin::new(&sw.dir);
    let connect = |owner: switch::Owner| {
        let k = admin.create_key(owner, "webhooks").expect("key");
        let frame = sw.frame;
        async move {
            tokio::time::timeout(
                TIMEOUT,
                switch_client::Client::connect(frame, &k.client_id, &k.secret),
            )
            .await
            .expect("in time")
            .expect("log-in accepted")
        }
    };
    let m1 = connect(switch::Owner::Merchant(M1.into())).await;
    let m2 = connect(switch::Owner::Merchant(M2.into())).await;

    // The endpoint, its secret masked.
    let r = m1.get_webhook_endpoint(None).await.expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    let e = r.webhook_endpoint.expect("an endpoint");
    assert_eq!(e.url, url);
    assert!(
        e.secret_masked.ends_with(&secret[secret.len() - 4..]),
        "{e:?}"
    );
    assert!(!e.secret_masked.contains(&secret[6..20]), "{e:?}");
    assert!(r.webhook_secret.is_none(), "the secret is not shown again");
    let r = m2.get_webhook_endpoint(None).await.expect("answered");
    assert_eq!((r.code(), r.webhook_endpoint.as_ref()), ("00", None));
    let r = m2.get_webhook_endpoint(Some(M1)).await.expect("answered");
    assert_eq!(r.code(), "58", "another merchant's endpoint: {r:?}");

    // A pre-authorization and its capture: two events, delivered.
    let mut c = sw.client().await;
    let auth = preauth(&card(31), 1_000);
    assert_eq!(c.call(&auth).await.code(), "00");
    assert_eq!(c.call(&capture(&auth, 1_000)).await.code(), "00");
    let ids = wait_queued(&dir, M1, 2).await;
    for id in &ids {
        wait_row(&dir, id, |r| r.0 == "delivered").await;
    }
    // Newest first, one a page.
    let page = m1
        .list_webhook_events(None, None, None, None, Some(1))
        .await
        .expect("answered");
    assert_eq!(page.code(), "00", "{page:?}");
    assert_eq!(page.webhook_events.len(), 1);
    let captured = &page.webhook_events[0];
    assert_eq!(
        (captured.id.as_str(), captured.kind.as_str()),
        (ids[1].as_str(), "payment.captured")
    );
    assert_eq!(captured.status, WebhookStatus::Delivered);
    assert_eq!(
        (captured.attempts, captured.last_status_code),
        (1, Some(200))
    );
    let at = captured.last_attempt_unix_s.expect("tried");
    assert!(at.abs_diff(sw.clock.now_s()) <= 1, "{at}");
    let next = m1
        .list_webhook_events(None, None, None, page.next_cursor, Some(1))
        .await
        .expect("answered");
    assert_eq!(next.webhook_events[0].id, ids[0]);
    assert_eq!(next.webhook_events[0].kind, "payment.authorized");
    assert_eq!(next.next_cursor, None, "the last page");
    let payment = captured.payment_id;
    // Payment details carry its events, in the order of its changes.
    let details = m1.get_payment(payment).await.expect("answered");
    assert_eq!(details.code(), "00", "{details:?}");
    let kinds: Vec<(&str, WebhookStatus)> = details
        .webhook_events
        .iter()
        .map(|e| (e.kind.as_str(), e.status))
        .collect();
    assert_eq!(
        kinds,
        [
            ("payment.authorized", WebhookStatus::Delivered),
            ("payment.captured", WebhookStatus::Delivered)
        ]
    );
    // Another merchant's key sees none of them.
    let r = m2
        .list_webhook_events(None, None, None, None, None)
        .await
        .expect("answered");
    assert_eq!((r.code(), r.webhook_events.len()), ("00", 0));
    assert_eq!(
        m2.resend_webhook_event(&ids[0])
            .await
            .expect("answered")
            .code(),
        "25"
    );

    // An endpoint failing for 3 days: the event is failed, and found by
    // the status filters of both lists.
    *rx.otherwise.lock().unwrap() = Some(Answer::Status(503));
    assert_eq!(c.call(&sale(&card(32), 700)).await.code(), "00");
    let failing = wait_queued(&dir, M1, 3).await.remove(2);
    wait_row(&dir, &failing, |r| r.1 == 1).await;
    sw.clock.advance_ms(3 * 86_400_000);
    wait_row(&dir, &failing, |r| r.0 == "failed").await;
    let r = m1
        .list_webhook_events(None, None, Some(WebhookStatus::Failed), None, None)
        .await
        .expect("answered");
    assert_eq!(r.webhook_events.len(), 1, "{r:?}");
    assert_eq!(r.webhook_events[0].id, failing);
    assert_eq!(r.webhook_events[0].last_status_code, Some(503));
    let failed_payment = r.webhook_events[0].payment_id;
    let by_payment = m1
        .list_webhook_events(None, Some(payment), None, None, None)
        .await
        .expect("answered");
    assert_eq!(by_payment.webhook_events.len(), 2);
    let list = |status| ListQuery {
        webhook_status: Some(status),
        ..ListQuery::default()
    };
    let failed = m1
        .list_payments(&list(WebhookStatus::Failed))
        .await
        .expect("answered");
    let rows: Vec<u64> = failed.rows.iter().map(|r| r.payment_id).collect();
    assert_eq!(rows, [failed_payment], "{failed:?}");
    let delivered = m1
        .list_payments(&list(WebhookStatus::Delivered))
        .await
        .expect("answered");
    let rows: Vec<u64> = delivered.rows.iter().map(|r| r.payment_id).collect();
    assert_eq!(rows, [payment], "{delivered:?}");
    assert!(m2
        .list_payments(&list(WebhookStatus::Failed))
        .await
        .expect("answered")
        .rows
        .is_empty());

    // Scopes: a provider reporting for merchant 1 reads and resends nothing.
    let k = admin
        .create_key(switch::Owner::Provider("SP-0000-0077".into()), "provider")
        .expect("key");
    admin
        .grant_mandate(M1, "SP-0000-0077", &[switch::Scope::Reporting], &|_| true)
        .expect("mandate");
    let p = switch_client::Client::connect(sw.frame, &k.client_id, &k.secret)
        .await
        .expect("log-in accepted");
    let r = p
        .list_webhook_events(None, None, None, None, None)
        .await
        .expect("answered");
    assert_eq!((r.code(), r.webhook_events.len()), ("00", 3), "{r:?}");
    let r = p.resend_webhook_event(&failing).await.expect("answered");
    assert_ne!(r.code(), "00", "reporting only: {r:?}");
    let r = p
        .set_webhook_endpoint(Some(M1), "http://127.0.0.1:1/")
        .await;
    assert_ne!(r.expect("answered").code(), "00");
    assert_eq!(row(&dir, &failing).0, "failed", "not resent");

    // Resent by the merchant once its receiver is back: delivered.
    *rx.otherwise.lock().unwrap() = None;
    let r = m1.resend_webhook_event(&failing).await.expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    assert_eq!(r.webhook_events[0].status, WebhookStatus::Pending);
    assert_eq!(r.webhook_events[0].attempts, 0);
    wait_row(&dir, &failing, |r| r.0 == "delivered").await;
    let details = m1.get_payment(failed_payment).await.expect("answered");
    assert_eq!(details.webhook_events[0].status, WebhookStatus::Delivered);
    assert_eq!(details.webhook_events[0].last_status_code, Some(200));

    // Merchant 2 sets its endpoint over frames: the secret comes once and
    // signs its events; a URL that is not http(s) is refused.
    let r = m2
        .set_webhook_endpoint(None, "ftp://127.0.0.1/")
        .await
        .expect("answered");
    assert_eq!(r.code(), "30", "{r:?}");
    assert!(r.webhook_secret.is_none());
    let r = m2.set_webhook_endpoint(None, &url).await.expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    let new = r
        .webhook_secret
        .as_ref()
        .expect("the new secret")
        .expose()
        .to_owned();
    assert!(new.starts_with("whsec_") && new.len() >= 49, "{new}");
    assert!(!format!("{r:?}").contains(&new), "Debug masks the secret");
    assert_eq!(r.webhook_endpoint.as_ref().expect("endpoint").url, url);
    let listed = webhooks(&dir, &["list"]);
    assert!(listed.contains(M2) && !listed.contains(&new), "{listed}");
    let before = rx.got().len();
    tokio::time::sleep(Duration::from_millis(1_100)).await; // the view re-reads
    let m2_sale = sale(&card(33), 55).set(41, "DEMO0101").set(42, M2);
    assert_eq!(c.call(&m2_sale).await.code(), "00");
    let got = rx.wait_for(before + 1).await;
    verify(&got[before], &new);
    assert_eq!(got[before].json()["merchant_id"], M2);
    // Removed once; a second time there is none.
    let r = m2.remove_webhook_endpoint(None).await.expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    let r = m2.remove_webhook_endpoint(None).await.expect("answered");
    assert_eq!(r.code(), "25", "{r:?}");
    let r = m2.get_webhook_endpoint(None).await.expect("answered");
    assert_eq!(r.webhook_endpoint, None);
    let logs = std::fs::read_dir(&sw.dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(!logs.contains(&new), "the secret is in no log file");
    sw.stop().await;
}

#[tokio::test]
async fn the_backlog_stops_at_its_bound_and_nothing_is_dropped() {
    const BACKLOG: u64 = 100;
    const SALES: usize = 250;
    let (rx, addr) = Receiver::start().await;
    *rx.otherwise.lock().unwrap() = Some(Answer::Status(503));
    let dir = data_dir();
    set_endpoint(&dir, M1, &format!("http://{addr}/hook"));
    let mut sw = TestSwitch::start_in(dir.clone(), |c| {
        short_timeout(c);
        c.webhooks.backlog_max = BACKLOG;
    })
    .await;
    let mut c = sw.client().await;
    for i in 0..SALES as u64 {
        assert_eq!(c.call(&sale(&card(3_000 + i), 100 + i)).await.code(), "00");
    }
    // The receiver fails every attempt: the backlog fills to its bound and
    // stays there (a few counts of the queue later, still no more).
    wait_queued(&dir, M1, BACKLOG as usize).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        queued_ids(&dir, M1).len(),
        BACKLOG as usize,
        "within webhooks.backlog_max"
    );
    let (_, metrics) = sw.http_get("/metrics").await;
    let reached = metric_sum(
        &metrics,
        "switch_limit_reached_total{limit=\"webhooks_backlog_max\"}",
    );
    assert!(reached.is_some_and(|n| n >= 1.0), "{metrics}");

    // The receiver is back: every sale's event is queued and delivered,
    // those the journal held back included.
    *rx.otherwise.lock().unwrap() = None;
    let deadline = Instant::now() + TIMEOUT * 4;
    loop {
        sw.clock.advance_ms(3_600_000);
        let delivered = rusqlite::Connection::open(dir.join("webhooks.sqlite"))
            .and_then(|q| {
                q.query_row(
                    "SELECT count(*) FROM events WHERE merchant = ?1 AND status = 'delivered'",
                    [M1],
                    |r| r.get::<_, i64>(0),
                )
            })
            .expect("the queue reads");
        if delivered == SALES as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} of {SALES} delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        queued_ids(&dir, M1).len(),
        SALES,
        "one event per sale, none twice"
    );
    sw.stop().await;
}
