//! One task per link: connect, sign on, then read answers and write
//! requests on one socket until it closes; reconnect with backoff.
//!
//! The task owns the socket. Callers queue framed requests in the link's
//! shared buffer and wake it; it moves them to its own write buffer in one
//! swap and writes them together (TCP_NODELAY is on, so batching is what
//! keeps the packet count down), as `net::outbox` does for answers. Its
//! reader frames and decodes what the issuer sends, delivers answers to
//! their callers' slots, answers the issuer's 0800s, and matches the
//! answers to its own 0800s (at most one outstanding: sign-on, echo or
//! sign-off) before the callers' map.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use codecs::framing::FrameCodec;
use codecs::iso8583::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::inflight::{self, Unmatched};
use super::network::{self, NetworkCode};
use super::{ExchangeError, Host, Link, LinkConfig};
use crate::ratelog::{warn_limited, LogLimit};

/// First delay before reconnecting; doubles after each failure.
pub(super) const RECONNECT_DELAY_FIRST: Duration = Duration::from_millis(100);
/// Longest delay before reconnecting.
pub(super) const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(10);
/// Each delay is moved by up to this share, either way, so links that
/// dropped together do not reconnect together.
pub(super) const RECONNECT_JITTER_PERCENT: u64 = 20;
/// A link up at least this long starts its backoff over when it closes.
pub(super) const LINK_STABLE_AFTER: Duration = Duration::from_secs(10);
/// A connect that takes longer has failed.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the 0810 to a sign-off (also bounded by the timeout).
pub(super) const SIGN_OFF_WAIT_MAX: Duration = Duration::from_secs(1);
/// F11 of the link's own 0800s: a range of their own, so that an answer
/// cannot be taken for a caller's (callers' own 0800s should avoid it).
pub(super) const NETWORK_STAN_FIRST: u32 = 900_000;
/// See [`NETWORK_STAN_FIRST`].
pub(super) const NETWORK_STAN_LAST: u32 = 999_999;
/// Read buffer at start; it grows to the largest frame.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Timer when nothing is due: re-armed long before it matters.
const NOTHING_DUE: Duration = Duration::from_secs(3600);

const _: () = assert!(RECONNECT_DELAY_FIRST.as_millis() <= RECONNECT_DELAY_MAX.as_millis());
const _: () = assert!(RECONNECT_JITTER_PERCENT < 100);

/// Why a link closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// The issuer closed it.
    PeerClosed,
    /// A read or write failed.
    Io,
    /// A frame that did not frame or decode.
    Malformed,
    /// An echo not answered within the timeout.
    EchoUnanswered,
    /// A sign-on answered with another F39 than 00.
    SignOnRefused,
    /// A sign-on not answered within the timeout.
    SignOnUnanswered,
    /// An 0800 of the link's own could not be encoded (configuration).
    Encode,
    /// Shutdown: drained, signed off.
    Shutdown,
}

impl End {
    fn reason(self) -> &'static str {
        match self {
            End::PeerClosed => "peer_closed",
            End::Io => "io",
            End::Malformed => "malformed",
            End::EchoUnanswered => "echo_unanswered",
            End::SignOnRefused => "sign_on_refused",
            End::SignOnUnanswered => "sign_on_unanswered",
            End::Encode => "encode",
            End::Shutdown => "shutdown",
        }
    }
}

/// The link's task: connects, serves, reconnects with backoff, until
/// `cancel`.
pub(super) async fn run(host: Arc<Host>, index: usize, cancel: CancellationToken) {
    let mut backoff = Backoff::new(seed(index));
    loop {
        let attempt = tokio::select! {
            () = cancel.cancelled() => return,
            r = connect(&host.config) => r,
        };
        match attempt {
            Ok(stream) => {
                host.stats.connects_ok.fetch_add(1, Ordering::Relaxed);
                host.metrics.connects_ok.increment(1);
                log_connected(&host.config, index);
                let up_since = Instant::now();
                let end = Session::new(&host, index).run(stream, &cancel).await;
                host.closed(index, end);
                if end == End::Shutdown || cancel.is_cancelled() {
                    return;
                }
                if up_since.elapsed() >= LINK_STABLE_AFTER {
                    backoff.reset();
                }
            }
            Err(e) => {
                host.stats.connects_failed.fetch_add(1, Ordering::Relaxed);
                host.metrics.connects_error.increment(1);
                warn_limited!(
                    "upstream_connect",
                    upstream = %host.config.name,
                    link = index,
                    addr = %host.config.addr,
                    error = %e,
                    "upstream connect failed"
                );
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// A link's stream: plain TCP, or TLS over it.
pub(super) enum LinkStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS after a completed handshake.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Opens a link's connection, with its TLS handshake when the upstream
/// has `tls_ca_file` (both within [`CONNECT_TIMEOUT`]).
///
/// # Errors
/// The connect's or handshake's, or `TimedOut` after [`CONNECT_TIMEOUT`].
pub(super) async fn connect(config: &LinkConfig) -> std::io::Result<LinkStream> {
    let open = async {
        let stream = TcpStream::connect(&config.addr).await?;
        stream.set_nodelay(true)?;
        match &config.tls {
            None => Ok(LinkStream::Plain(stream)),
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), stream).await?;
                Ok(LinkStream::Tls(Box::new(tls)))
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

fn log_connected(config: &LinkConfig, index: usize) {
    static LIMIT: LogLimit = LogLimit::new();
    if LIMIT.admit().is_some() {
        tracing::info!(upstream = %config.name, link = index, addr = %config.addr, "upstream link connected");
    }
}

impl Host {
    /// Counts and logs a closed link.
    fn closed(&self, index: usize, end: End) {
        self.stats.links_closed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("switch_upstream_links_closed_total",
            "upstream" => self.config.name.clone(), "reason" => end.reason())
        .increment(1);
        if end != End::Shutdown {
            warn_limited!(
                "upstream_link",
                upstream = %self.config.name,
                link = index,
                reason = end.reason(),
                "upstream link closed"
            );
        }
    }
}

/// Reconnect delays: [`RECONNECT_DELAY_FIRST`] doubling to
/// [`RECONNECT_DELAY_MAX`], each moved by ±[`RECONNECT_JITTER_PERCENT`].
pub(super) struct Backoff {
    next: Duration,
    /// xorshift64 state (never 0).
    rng: u64,
}

impl Backoff {
    pub(super) fn new(seed: u64) -> Self {
        Backoff {
            next: RECONNECT_DELAY_FIRST,
            rng: seed | 1,
        }
    }

    pub(super) fn reset(&mut self) {
        self.next = RECONNECT_DELAY_FIRST;
    }

    /// The delay before the next attempt; doubles the one after.
    pub(super) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(RECONNECT_DELAY_MAX);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        // A share of base in [100 - J, 100 + J] percent.
        let percent =
            100 - RECONNECT_JITTER_PERCENT + self.rng % (2 * RECONNECT_JITTER_PERCENT + 1);
        base * percent as u32 / 100
    }
}

/// A seed that differs between links and between runs.
fn seed(index: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos) ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The link's own outstanding 0800.
#[derive(Clone, Copy, Debug)]
struct Network {
    stan: u32,
    code: NetworkCode,
    deadline: Instant,
}

/// One connection of a link.
struct Session<'a> {
    host: &'a Host,
    link: &'a Link,
    index: usize,
    /// Frames what the issuer sends.
    codec: FrameCodec,
    /// Bytes read, not yet framed.
    input: BytesMut,
    /// Bytes being written: requests taken from the link, 0800s, 0810s.
    output: BytesMut,
    network: Option<Network>,
    stan_next: u32,
    /// Last read (or the connect): an echo goes when it is
    /// `echo_interval` old. Writes do not count: a link the switch keeps
    /// writing to and hears nothing from (a peer gone without a FIN, a
    /// silent host) is the one to check, not one to trust.
    last_read: Instant,
    /// Signed on (or no sign-on configured) and taking requests.
    up: bool,
    /// Since shutdown: the deadline for the requests in flight.
    draining: Option<Instant>,
    /// Callers to wake after the lock is released; reused.
    wakers: Vec<Waker>,
}

impl<'a> Session<'a> {
    fn new(host: &'a Host, index: usize) -> Self {
        #[allow(
            clippy::indexing_slicing,
            reason = "index < links.len() by construction in start"
        )]
        let link = &host.links[index];
        Session {
            host,
            link,
            index,
            codec: FrameCodec::new(host.config.framing),
            input: BytesMut::with_capacity(READ_BUFFER_BYTES),
            output: BytesMut::with_capacity(READ_BUFFER_BYTES),
            network: None,
            stan_next: NETWORK_STAN_FIRST,
            last_read: Instant::now(),
            up: false,
            draining: None,
            wakers: Vec::new(),
        }
    }

    async fn run(mut self, stream: LinkStream, cancel: &CancellationToken) -> End {
        let served = match stream {
            LinkStream::Plain(mut tcp) => {
                let (mut rd, mut wr) = tcp.split();
                self.serve(&mut rd, &mut wr, cancel).await
            }
            LinkStream::Tls(tls) => {
                let (mut rd, mut wr) = tokio::io::split(*tls);
                self.serve(&mut rd, &mut wr, cancel).await
            }
        };
        let end = match served {
            Ok(never) => match never {},
            Err(end) => end,
        };
        self.link.down(self.host, &mut self.wakers);
        self.wake_all();
        end
    }

    async fn serve(
        &mut self,
        rd: &mut (impl AsyncRead + Unpin),
        wr: &mut (impl AsyncWrite + Unpin),
        cancel: &CancellationToken,
    ) -> Result<Infallible, End> {
        let now = Instant::now();
        if self.host.config.sign_on {
            self.send_network(NetworkCode::SignOn, now, self.host.config.timeout)?;
        } else {
            self.go_up();
        }
        // One timer for the session, re-armed when what is due changes.
        let timer = tokio::time::sleep_until(self.next_due(now));
        tokio::pin!(timer);
        loop {
            self.link.take_out(&mut self.output);
            self.drain_step(Instant::now())?;
            let due = self.next_due(Instant::now());
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            tokio::select! {
                () = cancel.cancelled(), if self.draining.is_none() => self.start_draining(),
                read = rd.read_buf(&mut self.input) => match read {
                    Ok(0) => return Err(End::PeerClosed),
                    Ok(_) => {
                        self.last_read = Instant::now();
                        let processed = self.process_input();
                        self.wake_all();
                        processed?;
                    }
                    Err(_) => return Err(End::Io),
                },
                written = wr.write(&self.output), if !self.output.is_empty() => match written {
                    Ok(0) | Err(_) => return Err(End::Io),
                    Ok(n) => {
                        if n >= self.output.len() {
                            // Keeps the allocation for the next batch.
                            self.output.clear();
                            // TLS holds records back until flushed (a
                            // no-op on plain TCP).
                            if wr.flush().await.is_err() {
                                return Err(End::Io);
                            }
                        } else {
                            self.output.advance(n);
                        }
                    }
                },
                () = self.link.wake.notified() => {
                    // Forwards woken by the same durable journal sequence
                    // queue their requests one after another: let those
                    // already runnable queue theirs before this takes
                    // them, so they leave in one write, not one each.
                    tokio::task::yield_now().await;
                }
                () = &mut timer => self.on_timer(Instant::now())?,
            }
        }
    }

    /// The next instant something is due: the outstanding 0800's answer,
    /// the drain deadline, an echo.
    fn next_due(&self, now: Instant) -> Instant {
        let mut due = now + NOTHING_DUE;
        if let Some(n) = self.network {
            due = due.min(n.deadline);
        }
        if let Some(d) = self.draining {
            due = due.min(d);
        }
        if let Some(echo) = self.echo_due() {
            due = due.min(echo);
        }
        due
    }

    fn echo_due(&self) -> Option<Instant> {
        let interval = self.host.config.echo_interval?;
        (self.up && self.network.is_none() && self.draining.is_none())
            .then(|| self.last_read + interval)
    }

    fn on_timer(&mut self, now: Instant) -> Result<(), End> {
        if let Some(n) = self.network.filter(|n| now >= n.deadline) {
            return Err(match n.code {
                NetworkCode::Echo => {
                    self.host
                        .stats
                        .echo_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.host.metrics.echo_failures.increment(1);
                    End::EchoUnanswered
                }
                NetworkCode::SignOn => End::SignOnUnanswered,
                NetworkCode::SignOff => End::Shutdown,
            });
        }
        if self.echo_due().is_some_and(|due| now >= due) {
            self.send_network(NetworkCode::Echo, now, self.host.config.timeout)?;
        }
        Ok(())
    }

    /// Writes one of the link's own 0800s and awaits its 0810 until `wait`.
    fn send_network(&mut self, code: NetworkCode, now: Instant, wait: Duration) -> Result<(), End> {
        let stan = self.stan_next;
        self.stan_next = if stan >= NETWORK_STAN_LAST {
            NETWORK_STAN_FIRST
        } else {
            stan + 1
        };
        let config = &self.host.config;
        network::write_0800(
            &mut self.output,
            &self.codec,
            config.profile,
            config.clock.now_ms(),
            stan,
            &config.acquirer_id,
            code,
        )
        .map_err(|e| {
            warn_limited!("upstream_encode", upstream = %config.name, network = code.as_str(), error = %e, "upstream 0800 not encoded");
            End::Encode
        })?;
        self.network = Some(Network {
            stan,
            code,
            deadline: now + wait,
        });
        Ok(())
    }

    fn go_up(&mut self) {
        self.up = true;
        self.link.set_accepting(self.host, true);
    }

    /// Shutdown: no new requests; the ones in flight have the timeout.
    fn start_draining(&mut self) {
        self.link.set_accepting(self.host, false);
        self.draining = Some(Instant::now() + self.host.config.timeout);
    }

    /// While draining: once nothing waits (or at the drain deadline), the
    /// sign-off, then the end.
    fn drain_step(&mut self, now: Instant) -> Result<(), End> {
        let Some(deadline) = self.draining else {
            return Ok(());
        };
        if self.network.is_some_and(|n| n.code == NetworkCode::SignOff) {
            return Ok(());
        }
        if self.link.waiting() > 0 && now < deadline {
            return Ok(());
        }
        if self.up && self.host.config.sign_on {
            let wait = self.host.config.timeout.min(SIGN_OFF_WAIT_MAX);
            return self.send_network(NetworkCode::SignOff, now, wait);
        }
        Err(End::Shutdown)
    }

    /// Frames, decodes and dispatches every whole frame read.
    fn process_input(&mut self) -> Result<(), End> {
        loop {
            let frame = match self.codec.decode(&mut self.input) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.malformed(&e)),
            };
            self.dispatch(frame.body)?;
        }
    }

    fn malformed(&self, error: &dyn std::fmt::Display) -> End {
        self.host.stats.malformed.fetch_add(1, Ordering::Relaxed);
        warn_limited!(
            "upstream_malformed",
            upstream = %self.host.config.name,
            link = self.index,
            error = %error,
            "malformed frame from the upstream; closing the link"
        );
        End::Malformed
    }

    fn dispatch(&mut self, body: Bytes) -> Result<(), End> {
        let message = match Message::decode(self.host.config.profile, &body) {
            Ok(m) => m,
            Err(e) => return Err(self.malformed(&e)),
        };
        let mti = message.mti();
        if mti.is_request() {
            if mti.without_repeat().as_bytes() == b"0800" {
                let _ = network::write_0810(&mut self.output, &self.codec, &message);
            } else {
                warn_limited!("upstream_unexpected", upstream = %self.host.config.name, mti = %mti, "request from the upstream ignored");
            }
            return Ok(());
        }
        let stan = message.number(11).and_then(|s| u32::try_from(s).ok());
        if let (Some(stan), Some(n)) = (stan, self.network) {
            if n.stan == stan && mti.as_bytes()[..3] == *b"081" {
                return self.network_answer(n.code, message.raw(39));
            }
        }
        let terminal: Option<[u8; 8]> = message.raw(41).and_then(|t| t.try_into().ok());
        let Some(stan) = stan else {
            self.late(mti.as_str(), None, Unmatched::Unknown);
            return Ok(());
        };
        let key = inflight::key(mti.as_bytes(), stan);
        match self
            .link
            .deliver(key, terminal.as_ref().map(|t| &t[..]), body)
        {
            Ok(waker) => self.wakers.extend(waker),
            Err(why) => self.late(mti.as_str(), Some(stan), why),
        }
        Ok(())
    }

    fn network_answer(&mut self, code: NetworkCode, f39: Option<&[u8]>) -> Result<(), End> {
        self.network = None;
        match code {
            NetworkCode::SignOn if f39 == Some(b"00") => {
                self.go_up();
                Ok(())
            }
            NetworkCode::SignOn => Err(End::SignOnRefused),
            NetworkCode::Echo => Ok(()),
            NetworkCode::SignOff => Err(End::Shutdown),
        }
    }

    fn late(&self, mti: &str, stan: Option<u32>, why: Unmatched) {
        self.host.stats.late_answers.fetch_add(1, Ordering::Relaxed);
        self.host.metrics.late_answers.increment(1);
        warn_limited!(
            "upstream_late_answer",
            upstream = %self.host.config.name,
            link = self.index,
            mti,
            stan,
            why = ?why,
            "answer from the upstream matches no request waiting; dropped"
        );
    }

    fn wake_all(&mut self) {
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }
}

impl Link {
    /// Moves queued requests to the task's write buffer (a swap when it is
    /// empty: no copy).
    fn take_out(&self, output: &mut BytesMut) {
        let mut state = self.lock();
        if state.out.is_empty() {
            return;
        }
        if output.is_empty() {
            std::mem::swap(&mut state.out, output);
        } else {
            output.extend_from_slice(&state.out);
            state.out.clear();
        }
    }

    /// Starts or stops taking requests; wakes the callers waiting for room
    /// to look again.
    fn set_accepting(&self, host: &Host, accepting: bool) {
        let mut state = self.lock();
        if state.accepting == accepting {
            return;
        }
        state.accepting = accepting;
        self.accepting.store(accepting, Ordering::Release);
        drop(state);
        if accepting {
            host.metrics.links_connected.increment(1.0);
        } else {
            host.metrics.links_connected.decrement(1.0);
        }
        host.room.notify_waiters();
    }

    /// The connection closed: every request waiting fails with `LinkLost`.
    fn down(&self, host: &Host, wakers: &mut Vec<Waker>) {
        self.set_accepting(host, false);
        let mut state = self.lock();
        state.inflight.fail_all(ExchangeError::LinkLost, wakers);
        state.out.clear();
    }

    fn deliver(
        &self,
        key: inflight::Key,
        terminal: Option<&[u8]>,
        body: Bytes,
    ) -> Result<Option<Waker>, Unmatched> {
        self.lock().inflight.deliver(key, terminal, body)
    }

    fn waiting(&self) -> usize {
        self.lock().inflight.waiting()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_within_the_jitter() {
        let mut b = Backoff::new(7);
        let mut base = RECONNECT_DELAY_FIRST;
        for _ in 0..12 {
            let d = b.next_delay();
            let (lo, hi) = (
                base * (100 - RECONNECT_JITTER_PERCENT as u32) / 100,
                base * (100 + RECONNECT_JITTER_PERCENT as u32) / 100,
            );
            assert!(d >= lo && d <= hi, "{d:?} outside {lo:?}..={hi:?}");
            base = (base * 2).min(RECONNECT_DELAY_MAX);
        }
        b.reset();
        assert!(b.next_delay() <= RECONNECT_DELAY_FIRST * 2);
    }
}
