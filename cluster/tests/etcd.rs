//! The etcd client against a real etcd (`cluster::testing::EtcdServer`;
//! without the binary it fails, naming scripts/install-test-deps.sh).

use std::time::Duration;

use cluster::etcd::{Created, Etcd};
use cluster::testing::EtcdServer;
use cluster::EtcdError;

fn etcd_server() -> EtcdServer {
    EtcdServer::new().unwrap_or_else(|e| panic!("test etcd: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_against_etcd() {
    let server = etcd_server();
    // The first endpoint refuses connections: the client moves on.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let etcd = Etcd::new(
        &[dead, server.url().to_owned()],
        Duration::from_millis(1_000),
    )
    .unwrap();

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
