//! Mutual TLS on node links (`cluster.link_tls_*`), with certificates made
//! here (rcgen): a cluster CA, one certificate per node for 127.0.0.1, and
//! one from another CA. Two nodes forward each other's requests over TLS;
//! a plaintext link frame to a node's `link_addr` (a valid request of a
//! shard it serves) is never applied: the connection is closed and the
//! failed handshake counted; so is a TLS client presenting the other CA's
//! certificate, while one presenting a node's certificate is answered. A
//! node whose link key cannot be read refuses to start, naming the key.
//! A node serves at most `LINK_CONNECTIONS_MAX` links at once; past it a
//! connection is closed and counted, and a freed place is served again.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::nodes::*;
use common::*;

/// The `[cluster]` keys of node `name`'s link TLS.
fn link_tls(pki: &Path, name: &str) -> String {
    let path = |file: &str| pki.join(file).display().to_string();
    format!(
        "link_tls_cert_file = \"{}\"\nlink_tls_key_file = \"{}\"\nlink_tls_ca_file = \"{}\"\n",
        path(&format!("{name}.pem")),
        path(&format!("{name}.key")),
        path("ca.pem")
    )
}

/// Node `name`'s `link_addr`, from its node key in etcd.
async fn link_addr(etcd: &str, name: &str) -> String {
    let client =
        cluster::etcd::Etcd::new(&[etcd.to_owned()], Duration::from_secs(1)).expect("client");
    let key = client
        .get(&format!("/switch/test/nodes/{name}"))
        .await
        .expect("etcd")
        .expect("the node key");
    let record: cluster::member::NodeRecord =
        serde_json::from_slice(&key.value).expect("a node record");
    record.link_addr
}

/// One link frame: `u32` length, `u64` id, the ISO 8583 body.
fn link_frame(id: u64, body: &[u8]) -> Vec<u8> {
    let mut frame = u32::try_from(body.len() + 8)
        .expect("fits")
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Whether the other end closes `stream` within 5 s having sent nothing
/// but, perhaps, a TLS alert record (content type 21): no link answer.
async fn closed_unanswered(stream: &mut (impl AsyncReadExt + Unpin)) -> bool {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
    let closed = read.is_ok();
    if !got.is_empty() && got[0] != 21 {
        eprintln!("read {} bytes: {:?}", got.len(), &got[..got.len().min(32)]);
        return false;
    }
    closed
}

/// A TLS client of `pki` presenting `identity`'s certificate.
fn connector(pki: &Path, identity: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.join("ca.pem")).expect("ca") {
        roots.add(cert.expect("ca cert")).expect("root");
    }
    let chain = CertificateDer::pem_file_iter(pki.join(format!("{identity}.pem")))
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(pki.join(format!("{identity}.key"))).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_forward_over_mutual_tls_and_a_link_without_a_cluster_certificate_is_refused() {
    let (etcd, pg, url) = services("cluster_link_tls");
    let dir = data_dir();
    let pki = pki(&dir, &["n1", "n2"]);
    // One merchant per shard, so each node serves some of them.
    let merchants = merchant_per_shard();
    let extra = |name: &str| format!("{}{}", link_tls(&pki, name), merchants_toml(&merchants));
    let (n1, mut c1) = launch_node(&dir, &url, etcd.url(), "n1", &extra("n1")).await;
    let (n2, _) = launch_node(&dir, &url, etcd.url(), "n2", &extra("n2")).await;
    wait_split(&n1, &n2).await;

    // Every merchant through n1: those of n2's shards are forwarded over
    // TLS (and so are the velocity asks of cards n2 counts): all approved.
    for (k, (f42, f41)) in merchants.iter().enumerate() {
        let pre = preauth(&card(40 + k as u64), 1_000)
            .set(41, f41)
            .set(42, f42);
        let answer = c1.call(&pre).await;
        assert_eq!(answer.code(), "00", "{f42}: {answer:?}");
    }
    let forwarded = n1
        .metric("switch_cluster_forwarded_total{outcome=\"answered\"}")
        .await;
    assert!(forwarded > 0.0, "nothing forwarded");
    // Each answered link call's added time is recorded (the owner's held
    // time came back with its answer).
    let measured = n1
        .metric("switch_cluster_forward_added_seconds_count")
        .await;
    assert_eq!(measured, forwarded, "forwarding's cost, per answered call");
    let records = count(&url, PAYMENT_RECORDS);
    assert_eq!(records, merchants.len() as i64);

    // Link frames in plaintext to n2, one request of every merchant: the
    // handshake fails, nothing is applied, nothing answered.
    let addr = link_addr(etcd.url(), "n2").await;
    let mut plain = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut frames = Vec::new();
    for (k, (f42, f41)) in merchants.iter().enumerate() {
        let pre = preauth(&card(80 + k as u64), 500).set(41, f41).set(42, f42);
        frames.extend(link_frame(k as u64 + 1, &pre.encode()));
    }
    // The write may fail once the node closes: that is the refusal too.
    let _ = plain.write_all(&frames).await;
    assert!(
        closed_unanswered(&mut plain).await,
        "a plaintext link answered"
    );

    // A TLS client whose certificate another CA signed: refused in the
    // handshake (or at its first read, as TLS 1.3 reports it).
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    match connector(&pki, "stranger").connect(name.clone(), tcp).await {
        Err(_) => {}
        Ok(mut tls) => {
            let _ = tls.write_all(&frames).await;
            assert!(
                closed_unanswered(&mut tls).await,
                "a stranger's link answered"
            );
        }
    }
    assert_eq!(
        count(&url, PAYMENT_RECORDS),
        records,
        "a request of a refused link was applied"
    );
    // A node's certificate is served: the same frames over TLS with n1's
    // identity are answered (so the refusals above are TLS's).
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut tls = connector(&pki, "n1")
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.write_all(&frames).await.expect("write");
    let mut header = [0_u8; 12];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut header))
        .await
        .expect("an answer in time")
        .expect("an answer");
    let failures = n2
        .metric("switch_cluster_link_tls_failures_total{side=\"accept\"}")
        .await;
    assert!(failures >= 2.0, "{failures} failed handshakes counted");
    drop(tls);
    drop((n1, n2, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_whose_link_certificate_cannot_be_read_refuses_to_start_naming_it() {
    let dir = data_dir();
    let pki = pki(&dir, &["n1", "n2"]);
    std::fs::remove_file(pki.join("n1.key")).expect("remove");
    let config = cluster_config_with(
        &dir,
        "postgres://127.0.0.1:1/none",
        "http://127.0.0.1:1",
        "n1",
        &link_tls(&pki, "n1"),
    );
    let (mut command, _) = switch_command(&dir.join("data"));
    let out = command
        .arg("--config")
        .arg(&config)
        .output()
        .expect("switch");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cluster.link_tls_key_file") && stderr.contains("n1.key"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_at_most_link_connections_max_links_at_once() {
    // `cluster_serve::LINK_CONNECTIONS_MAX`: twice `NODES_MAX` (128).
    const LINK_CONNECTIONS_MAX: usize = 256;
    let (etcd, pg, url) = services("cluster_link_max");
    let dir = data_dir();
    let (n1, _) = start_node(&dir, &url, etcd.url(), "n1").await;
    let addr = link_addr(etcd.url(), "n1").await;
    // That many idle links are held open; the next is closed at once.
    let mut held = Vec::new();
    for _ in 0..LINK_CONNECTIONS_MAX {
        held.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect"),
        );
    }
    let mut extra = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    assert!(closed_unanswered(&mut extra).await, "a link past the bound");
    let reached = n1
        .metric("switch_limit_reached_total{limit=\"link_connections_max\"}")
        .await;
    assert!(reached >= 1.0, "{reached}");
    // One closes: its place is free again, and a new link stays open.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut buf = [0_u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(1), again.read(&mut buf)).await;
    assert!(
        read.is_err(),
        "a link within the bound was closed: {read:?}"
    );
    drop((held, n1, pg, etcd));
    let _ = std::fs::remove_dir_all(&dir);
}
