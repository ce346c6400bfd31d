//! TLS: the listeners' server side and the upstream links' client side,
//! from PEM files, on rustls with the aws-lc-rs provider.
//!
//! - A listener has TLS when its `tls_cert_file` and `tls_key_file` are set
//!   (`[iso]`; `[listeners]` `frame_tls_*` for internal frames); with its
//!   `tls_ca_file` set, a client must present a certificate that CA signed.
//!   The files are read once at start; any problem is a start-up error
//!   naming the key and the file.
//! - The handshake runs in the connection's own task (never in the accept
//!   loop, where one slow client would hold up the others), within
//!   `limits.frame_read_timeout_ms` of the accept; a failed one closes the
//!   connection, counts `switch_tls_handshake_failures_total{listener}`
//!   and logs within a budget.
//! - [`client_connector`] is the upstream links' side. It needs a CA file:
//!   the switch runs offline, so there are no built-in roots (webpki-roots)
//!   and the system's are not read.
//!
//! aws-lc-rs is the one crypto provider (with post-quantum hybrid key
//! exchange first), named explicitly, so nothing depends on which
//! provider some other crate happens to enable.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::net::stream::Stream;

/// Largest PEM file read (a certificate chain, a key, a CA bundle): a
/// mistyped path to something big is refused before it is read whole.
pub(crate) const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// A PEM file and the name its messages give it (a configuration key such
/// as `iso.tls_key_file`, or a role such as `CA file`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PemFile<'a> {
    /// The configuration key or role, for messages.
    pub(crate) name: &'a str,
    /// Where the file is.
    pub(crate) path: &'a Path,
}

impl PemFile<'_> {
    /// The file's bytes, within [`PEM_FILE_BYTES_MAX`].
    fn read(&self) -> anyhow::Result<Vec<u8>> {
        let len = std::fs::metadata(self.path)
            .with_context(|| self.describe("cannot be read"))?
            .len();
        anyhow::ensure!(
            len <= PEM_FILE_BYTES_MAX,
            self.describe(&format!("{len} bytes, more than {PEM_FILE_BYTES_MAX}"))
        );
        std::fs::read(self.path).with_context(|| self.describe("cannot be read"))
    }

    fn describe(&self, problem: &str) -> String {
        format!("{} {}: {problem}", self.name, self.path.display())
    }

    /// Every certificate in the file; at least one.
    fn certificates(&self) -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let bytes = self.read()?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!(self.describe(&format!("bad PEM: {e}"))))?;
        anyhow::ensure!(!certs.is_empty(), self.describe("no PEM CERTIFICATE in it"));
        Ok(certs)
    }

    /// The first private key in the file (PKCS#8, PKCS#1 or SEC1).
    fn private_key(&self) -> anyhow::Result<PrivateKeyDer<'static>> {
        let bytes = self.read()?;
        PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|e| anyhow::anyhow!(self.describe(&format!("no PEM private key in it ({e})"))))
    }

    /// The file's certificates as trust anchors.
    fn roots(&self) -> anyhow::Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for cert in self.certificates()? {
            roots.add(cert).map_err(|e| {
                anyhow::anyhow!(self.describe(&format!("not a CA certificate: {e}")))
            })?;
        }
        Ok(roots)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server configuration: `cert`'s chain (the server's certificate
/// first) with `key`; with `ca`, clients must present a certificate
/// signed by it.
///
/// # Errors
/// A file missing, unreadable, over [`PEM_FILE_BYTES_MAX`] or without the
/// PEM it should hold, or a key that does not match the certificate; the
/// message names the file by its `name`.
pub(crate) fn server_config(
    cert: PemFile<'_>,
    key: PemFile<'_>,
    ca: Option<PemFile<'_>>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = cert.certificates()?;
    let private_key = key.private_key()?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()?), provider())
                    .build()
                    .with_context(|| ca.describe("cannot verify clients with it"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, private_key)
        .with_context(|| {
            format!(
                "{} {} with {} {}: not a usable certificate and key pair",
                cert.name,
                cert.path.display(),
                key.name,
                key.path.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// A client configuration for upstream links: servers must present a
/// certificate signed by `ca_file`'s CA; with `cert_file` and `key_file`
/// (both or neither), the switch presents that certificate when asked.
///
/// The server name to check is the caller's, at `connect`: an IP address
/// is checked against the certificate's IP addresses, a name against its
/// DNS names.
///
/// # Errors
/// No `ca_file` (the switch has no built-in trust anchors and does not
/// read the system's), one of `cert_file` and `key_file` without the
/// other, or a file missing, unreadable or without the PEM it should
/// hold; the message names the file.
pub(crate) fn client_connector(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> anyhow::Result<TlsConnector> {
    let ca = ca_file.context(
        "upstream TLS needs a CA file: the switch has no built-in trust anchors and does not read the system's",
    )?;
    let roots = PemFile {
        name: "CA file",
        path: ca,
    }
    .roots()?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let config = match (cert_file, key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let cert = PemFile {
                name: "certificate file",
                path: cert,
            };
            let key = PemFile {
                name: "key file",
                path: key,
            };
            builder
                .with_client_auth_cert(cert.certificates()?, key.private_key()?)
                .with_context(|| {
                    format!(
                        "certificate file {} with key file {}: not a usable certificate and key pair",
                        cert.path.display(),
                        key.path.display()
                    )
                })?
        }
        _ => anyhow::bail!("a client certificate needs both a certificate file and a key file"),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A listener's acceptor from its three keys (`{prefix}tls_cert_file`,
/// `…_key_file`, `…_ca_file`); `None` without a certificate: plaintext.
fn acceptor(
    prefix: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
    ca: Option<&Path>,
) -> anyhow::Result<Option<TlsAcceptor>> {
    let names = [
        format!("{prefix}tls_cert_file"),
        format!("{prefix}tls_key_file"),
        format!("{prefix}tls_ca_file"),
    ];
    let (cert, key) = match (cert, key) {
        (None, None) => {
            anyhow::ensure!(
                ca.is_none(),
                "{} needs {} and {}",
                names[2],
                names[0],
                names[1]
            );
            return Ok(None);
        }
        (Some(cert), Some(key)) => (cert, key),
        _ => anyhow::bail!("{} and {}: both or neither", names[0], names[1]),
    };
    let file = |name, path| PemFile { name, path };
    let config = server_config(
        file(&names[0], cert),
        file(&names[1], key),
        ca.map(|path| file(&names[2], path)),
    )?;
    Ok(Some(TlsAcceptor::from(config)))
}

/// The listeners' TLS, read from their files at start.
pub(crate) struct Acceptors {
    /// The ISO 8583 listener's (`[iso]` `tls_*`).
    pub(crate) iso: Option<TlsAcceptor>,
    /// The internal-frame listener's (`[listeners]` `frame_tls_*`).
    pub(crate) frame: Option<TlsAcceptor>,
}

impl Acceptors {
    /// Reads every TLS file the configuration names.
    ///
    /// # Errors
    /// As [`server_config`], naming the configuration key and the file.
    pub(crate) fn load(config: &Config) -> anyhow::Result<Acceptors> {
        let (iso, l) = (&config.iso, &config.listeners);
        Ok(Acceptors {
            iso: acceptor(
                "iso.",
                iso.tls_cert_file.as_deref(),
                iso.tls_key_file.as_deref(),
                iso.tls_ca_file.as_deref(),
            )?,
            frame: acceptor(
                "listeners.frame_",
                l.frame_tls_cert_file.as_deref(),
                l.frame_tls_key_file.as_deref(),
                l.frame_tls_ca_file.as_deref(),
            )?,
        })
    }
}

/// Why a handshake did not give a connection.
#[derive(Debug)]
pub(crate) enum Handshake {
    /// The peer is not speaking TLS, was refused (no or a bad client
    /// certificate), or the socket failed.
    Failed(std::io::Error),
    /// Not finished within the deadline.
    TimedOut,
    /// Shutdown came first.
    Shutdown,
}

/// The server side of a handshake on `tcp`, within `deadline`.
///
/// # Errors
/// [`Handshake`]: the connection is to be closed.
pub(crate) async fn accept(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    deadline: Duration,
    cancel: &CancellationToken,
) -> Result<Stream, Handshake> {
    tokio::select! {
        () = cancel.cancelled() => Err(Handshake::Shutdown),
        r = tokio::time::timeout(deadline, acceptor.accept(tcp)) => match r {
            Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tls))),
            Ok(Err(e)) => Err(Handshake::Failed(e)),
            Err(_) => Err(Handshake::TimedOut),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA and, signed by it, a server certificate for 127.0.0.1 and
    /// localhost and a client certificate, as PEM files in a fresh
    /// directory.
    pub(crate) struct TestPki {
        /// Where the files are.
        pub(crate) dir: std::path::PathBuf,
    }

    impl TestPki {
        pub(crate) fn new(tag: &str) -> TestPki {
            use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
            let dir =
                std::env::temp_dir().join(format!("switch-tls-unit-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("dir");
            let ca_key = KeyPair::generate().expect("key");
            let mut ca = CertificateParams::new(Vec::new()).expect("params");
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca_cert = ca.self_signed(&ca_key).expect("ca");
            let issuer = rcgen::Issuer::new(ca, ca_key);
            let write =
                |name: &str, text: String| std::fs::write(dir.join(name), text).expect("write");
            write("ca.pem", ca_cert.pem());
            for (name, sans) in [
                (
                    "server",
                    vec!["127.0.0.1".to_string(), "localhost".to_string()],
                ),
                ("client", vec!["client.test".to_string()]),
            ] {
                let key = KeyPair::generate().expect("key");
                let cert = CertificateParams::new(sans)
                    .expect("params")
                    .signed_by(&key, &issuer)
                    .expect("sign");
                write(&format!("{name}.pem"), cert.pem());
                write(&format!("{name}.key"), key.serialize_pem());
            }
            TestPki { dir }
        }

        pub(crate) fn path(&self, name: &str) -> std::path::PathBuf {
            self.dir.join(name)
        }

        pub(crate) fn file(&self, name: &'static str) -> PemFile<'static> {
            PemFile {
                name,
                path: Box::leak(self.path(name).into_boxed_path()),
            }
        }
    }

    /// A handshake over loopback TCP; `Ok` when both sides finished and
    /// one byte went each way.
    async fn handshake(server: Arc<ServerConfig>, client: TlsConnector) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = TlsAcceptor::from(server)
                .accept(tcp)
                .await
                .map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            tls.write_all(&b).await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let client_side = async {
            let mut tls = client.connect(name, tcp).await.map_err(|e| e.to_string())?;
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            tls.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let (c, s) = tokio::join!(client_side, server);
        c.and(s.expect("server task"))
    }

    #[tokio::test]
    async fn a_client_trusting_the_ca_talks_to_the_server() {
        let pki = TestPki::new("plain");
        let server = server_config(pki.file("server.pem"), pki.file("server.key"), None)
            .expect("server config");
        let client = client_connector(Some(&pki.path("ca.pem")), None, None).expect("connector");
        handshake(server, client).await.expect("handshake");
    }

    #[tokio::test]
    async fn with_a_ca_file_the_server_wants_a_client_certificate() {
        let pki = TestPki::new("mutual");
        let server = server_config(
            pki.file("server.pem"),
            pki.file("server.key"),
            Some(pki.file("ca.pem")),
        )
        .expect("server config");
        let anonymous = client_connector(Some(&pki.path("ca.pem")), None, None).expect("connector");
        assert!(handshake(server.clone(), anonymous).await.is_err());
        let known = client_connector(
            Some(&pki.path("ca.pem")),
            Some(&pki.path("client.pem")),
            Some(&pki.path("client.key")),
        )
        .expect("connector");
        handshake(server, known).await.expect("handshake");
    }

    #[tokio::test]
    async fn a_client_not_trusting_the_servers_ca_refuses_it() {
        let pki = TestPki::new("trust");
        let other = TestPki::new("trust-other");
        let server = server_config(pki.file("server.pem"), pki.file("server.key"), None)
            .expect("server config");
        let client = client_connector(Some(&other.path("ca.pem")), None, None).expect("connector");
        assert!(handshake(server, client).await.is_err());
    }

    #[test]
    fn bad_files_are_named() {
        let pki = TestPki::new("bad");
        let missing = PemFile {
            name: "iso.tls_key_file",
            path: Path::new("/nonexistent/key.pem"),
        };
        let e = format!(
            "{:#}",
            server_config(pki.file("server.pem"), missing, None).expect_err("missing")
        );
        assert!(
            e.contains("iso.tls_key_file") && e.contains("/nonexistent/key.pem"),
            "{e}"
        );
        // A certificate where the key should be.
        let e = format!(
            "{:#}",
            server_config(pki.file("server.pem"), pki.file("ca.pem"), None).expect_err("no key")
        );
        assert!(e.contains("ca.pem") && e.contains("private key"), "{e}");
        // A key that is not the certificate's.
        let e = format!(
            "{:#}",
            server_config(pki.file("server.pem"), pki.file("client.key"), None).expect_err("pair")
        );
        assert!(e.contains("client.key") && e.contains("pair"), "{e}");
        let refused = |r: anyhow::Result<TlsConnector>| match r {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        };
        let e = refused(client_connector(None, None, None));
        assert!(e.contains("CA file"), "{e}");
        let ca = pki.path("ca.pem");
        let e = refused(client_connector(
            Some(&ca),
            Some(&pki.path("client.pem")),
            None,
        ));
        assert!(e.contains("both"), "{e}");
        let e = refused(client_connector(Some(&pki.path("server.key")), None, None));
        assert!(e.contains("CA file") && e.contains("server.key"), "{e}");
    }
}
