//! The risk watch list across nodes (docs/cluster.md, Velocity across
//! nodes), on a real etcd and PostgreSQL with two switch processes: a
//! payment marked as scam by hand through internal frames puts its card
//! on the watch list of the node that counts the card, not of the node
//! that serves the payment; the card's later payments at another merchant
//! are flagged by the watch list, still after a kill -9 of the counting
//! node (its watch records replayed by the survivor), and no more once the
//! mark is taken off.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::nodes::*;
use common::*;
use switch::{KeyAdmin, Owner};
use switch_client::MotoPayment;

const MID1: &str = "DEMO00000000001";
const MID2: &str = "DEMO00000000002";

/// A new key of merchant `mid` in node `node`'s data directory.
fn key(dir: &Path, node: &str, mid: &str) -> (String, String) {
    let k = KeyAdmin::new(&dir.join(format!("data-{node}")))
        .create_key(Owner::Merchant(mid.into()), "test")
        .expect("create key");
    (k.client_id, k.secret)
}

fn order(pan: &str, reference: &str, terminal: &str) -> MotoPayment {
    MotoPayment {
        pan: pan.into(),
        expiry_yymm: "2812".into(),
        cvv2: Some("123".into()),
        cardholder_name: None,
        merchant_reference: reference.into(),
        description: None,
        currency: 978,
        amount_minor: 1_000,
        terminal_id: terminal.into(),
        cart: Vec::new(),
    }
}

/// A MO/TO sale of `pan` at MID2 through `addr` (with MID2's key there):
/// approved; whether the payment is flagged, and by which rules.
async fn sale_at_mid2(
    addr: SocketAddr,
    key: &(String, String),
    pan: &str,
    n: u32,
) -> (bool, String) {
    let c = frames_client(addr, key).await;
    let r = c
        .authorize_moto(&order(pan, &format!("W-{n}"), "DEMO0101"))
        .await
        .expect("sale");
    assert_eq!(r.code(), "00", "sale {n}: {r:?}");
    let r = c.get_payment(r.payment_id.expect("id")).await.expect("get");
    (
        r.scam == Some(true),
        r.details.flag_reasons.clone().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_marked_scam_is_watched_where_it_is_counted_across_a_kill() {
    let (etcd, _pg, url) = services("cluster_watch");
    let dir = data_dir();
    let mut nodes = two_nodes(&dir, &url, etcd.url()).await;
    let owners = shard_owners(etcd.url()).await;
    // MID1's payment is served by one node; its card counted by the other.
    let mid1_node = owners[&cluster::assign::shard_of_merchant(MID1.as_bytes(), SHARDS)].clone();
    let counting = if mid1_node == "n1" { "n2" } else { "n1" };
    let pan = card_counted_by(&owners, counting, 50_000);
    let index = |name: &str| usize::from(name == "n2");
    let serving = &nodes[index(&mid1_node)];
    let mid1_key = key(&dir, &mid1_node, MID1);
    let mid2_keys = [key(&dir, "n1", MID2), key(&dir, "n2", MID2)];

    // Five attempts of the card in all: the sixth within 60 s would be
    // declined 65 by the default velocity limit.
    // A payment of the card at MID1, marked as scam by hand there.
    let c = frames_client(serving.frame, &mid1_key).await;
    let r = c
        .authorize_moto(&order(&pan, "W-P1", "DEMO0001"))
        .await
        .expect("sale");
    assert_eq!(r.code(), "00");
    let p1 = r.payment_id.expect("id");
    let r = c.mark_scam(p1, Some("chargeback")).await.expect("mark");
    assert_eq!(r.code(), "00", "{r:?}");
    assert_eq!(r.scam, Some(true));
    let shard = |pan: &str| {
        let hex = TOKEN_KEY.split('"').nth(1).expect("hex");
        let k = codecs::card::TokenKey::new(&hex::decode(hex).expect("hex"));
        cluster::assign::shard_of_card(&k.token_of_digits(pan.as_bytes()).0, SHARDS)
    };
    assert_eq!(
        count(
            &url,
            &format!(
                "SELECT count(*) FROM cluster_records WHERE record_type = 6 AND shard = {} AND node = '{counting}'",
                shard(&pan)
            )
        ),
        1,
        "one watch record, by the node counting the card"
    );

    // Its next payment at MID2, through either node, is flagged by the
    // watch list, whichever node serves MID2.
    for (i, node) in nodes.iter().enumerate() {
        let (flagged, reasons) = sale_at_mid2(node.frame, &mid2_keys[i], &pan, 2 + i as u32).await;
        assert!(flagged, "a watched card is flagged through node {i}");
        assert!(reasons.contains("watch_list"), "{reasons}");
    }

    // The counting node dies: the survivor counts the card from the
    // records, the watch list included.
    let killed = index(counting);
    signal(&nodes[killed], "-9");
    let _ = nodes[killed].child.wait();
    let alive = &nodes[1 - killed];
    wait_all_served(&[alive], Duration::from_secs(10)).await;
    let (flagged, reasons) = sale_at_mid2(alive.frame, &mid2_keys[1 - killed], &pan, 4).await;
    assert!(flagged, "still watched after the kill: {reasons}");

    // Unmarked through the survivor (which serves MID1 now, or did): the
    // card leaves the list. Not flagged then is also what it was before
    // the mark.
    let c = frames_client(alive.frame, &key(&dir, &alive_name(killed), MID1)).await;
    let r = c
        .unmark_scam(p1, "customer verified")
        .await
        .expect("unmark");
    assert_eq!(r.code(), "00", "{r:?}");
    let (flagged, reasons) = sale_at_mid2(alive.frame, &mid2_keys[1 - killed], &pan, 5).await;
    assert!(!flagged, "unmarked, the card is not flagged: {reasons}");
    nodes.clear();
}

fn alive_name(killed: usize) -> String {
    if killed == 0 { "n2" } else { "n1" }.to_owned()
}
