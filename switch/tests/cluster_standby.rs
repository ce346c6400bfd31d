//! Cluster mode on a PostgreSQL primary with a synchronous streaming
//! standby (`archive::testing::PgServer::standby`), the nodes' archive URL
//! naming both with `target_session_attrs=read-write`, as libpq and
//! Patroni's clients do: an answer leaves only once the standby flushed
//! its change, even when PostgreSQL reports a commit whose wait for the
//! standby was cancelled or whose session was terminated meanwhile (the
//! commit then holds on the primary alone), and a shard whose takeover
//! load the standby lacks is not served; and after a kill -9 of the
//! primary under mixed traffic through two nodes and the promotion of the
//! standby, every approval is on the promoted server once and service
//! resumes without restarting a node.

mod common;

use std::time::Duration;

use archive::testing::PgServer;
use cluster::testing::EtcdServer;
use common::nodes::*;
use common::*;

/// A throwaway etcd, a PostgreSQL primary with database `name` and its
/// synchronous standby, and the URL that names both (the read-write one
/// is used).
fn services_with_standby(name: &str) -> (EtcdServer, PgServer, PgServer, String) {
    let etcd = EtcdServer::new().expect("etcd for tests (run scripts/install-test-deps.sh)");
    let (primary, standby) = off_runtime(|| {
        let primary =
            PgServer::new().expect("PostgreSQL for tests (run scripts/install-test-deps.sh)");
        primary.create_database(name).expect("database");
        let standby = primary.standby().expect("a streaming standby");
        (primary, standby)
    });
    let url = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/{name}?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    (etcd, primary, standby, url)
}

/// The sessions named `name` on `server` that wait for the synchronous
/// standby now.
fn waiting(server: &PgServer, name: &str) -> Vec<i32> {
    let mut db =
        postgres::Client::connect(&server.url("postgres"), postgres::NoTls).expect("connect");
    db.query(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event = 'SyncRep'",
        &[&name],
    )
    .expect("pg_stat_activity")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Runs `function(pid)` (`pg_cancel_backend`, `pg_terminate_backend`) on
/// every session named `name` of `server` waiting for the standby, once
/// there is one (polled every 20 ms; fails after 10 s).
fn interrupt_waiting(server: &PgServer, name: &str, function: &str) {
    let started = std::time::Instant::now();
    let pids = loop {
        let pids = waiting(server, name);
        if !pids.is_empty() {
            break pids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no {name} session waits for the standby"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    for pid in pids {
        server
            .execute("postgres", &format!("SELECT {function}({pid})"))
            .expect(function);
    }
}

/// [`interrupt_waiting`] of the committers.
fn interrupt_waiting_committers(server: &PgServer, function: &str) {
    interrupt_waiting(server, "switch-cluster-commit", function);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_waits_for_the_standby_even_when_its_wait_is_cancelled_or_its_session_ended() {
    let (etcd, primary, standby, url) = services_with_standby("cluster_sync_wait");
    let dir = data_dir();
    let (n1, mut client) = start_node(&dir, &url, etcd.url(), "n1").await;
    let started = std::time::Instant::now();
    let first = preauth(&card(21), 1_000);
    let approved = client.call(&first).await;
    assert_eq!(approved.code(), "00", "{approved:?}");

    // The standby stops: every commit now waits for it.
    let mut standby = off_runtime(move || {
        let mut standby = standby;
        standby.stop().expect("pg_ctl stop");
        standby
    });
    // A capture (no card counted, whose own wait would answer 91).
    let pre = capture(&first, 1_000);
    client.send_raw(&pre.encode()).await;
    // The wait of the batch's commit is cancelled: PostgreSQL warns and
    // reports it committed, on the primary only. No answer leaves.
    off_runtime(|| interrupt_waiting_committers(&primary, "pg_cancel_backend"));
    let early = client.try_recv_within(Duration::from_secs(2)).await;
    assert_eq!(
        early.as_ref().err(),
        Some(&false),
        "answered while the standby lacks the change: {early:?}"
    );
    // The committer asks again whether the batch committed, in a
    // transaction that waits for the standby; its session is terminated.
    // It reconnects, asks again, and still no answer leaves.
    off_runtime(|| interrupt_waiting_committers(&primary, "pg_terminate_backend"));
    let early = client.try_recv_within(Duration::from_secs(2)).await;
    assert_eq!(
        early.as_ref().err(),
        Some(&false),
        "answered while the standby lacks the change: {early:?}"
    );

    // The standby is back: the answer leaves, once, and the standby holds
    // the change, which was committed once.
    standby = off_runtime(move || {
        standby.start().expect("pg_ctl start");
        standby
    });
    let answer = client
        .try_recv_within(Duration::from_secs(30))
        .await
        .expect("the answer once the standby is back");
    assert_eq!(answer.code(), "00", "{answer:?}");
    eprintln!("answered {:?} after the first request", started.elapsed());
    let on_standby = standby.url("cluster_sync_wait");
    assert_eq!(count(&on_standby, PAYMENT_RECORDS), 2);
    assert_eq!(count(&url, PAYMENT_RECORDS), 2);
    let repeat = client.call(&pre).await;
    assert_eq!(
        (repeat.code(), repeat.text(38)),
        ("00".into(), answer.text(38))
    );
    assert!(
        n1.metric("switch_cluster_commit_failures_total{reason=\"unreplicated\"}")
            .await
            >= 1.0
    );
    assert!(
        n1.metric("switch_cluster_commit_failures_total{reason=\"connection\"}")
            .await
            >= 1.0
    );
    drop((n1, standby, primary, etcd));
    eprintln!("done {:?} after the first request", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_the_synchronous_standby_under_load_loses_no_acknowledged_change() {
    let (etcd, primary, standby, url) = services_with_standby("cluster_failover");
    let dir = data_dir();
    let mut nodes = two_nodes(&dir, &url, etcd.url()).await;
    let load = MixedLoad::start(&nodes);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = sum_metric(&nodes, "switch_cluster_committed_records_total").await;
    assert!(before > 0.0, "nothing committed before the failover");

    // The primary's machine is lost: every process of it killed at once.
    // A second later the standby is promoted, as Patroni would.
    let killed = std::time::Instant::now();
    let (primary, standby) = off_runtime(move || {
        let (mut primary, standby) = (primary, standby);
        primary.kill9().expect("kill -9 of the primary");
        std::thread::sleep(Duration::from_secs(1));
        standby.promote().expect("pg_ctl promote");
        (primary, standby)
    });
    eprintln!("standby promoted {:?} after the kill", killed.elapsed());
    let promoted = sum_metric(&nodes, "switch_cluster_committed_records_total").await;
    // Service resumes by itself, on the promoted server.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answered = load.finish().await;
    let after = sum_metric(&nodes, "switch_cluster_committed_records_total").await;
    assert!(
        after > promoted,
        "nothing committed after the promotion: {promoted} then {after}"
    );
    for n in &mut nodes {
        assert!(n.running(), "a node stopped on the failover");
    }
    assert!(
        sum_metric(
            &nodes,
            "switch_cluster_commit_failures_total{reason=\"connection\"}"
        )
        .await
            > 0.0,
        "no committer lost its connection"
    );

    // Every answer is an approval, or 91/96 while no server took writes.
    let (approvals, paused) = approvals_and_pauses(&answered);
    eprintln!(
        "{} answers, {} approved, {paused} paused (91/96)",
        answered.len(),
        approvals.len()
    );
    assert!(approvals.len() > 100, "{} approvals", approvals.len());

    // Every approval is on the promoted server (the URL's read-write host
    // now), its payment once by F37 + F38, a capture captured; no record
    // committed twice.
    approvals_in_postgresql_once(&url, approvals.iter().copied());
    assert_eq!(
        count(&url, "SELECT count(*) FROM pg_stat_replication"),
        0,
        "the URL reached the promoted standby"
    );
    drop((nodes, standby, primary, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_whose_load_the_standby_has_not_confirmed_is_not_served() {
    let (etcd, primary, standby, url) = services_with_standby("cluster_sync_load");
    let dir = data_dir();
    let (mut n1, _) = launch_node(&dir, &url, etcd.url(), "n1", "").await;
    let (n2, _) = launch_node(&dir, &url, etcd.url(), "n2", "").await;
    wait_split(&n1, &n2).await;
    let own = n2.metric("switch_cluster_served_shards").await;

    // The standby stops and n1 is killed: once its lease expires, n2's
    // load of each of its shards (the fence at a new epoch, an id block)
    // waits for the standby. Those waits are cancelled as they come for
    // 2 s: PostgreSQL reports the loads committed, on the primary only.
    // n2 serves none of those shards.
    let mut standby = off_runtime(move || {
        let mut standby = standby;
        standby.stop().expect("pg_ctl stop");
        standby
    });
    n1.kill9();
    off_runtime(|| interrupt_waiting(&primary, "switch-cluster-load", "pg_cancel_backend"));
    let cancelled = std::time::Instant::now();
    while cancelled.elapsed() < Duration::from_secs(2) {
        let primary = &primary;
        off_runtime(move || {
            for pid in waiting(primary, "switch-cluster-load") {
                primary
                    .execute("postgres", &format!("SELECT pg_cancel_backend({pid})"))
                    .expect("cancel");
            }
        });
        let served = n2.metric("switch_cluster_served_shards").await;
        assert_eq!(
            served, own,
            "n2 serves a shard whose load the standby lacks"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The standby is back: n2 loads the dead node's shards and serves
    // every shard.
    standby = off_runtime(move || {
        standby.start().expect("pg_ctl start");
        standby
    });
    n2.wait_metric(
        "switch_cluster_served_shards",
        Duration::from_secs(20),
        |v| v == f64::from(SHARDS),
    )
    .await;
    drop((n1, n2, standby, primary, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}
