//! The link layer against a fake issuer over loopback TCP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codecs::framing::{FrameCodec, FrameConfig};
use codecs::iso8583::{Message, MessageWriter, Mti, Profile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;

const PROFILE: &Profile = &Profile::ASCII;

/// What the fake issuer saw: connection number, MTI, F11, F39, F70.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    conn: usize,
    mti: String,
    stan: Option<u64>,
    f39: Option<String>,
    f70: Option<String>,
}

/// How the fake issuer behaves; changed by the test while it runs.
#[derive(Default)]
struct Ctl {
    /// Connections accepted.
    accepts: AtomicUsize,
    /// Close every connection as soon as it is accepted.
    close_at_once: AtomicBool,
    /// Requests held before all are answered, last first; 0: hold until
    /// `release` moves.
    batch: AtomicUsize,
    /// Bumped to answer every request held.
    release: AtomicUsize,
    /// Leave 0800/301 unanswered.
    refuse_echo: AtomicBool,
    /// F39 of the answer to a sign-on; `None`: no answer.
    sign_on_code: Mutex<Option<&'static str>>,
    /// Send an 0800/301 (F11 123456) on every connection accepted.
    echo_on_connect: AtomicBool,
    /// Answer requests with a frame that does not decode.
    garbage: AtomicBool,
    /// Every message received, in order.
    seen: Mutex<Vec<Seen>>,
    /// F11 of the 0110s sent, in order.
    answered: Mutex<Vec<u64>>,
}

impl Ctl {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn seen_with(&self, mti: &str, f70: Option<&str>) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.mti == mti && (f70.is_none() || s.f70.as_deref() == f70))
            .collect()
    }
}

async fn issuer() -> (SocketAddr, Arc<Ctl>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let ctl = Arc::new(Ctl {
        batch: AtomicUsize::new(1),
        sign_on_code: Mutex::new(Some("00")),
        ..Ctl::default()
    });
    let c = ctl.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let conn = c.accepts.fetch_add(1, Ordering::SeqCst);
            if c.close_at_once.load(Ordering::SeqCst) {
                drop(stream);
                continue;
            }
            tokio::spawn(serve(stream, conn, c.clone()));
        }
    });
    (addr, ctl)
}

fn encode(mti: &str, fields: &[(u8, &[u8])]) -> BytesMut {
    let mut out = BytesMut::new();
    let mut w = MessageWriter::new(&mut out, PROFILE, Mti::parse(mti).expect("mti"));
    for (n, v) in fields {
        w.field(*n, v).expect("field");
    }
    w.finish().expect("finish");
    out
}

fn frame(body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    network::write_request(&mut out, &FrameCodec::new(FrameConfig::default()), body).expect("fits");
    out
}

/// One held request: its F11 and F41.
type Held = (Vec<u8>, Option<Vec<u8>>);

async fn serve(mut stream: TcpStream, conn: usize, c: Arc<Ctl>) {
    let mut codec = FrameCodec::new(FrameConfig::default());
    let mut input = BytesMut::new();
    let mut held: Vec<Held> = Vec::new();
    let mut release = c.release.load(Ordering::SeqCst);
    if c.echo_on_connect.load(Ordering::SeqCst) {
        let m = encode("0800", &[(7, b"1123114910"), (11, b"123456"), (70, b"301")]);
        let _ = stream.write_all(&frame(&m)).await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        let mut out = BytesMut::new();
        tokio::select! {
            r = stream.read_buf(&mut input) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tick.tick() => {}
        }
        while let Ok(Some(f)) = codec.decode(&mut input) {
            let Ok(m) = Message::decode(PROFILE, &f.body) else {
                return;
            };
            let text = |n| m.text(n).map(str::to_owned);
            c.seen.lock().expect("lock").push(Seen {
                conn,
                mti: m.mti().as_str().to_owned(),
                stan: m.number(11),
                f39: text(39),
                f70: text(70),
            });
            match (m.mti().as_str(), m.text(70)) {
                ("0800", Some(code)) => {
                    let f39 = match code {
                        "001" => *c.sign_on_code.lock().expect("lock"),
                        "301" if c.refuse_echo.load(Ordering::SeqCst) => None,
                        _ => Some("00"),
                    };
                    if let Some(f39) = f39 {
                        let raw = |n| m.raw(n).unwrap_or_default();
                        let a = encode(
                            "0810",
                            &[
                                (7, raw(7)),
                                (11, raw(11)),
                                (39, f39.as_bytes()),
                                (70, raw(70)),
                            ],
                        );
                        out.extend_from_slice(&frame(&a));
                    }
                }
                ("0100", _) if c.garbage.load(Ordering::SeqCst) => {
                    out.extend_from_slice(&frame(b"XXXXnot a message"));
                }
                ("0100", _) => held.push((
                    m.raw(11).unwrap_or_default().to_vec(),
                    m.raw(41).map(<[u8]>::to_vec),
                )),
                _ => {}
            }
        }
        let batch = c.batch.load(Ordering::SeqCst);
        let now_release = c.release.load(Ordering::SeqCst);
        if (batch > 0 && held.len() >= batch) || (now_release != release && !held.is_empty()) {
            release = now_release;
            for (stan, terminal) in held.drain(..).rev() {
                let mut fields: Vec<(u8, &[u8])> = vec![(11, &stan), (39, b"00")];
                if let Some(t) = &terminal {
                    fields.push((41, t));
                }
                out.extend_from_slice(&frame(&encode("0110", &fields)));
                let stan = std::str::from_utf8(&stan).ok().and_then(|s| s.parse().ok());
                c.answered.lock().expect("lock").push(stan.unwrap_or(0));
            }
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn config(addr: SocketAddr) -> LinkConfig {
    LinkConfig {
        name: "test-issuer".into(),
        addr: addr.to_string(),
        profile: PROFILE,
        framing: FrameConfig::default(),
        connections: 1,
        inflight_per_link_max: 16,
        timeout: Duration::from_millis(500),
        echo_interval: None,
        sign_on: false,
        acquirer_id: "123456".into(),
        clock: Clock::System,
        tls: None,
    }
}

struct Running {
    ups: Arc<Upstreams>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    fn start(config: LinkConfig) -> Running {
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        let ups = Upstreams::start(vec![config], cancel.clone(), tracker.clone());
        Running {
            ups,
            cancel,
            tracker,
        }
    }

    fn stats(&self) -> UpstreamStats {
        self.ups.stats(0).expect("host 0")
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(3), self.tracker.wait())
            .await
            .expect("links end on cancel");
    }
}

/// Polls `cond` every 5 ms until it holds or `within` has passed.
async fn until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

fn request(stan: u32, terminal: &[u8; 8]) -> Bytes {
    let stan = format!("{stan:06}");
    encode("0100", &[(11, stan.as_bytes()), (41, terminal)]).freeze()
}

fn terminal(i: u32) -> [u8; 8] {
    let mut t = *b"TERM0000";
    t[4..].copy_from_slice(format!("{i:04}").as_bytes());
    t
}

async fn exchange(ups: &Upstreams, stan: u32) -> Result<Bytes, ExchangeError> {
    let t = terminal(stan);
    ups.exchange(0, stan, Some(t), request(stan, &t)).await
}

fn answer_fields(answer: &[u8]) -> (String, Option<u64>, Option<String>) {
    let m = Message::decode(PROFILE, answer).expect("answer decodes");
    (
        m.mti().as_str().to_owned(),
        m.number(11),
        m.text(41).map(str::to_owned),
    )
}

#[tokio::test]
async fn answers_are_matched_out_of_order() {
    let (addr, ctl) = issuer().await;
    ctl.batch.store(4, Ordering::SeqCst);
    let r = Running::start(config(addr));
    assert!(until(Duration::from_secs(2), || r.ups.connected(0) == 1).await);
    let ups = &r.ups;
    let (a, b, c, d) = tokio::join!(
        exchange(ups, 1),
        exchange(ups, 2),
        exchange(ups, 3),
        exchange(ups, 4)
    );
    for (stan, got) in [(1, a), (2, b), (3, c), (4, d)] {
        let (mti, f11, f41) = answer_fields(&got.expect("answered"));
        assert_eq!(mti, "0110");
        assert_eq!(f11, Some(u64::from(stan)));
        let t = terminal(stan);
        assert_eq!(f41.as_deref(), std::str::from_utf8(&t).ok());
    }
    let received: Vec<u64> = ctl.seen().iter().filter_map(|s| s.stan).collect();
    let mut answered = ctl.answered.lock().expect("lock").clone();
    answered.reverse();
    assert_eq!(answered, received, "the issuer answered last first");
    assert_eq!(r.stats().late_answers, 0);
    r.stop().await;
}

#[tokio::test]
async fn a_timed_out_request_counts_its_late_answer() {
    let (addr, ctl) = issuer().await;
    ctl.batch.store(0, Ordering::SeqCst);
    let mut c = config(addr);
    c.timeout = Duration::from_millis(100);
    let r = Running::start(c);
    assert!(until(Duration::from_secs(2), || r.ups.connected(0) == 1).await);
    let started = Instant::now();
    assert_eq!(exchange(&r.ups, 7).await, Err(ExchangeError::TimedOut));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(r.stats().timeouts, 1);
    assert_eq!(r.stats().late_answers, 0);
    ctl.release.fetch_add(1, Ordering::SeqCst);
    assert!(until(Duration::from_secs(1), || r.stats().late_answers == 1).await);
    // The link stays up and the same F11 may go again.
    ctl.batch.store(1, Ordering::SeqCst);
    let (_, f11, _) = answer_fields(&exchange(&r.ups, 7).await.expect("answered"));
    assert_eq!(f11, Some(7));
    assert_eq!(r.stats().late_answers, 1);
    r.stop().await;
}

#[tokio::test]
async fn no_link_is_refused_at_once() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let r = Running::start(config(addr));
    let started = Instant::now();
    assert_eq!(exchange(&r.ups, 1).await, Err(ExchangeError::NoLink));
    assert!(started.elapsed() < Duration::from_millis(50));
    assert!(until(Duration::from_secs(2), || r.stats().connects_failed >= 2).await);
    let started = Instant::now();
    assert_eq!(exchange(&r.ups, 2).await, Err(ExchangeError::NoLink));
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(r.ups.connected(0), 0);
    r.stop().await;
}

#[tokio::test]
async fn reconnects_back_off_when_the_issuer_closes() {
    let (addr, ctl) = issuer().await;
    ctl.close_at_once.store(true, Ordering::SeqCst);
    let r = Running::start(config(addr));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // 0, ~0.1, ~0.3, ~0.7 s, perhaps ~1.5 s: no storm.
    let accepts = ctl.accepts.load(Ordering::SeqCst);
    assert!((3..=6).contains(&accepts), "{accepts} connects in 1.5 s");
    ctl.close_at_once.store(false, Ordering::SeqCst);
    assert!(until(Duration::from_secs(4), || r.ups.connected(0) == 1).await);
    exchange(&r.ups, 1)
        .await
        .expect("answered once reconnected");
    assert!(r.stats().links_closed >= 3);
    r.stop().await;
}

#[tokio::test]
async fn an_idle_link_echoes_and_an_unanswered_echo_reopens_it() {
    let (addr, ctl) = issuer().await;
    let mut c = config(addr);
    c.echo_interval = Some(Duration::from_millis(100));
    c.timeout = Duration::from_millis(150);
    let r = Running::start(c);
    assert!(
        until(Duration::from_secs(2), || ctl
            .seen_with("0800", Some("301"))
            .len()
            >= 2)
        .await,
        "echoes on an idle link"
    );
    assert_eq!(
        ctl.accepts.load(Ordering::SeqCst),
        1,
        "answered echoes keep the link"
    );
    assert_eq!(r.stats().echo_failures, 0);
    let echo = ctl.seen_with("0800", Some("301")).pop().expect("an echo");
    assert!(echo
        .stan
        .is_some_and(|s| s >= u64::from(links::NETWORK_STAN_FIRST)));
    ctl.refuse_echo.store(true, Ordering::SeqCst);
    assert!(
        until(Duration::from_secs(2), || ctl
            .accepts
            .load(Ordering::SeqCst)
            >= 2)
        .await,
        "an unanswered echo closes the link, which reconnects"
    );
    assert!(r.stats().echo_failures >= 1);
    ctl.refuse_echo.store(false, Ordering::SeqCst);
    assert!(until(Duration::from_secs(2), || r.ups.connected(0) == 1).await);
    exchange(&r.ups, 3).await.expect("answered on the new link");
    r.stop().await;
}

#[tokio::test]
async fn sign_on_comes_first_and_is_required() {
    let (addr, ctl) = issuer().await;
    *ctl.sign_on_code.lock().expect("lock") = Some("91");
    let mut c = config(addr);
    c.sign_on = true;
    c.timeout = Duration::from_millis(150);
    let r = Running::start(c);
    assert!(until(Duration::from_secs(2), || !ctl.seen().is_empty()).await);
    let first = ctl.seen().remove(0);
    assert_eq!(
        (first.mti.as_str(), first.f70.as_deref()),
        ("0800", Some("001"))
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.ups.connected(0), 0, "refused sign-on: no requests");
    assert_eq!(exchange(&r.ups, 1).await, Err(ExchangeError::NoLink));
    // Unanswered: the link closes at the timeout and tries again.
    *ctl.sign_on_code.lock().expect("lock") = None;
    let accepts = ctl.accepts.load(Ordering::SeqCst);
    assert!(
        until(Duration::from_secs(2), || ctl
            .accepts
            .load(Ordering::SeqCst)
            > accepts + 1)
        .await
    );
    assert_eq!(r.ups.connected(0), 0);
    *ctl.sign_on_code.lock().expect("lock") = Some("00");
    assert!(until(Duration::from_secs(3), || r.ups.connected(0) == 1).await);
    exchange(&r.ups, 2).await.expect("answered once signed on");
    let seen = ctl.seen();
    let last_conn = seen.last().map(|s| s.conn);
    let on_it: Vec<_> = seen.iter().filter(|s| Some(s.conn) == last_conn).collect();
    assert_eq!(on_it.first().and_then(|s| s.f70.as_deref()), Some("001"));
    r.stop().await;
    assert_eq!(
        ctl.seen_with("0800", Some("002")).len(),
        1,
        "one sign-off before the planned close"
    );
}

#[tokio::test]
async fn an_0800_from_the_issuer_is_answered() {
    let (addr, ctl) = issuer().await;
    ctl.echo_on_connect.store(true, Ordering::SeqCst);
    let r = Running::start(config(addr));
    assert!(
        until(Duration::from_secs(2), || !ctl
            .seen_with("0810", None)
            .is_empty())
        .await
    );
    let answer = ctl.seen_with("0810", None).remove(0);
    assert_eq!(answer.stan, Some(123_456));
    assert_eq!(answer.f39.as_deref(), Some("00"));
    assert_eq!(answer.f70.as_deref(), Some("301"));
    r.stop().await;
}

#[tokio::test]
async fn a_full_link_sends_to_another_then_callers_wait_then_full() {
    let (addr, ctl) = issuer().await;
    ctl.batch.store(0, Ordering::SeqCst);
    let mut c = config(addr);
    c.connections = 2;
    c.inflight_per_link_max = 1;
    c.timeout = Duration::from_millis(300);
    let r = Running::start(c);
    assert!(until(Duration::from_secs(2), || r.ups.connected(0) == 2).await);
    // Two callers that send again as soon as theirs times out: on this
    // one-thread runtime each retakes its slot before a waiter runs.
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (1..=2)
        .map(|stan| {
            let (ups, stop) = (r.ups.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    // Timed out, or answered once the issuer answers again.
                    let _ = exchange(&ups, stan).await;
                }
            })
        })
        .collect();
    assert!(until(Duration::from_secs(1), || ctl.seen().len() == 2).await);
    let conns: Vec<usize> = ctl.seen().iter().map(|s| s.conn).collect();
    assert_ne!(conns.first(), conns.get(1), "one request per link");
    let started = Instant::now();
    assert_eq!(exchange(&r.ups, 3).await, Err(ExchangeError::Full));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(290), "waited {waited:?}");
    assert!(ctl.seen().iter().all(|s| s.stan != Some(3)), "never sent");
    stop.store(true, Ordering::SeqCst);
    ctl.batch.store(1, Ordering::SeqCst);
    // Room once the last of theirs time out.
    exchange(&r.ups, 4).await.expect("room after the timeouts");
    for h in hogs {
        h.await.expect("join");
    }
    r.stop().await;
}

#[tokio::test]
async fn a_waiting_caller_takes_the_first_slot_freed() {
    let (addr, ctl) = issuer().await;
    ctl.batch.store(0, Ordering::SeqCst);
    let mut c = config(addr);
    c.inflight_per_link_max = 1;
    c.timeout = Duration::from_millis(400);
    let r = Running::start(c);
    assert!(until(Duration::from_secs(2), || r.ups.connected(0) == 1).await);
    let ups = r.ups.clone();
    let first = tokio::spawn(async move { exchange(&ups, 1).await });
    assert!(until(Duration::from_secs(1), || ctl.seen().len() == 1).await);
    let ups = r.ups.clone();
    let started = Instant::now();
    let second = tokio::spawn(async move { exchange(&ups, 2).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    ctl.batch.store(1, Ordering::SeqCst);
    ctl.release.fetch_add(1, Ordering::SeqCst);
    first.await.expect("join").expect("answered");
    second
        .await
        .expect("join")
        .expect("sent once room came, then answered");
    assert!(started.elapsed() < Duration::from_millis(400));
    r.stop().await;
}

#[tokio::test]
async fn a_malformed_frame_closes_the_link_and_fails_what_waits() {
    let (addr, ctl) = issuer().await;
    ctl.garbage.store(true, Ordering::SeqCst);
    let r = Running::start(config(addr));
    assert!(until(Duration::from_secs(2), || r.ups.connected(0) == 1).await);
    assert_eq!(exchange(&r.ups, 1).await, Err(ExchangeError::LinkLost));
    assert_eq!(r.stats().malformed, 1);
    ctl.garbage.store(false, Ordering::SeqCst);
    assert!(until(Duration::from_secs(2), || r.ups.connected(0) == 1).await);
    assert_eq!(ctl.accepts.load(Ordering::SeqCst), 2);
    exchange(&r.ups, 2).await.expect("answered on the new link");
    r.stop().await;
}

#[tokio::test]
async fn refused_requests_send_nothing() {
    let (addr, ctl) = issuer().await;
    let r = Running::start(config(addr));
    assert!(until(Duration::from_secs(2), || r.ups.connected(0) == 1).await);
    let answer = encode("0110", &[(11, b"000001")]).freeze();
    assert_eq!(
        r.ups.exchange(0, 1, None, answer).await,
        Err(ExchangeError::Refused)
    );
    let huge = Bytes::from(vec![b'0'; 10_000]);
    assert_eq!(
        r.ups.exchange(0, 1, None, huge).await,
        Err(ExchangeError::Refused)
    );
    assert_eq!(
        r.ups.exchange(5, 1, None, request(1, &terminal(1))).await,
        Err(ExchangeError::NoLink)
    );
    assert!(ctl.seen().is_empty());
    assert_eq!(r.ups.names().collect::<Vec<_>>(), ["test-issuer"]);
    assert_eq!(r.ups.index("test-issuer"), Some(0));
    r.stop().await;
}
