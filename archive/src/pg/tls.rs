//! TLS to PostgreSQL, named in the URL as libpq names it: `sslrootcert`
//! (the CA that signed the server's certificate, a PEM file) and
//! `sslmode`. The driver knows neither `sslrootcert` nor the verifying
//! modes, so [`prepare`] takes them out of the URL before it is parsed.
//!
//! The switch always verifies the server: its certificate must chain to
//! `sslrootcert` and name the host connected to (libpq's `verify-full`).
//! So `sslrootcert` makes TLS required (`sslmode` absent, `prefer`,
//! `require`, `verify-ca` or `verify-full`), and a mode that asks for TLS
//! without `sslrootcert` is refused, rather than encrypting to a server
//! nobody checked. `disable` with `sslrootcert` is refused as a
//! contradiction. Without either, connections are plain TCP, as before.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::Socket;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A URL with its TLS parameters taken out.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Prepared {
    /// The URL the driver parses: no `sslrootcert`; a verifying mode as
    /// `require`; `require` added when only `sslrootcert` was given.
    pub(super) url: String,
    /// The CA file, when TLS is asked for.
    pub(super) root: Option<String>,
}

/// Takes `sslrootcert` and the verifying `sslmode`s out of `url` (a URL,
/// `postgresql://…?key=value&…`, or libpq's `key=value key=value` form).
///
/// # Errors
/// Why the combination is refused, for the caller to name with the URL.
pub(super) fn prepare(url: &str) -> Result<Prepared, String> {
    let url_form = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (head, params, separator) = if url_form {
        match url.split_once('?') {
            Some((head, query)) => (head, query.split('&').collect::<Vec<_>>(), "&"),
            None => (url, Vec::new(), "&"),
        }
    } else {
        ("", url.split_whitespace().collect::<Vec<_>>(), " ")
    };
    let mut kept: Vec<String> = Vec::with_capacity(params.len() + 1);
    let (mut root, mut mode) = (None, None);
    for param in params {
        match param.split_once('=') {
            Some(("sslrootcert", value)) => {
                let value = if url_form {
                    percent_decode(value)?
                } else {
                    value.to_owned()
                };
                root = Some(value);
            }
            Some(("sslmode", value)) => mode = Some(value.to_owned()),
            _ if param.is_empty() => {}
            _ => kept.push(param.to_owned()),
        }
    }
    let tls = match (mode.as_deref(), root.is_some()) {
        (Some("disable"), true) => {
            return Err("sslmode=disable with sslrootcert: one asks for TLS, one not".into())
        }
        (Some("require" | "verify-ca" | "verify-full"), false) => {
            return Err(
                "TLS without sslrootcert: the switch verifies the server's certificate, \
                 so give sslrootcert=/path/to/ca.pem"
                    .into(),
            )
        }
        (Some(m @ ("disable" | "allow" | "prefer")), false) => {
            // Plain: what the driver knows of the mode is kept.
            let m = if m == "allow" { "prefer" } else { m };
            kept.push(format!("sslmode={m}"));
            false
        }
        (None, false) => false,
        (Some("allow" | "prefer" | "require" | "verify-ca" | "verify-full") | None, true) => true,
        (Some(other), _) => return Err(format!("sslmode={other}: not a mode")),
    };
    if tls {
        kept.push("sslmode=require".to_owned());
    }
    let url = match (url_form, kept.is_empty()) {
        (true, true) => head.to_owned(),
        (true, false) => format!("{head}?{}", kept.join(separator)),
        (false, _) => kept.join(separator),
    };
    Ok(Prepared {
        url,
        root: root.filter(|_| tls),
    })
}

/// `%XX` escapes of a URL's value decoded.
fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("sslrootcert: a bad escape in {value:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "sslrootcert: not UTF-8".to_owned())
}

/// The driver's TLS from a CA's PEM: rustls, the CA as the only root.
#[derive(Clone)]
pub(super) struct PgTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgTls")
    }
}

impl PgTls {
    /// From the CA's PEM text.
    ///
    /// # Errors
    /// PEM without a certificate, or one rustls refuses.
    pub(super) fn from_pem(ca: &[u8]) -> Result<PgTls, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| e.to_string())?;
            roots.add(cert).map_err(|e| e.to_string())?;
        }
        if roots.is_empty() {
            return Err("no certificate in the PEM".into());
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(PgTls {
            config: Arc::new(config),
        })
    }
}

impl MakeTlsConnect<Socket> for PgTls {
    type Stream = PgTlsStream;
    type TlsConnect = PgTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<PgTlsConnect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(PgTlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name,
        })
    }
}

/// One connection's handshake.
pub(super) struct PgTlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for PgTlsConnect {
    type Stream = PgTlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let tls = self.connector.connect(self.name, stream).await?;
            Ok(PgTlsStream(tls))
        })
    }
}

/// A TLS connection to the server.
pub(super) struct PgTlsStream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for PgTlsStream {
    /// None: SCRAM without channel binding (`-PLUS` is not offered).
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for PgTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PgTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{prepare, Prepared};

    fn ok(url: &str) -> (String, Option<String>) {
        let Prepared { url, root } = prepare(url).expect(url);
        (url, root)
    }

    #[test]
    fn tls_parameters_leave_the_url_and_require_a_root() {
        let plain = "postgresql://u@h:5432/db";
        assert_eq!(ok(plain), (plain.to_owned(), None));
        assert_eq!(
            ok("postgresql://u@h/db?application_name=x&sslmode=prefer"),
            (
                "postgresql://u@h/db?application_name=x&sslmode=prefer".into(),
                None
            )
        );
        assert_eq!(
            ok("postgresql://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"),
            (
                "postgresql://u@h/db?sslmode=require".into(),
                Some("/etc/ca.pem".into())
            )
        );
        // A root alone asks for TLS.
        assert_eq!(
            ok("host=h user=u sslrootcert=/ca.pem dbname=d"),
            (
                "host=h user=u dbname=d sslmode=require".into(),
                Some("/ca.pem".into())
            )
        );
        assert_eq!(
            ok("host=h sslmode=allow"),
            ("host=h sslmode=prefer".into(), None)
        );
        for refused in [
            "postgresql://h/db?sslmode=require",
            "postgresql://h/db?sslmode=verify-ca",
            "host=h sslmode=verify-full",
            "postgresql://h/db?sslmode=disable&sslrootcert=/ca.pem",
            "postgresql://h/db?sslmode=sometimes",
            "postgresql://h/db?sslrootcert=%zz",
        ] {
            assert!(prepare(refused).is_err(), "{refused}");
        }
    }
}
