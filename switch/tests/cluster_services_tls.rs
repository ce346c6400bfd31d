//! Cluster mode with its services over TLS, certificates made here
//! (rcgen).
//!
//! etcd (`cluster.etcd_ca_file`, `etcd_cert_file`, `etcd_key_file`), on
//! a real etcd serving its clients over TLS only and requiring client
//! certificates: a node with the CA and its certificate joins, serves
//! every shard and approves; `switch cluster status` reads the cluster
//! over TLS; a node without a client certificate, or with another CA's,
//! is refused by etcd and does not start, saying it could not join; an
//! `https://` URL without the CA, or a plain one with it, is refused at
//! load naming `cluster.etcd_endpoints`.
//!
//! PostgreSQL (`sslrootcert` and `sslmode` in `archive.url`, as libpq
//! names them), on a real server with `ssl = on`: every session of a node
//! is TLS (`pg_stat_ssl`) and the node approves; a node given another
//! CA, or `sslmode=require` without a CA, does not start, naming
//! `archive.url`.

mod common;

use std::path::Path;
use std::time::Duration;

use cluster::testing::{EtcdServer, ServerTls};

use common::nodes::*;
use common::*;

/// The `[cluster]` keys of TLS to etcd: the CA, and node `client`'s
/// certificate and key when given.
fn etcd_tls(pki: &Path, client: Option<&str>) -> String {
    let path = |file: &str| pki.join(file).display().to_string();
    let mut keys = format!("etcd_ca_file = \"{}\"\n", path("ca.pem"));
    if let Some(name) = client {
        keys.push_str(&format!(
            "etcd_cert_file = \"{}\"\netcd_key_file = \"{}\"\n",
            path(&format!("{name}.pem")),
            path(&format!("{name}.key"))
        ));
    }
    keys
}

/// Runs the switch with node `name`'s configuration until it exits: its
/// success and its stderr.
fn run_to_exit(dir: &Path, url: &str, etcd: &str, name: &str, extra: &str) -> (bool, String) {
    let config = cluster_config_with(dir, url, etcd, name, extra);
    let (mut command, _) = switch_command(&dir.join(format!("data-{name}")));
    let out = command
        .arg("--config")
        .arg(&config)
        .output()
        .expect("switch");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_etcd_over_tls_with_their_client_certificates() {
    let dir = data_dir();
    let pki = pki(&dir, &["etcd", "n1"]);
    let etcd = EtcdServer::with_tls(&ServerTls {
        cert: pki.join("etcd.pem"),
        key: pki.join("etcd.key"),
        ca: pki.join("ca.pem"),
    })
    .expect("etcd over TLS (run scripts/install-test-deps.sh)");
    assert!(etcd.url().starts_with("https://"), "{}", etcd.url());
    let (_pg, url) = off_runtime(|| {
        let pg = archive::testing::PgServer::new().expect("PostgreSQL for tests");
        let url = pg.create_database("cluster_etcd_tls").expect("database");
        (pg, url)
    });

    // With the CA and its certificate: joins, serves every shard, approves.
    let (n1, mut client) =
        launch_node(&dir, &url, etcd.url(), "n1", &etcd_tls(&pki, Some("n1"))).await;
    n1.wait_metric(
        "switch_cluster_served_shards",
        Duration::from_secs(15),
        |v| v == f64::from(SHARDS),
    )
    .await;
    let resp = client.call(&sale(&card(1), 1_000)).await;
    assert_eq!(resp.code(), "00");

    // `switch cluster status` over TLS, with the same files.
    let path = |file: &str| pki.join(file).display().to_string();
    let (etcd_url, ca, cert, key) = (
        etcd.url().to_owned(),
        path("ca.pem"),
        path("n1.pem"),
        path("n1.key"),
    );
    let status = off_runtime(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
            .args(["cluster", "status", "--etcd", &etcd_url, "--prefix"])
            .args(["/switch/test", "--json", "--etcd-ca", &ca])
            .args(["--etcd-cert", &cert, "--etcd-key", &key])
            .output()
            .expect("switch cluster status")
    });
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let owned: usize = json["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .filter(|s| s["owner"] == "n1")
        .count();
    assert_eq!(owned, SHARDS as usize, "{stdout}");

    // Refused by etcd: no client certificate, or another CA's.
    for (name, extra) in [
        ("n2", etcd_tls(&pki, None)),
        ("n3", etcd_tls(&pki, Some("stranger"))),
    ] {
        let (dir, url, etcd_url) = (dir.clone(), url.clone(), etcd.url().to_owned());
        let (ok, stderr) = off_runtime(move || run_to_exit(&dir, &url, &etcd_url, name, &extra));
        assert!(!ok, "{name}: {stderr}");
        assert!(
            stderr.contains("joining the cluster in etcd"),
            "{name}: {stderr}"
        );
    }
    // Refused at load: https without the CA, http with it.
    let plain = etcd.url().replacen("https://", "http://", 1);
    for (etcd_url, extra) in [
        (etcd.url().to_owned(), String::new()),
        (plain, etcd_tls(&pki, Some("n1"))),
    ] {
        let (ok, stderr) = run_to_exit(&dir, &url, &etcd_url, "n4", &extra);
        assert!(!ok, "{stderr}");
        assert!(stderr.contains("cluster.etcd_endpoints"), "{stderr}");
    }
    // The node serving all along is unaffected.
    let resp = client.call(&sale(&card(2), 1_000)).await;
    assert_eq!(resp.code(), "00");
    drop(n1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reaches_postgresql_over_tls_verified_against_its_ca() {
    let dir = data_dir();
    let pki = pki(&dir, &["pg"]);
    let (etcd, pg, url) = services("cluster_pg_tls");
    let read = |name: &str| std::fs::read_to_string(pki.join(name)).expect("pem");
    let (cert, key) = (read("pg.pem"), read("pg.key"));
    off_runtime(|| pg.enable_tls(&cert, &key)).expect("TLS on the server");
    let with_ca = |ca: &str| {
        format!(
            "{url}?sslmode=verify-full&sslrootcert={}",
            pki.join(ca).display()
        )
    };

    // Verified against the CA: every session of the node is TLS.
    let tls_url = with_ca("ca.pem");
    let (n1, mut client) = launch_node(&dir, &tls_url, etcd.url(), "n1", "").await;
    n1.wait_metric(
        "switch_cluster_served_shards",
        Duration::from_secs(15),
        |v| v == f64::from(SHARDS),
    )
    .await;
    assert_eq!(client.call(&sale(&card(1), 1_000)).await.code(), "00");
    let sessions = |ssl: bool| {
        count(
            &url,
            &format!(
                "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
                 WHERE application_name LIKE 'switch%' AND ssl = {ssl}"
            ),
        )
    };
    assert!(
        sessions(true) >= 2,
        "the node's TLS sessions: {}",
        sessions(true)
    );
    assert_eq!(sessions(false), 0, "no plain session of the node");
    assert_eq!(count(&url, PAYMENT_RECORDS), 1);

    // Another CA, or TLS asked for without a CA: the node does not start.
    let stranger = with_ca("stranger.pem");
    let require = format!("{url}?sslmode=require");
    for (name, bad) in [("n2", stranger), ("n3", require)] {
        let (dir, etcd_url) = (dir.clone(), etcd.url().to_owned());
        let (ok, stderr) = off_runtime(move || run_to_exit(&dir, &bad, &etcd_url, name, ""));
        assert!(!ok, "{name}: {stderr}");
        assert!(stderr.contains("archive.url"), "{name}: {stderr}");
    }
    assert_eq!(client.call(&sale(&card(2), 1_000)).await.code(), "00");
    drop(n1);
    let _ = std::fs::remove_dir_all(&dir);
}
