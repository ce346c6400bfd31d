//! The etcd client against a real etcd (`cluster::testing::EtcdServer`;
//! without the binary it fails, naming scripts/install-test-deps.sh).

use std::time::Duration;

use cluster::etcd::{Created, Etcd, WatchEvent};
use cluster::testing::EtcdServer;
use cluster::EtcdError;

fn etcd_server() -> EtcdServer {
    EtcdServer::new().unwrap_or_else(|e| panic!("test etcd: {e}"))
}

/// A client whose first endpoint refuses connections, then `server`.
fn behind_a_dead_endpoint(server: &EtcdServer) -> Etcd {
    let dead = format!("http://127.0.0.1:{}", free_port());
    Etcd::new(
        &[dead, server.url().to_owned()],
        Duration::from_millis(1_000),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_against_etcd() {
    let server = etcd_server();
    // The first endpoint refuses connections: the client moves on.
    let etcd = behind_a_dead_endpoint(&server);

    let lease = etcd.lease_grant(5).await.unwrap();
    assert_eq!(lease.ttl_s, 5);
    assert!(etcd.lease_keep_alive(lease.id).await.unwrap() > 0);
    let left = etcd.lease_time_to_live(lease.id).await.unwrap();
    assert!(matches!(left, Some(1..=5)), "{left:?}");

    let rev = etcd.put("/t/a", b"1", None).await.unwrap();
    etcd.put("/t/b", b"2", Some(lease.id)).await.unwrap();
    etcd.put("/u", b"3", None).await.unwrap();
    let a = etcd.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (a.value.as_slice(), a.create_revision, a.lease),
        (&b"1"[..], rev, 0)
    );
    assert_eq!(etcd.get("/t/none").await.unwrap(), None);
    let keys: Vec<Vec<u8>> = etcd
        .get_prefix("/t/", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, vec![b"/t/a".to_vec(), b"/t/b".to_vec()]);
    assert!(matches!(
        etcd.get_prefix("/t/", 1).await,
        Err(EtcdError::TooMany { limit: 1, .. })
    ));

    // Create if absent: the epoch is the create revision, and it stays.
    let Created::Created { revision } = etcd
        .create_if_absent("/t/owner", b"me", lease.id)
        .await
        .unwrap()
    else {
        panic!("created");
    };
    let Created::Exists(kv) = etcd
        .create_if_absent("/t/owner", b"other", lease.id)
        .await
        .unwrap()
    else {
        panic!("exists");
    };
    assert_eq!(
        (kv.create_revision, kv.value.as_slice(), kv.lease),
        (revision, &b"me"[..], lease.id)
    );
    assert!(!etcd
        .delete_if_created_at("/t/owner", revision - 1)
        .await
        .unwrap());
    assert!(etcd
        .delete_if_created_at("/t/owner", revision)
        .await
        .unwrap());
    let Created::Created { revision: again } = etcd
        .create_if_absent("/t/owner", b"me", lease.id)
        .await
        .unwrap()
    else {
        panic!("created again");
    };
    assert!(again > revision);

    assert!(etcd.delete("/t/a").await.unwrap());
    assert!(!etcd.delete("/t/a").await.unwrap());

    // Revoking takes the lease's keys with it.
    etcd.lease_revoke(lease.id).await.unwrap();
    assert_eq!(etcd.get("/t/b").await.unwrap(), None);
    assert_eq!(etcd.get("/t/owner").await.unwrap(), None);
    assert!(matches!(
        etcd.lease_keep_alive(lease.id).await,
        Err(EtcdError::LeaseNotFound(_))
    ));
    assert_eq!(etcd.lease_time_to_live(lease.id).await.unwrap(), None);
    assert!(matches!(
        etcd.lease_revoke(lease.id).await,
        Err(EtcdError::LeaseNotFound(_))
    ));
    assert!(matches!(
        etcd.put("/t/c", b"", Some(lease.id)).await,
        Err(EtcdError::LeaseNotFound(_))
    ));

    // No endpoint at all: unreachable, within the timeout.
    let nowhere = Etcd::new(
        &[format!("http://127.0.0.1:{}", free_port())],
        Duration::from_millis(300),
    )
    .unwrap();
    assert!(matches!(
        nowhere.get("/t").await,
        Err(EtcdError::Unreachable { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_puts_and_deletes_under_its_prefix_and_ends_with_its_span() {
    let server = etcd_server();
    // A dead first endpoint: the watch opens on the next.
    let etcd = behind_a_dead_endpoint(&server);
    let lease = etcd.lease_grant(2).await.unwrap();
    let mut watch = etcd
        .watch_prefix("/w/", Duration::from_secs(4))
        .await
        .unwrap();
    // Its creation comes first, with no event.
    assert_eq!(watch.next().await.unwrap(), Some(Vec::new()));
    etcd.put("/x/outside", b"1", None).await.unwrap();
    etcd.put("/w/a", b"1", None).await.unwrap();
    etcd.put("/w/b", b"2", Some(lease.id)).await.unwrap();
    etcd.delete("/w/a").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.extend(watch.next().await.unwrap().expect("the watch goes on"));
    }
    assert_eq!(
        seen,
        vec![
            WatchEvent::Put(b"/w/a".to_vec()),
            WatchEvent::Put(b"/w/b".to_vec()),
            WatchEvent::Delete(b"/w/a".to_vec()),
        ]
    );
    // A lease's expiry is a delete too (etcd checks every 500 ms).
    let expired = tokio::time::timeout(Duration::from_secs(3), watch.next())
        .await
        .expect("the expiry within 3 s")
        .unwrap();
    assert_eq!(expired, Some(vec![WatchEvent::Delete(b"/w/b".to_vec())]));
    // Past its span the stream ends: the caller watches again.
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the span ends the watch");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_times_out_and_the_next_answers() {
    let server = etcd_server();
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let timeout = Duration::from_millis(300);
    let etcd = Etcd::new(&[silent_url.clone(), server.url().to_owned()], timeout).unwrap();
    let start = std::time::Instant::now();
    etcd.put("/t/x", b"1", None).await.unwrap();
    let took = start.elapsed();
    assert!(
        took >= timeout,
        "{took:?}: the silent endpoint was not tried first"
    );
    // The endpoint that answered is tried first from now on.
    let start = std::time::Instant::now();
    assert!(etcd.get("/t/x").await.unwrap().is_some());
    assert!(start.elapsed() < timeout, "{:?}", start.elapsed());

    let alone = Etcd::new(&[silent_url], timeout).unwrap();
    match alone.get("/t/x").await {
        Err(EtcdError::Unreachable { reason, .. }) => assert!(
            reason.contains("timed out") || reason.contains("timeout"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
