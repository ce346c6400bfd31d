//! Cluster-mode nodes for tests (`cluster_node.rs`, `cluster_rebalance.rs`):
//! their configuration on a throwaway etcd and PostgreSQL, PostgreSQL
//! queries, and a mixed-load generator whose every answer is kept for
//! checking afterwards.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cluster::testing::EtcdServer;

use super::{
    capture, card, free_port, off_runtime, preauth, sale, Client, Launch, Proc, Req, Resp,
};

/// The shards of the test clusters (the smallest count allowed).
pub const SHARDS: u32 = 16;
/// Reconnections one request may need before a test gives up on it: a
/// connection to a node that stops is closed, and the request is sent
/// again (the same message, a repeat) through another node.
pub const RECONNECTS_PER_REQUEST_MAX: usize = 6;

/// Every node's card-token key (cluster mode needs one, the same on every
/// node).
pub const TOKEN_KEY: &str = "[security]\ntoken_key_hex = \
     \"7b1e5d0c3a9f4e2b8c6d1a0f5e3b9c7d2a4f6e8b0c1d3e5f7a9b2c4d6e8f0a1b\"\n";

/// Payment records (type 1; counted card attempts are type 3).
pub const PAYMENT_RECORDS: &str = "SELECT count(*) FROM cluster_records WHERE record_type = 1";

/// The embedded default with archive `url` and a `[cluster]` section for
/// node `node_id` on `etcd`, plus `extra` (more merchants) at the end.
pub fn cluster_config_with(
    dir: &Path,
    url: &str,
    etcd: &str,
    node_id: &str,
    extra: &str,
) -> PathBuf {
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
    std::fs::write(&path, format!("{base}\n{TOKEN_KEY}{section}{extra}")).expect("config");
    path
}

/// Starts node `node_id` of a cluster on `etcd` with the default's
/// merchants plus `extra` ([`cluster_config_with`]), its data in
/// `dir/data-<node_id>` and its log in `dir`: the process and a client.
/// Does not wait for its shards.
pub async fn launch_node(
    dir: &Path,
    url: &str,
    etcd: &str,
    node_id: &str,
    extra: &str,
) -> (Proc, Client) {
    let config = cluster_config_with(dir, url, etcd, node_id, extra);
    let data = dir.join(format!("data-{node_id}"));
    let launch = Launch {
        dir: &data,
        config: Some(&config),
        logs: dir,
        log_level: "info",
    };
    launch.start(node_id).await
}

/// Starts node `node_id` and waits until it serves every shard.
pub async fn start_node(dir: &Path, url: &str, etcd: &str, node_id: &str) -> (Proc, Client) {
    let (node, client) = launch_node(dir, url, etcd, node_id, "").await;
    node.wait_metric(
        "switch_cluster_served_shards",
        Duration::from_secs(15),
        |v| v == f64::from(SHARDS),
    )
    .await;
    (node, client)
}

/// The node id etcd names as the owner of the demo merchant's shard, once
/// it is the one rendezvous hashing gives among `nodes` (no hand-over of
/// it in flight).
pub async fn demo_owner_of(etcd: &EtcdServer, nodes: &[&str]) -> String {
    let shard = cluster::assign::shard_of_merchant(b"DEMO00000000001", SHARDS);
    let names: Vec<String> = nodes.iter().map(|n| (*n).to_owned()).collect();
    let desired = cluster::assign::owner(cluster::assign::SALT_PAYMENT, shard, &names)
        .expect("an owner")
        .to_owned();
    let client =
        cluster::etcd::Etcd::new(&[etcd.url().to_owned()], Duration::from_secs(1)).expect("client");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let view = cluster::member::read_view(&client, "/switch/test", SHARDS)
            .await
            .expect("view");
        if view.owners.get(&shard).map(|o| &o.record.node_id) == Some(&desired) {
            return desired;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{desired} never owned shard {shard}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`demo_owner_of`] two nodes, n1 and n2.
pub async fn demo_owner(etcd: &EtcdServer) -> String {
    demo_owner_of(etcd, &["n1", "n2"]).await
}

pub fn signal(p: &Proc, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success(), "kill {sig}");
}

/// [`cluster_config_with`] the default's merchants only.
pub fn cluster_config(dir: &Path, url: &str, etcd: &str, node_id: &str) -> PathBuf {
    cluster_config_with(dir, url, etcd, node_id, "")
}

/// One merchant per shard (`(F42, F41)`): the first id `JOINM<n>` whose
/// shard is each shard in turn, with one terminal `JOIN<shard>`, so mixed
/// load reaches every shard.
pub fn merchant_per_shard() -> Vec<(String, String)> {
    (0..SHARDS)
        .map(|shard| {
            let id = (0_u64..)
                .map(|n| format!("JOINM{n:010}"))
                .find(|id| cluster::assign::shard_of_merchant(id.as_bytes(), SHARDS) == shard)
                .expect("some id lands on every shard");
            (id, format!("JOIN{shard:04}"))
        })
        .collect()
}

/// `[[merchants]]` sections for `merchants`, like the default's first.
pub fn merchants_toml(merchants: &[(String, String)]) -> String {
    merchants
        .iter()
        .map(|(id, terminal)| {
            format!(
                "\n[[merchants]]\nid = \"{id}\"\nname = \"Shard merchant\"\n\
                 terminals = [\"{terminal}\"]\ncurrencies = [978]\nover_capture_pct = 20\n\
                 refunds_allowed = true\nmoto_allowed = true\nhold_period_h = 168\n"
            )
        })
        .collect()
}

/// A throwaway etcd and PostgreSQL with database `name`.
pub fn services(name: &str) -> (EtcdServer, archive::testing::PgServer, String) {
    let etcd = EtcdServer::new().expect("etcd for tests (run scripts/install-test-deps.sh)");
    let (pg, url) = off_runtime(|| {
        let pg = archive::testing::PgServer::new()
            .expect("PostgreSQL for tests (run scripts/install-test-deps.sh)");
        let url = pg.create_database(name).expect("database");
        (pg, url)
    });
    (etcd, pg, url)
}

/// A query's single number, off the runtime.
pub fn count(url: &str, sql: &str) -> i64 {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    off_runtime(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        db.query_one(sql.as_str(), &[]).expect(&sql).get(0)
    })
}

/// Every payment image in `cluster_records`, the last of each id.
pub fn payments(url: &str) -> std::collections::BTreeMap<u64, engine::lifecycle::Payment> {
    let url = url.to_owned();
    let rows: Vec<Vec<u8>> = off_runtime(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        db.query(
            "SELECT payload FROM cluster_records WHERE record_type = 1 ORDER BY n",
            &[],
        )
        .expect("records")
        .iter()
        .map(|r| r.get(0))
        .collect()
    });
    let mut out = std::collections::BTreeMap::new();
    for payload in rows {
        let rec = engine::record::decode(&payload).expect("a record that decodes");
        out.insert(rec.payment.id, rec.payment);
    }
    out
}

/// Every payment image in the archive's `payments` table (what the
/// cluster drainer wrote: the latest of each id).
pub fn archived_payments(url: &str) -> std::collections::BTreeMap<u64, engine::lifecycle::Payment> {
    let url = url.to_owned();
    let rows: Vec<Vec<u8>> = off_runtime(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        db.query("SELECT record FROM payments", &[])
            .expect("payments")
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    rows.iter()
        .map(|b| {
            let p = engine::record::decode(b)
                .expect("a record that decodes")
                .payment;
            (p.id, p)
        })
        .collect()
}

/// The sum of metric `name` over `nodes`.
pub async fn sum_metric(nodes: &[Proc], name: &str) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += n.metric(name).await;
    }
    sum
}

/// Polls the served-shards gauges of `nodes` every 20 ms until together
/// they serve every shard; fails after `bound`.
pub async fn wait_all_served(nodes: &[&Proc], bound: Duration) {
    let started = std::time::Instant::now();
    loop {
        let mut served = 0.0;
        for n in nodes {
            served += n.metric("switch_cluster_served_shards").await;
        }
        if served == f64::from(SHARDS) {
            return;
        }
        assert!(started.elapsed() < bound, "served {served}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until nodes `a` and `b` together serve every shard, each some.
pub async fn wait_split(a: &Proc, b: &Proc) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (x, y) = (
            a.metric("switch_cluster_served_shards").await,
            b.metric("switch_cluster_served_shards").await,
        );
        if x > 0.0 && y > 0.0 && x + y == f64::from(SHARDS) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "served {x} + {y}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Launches two nodes on `etcd` and PostgreSQL `url` (their data and
/// logs in `dir`) and waits until they split the shards.
pub async fn two_nodes(dir: &Path, url: &str, etcd: &str) -> Vec<Proc> {
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let (p, _) = launch_node(dir, url, etcd, name, "").await;
        nodes.push(p);
    }
    wait_split(&nodes[0], &nodes[1]).await;
    nodes
}

/// The mixed load of four [`mixed_worker`]s, two through each of two
/// nodes (so some requests are forwarded), on the default's two
/// merchants.
pub struct MixedLoad {
    /// Set to stop the workers.
    stop: Arc<AtomicBool>,
    /// Their tasks.
    workers: Vec<tokio::task::JoinHandle<Worked>>,
}

impl MixedLoad {
    /// Starts it through `nodes` (two).
    pub fn start(nodes: &[Proc]) -> MixedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let merchants = Arc::new(vec![
            ("DEMO00000000001".to_owned(), "DEMO0001".to_owned()),
            ("DEMO00000000002".to_owned(), "DEMO0101".to_owned()),
        ]);
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.iso).collect();
        let workers = (0..4_u64)
            .map(|w| {
                tokio::spawn(mixed_worker(
                    addrs.clone(),
                    (w % 2) as usize,
                    w,
                    merchants.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        MixedLoad { stop, workers }
    }

    /// Stops it: every answered change.
    pub async fn finish(self) -> Vec<Answered> {
        self.stop.store(true, Ordering::Relaxed);
        let mut answered = Vec::new();
        for w in self.workers {
            answered.extend(w.await.expect("a worker").answered);
        }
        answered
    }
}

/// The approvals of `answered`, and how many were answered 91 or 96
/// (PostgreSQL away); any other answer fails the test.
pub fn approvals_and_pauses(answered: &[Answered]) -> (Vec<&Answered>, usize) {
    let mut paused = 0;
    for (req, resp, _) in answered {
        match resp.code().as_str() {
            "00" => {}
            "91" | "96" => paused += 1,
            other => panic!("answer {other} to {} {req:?}", req.mti),
        }
    }
    let approvals = answered
        .iter()
        .filter(|(_, r, _)| r.code() == "00")
        .collect();
    (approvals, paused)
}

/// One answered change of the mixed load: the request, its answer, and
/// the answer that names its payment's F37 + F38 (a capture's is its
/// pre-authorization's).
pub type Answered = (Req, Resp, Resp);

/// Each approval of `approved` is in PostgreSQL once: its payment found
/// once by its F37 + F38 (a capture's payment captured), and no record
/// committed twice.
pub fn approvals_in_postgresql_once<'a>(url: &str, approved: impl Iterator<Item = &'a Answered>) {
    let images = payments(url);
    let mut by_key: std::collections::BTreeMap<
        (Vec<u8>, Vec<u8>),
        Vec<&engine::lifecycle::Payment>,
    > = std::collections::BTreeMap::new();
    for p in images.values() {
        by_key
            .entry((p.rrn.to_vec(), p.auth_code.to_vec()))
            .or_default()
            .push(p);
    }
    for (req, _, payment) in approved {
        let key = (payment.text(37).into_bytes(), payment.text(38).into_bytes());
        let found = by_key.get(&key).map_or(&[][..], Vec::as_slice);
        if found.len() != 1 {
            eprintln!(
                "records of the payments by that F37 + F38, or whose image held it: {}",
                records_naming(url, &key.0, &key.1)
            );
        }
        assert_eq!(
            found.len(),
            1,
            "approved {} (F11 {}, F37 {}, F38 {}, F42 {}) not in PostgreSQL once: {} payments by that F37 + F38: {found:?}",
            req.mti,
            String::from_utf8_lossy(req.fields.get(&11).map(Vec::as_slice).unwrap_or_default()),
            payment.text(37),
            payment.text(38),
            String::from_utf8_lossy(req.fields.get(&42).map(Vec::as_slice).unwrap_or_default()),
            found.len()
        );
        if req.mti == "0220" {
            assert!(
                found[0].captured_minor > 0,
                "an approved capture not captured"
            );
        }
    }
    assert_eq!(
        count(
            url,
            "SELECT count(*) FROM (SELECT 1 FROM cluster_records \
             GROUP BY node, epoch, shard, seq HAVING count(*) > 1) d"
        ),
        0,
        "a record committed twice"
    );
}

/// Every payment record (not only the latest image of each payment) whose
/// image holds F37 `rrn` and F38 `auth`, or whose payment id is one of
/// theirs: by `n`, its node, shard, epoch, payment id, status and F37 +
/// F38 (for a failure's diagnosis).
pub fn records_naming(url: &str, rrn: &[u8], auth: &[u8]) -> String {
    let url = url.to_owned();
    let rows: Vec<(i64, String, i32, i64, Vec<u8>)> = off_runtime(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        db.query(
            "SELECT n, node, shard, epoch, payload FROM cluster_records WHERE record_type = 1 ORDER BY n",
            &[],
        )
        .expect("records")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
    });
    let decoded: Vec<_> = rows
        .iter()
        .filter_map(|(n, node, shard, epoch, payload)| {
            let rec = engine::record::decode(payload).ok()?;
            Some((*n, node.clone(), *shard, *epoch, rec.payment))
        })
        .collect();
    let ids: std::collections::BTreeSet<u64> = decoded
        .iter()
        .filter(|d| d.4.rrn[..] == *rrn && d.4.auth_code[..] == *auth)
        .map(|d| d.4.id)
        .collect();
    decoded
        .iter()
        .filter(|d| ids.contains(&d.4.id))
        .map(|(n, node, shard, epoch, p)| {
            format!(
                "n {n} node {node} shard {shard} epoch {epoch}: payment {} {:?} F37 {} F38 {}",
                p.id,
                p.status,
                String::from_utf8_lossy(&p.rrn),
                String::from_utf8_lossy(&p.auth_code)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What one worker of the mixed load did.
#[derive(Default)]
pub struct Worked {
    /// Every answered change.
    pub answered: Vec<Answered>,
    /// Requests sent again through another node because their connection
    /// closed before the answer (the node stopped).
    pub resent: usize,
}

/// A worker of the mixed load: sales, pre-authorizations and the captures
/// of approved ones, one merchant of `merchants` after the other, one
/// request at a time with a 10 ms pause (about 100 a second on an idle
/// machine), through `addrs[first]`, until `stop`. A connection that
/// closes before its answer (its node stopped) is replaced by one to the
/// next address that accepts, and the request sent again there; a request
/// not answered within the client's timeout on an open connection fails
/// the test (a request left unanswered).
pub async fn mixed_worker(
    addrs: Vec<SocketAddr>,
    first: usize,
    worker: u64,
    merchants: Arc<Vec<(String, String)>>,
    stop: Arc<AtomicBool>,
) -> Worked {
    let mut at = first % addrs.len();
    let mut client = Client::connect(addrs[at]).await;
    let mut out = Worked::default();
    let mut i = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        let seed = 1_000_000 + worker * 100_000 + i;
        let (f42, f41) = &merchants[((worker + i) % merchants.len() as u64) as usize];
        let req = if i % 2 == 0 {
            sale(&card(seed), 500 + i)
        } else {
            preauth(&card(seed), 700 + i)
        };
        let req = req.set(41, f41).set(42, f42);
        let resp = call_any(&mut client, &mut at, &addrs, &req, &mut out.resent).await;
        if req.mti == "0100" && resp.code() == "00" {
            let cap = capture(&req, 700 + i);
            let cap_resp = call_any(&mut client, &mut at, &addrs, &cap, &mut out.resent).await;
            out.answered.push((cap, cap_resp, resp.clone()));
        }
        out.answered.push((req, resp.clone(), resp));
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out
}

/// `req`'s answer through `client`; when its connection closes first, the
/// same message again through the next of `addrs` that accepts.
async fn call_any(
    client: &mut Client,
    at: &mut usize,
    addrs: &[SocketAddr],
    req: &Req,
    resent: &mut usize,
) -> Resp {
    for _ in 0..RECONNECTS_PER_REQUEST_MAX {
        match client.try_call(req).await {
            Ok(resp) => return resp,
            Err(false) => panic!(
                "{} {} unanswered on an open connection to {}",
                req.mti,
                req.fields
                    .get(&11)
                    .map(|f| String::from_utf8_lossy(f))
                    .unwrap_or_default(),
                addrs[*at]
            ),
            Err(true) => {
                *resent += 1;
                *client = reconnect(at, addrs).await;
            }
        }
    }
    panic!("{} not answered through {addrs:?}", req.mti);
}

/// A connection to the next of `addrs` after `at` that accepts one.
async fn reconnect(at: &mut usize, addrs: &[SocketAddr]) -> Client {
    for _ in 0..addrs.len() * 10 {
        *at = (*at + 1) % addrs.len();
        if let Ok(stream) = tokio::net::TcpStream::connect(addrs[*at]).await {
            return Client::from_stream(stream);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no node of {addrs:?} accepts a connection");
}

/// The PEM files of a test PKI, in `dir/pki`: `ca.pem`, and for each of
/// `names` `NAME.pem`/`.key` (the CA's, for 127.0.0.1), and
/// `stranger.pem`/`.key` (another CA's).
pub fn pki(dir: &Path, names: &[&str]) -> PathBuf {
    let dir = dir.join("pki");
    std::fs::create_dir_all(&dir).expect("pki dir");
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write");
    let ca = |pem: Option<&str>| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-signed");
        if let Some(name) = pem {
            write(name, cert.pem());
        }
        rcgen::Issuer::new(params, key)
    };
    let (cluster, other) = (ca(Some("ca.pem")), ca(None));
    let ours = names.iter().map(|n| (*n, &cluster));
    for (name, issuer) in ours.chain([("stranger", &other)]) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, issuer)
            .expect("sign");
        write(&format!("{name}.pem"), cert.pem());
        write(&format!("{name}.key"), key.serialize_pem());
    }
    dir
}

/// The owner etcd names for each shard.
pub async fn shard_owners(etcd: &str) -> std::collections::BTreeMap<u32, String> {
    let client =
        cluster::etcd::Etcd::new(&[etcd.to_owned()], Duration::from_secs(1)).expect("client");
    let view = cluster::member::read_view(&client, "/switch/test", SHARDS)
        .await
        .expect("view");
    view.owners
        .iter()
        .map(|(s, o)| (*s, o.record.node_id.clone()))
        .collect()
}

/// A card from seed `from` on whose card shard (where its velocity is
/// counted) `owners` name `node`: an authorization with it needs no link
/// when `node` decides it.
pub fn card_counted_by(
    owners: &std::collections::BTreeMap<u32, String>,
    node: &str,
    from: u64,
) -> String {
    let hex = TOKEN_KEY.split('"').nth(1).expect("the token key's hex");
    let key = codecs::card::TokenKey::new(&hex::decode(hex).expect("hex"));
    (from..from + 10_000)
        .map(card)
        .find(|pan| {
            let token = key.token_of_digits(pan.as_bytes());
            owners[&cluster::assign::shard_of_card(&token.0, SHARDS)] == node
        })
        .expect("a card of the node")
}
