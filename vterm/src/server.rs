//! The listener: a connection limit taken before `accept()`, each
//! connection served by axum until shutdown.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most browser connections at once: a terminal has a handful of
/// operators, each browser opening a few connections.
pub(crate) const CONNECTIONS_MAX: usize = 256;

/// A TCP listener that holds a permit per open connection.
#[derive(Debug)]
pub(crate) struct Limited {
    /// The bound socket.
    listener: TcpListener,
    /// `CONNECTIONS_MAX` permits; one is taken before each `accept()`.
    permits: Arc<Semaphore>,
}

impl Limited {
    /// Wraps a bound listener.
    pub(crate) fn new(listener: TcpListener) -> Limited {
        Limited {
            listener,
            permits: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
        }
    }
}

/// The browser's address, for the sign-in lockout (axum's `ConnectInfo`
/// of a [`Limited`] listener).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) IpAddr);

/// Most `X-Forwarded-For` hops looked at: a client that sends a long
/// list through a trusted proxy cannot make the terminal walk it.
const FORWARDED_HOPS_MAX: usize = 16;

/// The client a request is counted for (sign-in lockouts): the peer, or,
/// when the peer is one of `trusted` proxies, the nearest address in
/// `forwarded_for` (the `X-Forwarded-For` values, in order) that is not
/// itself a trusted proxy. The rightmost hops are the ones the trusted
/// proxies wrote; anything left of the first untrusted one came from the
/// client and is not believed. A hop that does not parse stops the walk at
/// the last trusted address.
pub(crate) fn client_address<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &[IpAddr],
) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev().take(FORWARDED_HOPS_MAX) {
        match hop.trim().parse::<IpAddr>() {
            Ok(addr) if trusted.contains(&addr) => client = addr,
            Ok(addr) => return addr,
            Err(_) => return client,
        }
    }
    client
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Limited>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Limited>) -> Peer {
        Peer(stream.remote_addr().ip())
    }
}

/// A connection and its permit, released when the connection is dropped.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The socket.
    stream: TcpStream,
    /// Held for the connection's life.
    _permit: OwnedSemaphorePermit,
}

impl axum::serve::Listener for Limited {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            let permit = match self.permits.clone().acquire_owned().await {
                Ok(permit) => permit,
                // The semaphore is never closed; wait rather than spin.
                Err(_) => std::future::pending().await,
            };
            if self.permits.available_permits() == 0 {
                tracing::warn!(
                    connections_max = CONNECTIONS_MAX,
                    "connection limit reached"
                );
            }
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        Connection {
                            stream,
                            _permit: permit,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off.
                    tracing::warn!(error = %e, "accept failed");
                    drop(permit);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let proxy = [ip("10.0.0.1")];
        let xff = ["198.51.100.7"];
        let from = |peer: &str| client_address(ip(peer), xff.into_iter(), &proxy);
        assert_eq!(from("192.0.2.1"), ip("192.0.2.1"));
        assert_eq!(from("10.0.0.1"), ip("198.51.100.7"));
        assert_eq!(
            client_address(ip("10.0.0.1"), [].into_iter(), &proxy),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn what_the_client_wrote_left_of_its_own_address_is_ignored() {
        let proxies = [ip("10.0.0.1"), ip("10.0.0.2")];
        // The client forged 1.1.1.1; proxy .2 added the client, .1 added .2.
        let xff = ["1.1.1.1, 198.51.100.7", "10.0.0.2"];
        let client = client_address(ip("10.0.0.1"), xff.into_iter(), &proxies);
        assert_eq!(client, ip("198.51.100.7"));
        let garbage = ["198.51.100.7, not-an-address"];
        let client = client_address(ip("10.0.0.1"), garbage.into_iter(), &proxies);
        assert_eq!(client, ip("10.0.0.1"));
    }
}
