//! Drives one connection: writes requests in batches, reads answers in
//! batches, and hands every answer to the connection's [`Traffic`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use codecs::framing::{FrameCodec, FrameConfig};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::pacer::OpenPlan;
use crate::stats::{new_histogram, Tally};
use crate::traffic::Traffic;

/// Read buffer per connection; a read takes whatever the socket has, up to this.
const READ_BUF_BYTES: usize = 64 * 1024;
/// Typical request size, to size write buffers at start.
const REQUEST_BYTES_TYPICAL: usize = 160;
/// A send released later than this after its scheduled time counts as late.
const LATE_NS: u64 = 100_000;

/// Run-wide signals.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// Closed loop: stop starting requests, drain what is in flight.
    pub(crate) stop_sending: AtomicBool,
    /// Give up on what is still in flight.
    pub(crate) cancel: CancellationToken,
}

/// Counters the progress line reads, published once per batch.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Requests written.
    pub(crate) sent: AtomicU64,
    /// Answers matched.
    pub(crate) answered: AtomicU64,
    /// Mismatches of every kind.
    pub(crate) mismatches: AtomicU64,
}

/// What a connection's batches already added to [`Progress`].
#[derive(Default)]
struct Published {
    sent: u64,
    answered: u64,
    mismatches: u64,
}

impl Published {
    fn publish(&mut self, t: &Tally, p: &Progress) {
        p.sent.fetch_add(t.sent - self.sent, Ordering::Relaxed);
        p.answered
            .fetch_add(t.matched - self.answered, Ordering::Relaxed);
        let m = t.mismatch_total();
        p.mismatches
            .fetch_add(m - self.mismatches, Ordering::Relaxed);
        (self.sent, self.answered, self.mismatches) = (t.sent, t.matched, m);
    }
}

/// Open loop: sends the pacer has released to one connection.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Sends due so far (this connection's count).
    pub(crate) due: AtomicU64,
    /// Woken when `due` grows.
    pub(crate) notify: Notify,
}

/// Shared context of a connection task.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// Time zero of the run (latency and schedule origin).
    pub(crate) start: Instant,
    /// Stop and cancel.
    pub(crate) control: Arc<Control>,
    /// Progress counters.
    pub(crate) progress: Arc<Progress>,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A connection's results.
pub(crate) struct ConnResult {
    /// Counts and mismatches.
    pub(crate) tally: Tally,
    /// Latencies, ns.
    pub(crate) hist: Histogram<u32>,
    /// Open loop: sends released more than [`LATE_NS`] after schedule.
    pub(crate) late_sends: u64,
    /// Open loop: how late each send was written, ns (the loadgen's own
    /// timing error, included in the latencies).
    pub(crate) send_lag: Option<Histogram<u32>>,
}

/// Buffers and codec of one connection.
struct Io {
    stream: TcpStream,
    codec: FrameCodec,
    rbuf: BytesMut,
    wbuf: BytesMut,
    hist: Histogram<u32>,
    published: Published,
}

impl Io {
    fn new(stream: TcpStream, inflight: usize) -> Self {
        Io {
            stream,
            codec: FrameCodec::new(FrameConfig::default()),
            rbuf: prefaulted(READ_BUF_BYTES),
            wbuf: prefaulted(inflight * REQUEST_BYTES_TYPICAL),
            hist: prefaulted_histogram(),
            published: Published::default(),
        }
    }

    /// Writes the batch; false when the connection failed.
    async fn flush(&mut self) -> bool {
        if self.wbuf.is_empty() {
            return true;
        }
        let ok = self.stream.write_all(&self.wbuf).await.is_ok();
        self.wbuf.clear();
        ok
    }

    /// Decodes every whole frame read so far; false on a framing error.
    fn process(&mut self, traffic: &mut Traffic, now_ns: u64) -> bool {
        loop {
            match self.codec.decode(&mut self.rbuf) {
                Ok(Some(frame)) => traffic.on_response(&frame.body, now_ns, &mut self.hist),
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    fn reserve(&mut self) {
        if self.rbuf.capacity() - self.rbuf.len() < READ_BUF_BYTES / 2 {
            self.rbuf.reserve(READ_BUF_BYTES);
        }
    }
}

/// A buffer of `capacity` bytes whose pages are already mapped.
fn prefaulted(capacity: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(capacity);
    b.resize(capacity, 0);
    b.clear();
    b
}

/// A latency histogram whose counts array is already mapped (`reset`
/// writes every count).
fn prefaulted_histogram() -> Histogram<u32> {
    let mut h = new_histogram();
    h.reset();
    h
}

/// One connection, ready to run: buffers, histograms and traffic are
/// allocated and their pages mapped before the run's clock starts, so the
/// first sends are not late by 64 connections' worth of page faults (that
/// start-up cost made the first ~50 ms of every open-loop run late by up to
/// 25 ms, about 1% of a 4-second run: enough to move its p99).
pub(crate) struct Conn {
    io: Io,
    traffic: Traffic,
    /// Open loop: how late each send was written (closed loop: unused,
    /// and left unmapped).
    send_lag: Histogram<u32>,
}

impl Conn {
    /// Prepares a connection that keeps up to `inflight` requests in
    /// flight; an open-loop one writes them in batches of at most 64.
    pub(crate) fn new(stream: TcpStream, traffic: Traffic, inflight: usize, open: bool) -> Self {
        let batch = if open { inflight.min(64) } else { inflight };
        Conn {
            io: Io::new(stream, batch),
            traffic,
            send_lag: if open {
                prefaulted_histogram()
            } else {
                new_histogram()
            },
        }
    }
}

/// Closed loop: keeps `depth` requests in flight until told to stop, then
/// drains.
///
/// # Errors
/// Only if a request cannot be encoded (a bug).
pub(crate) async fn closed_loop(conn: Conn, depth: usize, ctx: Ctx) -> anyhow::Result<ConnResult> {
    let Conn {
        mut io,
        mut traffic,
        ..
    } = conn;
    loop {
        if !ctx.control.stop_sending.load(Ordering::Relaxed) {
            let now = ctx.now_ns();
            while traffic.in_flight() < depth {
                traffic.write_next(&mut io.wbuf, now, now)?;
            }
        } else if traffic.in_flight() == 0 {
            break;
        }
        if !io.flush().await {
            break;
        }
        io.reserve();
        let read = tokio::select! {
            biased;
            r = io.stream.read_buf(&mut io.rbuf) => r,
            () = ctx.control.cancel.cancelled() => break,
        };
        if !matches!(read, Ok(n) if n > 0) || !io.process(&mut traffic, ctx.now_ns()) {
            break;
        }
        io.published.publish(&traffic.tally, &ctx.progress);
    }
    traffic.finish();
    io.published.publish(&traffic.tally, &ctx.progress);
    Ok(ConnResult {
        tally: traffic.tally,
        hist: io.hist,
        late_sends: 0,
        send_lag: None,
    })
}

/// Open loop: sends what the pacer released, each timed from its
/// scheduled send, at most `inflight_max` in flight (later sends wait, and
/// the wait counts in their latency).
///
/// # Errors
/// Only if a request cannot be encoded (a bug).
pub(crate) async fn open_loop(
    prepared: Conn,
    slot: Arc<Slot>,
    plan: OpenPlan,
    conn: u64,
    inflight_max: usize,
    ctx: Ctx,
) -> anyhow::Result<ConnResult> {
    let Conn {
        mut io,
        mut traffic,
        mut send_lag,
    } = prepared;
    let total = plan.sends_for(conn);
    let mut sent = 0u64;
    let mut late_sends = 0u64;
    loop {
        let due = slot.due.load(Ordering::Acquire).min(total);
        if sent < due && traffic.in_flight() < inflight_max {
            let now = ctx.now_ns();
            while sent < due && traffic.in_flight() < inflight_max {
                let scheduled = plan.scheduled_ns(conn, sent);
                late_sends += u64::from(now > scheduled + LATE_NS);
                send_lag.saturating_record(now.saturating_sub(scheduled).max(1));
                traffic.write_next(&mut io.wbuf, now, scheduled)?;
                sent += 1;
            }
            if !io.flush().await {
                break;
            }
        }
        if sent >= total && traffic.in_flight() == 0 {
            break;
        }
        io.reserve();
        tokio::select! {
            biased;
            () = ctx.control.cancel.cancelled() => break,
            r = io.stream.read_buf(&mut io.rbuf) => {
                if !matches!(r, Ok(n) if n > 0) || !io.process(&mut traffic, ctx.now_ns()) {
                    break;
                }
                io.published.publish(&traffic.tally, &ctx.progress);
            }
            () = slot.notify.notified(), if sent < total => {}
        }
    }
    traffic.finish();
    io.published.publish(&traffic.tally, &ctx.progress);
    Ok(ConnResult {
        tally: traffic.tally,
        hist: io.hist,
        late_sends,
        send_lag: Some(send_lag),
    })
}
