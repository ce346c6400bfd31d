//! No client can starve the others (issue 16): the per-address connection
//! limit, the frame, log-in, write and drain deadlines, and the HTTP
//! listener's own limits, each driven over loopback as an attacker would.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from `local` (another loopback address) to `to`.
async fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{local}:0").parse().expect("addr"))
        .expect("bind to another loopback address");
    socket.connect(to).await.expect("connect")
}

/// Waits until the switch closes `s` (read gives 0 or an error); how long
/// that took, or `None` if it stayed open for `bound`.
async fn closed_within(s: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + bound).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends `bytes` one at a time, `gap` apart, until the switch closes the
/// connection or `bound` passes; how long until the close.
async fn trickle(
    s: &mut TcpStream,
    bytes: &[u8],
    gap: Duration,
    bound: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let (mut rd, mut wr) = s.split();
    let writer = async {
        for b in bytes.iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(gap).await;
        }
    };
    let reader = async {
        let mut buf = [0u8; 64];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = writer => None,
        t = reader => Some(t),
        () = tokio::time::sleep(bound) => None,
    }
}

async fn metric_present(sw: &TestSwitch, needle: &str) -> bool {
    let (_, metrics) = sw.http_get("/metrics").await;
    metrics.contains(needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot() {
    // The embedded default's limits: 1,024 per listener, 128 per address.
    let mut sw = TestSwitch::start().await;
    let mut idle = Vec::new();
    for _ in 0..1024 {
        idle.push(TcpStream::connect(sw.iso).await.expect("connect"));
    }
    // Connections are accepted in order: once this one is refused, every
    // idle one before it has been taken or refused.
    let mut late = Client::connect(sw.iso).await;
    assert!(
        late.closed().await,
        "a 1,025th connection from the same address is refused"
    );
    let stream = connect_from("127.0.0.2", sw.iso).await;
    let mut other = Client::from_stream(stream);
    assert_eq!(
        other.call(&sale(&card(7001), 100)).await.code(),
        "00",
        "a client from another address is served"
    );
    assert!(
        metric_present(
            &sw,
            "switch_limit_reached_total{limit=\"connections_per_address_max\"}"
        )
        .await
    );
    drop(idle);
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_frame_is_closed_at_its_deadline_on_both_listeners() {
    let mut sw = TestSwitch::start_with(|c| c.limits.frame_read_timeout_ms = 400).await;
    let gap = Duration::from_millis(50);
    // ISO 8583: a length header of 100 bytes, then a byte every 50 ms.
    let mut iso = TcpStream::connect(sw.iso).await.expect("connect");
    let mut bytes = 100u16.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[b'0'; 100]);
    let t = trickle(&mut iso, &bytes, gap, TIMEOUT).await;
    let t = t.expect("closed, not held open by a byte at a time");
    assert!(
        t >= Duration::from_millis(350),
        "not before the deadline: {t:?}"
    );
    // Internal frames: a header announcing 20 bytes, then a byte at a time.
    let mut frame = TcpStream::connect(sw.frame).await.expect("connect");
    let mut bytes = b"SW\x01\x01".to_vec();
    bytes.extend_from_slice(&1u64.to_be_bytes());
    bytes.extend_from_slice(&20u32.to_be_bytes());
    bytes.extend_from_slice(&[0u8; 20]);
    let t = trickle(&mut frame, &bytes, gap, TIMEOUT).await;
    let t = t.expect("closed, not held open by a byte at a time");
    assert!(
        t >= Duration::from_millis(350),
        "not before the deadline: {t:?}"
    );
    assert!(metric_present(&sw, "reason=\"frame_timeout\"").await);
    assert!(metric_present(&sw, "limit=\"frame_read_timeout_ms\"").await);
    // A whole request in good time is unaffected.
    let mut c = sw.client().await;
    assert_eq!(c.call(&sale(&card(7002), 100)).await.code(), "00");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_in_deadline_is_not_extended_by_trickled_bytes() {
    let mut sw = TestSwitch::start_with(|c| {
        c.limits.login_timeout_ms = 500;
        c.limits.frame_read_timeout_ms = 60_000;
    })
    .await;
    let mut s = TcpStream::connect(sw.frame).await.expect("connect");
    let mut bytes = b"SW\x01\x01".to_vec();
    bytes.extend_from_slice(&1u64.to_be_bytes());
    bytes.extend_from_slice(&1000u32.to_be_bytes());
    bytes.extend_from_slice(&[0u8; 1000]);
    let t = trickle(&mut s, &bytes, Duration::from_millis(50), TIMEOUT).await;
    let t = t.expect("closed at the log-in deadline");
    assert!(
        t >= Duration::from_millis(450),
        "not before the deadline: {t:?}"
    );
    assert!(metric_present(&sw, "reason=\"login_timeout\"").await);
    sw.stop().await;
}

/// 0800 echo tests, encoded once, `n` of them back to back.
fn echoes(n: usize) -> Vec<u8> {
    let body = Req::new("0800")
        .set(7, "1123114959")
        .set(11, "000001")
        .set(70, "301")
        .encode();
    let mut wire = Vec::with_capacity(n * (body.len() + 2));
    for _ in 0..n {
        wire.extend_from_slice(&(body.len() as u16).to_be_bytes());
        wire.extend_from_slice(&body);
    }
    wire
}

/// Writes echo tests and never reads, until the switch closes the
/// connection or `bound` passes; whether it was closed.
async fn flood_without_reading(mut s: TcpStream, bound: Duration) -> bool {
    let wire = echoes(10_000);
    let start = Instant::now();
    while start.elapsed() < bound {
        match tokio::time::timeout(bound, s.write_all(&wire)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return true,
            Err(_) => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_at_the_write_deadline() {
    let mut sw = TestSwitch::start_with(|c| c.limits.write_timeout_ms = 300).await;
    let s = TcpStream::connect(sw.iso).await.expect("connect");
    assert!(
        flood_without_reading(s, Duration::from_secs(60)).await,
        "the switch gave up writing and closed the connection"
    );
    assert!(metric_present(&sw, "reason=\"write_timeout\"").await);
    assert!(metric_present(&sw, "limit=\"write_timeout_ms\"").await);
    let mut c = sw.client().await;
    assert_eq!(c.call(&sale(&card(7003), 100)).await.code(), "00");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_completes_within_the_drain_deadline_while_a_client_never_reads() {
    let dir = data_dir();
    // A long write deadline, so only the drain deadline can end it.
    let config = switch::EMBEDDED_DEFAULT
        .replace("write_timeout_ms = 10000", "write_timeout_ms = 600000")
        .replace("drain_timeout_ms = 5000", "drain_timeout_ms = 1000");
    assert!(config.contains("write_timeout_ms = 600000"));
    let config_path = dir.join("switch.toml");
    std::fs::write(&config_path, config).expect("config");
    let (mut command, addr) = switch_command(&dir.join("data"));
    let mut child = command
        .arg("--config")
        .arg(&config_path)
        .stderr(Stdio::null())
        .spawn()
        .expect("switch starts");
    let deadline = Instant::now() + TIMEOUT;
    let stream = loop {
        match TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("switch did not start: {e}"),
        }
    };
    // Fill both directions' buffers: the switch's write is then stuck.
    let flood = tokio::spawn(flood_without_reading(stream, Duration::from_secs(60)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!flood.is_finished(), "the client is still connected");
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("the switch exits whatever the client does")
    .expect("join")
    .expect("wait");
    let took = signalled.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    // The drain deadline (1 s) plus the shutdown grace (2 s) and start-up
    // noise; before the change it stayed up until the client left.
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");
    flood.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_get_through_64_idle_http_connections() {
    let mut sw = TestSwitch::start().await;
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(sw.http).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..40 {
        let (status, body) = sw.http_get("/healthz").await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 200 OK", "ok\n")
        );
    }
    let (status, _) = sw.http_get("/readyz").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(metric_present(&sw, "limit=\"http_connections_max\"").await);
    // The idle connection that was pushed out was closed (each probe, once
    // answered, leaves its slot free for the next).
    let mut closed = 0;
    for s in &mut idle {
        if closed_within(s, Duration::from_millis(10)).await.is_some() {
            closed += 1;
        }
    }
    assert!(closed >= 1, "an idle connection was closed to make room");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_keeps_alive_within_its_limits() {
    let mut sw = TestSwitch::start_with(|c| c.limits.http_requests_per_connection_max = 3).await;
    let mut s = TcpStream::connect(sw.http).await.expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut seen = String::new();
    for _ in 0..3 {
        s.write_all(request).await.expect("write");
        let answered = seen.len();
        while !seen[answered..].ends_with("\r\n\r\nok\n") {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
                .await
                .expect("answer in time")
                .expect("read");
            assert!(n > 0, "closed early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert_eq!(seen.matches("HTTP/1.1 200 OK").count(), 3, "{seen}");
    assert_eq!(seen.matches("Connection: keep-alive").count(), 2, "{seen}");
    assert!(
        seen.ends_with("Connection: close\r\n\r\nok\n"),
        "the third is the last: {seen}"
    );
    assert!(closed_within(&mut s, TIMEOUT).await.is_some());
    // A client that opens and sends nothing is closed at the head deadline.
    let mut s = TcpStream::connect(sw.http).await.expect("connect");
    let t = closed_within(&mut s, TIMEOUT).await.expect("closed");
    assert!(t >= Duration::from_millis(1_500), "{t:?}");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_table_is_visible_in_readyz_until_it_clears() {
    let mut sw = TestSwitch::start_with(|c| {
        c.limits.idempotency_entries_max = 2;
        c.limits.idempotency_window_s = 60;
    })
    .await;
    // Answers leave memory only once the archive holds them. Another
    // writer holding SQLite's write lock keeps the archive from catching
    // up, so the table stays full until that writer lets go.
    let lock = rusqlite::Connection::open(sw.dir.join("archive.sqlite")).expect("open archive");
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let mut c = sw.client().await;
    assert_eq!(c.call(&sale(&card(7101), 100)).await.code(), "00");
    assert_eq!(c.call(&sale(&card(7102), 100)).await.code(), "00");
    assert_eq!(
        (sw.http_get("/readyz").await.0).as_str(),
        "HTTP/1.1 503 Service Unavailable"
    );
    let (_, why) = sw.http_get("/readyz").await;
    assert!(why.contains("limits.idempotency_entries_max"), "{why}");
    // Two windows on, the answers would have aged out, but the archive
    // does not hold them yet: still full, and once the timers see it
    // (every 100 ms) connections stop reading instead of answering 96.
    sw.clock.advance_ms(120_002);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, why) = sw.http_get("/readyz").await;
        if why.contains("backpressure") {
            break;
        }
        assert!(Instant::now() < deadline, "backpressure on: {why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut held = sw.client().await;
    held.send_raw(&sale(&card(7103), 100).encode()).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(1_000), held.recv())
            .await
            .is_err(),
        "held back while the archive is behind"
    );
    let (status, _) = sw.http_get("/healthz").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "alive, only not ready");
    lock.execute_batch("ROLLBACK").expect("let go");
    drop(lock);
    // Answers age out a generation per window once archived (the timers
    // run every 100 ms of real time).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, why) = sw.http_get("/readyz").await;
        if status == "HTTP/1.1 200 OK" {
            break;
        }
        assert!(Instant::now() < deadline, "ready again once clear: {why}");
        sw.clock.advance_ms(60_001);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let r = held.recv().await.expect("the held sale is answered");
    assert_eq!(r.code(), "00");
    assert_eq!(c.call(&sale(&card(7104), 100)).await.code(), "00");
    sw.stop().await;
}
