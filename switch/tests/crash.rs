//! Crash tests: kill -9 the switch at random points under pipelined load
//! (durable acknowledgement), restart it on the same data directory, and
//! check that every acknowledged change is there: a repeat of each
//! acknowledged sale gets the very same answer, and a capture of each
//! acknowledged capture's pre-authorization is refused as already
//! captured. Also a PCI check: no PAN or track data of the run in the
//! data directory or the logs.
//!
//! Runs `SWITCH_CRASH_RUNS` rounds (20 by default; `scripts/crash-loop.sh`
//! runs many more), each reproducible from the seed it prints.

mod common;

use std::collections::HashMap;
use std::process::Child;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

struct Proc {
    child: Child,
    iso: std::net::SocketAddr,
    log: std::path::PathBuf,
}

fn spawn(dir: &std::path::Path, run: usize, life: usize, attempt: usize) -> Proc {
    let log = dir.join(format!("switch-{run}-{life}-{attempt}.log"));
    let (mut command, iso) = switch_command(dir);
    let child = command
        .env("SWITCH_LOG", "debug")
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("switch starts");
    Proc { child, iso, log }
}

/// Starts the switch and connects to it. A port picked by `free_port` can
/// be taken by another socket (one of this test's own connections) before
/// the switch binds it; the switch then exits, and it is started again
/// with new ports, at most `START_ATTEMPTS_MAX` times.
async fn start(dir: &std::path::Path, run: usize, life: usize) -> (Proc, Client) {
    for attempt in 0..START_ATTEMPTS_MAX {
        let mut p = spawn(dir, run, life, attempt);
        if let Some(c) = connect(&mut p).await {
            return (p, c);
        }
        eprintln!(
            "switch exited before listening, starting it again; see {}",
            p.log.display()
        );
    }
    panic!("switch did not start in {START_ATTEMPTS_MAX} attempts (run {run}, life {life})");
}

/// Starts of one switch life before the test gives up.
const START_ATTEMPTS_MAX: usize = 5;

/// A client of `p` once it listens; `None` if it exited first.
async fn connect(p: &mut Proc) -> Option<Client> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(p.iso).await.is_ok() {
            return Some(Client::connect(p.iso).await);
        }
        if matches!(p.child.try_wait(), Ok(Some(_))) {
            return None;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "switch did not start; see {}",
            p.log.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_kill_9() {
    let runs: usize = std::env::var("SWITCH_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("SWITCH_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("crash test: {runs} runs, SWITCH_CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let dir = data_dir();
    let mut pans_used = Vec::new();
    let mut acked_sales: HashMap<String, (Req, Resp)> = HashMap::new();
    let mut acked_captures: Vec<Req> = Vec::new();
    for run in 0..runs {
        let t0 = std::time::Instant::now();
        let (mut p, mut c) = start(&dir, run, 0).await;
        // A pre-authorization and its capture, acknowledged before the load.
        let pan = card(rng.next() % 1_000_000_000);
        pans_used.push(pan.clone());
        let auth = preauth(&pan, 1_000).set(7, "1123120000");
        assert_eq!(c.call(&auth).await.code(), "00");
        let cap = capture(&auth, 1_100);
        assert_eq!(c.call(&cap).await.code(), "00");
        acked_captures.push(auth.clone());
        // Pipelined sales on a second connection; answers read as they come.
        let raw = tokio::net::TcpStream::connect(p.iso)
            .await
            .expect("connect");
        let (rd, mut wr) = raw.into_split();
        let count = 200 + (rng.next() % 800) as usize;
        let sales: Vec<Req> = (0..count)
            .map(|i| {
                let pan = card(rng.next() % 1_000_000_000);
                pans_used.push(pan.clone());
                let s = sale(&pan, 100 + i as u64);
                // Some sales carry track 2 instead of F2 and F14.
                if i % 7 == 0 {
                    s.unset(2)
                        .unset(14)
                        .set(35, format!("{pan}=28121010000012345678"))
                } else {
                    s
                }
            })
            .collect();
        let mut wire = Vec::new();
        for s in &sales {
            let body = s.encode();
            wire.extend_from_slice(&(body.len() as u16).to_be_bytes());
            wire.extend_from_slice(&body);
        }
        let by_stan: HashMap<String, Req> = sales
            .iter()
            .map(|s| {
                (
                    String::from_utf8_lossy(&s.fields[&11]).into_owned(),
                    s.clone(),
                )
            })
            .collect();
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(&wire).await;
            wr
        });
        let mut framed = tokio_util::codec::FramedRead::new(
            rd,
            codecs::framing::FrameCodec::new(Default::default()),
        );
        let kill_after = Duration::from_micros(5_000 + rng.next() % 95_000);
        let killer = tokio::time::sleep(kill_after);
        tokio::pin!(killer);
        loop {
            tokio::select! {
                () = &mut killer => break,
                f = framed.next() => match f {
                    Some(Ok(frame)) => {
                        let m = codecs::iso8583::Message::decode(&codecs::iso8583::Profile::ASCII, &frame.body).expect("decodes");
                        let stan = String::from_utf8_lossy(m.raw(11).unwrap_or_default()).into_owned();
                        let resp = Resp { mti: m.mti().to_string(), fields: m.fields().map(|(n, v)| (n, v.to_vec())).collect() };
                        assert_eq!(resp.code(), "00");
                        acked_sales.insert(stan.clone(), (by_stan[&stan].clone(), resp));
                    }
                    _ => break,
                }
            }
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
        drop(writer);
        // Restart and check everything acknowledged so far, across all runs.
        let t1 = t0.elapsed();
        let (mut p2, mut c) = start(&dir, run, 1).await;
        let t2 = t0.elapsed();
        for (stan, (req, resp)) in &acked_sales {
            let again = c.call(&req.clone().mti("0201")).await;
            assert_eq!(
                (again.code(), again.text(37), again.text(38)),
                (resp.code(), resp.text(37), resp.text(38)),
                "run {run} (seed {seed}): acknowledged sale {stan} lost or changed"
            );
        }
        for auth in &acked_captures {
            let code = c.call(&capture(auth, 1_000)).await.code();
            assert_eq!(
                code, "12",
                "run {run} (seed {seed}): an acknowledged capture was lost"
            );
        }
        let _ = p2.child.kill();
        let _ = p2.child.wait();
        eprintln!(
            "run {run}: load {t1:?}, restart {:?}, check {:?}",
            t2 - t1,
            t0.elapsed() - t2
        );
    }
    // PCI: no PAN of the run and no track data in the data directory or
    // logs. One pass per file: every 16-digit window inside a digit run is
    // looked up among the PANs used.
    let pans: std::collections::HashSet<&[u8]> = pans_used.iter().map(|p| p.as_bytes()).collect();
    let mut files = vec![dir.clone()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("read dir")
                    .map(|e| e.expect("entry").path()),
            );
            continue;
        }
        let bytes = std::fs::read(&path).expect("read file");
        scanned += bytes.len();
        for run in bytes
            .split(|b| !b.is_ascii_digit())
            .filter(|r| r.len() >= 16)
        {
            assert!(
                !run.windows(16).any(|w| pans.contains(w)),
                "clear PAN in {}",
                path.display()
            );
        }
        assert!(
            !bytes.windows(12).any(|w| w == b"=28121010000"),
            "track data in {}",
            path.display()
        );
    }
    assert!(scanned > 0);
    eprintln!(
        "crash test: {} acknowledged sales and {} captures survived {runs} kill -9s",
        acked_sales.len(),
        acked_captures.len()
    );
}
