//! A test harness: a switch on loopback ports with a manual clock and its
//! own data directory, and a pipelining client built on the project's codec.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use codecs::framing::{Frame, FrameCodec, FrameConfig};
use codecs::iso8583::{Message, MessageWriter, Mti, Profile};
use futures_util::{SinkExt, StreamExt};
use switch::{Clock, Config, Overrides, Running};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub mod nodes;
mod process;
// Not every test target uses the child-process helpers.
#[allow(unused_imports)]
pub use process::*;

/// 2026-11-23T11:49:10Z.
pub const START_MS: u64 = 1_795_434_550_000;
/// Bound on every wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A loopback port free now (for a switch process started with flags).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The switch binary on fresh loopback ports with data directory `dir`,
/// its stdout discarded; the caller adds flags, stderr and environment.
/// Returns the command and the ISO 8583 address it will listen on.
pub fn switch_command(dir: &std::path::Path) -> (std::process::Command, SocketAddr) {
    let (command, iso, _, _) = switch_command_addrs(dir);
    (command, iso)
}

/// As [`switch_command`], with the HTTP address (/metrics, /readyz) too:
/// the command, the ISO 8583, internal-frame and HTTP addresses.
pub fn switch_command_addrs(
    dir: &std::path::Path,
) -> (std::process::Command, SocketAddr, SocketAddr, SocketAddr) {
    let (iso, frame, http) = (free_port(), free_port(), free_port());
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switch"));
    command
        .args(["--iso-addr", &format!("127.0.0.1:{iso}")])
        .args(["--frame-addr", &format!("127.0.0.1:{frame}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(dir)
        .stdout(std::process::Stdio::null());
    let addr = format!("127.0.0.1:{iso}").parse().expect("addr");
    let frame = format!("127.0.0.1:{frame}").parse().expect("addr");
    let http = format!("127.0.0.1:{http}").parse().expect("addr");
    (command, addr, frame, http)
}

/// A fresh data directory under the system temp dir.
pub fn data_dir() -> PathBuf {
    let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("switch-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A running switch with the embedded default and a manual clock.
pub struct TestSwitch {
    pub running: Option<Running>,
    pub clock: Clock,
    pub iso: SocketAddr,
    pub http: SocketAddr,
    pub frame: SocketAddr,
    pub dir: PathBuf,
}

pub fn local() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().expect("addr"))
}

impl TestSwitch {
    pub async fn start() -> TestSwitch {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> TestSwitch {
        let dir = data_dir();
        Self::start_in(dir, edit).await
    }

    pub async fn start_in(dir: PathBuf, edit: impl FnOnce(&mut Config)) -> TestSwitch {
        let overrides = Overrides {
            iso_addr: local(),
            frame_addr: local(),
            http_addr: local(),
            data_dir: Some(dir.clone()),
            journal_ack: None,
            repair: false,
        };
        let mut config = Config::load(None, overrides).expect("config");
        edit(&mut config);
        let clock = Clock::manual(START_MS);
        let running = switch::start(config, clock.clone()).await.expect("start");
        TestSwitch {
            iso: running.iso_addr,
            http: running.http_addr,
            frame: running.frame_addr,
            running: Some(running),
            clock,
            dir,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.iso).await
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            tokio::time::timeout(TIMEOUT, r.shutdown())
                .await
                .expect("shutdown in time")
                .expect("journal closed cleanly");
        }
    }

    /// GETs a path on the HTTP listener; returns (status line, body).
    pub async fn http_get(&self, path: &str) -> (String, String) {
        http_get(self.http, path).await
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(TIMEOUT, s.read_to_string(&mut out))
        .await
        .expect("in time")
        .expect("read");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// A decoded response: MTI and fields as text (binary as raw bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resp {
    pub mti: String,
    pub fields: BTreeMap<u8, Vec<u8>>,
}

impl Resp {
    pub fn code(&self) -> String {
        self.text(39)
    }

    pub fn text(&self, n: u8) -> String {
        String::from_utf8_lossy(self.fields.get(&n).map(Vec::as_slice).unwrap_or_default())
            .into_owned()
    }
}

/// A request under construction: MTI and fields in any order.
#[derive(Clone, Debug)]
pub struct Req {
    pub mti: &'static str,
    pub fields: BTreeMap<u8, Vec<u8>>,
}

impl Req {
    pub fn new(mti: &'static str) -> Req {
        Req {
            mti,
            fields: BTreeMap::new(),
        }
    }

    pub fn set(mut self, n: u8, v: impl AsRef<[u8]>) -> Req {
        self.fields.insert(n, v.as_ref().to_vec());
        self
    }

    pub fn unset(mut self, n: u8) -> Req {
        self.fields.remove(&n);
        self
    }

    pub fn mti(mut self, mti: &'static str) -> Req {
        self.mti = mti;
        self
    }

    pub fn encode(&self) -> BytesMut {
        let mut buf = BytesMut::new();
        let mut w = MessageWriter::new(
            &mut buf,
            &Profile::ASCII,
            Mti::parse(self.mti).expect("mti"),
        );
        for (n, v) in &self.fields {
            w.field(*n, v).expect("valid field");
        }
        w.finish().expect("fits");
        buf
    }

    /// F90 naming this request as an original.
    pub fn f90(&self) -> String {
        format!(
            "{}{}{}0000000000000000000000",
            self.mti,
            String::from_utf8_lossy(&self.fields[&11]),
            String::from_utf8_lossy(&self.fields[&7])
        )
    }
}

static NEXT_STAN: AtomicU64 = AtomicU64::new(1);

/// A fresh STAN, unique within a test process.
pub fn stan() -> String {
    format!(
        "{:06}",
        NEXT_STAN.fetch_add(1, Ordering::Relaxed) % 1_000_000
    )
}

/// A Luhn-valid test card number from a seed (not the blocklisted one).
pub fn card(seed: u64) -> String {
    let body = format!("411111{:09}", seed % 1_000_000_000);
    let check = codecs::card::luhn_check_digit(body.as_bytes()).expect("a body of digits");
    format!("{body}{}", char::from(check))
}

/// A pre-authorization (0100) of `amount` minor units of EUR.
pub fn preauth(pan: &str, amount: u64) -> Req {
    Req::new("0100")
        .set(2, pan)
        .set(3, "000000")
        .set(4, format!("{amount:012}"))
        .set(7, "1123114910")
        .set(11, stan())
        .set(14, "2812")
        .set(22, "051")
        .set(25, "00")
        .set(41, "DEMO0001")
        .set(42, "DEMO00000000001")
        .set(49, "978")
}

/// A sale (0200, F3 00).
pub fn sale(pan: &str, amount: u64) -> Req {
    preauth(pan, amount).mti("0200")
}

/// A capture (0220) of `original` for `amount`.
pub fn capture(original: &Req, amount: u64) -> Req {
    follow_up("0220", "000000", original, amount)
}

/// A refund (0200, F3 20) of `original` for `amount`.
pub fn refund(original: &Req, amount: u64) -> Req {
    follow_up("0200", "200000", original, amount)
}

/// A reversal (0400) of `original`.
pub fn reversal(original: &Req) -> Req {
    let amount = String::from_utf8_lossy(&original.fields[&4])
        .parse()
        .expect("amount");
    follow_up("0400", "000000", original, amount)
}

fn follow_up(mti: &'static str, f3: &str, original: &Req, amount: u64) -> Req {
    Req::new(mti)
        .set(3, f3)
        .set(4, format!("{amount:012}"))
        .set(7, "1123114911")
        .set(11, stan())
        .set(41, original.fields[&41].clone())
        .set(42, original.fields[&42].clone())
        .set(49, "978")
        .set(90, original.f90())
}

/// A pipelining client over the project's framing.
pub struct Client {
    framed: Framed<TcpStream, FrameCodec>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client::from_stream(stream)
    }

    /// A client over a connected stream (one bound to another address).
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            framed: Framed::new(stream, FrameCodec::new(FrameConfig::default())),
        }
    }

    pub async fn send_raw(&mut self, body: &[u8]) {
        self.framed
            .send(Frame {
                tpdu: None,
                body: bytes::Bytes::copy_from_slice(body),
            })
            .await
            .expect("send");
    }

    pub async fn recv(&mut self) -> Option<Resp> {
        let frame = tokio::time::timeout(TIMEOUT, self.framed.next())
            .await
            .expect("response in time")?
            .ok()?;
        let msg = Message::decode(&Profile::ASCII, &frame.body).expect("response decodes");
        let fields = msg.fields().map(|(n, v)| (n, v.to_vec())).collect();
        Some(Resp {
            mti: msg.mti().to_string(),
            fields,
        })
    }

    /// The next answer within `bound`: `Err(true)` when the connection
    /// closed first, `Err(false)` when none came.
    pub async fn try_recv_within(&mut self, bound: Duration) -> Result<Resp, bool> {
        match tokio::time::timeout(bound, self.framed.next()).await {
            Err(_) => Err(false),
            Ok(None | Some(Err(_))) => Err(true),
            Ok(Some(Ok(frame))) => {
                let msg = Message::decode(&Profile::ASCII, &frame.body).map_err(|_| true)?;
                let fields = msg.fields().map(|(n, v)| (n, v.to_vec())).collect();
                Ok(Resp {
                    mti: msg.mti().to_string(),
                    fields,
                })
            }
        }
    }

    /// Sends and waits for the answer.
    pub async fn call(&mut self, req: &Req) -> Resp {
        self.send_raw(&req.encode()).await;
        self.recv().await.expect("an answer")
    }

    /// Whether the switch closed the connection (within the timeout).
    pub async fn closed(&mut self) -> bool {
        matches!(
            tokio::time::timeout(TIMEOUT, self.framed.next()).await,
            Ok(None | Some(Err(_)))
        )
    }
}

impl Client {
    /// Sends and waits for the answer: `Err(true)` when the connection
    /// closed first (or would not take the request), `Err(false)` when it
    /// stayed open and no answer came within [`TIMEOUT`].
    pub async fn try_call(&mut self, req: &Req) -> Result<Resp, bool> {
        let frame = Frame {
            tpdu: None,
            body: bytes::Bytes::copy_from_slice(&req.encode()),
        };
        if self.framed.send(frame).await.is_err() {
            return Err(true);
        }
        self.try_recv_within(TIMEOUT).await
    }

    /// The next answer within `wait` (longer than [`TIMEOUT`] when the
    /// test waits out a takeover); panics on a close or no answer.
    pub async fn recv_within(&mut self, wait: Duration) -> Resp {
        match self.try_recv_within(wait).await {
            Ok(resp) => resp,
            Err(closed) => panic!("no answer in time (closed: {closed})"),
        }
    }

    /// The next answer, or `None` when the switch closed the connection.
    pub async fn recv_or_close(&mut self) -> Option<Resp> {
        self.try_recv_within(TIMEOUT).await.ok()
    }
}

/// Runs the pyiso8583 script `switch/tests/pyiso/<script>` against the
/// switch at `addr` with `spec`, and returns its JSON lines (one per
/// message it sent and the answer it got).
pub fn pyiso_lines(script: &str, addr: SocketAddr, spec: &str) -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/pyiso")
        .join(script);
    let out = std::process::Command::new("python3")
        .arg(&path)
        .arg(addr.to_string())
        .arg(spec)
        .output()
        .expect("python3 runs (install it, and `pip install pyiso8583`)");
    assert!(
        out.status.success(),
        "pyiso8583 {script} failed (is pyiso8583 installed? `pip install pyiso8583`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// An internal-frame client at `addr`, logged in with key `(id, secret)`
/// within [`TIMEOUT`].
pub async fn frames_client(
    addr: SocketAddr,
    (id, secret): &(String, String),
) -> switch_client::Client {
    tokio::time::timeout(TIMEOUT, switch_client::Client::connect(addr, id, secret))
        .await
        .expect("in time")
        .expect("log-in accepted")
}
