//! The switch binary as a child process, for tests that kill it (kill -9,
//! SIGTERM) and start it again on the same data directory: starting it on
//! fresh ports, reading its metrics, and pipelined load against it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{http_get, switch_command_addrs, Client, Req, Resp, TIMEOUT};

/// Starts of one switch life before a test gives up.
pub const START_ATTEMPTS_MAX: usize = 5;
/// Requests in flight on one connection while checking: below the
/// switch's `limits.inflight_per_connection_max` (256 by default), so
/// none waits on the switch's side.
pub const CHECK_INFLIGHT_MAX: usize = 128;
/// Bound on a clean stop (SIGTERM to exit): the switch's drain timeout
/// (5 s by default) and the journal's close, with room.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two polls of a condition.
pub const POLL_PAUSE: Duration = Duration::from_millis(20);

/// How to start the switch: its data directory, configuration and logs.
pub struct Launch<'a> {
    /// `--data-dir`.
    pub dir: &'a Path,
    /// `--config`; the embedded default when `None`.
    pub config: Option<&'a Path>,
    /// Where each life's log goes (`switch-<label>-<attempt>.log`).
    pub logs: &'a Path,
    /// `SWITCH_LOG`.
    pub log_level: &'a str,
}

/// A switch process started by a test; killed (-9) when dropped still
/// running, so a failing test leaves no process behind.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its ISO 8583 listener.
    pub iso: SocketAddr,
    /// Its internal-frame listener.
    pub frame: SocketAddr,
    /// Its HTTP listener (/metrics, /readyz).
    pub http: SocketAddr,
    /// Its log file (stderr).
    pub log: PathBuf,
}

impl Launch<'_> {
    /// Spawns the switch on fresh loopback ports.
    pub fn spawn(&self, label: &str, attempt: usize) -> Proc {
        let log = self.logs.join(format!("switch-{label}-{attempt}.log"));
        let (mut command, iso, frame, http) = switch_command_addrs(self.dir);
        if let Some(config) = self.config {
            command.arg("--config").arg(config);
        }
        let child = command
            .env("SWITCH_LOG", self.log_level)
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("switch starts");
        Proc {
            child,
            iso,
            frame,
            http,
            log,
        }
    }

    /// Starts the switch and connects to it. A port picked by `free_port`
    /// can be taken by another socket (one of this test's own
    /// connections) before the switch binds it; the switch then exits,
    /// and it is started again with new ports, at most
    /// [`START_ATTEMPTS_MAX`] times.
    pub async fn start(&self, label: &str) -> (Proc, Client) {
        for attempt in 0..START_ATTEMPTS_MAX {
            let mut p = self.spawn(label, attempt);
            if let Some(c) = p.connect().await {
                return (p, c);
            }
            eprintln!(
                "switch exited before listening, starting it again; see {}",
                p.log.display()
            );
        }
        panic!("switch did not start in {START_ATTEMPTS_MAX} attempts ({label})");
    }
}

impl Proc {
    /// A client once it listens; `None` if it exited first.
    pub async fn connect(&mut self) -> Option<Client> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            // HTTP is bound last: once it answers, every listener is (the
            // ISO port alone answering let a switch that then failed to
            // bind HTTP, its port taken meanwhile, count as started).
            // The HTTP port can answer for another socket that took it
            // (this switch then failed to bind it and is exiting): the ISO
            // port must answer too, from a switch still running.
            if tokio::net::TcpStream::connect(self.http).await.is_ok()
                && tokio::net::TcpStream::connect(self.iso).await.is_ok()
                && matches!(self.child.try_wait(), Ok(None))
            {
                return Some(Client::connect(self.iso).await);
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "switch did not start; see {}",
                self.log.display()
            );
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// kill -9, and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then its exit status; panics (after kill -9) when it has
    /// not exited within [`STOP_TIMEOUT`].
    pub async fn stop(&mut self) -> ExitStatus {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM runs");
        assert!(sent.success(), "kill -TERM {}", self.child.id());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill9();
                panic!(
                    "the switch did not stop within {STOP_TIMEOUT:?} of SIGTERM; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// The sum of every series of metric `name` (all label values, or
    /// the ones `name` spells: `name{label="value"}`); 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        metric_sum(&http_get(self.http, "/metrics").await.1, name).unwrap_or(0.0)
    }

    /// Polls `/metrics` until metric `name` is published and `holds` of
    /// its sum, at most `bound`; the last value.
    pub async fn wait_metric(
        &self,
        name: &str,
        bound: Duration,
        holds: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + bound;
        loop {
            let value = metric_sum(&http_get(self.http, "/metrics").await.1, name);
            if let Some(v) = value.filter(|v| holds(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is {value:?} after {bound:?}; see {}",
                self.log.display()
            );
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            self.kill9();
        }
    }
}

/// The sum of every series of metric `name` in a Prometheus text body;
/// `None` when it has none.
pub fn metric_sum(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .reduce(|a, b| a + b)
}

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        lo + self.next() % (hi - lo)
    }
}

/// Environment variable `name` as a number, `default` when unset or not
/// a number.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `SWITCH_CRASH_SEED`, or one from the clock (printed by the callers).
pub fn crash_seed() -> u64 {
    std::env::var("SWITCH_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// `reqs` framed as the switch reads them (binary2 length headers).
pub fn wire(reqs: &[Req]) -> Vec<u8> {
    let mut wire = Vec::new();
    for r in reqs {
        let body = r.encode();
        wire.extend_from_slice(&(body.len() as u16).to_be_bytes());
        wire.extend_from_slice(&body);
    }
    wire
}

/// F11 of a request or answer.
pub fn stan_of(fields: &std::collections::BTreeMap<u8, Vec<u8>>) -> String {
    String::from_utf8_lossy(fields.get(&11).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

/// Writes all of `reqs` at once on a new connection to `iso` and reads
/// answers until `window` has passed (or the connection ends): the
/// answers read, each with its request (matched by STAN). The caller
/// kills the switch right after, so some requests are read and not
/// answered, some not even read.
pub async fn pipeline_for(iso: SocketAddr, reqs: &[Req], window: Duration) -> Vec<(Req, Resp)> {
    let by_stan: HashMap<String, &Req> = reqs.iter().map(|r| (stan_of(&r.fields), r)).collect();
    let raw = tokio::net::TcpStream::connect(iso).await.expect("connect");
    let (rd, mut wr) = raw.into_split();
    let bytes = wire(reqs);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        wr
    });
    let mut framed = tokio_util::codec::FramedRead::new(
        rd,
        codecs::framing::FrameCodec::new(Default::default()),
    );
    let mut answered = Vec::new();
    let killer = tokio::time::sleep(window);
    tokio::pin!(killer);
    loop {
        tokio::select! {
            () = &mut killer => break,
            f = framed.next() => match f {
                Some(Ok(frame)) => {
                    let resp = decode(&frame.body);
                    let req = by_stan.get(&stan_of(&resp.fields)).expect("an answer to a request sent");
                    answered.push(((*req).clone(), resp));
                }
                _ => break,
            }
        }
    }
    // Not aborted: the writer's half of the connection stays open until
    // the kill (a close now would tell the switch the load is over).
    drop(writer);
    answered
}

/// Sends every request of `reqs` on `client`, at most
/// [`CHECK_INFLIGHT_MAX`] in flight, and returns the answers in the
/// order of `reqs` (matched by STAN; each within [`TIMEOUT`]).
pub async fn pipeline_all(client: &mut Client, reqs: &[Req]) -> Vec<Resp> {
    let mut out = Vec::with_capacity(reqs.len());
    for chunk in reqs.chunks(CHECK_INFLIGHT_MAX) {
        for r in chunk {
            client.send_raw(&r.encode()).await;
        }
        let mut by_stan = HashMap::new();
        for _ in chunk {
            let resp = client.recv().await.expect("an answer");
            by_stan.insert(stan_of(&resp.fields), resp);
        }
        for r in chunk {
            let resp = by_stan
                .remove(&stan_of(&r.fields))
                .expect("an answer for each request");
            out.push(resp);
        }
    }
    out
}

/// An ISO 8583 answer as the tests read it.
pub fn decode(body: &[u8]) -> Resp {
    let m = codecs::iso8583::Message::decode(&codecs::iso8583::Profile::ASCII, body)
        .expect("an answer decodes");
    Resp {
        mti: m.mti().to_string(),
        fields: m.fields().map(|(n, v)| (n, v.to_vec())).collect(),
    }
}

/// `switch default-config`: the embedded configuration, as a TOML table
/// a test edits and writes with [`write_config`].
pub fn default_config() -> toml::Table {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .arg("default-config")
        .output()
        .expect("switch default-config runs");
    assert!(out.status.success(), "switch default-config failed");
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .parse()
        .expect("the default configuration parses")
}

/// Sets `section.key` of a configuration table.
pub fn set(config: &mut toml::Table, section: &str, key: &str, value: impl Into<toml::Value>) {
    config
        .get_mut(section)
        .and_then(toml::Value::as_table_mut)
        .unwrap_or_else(|| panic!("section [{section}] in the default configuration"))
        .insert(key.to_owned(), value.into());
}

/// Writes `config` to `path`.
pub fn write_config(config: &toml::Table, path: &Path) {
    std::fs::write(path, toml::to_string(config).expect("serializes")).expect("config written");
}

/// Runs `f` on a thread of its own: the PostgreSQL client blocks on a
/// runtime of its own, which tokio forbids inside the test's.
pub fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().expect("no panic"))
}
