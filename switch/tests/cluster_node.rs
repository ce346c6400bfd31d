//! Cluster mode's start, on a real etcd (`cluster::testing::EtcdServer`)
//! and PostgreSQL (`archive::testing::PgServer`), the switch binary as a
//! process: a node with `[cluster]` and a PostgreSQL `archive.url` joins
//! and owns every shard of a one-node cluster; every change is answered
//! 91 and nothing reaches PostgreSQL (the request path is not built:
//! docs/cluster.md, Status); without a PostgreSQL URL it refuses to start,
//! saying why.

mod common;

use std::path::Path;
use std::time::Duration;

use cluster::testing::EtcdServer;
use common::*;

/// The shards of the test clusters (the smallest count allowed).
const SHARDS: u32 = 16;

/// The embedded default with archive `url` and a `[cluster]` section for
/// node `node_id` on `etcd`.
fn cluster_config(dir: &Path, url: &str, etcd: &str, node_id: &str) -> std::path::PathBuf {
    let base = switch::EMBEDDED_DEFAULT.replacen("url = \"\"", &format!("url = \"{url}\""), 1);
    assert!(
        url.is_empty() || base != switch::EMBEDDED_DEFAULT,
        "the default's archive url line moved"
    );
    let link = free_port();
    let section = format!(
        "\n[cluster]\nnode_id = \"{node_id}\"\netcd_endpoints = [\"{etcd}\"]\n\
         etcd_prefix = \"/switch/test\"\nshard_count = {SHARDS}\nlink_addr = \"127.0.0.1:{link}\"\n"
    );
    let path = dir.join(format!("{node_id}.toml"));
    std::fs::write(&path, format!("{base}{section}")).expect("config");
    path
}

fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().expect("no panic"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_joins_owns_its_shards_and_refuses_changes_with_91() {
    let etcd = EtcdServer::new().expect("etcd for tests (run scripts/install-test-deps.sh)");
    let (pg, url) = off_runtime(|| {
        let pg = archive::testing::PgServer::new()
            .expect("PostgreSQL for tests (run scripts/install-test-deps.sh)");
        let url = pg.create_database("cluster_node").expect("database");
        (pg, url)
    });
    let dir = data_dir();
    let config = cluster_config(&dir, &url, etcd.url(), "n1");
    let launch = Launch {
        dir: &dir.join("data"),
        config: Some(&config),
        logs: &dir,
        log_level: "info",
    };
    let (mut node, mut client) = launch.start("n1").await;
    node.wait_metric(
        "switch_cluster_owned_shards",
        Duration::from_secs(10),
        |v| v == f64::from(SHARDS),
    )
    .await;

    // A pre-authorization changes state: refused (rolled back), 91; its
    // repeat gets the same 91, as the engine remembers answers it could
    // not journal (as it does a 96 for a full journal).
    let pre = preauth(&card(7), 1_000);
    assert_eq!(client.call(&pre).await.code(), "91");
    assert_eq!(client.call(&pre).await.code(), "91");
    assert_eq!(node.metric("switch_journal_rejected_total").await, 1.0);
    assert_eq!(node.metric("switch_repeats_total").await, 1.0);

    // etcd names the node and its shards.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .args([
            "cluster",
            "status",
            "--etcd",
            etcd.url(),
            "--prefix",
            "/switch/test",
        ])
        .output()
        .expect("cluster status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("n1"), "{text}");

    // PostgreSQL holds the fence and no payment.
    let rows = off_runtime(|| {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let payments: i64 = db
            .query_one("SELECT count(*) FROM payments", &[])
            .expect("payments")
            .get(0);
        let fence: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_proc WHERE proname = 'switch_fence'",
                &[],
            )
            .expect("fence")
            .get(0);
        (payments, fence)
    });
    assert_eq!(rows, (0, 1));

    // A clean stop revokes the lease: the node key goes at once.
    assert!(node.stop().await.success());
    let etcd_client =
        cluster::etcd::Etcd::new(&[etcd.url().to_owned()], Duration::from_secs(1)).expect("client");
    let keys = etcd_client
        .get_prefix("/switch/test/", 100)
        .await
        .expect("etcd");
    assert!(keys.is_empty(), "{} keys left", keys.len());
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cluster_node_without_postgresql_refuses_to_start() {
    let dir = data_dir();
    let config = cluster_config(&dir, "", "http://127.0.0.1:1", "n1");
    let (mut command, _) = switch_command(&dir.join("data"));
    let out = command
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .output()
        .expect("switch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cluster mode needs archive.url = \"postgres://"),
        "{stderr}"
    );
}
