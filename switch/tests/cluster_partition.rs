//! A node cut from etcd while it still reaches PostgreSQL, the other
//! nodes and its clients (the design's `partition`, its etcd half): n1
//! reaches etcd through a TCP proxy the test can cut, n2 directly. Once
//! cut, n1's lease runs out: it serves no shard, its `/readyz` answers 503
//! saying why (so a load balancer moves its clients), and n2 serves every
//! shard, approving each merchant's requests. When the cut heals, n1 joins
//! again, gets shards back and is ready; every merchant's requests through
//! it are approved, and every approval is in PostgreSQL once. And a node
//! paused inside a transaction (after its fences, before its commit) does
//! not keep the survivor from taking its shards: PostgreSQL ends the idle
//! transaction, releasing the fence rows; nor does a fence row held by
//! anything else keep a joining node from its other shards. And the
//! partition between two live nodes (their link cut, etcd fine):
//! requests through one for the other's shards are 91 within the owner
//! wait, each node serves its own, the cut side's `/readyz` names the
//! owner it cannot reach once past a lease and a margin, and all heals.
//! And an etcd outage (every node cut from it, each saying so to the
//! others over the links): every owner keeps serving its shards past its
//! lease (failsafe), ready, until etcd answers again.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use common::nodes::*;
use common::*;

/// A TCP proxy to one address that the test can cut: every connection it
/// carries is closed at once, and new ones are closed as they come, until
/// it is healed.
struct CutProxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// Whether it is cut now.
    cut: watch::Sender<bool>,
    /// Where it connects them (`host:port`), read at each connection.
    target: std::sync::Arc<std::sync::Mutex<String>>,
}

impl CutProxy {
    /// A proxy to `target` (`http://host:port` or `host:port`; empty:
    /// none yet, [`CutProxy::set_target`]).
    async fn start(target: &str) -> CutProxy {
        let target = target.trim_start_matches("http://").to_owned();
        let target = std::sync::Arc::new(std::sync::Mutex::new(target));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, state) = watch::channel(false);
        let to = target.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *state.borrow() {
                    drop(client);
                    continue;
                }
                let target = to.lock().expect("target").clone();
                let mut state = state.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        CutProxy { addr, cut, target }
    }

    /// A proxy to `target` (`host:port`; empty: none yet) that, cut,
    /// closes its connections and its listening socket, so connections
    /// are refused (as from a host that is down or behind a firewall
    /// that rejects) until it is healed and listens again on the same
    /// address.
    async fn refusing(target: &str) -> CutProxy {
        let target = std::sync::Arc::new(std::sync::Mutex::new(target.to_owned()));
        let first = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = first.local_addr().expect("addr");
        let (cut, mut state) = watch::channel(false);
        let to = target.clone();
        tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                let l = match listener.take() {
                    Some(l) => l,
                    None => {
                        if state.wait_for(|cut| !*cut).await.is_err() {
                            return;
                        }
                        match TcpListener::bind(addr).await {
                            Ok(l) => l,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                        }
                    }
                };
                let mut stop = state.clone();
                loop {
                    tokio::select! {
                        accepted = l.accept() => {
                            let Ok((client, _)) = accepted else { break };
                            let target = to.lock().expect("target").clone();
                            let mut state = state.clone();
                            tokio::spawn(async move {
                                let Ok(mut server) = TcpStream::connect(&target).await else {
                                    return;
                                };
                                let mut client = client;
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                    _ = state.wait_for(|cut| *cut) => {}
                                }
                            });
                        }
                        _ = stop.wait_for(|cut| *cut) => break,
                    }
                }
                // Cut: the listening socket goes with `l`.
            }
        });
        CutProxy { addr, cut, target }
    }

    /// Where it connects from now on.
    fn set_target(&self, target: &str) {
        *self.target.lock().expect("target") = target.to_owned();
    }

    /// Its URL as an etcd endpoint.
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts (`true`) or heals (`false`) it.
    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// Polls until `a` serves `x` shards and `b` serves `y`; the time it took.
async fn wait_served(a: &Proc, x: f64, b: &Proc, y: f64, bound: Duration) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let (sa, sb) = (
            a.metric("switch_cluster_served_shards").await,
            b.metric("switch_cluster_served_shards").await,
        );
        if sa == x && sb == y {
            return started.elapsed();
        }
        assert!(started.elapsed() < bound, "served {sa} and {sb}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One pre-authorization of every merchant of `merchants` through
/// `client`, seeds from `seed`: each must be approved.
async fn approve_every_merchant(client: &mut Client, merchants: &[(String, String)], seed: u64) {
    for (k, (f42, f41)) in merchants.iter().enumerate() {
        let pre = preauth(&card(seed + k as u64), 1_000)
            .set(41, f41)
            .set(42, f42);
        let answer = client.call(&pre).await;
        assert_eq!(answer.code(), "00", "{f42}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_etcd_gives_its_shards_up_says_unready_and_rejoins_when_it_heals() {
    let (etcd, pg, url) = services("cluster_etcd_cut");
    let dir = data_dir();
    let proxy = CutProxy::start(etcd.url()).await;
    let merchants = merchant_per_shard();
    let extra = merchants_toml(&merchants);
    let (n1, mut c1) = launch_node(&dir, &url, &proxy.url(), "n1", &extra).await;
    let (n2, mut c2) = launch_node(&dir, &url, etcd.url(), "n2", &extra).await;
    wait_split(&n1, &n2).await;
    let (status, body) = http_get(n1.http, "/readyz").await;
    assert!(status.contains("200"), "{status} {body}");

    // Cut: n1's lease runs out; it serves nothing, and n2 everything.
    proxy.set_cut(true);
    let moved = wait_served(&n1, 0.0, &n2, f64::from(SHARDS), Duration::from_secs(15)).await;
    eprintln!("every shard served by n2 {moved:?} after the cut");
    let (status, body) = http_get(n1.http, "/readyz").await;
    assert!(
        status.contains("503") && body.contains("etcd"),
        "{status} {body}"
    );
    approve_every_merchant(&mut c2, &merchants, 100).await;

    // Healed: n1 joins again, gets shards back, and is ready.
    proxy.set_cut(false);
    wait_split(&n1, &n2).await;
    let started = std::time::Instant::now();
    loop {
        let (status, body) = http_get(n1.http, "/readyz").await;
        if status.contains("200") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    approve_every_merchant(&mut c1, &merchants, 200).await;
    // Every approval once, as a payment of its own.
    assert_eq!(
        count(&url, PAYMENT_RECORDS),
        2 * merchants.len() as i64,
        "payment records"
    );
    drop((n1, n2, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `n1`'s `/readyz` once it holds `holds` of its status and body, at
/// most `bound`; the time it took.
async fn wait_ready(n: &Proc, holds: impl Fn(&str, &str) -> bool, bound: Duration) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let (status, body) = http_get(n.http, "/readyz").await;
        if holds(&status, &body) {
            return started.elapsed();
        }
        assert!(started.elapsed() < bound, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_between_live_nodes_is_91_for_the_far_shards_and_unready_until_it_heals() {
    let (etcd, pg, url) = services("cluster_link_cut");
    let dir = data_dir();
    // n2's link as the other nodes see it (`link_advertise_addr`) is a
    // proxy the test can cut; both nodes keep etcd and PostgreSQL.
    let proxy = CutProxy::refusing("").await;
    let merchants = merchant_per_shard();
    let extra = merchants_toml(&merchants);
    let (n1, mut c1) = launch_node(&dir, &url, etcd.url(), "n1", &extra).await;
    let advertised = format!("link_advertise_addr = \"{}\"\n{extra}", proxy.addr);
    let (n2, mut c2) = launch_node(&dir, &url, etcd.url(), "n2", &advertised).await;
    let config = std::fs::read_to_string(dir.join("n2.toml")).expect("n2's configuration");
    let link = config
        .lines()
        .find_map(|l| l.strip_prefix("link_addr = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("n2's link_addr");
    proxy.set_target(link);
    wait_split(&n1, &n2).await;
    let shards = shard_owners(etcd.url()).await;
    let owners: Vec<&str> = merchants
        .iter()
        .map(|(f42, _)| {
            shards[&cluster::assign::shard_of_merchant(f42.as_bytes(), SHARDS)].as_str()
        })
        .collect();
    let far: Vec<usize> = (0..merchants.len())
        .filter(|&k| owners[k] == "n2")
        .collect();
    assert!(!far.is_empty() && far.len() < merchants.len(), "{owners:?}");
    // Through n1, n2's merchants too, over the advertised address.
    approve_every_merchant(&mut c1, &merchants, 100).await;
    wait_ready(&n1, |s, _| s.contains("200"), Duration::from_secs(5)).await;

    // Cut: requests through n1 for n2's shards are 91 within the owner
    // wait; n1's own shards and n2's own clients are served (with cards
    // each counts itself: a card counted across the cut is 91 too).
    proxy.set_cut(true);
    let cut = std::time::Instant::now();
    // The link sees its connection closed at once; a request written
    // just before would be one of unknown outcome, asked again up to
    // 10 s (`LINKED_WAIT_MAX`), not this case.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut asked = Vec::new();
    for (i, &k) in far.iter().take(3).enumerate() {
        let (f42, f41) = merchants[k].clone();
        let iso = n1.iso;
        asked.push(tokio::spawn(async move {
            let mut c = Client::connect(iso).await;
            let started = std::time::Instant::now();
            let pre = preauth(&card(300 + i as u64), 1_000)
                .set(41, &f41)
                .set(42, &f42);
            (c.call(&pre).await.code().to_owned(), started.elapsed())
        }));
    }
    for k in (0..merchants.len()).filter(|k| owners[*k] == "n1") {
        let (f42, f41) = &merchants[k];
        let pan = card_counted_by(&shards, "n1", 400 + 1_000 * k as u64);
        let pre = preauth(&pan, 1_000).set(41, f41).set(42, f42);
        assert_eq!(c1.call(&pre).await.code(), "00", "{f42}, served by n1");
    }
    for &k in &far {
        let (f42, f41) = &merchants[k];
        let pan = card_counted_by(&shards, "n2", 50_000 + 1_000 * k as u64);
        let pre = preauth(&pan, 1_000).set(41, f41).set(42, f42);
        assert_eq!(c2.call(&pre).await.code(), "00", "{f42}, through n2 itself");
    }
    for a in asked {
        let (code, took) = a.await.expect("a far request");
        assert_eq!(code, "91", "a far shard through the cut link");
        assert!(took < Duration::from_secs(8), "{took:?}");
    }
    // n1 counts the owner it cannot reach once past a lease and a margin
    // (its routes' poll sets the gauge, whether or not `/readyz` is asked),
    // and says so on `/readyz`.
    n1.wait_metric(
        "switch_cluster_unreachable_owners",
        Duration::from_secs(15),
        |v| v == 1.0,
    )
    .await;
    let unready = wait_ready(
        &n1,
        |s, b| s.contains("503") && b.contains("no node link to n2"),
        Duration::from_secs(15),
    )
    .await;
    eprintln!("n1 unready {:?} after the cut", cut.elapsed());
    assert!(
        cut.elapsed() >= Duration::from_secs(5),
        "{unready:?}: not before 5 s"
    );
    assert_eq!(n1.metric("switch_cluster_unreachable_owners").await, 1.0);
    let (status, _) = http_get(n2.http, "/readyz").await;
    assert!(status.contains("200"), "n2 reaches n1: {status}");

    // Healed: forwarded again, and ready.
    proxy.set_cut(false);
    wait_ready(&n1, |s, _| s.contains("200"), Duration::from_secs(10)).await;
    approve_every_merchant(&mut c1, &merchants, 600).await;
    // Each approval once; the 91s left nothing.
    let approved = 2 * merchants.len() + merchants.len() - far.len() + far.len();
    assert_eq!(count(&url, PAYMENT_RECORDS), approved as i64);
    drop((n1, n2, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_leaves_every_owner_serving_its_shards_in_failsafe() {
    let (etcd, pg, url) = services("cluster_etcd_outage");
    let dir = data_dir();
    let nodes = two_nodes(&dir, &url, etcd.url()).await;
    let load = MixedLoad::start(&nodes);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // etcd answers nobody (stopped, its data and leases kept), past the
    // lease and more: each node asks the other, both are cut, and both
    // keep serving their shards, ready.
    let pid = etcd.pid().to_string();
    let stop = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill {sig} etcd");
    };
    stop("-STOP");
    tokio::time::sleep(Duration::from_secs(6)).await;
    for n in &nodes {
        assert_eq!(n.metric("switch_cluster_failsafe").await, 1.0);
        let (status, body) = http_get(n.http, "/readyz").await;
        assert!(status.contains("200"), "{status} {body}");
    }
    wait_all_served(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(5)).await;
    // Each merchant through each node: approved (forwarded and counted
    // over the links, on the routes etcd gave before it stopped).
    let merchants = [
        ("DEMO00000000001", "DEMO0001"),
        ("DEMO00000000002", "DEMO0101"),
    ];
    for (i, n) in nodes.iter().enumerate() {
        let mut c = Client::connect(n.iso).await;
        for (k, (f42, f41)) in merchants.iter().enumerate() {
            let pre = preauth(&card(900 + 10 * i as u64 + k as u64), 1_000)
                .set(41, f41)
                .set(42, f42);
            let answer = c.call(&pre).await;
            assert_eq!(answer.code(), "00", "{f42} through n{}: {answer:?}", i + 1);
        }
    }

    // etcd back: the failsafe ends, the nodes renew (or register again
    // and take their shards anew), and every shard is served.
    stop("-CONT");
    let started = std::time::Instant::now();
    for n in &nodes {
        n.wait_metric("switch_cluster_failsafe", Duration::from_secs(15), |v| {
            v == 0.0
        })
        .await;
    }
    wait_all_served(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(20)).await;
    eprintln!(
        "failsafe over and every shard served {:?} after etcd came back",
        started.elapsed()
    );
    let answered = load.finish().await;
    let (approved, paused) = approvals_and_pauses(&answered);
    eprintln!(
        "{} answers, {} approved, {paused} refused 91 or 96",
        answered.len(),
        approved.len()
    );
    approvals_in_postgresql_once(&url, approved.into_iter());
    drop((nodes, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A transaction of the test's that holds a lock until released.
struct Holder {
    /// Tells the holding thread to commit.
    release: std::sync::mpsc::Sender<()>,
    /// That thread.
    thread: std::thread::JoinHandle<()>,
}

impl Holder {
    /// Runs `sql` in a transaction on its own thread and returns once it
    /// holds what `sql` locks.
    fn lock(url: &str, sql: &str) -> Holder {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (locked, is_locked) = std::sync::mpsc::channel::<()>();
        let (url, sql) = (url.to_owned(), sql.to_owned());
        let thread = std::thread::spawn(move || {
            let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            let mut tx = db.transaction().expect("begin");
            tx.batch_execute(&sql).expect("lock");
            locked.send(()).expect("locked");
            let _ = released.recv();
            tx.commit().expect("commit");
        });
        is_locked.recv().expect("locked");
        Holder { release, thread }
    }

    /// Commits the transaction, letting its locks go.
    fn release(self) {
        self.release.send(()).expect("release");
        self.thread.join().expect("the holder");
    }
}

/// The sessions named `name` waiting for a lock now.
fn waiting_for_a_lock(url: &str, name: &str) -> i64 {
    let mut db = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        &[&name],
    )
    .expect("pg_stat_activity")
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_inside_a_transaction_does_not_hold_its_shards_past_the_takeover() {
    let (etcd, pg, url) = services("cluster_pause_in_tx");
    let dir = data_dir();
    let (n1, c1) = start_node(&dir, &url, etcd.url(), "n1").await;
    let (n2, c2) = launch_node(&dir, &url, etcd.url(), "n2", "").await;
    wait_split(&n1, &n2).await;
    let owner = demo_owner(&etcd).await;
    let (paused, survivor, mut cp) = if owner == "n1" {
        (n1, n2, c1)
    } else {
        (n2, n1, c2)
    };

    let pre = preauth(&card(31), 1_000);
    assert_eq!(cp.call(&pre).await.code(), "00");

    // The test holds cluster_records: the owner's next commit (a capture,
    // which counts no card, so no other node commits for it) passes its
    // shards' fences (locking and updating their shard_owner rows), then
    // waits at its INSERT. Paused there, and the table let go, its
    // transaction sits idle holding those rows, as a node frozen between
    // two statements would.
    let holder = Holder::lock(
        &url,
        "LOCK TABLE cluster_records IN SHARE ROW EXCLUSIVE MODE",
    );
    cp.send_raw(&capture(&pre, 1_000).encode()).await;
    let started = std::time::Instant::now();
    while off_runtime(|| waiting_for_a_lock(&url, "switch-cluster-commit")) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the owner's commit never waited for the table"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&paused, "-STOP");
    holder.release();

    // The survivor takes every shard once the paused node's lease expires:
    // PostgreSQL ends the idle transaction, so the fences it held do not
    // block the loads.
    let stopped = std::time::Instant::now();
    survivor
        .wait_metric(
            "switch_cluster_served_shards",
            Duration::from_secs(20),
            |v| v == f64::from(SHARDS),
        )
        .await;
    eprintln!("every shard served {:?} after the pause", stopped.elapsed());
    signal(&paused, "-CONT");
    drop((paused, survivor, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_whose_fence_row_is_held_does_not_hold_the_other_takeovers_back() {
    let (etcd, pg, url) = services("cluster_row_held");
    let dir = data_dir();
    let (n1, _) = start_node(&dir, &url, etcd.url(), "n1").await;
    // The shards n2 will take from n1, and the first of them (the loader
    // takes them in order).
    let names = ["n1".to_owned(), "n2".to_owned()];
    let taken: Vec<u32> = (0..SHARDS)
        .filter(|&s| cluster::assign::owner(cluster::assign::SALT_PAYMENT, s, &names) == Some("n2"))
        .collect();
    let held = taken[0];

    // The test holds that shard's fence row, as a stuck session would.
    let holder = Holder::lock(
        &url,
        &format!("SELECT 1 FROM shard_owner WHERE shard = {held} FOR UPDATE"),
    );

    // n2 joins: every shard it takes but the held one is served, though
    // the held one comes first.
    let (n2, _) = launch_node(&dir, &url, etcd.url(), "n2", "").await;
    let others = taken.len() as f64 - 1.0;
    let started = std::time::Instant::now();
    n2.wait_metric(
        "switch_cluster_served_shards",
        Duration::from_secs(20),
        |v| v == others,
    )
    .await;
    eprintln!(
        "{others} of {} shards served {:?} after n2 started, shard {held} held",
        taken.len(),
        started.elapsed()
    );
    // Let go, the held shard is loaded too.
    holder.release();
    wait_split(&n1, &n2).await;
    assert_eq!(
        n2.metric("switch_cluster_served_shards").await,
        taken.len() as f64
    );
    drop((n1, n2, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}
