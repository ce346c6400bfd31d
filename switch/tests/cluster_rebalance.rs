//! Shards moving between live nodes under load (`docs/cluster.md`,
//! Rebalancing, joins, drains), on a real etcd and PostgreSQL with switch
//! processes: a third node joins two serving mixed traffic on every shard
//! and takes its shards by hand-over; a node of three is drained by
//! SIGTERM and hands every shard over before it exits. In both, every
//! request is answered (a request whose connection closed as its node
//! stopped is sent again through another node, as a terminal would), every
//! answer is an approval (no 91: a request of a shard being handed over
//! waits and is routed again), a repeat of every approved message through
//! any node afterwards gets the original answer, PostgreSQL holds each
//! approved change exactly once, no batch is fenced, and the moved shards
//! are served by their new owners. The gap each moved shard had no server
//! (old owner closed it, new owner served it, from the two nodes' logs) is
//! printed.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nodes::*;
use common::*;

/// Bound on the shards settling where rendezvous hashing puts them.
const SETTLE_BOUND: Duration = Duration::from_secs(30);
/// Bound on one moved shard's gap (closed by its old owner to served by
/// the new one): a hand-over is a commit, the next owner's poll (woken by
/// its etcd watch, else within 500 ms) and a load;
/// a takeover after a lease expiry would be 3 s or more. Generous for a
/// busy 2-core machine; the measured gaps are printed.
const GAP_BOUND: Duration = Duration::from_millis(2_500);

/// Held by each test for its whole run: this binary's tests run one after
/// another. Each starts its own etcd, PostgreSQL and three switch nodes
/// under load; three at once on 2 cores starved hand-overs past their
/// bounds (a CI run once answered 4 requests 91 in the drain test).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts node `node_id` with the per-shard merchants `extra`.
async fn start(dir: &Path, url: &str, etcd: &str, node_id: &str, extra: &str) -> Proc {
    launch_node(dir, url, etcd, node_id, extra).await.0
}

/// The shards rendezvous hashing gives `node` among `names`.
fn desired(node: &str, names: &[&str]) -> Vec<u32> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    (0..SHARDS)
        .filter(|&s| cluster::assign::owner(cluster::assign::SALT_PAYMENT, s, &names) == Some(node))
        .collect()
}

/// Waits until etcd names, for every shard, the owner rendezvous hashing
/// gives among `nodes`, and each node serves exactly what it owns.
async fn wait_settled(etcd: &str, nodes: &[(&str, &Proc)]) {
    let names: Vec<&str> = nodes.iter().map(|n| n.0).collect();
    let client =
        cluster::etcd::Etcd::new(&[etcd.to_owned()], Duration::from_secs(1)).expect("client");
    let deadline = Instant::now() + SETTLE_BOUND;
    loop {
        let view = cluster::member::read_view(&client, "/switch/test", SHARDS)
            .await
            .expect("view");
        let mut settled = true;
        for (name, proc) in nodes {
            let want = desired(name, &names);
            let owners_ok = want.iter().all(|s| {
                view.owners
                    .get(s)
                    .is_some_and(|o| o.record.node_id == *name)
            });
            let served = proc.metric("switch_cluster_served_shards").await;
            settled &= owners_ok && served == want.len() as f64;
        }
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shards not settled on {names:?} within {SETTLE_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `workers` mixed-load workers through `addrs` (worker w first
/// through `addrs[w % len]`), numbered from `first_worker`.
fn spawn_load(
    addrs: &[SocketAddr],
    first_worker: u64,
    workers: u64,
    merchants: &Arc<Vec<(String, String)>>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Worked>> {
    (first_worker..first_worker + workers)
        .map(|w| {
            tokio::spawn(mixed_worker(
                addrs.to_vec(),
                (w % addrs.len() as u64) as usize,
                w,
                merchants.clone(),
                stop.clone(),
            ))
        })
        .collect()
}

/// Stops the load and gathers what every worker did.
async fn gather(
    stop: &AtomicBool,
    workers: Vec<tokio::task::JoinHandle<Worked>>,
) -> (Vec<Answered>, usize) {
    stop.store(true, Ordering::Relaxed);
    let (mut answered, mut resent) = (Vec::new(), 0);
    for w in workers {
        let worked = w.await.expect("a worker");
        answered.extend(worked.answered);
        resent += worked.resent;
    }
    (answered, resent)
}

/// Every answer is an approval: none refused (91), none declined.
fn all_approved(url: &str, answered: &[Answered]) {
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut other = Vec::new();
    for (req, resp, payment) in answered {
        *codes.entry(resp.code()).or_default() += 1;
        if resp.code() != "00" {
            // A follow-up refused: what PostgreSQL holds of its payment.
            if req.mti != "0100" && req.mti != "0200" {
                eprintln!(
                    "{} answered {}: its payment's F37 {} F38 {}; records: {}",
                    req.mti,
                    resp.code(),
                    payment.text(37),
                    payment.text(38),
                    records_naming(
                        url,
                        payment.text(37).as_bytes(),
                        payment.text(38).as_bytes()
                    )
                );
            }
            let f42 = String::from_utf8_lossy(&req.fields[&42]).into_owned();
            let shard = cluster::assign::shard_of_merchant(f42.as_bytes(), SHARDS);
            other.push((req.mti, shard, resp.code()));
        }
    }
    assert_eq!(
        codes.keys().collect::<Vec<_>>(),
        vec!["00"],
        "answers by code: {codes:?}; not approved (MTI, shard, code): {other:?}"
    );
}

/// A repeat of every answered message through `addrs` in turn (one
/// connection per address, concurrently) gets the original answer: the
/// same F39, F38 and F37.
async fn repeats_agree(addrs: &[SocketAddr], answered: &[Answered]) {
    let mut tasks = Vec::new();
    for (k, addr) in addrs.iter().enumerate() {
        let mine: Vec<(Req, Resp)> = answered
            .iter()
            .skip(k)
            .step_by(addrs.len())
            .map(|(req, resp, _)| (req.clone(), resp.clone()))
            .collect();
        let addr = *addr;
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await;
            for (req, first) in mine {
                let again = client.call(&req).await;
                let fields = |r: &Resp| (r.code(), r.text(38), r.text(37));
                assert_eq!(
                    fields(&again),
                    fields(&first),
                    "a repeat of {} through {addr} answered differently",
                    req.mti
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("repeats");
    }
}

/// PostgreSQL holds each approved change once: one record per approval
/// (every answer is one, [`all_approved`]), each approved payment found
/// once by its F37 + F38 (a capture's payment captured), and no record
/// committed twice.
fn each_change_once(url: &str, answered: &[Answered]) {
    assert_eq!(
        count(url, PAYMENT_RECORDS),
        answered.len() as i64,
        "records against approved changes"
    );
    approvals_in_postgresql_once(url, answered.iter());
}

/// No node had a batch fenced or a hand-over given up.
async fn no_fence_no_reopen(nodes: &[Proc]) {
    assert_eq!(
        sum_metric(
            nodes,
            "switch_cluster_commit_failures_total{reason=\"fenced\"}"
        )
        .await,
        0.0,
        "a batch was fenced"
    );
    assert_eq!(
        sum_metric(nodes, "switch_cluster_handovers_total{step=\"reopened\"}").await,
        0.0,
        "a hand-over was given up"
    );
}

/// A log line's time of day in seconds (`…T22:25:01.123456Z …`), and the
/// line without its colour codes.
fn timed(line: &str) -> Option<(f64, String)> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let time = plain.split_whitespace().next()?.split_once('T')?.1;
    let time = time.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some((h * 3_600.0 + m * 60.0 + s, plain))
}

/// The times at which `log` says `what` of each shard (`shard=N`).
fn shard_times(log: &Path, what: &str) -> Vec<(u32, f64)> {
    let text = std::fs::read_to_string(log).expect("a log");
    text.lines()
        .filter_map(timed)
        .filter(|(_, l)| l.contains(what))
        .filter_map(|(t, l)| {
            let n = l.split("shard=").nth(1)?;
            let n: String = n.chars().take_while(char::is_ascii_digit).collect();
            Some((n.parse().ok()?, t))
        })
        .collect()
}

/// For each shard of `moved`: from its last hand-over in `from`'s logs to
/// the first load after it in one of `to`'s logs, in s (the gap with no
/// node serving it).
fn gaps(from: &[&Path], to: &[&Path], moved: &[u32]) -> Vec<(u32, f64)> {
    let closed: Vec<(u32, f64)> = from
        .iter()
        .flat_map(|l| shard_times(l, "shard handed over"))
        .collect();
    let loaded: Vec<(u32, f64)> = to
        .iter()
        .flat_map(|l| shard_times(l, "shard loaded and served"))
        .collect();
    moved
        .iter()
        .map(|&s| {
            let t0 = closed
                .iter()
                .filter(|c| c.0 == s)
                .map(|c| c.1)
                .fold(f64::NAN, f64::max);
            assert!(!t0.is_nan(), "shard {s} never handed over");
            let mut gap = loaded
                .iter()
                .filter(|l| l.0 == s)
                .map(|l| {
                    let d = l.1 - t0;
                    // Across midnight.
                    if d < -43_200.0 {
                        d + 86_400.0
                    } else {
                        d
                    }
                })
                .filter(|d| *d >= -0.001)
                .fold(f64::INFINITY, f64::min);
            if gap < 0.0 {
                gap = 0.0;
            }
            (s, gap)
        })
        .collect()
}

/// `/readyz` of the node at `addr`, whole; `None` once it is gone.
async fn readyz(addr: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(out)
}

/// Prints and bounds the gaps.
/// Prints the card velocity asks that found no owner or no answer in time
/// (each an answer 91), for a failure's diagnosis.
async fn velocity_asks_unanswered(nodes: &[Proc]) {
    eprintln!(
        "card velocity asks: {} found no owner within 1.5 s, {} not answered in time",
        sum_metric(
            nodes,
            "switch_cluster_velocity_asks_total{outcome=\"no_owner\"}"
        )
        .await,
        sum_metric(
            nodes,
            "switch_cluster_velocity_asks_total{outcome=\"timeout\"}"
        )
        .await,
    );
}

fn report_gaps(what: &str, gaps: &[(u32, f64)]) {
    let max = gaps.iter().map(|g| g.1).fold(0.0, f64::max);
    let mean = gaps.iter().map(|g| g.1).sum::<f64>() / gaps.len().max(1) as f64;
    eprintln!(
        "{what}: {} shards moved; unserved gap mean {:.0} ms, max {:.0} ms: {gaps:?}",
        gaps.len(),
        mean * 1_000.0,
        max * 1_000.0
    );
    assert!(
        max < GAP_BOUND.as_secs_f64(),
        "{what}: a shard unserved {max:.3} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_under_load_takes_its_shards_by_hand_over_with_no_answer_lost_or_changed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (etcd, pg, url) = services("cluster_join");
    let dir = data_dir();
    let merchants = Arc::new(merchant_per_shard());
    let extra = merchants_toml(&merchants);
    let n1 = start(&dir, &url, etcd.url(), "n1", &extra).await;
    let n2 = start(&dir, &url, etcd.url(), "n2", &extra).await;
    wait_settled(etcd.url(), &[("n1", &n1), ("n2", &n2)]).await;

    // Mixed load on every shard through both nodes.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = spawn_load(&[n1.iso, n2.iso], 0, 4, &merchants, &stop);
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // n3 joins under the load; about a third of the shards move to it.
    let joined = Instant::now();
    let n3 = start(&dir, &url, etcd.url(), "n3", &extra).await;
    wait_settled(etcd.url(), &[("n1", &n1), ("n2", &n2), ("n3", &n3)]).await;
    eprintln!("joined and settled in {:?}", joined.elapsed());
    workers.extend(spawn_load(
        &[n3.iso, n1.iso, n2.iso],
        4,
        2,
        &merchants,
        &stop,
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (answered, resent) = gather(&stop, workers).await;

    let all = ["n1", "n2", "n3"];
    let moved = desired("n3", &all);
    assert!(moved.len() >= 3, "{moved:?}");
    let nodes = [n1, n2, n3];
    eprintln!(
        "{} answers, {resent} sent again; forwarded: {} answered, {} routed again (not served), {} refused",
        answered.len(),
        sum_metric(&nodes, "switch_cluster_forwarded_total{outcome=\"answered\"}").await,
        sum_metric(&nodes, "switch_cluster_forwarded_total{outcome=\"not_served\"}").await,
        sum_metric(&nodes, "switch_cluster_forwarded_total{outcome=\"refused\"}").await,
    );
    velocity_asks_unanswered(&nodes).await;
    // First, so that a failure below comes with them.
    let join_gaps = gaps(&[&nodes[0].log, &nodes[1].log], &[&nodes[2].log], &moved);
    report_gaps("join", &join_gaps);
    assert_eq!(resent, 0, "no connection closed");
    all_approved(&url, &answered);
    assert!(answered.len() > 300, "{} answers", answered.len());
    no_fence_no_reopen(&nodes).await;
    // n3 loaded exactly its shards; their old owners handed them over.
    assert_eq!(
        nodes[2].metric("switch_cluster_loads_total").await,
        moved.len() as f64
    );

    repeats_agree(&[nodes[0].iso, nodes[1].iso, nodes[2].iso], &answered).await;
    each_change_once(&url, &answered);
    drop((nodes, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_drained_by_sigterm_under_load_hands_every_shard_over_before_it_exits() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (etcd, pg, url) = services("cluster_drain");
    let dir = data_dir();
    let merchants = Arc::new(merchant_per_shard());
    let extra = merchants_toml(&merchants);
    let n1 = start(&dir, &url, etcd.url(), "n1", &extra).await;
    let n2 = start(&dir, &url, etcd.url(), "n2", &extra).await;
    let mut n3 = start(&dir, &url, etcd.url(), "n3", &extra).await;
    wait_settled(etcd.url(), &[("n1", &n1), ("n2", &n2), ("n3", &n3)]).await;
    let owned = desired("n3", &["n1", "n2", "n3"]);

    // Mixed load on every shard, two workers through each node.
    let stop = Arc::new(AtomicBool::new(false));
    let workers = spawn_load(&[n1.iso, n2.iso, n3.iso], 0, 6, &merchants, &stop);
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // SIGTERM: n3 hands every shard over, then stops; meanwhile its
    // /readyz says it is draining (503).
    let http = n3.http;
    let watch = tokio::spawn(async move {
        let mut saw_draining = false;
        while let Some(answer) = readyz(http).await {
            saw_draining |= answer.starts_with("HTTP/1.1 503") && answer.contains("draining");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        saw_draining
    });
    let drained = Instant::now();
    let status = n3.stop().await;
    let exited = drained.elapsed();
    assert!(status.success(), "n3 exited {status:?}");
    assert!(
        watch.await.expect("the /readyz watch"),
        "n3's /readyz never said draining"
    );
    wait_settled(etcd.url(), &[("n1", &n1), ("n2", &n2)]).await;
    eprintln!(
        "n3 exited {exited:?} after SIGTERM; settled {:?} after it",
        drained.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (answered, resent) = gather(&stop, workers).await;

    let log = std::fs::read_to_string(&n3.log).expect("n3's log");
    assert!(
        log.contains("drained: every shard handed over"),
        "n3 did not drain: {}",
        n3.log.display()
    );
    assert!(
        !log.contains("not committed in time"),
        "{}",
        n3.log.display()
    );
    let drain_ms = log
        .lines()
        .filter_map(timed)
        .find(|(_, l)| l.contains("drained: every shard handed over"))
        .and_then(|(_, l)| l.split("elapsed_ms=").nth(1).map(str::to_owned))
        .unwrap_or_default();
    eprintln!("n3's drain took {drain_ms} ms");
    let nodes = [n1, n2];
    eprintln!(
        "{} answers, {resent} sent again after n3 closed their connection; forwarded: {} answered, {} routed again (not served), {} refused",
        answered.len(),
        sum_metric(&nodes, "switch_cluster_forwarded_total{outcome=\"answered\"}").await,
        sum_metric(&nodes, "switch_cluster_forwarded_total{outcome=\"not_served\"}").await,
        sum_metric(&nodes, "switch_cluster_forwarded_total{outcome=\"refused\"}").await,
    );
    velocity_asks_unanswered(&nodes).await;
    // First, so that a failure below comes with them.
    let drain_gaps = gaps(&[&n3.log], &[&nodes[0].log, &nodes[1].log], &owned);
    report_gaps("drain", &drain_gaps);
    all_approved(&url, &answered);
    assert!(answered.len() > 300, "{} answers", answered.len());
    no_fence_no_reopen(&nodes).await;

    repeats_agree(&[nodes[0].iso, nodes[1].iso], &answered).await;
    each_change_once(&url, &answered);
    drop((nodes, n3, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `switch cluster drain` against the test cluster's etcd, its output.
fn drain_command(etcd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .args([
            "cluster",
            "drain",
            "--etcd",
            etcd,
            "--prefix",
            "/switch/test",
        ])
        .args(args)
        .output()
        .expect("switch cluster drain runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_cluster_drain_moves_every_shard_off_a_running_node_until_undone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (etcd, pg, url) = services("cluster_drain_command");
    let dir = data_dir();
    let n1 = start(&dir, &url, etcd.url(), "n1", "").await;
    let n2 = start(&dir, &url, etcd.url(), "n2", "").await;
    wait_settled(etcd.url(), &[("n1", &n1), ("n2", &n2)]).await;
    let pre = preauth(&card(77), 1_000);
    let mut via_n2 = Client::connect(n2.iso).await;
    let approved = via_n2.call(&pre).await;
    assert_eq!(approved.code(), "00", "{approved:?}");

    // Drained: n2 owns nothing and says so on /readyz, but still answers
    // as an entry node (the repeat goes to n1, which has every shard).
    let etcd_url = etcd.url().to_owned();
    let out = off_runtime(|| drain_command(&etcd_url, &["n2", "--wait"]));
    assert!(out.contains("n2: owns no shard"), "{out}");
    wait_settled(etcd.url(), &[("n1", &n1)]).await;
    assert_eq!(n2.metric("switch_cluster_served_shards").await, 0.0);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = readyz(n2.http).await.expect("n2 runs");
        if answer.starts_with("HTTP/1.1 503") && answer.contains("draining") {
            break;
        }
        assert!(Instant::now() < deadline, "n2's /readyz: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = via_n2.call(&pre).await;
    assert_eq!(
        (again.code(), again.text(38), again.text(37)),
        (approved.code(), approved.text(38), approved.text(37))
    );

    // Undone: n2 is active again and gets its shards back.
    let out = off_runtime(|| drain_command(&etcd_url, &["n2", "--undo"]));
    assert!(out.contains("drain ended"), "{out}");
    wait_settled(etcd.url(), &[("n1", &n1), ("n2", &n2)]).await;
    let answer = readyz(n2.http).await.expect("n2 runs");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(count(&url, PAYMENT_RECORDS), 1);
    drop((n1, n2, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}
