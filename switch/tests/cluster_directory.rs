//! Terminals and merchant settings changed at run time in cluster mode
//! (docs/cluster.md, Run-time terminals and merchants), on a real etcd and
//! PostgreSQL with two switch processes: a change through one node (over
//! internal frames, or `switch terminals` with a node's configuration)
//! is the cluster's directory in PostgreSQL, served by every node within
//! the contract's 2 s, and a node started later serves it from the first
//! request.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::nodes::*;
use common::*;
use switch::{KeyAdmin, Owner};

const MID1: &str = "DEMO00000000001";
/// The contract's bound for a change to be served.
const APPLIED_WITHIN: Duration = Duration::from_secs(2);

/// A new key of merchant `mid` in node `node`'s data directory.
fn key(dir: &Path, node: &str, mid: &str) -> (String, String) {
    let k = KeyAdmin::new(&dir.join(format!("data-{node}")))
        .create_key(Owner::Merchant(mid.into()), "test")
        .expect("create key");
    (k.client_id, k.secret)
}

/// Sends sales on terminal `tid` of MID1 through `addr` until one is
/// answered `code`, at most [`APPLIED_WITHIN`]; how long it took.
async fn wait_code(addr: SocketAddr, tid: &str, code: &str, seed: u64) -> Duration {
    let started = Instant::now();
    let mut c = Client::connect(addr).await;
    let mut i = 0;
    loop {
        let r = c
            .call(&sale(&card(seed + i), 100).set(41, tid).set(42, MID1))
            .await;
        if r.code() == code {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < APPLIED_WITHIN,
            "{tid} through {addr}: {} after {:?}, waiting for {code}",
            r.code(),
            started.elapsed()
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `switch --config CONFIG terminals ACTION TID --by test`: its stdout.
fn terminals(config: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .arg("--config")
        .arg(config)
        .arg("terminals")
        .args(args)
        .args(["--by", "test"])
        .output()
        .expect("switch runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_changed_through_one_node_is_served_by_every_node() {
    let (etcd, _pg, url) = services("cluster_directory");
    let dir = data_dir();
    let mut nodes = two_nodes(&dir, &url, etcd.url()).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    // Unknown: 58 through either node.
    let r = Client::connect(n2.iso)
        .await
        .call(&sale(&card(1), 100).set(41, "RUNT0001").set(42, MID1))
        .await;
    assert_eq!(r.code(), "58");

    // Added over internal frames through n1: approved through n2 too.
    let c = frames_client(n1.frame, &key(&dir, "n1", MID1)).await;
    let r = c
        .add_terminal("RUNT0001", None, Some("kiosk"))
        .await
        .expect("add");
    assert_eq!(r.code(), "00", "{r:?}");
    wait_code(n1.iso, "RUNT0001", "00", 100).await;
    wait_code(n2.iso, "RUNT0001", "00", 200).await;
    // n2's key lists it (n2 reads the cluster's directory).
    let c2 = frames_client(n2.frame, &key(&dir, "n2", MID1)).await;
    let r = c2.list_terminals(None, None, None).await.expect("list");
    assert!(
        r.terminals.iter().any(|t| t.terminal_id == "RUNT0001"),
        "{r:?}"
    );

    // Disabled with n2's configuration on the command line: 58 through n1.
    let out = terminals(&dir.join("n2.toml"), &["disable", "RUNT0001"]);
    assert!(out.contains("RUNT0001"), "{out}");
    wait_code(n1.iso, "RUNT0001", "58", 300).await;
    wait_code(n2.iso, "RUNT0001", "58", 400).await;
    // Each change is in the cluster's audit, with who made it.
    let audit = count(&url, "SELECT count(*) FROM cluster_directory_audit");
    assert_eq!(audit, 2, "one audit line per change");
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM cluster_directory_audit WHERE line LIKE '%\"who\":\"test\"%terminal.disable%'"
        ),
        1
    );
    // A merchant is not added at run time in cluster mode.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .arg("--config")
        .arg(dir.join("n1.toml"))
        .args([
            "merchants",
            "add",
            "NEWM00000000001",
            "--currencies",
            "978",
            "--by",
            "test",
        ])
        .output()
        .expect("switch runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cluster mode"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Enabled again, then n2 restarts: it serves the cluster's directory
    // from its first request, not its own (empty) file.
    terminals(&dir.join("n1.toml"), &["enable", "RUNT0001"]);
    wait_code(n2.iso, "RUNT0001", "00", 500).await;
    let mut n2 = nodes.pop().expect("n2");
    assert!(n2.stop().await.success(), "a clean stop");
    let (n2, _) = launch_node(&dir, &url, etcd.url(), "n2", "").await;
    wait_split(&nodes[0], &n2).await;
    let r = Client::connect(n2.iso)
        .await
        .call(&sale(&card(600), 100).set(41, "RUNT0001").set(42, MID1))
        .await;
    assert_eq!(r.code(), "00", "the restarted node knows the terminal");
    assert!(
        !dir.join("data-n2").join("directory.json").exists(),
        "no node's own directory file is written in cluster mode"
    );
}
