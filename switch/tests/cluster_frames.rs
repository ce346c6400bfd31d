//! Internal frames in cluster mode (docs/cluster.md, Internal frames), on
//! a real etcd and PostgreSQL with two switch processes: a MO/TO and its
//! follow-ups through either node, applied by the node serving the
//! merchant's shard; a key's scope across nodes; a provider's list merged
//! from two shards; and a change whose owner stops answering, which
//! closes the client's connection instead of guessing.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::nodes::*;
use common::*;
use switch::{KeyAdmin, Owner, Scope};
use switch_client::{EventKind, ListQuery, MotoPayment, PaymentStatus, Reply};

const MID1: &str = "DEMO00000000001";
const MID2: &str = "DEMO00000000002";
const PID: &str = "SP-0000-0042";

/// A new key of `owner` in node `node`'s data directory (each node keeps
/// its own keys file): (client id, secret).
fn key(dir: &Path, node: &str, owner: Owner) -> (String, String) {
    let k = KeyAdmin::new(&dir.join(format!("data-{node}")))
        .create_key(owner, "test")
        .expect("create key");
    (k.client_id, k.secret)
}

async fn connect(addr: SocketAddr, key: &(String, String)) -> switch_client::Client {
    frames_client(addr, key).await
}

fn order(seed: u64, amount_minor: u64, reference: &str, terminal: &str) -> MotoPayment {
    MotoPayment {
        pan: card(seed),
        expiry_yymm: "2812".into(),
        cvv2: Some("123".into()),
        cardholder_name: None,
        merchant_reference: reference.into(),
        description: None,
        currency: 978,
        amount_minor,
        terminal_id: terminal.into(),
        cart: Vec::new(),
    }
}

#[track_caller]
fn assert_code(reply: &Reply, code: &str) {
    assert_eq!(reply.code(), code, "reply: {reply:?}");
}

/// Node names: (the one serving MID1's shard, the other).
async fn owner_and_other(etcd: &cluster::testing::EtcdServer) -> (&'static str, &'static str) {
    match demo_owner(etcd).await.as_str() {
        "n1" => ("n1", "n2"),
        _ => ("n2", "n1"),
    }
}

fn proc_of<'a>(nodes: &'a [Proc], name: &str) -> &'a Proc {
    &nodes[usize::from(name == "n2")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_served_through_either_node() {
    let (etcd, _pg, url) = services("cluster_frames");
    let dir = data_dir();
    let nodes = two_nodes(&dir, &url, etcd.url()).await;
    let (owner_name, other_name) = owner_and_other(&etcd).await;
    let (owner, other) = (proc_of(&nodes, owner_name), proc_of(&nodes, other_name));
    let via_other = connect(
        other.frame,
        &key(&dir, other_name, Owner::Merchant(MID1.into())),
    )
    .await;
    let via_owner = connect(
        owner.frame,
        &key(&dir, owner_name, Owner::Merchant(MID1.into())),
    )
    .await;

    // A MO/TO through the node that does not serve MID1's shard, its
    // follow-ups through both.
    let r = via_other
        .preauthorize_moto(&order(1, 1000, "C-1", "DEMO0001"))
        .await
        .expect("pre-authorization");
    assert_code(&r, "00");
    assert_eq!(r.status, Some(PaymentStatus::Uncaptured));
    let hold = r.payment_id.expect("payment id");
    let r = via_owner.get_payment(hold).await.expect("get");
    assert_code(&r, "00");
    assert_eq!(r.amount_authorized_minor, Some(1000));
    let r = via_other.capture(hold, Some(1100)).await.expect("capture");
    assert_code(&r, "00");
    assert_eq!(
        r.amount_captured_minor,
        Some(1100),
        "over-capture within 20 %"
    );
    // Above the over-capture limit: refused by the owner's lifecycle.
    let r = via_owner.refund(hold, 1101, None).await.expect("refund");
    assert_code(&r, "13");
    assert_code(
        &via_owner.refund(hold, 600, None).await.expect("refund"),
        "00",
    );
    let r = via_other.get_payment(hold).await.expect("get");
    assert_code(&r, "00");
    assert_eq!(r.amount_refunded_minor, Some(600));
    assert_eq!(r.status, Some(PaymentStatus::PartiallyRefunded));
    assert!(r.history.len() >= 3, "history from the owner: {r:?}");
    let sale = via_other
        .authorize_moto(&order(2, 700, "C-2", "DEMO0002"))
        .await
        .expect("sale");
    assert_code(&sale, "00");
    let sale = sale.payment_id.expect("payment id");

    // The owner applied every change: the shard's records are its own.
    let shard = cluster::assign::shard_of_merchant(MID1.as_bytes(), SHARDS);
    let by = |node: &str| {
        count(
            &url,
            &format!(
                "SELECT count(*) FROM cluster_records WHERE record_type = 1 \
                 AND shard = {shard} AND node = '{node}'"
            ),
        )
    };
    assert!(
        by(owner_name) >= 5,
        "the owner's records: {}",
        by(owner_name)
    );
    assert_eq!(by(other_name), 0, "the entry node applied nothing");
    let forwarded = other
        .metric("switch_cluster_frames_forwarded_total{outcome=\"answered\"}")
        .await;
    assert!(forwarded >= 4.0, "forwarded over the link: {forwarded}");
    assert_eq!(payments(&url)[&hold].captured_minor, 1100);

    // Another merchant's payment is not found by MID1's key, through
    // either node (its own node's or not).
    let key2 = key(&dir, other_name, Owner::Merchant(MID2.into()));
    let m2 = connect(other.frame, &key2).await;
    let r = m2
        .authorize_moto(&order(3, 300, "B-1", "DEMO0101"))
        .await
        .expect("sale of MID2");
    assert_code(&r, "00");
    let b_sale = r.payment_id.expect("payment id");
    assert_code(&via_other.get_payment(b_sale).await.expect("get"), "25");
    assert_code(&via_owner.cancel(b_sale).await.expect("cancel"), "25");
    // Nor a MO/TO on its terminal.
    assert_code(
        &via_other
            .authorize_moto(&order(4, 100, "X", "DEMO0101"))
            .await
            .expect("r"),
        "58",
    );

    // A provider acting for both merchants (their shards on either node)
    // pages through all their payments, highest id first, each once.
    let provider = key(&dir, other_name, Owner::Provider(PID.into()));
    let admin = KeyAdmin::new(&dir.join(format!("data-{other_name}")));
    let known = |mid: &str| [MID1, MID2].contains(&mid);
    for mid in [MID1, MID2] {
        admin
            .grant_mandate(mid, PID, &Scope::all(), &known)
            .expect("grant");
    }
    let p = connect(other.frame, &provider).await;
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = p
            .list_payments(&ListQuery {
                cursor,
                limit: Some(1),
                ..ListQuery::default()
            })
            .await
            .expect("list");
        assert_code(&page, "00");
        assert!(page.rows.len() <= 1, "{page:?}");
        seen.extend(page.rows.iter().map(|r| r.payment_id));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
        assert!(seen.len() < 10, "paging ends: {seen:?}");
    }
    let mut all = vec![hold, sale, b_sale];
    all.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, all, "every payment once, highest id first");
    assert_code(&p.get_payment(b_sale).await.expect("get"), "00");
    assert_code(&p.get_payment(hold).await.expect("get"), "00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_owner_stops_answering_closes_the_connection() {
    let (etcd, _pg, url) = services("cluster_frames_lost");
    let dir = data_dir();
    let nodes = two_nodes(&dir, &url, etcd.url()).await;
    let (owner_name, other_name) = owner_and_other(&etcd).await;
    let (owner, other) = (proc_of(&nodes, owner_name), proc_of(&nodes, other_name));
    let key1 = key(&dir, other_name, Owner::Merchant(MID1.into()));
    let c = connect(other.frame, &key1).await;
    let r = c
        .preauthorize_moto(&order(1, 1000, "L-1", "DEMO0001"))
        .await
        .expect("pre-authorization");
    assert_code(&r, "00");
    let hold = r.payment_id.expect("payment id");

    // The owner freezes: the capture is written to its link and never
    // answered. A frame has no key to find it by, so the entry node
    // cannot tell whether it was applied: it closes the connection rather
    // than answer (91 would invite a second capture).
    signal(owner, "-STOP");
    let started = std::time::Instant::now();
    let capture = tokio::time::timeout(Duration::from_secs(10), c.capture(hold, None))
        .await
        .expect("an end within the link's bounds");
    assert!(capture.is_err(), "the connection is closed: {capture:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let lost = other
        .metric("switch_cluster_frames_forwarded_total{outcome=\"owner_lost\"}")
        .await;
    assert_eq!(lost, 1.0);

    // A read is asked again until a node serves the shard: the other
    // node, once the frozen owner's lease is gone. The capture was not
    // applied.
    let c = connect(other.frame, &key1).await;
    let r = c.get_payment(hold).await.expect("get");
    assert_code(&r, "00");
    assert_eq!(r.status, Some(PaymentStatus::Uncaptured), "{r:?}");
    // The client captures again, now through the node that serves it.
    let r = c.capture(hold, None).await.expect("capture");
    assert_code(&r, "00");
    signal(owner, "-CONT");
    // The woken owner finds the capture in its socket: applied from stale
    // memory, fenced at its commit, never published. One capture only.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = c.get_payment(hold).await.expect("get");
    let captures = r
        .history
        .iter()
        .filter(|h| h.kind == EventKind::Captured)
        .count();
    assert_eq!(captures, 1, "{r:?}");
    assert_eq!(payments(&url)[&hold].captured_minor, 1000);
}
