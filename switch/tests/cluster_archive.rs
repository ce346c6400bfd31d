//! Cluster mode's archive and timers (`docs/cluster.md`, Status, the fifth
//! to seventh slices), with two nodes in this test's process on one manual
//! clock (`switch::start`), on a real etcd and PostgreSQL: holds end once,
//! at the node serving their shard after a join; payments leave memory
//! once the cluster drainer has them in the archive's tables, and their
//! refunds are approved from the archive through either node; a node that
//! gets back a shard it served before forgets its stale payments, and
//! repeats whose rows were deleted are answered from the archive. A test
//! binary of its own, so these do not run beside `cluster_rebalance.rs`'s
//! timing-bound hand-over tests on the same two cores.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::nodes::*;
use common::*;

/// Bound on the shards settling and on every wait here.
const SETTLE_BOUND: Duration = Duration::from_secs(30);

/// Cluster node `node_id` in this process on `clock`, with one merchant
/// per shard (`merchants`), its configuration then changed by `edit`.
async fn start_in_process(
    dir: &Path,
    (url, etcd): (&str, &str),
    node_id: &str,
    merchants: &[(String, String)],
    clock: &switch::Clock,
    edit: impl FnOnce(&mut switch::Config),
) -> switch::Running {
    let path = cluster_config_with(dir, url, etcd, node_id, &merchants_toml(merchants));
    let overrides = switch::Overrides {
        iso_addr: local(),
        frame_addr: local(),
        http_addr: local(),
        data_dir: Some(dir.join(format!("data-{node_id}"))),
        journal_ack: None,
        repair: false,
    };
    let mut config = switch::Config::load(Some(&path), overrides).expect("config");
    edit(&mut config);
    switch::start(config, clock.clone()).await.expect("start")
}

/// The timers in cluster mode (`docs/cluster.md`, Status): a hold ends
/// once, committed by the node that serves its shard then. Two nodes in
/// this process on one manual clock: 16 pre-authorizations (one per
/// shard) approved while the first node serves every shard; a second
/// joins and takes about half the shards by hand-over; the clock then
/// passes every hold's end. Every pre-authorization ends exactly once in
/// PostgreSQL (expired, or captured in full where its merchant
/// auto-captures), and those of the moved shards are ended by the new
/// owner, which queued their holds when it loaded them: before, holds
/// never ended in cluster mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_end_once_at_the_node_serving_their_shard_after_a_join() {
    // The merchants of even shards auto-capture after 24 h.
    let auto_capture = |c: &mut switch::Config| {
        for (shard, m) in c.merchants.iter_mut().skip(2).enumerate() {
            if shard % 2 == 0 {
                m.auto_capture_h = Some(24);
            }
        }
    };
    let t = TwoNodes::start("cluster_holds", auto_capture, |i| {
        preauth(&card(70_000 + i), 1_000 + i)
    })
    .await;
    let (url, clock) = (&t.url, &t.clock);
    clock.advance_ms(169 * 3_600_000);
    // Every hold ended once: two payment records per pre-authorization.
    let ended = "SELECT count(*) FROM cluster_records WHERE record_type = 1";
    let started = Instant::now();
    while count(url, ended) < 32 {
        assert!(
            started.elapsed() < SETTLE_BOUND,
            "{} of 16 holds ended",
            count(url, ended) - 16
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No end committed twice (a pass of either node after these).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(url, ended), 32);
    let payments = payments(url);
    assert_eq!(payments.len(), 16);
    for p in payments.values() {
        // Amount 1,000 + the shard of its merchant.
        let shard = p.authorized_minor - 1_000;
        let want = if shard % 2 == 0 {
            engine::Status::Succeeded
        } else {
            engine::Status::Expired
        };
        assert_eq!(p.status, want, "payment {} of shard {shard}", p.id);
    }
    // The moved shards' holds were ended by b, the others' by a: each
    // payment's second record (its end), by the shard's owner now.
    let records = off_runtime({
        let url = url.clone();
        move || {
            let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            db.query(
                "SELECT r.shard, r.node, o.owner, r.payload FROM cluster_records r \
                 JOIN shard_owner o ON o.shard = r.shard \
                 WHERE r.record_type = 1 ORDER BY r.n",
                &[],
            )
            .expect("records")
            .iter()
            .map(|r| {
                let payload: Vec<u8> = r.get(3);
                let id = engine::record::payment_id(&payload).expect("a payment record");
                (
                    id,
                    r.get::<_, i32>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                )
            })
            .collect::<Vec<_>>()
        }
    });
    let mut seen = std::collections::BTreeSet::new();
    let enders: Vec<_> = records
        .into_iter()
        .filter(|(id, ..)| !seen.insert(*id))
        .map(|(_, shard, node, owner)| (shard, node, owner))
        .collect();
    assert_eq!(enders.len(), 16, "{enders:?}");
    for (shard, node, owner) in &enders {
        assert_eq!(node, owner, "shard {shard}'s hold ended by its owner");
    }
    assert!(
        enders.iter().any(|(_, node, _)| node == "b"),
        "some hold of a moved shard ended by b: {enders:?}"
    );
    t.stop().await;
}

/// Cancels its tokens when dropped.
struct OnDrop(Vec<tokio_util::sync::CancellationToken>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.cancel();
        }
    }
}

/// Two cluster nodes in this process on one manual clock, on a fresh etcd
/// and PostgreSQL: `a` approved `approved` (one per shard, through
/// `client`), then `b` joined and the shards settled.
struct TwoNodes {
    /// Kept for the test's length.
    _etcd: cluster::testing::EtcdServer,
    /// Kept for the test's length.
    _pg: archive::testing::PgServer,
    /// The database.
    url: String,
    /// Both nodes' clock.
    clock: switch::Clock,
    /// The first node.
    a: switch::Running,
    /// The node that joined.
    b: switch::Running,
    /// A client of `a`.
    client: Client,
    /// What `a` approved, one per shard (index = shard).
    approved: Vec<Req>,
    /// Cancels both nodes if the test fails (or the runtime would wait for
    /// their loaders for ever).
    stop_on_panic: OnDrop,
}

impl TwoNodes {
    /// Database `name`, both nodes' configuration changed by `edit`, `req(i)`
    /// approved through `a` for shard `i`'s merchant.
    async fn start(
        name: &str,
        edit: impl Fn(&mut switch::Config),
        req: impl Fn(u64) -> Req,
    ) -> TwoNodes {
        let (etcd, pg, url) = services(name);
        let dir = data_dir();
        let merchants = merchant_per_shard();
        let clock = switch::Clock::manual(START_MS);
        let services = (url.as_str(), etcd.url());
        let a = start_in_process(&dir, services, "a", &merchants, &clock, &edit).await;
        let mut stop_on_panic = OnDrop(vec![a.cancel_token()]);
        let mut client = Client::connect(a.iso_addr).await;
        let approved = approve_one_per_shard(&mut client, &merchants, req).await;
        let b = start_in_process(&dir, services, "b", &merchants, &clock, &edit).await;
        stop_on_panic.0.push(b.cancel_token());
        settled_on(&url, "b").await;
        TwoNodes {
            _etcd: etcd,
            _pg: pg,
            url,
            clock,
            a,
            b,
            client,
            approved,
            stop_on_panic,
        }
    }

    /// Stops b, then a, then etcd and PostgreSQL.
    async fn stop(self) {
        drop(self.stop_on_panic);
        self.b.shutdown().await.expect("b stops");
        self.a.shutdown().await.expect("a stops");
    }
}

/// Sends `req(i)` for each of `merchants` (i = its index, its shard) until
/// approved (91 until the shard is served); the requests.
async fn approve_one_per_shard(
    client: &mut Client,
    merchants: &[(String, String)],
    req: impl Fn(u64) -> Req,
) -> Vec<Req> {
    let mut approved = Vec::new();
    for (i, (f42, f41)) in merchants.iter().enumerate() {
        let req = req(i as u64).set(41, f41).set(42, f42);
        let started = Instant::now();
        loop {
            let resp = client.call(&req).await;
            if resp.code() == "00" {
                break;
            }
            assert!(
                started.elapsed() < SETTLE_BOUND,
                "shard of {f42} not served: {}",
                resp.code()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        approved.push(req);
    }
    approved
}

/// Waits until node `node` owns some shards and their count has not
/// changed for 2 s (a hand-over is a commit, a 500 ms poll and a load).
async fn settled_on(url: &str, node: &str) {
    let owned = format!("SELECT count(*) FROM shard_owner WHERE owner = '{node}'");
    let started = Instant::now();
    let mut last = (0, Instant::now());
    while last.0 == 0 || last.1.elapsed() < Duration::from_secs(2) {
        assert!(started.elapsed() < SETTLE_BOUND, "no shard moved to {node}");
        let n = count(url, &owned);
        if n != last.0 {
            last = (n, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of metric `name` as `http` serves it (in this process, every
/// node's).
async fn metric(http: SocketAddr, name: &str) -> f64 {
    metric_sum(&http_get(http, "/metrics").await.1, name).unwrap_or(0.0)
}

/// Retirement in cluster mode (`docs/cluster.md`, Status): the cluster
/// drainer writes every payment record of the shards a node serves into
/// the archive's tables, versioned by `cluster_records.n`; payments final
/// for `limits.payment_retention_s` and archived leave memory; a follow-up
/// of one is approved from the archive through any node. Two nodes in this
/// process on one manual clock (retention 1 s): 16 sales approved through
/// a, one per shard; b joins and takes its shards; the clock moves 10 s
/// and at least 16 payments leave memory; a refund of every sale through b
/// (forwarded to a for a's shards) is approved, each after an archive
/// lookup, and a second refund finds it in memory, refunded (13); the
/// archive's `payments` table holds the 16, refunded, and every shard's
/// `cluster_drained` mark covers its last payment record. Before, cluster
/// mode wrote no archive and never let a payment go (96 at
/// `limits.payments_max`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_leave_memory_once_archived_and_their_refunds_are_approved_from_the_archive() {
    let short = |c: &mut switch::Config| c.limits.payment_retention_s = 1;
    let t = TwoNodes::start("cluster_retire", short, |i| {
        sale(&card(80_000 + i), 2_000 + i)
    })
    .await;
    let (url, clock, a, b, sales) = (&t.url, &t.clock, &t.a, &t.b, &t.approved);
    let retired = metric(a.http_addr, "switch_payments_retired_total").await;
    clock.advance_ms(10_000);
    let started = Instant::now();
    while metric(a.http_addr, "switch_payments_retired_total").await < retired + 16.0 {
        assert!(started.elapsed() < SETTLE_BOUND, "payments not retired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lookups = |http| metric(http, "switch_archive_lookups_total");
    let before = lookups(a.http_addr).await;
    let mut through_b = Client::connect(b.iso_addr).await;
    for (i, sale) in sales.iter().enumerate() {
        let amount = 2_000 + i as u64;
        let refunded = through_b.call(&refund(sale, amount)).await;
        assert_eq!(
            refunded.code(),
            "00",
            "refund of sale {i}, only in the archive"
        );
        let again = through_b.call(&refund(sale, 1)).await;
        assert_eq!(again.code(), "13", "sale {i} back in memory, refunded");
    }
    assert!(
        lookups(a.http_addr).await >= before + 16.0,
        "every refund looked its sale up in the archive"
    );
    // The archive's tables catch up: 16 payments, refunded.
    let started = Instant::now();
    let refunded = format!(
        "SELECT count(*) FROM payments WHERE status = {}",
        engine::lifecycle::status_record_code(engine::Status::Refunded)
    );
    while count(url, &refunded) < 16 {
        assert!(
            started.elapsed() < SETTLE_BOUND,
            "{} of 16 refunded in the archive",
            count(url, &refunded)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(url, "SELECT count(*) FROM payments"), 16);
    let behind = "SELECT count(*) FROM cluster_records r WHERE record_type = 1 \
                  AND n > COALESCE((SELECT n FROM cluster_drained d WHERE d.shard = r.shard), 0)";
    assert_eq!(count(url, behind), 0, "every payment record drained");
    t.stop().await;
}

/// Retention of `cluster_records` in cluster mode (`docs/cluster.md`,
/// Status): payment rows archived and past `cluster.records_retention_s`
/// (0 here) are deleted, so a takeover loads only what is left, and a node
/// that gets back a shard it served before lets its stale copies of the
/// shard's payments go first. Two nodes in this process on one manual
/// clock: 16 sales approved through a, one per shard; b joins, takes its
/// shards, and refunds every sale in full (for its shards, payments a
/// still holds copies of from before the join); every payment row is then
/// deleted; b stops, handing its shards back to a. Through a, each refund
/// repeated gets b's answer (from the archive: its row is gone), and one
/// more refund of each sale gets 13 (fully refunded), where a's stale copy
/// would have approved it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_served_again_forgets_its_stale_payments_and_repeats_are_answered_from_the_archive()
{
    let none_kept = |c: &mut switch::Config| {
        c.cluster.as_mut().expect("cluster").records_retention_s = 0;
    };
    let t = TwoNodes::start("cluster_records_retention", none_kept, |i| {
        sale(&card(90_000 + i), 3_000 + i)
    })
    .await;
    let TwoNodes {
        url,
        a,
        b,
        client: mut through_a,
        approved: sales,
        stop_on_panic,
        _etcd,
        _pg,
        ..
    } = t;
    let mut through_b = Client::connect(b.iso_addr).await;
    let mut refunds = Vec::new();
    for (i, sale) in sales.iter().enumerate() {
        let refund = refund(sale, 3_000 + i as u64);
        let answer = through_b.call(&refund).await;
        assert_eq!(answer.code(), "00", "refund of sale {i} through b");
        refunds.push((refund, answer));
    }
    let rows = "SELECT count(*) FROM cluster_records WHERE record_type = 1";
    let started = Instant::now();
    while count(&url, rows) > 0 {
        assert!(
            started.elapsed() < SETTLE_BOUND,
            "{} payment rows not deleted",
            count(&url, rows)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(a.http_addr, "switch_cluster_records_deleted_total").await >= 32.0);
    b.shutdown().await.expect("b stops");
    for (i, (refunded, first)) in refunds.iter().enumerate() {
        // 91 while a loads the shards b handed back.
        let started = Instant::now();
        let again = loop {
            let r = through_a.call(refunded).await;
            if r.code() != "91" {
                break r;
            }
            assert!(
                started.elapsed() < SETTLE_BOUND,
                "shard of sale {i} not served"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for f in [37, 38, 39] {
            assert_eq!(
                again.text(f),
                first.text(f),
                "field {f} of refund {i}'s repeat"
            );
        }
        let more = through_a.call(&refund(&sales[i], 1)).await;
        assert_eq!(more.code(), "13", "sale {i} fully refunded, as b left it");
    }
    drop(stop_on_panic);
    a.shutdown().await.expect("a stops");
}

/// The archive's own retention in cluster mode (`archive.retention_days`,
/// 1 day here; `docs/cluster.md`, Status): the node serving shard 0
/// deletes the archive's payments created before it, once an hour by the
/// switch's clock, as a single node's drainer does. Two nodes in this
/// process on one manual clock: 16 sales approved through a, one per
/// shard, all in the archive's `payments`; 23 h later none is past
/// retention and all stay; 2 h more and every one is deleted with its
/// answers, each once (the nodes' deletions add up to 16). Before, cluster
/// mode never deleted an archived payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_serving_shard_0_deletes_the_archive_s_payments_past_retention_days() {
    let one_day = |c: &mut switch::Config| c.archive.retention_days = 1;
    let t = TwoNodes::start("cluster_archive_retention", one_day, |i| {
        sale(&card(90_000 + i), 3_000 + i)
    })
    .await;
    let (url, clock) = (&t.url, &t.clock);
    let (payments, answers) = (
        "SELECT count(*) FROM payments",
        "SELECT count(*) FROM answers",
    );
    let until = |what: &'static str, want: i64| async move {
        let started = Instant::now();
        while count(url, what) != want {
            assert!(
                started.elapsed() < SETTLE_BOUND,
                "{what}: {} where {want} was due",
                count(url, what)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    until(payments, 16).await;
    assert!(count(url, answers) >= 16, "every sale's answer archived");
    let deleted = || async { metric(t.a.http_addr, "switch_archive_deleted_total").await };
    let before = deleted().await;
    // An hour's step runs, and nothing is a day old yet.
    clock.advance_ms(23 * 3_600_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count(url, payments), 16, "none past retention yet");
    // The next hour's step deletes all 16, with their answers.
    clock.advance_ms(2 * 3_600_000);
    until(payments, 0).await;
    until(answers, 0).await;
    // Metrics are the process's: both nodes' deletions, each payment once.
    assert_eq!(deleted().await - before, 16.0);
    t.stop().await;
}
