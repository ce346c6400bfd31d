//! SIGTERM under pipelined load: the switch stops reading, answers every
//! request it has read, closes at a frame boundary and exits 0.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_what_was_read_and_exits_zero() {
    let dir = data_dir();
    let (mut command, addr) = switch_command(&dir);
    let mut child = command
        .stderr(Stdio::piped())
        .spawn()
        .expect("switch starts");
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut c = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => break Client::connect(addr).await,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("switch did not start: {e}"),
        }
    };
    // Warm up, then pipeline many requests in one write.
    assert_eq!(c.call(&sale(&card(1), 100)).await.code(), "00");
    let reqs: Vec<Req> = (0..3000).map(|i| sale(&card(10 + i), 100 + i)).collect();
    let mut wire = Vec::new();
    for r in &reqs {
        let body = r.encode();
        wire.extend_from_slice(&(body.len() as u16).to_be_bytes());
        wire.extend_from_slice(&body);
    }
    let mut raw = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let writer = tokio::spawn(async move {
        let _ = raw.write_all(&wire).await;
        raw
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let raw = writer.await.expect("writer");
    let mut framed =
        tokio_util::codec::Framed::new(raw, codecs::framing::FrameCodec::new(Default::default()));
    let mut answered = 0usize;
    use futures_util::StreamExt;
    while let Ok(Some(frame)) = tokio::time::timeout(TIMEOUT, framed.next()).await {
        let frame = frame.expect("whole frames only, up to a clean close");
        let msg = codecs::iso8583::Message::decode(&codecs::iso8583::Profile::ASCII, &frame.body)
            .expect("decodes");
        let expected = &reqs[answered];
        assert_eq!(
            msg.raw(11),
            expected.fields.get(&11).map(Vec::as_slice),
            "answers come in order, none skipped"
        );
        assert_eq!(msg.raw(39), Some(&b"00"[..]));
        answered += 1;
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(answered > 0, "some requests were read before SIGTERM");
    eprintln!("answered {answered} of {} before shutdown", reqs.len());
}
