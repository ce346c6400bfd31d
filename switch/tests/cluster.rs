//! Cluster mode's first slice as the binary shows it: `[cluster]` without
//! a PostgreSQL archive is refused at start, and `switch cluster status` prints
//! what a real etcd holds of two nodes (and, with the harness, what three
//! real nodes say of themselves in `GET /cluster`) (`cluster::testing::EtcdServer`;
//! without the binary it fails, naming scripts/install-test-deps.sh).

use std::process::Command;
use std::time::{Duration, Instant};

use cluster::etcd::Etcd;
use cluster::member::{Member, Settings};
use cluster::testing::EtcdServer;

const SWITCH: &str = env!("CARGO_BIN_EXE_switch");

#[test]
fn start_refuses_a_cluster_section() {
    let dir = std::env::temp_dir().join(format!("switch-cluster-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("switch.toml");
    let section = "\n[cluster]\nnode_id = \"n1\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nlink_addr = \"127.0.0.1:7601\"\n";
    std::fs::write(&config, format!("{}{section}", switch::EMBEDDED_DEFAULT)).unwrap();
    let out = Command::new(SWITCH)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--iso-addr",
            "127.0.0.1:0",
            "--frame-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cluster mode needs archive.url"),
        "{stderr}"
    );
}

/// `switch cluster status` of cluster `status` at `etcd`, with `flag`.
fn status_of(etcd: &str, flag: &str) -> std::process::Output {
    Command::new(SWITCH)
        .args([
            "cluster",
            "status",
            "--etcd",
            etcd,
            "--cluster",
            "status",
            flag,
        ])
        .output()
        .unwrap()
}

#[test]
fn cluster_status_shows_nodes_shards_and_epochs() {
    let server = EtcdServer::new().unwrap_or_else(|e| panic!("test etcd: {e}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let join = |node: &str| {
        let etcd = Etcd::new(&[server.url().to_owned()], Duration::from_secs(1)).unwrap();
        let mut s = Settings::new("status", node, "127.0.0.1:7601");
        s.shard_count = 16;
        s.poll_interval = Duration::from_millis(100);
        rt.block_on(Member::join(etcd, s)).unwrap()
    };
    let (a, b) = (join("a"), join("b"));
    let start = Instant::now();
    while a.owned().len() + b.owned().len() < 16 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "shards not all owned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = status_of(server.url(), "--shards");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cluster /switch/status (2 nodes)"),
        "{stdout}"
    );
    assert!(stdout.contains("shards owned: 16"), "{stdout}");
    for m in [&a, &b] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{} ", m.node_id())))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains(&format!(" {} ", m.owned().len())), "{line}");
        // The lease's time left, as etcd counts it (TTL 3 s).
        let left = ["1s ", "2s ", "3s "];
        assert!(
            line.contains(" active ") && left.iter().any(|l| line.contains(l)),
            "{line}"
        );
        for (s, epoch) in m.owned() {
            let shard_line = format!("{s:>5}  {:<17} {epoch}", m.node_id());
            assert!(stdout.contains(&shard_line), "{shard_line:?} in {stdout}");
        }
    }
    // The same as JSON: every shard with its owner and epoch, each node's
    // shards, and no figures (these members have no HTTP listener).
    let out = status_of(server.url(), "--json");
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["prefix"], "/switch/status");
    assert_eq!(json["shards"].as_array().unwrap().len(), 16, "{json}");
    for m in [&a, &b] {
        let node = json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == m.node_id())
            .unwrap_or_else(|| panic!("{json}"));
        let owned: Vec<u32> = m.owned().into_keys().collect();
        assert_eq!(node["shards"], serde_json::json!(owned), "{json}");
        assert_eq!(node["state"], "active");
        assert_eq!(node["figures"], serde_json::Value::Null);
        for (s, epoch) in m.owned() {
            let shard = &json["shards"][s as usize];
            assert_eq!(
                (&shard["owner"], shard["epoch"].as_i64()),
                (&serde_json::json!(m.node_id()), Some(epoch)),
                "{json}"
            );
        }
    }
    // The prefix itself reads the same keys.
    let out = Command::new(SWITCH)
        .args([
            "cluster",
            "status",
            "--etcd",
            server.url(),
            "--prefix",
            "/switch/status",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("shards owned: 16"));
    // An etcd that does not answer is an error naming it.
    let out = Command::new(SWITCH)
        .args(["cluster", "status", "--etcd", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no endpoint answered"));
    drop((a, b));
}

/// A plain `GET path` on `addr`: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Each node's `GET /cluster`, once every shard is served by exactly one
/// of them, the one rendezvous hashing names (within 30 s: the nodes
/// started a moment ago).
fn settled_views(nodes: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let views: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                let (status, body) = http_get(n["http_addr"].as_str().unwrap(), "/cluster");
                assert!(status.contains("200"), "{status}: {body}");
                serde_json::from_str(&body).unwrap()
            })
            .collect();
        let mut open: Vec<u64> = views
            .iter()
            .flat_map(|v| v["shards"].as_array().unwrap().clone())
            .filter(|s| s["state"] == "open")
            .map(|s| s["shard"].as_u64().unwrap())
            .collect();
        open.sort_unstable();
        let every_shard_once = open == (0..16).collect::<Vec<u64>>();
        let only_open = views.iter().all(|v| {
            v["shards"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["state"] == "open")
        });
        // Where rendezvous hashing puts them among the three, not a
        // moment before a hand-over.
        let names: Vec<String> = nodes
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect();
        let placed = views.iter().zip(&names).all(|(v, name)| {
            v["shards"].as_array().unwrap().iter().all(|s| {
                let shard = u32::try_from(s["shard"].as_u64().unwrap()).unwrap();
                cluster::assign::owner(cluster::assign::SALT_PAYMENT, shard, &names)
                    == Some(name.as_str())
            })
        });
        if every_shard_once && only_open && placed {
            return views;
        }
        assert!(Instant::now() < deadline, "not settled in 30 s: {views:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every owner key in etcd (the harness's default prefix): shard to
/// (node, epoch).
fn owners_in_etcd(endpoints: &str) -> std::collections::BTreeMap<u32, (String, i64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let list: Vec<String> = endpoints.split(',').map(str::to_owned).collect();
    let client = Etcd::new(&list, Duration::from_secs(1)).unwrap();
    let view = runtime
        .block_on(cluster::member::read_view(&client, "/switch/default", 16))
        .unwrap();
    view.owners
        .into_iter()
        .map(|(s, o)| (s, (o.record.node_id, o.epoch)))
        .collect()
}

#[test]
fn the_harness_script_starts_and_stops_three_etcd_members_postgres_with_its_standby_and_three_nodes(
) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster.sh");
    let dir = std::env::temp_dir().join(format!("switch-cluster-harness-{}", std::process::id()));
    let run = |action: &str| {
        let out = Command::new("bash")
            .arg(script)
            .arg(action)
            .arg(&dir)
            .env("ETCD_MEMBERS", "3")
            .env("PG_STANDBY", "1")
            .env("SWITCH_BIN", SWITCH)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "cluster.sh {action}: {text}");
        text
    };
    run("up");
    let env = std::fs::read_to_string(dir.join("services.env")).unwrap();
    let value = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {env}"))
            .to_owned()
    };
    let (etcd, pg_url) = (value("ETCD_ENDPOINTS"), value("PG_URL"));
    let members: Vec<&str> = etcd.split(',').collect();
    assert_eq!(members.len(), 3, "{etcd}");
    let nodes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("nodes.json")).unwrap()).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 3);

    // Each node's GET /cluster: its own shards, open once loaded; together
    // the 16, each served once, and the same as etcd's owners.
    let views = settled_views(nodes);
    let owners = owners_in_etcd(&etcd);
    for (n, v) in nodes.iter().zip(&views) {
        assert_eq!(v["node_id"], n["name"], "{v}");
        assert_eq!(v["state"], "active", "{v}");
        assert_eq!(v["lease_valid"], true, "{v}");
        assert_eq!(v["commit"]["failed"], false, "{v}");
        assert!(v["commit"]["queue"].as_u64().is_some(), "{v}");
        for s in v["shards"].as_array().unwrap() {
            let shard = u32::try_from(s["shard"].as_u64().unwrap()).unwrap();
            assert_eq!(
                owners.get(&shard),
                Some(&(
                    n["name"].as_str().unwrap().to_owned(),
                    s["epoch"].as_i64().unwrap()
                )),
                "{v}"
            );
        }
    }
    let out = Command::new(SWITCH)
        .args(["cluster", "status", "--etcd", &etcd])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains("cluster /switch/default (3 nodes)"),
        "{status}"
    );
    assert!(status.contains("shards owned: 16"), "{status}");
    // The nodes' own figures, in the served column: all 16 between them.
    let served: usize = status
        .lines()
        .filter(|l| l.starts_with("  n") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            l.split_whitespace()
                .nth(5)
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("served in {l:?}: {status}"))
        })
        .sum();
    assert_eq!(served, 16, "{status}");
    assert!(!status.contains("no answer to GET /cluster"), "{status}");
    let pids: Vec<u64> = nodes.iter().map(|n| n["pid"].as_u64().unwrap()).collect();
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["name"], format!("n{}", i + 1));
        for key in ["iso_addr", "frame_addr", "http_addr", "link_addr"] {
            let addr = n[key].as_str().unwrap();
            assert!(std::net::TcpStream::connect(addr).is_ok(), "{key} {addr}");
        }
    }
    // The URL names the primary and its standby, the nodes write to the
    // primary, and the primary's commits wait for the standby.
    let hosts = pg_url
        .strip_prefix("postgresql://postgres@")
        .and_then(|u| u.split_once('/'))
        .map(|(hosts, _)| hosts.split(',').map(str::to_owned).collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(hosts.len(), 2, "{pg_url}");
    assert!(
        pg_url.ends_with("?target_session_attrs=read-write"),
        "{pg_url}"
    );
    let mut db = postgres::Client::connect(&pg_url, postgres::NoTls).unwrap();
    cluster::fence::install(&mut db).unwrap();
    let sync: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(sync, 1, "one synchronous standby");
    drop(db);
    // `cluster status --pg` reads the primary through the two-host URL:
    // its address, its streaming synchronous standby, and every owned
    // shard fenced at etcd's epoch.
    let out = Command::new(SWITCH)
        .args(["cluster", "status", "--etcd", &etcd, "--pg", &pg_url])
        .output()
        .unwrap();
    let with_pg = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{with_pg}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        with_pg.contains(&format!("postgres {}: primary, 1 standby(s):", hosts[0])),
        "{with_pg}"
    );
    assert!(
        with_pg.contains(" streaming (sync), replay lag "),
        "{with_pg}"
    );
    assert!(
        with_pg.contains("epochs: every owned shard's as in etcd"),
        "{with_pg}"
    );
    assert!(!value("PG_STANDBY_DATA").is_empty(), "{env}");
    run("down");
    for host in &hosts {
        assert!(
            std::net::TcpStream::connect(host).is_err(),
            "PostgreSQL still listens on {host}"
        );
    }
    for pid in pids {
        // Gone, or a zombie its new parent has not reaped yet (the state
        // after the command name in /proc/PID/stat is Z): not running.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        assert!(
            stat.is_empty() || state.starts_with('Z'),
            "node {pid} still runs: {stat}"
        );
    }
    // Twice is harmless.
    assert!(run("down").contains("nothing recorded"));
    for m in members {
        assert!(
            std::net::TcpStream::connect(m.trim_start_matches("http://")).is_err(),
            "{m}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
