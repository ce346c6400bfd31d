//! Log-in lockouts over loopback TCP from two source addresses (127.0.0.1
//! and 127.0.0.2): failures lock out the (client id, address) pair or the
//! address that failed, never the same key from elsewhere.

mod common;

use std::net::SocketAddr;

use codecs::internal::{Authenticate, InternalCodec, Request, Response, Secret};
use common::{TestSwitch, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use switch::{KeyAdmin, Owner};
use tokio::net::TcpSocket;
use tokio_util::codec::Framed;

/// Where the attacker connects from.
const ATTACKER: &str = "127.0.0.1";
/// Where the key's rightful user connects from.
const RIGHTFUL: &str = "127.0.0.2";
/// A wrong secret of a length the format accepts.
const WRONG: &str = "00000000000000000000000000000000";
/// Failures that lock a pair out (`PAIR_FAILURES_MAX`).
const PAIR_FAILURES: usize = 5;
/// Failures that lock an address out (`ADDRESS_FAILURES_MAX`).
const ADDRESS_FAILURES: usize = 20;

/// One log-in on a fresh connection from `source`: (result code, message).
async fn log_in_from(source: &str, frame: SocketAddr, id: &str, secret: &str) -> (String, String) {
    let socket = TcpSocket::new_v4().expect("socket");
    let from: SocketAddr = format!("{source}:0").parse().expect("source");
    socket.bind(from).expect("bind the source address");
    let stream = tokio::time::timeout(TIMEOUT, socket.connect(frame))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut conn = Framed::new(stream, InternalCodec::new());
    let secret = Secret::new(secret.as_bytes()).expect("secret");
    let request = Request::Authenticate(Authenticate {
        client_id: id,
        secret,
    });
    conn.send((1, request)).await.expect("send");
    let answer = tokio::time::timeout(TIMEOUT, conn.next())
        .await
        .expect("answer in time")
        .expect("an answer")
        .expect("a frame");
    let response = Response::parse(&answer.frame()).expect("a response");
    (
        response.result_code.as_str().to_owned(),
        response.message.unwrap_or_default().to_owned(),
    )
}

fn merchant_key(sw: &TestSwitch) -> (String, String) {
    let k = KeyAdmin::new(&sw.dir)
        .create_key(Owner::Merchant("DEMO00000000001".into()), "test")
        .expect("create key");
    (k.client_id, k.secret)
}

fn assert_refused(answer: &(String, String), message: &str) {
    assert_eq!(answer.0, "58", "{answer:?}");
    assert!(answer.1.contains(message), "{answer:?}");
}

#[tokio::test]
async fn a_client_id_locked_out_from_one_address_works_from_another() {
    let mut sw = TestSwitch::start().await;
    let (id, secret) = merchant_key(&sw);
    for _ in 0..PAIR_FAILURES {
        let r = log_in_from(ATTACKER, sw.frame, &id, WRONG).await;
        assert_refused(&r, "authentication failed");
    }
    let r = log_in_from(ATTACKER, sw.frame, &id, &secret).await;
    assert_refused(&r, "retry later");

    let r = log_in_from(RIGHTFUL, sw.frame, &id, &secret).await;
    assert_eq!(r.0, "00", "the key from elsewhere: {r:?}");

    let (_, metrics) = sw.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"switch_auth_lockouts_total{scope="pair"} 1"#),
        "{metrics}"
    );
    sw.stop().await;
}

#[tokio::test]
async fn an_address_trying_many_ids_is_locked_out_alone() {
    let mut sw = TestSwitch::start().await;
    let (id, secret) = merchant_key(&sw);
    // Fewer failures per id than lock a pair, over as many ids as it takes.
    for i in 0..ADDRESS_FAILURES {
        let unknown = format!("MK-9999-{:04}", i / (PAIR_FAILURES - 1));
        let r = log_in_from(ATTACKER, sw.frame, &unknown, WRONG).await;
        assert_refused(&r, "authentication failed");
    }
    let r = log_in_from(ATTACKER, sw.frame, &id, &secret).await;
    assert_refused(&r, "retry later");

    let r = log_in_from(RIGHTFUL, sw.frame, &id, &secret).await;
    assert_eq!(r.0, "00", "the key from elsewhere: {r:?}");

    sw.clock.advance_ms(61_000);
    let r = log_in_from(ATTACKER, sw.frame, &id, &secret).await;
    assert_eq!(r.0, "00", "after the lockout: {r:?}");
    let (_, metrics) = sw.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"switch_auth_lockouts_total{scope="address"} 1"#),
        "{metrics}"
    );
    sw.stop().await;
}
