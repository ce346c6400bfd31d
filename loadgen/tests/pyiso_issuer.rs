//! The independent issuer (`switch/tests/pyiso/issuer.py`, on pyiso8583)
//! answers what the switch's codecs write, in both profiles: one 0100 and
//! one 0800 over loopback TCP. Skipped, with the reason printed, only when
//! python3 or pyiso8583 is missing outside CI; with `CI=true` it must run
//! (scripts/install-test-deps.sh installs pyiso8583).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::BytesMut;
use codecs::framing::{FrameCodec, FrameConfig};
use codecs::iso8583::{Message, MessageWriter, Mti, Profile};
use tokio_util::codec::Decoder;

/// Longest wait for the script to start or answer.
const WAIT: Duration = Duration::from_secs(20);

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../switch/tests/pyiso/issuer.py"
);

/// Why the test cannot run here, if it cannot.
fn missing_python() -> Option<String> {
    match Command::new("python3")
        .args(["-c", "import iso8583"])
        .output()
    {
        Err(e) => Some(format!("python3 not runnable: {e}")),
        Ok(o) if !o.status.success() => Some(format!(
            "pyiso8583 not importable (bash scripts/install-test-deps.sh): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .trim()
        )),
        Ok(_) => None,
    }
}

/// The script's process, killed when dropped.
struct Issuer(Child);

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the script on a free port; returns it and the port.
fn start(spec: &str) -> (Issuer, u16) {
    let mut child = Command::new("python3")
        .args([SCRIPT, "127.0.0.1:0", spec])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let issuer = Issuer(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(WAIT).expect("issuer.py printed its port");
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("port line {line:?}"));
    (issuer, port)
}

/// Writes one request and reads one answer: (MTI, fields).
fn exchange(
    stream: &mut TcpStream,
    profile: &'static Profile,
    mti: &str,
    fields: &[(u8, &[u8])],
) -> (String, Vec<(u8, Vec<u8>)>) {
    let mut codec = FrameCodec::new(FrameConfig::default());
    let mut out = BytesMut::new();
    codec
        .write_frame(&mut out, None, |buf| {
            let mut w = MessageWriter::new(buf, profile, Mti::parse(mti).expect("literal"));
            for (n, v) in fields {
                w.field(*n, v)?;
            }
            w.finish().map(|_| ())
        })
        .expect("encodes");
    stream.write_all(&out).expect("write");
    let mut rbuf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(frame) = codec.decode(&mut rbuf).expect("framing") {
            let m = Message::decode(profile, &frame.body).expect("the answer decodes");
            let fields = m.fields().map(|(n, v)| (n, v.to_vec())).collect();
            return (m.mti().to_string(), fields);
        }
        let n = stream.read(&mut chunk).expect("read within the wait");
        assert!(n > 0, "issuer.py closed the connection");
        rbuf.extend_from_slice(&chunk[..n]);
    }
}

fn field(fields: &[(u8, Vec<u8>)], n: u8) -> Option<&[u8]> {
    fields
        .iter()
        .find(|(f, _)| *f == n)
        .map(|(_, v)| v.as_slice())
}

fn scenario(profile: &'static Profile, spec: &str) {
    let (_issuer, port) = start(spec);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let (mti, f) = exchange(
        &mut stream,
        profile,
        "0100",
        &[
            (2, b"4111111111111111"),
            (3, b"000000"),
            (4, b"000000001000"),
            (7, b"1123114959"),
            (11, b"000042"),
            (32, b"123456"),
            (37, b"000000000042"),
            (41, b"DEMO0001"),
            (49, b"978"),
            (52, &[1, 2, 3, 4, 5, 6, 7, 8]),
        ],
    );
    assert_eq!(mti, "0110", "{f:?}");
    assert_eq!(field(&f, 39), Some(&b"00"[..]));
    assert_eq!(field(&f, 38).map(<[u8]>::len), Some(6));
    for (n, v) in [
        (7, &b"1123114959"[..]),
        (11, b"000042"),
        (32, b"123456"),
        (37, b"000000000042"),
        (41, b"DEMO0001"),
    ] {
        assert_eq!(field(&f, n), Some(v), "F{n} not echoed: {f:?}");
    }
    assert_eq!(field(&f, 2), None, "card number in the answer");
    let (mti, f) = exchange(
        &mut stream,
        profile,
        "0800",
        &[(7, b"1123114959"), (11, b"000043"), (70, b"301")],
    );
    assert_eq!(mti, "0810");
    assert_eq!(field(&f, 39), Some(&b"00"[..]));
    assert_eq!(field(&f, 11), Some(&b"000043"[..]));
    assert_eq!(field(&f, 70), Some(&b"301"[..]));
}

#[test]
fn pyiso8583_issuer_answers_an_authorization_and_an_echo() {
    if let Some(reason) = missing_python() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "in CI the pyiso8583 issuer must run: {reason}"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    scenario(&Profile::ASCII, "default");
    scenario(&Profile::ASCII_HEX, "default_ascii");
}
