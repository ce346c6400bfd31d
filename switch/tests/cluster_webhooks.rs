//! Webhooks in cluster mode (docs/cluster.md, Webhooks), on a real etcd
//! and PostgreSQL with switch processes and a real HTTP receiver that
//! checks every signature: events queued in PostgreSQL by the node serving
//! their shard, delivered by it, and by the survivor after a kill -9 of
//! that node; and a full backlog that keeps the records its events need.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::nodes::*;
use common::*;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

const MID1: &str = "DEMO00000000001";
const MID2: &str = "DEMO00000000002";
/// How long a test waits for every event to be delivered (retries back
/// off to 4 s and more while the receiver refuses).
const DELIVERED_WAIT: Duration = Duration::from_secs(40);

/// The POSTs answered 200: (Switch-Signature, body).
type Posts = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A receiver on loopback: answers 503 while `refusing`, else 200 and
/// records the POST (signature header, body).
#[derive(Clone, Default)]
struct Receiver {
    got: Posts,
    refusing: Arc<AtomicBool>,
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let sig = headers
        .get("switch-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if r.refusing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.got.lock().unwrap().push((sig, body.to_vec()));
    StatusCode::OK
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let r = Receiver::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, addr)
    }

    /// Every POST answered 200 so far, in arrival order, its signature
    /// checked: the events' JSON.
    fn delivered(&self, secrets: &BTreeMap<String, String>) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(sig, body)| {
                let json: serde_json::Value = serde_json::from_slice(body).expect("JSON");
                let mid = json["merchant_id"].as_str().expect("merchant_id");
                verify(sig, body, &secrets[mid]);
                json
            })
            .collect()
    }
}

/// Checks the contract's signature of `body` with `secret`.
fn verify(header: &str, body: &[u8], secret: &str) {
    let (t, v1) = header
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .unwrap_or_else(|| panic!("Switch-Signature `{header}`"));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    assert_eq!(v1, hex::encode(mac.finalize().into_bytes()), "signature");
}

/// `switch [--config CONFIG] webhooks ACTION --data-dir DATA ARGS…`: its
/// stdout.
fn webhooks(config: Option<&Path>, action: &str, data: &Path, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switch"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd
        .args(["webhooks", action, "--data-dir"])
        .arg(data)
        .args(args)
        .output()
        .expect("switch runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `switch --config NODE.toml webhooks set` for `mid` (the cluster's
/// endpoints, in PostgreSQL): its secret.
fn set_endpoint(dir: &Path, node: &str, mid: &str, url: &str) -> String {
    let config = dir.join(format!("{node}.toml"));
    let data = dir.join(format!("data-{node}"));
    let out = webhooks(
        Some(&config),
        "set",
        &data,
        &["--merchant", mid, "--url", url],
    );
    out.lines().last().expect("the secret").to_owned()
}

/// A frames client of merchant `mid` through node `node`.
async fn frames_of(dir: &Path, nodes: &[Proc], node: usize, mid: &str) -> switch_client::Client {
    let k = switch::KeyAdmin::new(&dir.join(format!("data-n{}", node + 1)))
        .create_key(switch::Owner::Merchant(mid.into()), "test")
        .expect("create key");
    frames_client(nodes[node].frame, &(k.client_id, k.secret)).await
}

/// Sets MID1's endpoint with n1's configuration on the command line and
/// MID2's over internal frames through n2: every node posts with both (no
/// file copied). The secrets by MID.
async fn endpoints_of_the_cluster(
    dir: &Path,
    nodes: &[Proc],
    addr: SocketAddr,
    url: &str,
) -> BTreeMap<String, String> {
    let hook = format!("http://{addr}/hook");
    let mut secrets = BTreeMap::new();
    secrets.insert(MID1.to_owned(), set_endpoint(dir, "n1", MID1, &hook));
    let r = frames_of(dir, nodes, 1, MID2)
        .await
        .set_webhook_endpoint(None, &hook)
        .await
        .expect("set");
    assert_eq!(r.code(), "00", "{r:?}");
    let secret = r
        .webhook_secret
        .expect("the secret, once")
        .expose()
        .to_owned();
    secrets.insert(MID2.to_owned(), secret.clone());
    // Read back through n1: the same endpoint, its secret masked.
    let r = frames_of(dir, nodes, 0, MID2)
        .await
        .get_webhook_endpoint(None)
        .await
        .expect("get");
    let e = r.webhook_endpoint.expect("an endpoint");
    assert_eq!(e.url, hook);
    assert!(
        e.secret_masked.ends_with(&secret[secret.len() - 4..]),
        "{e:?}"
    );
    // PostgreSQL holds them sealed: no secret in clear, and no node's
    // own file.
    let sealed: Vec<u8> = off_runtime({
        let url = url.to_owned();
        move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            c.query_one("SELECT sealed FROM webhook_endpoints WHERE id = 1", &[])
                .expect("the row")
                .get(0)
        }
    });
    for secret in secrets.values() {
        assert!(
            !sealed.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret in clear in PostgreSQL"
        );
    }
    assert!(
        !sealed.windows(4).any(|w| w == b"http"),
        "the URLs are sealed too"
    );
    for node in ["n1", "n2"] {
        assert!(!dir.join(format!("data-{node}/webhooks.json")).exists());
    }
    secrets
}

/// Polls until `done` holds of the delivered events.
async fn wait_delivered(
    r: &Receiver,
    secrets: &BTreeMap<String, String>,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + DELIVERED_WAIT;
    loop {
        let got = r.delivered(secrets);
        if done(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} POSTs received",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (type, the payment's F37 + F38) of an event.
fn kind_rrn(e: &serde_json::Value) -> (String, String) {
    let p = &e["payment"];
    (
        e["type"].as_str().unwrap_or_default().to_owned(),
        format!(
            "{}+{}",
            p["rrn"].as_str().unwrap_or_default(),
            p["auth_code"].as_str().unwrap_or_default()
        ),
    )
}

/// What the approvals of `answered` must each have been told as: (type,
/// the payment's F37 + F38).
fn told(answered: &[&Answered]) -> BTreeSet<(String, String)> {
    answered
        .iter()
        .map(|(req, _, payment)| {
            let kind = match req.mti {
                "0100" => "payment.authorized",
                "0200" => "payment.succeeded",
                _ => "payment.captured",
            };
            (
                kind.to_owned(),
                format!("{}+{}", payment.text(37), payment.text(38)),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_delivered_once_queued_and_survive_their_nodes_kill() {
    let (etcd, _pg, url) = services("cluster_webhooks");
    let dir = data_dir();
    let mut nodes = two_nodes(&dir, &url, etcd.url()).await;
    let (r, addr) = Receiver::start().await;
    let secrets = endpoints_of_the_cluster(&dir, &nodes, addr, &url).await;
    // Both nodes read the file (re-read within a second).
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Mixed traffic through both nodes, delivered as it goes.
    let load = MixedLoad::start(&nodes);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Then the receiver refuses: events pile up in PostgreSQL, and the
    // node serving MID1's shard dies with its own pending and perhaps
    // some records not yet queued.
    r.refusing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let owner = demo_owner(&etcd).await;
    let killed = usize::from(owner == "n2");
    // The dying node's shard has events it has not delivered.
    let shard = cluster::assign::shard_of_merchant(MID1.as_bytes(), SHARDS);
    let pending_of_shard =
        format!("SELECT count(*) FROM webhook_events WHERE status = 'pending' AND shard = {shard}");
    assert!(
        count(&url, &pending_of_shard) > 0,
        "no event pending at the kill"
    );
    signal(&nodes[killed], "-9");
    let _ = nodes[killed].child.wait();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answered = load.finish().await;
    let survivor = &nodes[1 - killed];
    wait_all_served(&[survivor], Duration::from_secs(10)).await;
    r.refusing.store(false, Ordering::SeqCst);

    let (approved, _) = approvals_and_pauses(&answered);
    let want = told(&approved);
    assert!(
        want.iter().filter(|(k, _)| k == "payment.captured").count() > 5,
        "too few captures to check the order: {want:?}"
    );
    // Every approval is told, whichever node took it and whoever served
    // its shard when it was made (a POST answered 503 does not count).
    let got = wait_delivered(&r, &secrets, "every approval told", |got| {
        let seen: BTreeSet<(String, String)> = got.iter().map(kind_rrn).collect();
        want.is_subset(&seen)
    })
    .await;
    // A payment's capture is never told before its authorization.
    let mut first_at: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, e) in got.iter().enumerate() {
        first_at.entry(kind_rrn(e)).or_insert(i);
    }
    for (kind, rrn) in &want {
        if kind == "payment.captured" {
            let auth = first_at[&("payment.authorized".to_owned(), rrn.clone())];
            assert!(
                auth < first_at[&(kind.clone(), rrn.clone())],
                "{rrn}: captured told before authorized"
            );
        }
    }
    // One id per change: every id received is a queued row, and every
    // row of PostgreSQL's queue ends delivered (the survivor's own and
    // the killed node's).
    let ids: BTreeSet<String> = got
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    let deadline = Instant::now() + DELIVERED_WAIT;
    while count(
        &url,
        "SELECT count(*) FROM webhook_events WHERE status <> 'delivered'",
    ) > 0
    {
        assert!(Instant::now() < deadline, "events left undelivered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = count(&url, "SELECT count(*) FROM webhook_events");
    assert_eq!(
        usize::try_from(rows).unwrap(),
        r.delivered(&secrets)
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect::<BTreeSet<_>>()
            .len(),
        "each queued event delivered, no other id"
    );
    assert!(ids.len() >= want.len());
    assert!(
        survivor
            .metric("switch_webhook_deliveries_total{result=\"delivered\"}")
            .await
            > 0.0,
        "the survivor delivered"
    );

    // The survivor's configuration lists the cluster's events from
    // PostgreSQL, and one sent again is posted again, with its id.
    let name = if killed == 0 { "n2" } else { "n1" };
    let (config, data) = (
        dir.join(format!("{name}.toml")),
        dir.join(format!("data-{name}")),
    );
    let listed = webhooks(
        Some(&config),
        "list",
        &data,
        &["--events", "--merchant", MID1, "--limit", "3"],
    );
    let lines: Vec<&str> = listed.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(MID1) && l.contains("delivered")),
        "{listed}"
    );
    let again = lines[0]
        .split_whitespace()
        .next()
        .expect("an id")
        .to_owned();
    let before = r.delivered(&secrets).len();
    let out = webhooks(Some(&config), "resend", &data, &["--event", &again]);
    assert!(out.contains(&again), "{out}");
    wait_delivered(&r, &secrets, "the event sent again", |got| {
        got[before..].iter().any(|e| e["id"] == again.as_str())
    })
    .await;
    // A back office reads and resends the cluster's events over frames
    // through the survivor.
    let c = frames_of(&dir, &nodes, 1 - killed, MID1).await;
    let reply = c
        .list_webhook_events(None, None, None, None, Some(2))
        .await
        .expect("list");
    assert_eq!(reply.code(), "00", "{reply:?}");
    assert_eq!(reply.webhook_events.len(), 2, "{reply:?}");
    assert!(reply.next_cursor.is_some(), "more pages");
    assert!(reply
        .webhook_events
        .iter()
        .all(|e| e.merchant_id == MID1 && e.status == switch_client::WebhookStatus::Delivered));
    let id = reply.webhook_events[1].id.clone();
    // The payment's details carry its events and their delivery status.
    let payment = reply.webhook_events[1].payment_id;
    let details = c.get_payment(payment).await.expect("get");
    assert_eq!(details.code(), "00", "{details:?}");
    assert!(
        details
            .webhook_events
            .iter()
            .any(|e| e.id == id && e.status == switch_client::WebhookStatus::Delivered),
        "{details:?}"
    );
    // Its payments by delivery status, listed by each shard's node from
    // the cluster's queue: delivered ones, and none pending now.
    let by_status = |status| switch_client::ListQuery {
        webhook_status: Some(status),
        limit: Some(100),
        ..switch_client::ListQuery::default()
    };
    let listed = c
        .list_payments(&by_status(switch_client::WebhookStatus::Delivered))
        .await
        .expect("list");
    assert_eq!(listed.code(), "00", "{listed:?}");
    assert!(
        listed.rows.iter().any(|row| row.payment_id == payment),
        "{listed:?}"
    );
    let listed = c
        .list_payments(&by_status(switch_client::WebhookStatus::Pending))
        .await
        .expect("list");
    assert_eq!(listed.code(), "00", "{listed:?}");
    assert!(listed.rows.is_empty(), "{listed:?}");
    let before = r.delivered(&secrets).len();
    let reply = c.resend_webhook_event(&id).await.expect("resend");
    assert_eq!(reply.code(), "00", "{reply:?}");
    wait_delivered(&r, &secrets, "the event resent over frames", |got| {
        got[before..].iter().any(|e| e["id"] == id.as_str())
    })
    .await;
    // Without the cluster's configuration, the data directory's own
    // (empty) queue: no such event.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(["webhooks", "resend", "--data-dir"])
        .arg(&data)
        .args(["--event", &again])
        .output()
        .expect("switch runs");
    assert!(
        !out.status.success(),
        "a single node's queue knows no cluster event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_keeps_the_records_its_events_need() {
    let (etcd, _pg, url) = services("cluster_webhooks_backlog");
    let dir = data_dir();
    // Payment records are deleted as soon as archived and queued.
    let (node, mut client) = launch_node(
        &dir,
        &url,
        etcd.url(),
        "n1",
        "records_retention_s = 0\n[webhooks]\nbacklog_max = 100\n",
    )
    .await;
    node.wait_metric(
        "switch_cluster_served_shards",
        Duration::from_secs(15),
        |v| v == f64::from(SHARDS),
    )
    .await;
    let (r, addr) = Receiver::start().await;
    r.refusing.store(true, Ordering::SeqCst);
    let url_hook = format!("http://{addr}/hook");
    let secrets: BTreeMap<String, String> =
        [(MID1.to_owned(), set_endpoint(&dir, "n1", MID1, &url_hook))].into();
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // More sales than the backlog holds while the receiver refuses.
    let mut rrns = BTreeSet::new();
    for i in 0..140_u64 {
        let resp = client.call(&sale(&card(7_000 + i), 100 + i)).await;
        assert_eq!(resp.code(), "00");
        rrns.insert(format!("{}+{}", resp.text(37), resp.text(38)));
    }
    node.wait_metric(
        "switch_limit_reached_total{limit=\"webhooks_backlog_max\"}",
        Duration::from_secs(10),
        |v| v >= 1.0,
    )
    .await;
    // The drainer deletes archived payment rows every second: not those
    // whose events are not queued yet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let queued = count(&url, "SELECT count(*) FROM webhook_events");
    assert!(queued <= 100, "the backlog holds {queued}, past its bound");
    r.refusing.store(false, Ordering::SeqCst);
    let got = wait_delivered(&r, &secrets, "every sale told", |got| {
        let seen: BTreeSet<String> = got
            .iter()
            .filter(|e| e["type"] == "payment.succeeded")
            .map(|e| kind_rrn(e).1)
            .collect();
        rrns.is_subset(&seen)
    })
    .await;
    assert!(got.len() >= rrns.len());
    assert!(
        count(
            &url,
            "SELECT count(*) FROM cluster_records WHERE record_type = 1"
        ) < 140,
        "records are deleted once their events are queued"
    );
}
