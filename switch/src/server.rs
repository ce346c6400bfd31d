//! Listeners and per-connection handlers.
//!
//! A [`Listener`] takes a permit from the connection-limit semaphore for
//! each accepted connection (refusing it, with a log line and a metric,
//! when none is left) and spawns a [`Handler`]. A handler reads frames,
//! runs each through the pipeline, and writes responses in batches: every
//! response produced from what one read returned is flushed with one write.
//! Responses that wait for the journal are held, in order, until the
//! durable sequence reaches them; at the in-flight limit the handler stops
//! reading (backpressure, not memory growth).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use codecs::framing::{FrameCodec, FrameConfig};
use codecs::iso8583::Profile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::Engine;
use crate::iso;
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// Read buffer size per connection at start; it grows to one frame at most.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// How long a closing connection waits for held responses to become durable.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every ISO 8583 connection shares.
pub(crate) struct IsoShared {
    /// The pipeline.
    pub(crate) engine: Arc<Engine>,
    /// Metric handles.
    pub(crate) metrics: Arc<Metrics>,
    /// Wire profile.
    pub(crate) profile: &'static Profile,
    /// Framing settings.
    pub(crate) framing: FrameConfig,
    /// `limits.inflight_per_connection_max`.
    pub(crate) inflight_max: usize,
    /// `limits.idle_timeout_s`.
    pub(crate) idle_timeout: Duration,
    /// Durable journal sequence, when a journal waits.
    pub(crate) durable: Option<journal::DurableWatch>,
}

/// Accepts connections up to a limit.
pub(crate) struct Listener {
    /// Bound socket.
    pub(crate) listener: TcpListener,
    /// Permits for open connections (`limits.connections_max`).
    pub(crate) limit: Arc<Semaphore>,
    /// Label for logs and metrics (`iso`, `frame`).
    pub(crate) name: &'static str,
}

impl Listener {
    /// Accepts until `cancel`; each connection runs `serve` on the tracker.
    pub(crate) async fn run<F, Fut>(self, cancel: CancellationToken, tracker: TaskTracker, serve: F)
    where
        F: Fn(TcpStream, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
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
                    tracing::warn!(listener = self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                tracing::warn!(listener = self.name, %peer, "connection refused: connections_max reached");
                metrics::counter!("switch_limit_reached_total", "limit" => "connections_max")
                    .increment(1);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let fut = serve(stream, cancel.clone());
            let open = open.clone();
            open.increment(1.0);
            tracker.spawn(async move {
                fut.await;
                open.decrement(1.0);
                drop(permit);
            });
        }
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The peer closed it.
    PeerClosed,
    /// Shutdown.
    Shutdown,
    /// No traffic for the idle timeout.
    Idle,
    /// A frame that cannot be answered.
    Protocol(&'static str),
    /// Socket error.
    Io,
    /// The journal stopped (failed, or closed) with answers held for it.
    Journal,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            End::PeerClosed => "peer_closed",
            End::Shutdown => "shutdown",
            End::Idle => "idle_timeout",
            End::Protocol(reason) => reason,
            End::Io => "io_error",
            End::Journal => "journal_stopped",
        }
    }
}

/// One ISO 8583 connection.
pub(crate) struct Handler {
    /// Shared pipeline and settings.
    shared: Arc<IsoShared>,
    /// The socket.
    stream: TcpStream,
    /// Length-prefix framing.
    codec: FrameCodec,
    /// Bytes read, not yet framed.
    input: BytesMut,
    /// Answers ready or held for the journal; at most `inflight_max` held.
    outbox: Outbox,
    /// One response being written.
    scratch: BytesMut,
}

impl Handler {
    /// A handler for `stream`.
    pub(crate) fn new(shared: Arc<IsoShared>, stream: TcpStream) -> Self {
        let codec = FrameCodec::new(shared.framing);
        let outbox = Outbox::new(shared.durable.clone(), shared.inflight_max);
        Handler {
            shared,
            stream,
            codec,
            input: BytesMut::with_capacity(READ_BUFFER_BYTES),
            outbox,
            scratch: BytesMut::with_capacity(1024),
        }
    }

    /// Serves until the peer leaves, shutdown, idle timeout or a bad frame.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let peer = self.stream.peer_addr().ok();
        let end = self.serve(&cancel).await;
        // Answer what was read (unless the input is broken) and flush what
        // waits for the journal.
        let more = !matches!(end, End::Protocol(_) | End::Io);
        // Counted before the socket closes, so a peer that sees the close
        // and then scrapes /metrics finds it (a test did, under load).
        metrics::counter!("switch_connections_closed_total", "reason" => end.label()).increment(1);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, self.drain(more)).await;
        match end {
            End::PeerClosed | End::Shutdown => {
                tracing::debug!(?peer, reason = end.label(), "connection closed")
            }
            _ => tracing::warn!(?peer, reason = end.label(), "connection closed"),
        }
    }

    async fn serve(&mut self, cancel: &CancellationToken) -> End {
        // One timer for the connection's life, pushed back only when it
        // fires early: re-arming it on every read took the runtime's timer
        // lock once per read batch.
        let idle_timeout = self.shared.idle_timeout;
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        let mut last_read = tokio::time::Instant::now();
        loop {
            if let Err(end) = self.process_input() {
                return end;
            }
            self.outbox.release_durable();
            if self.outbox.flush(&mut self.stream).await.is_err() {
                return End::Io;
            }
            let can_read = self.outbox.held() < self.shared.inflight_max;
            let waiting = self.outbox.held() > 0;
            tokio::select! {
                () = cancel.cancelled() => return End::Shutdown,
                read = self.stream.read_buf(&mut self.input), if can_read => match read {
                    Ok(0) => return End::PeerClosed,
                    Ok(_) => last_read = tokio::time::Instant::now(),
                    Err(_) => return End::Io,
                },
                changed = self.outbox.wait_durable(), if waiting => {
                    if changed.is_err() {
                        return End::Journal;
                    }
                }
                () = &mut idle, if !waiting => {
                    let due = last_read + idle_timeout;
                    if tokio::time::Instant::now() >= due {
                        return End::Idle;
                    }
                    idle.as_mut().reset(due);
                }
            }
        }
    }

    /// Runs every whole frame in `input` through the pipeline, while under
    /// the in-flight limit.
    fn process_input(&mut self) -> Result<(), End> {
        while self.outbox.held() < self.shared.inflight_max {
            let frame = match self.codec.decode(&mut self.input) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "framing error");
                    metrics::counter!("switch_codec_errors_total", "kind" => "framing")
                        .increment(1);
                    return Err(End::Protocol("framing_error"));
                }
            };
            let sh = &self.shared;
            let seq = iso::handle(
                &sh.engine,
                &sh.metrics,
                sh.profile,
                &self.codec,
                frame.tpdu,
                &frame.body,
                &mut self.scratch,
            )
            .map_err(|u| End::Protocol(u.label()))?;
            self.outbox.push(&self.scratch, seq);
            self.scratch.clear();
        }
        Ok(())
    }

    /// At the end: answer whole frames already read, wait for the journal,
    /// write everything.
    async fn drain(&mut self, process_rest: bool) {
        if process_rest {
            let _ = self.process_input();
        }
        self.outbox.drain(&mut self.stream).await;
        let _ = self.stream.shutdown().await;
    }
}
