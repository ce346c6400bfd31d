//! The issuer simulator over real loopback TCP: a client built on the
//! codecs' framing writes pipelined requests and checks each answer.
//! Waits are bounded (a test fails after `WAIT`), and no test asserts
//! that something is fast: only order, counts, and lower bounds on delays.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use codecs::framing::{FrameCodec, FrameConfig, LengthHeader};
use codecs::iso8583::{Message, MessageWriter, Mti, Profile};
use loadgen::issuer::{self, IssuerConfig, IssuerCounts, IssuerHandle, Latency};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// Longest wait for anything the issuer must do.
const WAIT: Duration = Duration::from_secs(10);

/// One decoded answer.
#[derive(Debug)]
struct Answer {
    mti: String,
    fields: BTreeMap<u8, Vec<u8>>,
}

impl Answer {
    fn text(&self, n: u8) -> &str {
        self.fields
            .get(&n)
            .map_or("", |v| std::str::from_utf8(v).expect("text field"))
    }
}

/// A terminal-side client of the issuer.
struct Client {
    stream: TcpStream,
    codec: FrameCodec,
    profile: &'static Profile,
    rbuf: BytesMut,
}

impl Client {
    async fn connect(issuer: &IssuerHandle) -> Client {
        Client::connect_with(issuer, &Profile::ASCII, LengthHeader::Binary2).await
    }

    async fn connect_with(
        issuer: &IssuerHandle,
        profile: &'static Profile,
        header: LengthHeader,
    ) -> Client {
        let stream = TcpStream::connect(issuer.addr()).await.expect("connect");
        Client {
            stream,
            codec: FrameCodec::new(FrameConfig {
                header,
                ..FrameConfig::default()
            }),
            profile,
            rbuf: BytesMut::new(),
        }
    }

    /// Queues one message (not written until `flush`).
    fn frame(&self, out: &mut BytesMut, mti: &str, fields: &[(u8, &[u8])]) {
        self.codec
            .write_frame(out, None, |buf| {
                let mut w =
                    MessageWriter::new(buf, self.profile, Mti::parse(mti).expect("mti literal"));
                for (n, v) in fields {
                    w.field(*n, v)?;
                }
                w.finish().map(|_| ())
            })
            .expect("encodes");
    }

    async fn send_all(&mut self, out: &BytesMut) {
        self.stream.write_all(out).await.expect("write");
    }

    /// Sends an authorization-like request with this STAN and amount.
    async fn send(&mut self, mti: &str, stan: u32, amount_minor: u64) {
        let mut out = BytesMut::new();
        self.request(&mut out, mti, stan, amount_minor);
        self.send_all(&out).await;
    }

    fn request(&self, out: &mut BytesMut, mti: &str, stan: u32, amount_minor: u64) {
        let stan = format!("{stan:06}");
        let amount = format!("{amount_minor:012}");
        self.frame(
            out,
            mti,
            &[
                (2, b"4111111111111111"),
                (3, b"000000"),
                (4, amount.as_bytes()),
                (7, b"1123114959"),
                (11, stan.as_bytes()),
                (32, b"123456"),
                (37, b"000000000042"),
                (41, b"DEMO0001"),
                (42, b"DEMO00000000001"),
                (49, b"978"),
            ],
        );
    }

    /// The next message, or `None` when the issuer closed the link.
    async fn recv(&mut self) -> Option<Answer> {
        tokio::time::timeout(WAIT, self.recv_unbounded())
            .await
            .expect("an answer or a close within the wait")
    }

    async fn recv_unbounded(&mut self) -> Option<Answer> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.rbuf).expect("framing") {
                let msg = Message::decode(self.profile, &frame.body).expect("decodes");
                return Some(Answer {
                    mti: msg.mti().to_string(),
                    fields: msg.fields().map(|(n, v)| (n, v.to_vec())).collect(),
                });
            }
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

async fn start(change: impl FnOnce(&mut IssuerConfig)) -> IssuerHandle {
    let mut config = IssuerConfig::default();
    change(&mut config);
    issuer::start(config).await.expect("issuer starts")
}

/// Waits (bounded) until `check` holds for the counters.
async fn counts_until(
    issuer: &IssuerHandle,
    check: impl Fn(&IssuerCounts) -> bool,
) -> IssuerCounts {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = issuer.counts();
        if check(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "counts never got there: {c:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn answers_leave_in_latency_order_not_request_order() {
    let issuer = start(|c| c.late = Some((vec![1414], 200))).await;
    let mut client = Client::connect(&issuer).await;
    let sent = Instant::now();
    let mut out = BytesMut::new();
    client.request(&mut out, "0100", 1, 1414);
    client.request(&mut out, "0100", 2, 1000);
    client.request(&mut out, "0200", 3, 1000);
    client.send_all(&out).await;
    let order: Vec<String> = [
        client.recv().await.expect("answer"),
        client.recv().await.expect("answer"),
        client.recv().await.expect("answer"),
    ]
    .iter()
    .map(|a| format!("{} {}", a.mti, a.text(11)))
    .collect();
    assert_eq!(order, ["0110 000002", "0210 000003", "0110 000001"]);
    assert!(
        sent.elapsed() >= Duration::from_millis(200),
        "late answer came early"
    );
    issuer.shutdown().await;
}

#[tokio::test]
async fn random_latency_reorders_a_pipeline_and_every_answer_matches() {
    let issuer = start(|c| {
        c.latency = Latency::Uniform {
            min_ms: 0,
            max_ms: 40,
        }
    })
    .await;
    let mut client = Client::connect(&issuer).await;
    let mut out = BytesMut::new();
    for stan in 1..=50 {
        client.request(&mut out, "0100", stan, 1000);
    }
    client.send_all(&out).await;
    let mut stans = Vec::new();
    for _ in 0..50 {
        let a = client.recv().await.expect("answer");
        assert_eq!((a.mti.as_str(), a.text(39)), ("0110", "00"));
        assert_eq!(a.text(41), "DEMO0001");
        assert_eq!(a.text(7), "1123114959");
        assert_eq!(a.text(32), "123456");
        assert_eq!(a.text(37), "000000000042");
        assert_eq!(a.text(38).len(), 6);
        assert!(!a.fields.contains_key(&2), "card number in an answer");
        stans.push(a.text(11).parse::<u32>().expect("stan"));
    }
    let mut sorted = stans.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=50).collect::<Vec<_>>());
    assert_ne!(
        stans, sorted,
        "50 answers with random delays came in request order"
    );
    let c = counts_until(&issuer, |c| c.pending_answers == 0).await;
    assert_eq!((c.requests_0100, c.answers_sent, c.approvals), (50, 50, 50));
    issuer.shutdown().await;
}

#[tokio::test]
async fn decline_rate_is_exact_and_codes_cycle() {
    let issuer = start(|c| {
        c.approve_pct = 30;
        c.decline_codes = vec!["05".into(), "51".into()];
    })
    .await;
    let mut client = Client::connect(&issuer).await;
    let mut out = BytesMut::new();
    for stan in 1..=100 {
        client.request(
            &mut out,
            if stan % 2 == 0 { "0100" } else { "0200" },
            stan,
            1000,
        );
    }
    client.send_all(&out).await;
    let mut codes: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..100 {
        let a = client.recv().await.expect("answer");
        assert_eq!(a.fields.contains_key(&38), a.text(39) == "00", "{a:?}");
        *codes.entry(a.text(39).to_string()).or_default() += 1;
    }
    let expected: BTreeMap<String, u32> =
        [("00".into(), 30), ("05".into(), 35), ("51".into(), 35)].into();
    assert_eq!(codes, expected);
    let c = issuer.counts();
    assert_eq!((c.approvals, c.declines), (30, 70));
    assert_eq!((c.requests_0100, c.requests_0200), (50, 50));
    // Changed at runtime: everything approved from now on.
    issuer.set_approve_pct(100);
    client.send("0100", 101, 1000).await;
    assert_eq!(client.recv().await.expect("answer").text(39), "00");
    issuer.shutdown().await;
}

#[tokio::test]
async fn silent_amounts_are_never_answered() {
    let issuer = start(|c| c.silent_amounts = vec![1313]).await;
    let mut client = Client::connect(&issuer).await;
    let mut out = BytesMut::new();
    client.request(&mut out, "0100", 1, 1313);
    client.request(&mut out, "0420", 2, 1313);
    client.request(&mut out, "0100", 3, 1000);
    client.send_all(&out).await;
    // The link reads in order: by the time 3 is answered, 1 and 2 were decided.
    let a = client.recv().await.expect("answer");
    assert_eq!(a.text(11), "000003");
    let c = counts_until(&issuer, |c| c.pending_answers == 0).await;
    assert_eq!((c.silent, c.answers_sent), (2, 1));
    // Runtime change: 1313 is answered again.
    issuer.set_silent_amounts(Vec::new());
    client.send("0100", 4, 1313).await;
    assert_eq!(client.recv().await.expect("answer").text(11), "000004");
    assert!(issuer
        .received()
        .iter()
        .any(|r| r.text(11) == Some("000001") && r.text(4) == Some("000000001313")));
    issuer.shutdown().await;
}

#[tokio::test]
async fn echoes_are_answered_or_not() {
    let issuer = start(|_| {}).await;
    let mut client = Client::connect(&issuer).await;
    let mut out = BytesMut::new();
    client.frame(
        &mut out,
        "0800",
        &[(7, b"1123114959"), (11, b"000077"), (70, b"301")],
    );
    client.send_all(&out).await;
    let a = client.recv().await.expect("0810");
    assert_eq!(
        (a.mti.as_str(), a.text(39), a.text(11), a.text(70)),
        ("0810", "00", "000077", "301")
    );
    assert!(!a.fields.contains_key(&38));

    issuer.set_answer_echo(false);
    let mut out = BytesMut::new();
    client.frame(
        &mut out,
        "0800",
        &[(7, b"1123114959"), (11, b"000078"), (70, b"301")],
    );
    client.request(&mut out, "0100", 79, 1000);
    client.send_all(&out).await;
    let a = client.recv().await.expect("0110");
    assert_eq!((a.mti.as_str(), a.text(11)), ("0110", "000079"));
    let c = issuer.counts();
    assert_eq!((c.requests_0800_echo, c.silent), (2, 1));
    issuer.shutdown().await;
}

#[tokio::test]
async fn sign_on_and_off_are_counted_apart() {
    let issuer = start(|_| {}).await;
    let mut client = Client::connect(&issuer).await;
    let mut out = BytesMut::new();
    for (stan, f70) in [
        (b"000001", b"001"),
        (b"000002", b"002"),
        (b"000003", b"999"),
    ] {
        client.frame(
            &mut out,
            "0800",
            &[(7, b"1123114959"), (11, stan), (70, f70)],
        );
    }
    client.send_all(&out).await;
    for _ in 0..3 {
        assert_eq!(client.recv().await.expect("0810").mti, "0810");
    }
    let c = issuer.counts();
    assert_eq!(
        (
            c.requests_0800_sign_on,
            c.requests_0800_sign_off,
            c.requests_other
        ),
        (1, 1, 1)
    );
    issuer.shutdown().await;
}

#[tokio::test]
async fn the_issuer_sends_echoes_and_counts_the_answers() {
    let issuer = start(|_| {}).await;
    let mut client = Client::connect(&issuer).await;
    counts_until(&issuer, |c| c.connections_current == 1).await;
    assert_eq!(issuer.send_echo(), 1);
    let echo = client.recv().await.expect("0800 from the issuer");
    assert_eq!((echo.mti.as_str(), echo.text(70)), ("0800", "301"));
    assert_eq!(echo.text(11).len(), 6);
    assert_eq!(echo.text(7).len(), 10);
    let mut out = BytesMut::new();
    client.frame(
        &mut out,
        "0810",
        &[
            (7, echo.text(7).as_bytes()),
            (11, echo.text(11).as_bytes()),
            (39, b"00"),
            (70, b"301"),
        ],
    );
    client.send_all(&out).await;
    let c = counts_until(&issuer, |c| c.echo_answers == 1).await;
    assert_eq!(c.echoes_sent, 1);
    let last = issuer.received().pop().expect("logged");
    assert_eq!(last.mti.as_str(), "0810");
    issuer.shutdown().await;
}

#[tokio::test]
async fn advices_are_answered_00_even_when_declining() {
    let issuer = start(|c| c.approve_pct = 0).await;
    let mut client = Client::connect(&issuer).await;
    let pairs = [
        ("0120", "0130"),
        ("0121", "0130"),
        ("0220", "0230"),
        ("0221", "0230"),
        ("0420", "0430"),
        ("0421", "0430"),
    ];
    let mut out = BytesMut::new();
    for (i, (req, _)) in (1..).zip(pairs) {
        client.request(&mut out, req, i, 1000);
    }
    client.send_all(&out).await;
    for (i, (_, resp)) in (1..).zip(pairs) {
        let a = client.recv().await.expect("answer");
        assert_eq!(
            (a.mti.as_str(), a.text(39), a.text(11)),
            (resp, "00", format!("{i:06}").as_str())
        );
    }
    let c = issuer.counts();
    assert_eq!(
        [
            c.requests_0120,
            c.requests_0121,
            c.requests_0220,
            c.requests_0221,
            c.requests_0420,
            c.requests_0421
        ],
        [1; 6]
    );
    assert_eq!((c.approvals, c.declines), (0, 0));
    issuer.shutdown().await;
}

#[tokio::test]
async fn disconnect_after_n_requests_answers_the_first_n_minus_one() {
    let issuer = start(|c| c.disconnect_after = Some(3)).await;
    let mut client = Client::connect(&issuer).await;
    let mut out = BytesMut::new();
    for stan in 1..=5 {
        client.request(&mut out, "0100", stan, 1000);
    }
    client.send_all(&out).await;
    assert_eq!(client.recv().await.expect("answer").text(11), "000001");
    assert_eq!(client.recv().await.expect("answer").text(11), "000002");
    assert!(
        client.recv().await.is_none(),
        "link still open after 3 requests"
    );
    let c = counts_until(&issuer, |c| c.connections_current == 0).await;
    assert_eq!((c.requests_0100, c.disconnects_after_limit), (3, 1));
    // A new link gets its own count.
    let mut again = Client::connect(&issuer).await;
    again.send("0100", 9, 1000).await;
    assert_eq!(again.recv().await.expect("answer").text(11), "000009");
    issuer.shutdown().await;
}

#[tokio::test]
async fn stopped_listening_refuses_connects_and_keeps_links() {
    let issuer = start(|_| {}).await;
    let mut kept = Client::connect(&issuer).await;
    counts_until(&issuer, |c| c.connects == 1).await;
    issuer.stop_listening().await;
    for _ in 0..3 {
        assert!(
            TcpStream::connect(issuer.addr()).await.is_err(),
            "connect accepted while stopped"
        );
    }
    kept.send("0100", 1, 1000).await;
    assert_eq!(kept.recv().await.expect("answer").text(39), "00");
    assert_eq!(issuer.counts().connects, 1);
    issuer.resume_listening().await.expect("binds again");
    let mut fresh = Client::connect(&issuer).await;
    fresh.send("0100", 2, 1000).await;
    assert_eq!(fresh.recv().await.expect("answer").text(11), "000002");
    let c = counts_until(&issuer, |c| c.connections_current == 2).await;
    assert_eq!(c.connects, 2);
    issuer.shutdown().await;
}

#[tokio::test]
async fn disconnect_all_closes_every_link_and_drops_waiting_answers() {
    let issuer = start(|c| c.latency = Latency::Fixed(60_000)).await;
    let mut a = Client::connect(&issuer).await;
    let mut b = Client::connect(&issuer).await;
    a.send("0100", 1, 1000).await;
    b.send("0100", 2, 1000).await;
    counts_until(&issuer, |c| c.pending_answers == 2).await;
    issuer.disconnect_all();
    assert!(a.recv().await.is_none());
    assert!(b.recv().await.is_none());
    let c = counts_until(&issuer, |c| {
        c.connections_current == 0 && c.pending_answers == 0
    })
    .await;
    assert_eq!(
        (c.disconnects_forced, c.answers_dropped, c.answers_sent),
        (2, 2, 0)
    );
    issuer.shutdown().await;
}

#[tokio::test]
async fn a_bad_frame_closes_the_link_and_is_counted() {
    let issuer = start(|_| {}).await;
    let mut client = Client::connect(&issuer).await;
    client
        .stream
        .write_all(b"\x00\x060x00zz")
        .await
        .expect("write");
    assert!(client.recv().await.is_none());
    let c = counts_until(&issuer, |c| c.connections_current == 0).await;
    assert_eq!(c.bad_messages, 1);
    // An over-limit length header too.
    let mut client = Client::connect(&issuer).await;
    client.stream.write_all(b"\xff\xff").await.expect("write");
    assert!(client.recv().await.is_none());
    assert_eq!(
        counts_until(&issuer, |c| c.bad_messages == 2)
            .await
            .connects,
        2
    );
    issuer.shutdown().await;
}

#[tokio::test]
async fn ascii_hex_profile_with_ascii_length_header() {
    let issuer = start(|c| {
        c.profile = &Profile::ASCII_HEX;
        c.length_header = LengthHeader::Ascii4;
    })
    .await;
    let mut client = Client::connect_with(&issuer, &Profile::ASCII_HEX, LengthHeader::Ascii4).await;
    client.send("0100", 5, 1000).await;
    let a = client.recv().await.expect("answer");
    assert_eq!(
        (a.mti.as_str(), a.text(39), a.text(11)),
        ("0110", "00", "000005")
    );
    issuer.shutdown().await;
}

#[tokio::test]
async fn runtime_config_changes_are_checked() {
    let issuer = start(|_| {}).await;
    assert!(issuer
        .update(|c| c.decline_codes = vec!["5".into()])
        .is_err());
    assert_eq!(issuer.config().decline_codes, ["05"]);
    issuer
        .update(|c| {
            c.approve_pct = 0;
            c.decline_codes = vec!["91".into()];
        })
        .expect("valid");
    let mut client = Client::connect(&issuer).await;
    client.send("0100", 1, 1000).await;
    assert_eq!(client.recv().await.expect("answer").text(39), "91");
    assert!(issuer::start(IssuerConfig {
        approve_pct: 101,
        ..IssuerConfig::default()
    })
    .await
    .is_err());
    issuer.shutdown().await;
}
