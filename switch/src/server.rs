//! Listeners and per-connection handlers.
//!
//! A [`Listener`] takes a permit from the connection-limit semaphore and a
//! slot of the peer address's limit for each accepted connection (refusing
//! it, with a log line within a budget and a metric, when none is left)
//! and spawns a handler. A handler reads frames, runs each through the
//! pipeline, and writes responses in batches: every response produced from
//! what one read returned is flushed with one write. Responses that wait
//! for the journal are held, in order, until the durable sequence reaches
//! them; at the in-flight limit the handler stops reading (backpressure,
//! not memory growth). The deadlines no client can stretch are in
//! [`crate::conn`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use codecs::framing::{FrameCodec, FrameConfig};
use codecs::iso8583::Profile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{self, AddressLimit, ConnLimits, Deadlines, End};
use crate::engine::Engine;
use crate::iso;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::ratelog::warn_limited;

/// Read buffer size per connection at start; it grows to one frame at most.
const READ_BUFFER_BYTES: usize = 16 * 1024;

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
    /// Idle, frame, write and drain deadlines.
    pub(crate) limits: ConnLimits,
    /// Durable journal sequence, when a journal waits.
    pub(crate) durable: Option<journal::DurableWatch>,
}

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
            let fut = serve(stream, cancel.clone());
            let open = open.clone();
            open.increment(1.0);
            tracker.spawn(async move {
                fut.await;
                open.decrement(1.0);
                drop((permit, slot));
            });
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
    /// Frame, idle and write deadlines.
    deadlines: Deadlines,
}

impl Handler {
    /// A handler for `stream`.
    pub(crate) fn new(shared: Arc<IsoShared>, stream: TcpStream) -> Self {
        let codec = FrameCodec::new(shared.framing);
        let outbox = Outbox::new(shared.durable.clone(), shared.inflight_max);
        let deadlines = Deadlines::new(shared.limits, Instant::now());
        Handler {
            shared,
            stream,
            codec,
            input: BytesMut::with_capacity(READ_BUFFER_BYTES),
            outbox,
            scratch: BytesMut::with_capacity(1024),
            deadlines,
        }
    }

    /// Serves until the peer leaves, shutdown, a deadline or a bad frame.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let peer = self.stream.peer_addr().ok().map(|a| a.ip());
        let end = self.serve(&cancel).await;
        end.record("iso", peer);
        // Answer what was read (unless the input is broken) and flush what
        // waits for the journal, within the drain deadline.
        let more = !matches!(end, End::Protocol(_) | End::Io | End::WriteTimeout);
        let drain = self.shared.limits.drain;
        if tokio::time::timeout(drain, self.drain(more, end.can_write()))
            .await
            .is_err()
        {
            conn::drain_timed_out("iso", peer);
        }
    }

    async fn serve(&mut self, cancel: &CancellationToken) -> End {
        let Err(end) = self.serve_until_end(cancel).await;
        end
    }

    async fn serve_until_end(&mut self, cancel: &CancellationToken) -> Result<Infallible, End> {
        // One timer for the connection's life, re-armed only when it fires
        // (`conn`'s module comment says why).
        let first = self.deadlines.check(Instant::now(), true, false, true);
        let timer = tokio::time::sleep_until(first.unwrap_or_else(|_| Instant::now()));
        tokio::pin!(timer);
        loop {
            self.process_input()?;
            self.outbox.release_durable();
            conn::write_ready(
                &mut self.outbox,
                &mut self.stream,
                &mut self.deadlines,
                cancel,
            )
            .await?;
            let can_read = self.outbox.held() < self.shared.inflight_max;
            let waiting = self.outbox.held() > 0;
            tokio::select! {
                () = cancel.cancelled() => return Err(End::Shutdown),
                read = self.stream.read_buf(&mut self.input), if can_read => match read {
                    Ok(0) => return Err(End::PeerClosed),
                    Ok(_) => {}
                    Err(_) => return Err(End::Io),
                },
                changed = self.outbox.wait_durable(), if waiting => {
                    if changed.is_err() {
                        return Err(End::Journal);
                    }
                }
                () = &mut timer => {
                    let next = self.deadlines.check(Instant::now(), can_read, waiting, true)?;
                    timer.as_mut().reset(next);
                }
            }
        }
    }

    /// Runs every whole frame in `input` through the pipeline, while under
    /// the in-flight limit.
    fn process_input(&mut self) -> Result<(), End> {
        let mut requests = 0;
        while self.outbox.held() < self.shared.inflight_max {
            let frame = match self.codec.decode(&mut self.input) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    warn_limited!("framing", error = %e, "framing error");
                    metrics::counter!("switch_codec_errors_total", "kind" => "framing")
                        .increment(1);
                    return Err(End::Protocol("framing_error"));
                }
            };
            requests += 1;
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
        let partial = !self.input.is_empty();
        if requests > 0 || partial {
            self.deadlines
                .after_input(requests, partial, Instant::now());
        }
        Ok(())
    }

    /// At the end: answer whole frames already read, wait for the journal,
    /// write everything (when the peer still reads).
    async fn drain(&mut self, process_rest: bool, write: bool) {
        if process_rest {
            let _ = self.process_input();
        }
        if write {
            self.outbox.drain(&mut self.stream).await;
        }
        let _ = self.stream.shutdown().await;
    }
}
