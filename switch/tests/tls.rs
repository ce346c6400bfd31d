//! TLS on the ISO 8583 and internal-frame listeners, over loopback TCP,
//! with certificates made here (rcgen): a CA, a server certificate for
//! 127.0.0.1 and localhost, client certificates from that CA and from
//! another. A sale and an MO/TO payment over TLS; a plaintext client on a
//! TLS listener, and one that never starts its handshake, closed and
//! counted; with `tls_ca_file`, a client without a certificate (or with
//! one from another CA) refused and one with a good certificate served;
//! bad TLS files are start-up errors naming the key and the file.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codecs::framing::{Frame, FrameCodec, FrameConfig};
use codecs::iso8583::{Message, Profile};
use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use switch::{Config, KeyAdmin, Owner};
use switch_client::MotoPayment;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

use common::{card, data_dir, metric_sum, sale, Req, TestSwitch, TIMEOUT};

/// The test's certificates, as PEM files in a directory of their own.
struct Pki {
    /// Where the files are: `ca.pem`, `server.pem`/`.key`,
    /// `client.pem`/`.key` (signed by the CA), `stranger.pem`/`.key`
    /// (signed by another CA).
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = data_dir().join("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write");
        let (ca, ca_pem) = Self::ca();
        write("ca.pem", ca_pem);
        let (other_ca, _) = Self::ca();
        let sans = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        for (name, issuer, sans) in [
            ("server", &ca, sans(&["127.0.0.1", "localhost"])),
            ("client", &ca, sans(&["client.test"])),
            ("stranger", &other_ca, sans(&["stranger.test"])),
        ] {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(sans)
                .expect("params")
                .signed_by(&key, issuer)
                .expect("sign");
            write(&format!("{name}.pem"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    /// A CA that signs, and its certificate as PEM.
    fn ca() -> (Issuer<'static, KeyPair>, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).expect("self-signed").pem();
        (Issuer::new(params, key), pem)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A connector that trusts the CA and presents `identity`'s
    /// certificate (`client`, `stranger`), if any.
    fn connector(&self, identity: Option<&str>) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.path("ca.pem")).expect("ca") {
            roots.add(cert.expect("ca cert")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{name}.pem")))
                    .expect("cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certs");
                let key =
                    PrivateKeyDer::from_pem_file(self.path(&format!("{name}.key"))).expect("key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client auth")
            }
        };
        TlsConnector::from(Arc::new(config))
    }

    /// TLS on the ISO 8583 listener; with `ca`, client certificates too.
    fn iso(&self, config: &mut Config, ca: bool) {
        config.iso.tls_cert_file = Some(self.path("server.pem"));
        config.iso.tls_key_file = Some(self.path("server.key"));
        config.iso.tls_ca_file = ca.then(|| self.path("ca.pem"));
    }

    /// TLS on the internal-frame listener.
    fn frame(&self, config: &mut Config) {
        config.listeners.frame_tls_cert_file = Some(self.path("server.pem"));
        config.listeners.frame_tls_key_file = Some(self.path("server.key"));
    }
}

/// A TLS connection to `addr`, its handshake finished (from the client's
/// side: with TLS 1.3 the server may still refuse the client's
/// certificate after this).
async fn tls_connect(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
}

/// ISO 8583 over any stream, with the project's framing.
struct IsoClient<S> {
    framed: Framed<S, FrameCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> IsoClient<S> {
    fn new(stream: S) -> Self {
        IsoClient {
            framed: Framed::new(stream, FrameCodec::new(FrameConfig::default())),
        }
    }

    /// Sends `req`; the answer's F39, or `None` when the connection
    /// failed or closed instead.
    async fn call(&mut self, req: &Req) -> Option<String> {
        let frame = Frame {
            tpdu: None,
            body: Bytes::copy_from_slice(&req.encode()),
        };
        self.framed.send(frame).await.ok()?;
        let answer = tokio::time::timeout(TIMEOUT, self.framed.next())
            .await
            .expect("an answer or a close in time")?
            .ok()?;
        let msg = Message::decode(&Profile::ASCII, &answer.body).expect("answer decodes");
        let code = msg
            .fields()
            .find(|(n, _)| *n == 39)
            .map(|(_, v)| v.to_vec());
        Some(String::from_utf8_lossy(&code.unwrap_or_default()).into_owned())
    }
}

/// `switch_tls_handshake_failures_total` of `listener`.
async fn handshake_failures(sw: &TestSwitch, listener: &str) -> f64 {
    let (_, body) = sw.http_get("/metrics").await;
    let name = format!("switch_tls_handshake_failures_total{{listener=\"{listener}\"}}");
    metric_sum(&body, &name).unwrap_or(0.0)
}

/// Waits until `listener`'s handshake failures exceed `before`.
async fn failure_counted(sw: &TestSwitch, listener: &str, before: f64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while handshake_failures(sw, listener).await <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "failure not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_iso_sale_over_tls_is_approved() {
    let pki = Pki::new();
    let mut sw = TestSwitch::start_with(|c| pki.iso(c, false)).await;
    let tls = tls_connect(&pki.connector(None), sw.iso)
        .await
        .expect("tls");
    let mut client = IsoClient::new(tls);
    for seed in 1..=3 {
        let code = client.call(&sale(&card(seed), 1_000 + seed)).await;
        assert_eq!(code.as_deref(), Some("00"), "sale {seed}");
    }
    // The frame listener stays plaintext.
    let plain = TcpStream::connect(sw.frame).await.expect("connect");
    let (id, secret) = merchant_key(&sw);
    switch_client::Client::connect_stream(plain, &id, &secret)
        .await
        .expect("plaintext log-in");
    sw.stop().await;
}

fn merchant_key(sw: &TestSwitch) -> (String, String) {
    let k = KeyAdmin::new(&sw.dir)
        .create_key(Owner::Merchant("DEMO00000000001".into()), "tls test")
        .expect("create key");
    (k.client_id, k.secret)
}

#[tokio::test]
async fn internal_frames_over_tls_log_in_and_pay() {
    let pki = Pki::new();
    let mut sw = TestSwitch::start_with(|c| pki.frame(c)).await;
    let (id, secret) = merchant_key(&sw);
    let tls = tls_connect(&pki.connector(None), sw.frame)
        .await
        .expect("tls");
    let client = switch_client::Client::connect_stream(tls, &id, &secret)
        .await
        .expect("log-in over TLS");
    let reply = client
        .authorize_moto(&MotoPayment {
            pan: card(42),
            expiry_yymm: "2812".into(),
            cvv2: Some("123".into()),
            merchant_reference: "TLS-1".into(),
            currency: 978,
            amount_minor: 2_500,
            terminal_id: "DEMO0001".into(),
            ..MotoPayment::default()
        })
        .await
        .expect("answered");
    assert!(reply.approved(), "{reply:?}");
    // A plaintext client on the TLS listener is closed before any log-in.
    let before = handshake_failures(&sw, "frame").await;
    let plain = TcpStream::connect(sw.frame).await.expect("connect");
    assert!(switch_client::Client::connect_stream(plain, &id, &secret)
        .await
        .is_err());
    failure_counted(&sw, "frame", before).await;
    sw.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_on_a_tls_listener_is_closed_and_counted() {
    let pki = Pki::new();
    let mut sw = TestSwitch::start_with(|c| pki.iso(c, false)).await;
    let before = handshake_failures(&sw, "iso").await;
    let mut plain = IsoClient::new(TcpStream::connect(sw.iso).await.expect("connect"));
    assert_eq!(plain.call(&sale(&card(7), 500)).await, None, "closed");
    failure_counted(&sw, "iso", before).await;
    // The listener still serves TLS clients.
    let tls = tls_connect(&pki.connector(None), sw.iso)
        .await
        .expect("tls");
    let code = IsoClient::new(tls).call(&sale(&card(8), 500)).await;
    assert_eq!(code.as_deref(), Some("00"));
    sw.stop().await;
}

#[tokio::test]
async fn a_handshake_not_finished_in_time_is_closed_and_counted() {
    let pki = Pki::new();
    let mut sw = TestSwitch::start_with(|c| {
        pki.iso(c, false);
        c.limits.frame_read_timeout_ms = 200;
    })
    .await;
    let before = handshake_failures(&sw, "iso").await;
    let mut silent = TcpStream::connect(sw.iso).await.expect("connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        TIMEOUT,
        tokio::io::AsyncReadExt::read(&mut silent, &mut byte),
    )
    .await
    .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    failure_counted(&sw, "iso", before).await;
    sw.stop().await;
}

#[tokio::test]
async fn with_a_ca_file_only_clients_with_its_certificates_are_served() {
    let pki = Pki::new();
    let mut sw = TestSwitch::start_with(|c| pki.iso(c, true)).await;
    for refused in [None, Some("stranger")] {
        let before = handshake_failures(&sw, "iso").await;
        // With TLS 1.3 the client's handshake may finish before the server
        // checks the certificate: the refusal then comes as the close.
        if let Ok(tls) = tls_connect(&pki.connector(refused), sw.iso).await {
            let code = IsoClient::new(tls).call(&sale(&card(9), 700)).await;
            assert_eq!(code, None, "{refused:?} served");
        }
        failure_counted(&sw, "iso", before).await;
    }
    let tls = tls_connect(&pki.connector(Some("client")), sw.iso)
        .await
        .expect("tls");
    let mut client = IsoClient::new(tls);
    let code = client.call(&sale(&card(10), 700)).await;
    assert_eq!(code.as_deref(), Some("00"));
    client
        .framed
        .get_mut()
        .shutdown()
        .await
        .expect("close_notify");
    sw.stop().await;
}

/// `switch::start`'s error with `edit` applied to the default.
async fn start_error(edit: impl FnOnce(&mut Config)) -> String {
    let overrides = switch::Overrides {
        iso_addr: common::local(),
        frame_addr: common::local(),
        http_addr: common::local(),
        data_dir: Some(data_dir()),
        journal_ack: None,
        repair: false,
    };
    let mut config = Config::load(None, overrides).expect("config");
    edit(&mut config);
    match switch::start(config, switch::Clock::manual(common::START_MS)).await {
        Ok(_) => panic!("started"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn bad_tls_files_are_start_up_errors_naming_the_key_and_file() {
    let pki = Pki::new();
    // A certificate where the key should be.
    let e = start_error(|c| {
        pki.iso(c, false);
        c.iso.tls_key_file = Some(pki.path("server.pem"));
    })
    .await;
    let shown = pki.path("server.pem").display().to_string();
    assert!(e.contains("iso.tls_key_file") && e.contains(&shown), "{e}");
    // A key file that is not there.
    let missing = Path::new("/nonexistent/frame.key");
    let e = start_error(|c| {
        pki.frame(c);
        c.listeners.frame_tls_key_file = Some(missing.into());
    })
    .await;
    assert!(
        e.contains("listeners.frame_tls_key_file") && e.contains("/nonexistent/frame.key"),
        "{e}"
    );
    // A CA file with no certificate in it.
    let e = start_error(|c| {
        pki.iso(c, true);
        c.iso.tls_ca_file = Some(pki.path("client.key"));
    })
    .await;
    assert!(
        e.contains("iso.tls_ca_file") && e.contains("client.key"),
        "{e}"
    );
    // The key of another certificate.
    let e = start_error(|c| {
        pki.iso(c, false);
        c.iso.tls_key_file = Some(pki.path("client.key"));
    })
    .await;
    assert!(
        e.contains("iso.tls_key_file") && e.contains("client.key"),
        "{e}"
    );
}

#[test]
fn a_certificate_without_its_key_is_a_configuration_error() {
    let text = switch::EMBEDDED_DEFAULT.replace(
        "frame_bytes_max = 8192",
        "frame_bytes_max = 8192\ntls_cert_file = \"server.pem\"",
    );
    let e = Config::parse(&text, "t").expect_err("refused").to_string();
    assert!(e.contains("iso.tls_key_file"), "{e}");
    let text = switch::EMBEDDED_DEFAULT.replace(
        "data_dir = \"./data\"",
        "data_dir = \"./data\"\nframe_tls_ca_file = \"ca.pem\"",
    );
    let e = Config::parse(&text, "t").expect_err("refused").to_string();
    assert!(e.contains("listeners.frame_tls_ca_file"), "{e}");
    let text = switch::EMBEDDED_DEFAULT.replace("[iso]", "[iso]\ntls_cert = \"x\"");
    let e = Config::parse(&text, "t").expect_err("refused").to_string();
    assert!(e.contains("tls_cert"), "{e}");
}

/// A TLS front for a plain issuer: terminates TLS (requiring a client
/// certificate signed by the test's CA) and copies bytes both ways.
/// Returns its address and a count of completed handshakes.
async fn tls_front(
    pki: &Pki,
    issuer: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).expect("ca") {
        roots.add(cert.expect("ca cert")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("client verifier");
    let chain = CertificateDer::pem_file_iter(pki.path("server.pem"))
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(pki.path("server.key")).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Ok(mut plain) = TcpStream::connect(issuer).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, handshakes)
}

fn tls_upstream(addr: std::net::SocketAddr, pki: &Pki, identity: &str) -> switch::UpstreamSettings {
    switch::UpstreamSettings {
        name: "tls-issuer".into(),
        addr: addr.to_string(),
        profile: "ascii".into(),
        length_header: "binary2".into(),
        connections: 1,
        inflight_per_link_max: 16,
        timeout_ms: 2_000,
        echo_interval_s: 30,
        sign_on: true,
        acquirer_id: "123456".into(),
        tls_ca_file: Some(pki.path("ca.pem")),
        tls_cert_file: Some(pki.path(&format!("{identity}.pem"))),
        tls_key_file: Some(pki.path(&format!("{identity}.key"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_link_over_tls_presents_its_client_certificate() {
    let pki = Pki::new();
    let issuer = loadgen::issuer::start(loadgen::issuer::IssuerConfig::default())
        .await
        .expect("issuer");
    let (front, handshakes) = tls_front(&pki, issuer.addr()).await;
    let mut sw = TestSwitch::start_with(|c| {
        c.upstreams.push(tls_upstream(front, &pki, "client"));
        c.routes.push(switch::RouteSettings {
            pan_prefixes: vec!["4".into()],
            upstream: "tls-issuer".into(),
        });
    })
    .await;
    // Up once its sign-on is answered, over TLS.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (_, m) = sw.http_get("/metrics").await;
        let up = m.lines().any(|l| {
            l.starts_with("switch_upstream_links_connected{")
                && l.contains("tls-issuer")
                && !l.ends_with(" 0")
        });
        if up {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no link up over TLS: {m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(issuer.counts().requests_0800_sign_on, 1);
    let mut c = sw.client().await;
    let r = c.call(&sale(&card(31), 1_000)).await;
    assert_eq!(r.code(), "00", "the issuer's approval, over TLS");
    assert_eq!(issuer.counts().requests_0200, 1);
    assert!(handshakes.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    sw.stop().await;
    // A certificate the issuer's CA did not sign: no link, 91 at once.
    let mut sw = TestSwitch::start_with(|c| {
        c.upstreams.push(tls_upstream(front, &pki, "stranger"));
        c.routes.push(switch::RouteSettings {
            pan_prefixes: vec!["4".into()],
            upstream: "tls-issuer".into(),
        });
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = sw.client().await;
    assert_eq!(c.call(&sale(&card(32), 1_000)).await.code(), "91");
    assert_eq!(
        issuer.counts().requests_0200,
        1,
        "nothing reached the issuer"
    );
    sw.stop().await;
}
