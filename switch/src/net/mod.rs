//! The network shell: listeners, the one connection loop both wires share,
//! the outbox, the deadlines, and the HTTP endpoint.
//!
//! - [`Listener`] takes a permit from the connection-limit semaphore and a
//!   slot of the peer address's limit (`address`) for each accepted
//!   connection, refusing it with a log line within a budget and a metric
//!   when none is left, and spawns a [`Connection`].
//! - [`Connection`] is generic over a [`Wire`]: ISO 8583 and internal
//!   frames differ only in how a frame is delimited and answered
//!   (`crate::wire`). It reads, answers every whole frame, writes every
//!   answer produced from one read with one write, holds answers that wait
//!   for the journal (`outbox`), stops reading at the in-flight limit
//!   (backpressure, not memory growth), and ends at a deadline no client can
//!   stretch (`deadline`).
//! - `stream`: plain TCP or TLS, one enum the loop reads and writes;
//!   `tls`: the listeners' TLS (the handshake in the connection's task,
//!   within a deadline) and the upstream links' connector.
//! - `http`: `/metrics`, `/healthz`, `/readyz`, with limits of their own.

mod address;
mod connection;
mod deadline;
pub(crate) mod http;
mod outbox;
mod pressure;
mod stream;
pub(crate) mod tls;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use address::{host_of, AddressLimit};
pub(crate) use connection::Connection;
pub(crate) use deadline::{ConnLimits, End};
pub(crate) use pressure::Pressure;
pub(crate) use stream::Stream;
pub(crate) use wire::{Answered, Later, Wire, LATER_END};

use crate::ratelog::warn_limited;

/// Accepts connections up to a limit.
pub(crate) struct Listener {
    /// Bound socket.
    pub(crate) listener: TcpListener,
    /// Permits for open connections (`limits.connections_max`).
    pub(crate) limit: Arc<Semaphore>,
    /// Open connections per peer address
    /// (`limits.connections_per_address_max`).
    pub(crate) per_address: Arc<AddressLimit>,
    /// Label for logs and metrics (`iso`, `frame`).
    pub(crate) name: &'static str,
    /// TLS, when the listener's certificate is configured; the handshake
    /// runs in the connection's task.
    pub(crate) tls: Option<TlsAcceptor>,
    /// How long a TLS handshake may take from the accept
    /// (`limits.frame_read_timeout_ms`: the handshake is the connection's
    /// first frames).
    pub(crate) handshake_timeout: Duration,
}

impl Listener {
    /// Accepts until `cancel`; each connection runs `serve` on the tracker
    /// (after its TLS handshake, on a TLS listener).
    pub(crate) async fn run<F, Fut>(self, cancel: CancellationToken, tracker: TaskTracker, serve: F)
    where
        F: Fn(Stream, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let serve = Arc::new(serve);
        let open = metrics::gauge!("switch_connections_open", "listener" => self.name);
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => return,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    warn_limited!("accept", listener = self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                warn_limited!("connections_max", listener = self.name, %peer, "connection refused: connections_max reached");
                metrics::counter!("switch_limit_reached_total", "limit" => "connections_max")
                    .increment(1);
                drop(stream);
                continue;
            };
            let Some(slot) = self.per_address.acquire(peer.ip()) else {
                warn_limited!("connections_per_address_max", listener = self.name, %peer, "connection refused: connections_per_address_max reached");
                metrics::counter!("switch_limit_reached_total", "limit" => "connections_per_address_max")
                    .increment(1);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (serve, cancel) = (serve.clone(), cancel.clone());
            let (tls, handshake_timeout, name) =
                (self.tls.clone(), self.handshake_timeout, self.name);
            let open = open.clone();
            open.increment(1.0);
            tracker.spawn(async move {
                let stream = match tls {
                    None => Some(Stream::Plain(stream)),
                    Some(tls) => handshake(&tls, stream, handshake_timeout, &cancel, name).await,
                };
                if let Some(stream) = stream {
                    serve(stream, cancel).await;
                }
                open.decrement(1.0);
                drop((permit, slot));
            });
        }
    }
}

/// The server side of a TLS handshake on `stream`; `None` when it failed
/// (counted and logged within a budget), timed out or met shutdown: the
/// connection is closed.
async fn handshake(
    tls: &TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
    cancel: &CancellationToken,
    listener: &'static str,
) -> Option<Stream> {
    let peer = stream.peer_addr().ok();
    let error = match tls::accept(tls, stream, deadline, cancel).await {
        Ok(stream) => return Some(stream),
        Err(tls::Handshake::Shutdown) => return None,
        Err(tls::Handshake::TimedOut) => "not finished within limits.frame_read_timeout_ms".into(),
        Err(tls::Handshake::Failed(e)) => e.to_string(),
    };
    metrics::counter!("switch_tls_handshake_failures_total", "listener" => listener).increment(1);
    warn_limited!("tls_handshake", listener, ?peer, %error, "TLS handshake failed; connection closed");
    None
}
