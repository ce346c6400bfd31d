//! Cluster mode on a real etcd (`cluster::testing::EtcdServer`) and
//! PostgreSQL (`archive::testing::PgServer`), the switch binary as a
//! process: a node with `[cluster]` and a PostgreSQL `archive.url` joins,
//! owns and loads its shards, and answers a change only after PostgreSQL
//! committed its record under the shard's fence; a node that takes the
//! shards over after a kill -9 loads them and gives the same answers; a
//! batch fenced by a later epoch is never acknowledged and stops the node;
//! of two nodes, each forwards a request of the other's shard over its node
//! link, and the survivor of a kill -9 serves the dead node's shards; a
//! node SIGSTOPped past its lease writes nothing after the takeover; a
//! request of a shard with no owner for 5 s is refused 91 by no engine, so
//! the same message later is decided afresh; a forwarded request whose
//! outcome is unknown (its commit outlasted the link timeout, its owner
//! was killed or paused; with three nodes, to the heir over another link)
//! is sent again and answered once, as its repeats are; F37 +
//! F38 never repeat across takeovers and node lives (each life's numbers
//! come from its own block of PostgreSQL's sequence); of
//! three nodes, every
//! pre-authorization acknowledged before a kill -9 is captured through the
//! others, its repeat gives the original answer, and PostgreSQL holds it
//! once, captured;
//! while PostgreSQL restarts under mixed traffic through two nodes, changes
//! are answered 91 or 96, never approved uncommitted, every approval is in
//! PostgreSQL once, and service resumes without restarting a node;
//! internal frames are served (a MO/TO after the takeover); without a
//! PostgreSQL URL or a shared card-token key a node refuses to start,
//! saying why; one card's attempts at merchants of three nodes are
//! counted once each by the card's counting node, so the sixth within
//! 60 s gets 65 whichever node decides it, and after a kill -9 of that
//! node its successor goes on from exactly the committed attempts; and
//! from its velocity checkpoint once the attempts before it are deleted.

mod common;

use std::path::Path;
use std::time::Duration;

use cluster::testing::EtcdServer;
use common::nodes::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_leave_after_the_commit_and_a_takeover_after_kill_9_gives_the_same_ones() {
    let (etcd, pg, url) = services("cluster_takeover");
    let dir = data_dir();
    let (mut n1, mut client) = start_node(&dir, &url, etcd.url(), "n1").await;

    // Approved, and its record is in PostgreSQL once, under the shard's
    // epoch, before the answer came.
    let pre = preauth(&card(7), 1_000);
    let approved = client.call(&pre).await;
    assert_eq!(approved.code(), "00", "{approved:?}");
    assert_eq!(count(&url, PAYMENT_RECORDS), 1);
    // And the card's counted attempt, in the card's shard.
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM cluster_records WHERE record_type = 3"
        ),
        1
    );
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM cluster_records r JOIN shard_owner o USING (shard) \
             WHERE r.epoch = o.epoch AND r.node = 'n1' AND r.record_type = 1"
        ),
        1
    );
    // A repeat is answered from memory: the same F38, nothing new written.
    let again = client.call(&pre).await;
    assert_eq!(
        (again.code(), again.text(38)),
        ("00".into(), approved.text(38))
    );
    assert_eq!(count(&url, PAYMENT_RECORDS), 1);

    // n1 dies; n2 takes every shard over once n1's lease expires, loads
    // them from PostgreSQL, and gives the same answers.
    n1.kill9();
    let killed = std::time::Instant::now();
    let (mut n2, mut client) = start_node(&dir, &url, etcd.url(), "n2").await;
    eprintln!(
        "n2 served every shard {:?} after the kill",
        killed.elapsed()
    );
    // Internal frames are served in cluster mode too: the listener (its
    // address from n2's node key) logs a key of n2's in, and n2 decides
    // a MO/TO of a shard it took over.
    let etcd_client =
        cluster::etcd::Etcd::new(&[etcd.url().to_owned()], Duration::from_secs(1)).expect("client");
    let key = etcd_client
        .get("/switch/test/nodes/n2")
        .await
        .expect("etcd")
        .expect("n2's node key");
    let record: cluster::member::NodeRecord =
        serde_json::from_slice(&key.value).expect("a node record");
    let frames = record.frames_addr.expect("frames_addr");
    let api_key = switch::KeyAdmin::new(&dir.join("data-n2"))
        .create_key(switch::Owner::Merchant("DEMO00000000001".into()), "test")
        .expect("key");
    let frames_client = tokio::time::timeout(
        Duration::from_secs(5),
        switch_client::Client::connect(&frames, &api_key.client_id, &api_key.secret),
    )
    .await
    .expect("in time")
    .expect("log-in accepted");
    let moto = frames_client
        .authorize_moto(&switch_client::MotoPayment {
            pan: card(77),
            expiry_yymm: "2812".into(),
            cvv2: None,
            cardholder_name: None,
            merchant_reference: "after-takeover".into(),
            description: None,
            currency: 978,
            amount_minor: 500,
            terminal_id: "DEMO0001".into(),
            cart: Vec::new(),
        })
        .await
        .expect("MO/TO");
    assert_eq!(moto.code(), "00", "{moto:?}");
    let repeat = client.call(&pre).await;
    assert_eq!(
        (repeat.code(), repeat.text(38), repeat.text(37)),
        ("00".into(), approved.text(38), approved.text(37))
    );
    let captured = client.call(&capture(&pre, 1_000)).await;
    assert_eq!(captured.code(), "00", "{captured:?}");
    // A second capture of the whole amount would exceed it: n2 knows the
    // first (over-capture is 20% on this merchant).
    let over = client.call(&capture(&pre, 1_000)).await;
    assert_ne!(over.code(), "00", "{over:?}");
    // The capture is in PostgreSQL under n2's epoch; every record once.
    assert!(
        count(
            &url,
            "SELECT count(*) FROM cluster_records WHERE node = 'n2'"
        ) >= 1
    );
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM (SELECT node, seq FROM cluster_records \
             GROUP BY node, seq HAVING count(*) > 1) d"
        ),
        0
    );
    assert!(n2.stop().await.success());
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

/// F37 and F38 of `n` approved sales through `client`, cards from `seed`.
async fn approved_numbers(client: &mut Client, seed: u64, n: u64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let answer = client.call(&sale(&card(seed + i), 700 + i)).await;
        assert_eq!(answer.code(), "00", "{answer:?}");
        out.push((answer.text(37), answer.text(38)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f37_and_f38_never_repeat_across_takeovers_and_node_lives() {
    let (etcd, pg, url) = services("cluster_numbers");
    let dir = data_dir();
    // The merchant's shard served by n1, then (kill -9) by n2, then
    // (kill -9) by n1 again, a new life: approvals in each.
    let mut lives = Vec::new();
    let (mut n1, mut c) = start_node(&dir, &url, etcd.url(), "n1").await;
    lives.push(approved_numbers(&mut c, 500, 4).await);
    n1.kill9();
    let (mut n2, mut c) = start_node(&dir, &url, etcd.url(), "n2").await;
    lives.push(approved_numbers(&mut c, 600, 4).await);
    n2.kill9();
    let (mut n1, mut c) = start_node(&dir, &url, etcd.url(), "n1").await;
    lives.push(approved_numbers(&mut c, 700, 4).await);

    // Each life's F37s carry a number block PostgreSQL's sequence gave
    // that life alone (before: digits of the start millisecond, which two
    // nodes, or a restart with a clock stepped back, can share).
    let last = count(&url, "SELECT last_value FROM cluster_id_block");
    let mut blocks = std::collections::BTreeSet::new();
    for life in &lives {
        let block: i64 = life[0].0[..7].parse().expect("digits");
        assert!((1..=last).contains(&block), "F37 {} of no block", life[0].0);
        for (rrn, _) in life {
            assert_eq!(&rrn[..7], &life[0].0[..7], "one block a life");
        }
        assert!(blocks.insert(block), "block {block} in two lives");
    }
    // No F37 + F38 twice, in the answers or in PostgreSQL.
    let answered: std::collections::BTreeSet<_> = lives.iter().flatten().cloned().collect();
    assert_eq!(answered.len(), 12);
    let stored: std::collections::BTreeSet<_> = payments(&url)
        .values()
        .map(|p| (p.rrn, p.auth_code))
        .collect();
    assert_eq!(stored.len(), 12, "twelve payments, no pair twice");
    assert!(n1.stop().await.success());
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_batch_is_never_acknowledged_and_stops_the_node() {
    let (etcd, pg, url) = services("cluster_fence");
    let dir = data_dir();
    let (mut n1, mut client) = start_node(&dir, &url, etcd.url(), "n1").await;
    assert_eq!(client.call(&sale(&card(1), 500)).await.code(), "00");

    // A later owner's epoch on every shard, as a takeover writes it.
    let raised = count(
        &url,
        "WITH u AS (UPDATE shard_owner SET epoch = epoch + 1000000 RETURNING 1) SELECT count(*) FROM u",
    );
    assert!(raised >= 1);
    client.send_raw(&sale(&card(2), 600).encode()).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), client.recv_or_close())
        .await
        .expect("an answer or a close within 5 s");
    // The first fenced record is the card's counted attempt (the sale's
    // own record comes after its count): its answer is never held for a
    // fenced commit. The sale is answered 91 (its count never committed), or gets no
    // answer as the node stops; never approved.
    if let Some(r) = answer {
        assert_eq!(r.code(), "91", "the fenced sale: {r:?}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while n1.running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the fenced node did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&url, PAYMENT_RECORDS), 1);
    let log = std::fs::read_to_string(&n1.log).expect("log");
    assert!(log.contains("fenced"), "{log}");
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_forward_to_the_owner_and_survive_its_kill_9() {
    let (etcd, pg, url) = services("cluster_two");
    let dir = data_dir();
    let (n1, mut c1) = start_node(&dir, &url, etcd.url(), "n1").await;
    let (n2, mut c2) = launch_node(&dir, &url, etcd.url(), "n2", "").await;
    wait_split(&n1, &n2).await;

    // Whoever owns the merchant's shard, one of the two nodes forwards.
    let pre1 = preauth(&card(11), 1_000);
    let pre2 = preauth(&card(12), 2_000);
    let a1 = c1.call(&pre1).await;
    let a2 = c1.call(&pre2).await;
    assert_eq!((a1.code(), a2.code()), ("00".into(), "00".into()));
    assert_eq!(c2.call(&capture(&pre1, 1_000)).await.code(), "00");
    // A repeat through the other node gets the original answer.
    let again = c2.call(&pre1).await;
    assert_eq!((again.code(), again.text(38)), ("00".into(), a1.text(38)));
    let forwarded = n1
        .metric("switch_cluster_forwarded_total{outcome=\"answered\"}")
        .await
        + n2.metric("switch_cluster_forwarded_total{outcome=\"answered\"}")
            .await;
    assert!(forwarded >= 2.0, "forwarded {forwarded}");

    // kill -9 the owner of the merchant's shard; the other node takes it
    // over, loads it, and captures the second pre-authorization.
    let owner = demo_owner(&etcd).await;
    let (mut dead, survivor, mut c) = if owner == "n1" {
        (n1, n2, c2)
    } else {
        (n2, n1, c1)
    };
    dead.kill9();
    let killed = std::time::Instant::now();
    survivor
        .wait_metric(
            "switch_cluster_served_shards",
            Duration::from_secs(15),
            |v| v == f64::from(SHARDS),
        )
        .await;
    eprintln!(
        "the survivor served every shard {:?} after the kill",
        killed.elapsed()
    );
    let captured = c.call(&capture(&pre2, 2_000)).await;
    assert_eq!(captured.code(), "00", "{captured:?}");
    let again = c.call(&pre2).await;
    assert_eq!((again.code(), again.text(38)), ("00".into(), a2.text(38)));
    // Past the unreachable-owner bound (lease + 2 s), the survivor is
    // ready: the dead owner left etcd with its lease, so no owner etcd
    // names is out of its reach.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(killed.elapsed())).await;
    let (status, body) = http_get(survivor.http, "/readyz").await;
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(
        survivor.metric("switch_cluster_unreachable_owners").await,
        0.0
    );
    // Every record once.
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM (SELECT node, seq FROM cluster_records \
             GROUP BY node, seq HAVING count(*) > 1) d"
        ),
        0
    );
    drop(survivor);
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_writes_nothing_after_the_takeover() {
    let (etcd, pg, url) = services("cluster_pause");
    let dir = data_dir();
    let (n1, c1) = start_node(&dir, &url, etcd.url(), "n1").await;
    let (n2, c2) = launch_node(&dir, &url, etcd.url(), "n2", "").await;
    wait_split(&n1, &n2).await;
    // Let the hand-over finish: the owner below must stay the owner.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owner = demo_owner(&etcd).await;
    let (paused, survivor, mut cp, mut cs) = if owner == "n1" {
        (n1, n2, c1, c2)
    } else {
        (n2, n1, c2, c1)
    };
    assert_eq!(cp.call(&preauth(&card(21), 100)).await.code(), "00");
    let paused_id = if owner == "n1" { "n1" } else { "n2" };
    let old_epoch = count(
        &url,
        &format!(
            "SELECT max(epoch) FROM cluster_records WHERE node = '{paused_id}' AND record_type = 1"
        ),
    );

    signal(&paused, "-STOP");
    survivor
        .wait_metric(
            "switch_cluster_served_shards",
            Duration::from_secs(15),
            |v| v == f64::from(SHARDS),
        )
        .await;
    assert_eq!(cs.call(&preauth(&card(22), 200)).await.code(), "00");
    // A request waits in the paused node's socket; then it wakes up.
    let late = preauth(&card(23), 300);
    cp.send_raw(&late.encode()).await;
    signal(&paused, "-CONT");
    let answer = tokio::time::timeout(Duration::from_secs(10), cp.recv_or_close())
        .await
        .expect("an answer or a close within 10 s");
    // Either it found it no longer owns the shard and sent the request to
    // the survivor (which committed it), or its batch was fenced: no
    // answer, and it stopped. Never a write of its old epoch.
    let stale = format!(
        "SELECT count(*) FROM cluster_records WHERE node = '{paused_id}' AND epoch = {old_epoch} \
         AND record_type = 1"
    );
    assert_eq!(count(&url, &stale), 1, "a write of the old epoch landed");
    let total = count(&url, PAYMENT_RECORDS);
    match answer {
        Some(r) if r.code() == "00" => assert_eq!(total, 3),
        // Its card's count could not be committed (its batch fenced, or
        // the verdict not in time): refused, never approved, nothing
        // written.
        Some(r) => {
            assert_eq!(r.code(), "91", "{r:?}");
            assert_eq!(total, 2);
        }
        None => assert_eq!(total, 2),
    }
    drop((paused, survivor, pg));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two nodes, n1 and n2, serving every shard between them, the demo
/// merchant's owner settled (no hand-over of it in flight): the owner, the
/// other node, a client of each, and the owner's id.
async fn two_nodes_settled(
    dir: &Path,
    url: &str,
    etcd: &EtcdServer,
) -> (Proc, Proc, Client, Client, &'static str) {
    let (n1, c1) = start_node(dir, url, etcd.url(), "n1").await;
    let (n2, c2) = launch_node(dir, url, etcd.url(), "n2", "").await;
    wait_split(&n1, &n2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    if demo_owner(etcd).await == "n1" {
        (n1, n2, c1, c2, "n1")
    } else {
        (n2, n1, c2, c1, "n2")
    }
}

/// The payments in `cluster_records` authorized for `amount` (each test
/// request below has an amount of its own).
fn payments_of_amount(url: &str, amount: u64) -> Vec<engine::lifecycle::Payment> {
    payments(url)
        .into_values()
        .filter(|p| p.authorized_minor == amount)
        .collect()
}

/// The entry node's answer to a forwarded request is the owner's, and so
/// is every later repeat's, through either node; PostgreSQL holds it once.
async fn assert_one_answer(
    url: &str,
    first: &Resp,
    pre: &Req,
    amount: u64,
    clients: &mut [&mut Client],
) {
    let paid = payments_of_amount(url, amount);
    assert_eq!(paid.len(), 1, "one payment committed: {paid:?}");
    assert_eq!(
        (first.text(37), first.text(38)),
        (
            String::from_utf8_lossy(&paid[0].rrn).into_owned(),
            String::from_utf8_lossy(&paid[0].auth_code).into_owned()
        )
    );
    for c in clients.iter_mut() {
        for req in [pre.clone(), pre.clone().mti("0101")] {
            let again = c.call(&req).await;
            assert_eq!(
                (again.code(), again.text(37), again.text(38)),
                (first.code(), first.text(37), first.text(38)),
                "{req:?}"
            );
        }
    }
    assert_eq!(payments_of_amount(url, amount).len(), 1);
    assert_eq!(
        count(
            url,
            "SELECT count(*) FROM (SELECT node, seq FROM cluster_records \
             GROUP BY node, seq HAVING count(*) > 1) d"
        ),
        0
    );
}

/// Holds the demo merchant shard's `shard_owner` row (`FOR UPDATE`) for
/// `hold` from when this returns: that shard's batches and takeovers wait.
async fn hold_fence_row(url: &str, hold: Duration) -> std::thread::JoinHandle<()> {
    let shard = i32::try_from(cluster::assign::shard_of_merchant(
        b"DEMO00000000001",
        SHARDS,
    ))
    .expect("fits");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let lock_url = url.to_owned();
    let locker = std::thread::spawn(move || {
        let mut db = postgres::Client::connect(&lock_url, postgres::NoTls).expect("connect");
        let mut tx = db.transaction().expect("begin");
        tx.query(
            "SELECT 1 FROM shard_owner WHERE shard = $1 FOR UPDATE",
            &[&shard],
        )
        .expect("lock");
        locked_tx.send(()).expect("locked");
        std::thread::sleep(hold);
        tx.commit().expect("unlock");
    });
    tokio::task::spawn_blocking(move || locked_rx.recv().expect("locked"))
        .await
        .expect("join");
    locker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_committed_after_the_link_timeout_gets_the_owners_answer() {
    let (etcd, pg, url) = services("cluster_resend_commit");
    let dir = data_dir();
    let (owner, entry, mut co, mut ce, _) = two_nodes_settled(&dir, &url, &etcd).await;
    // The merchant's fence row is held 3.5 s: the owner decides the
    // request, and its batch waits in switch_fence past the entry node's
    // 2 s link timeout (and past the owner's own 2 s wait for the commit,
    // which then drops its answer), then commits. Before, the entry node
    // answered 91 at 2 s while the owner committed 00.
    let locker = hold_fence_row(&url, Duration::from_millis(3_500)).await;
    let pre = preauth(&card(41), 4_100);
    ce.send_raw(&pre.encode()).await;
    let first = ce.recv_within(Duration::from_secs(30)).await;
    tokio::task::spawn_blocking(move || locker.join().expect("locker"))
        .await
        .expect("join");
    assert_eq!(first.code(), "00", "{first:?}");
    assert!(
        entry
            .metric("switch_cluster_forwarded_total{outcome=\"resent\"}")
            .await
            >= 1.0
    );
    assert_one_answer(&url, &first, &pre, 4_100, &mut [&mut co, &mut ce]).await;
    drop((owner, entry, pg));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_to_a_killed_owner_is_decided_once_by_the_new_owner() {
    let (etcd, pg, url) = services("cluster_resend_kill");
    let dir = data_dir();
    let (mut owner, entry, _co, mut ce, _) = two_nodes_settled(&dir, &url, &etcd).await;
    // The owner decides the request and its batch waits at the held
    // fence row; kill -9 then: nothing committed, the link breaks with
    // the request written. The entry node learns it at once (broken), and
    // sends it again once the shard has a new owner (the entry node
    // itself, after the lease and the row's release). Before, 91 at the
    // 2 s link timeout, and a repeat after the takeover got 00.
    let locker = hold_fence_row(&url, Duration::from_millis(3_000)).await;
    let pre = preauth(&card(43), 4_300);
    ce.send_raw(&pre.encode()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    owner.kill9();
    let first = ce.recv_within(Duration::from_secs(30)).await;
    tokio::task::spawn_blocking(move || locker.join().expect("locker"))
        .await
        .expect("join");
    assert_eq!(first.code(), "00", "{first:?}");
    assert!(
        entry
            .metric("switch_cluster_forwarded_total{outcome=\"broken\"}")
            .await
            >= 1.0
    );
    assert_one_answer(&url, &first, &pre, 4_300, &mut [&mut ce]).await;
    drop((entry, pg));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_three_nodes_a_request_written_to_a_paused_owner_is_sent_to_the_new_owner() {
    let (etcd, pg, url) = services("cluster_resend_three");
    let dir = data_dir();
    let mut nodes = Vec::new();
    let mut clients = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let (p, c) = launch_node(&dir, &url, etcd.url(), name, "").await;
        nodes.push(p);
        clients.push(c);
    }
    let names = ["n1", "n2", "n3"];
    // Settled first: paused amid the start's hand-overs, the owner would
    // hold shards it has not loaded yet, perhaps the card's (its count
    // then cannot be asked until the takeover: 91).
    wait_desired(&etcd, &names).await;
    wait_all_served(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(20)).await;
    let owner = demo_owner_of(&etcd, &names).await;
    // The node rendezvous hashing gives the shard to once the owner is
    // gone, and the entry node: the third, so the request is sent again
    // over another link than the first sending's.
    let shard = cluster::assign::shard_of_merchant(b"DEMO00000000001", SHARDS);
    let rest: Vec<String> = names
        .iter()
        .filter(|n| **n != owner)
        .map(|n| (*n).to_owned())
        .collect();
    let heir = cluster::assign::owner(cluster::assign::SALT_PAYMENT, shard, &rest)
        .expect("an heir")
        .to_owned();
    let at = |name: &str| names.iter().position(|n| *n == name).expect("a node");
    let entry_name = rest.iter().find(|n| **n != heir).expect("an entry").clone();
    let (o, h, e) = (at(&owner), at(&heir), at(&entry_name));

    signal(&nodes[o], "-STOP");
    let pre = preauth(&card(44), 4_400);
    clients[e].send_raw(&pre.encode()).await;
    let first = clients[e].recv_within(Duration::from_secs(30)).await;
    assert_eq!(first.code(), "00", "{first:?}");
    assert!(
        nodes[e]
            .metric("switch_cluster_forwarded_total{outcome=\"resent\"}")
            .await
            >= 1.0
    );
    // The heir and the entry node serve every shard (the dead owner's
    // other shards perhaps still loading when the answer came).
    wait_all_served(&[&nodes[e], &nodes[h]], Duration::from_secs(5)).await;
    signal(&nodes[o], "-CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut running: Vec<&mut Client> = clients
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != o)
        .map(|(_, c)| c)
        .collect();
    assert_one_answer(&url, &first, &pre, 4_400, &mut running).await;
    drop((nodes, pg));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_written_to_a_paused_owner_is_answered_by_the_new_owner_once() {
    let (etcd, pg, url) = services("cluster_resend_pause");
    let dir = data_dir();
    let (mut owner, entry, mut co, mut ce, _) = two_nodes_settled(&dir, &url, &etcd).await;
    // The owner stops before the request is written to it: the link's
    // socket takes it, nobody reads it. The entry node sends it again
    // (the paused owner is named until its lease expires), then the new
    // owner (here the entry node itself) decides it. Before, the entry
    // node answered 91 at 2 s and a repeat after the takeover got 00.
    signal(&owner, "-STOP");
    let pre = preauth(&card(42), 4_200);
    ce.send_raw(&pre.encode()).await;
    let first = ce.recv_within(Duration::from_secs(30)).await;
    assert_eq!(first.code(), "00", "{first:?}");
    assert_eq!(
        entry.metric("switch_cluster_served_shards").await,
        f64::from(SHARDS)
    );
    // The old owner wakes with the request (and its resendings) in its
    // socket: whatever it decides is fenced (it then stops) or refused as
    // not served; no second answer, no second commit.
    signal(&owner, "-CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    if owner.running() {
        assert_one_answer(&url, &first, &pre, 4_200, &mut [&mut co, &mut ce]).await;
    } else {
        assert_one_answer(&url, &first, &pre, 4_200, &mut [&mut ce]).await;
    }
    drop((owner, entry, pg));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_without_an_owner_is_refused_91_without_poisoning_the_repeat() {
    let (etcd, pg, url) = services("cluster_no_owner");
    let dir = data_dir();
    // A 15 s lease, renewed every 5 s: a dead node's shards stay owned
    // for at least 10 s after the kill, past the 5 s the survivor waits
    // from the request's arrival even if the request is 5 s late (a 9 s
    // lease left 1 s, and a busy CI box once took over before the 91).
    let start = |name: &'static str| {
        let config = cluster_config(&dir, &url, etcd.url(), name);
        let text = std::fs::read_to_string(&config).expect("config") + "lease_ttl_s = 15\n";
        std::fs::write(&config, text).expect("config");
        let data = dir.join(format!("data-{name}"));
        (config, data)
    };
    let (config1, data1) = start("n1");
    let (config2, data2) = start("n2");
    let launch = |config, data| Launch {
        dir: data,
        config: Some(config),
        logs: &dir,
        log_level: "info",
    };
    let (n1, c1) = launch(&config1, &data1).start("n1").await;
    let (n2, c2) = launch(&config2, &data2).start("n2").await;
    wait_split(&n1, &n2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owner = demo_owner(&etcd).await;
    let (mut dead, survivor, mut c) = if owner == "n1" {
        (n1, n2, c2)
    } else {
        (n2, n1, c1)
    };
    dead.kill9();
    let killed = std::time::Instant::now();
    // Let the survivor see its link close: the request is then never
    // sent, and only the bounded wait can answer it (before that wait was
    // bounded for a dead owner etcd still names, it hung until takeover).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pre = preauth(&card(31), 100);
    let refused = c.call(&pre).await;
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "the 91 came {:?} after the kill, past the dead node's lease",
        killed.elapsed()
    );
    assert_eq!(refused.code(), "91", "{refused:?}");
    assert_eq!(
        survivor
            .metric("switch_cluster_forwarded_total{outcome=\"refused\"}")
            .await,
        1.0
    );
    assert_eq!(
        survivor
            .metric("switch_cluster_forwarded_total{outcome=\"no_owner\"}")
            .await,
        1.0,
        "refused by the 5 s wait"
    );
    survivor
        .wait_metric(
            "switch_cluster_served_shards",
            Duration::from_secs(30),
            |v| v == f64::from(SHARDS),
        )
        .await;
    // The same message once the shard is served: decided now, not the
    // 91 (which no engine remembered).
    assert_eq!(c.call(&pre).await.code(), "00");
    drop((survivor, pg));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_every_acknowledged_preauthorization_is_captured_after_a_kill_once_in_postgresql(
) {
    three_nodes_kill_9("cluster_three", false).await;
}

/// The same with `cluster.records_retention_s = 0`, the kill -9 once every
/// payment row is archived and deleted: the survivors load no payment,
/// and each capture finds its pre-authorization in the archive, each
/// repeat its answer; the archive's `payments` table is checked instead
/// of `cluster_records`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_rows_kept_every_acknowledged_preauthorization_is_captured_from_the_archive_after_a_kill(
) {
    three_nodes_kill_9("cluster_three_archived", true).await;
}

/// Three nodes, 24 pre-authorizations through them in turn, kill -9 of
/// the first merchant's owner; the captures and repeats through the
/// survivors, then PostgreSQL (`archived`: rows deleted before the kill,
/// the archive's tables read).
async fn three_nodes_kill_9(database: &str, archived: bool) {
    let (etcd, pg, url) = services(database);
    let dir = data_dir();
    let mut nodes = Vec::new();
    let mut clients = Vec::new();
    let extra = if archived {
        "records_retention_s = 0\n"
    } else {
        ""
    };
    for name in ["n1", "n2", "n3"] {
        let (p, c) = launch_node(&dir, &url, etcd.url(), name, extra).await;
        nodes.push(p);
        clients.push(c);
    }
    // Every shard served, once quiet.
    wait_all_served(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(20)).await;
    // Pre-authorizations of both merchants, through every node in turn.
    let mut acked = Vec::new();
    for i in 0..24_u64 {
        let mut pre = preauth(&card(100 + i), 1_000 + i);
        if i % 2 == 1 {
            pre = pre.set(41, "DEMO0101").set(42, "DEMO00000000002");
        }
        let r = clients[(i % 3) as usize].call(&pre).await;
        assert_eq!(r.code(), "00", "{r:?}");
        acked.push((pre, r));
    }
    if archived {
        let started = std::time::Instant::now();
        while count(&url, PAYMENT_RECORDS) > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "payment rows not deleted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // kill -9 the owner of the first merchant's shard.
    let owner = demo_owner_of(&etcd, &["n1", "n2", "n3"]).await;
    let dead = ["n1", "n2", "n3"]
        .iter()
        .position(|n| *n == owner)
        .expect("an owner");
    nodes[dead].kill9();
    let killed = std::time::Instant::now();
    // The survivors serve every shard within a few seconds.
    let alive: Vec<usize> = (0..3).filter(|i| *i != dead).collect();
    let survivors: Vec<&Proc> = alive.iter().map(|&i| &nodes[i]).collect();
    wait_all_served(&survivors, Duration::from_secs(10)).await;
    eprintln!(
        "the survivors served every shard {:?} after the kill",
        killed.elapsed()
    );
    // Every acknowledged pre-authorization is captured through another
    // node, and its repeat through a third gets the original answer.
    for (k, (pre, r)) in acked.iter().enumerate() {
        let amount = String::from_utf8_lossy(&pre.fields[&4])
            .parse()
            .expect("amount");
        let (a, b) = (alive[k % 2], alive[(k + 1) % 2]);
        let cap = clients[a].call(&capture(pre, amount)).await;
        assert_eq!(cap.code(), "00", "capture {k}: {cap:?}");
        let again = clients[b].call(pre).await;
        assert_eq!(
            (again.code(), again.text(37), again.text(38)),
            (r.code(), r.text(37), r.text(38)),
            "repeat {k}"
        );
    }
    // PostgreSQL: each acknowledged pre-authorization is one payment,
    // captured, found by its F37 + F38; no two share them in a merchant.
    let images = if archived {
        // The captures' rows too are drained and deleted.
        let started = std::time::Instant::now();
        while archived_payments(&url)
            .values()
            .any(|p| p.captured_minor == 0)
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "captures not archived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        archived_payments(&url)
    } else {
        payments(&url)
    };
    for (k, (_, r)) in acked.iter().enumerate() {
        let found: Vec<_> = images
            .values()
            .filter(|p| p.rrn == r.text(37).as_bytes() && p.auth_code == r.text(38).as_bytes())
            .collect();
        assert_eq!(found.len(), 1, "acknowledged pre-authorization {k}");
        assert!(found[0].captured_minor > 0, "{k} captured in PostgreSQL");
    }
    let mut keys = std::collections::BTreeSet::new();
    for p in images.values() {
        assert!(
            keys.insert((p.merchant, p.rrn, p.auth_code)),
            "F37 + F38 twice"
        );
    }
    assert_eq!(images.len(), acked.len());
    drop((nodes, pg));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cluster metrics of `nodes` after traffic through both and a
/// PostgreSQL restart: commits timed since `commit_timed_before`, batch
/// sizes, records by shard adding up to the records committed, loads of
/// every shard, forwarded requests answered and timed, the lost
/// connection counted.
async fn cluster_metrics_moved(nodes: &[Proc], commit_timed_before: f64) {
    let commits = sum_metric(nodes, "switch_cluster_commits_total").await;
    let timed = sum_metric(nodes, "switch_cluster_commit_seconds_count").await;
    assert!(timed > commit_timed_before, "commit latency did not move");
    assert!(
        timed >= commits && commits > 0.0,
        "{timed} timed, {commits} commits"
    );
    assert_eq!(
        sum_metric(nodes, "switch_cluster_commit_batch_records_count").await,
        timed
    );
    let records = sum_metric(nodes, "switch_cluster_committed_records_total").await;
    assert_eq!(
        sum_metric(nodes, "switch_cluster_commit_batch_records_sum").await,
        records
    );
    assert_eq!(
        sum_metric(nodes, "switch_cluster_shard_records_total").await,
        records
    );
    assert!(
        sum_metric(nodes, "switch_cluster_loads_total").await >= f64::from(SHARDS),
        "every shard loaded once at least"
    );
    assert_eq!(
        sum_metric(nodes, "switch_cluster_load_seconds_count").await,
        sum_metric(nodes, "switch_cluster_loads_total").await
    );
    let answered = sum_metric(
        nodes,
        "switch_cluster_forwarded_total{outcome=\"answered\"}",
    )
    .await;
    assert!(answered > 0.0, "nothing forwarded and answered");
    assert_eq!(
        sum_metric(
            nodes,
            "switch_cluster_forwarded_seconds_count{outcome=\"answered\"}"
        )
        .await,
        answered
    );
    assert!(
        sum_metric(
            nodes,
            "switch_cluster_commit_failures_total{reason=\"connection\"}"
        )
        .await
            > 0.0
    );
    for n in nodes {
        assert_eq!(
            n.metric("switch_cluster_served_shards").await,
            n.metric("switch_cluster_owned_shards").await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_under_load_pauses_changes_and_loses_no_acknowledged_one() {
    let (etcd, mut pg, url) = services("cluster_pg_restart");
    let dir = data_dir();
    let mut nodes = two_nodes(&dir, &url, etcd.url()).await;
    let load = MixedLoad::start(&nodes);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let commit_timed_before = sum_metric(&nodes, "switch_cluster_commit_seconds_count").await;
    // PostgreSQL stops (fast: its sessions are closed), stays down 2 s and
    // starts again on the same data and port.
    let stopped = std::time::Instant::now();
    pg = off_runtime(move || {
        pg.stop().expect("pg_ctl stop");
        pg
    });
    // Meanwhile every node's /readyz answers 503 (its archive drainer
    // fails), so a load balancer sends it nothing.
    for n in &nodes {
        loop {
            let (status, body) = http_get(n.http, "/readyz").await;
            if status.contains("503") {
                break;
            }
            assert!(
                stopped.elapsed() < Duration::from_secs(10),
                "{status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let down = stopped.elapsed();
    if let Some(rest) = Duration::from_secs(2).checked_sub(down) {
        tokio::time::sleep(rest).await;
    }
    pg = off_runtime(move || {
        pg.start().expect("pg_ctl start");
        pg
    });
    let restarted = std::time::Instant::now();
    eprintln!("PostgreSQL down and up again in {:?}", restarted - stopped);
    // Service resumes by itself: new approvals after the restart.
    let approved_before = nodes[0].metric("switch_cluster_commits_total").await
        + nodes[1].metric("switch_cluster_commits_total").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answered = load.finish().await;
    let approved_after = nodes[0].metric("switch_cluster_commits_total").await
        + nodes[1].metric("switch_cluster_commits_total").await;
    assert!(
        approved_after > approved_before,
        "no commit after the restart: {approved_before} then {approved_after}"
    );
    for n in &mut nodes {
        assert!(n.running(), "a node stopped on the restart");
        let (status, body) = http_get(n.http, "/readyz").await;
        assert!(status.contains("200"), "{status} {body}");
    }
    let reconnects = nodes[0].metric("switch_cluster_reconnects_total").await
        + nodes[1].metric("switch_cluster_reconnects_total").await;
    assert!(reconnects > 0.0, "no committer reconnected");
    cluster_metrics_moved(&nodes, commit_timed_before).await;

    // Every answer is an approval, or 91/96 while PostgreSQL was away.
    let (approvals, paused) = approvals_and_pauses(&answered);
    eprintln!(
        "{} answers, {} approved, {paused} paused (91/96), {reconnects} reconnection attempts",
        answered.len(),
        approvals.len()
    );
    // The outage shows as refusals, or as forwarded requests whose commit
    // outlasted the link timeout and were sent again (answered once
    // committed): on a busy box every worker's request can be in the
    // batch that waits for the reconnection, so none is refused.
    let resent = sum_metric(&nodes, "switch_cluster_forwarded_total{outcome=\"resent\"}").await;
    assert!(
        paused > 0 || resent > 0.0,
        "nothing was refused or sent again while PostgreSQL was down"
    );
    assert!(approvals.len() > 100, "{} approvals", approvals.len());

    // Every approval is in PostgreSQL: its payment by F37 + F38, a capture
    // captured; no record committed twice.
    approvals_in_postgresql_once(&url, approvals.iter().copied());
    drop((nodes, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a switch on `config` that must refuse to start: its stderr.
/// Removes `dir`.
fn refused_at_start(dir: &Path, config: &Path) -> String {
    let (mut command, _) = switch_command(&dir.join("data"));
    let out = command
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("switch");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(dir);
    assert!(!out.status.success(), "{stderr}");
    stderr
}

#[test]
fn a_cluster_node_without_postgresql_refuses_to_start() {
    let dir = data_dir();
    let config = cluster_config(&dir, "", "http://127.0.0.1:1", "n1");
    let stderr = refused_at_start(&dir, &config);
    assert!(
        stderr.contains("cluster mode needs archive.url = \"postgres://"),
        "{stderr}"
    );
}

#[test]
fn a_cluster_node_without_a_shared_token_key_refuses_to_start() {
    let dir = data_dir();
    let config = cluster_config(
        &dir,
        "postgres://127.0.0.1:1/none",
        "http://127.0.0.1:1",
        "n1",
    );
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replacen(TOKEN_KEY, "", 1)).expect("config");
    let stderr = refused_at_start(&dir, &config);
    assert!(
        stderr.contains("cluster mode needs security.token_key_hex"),
        "{stderr}"
    );
}

/// Waits until every shard is owned, in etcd, by the node rendezvous
/// hashing gives among `nodes` (no hand-over left in flight).
async fn wait_desired(etcd: &EtcdServer, nodes: &[&str]) {
    let names: Vec<String> = nodes.iter().map(|n| (*n).to_owned()).collect();
    let client =
        cluster::etcd::Etcd::new(&[etcd.url().to_owned()], Duration::from_secs(1)).expect("client");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let view = cluster::member::read_view(&client, "/switch/test", SHARDS)
            .await
            .expect("view");
        let settled = (0..SHARDS).all(|s| {
            let desired = cluster::assign::owner(cluster::assign::SALT_PAYMENT, s, &names);
            view.owners.get(&s).map(|o| o.record.node_id.as_str()) == desired
        });
        if settled {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shards never settled on their desired owners"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The counted attempts (record type 3) after record `n_after`: their
/// node and shard, in commit order, and the last `n`.
fn counted_after(url: &str, n_after: i64) -> (Vec<(String, i32)>, i64) {
    let url = url.to_owned();
    off_runtime(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let rows = db
            .query(
                "SELECT node, shard, n FROM cluster_records WHERE record_type = 3 AND n > $1 \
                 ORDER BY n",
                &[&n_after],
            )
            .expect("counted attempts");
        let last = rows.last().map_or(n_after, |r| r.get(2));
        (rows.iter().map(|r| (r.get(0), r.get(1))).collect(), last)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_velocity_is_exact_across_three_nodes_and_the_kill_of_the_cards_counting_node() {
    let (etcd, pg, url) = services("cluster_velocity");
    let dir = data_dir();
    let names = ["n1", "n2", "n3"];
    let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    // One merchant whose shard each node owns.
    let mut merchants = Vec::new();
    for node in names {
        let id = (0..10_000)
            .map(|k| format!("VELO{k:011}"))
            .find(|id| {
                let shard = cluster::assign::shard_of_merchant(id.as_bytes(), SHARDS);
                cluster::assign::owner(cluster::assign::SALT_PAYMENT, shard, &owned) == Some(node)
            })
            .expect("a merchant of each node");
        merchants.push(id);
    }
    let extra: String = merchants
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                "[[merchants]]\nid = \"{id}\"\nname = \"Velocity {i}\"\n\
                 terminals = [\"VELT000{i}\"]\ncurrencies = [978]\nover_capture_pct = 0\n\
                 refunds_allowed = true\nmoto_allowed = true\nhold_period_h = 168\n\n"
            )
        })
        .collect();
    let mut nodes = Vec::new();
    let mut clients = Vec::new();
    for name in names {
        let (p, c) = launch_node(&dir, &url, etcd.url(), name, &extra).await;
        nodes.push(p);
        clients.push(c);
    }
    wait_desired(&etcd, &names).await;
    wait_all_served(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(20)).await;
    // Attempt at merchant `m` (owned by node m).
    let at = |pan: &str, m: usize, amount: u64| {
        preauth(pan, amount)
            .set(41, format!("VELT000{m}"))
            .set(42, merchants[m].clone())
    };

    // One card, five attempts at the three nodes' merchants, each entering
    // through another node than the merchant's owner: all approved. The
    // sixth and later ones within 60 s: 65, whichever node decides them.
    let first = card(4_242);
    for i in 0..5 {
        let r = clients[(i + 1) % 3]
            .call(&at(&first, i % 3, 100 + i as u64))
            .await;
        assert_eq!(r.code(), "00", "attempt {}: {r:?}", i + 1);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let r = client.call(&at(&first, (i + 2) % 3, 200 + i as u64)).await;
        assert_eq!(r.code(), "65", "attempt {} at node {i}: {r:?}", 6 + i);
    }
    // Each attempt counted once, all by one node, in the card's shard.
    let (counted, last) = counted_after(&url, 0);
    assert_eq!(counted.len(), 8, "{counted:?}");
    assert!(counted.iter().all(|c| *c == counted[0]), "{counted:?}");
    // Asked over a link by the two other nodes' merchants (at least five
    // of eight), with no hop at the counting node's own (at least two).
    let (mut linked, mut here) = (0.0, 0.0);
    for n in &nodes {
        linked += n
            .metric("switch_cluster_velocity_asks_total{outcome=\"answered\"}")
            .await;
        here += n
            .metric("switch_cluster_velocity_asks_total{outcome=\"here\"}")
            .await;
    }
    assert!(linked >= 5.0 && here >= 2.0, "linked {linked}, here {here}");

    // A second card: three attempts, then its counting node is killed.
    let second = card(4_243);
    for (i, client) in clients.iter_mut().enumerate() {
        let r = client.call(&at(&second, (i + 1) % 3, 300 + i as u64)).await;
        assert_eq!(r.code(), "00", "second card, attempt {}: {r:?}", i + 1);
    }
    let (counted2, _) = counted_after(&url, last);
    assert_eq!(counted2.len(), 3, "{counted2:?}");
    assert!(counted2.iter().all(|c| *c == counted2[0]), "{counted2:?}");
    let counter = &counted2[0].0;
    let dead = names
        .iter()
        .position(|n| n == counter)
        .expect("a node counts");
    nodes[dead].kill9();
    let killed = std::time::Instant::now();
    let alive: Vec<usize> = (0..3).filter(|i| *i != dead).collect();
    let survivors: Vec<&Proc> = alive.iter().map(|&i| &nodes[i]).collect();
    wait_all_served(&survivors, Duration::from_secs(20)).await;
    eprintln!(
        "the survivors served every shard {:?} after the kill of {counter}",
        killed.elapsed()
    );
    // The new counting node rebuilt the card's three attempts: two more
    // are approved, the sixth is declined, through either survivor and at
    // every merchant (the dead node's too).
    let (a, b) = (alive[0], alive[1]);
    let r4 = clients[a].call(&at(&second, dead, 400)).await;
    assert_eq!(r4.code(), "00", "second card, attempt 4: {r4:?}");
    let r5 = clients[b].call(&at(&second, a, 401)).await;
    assert_eq!(r5.code(), "00", "second card, attempt 5: {r5:?}");
    let r6 = clients[a].call(&at(&second, b, 402)).await;
    assert_eq!(r6.code(), "65", "second card, attempt 6: {r6:?}");
    // Counts equal the committed attempts: six of the second card, in
    // its shard, three by the dead node and three by its successor.
    let (counted2, _) = counted_after(&url, last);
    assert_eq!(counted2.len(), 6, "{counted2:?}");
    assert!(
        counted2.iter().all(|c| c.1 == counted2[0].1),
        "{counted2:?}"
    );
    assert!(
        counted2[3..].iter().all(|c| c.0 != *counter),
        "{counted2:?}"
    );
    // The first card is still over its limit wherever it is counted now.
    let again = clients[b].call(&at(&first, dead, 403)).await;
    assert_eq!(again.code(), "65", "first card after the kill: {again:?}");
    drop((nodes, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `(counted attempts, velocity checkpoints)` rows of `shard`.
fn velocity_rows(url: &str, shard: i32) -> (i64, i64) {
    let url = url.to_owned();
    off_runtime(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE record_type = 3), \
                        count(*) FILTER (WHERE record_type = 4) \
                 FROM cluster_records WHERE shard = $1",
                &[&shard],
            )
            .expect("velocity rows");
        (row.get(0), row.get(1))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_the_cards_counts_come_from_the_checkpoint_once_the_attempts_before_it_are_deleted(
) {
    let (etcd, pg, url) = services("cluster_checkpoint");
    let dir = data_dir();
    let names = ["n1", "n2"];
    let mut nodes = Vec::new();
    let mut clients = Vec::new();
    for name in names {
        // A checkpoint a second.
        let (p, c) = launch_node(&dir, &url, etcd.url(), name, "velocity_checkpoint_s = 1\n").await;
        nodes.push(p);
        clients.push(c);
    }
    wait_desired(&etcd, &names).await;
    wait_all_served(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(20)).await;

    // Three attempts of one card, through both nodes: approved, counted
    // in the card's shard by its owner.
    let pan = card(5_151);
    for i in 0..3 {
        let r = clients[i % 2].call(&preauth(&pan, 100 + i as u64)).await;
        assert_eq!(r.code(), "00", "attempt {}: {r:?}", i + 1);
    }
    let (counted, _) = counted_after(&url, 0);
    assert_eq!(counted.len(), 3, "{counted:?}");
    let (counter, shard) = counted[0].clone();
    // Within seconds the counting node checkpoints the shard and its
    // drainer deletes the three attempts: the checkpoint alone holds them.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (attempts, checkpoints) = velocity_rows(&url, shard);
        if attempts == 0 && checkpoints == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shard {shard}: {attempts} attempts and {checkpoints} checkpoints left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead = names
        .iter()
        .position(|n| *n == counter)
        .expect("a node counts");
    let recorded = nodes[dead]
        .metric("switch_cluster_velocity_checkpoints_total{outcome=\"recorded\"}")
        .await;
    assert!(recorded >= 1.0, "checkpoints recorded: {recorded}");

    // Its counting node dies; the survivor loads the shard, the card's
    // counts from the checkpoint: two more attempts pass, the sixth in
    // 60 s is over the limit (without the checkpoint it would be the
    // survivor's third).
    nodes[dead].kill9();
    let alive = 1 - dead;
    wait_all_served(&[&nodes[alive]], Duration::from_secs(20)).await;
    for i in 3..5 {
        let r = clients[alive].call(&preauth(&pan, 100 + i)).await;
        assert_eq!(r.code(), "00", "attempt {}: {r:?}", i + 1);
    }
    let r = clients[alive].call(&preauth(&pan, 106)).await;
    assert_eq!(r.code(), "65", "attempt 6: {r:?}");
    drop((nodes, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}
