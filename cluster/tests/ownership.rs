//! Shard ownership against a real etcd (and the fence against a real
//! PostgreSQL): two nodes splitting the shards, a crash, a pause past the
//! lease, a join, an etcd outage, the loss of one etcd member of three.
//!
//! Each test starts its own etcd (`cluster::testing::EtcdServer`) and, for
//! the fence, PostgreSQL (`archive::testing::PgServer`); without the
//! binaries they fail, naming scripts/install-test-deps.sh. The lease is the
//! default 3 s; nodes poll every 200 ms, and a checker reads every node's
//! claims every 20 ms: no shard is ever claimed by two nodes at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster::etcd::Etcd;
use cluster::fence;
use cluster::member::{self, Member, Settings};
use cluster::ownership::View;
use cluster::testing::EtcdServer;
use cluster::{assign, FenceError};

/// Shards in these tests: the smallest count allowed.
const SHARDS: u32 = 16;
/// How often the nodes poll.
const POLL: Duration = Duration::from_millis(200);
/// How often the checker reads the nodes' claims.
const CHECK: Duration = Duration::from_millis(20);
/// The lease TTL (the default), in s.
const TTL_S: i64 = member::LEASE_TTL_S_DEFAULT;
/// etcd checks expired leases every 500 ms: its part of a takeover's delay.
const ETCD_EXPIRY_CHECK: Duration = Duration::from_millis(500);
/// Slack for a loaded machine on top of every bound.
const SLACK: Duration = Duration::from_millis(1_000);

fn etcd_server() -> EtcdServer {
    EtcdServer::new().unwrap_or_else(|e| panic!("test etcd: {e}"))
}

fn client(url: &str) -> Etcd {
    Etcd::new(&[url.to_owned()], Duration::from_millis(1_000)).unwrap()
}

fn settings(node: &str) -> Settings {
    let mut s = Settings::new("test", node, "127.0.0.1:1");
    s.shard_count = SHARDS;
    s.poll_interval = POLL;
    s
}

async fn join(url: &str, node: &str) -> Member {
    Member::join(client(url), settings(node)).await.unwrap()
}

/// The shards `node` should own among `nodes`.
fn desired(node: &str, nodes: &[&str]) -> Vec<u32> {
    let nodes: Vec<String> = nodes.iter().map(|s| (*s).to_owned()).collect();
    (0..SHARDS)
        .filter(|&s| assign::owner(assign::SALT_PAYMENT, s, &nodes) == Some(node))
        .collect()
}

async fn view(url: &str) -> View {
    member::read_view(&client(url), &member::prefix("test"), SHARDS)
        .await
        .unwrap()
}

/// Reads every node's claims twice and fails if a shard was claimed by
/// two nodes in both reads (a claim held through both reads spans the
/// moment between them, so two such claims overlapped).
fn check_one_claimant(members: &[&Member]) {
    let first: Vec<_> = members.iter().map(|m| m.owned()).collect();
    let second: Vec<_> = members.iter().map(|m| m.owned()).collect();
    let mut by_shard: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for s in first[i].keys().filter(|s| second[i].contains_key(s)) {
            by_shard.entry(*s).or_default().push(m.node_id());
        }
    }
    for (s, nodes) in by_shard {
        assert!(nodes.len() <= 1, "shard {s} claimed by {nodes:?} at once");
    }
}

/// Polls `done` every CHECK, checking one claimant each time, until it
/// holds or `bound` passes; how long it took.
async fn until(
    members: &[&Member],
    bound: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        check_one_claimant(members);
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(CHECK).await;
    }
}

fn shards(m: &Member) -> Vec<u32> {
    m.owned().into_keys().collect()
}

/// Every shard has an owner key, and each node's claims are exactly the
/// keys naming it, at their create revisions.
async fn assert_matches_etcd(url: &str, members: &[&Member]) {
    let v = view(url).await;
    assert_eq!(v.owners.len(), SHARDS as usize, "{v:?}");
    for m in members {
        let in_etcd: BTreeMap<u32, i64> = v
            .owners
            .iter()
            .filter(|(_, o)| o.record.node_id == m.node_id())
            .map(|(&s, o)| (s, o.epoch))
            .collect();
        assert_eq!(m.owned(), in_etcd, "{}", m.node_id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_split_the_shards_by_rendezvous() {
    let server = etcd_server();
    let (a, b) = (join(server.url(), "a").await, join(server.url(), "b").await);
    let want_a = desired("a", &["a", "b"]);
    let want_b = desired("b", &["a", "b"]);
    assert!(!want_a.is_empty() && !want_b.is_empty());
    until(&[&a, &b], Duration::from_secs(5), "split", || {
        shards(&a) == want_a && shards(&b) == want_b
    })
    .await;
    assert_matches_etcd(server.url(), &[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_s_shards_are_taken_over_within_the_lease() {
    let server = etcd_server();
    let (a, b) = (join(server.url(), "a").await, join(server.url(), "b").await);
    let want_a = desired("a", &["a", "b"]);
    until(&[&a, &b], Duration::from_secs(5), "split", || {
        shards(&a) == want_a && shards(&b) == desired("b", &["a", "b"])
    })
    .await;
    let before = a.owned();

    // kill -9: no more keep-alives, no revoke.
    a.halt();
    let bound = Duration::from_secs(TTL_S as u64) + POLL + ETCD_EXPIRY_CHECK + SLACK;
    let took = until(&[&b], bound, "takeover", || {
        b.owned().len() == SHARDS as usize
    })
    .await;
    eprintln!("takeover {took:?} after the crash (bound {bound:?})");
    let after = b.owned();
    for (s, epoch) in before {
        assert!(
            after[&s] > epoch,
            "shard {s}: epoch {} after, {epoch} before",
            after[&s]
        );
    }
    assert_matches_etcd(server.url(), &[&b]).await;
}

#[test]
fn a_paused_node_stops_claiming_before_the_takeover_and_is_fenced() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = etcd_server();
    let pg = archive::testing::PgServer::new().unwrap_or_else(|e| panic!("test PostgreSQL: {e}"));
    let url = pg.create_database("fence_pause").unwrap();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    fence::install(&mut db).unwrap();

    let (a, b) =
        rt.block_on(async { (join(server.url(), "a").await, join(server.url(), "b").await) });
    let want_a = desired("a", &["a", "b"]);
    rt.block_on(until(&[&a, &b], Duration::from_secs(5), "split", || {
        shards(&a) == want_a && shards(&b) == desired("b", &["a", "b"])
    }));
    // Every owner writes a batch: the fence records its epoch.
    let write = |db: &mut postgres::Client,
                 m: &Member,
                 owned: &BTreeMap<u32, i64>|
     -> Result<(), FenceError> {
        let mut tx = db.transaction()?;
        for (&s, &epoch) in owned {
            fence::check(&mut tx, s, epoch, m.node_id())?;
        }
        tx.commit()?;
        Ok(())
    };
    let a_before = a.owned();
    write(&mut db, &a, &a_before).unwrap();
    write(&mut db, &b, &b.owned()).unwrap();

    // SIGSTOP: a sends nothing; its deadline keeps running.
    a.pause();
    let paused_at = Instant::now();
    let mut a_stopped = None;
    let bound = Duration::from_secs(TTL_S as u64) + POLL + ETCD_EXPIRY_CHECK + SLACK;
    rt.block_on(until(&[&a, &b], bound, "takeover", || {
        if a_stopped.is_none() && a.owned().is_empty() {
            a_stopped = Some(paused_at.elapsed());
        }
        b.owned().len() == SHARDS as usize
    }));
    let took = paused_at.elapsed();
    let stopped = a_stopped.expect("a claimed its shards when b had taken them all");
    eprintln!(
        "a stopped claiming {stopped:?} after the pause; b owned everything {took:?} after it"
    );
    assert!(stopped < Duration::from_secs(TTL_S as u64), "{stopped:?}");

    // b's takeover raises the fence; a's batch at its old epochs fails.
    let b_now = b.owned();
    write(&mut db, &b, &b_now).unwrap();
    let (&s, &old) = a_before.iter().next().unwrap();
    match write(&mut db, &a, &BTreeMap::from([(s, old)])) {
        Err(FenceError::Fenced {
            shard,
            stored,
            writer,
        }) => {
            assert_eq!((shard, stored, writer), (s, b_now[&s], old));
        }
        other => panic!("a's write at epoch {old}: {other:?}"),
    }
    assert_eq!(fence::stored(&mut db, s).unwrap(), Some(b_now[&s]));
    // An older writer never lowers the fence; the current one passes.
    write(&mut db, &b, &b_now).unwrap();

    // SIGCONT: a finds its lease gone, registers anew, and gets its shards
    // back by hand-over, at new epochs, never two claimants at once.
    let old_lease = a.lease();
    a.resume();
    rt.block_on(until(&[&a, &b], Duration::from_secs(10), "rejoin", || {
        shards(&a) == want_a && shards(&b) == desired("b", &["a", "b"])
    }));
    assert_ne!(a.lease(), old_lease);
    for (s, epoch) in a.owned() {
        assert!(
            epoch > b_now[&s],
            "shard {s}: {epoch} after b's {}",
            b_now[&s]
        );
    }
    rt.block_on(assert_matches_etcd(server.url(), &[&a, &b]));
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_its_shards_by_hand_over() {
    let server = etcd_server();
    let a = join(server.url(), "a").await;
    until(&[&a], Duration::from_secs(5), "alone", || {
        a.owned().len() == SHARDS as usize
    })
    .await;
    let before = a.owned();

    let b = join(server.url(), "b").await;
    let (want_a, want_b) = (desired("a", &["a", "b"]), desired("b", &["a", "b"]));
    let took = until(&[&a, &b], Duration::from_secs(10), "hand-over", || {
        shards(&a) == want_a && shards(&b) == want_b
    })
    .await;
    eprintln!("{} shards handed over in {took:?}", want_b.len());
    // The shards a keeps were not touched; b's are new ownerships.
    let (a_now, b_now) = (a.owned(), b.owned());
    for s in want_a {
        assert_eq!(a_now[&s], before[&s], "shard {s}");
    }
    for s in want_b {
        assert!(b_now[&s] > before[&s], "shard {s}");
    }
    assert_matches_etcd(server.url(), &[&a, &b]).await;

    // Leaving revokes the lease: a gets everything back within a poll or two.
    b.leave().await.unwrap();
    until(&[&a], Duration::from_secs(3), "leave", || {
        a.owned().len() == SHARDS as usize
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_watch_shards_move_at_once_not_at_the_next_poll() {
    // Polls a minute apart: every move below is the watch's doing.
    let server = etcd_server();
    let slow = |node: &str| {
        let mut s = settings(node);
        s.poll_interval = Duration::from_secs(60);
        s
    };
    let a = Member::join(client(server.url()), slow("a")).await.unwrap();
    // The watch's opening wakes the first poll.
    until(&[&a], Duration::from_secs(5), "alone", || {
        a.owned().len() == SHARDS as usize
    })
    .await;
    let changes = a.changes();
    // b's node key wakes a, which releases b's shards; their deletes wake
    // b, which takes them.
    let b = Member::join(client(server.url()), slow("b")).await.unwrap();
    let (want_a, want_b) = (desired("a", &["a", "b"]), desired("b", &["a", "b"]));
    let took = until(&[&a, &b], Duration::from_secs(5), "hand-over", || {
        shards(&a) == want_a && shards(&b) == want_b
    })
    .await;
    eprintln!(
        "{} shards moved in {took:?} with polls 60 s apart",
        want_b.len()
    );
    assert!(changes.has_changed().unwrap(), "a's readers were told");
    // A crash: b's lease expires, and a takes its shards back as the keys go.
    b.halt();
    until(
        &[&a],
        Duration::from_secs(TTL_S as u64) + ETCD_EXPIRY_CHECK + SLACK * 2,
        "takeover",
        || a.owned().len() == SHARDS as usize,
    )
    .await;
}

/// The node side of hand-overs, as a test sets it: a shard closes only
/// while `closing` is set; every call is recorded.
#[derive(Debug, Default)]
struct Gate {
    /// Whether `closed` answers true.
    closing: std::sync::atomic::AtomicBool,
    /// Shards asked to close.
    closes: std::sync::Mutex<Vec<u32>>,
    /// Shards served again after a close that did not finish in time.
    reopens: std::sync::Mutex<Vec<u32>>,
}

impl member::Handover for Gate {
    fn close(&self, shard: u32, _epoch: i64) {
        self.closes.lock().unwrap().push(shard);
    }
    fn closed(&self, _shard: u32, _epoch: i64) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Acquire)
    }
    fn reopen(&self, shard: u32, _epoch: i64) {
        self.reopens.lock().unwrap().push(shard);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_waits_for_the_node_to_close_the_shard_and_a_drain_hands_everything_over() {
    let server = etcd_server();
    let gate = std::sync::Arc::new(Gate::default());
    let a = Member::join_with(client(server.url()), settings("a"), Some(gate.clone()))
        .await
        .unwrap();
    until(&[&a], Duration::from_secs(5), "alone", || {
        a.owned().len() == SHARDS as usize
    })
    .await;

    // b joins, but a's node cannot close what b should get: a keeps every
    // shard, asks again at later polls, and serves them again meanwhile.
    let b = join(server.url(), "b").await;
    let (want_a, want_b) = (desired("a", &["a", "b"]), desired("b", &["a", "b"]));
    let wait = Duration::from_millis(member::HANDOVER_WAIT_MS) + POLL * 3;
    until(&[&a, &b], wait + SLACK, "reopened", || {
        !gate.reopens.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(a.owned().len(), SHARDS as usize);
    assert!(b.owned().is_empty(), "{:?}", b.owned());
    assert!(gate
        .reopens
        .lock()
        .unwrap()
        .iter()
        .all(|s| want_b.contains(s)));

    // Once the node closes them, they move.
    gate.closing
        .store(true, std::sync::atomic::Ordering::Release);
    until(&[&a, &b], Duration::from_secs(10), "hand-over", || {
        shards(&a) == want_a && shards(&b) == want_b
    })
    .await;
    let closes = gate.closes.lock().unwrap().clone();
    assert!(want_b.iter().all(|s| closes.contains(s)), "{closes:?}");
    assert!(want_a.iter().all(|s| !closes.contains(s)), "{closes:?}");

    // a drains: every shard goes to b, by hand-over, and a acquires none.
    let drained = a.drain(Duration::from_secs(10)).await.unwrap();
    assert_eq!(drained, member::Drained::Done);
    assert!(a.owned().is_empty());
    assert_eq!(view(server.url()).await.draining, vec!["a".to_owned()]);
    until(&[&a, &b], Duration::from_secs(5), "drained", || {
        b.owned().len() == SHARDS as usize
    })
    .await;
    let closes = gate.closes.lock().unwrap().clone();
    assert!(want_a.iter().all(|s| closes.contains(s)), "{closes:?}");
    assert_matches_etcd(server.url(), &[&a, &b]).await;
    // b alone: a drain keeps its shards, nobody could take them.
    assert_eq!(
        b.drain(Duration::from_secs(10)).await.unwrap(),
        member::Drained::Alone
    );
    assert_eq!(b.owned().len(), SHARDS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_cut_from_etcd_stop_claiming_within_the_lease_and_come_back() {
    let server = etcd_server();
    let (a, b) = (join(server.url(), "a").await, join(server.url(), "b").await);
    let split =
        || shards(&a) == desired("a", &["a", "b"]) && shards(&b) == desired("b", &["a", "b"]);
    until(&[&a, &b], Duration::from_secs(5), "split", split).await;

    // etcd stops answering (SIGSTOP): renewals time out, both deadlines pass.
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    let bound = Duration::from_millis(TTL_S as u64 * 1_000 - member::LEASE_MARGIN_MS) + SLACK;
    let took = until(&[&a, &b], bound, "stop claiming", || {
        a.owned().is_empty() && b.owned().is_empty()
    })
    .await;
    eprintln!("both nodes stopped claiming {took:?} after etcd stopped");
    assert!(!a.lease_valid() && !b.lease_valid());

    // etcd answers again: the nodes renew or register anew and own their
    // shards again, one claimant each.
    signal("-CONT");
    let took = until(&[&a, &b], Duration::from_secs(10), "back", split).await;
    eprintln!("split again {took:?} after etcd came back");
    assert_matches_etcd(server.url(), &[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_etcd_member_of_three_is_nothing_visible() {
    let mut server = EtcdServer::with_members(3).unwrap_or_else(|e| panic!("test etcd: {e}"));
    let start = Instant::now();
    let leader = loop {
        if let Some(l) = server.leader() {
            break l;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no etcd leader");
        tokio::time::sleep(CHECK).await;
    };
    // The nodes try a follower first, the member about to be lost.
    let lost = (leader + 1) % 3;
    let mut endpoints = vec![server.urls()[lost].clone()];
    endpoints.extend(
        server
            .urls()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != lost)
            .map(|(_, u)| u.clone()),
    );
    let node = |id: &str| {
        Member::join(
            Etcd::new(&endpoints, Duration::from_millis(1_000)).unwrap(),
            settings(id),
        )
    };
    let (a, b) = (node("a").await.unwrap(), node("b").await.unwrap());
    let split =
        || shards(&a) == desired("a", &["a", "b"]) && shards(&b) == desired("b", &["a", "b"]);
    until(&[&a, &b], Duration::from_secs(5), "split", split).await;
    let (a_before, b_before) = (a.owned(), b.owned());

    server.kill_member(lost);
    // A whole lease later, nothing moved and nobody stopped claiming:
    // renewals and polls went to the next endpoint.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(TTL_S as u64) {
        check_one_claimant(&[&a, &b]);
        assert_eq!((a.owned(), b.owned()), (a_before.clone(), b_before.clone()));
        tokio::time::sleep(CHECK).await;
    }
    assert_matches_etcd(&server.urls()[leader], &[&a, &b]).await;
}
