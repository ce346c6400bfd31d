//! Links to upstream issuer hosts (`/work/shared/upstream.md`, "What is
//! forwarded, and how" and "Network management"): per host, a fixed
//! number of TCP links kept open by one task each, with reconnect
//! backoff, optional sign-on, echo on idle, and answers matched to their
//! requests by (MTI class, F11), checked against F41.
//!
//! The forwarding stage calls [`Upstreams::exchange`] with an encoded
//! request; the link frames it, queues it on the link with the fewest
//! requests in flight, and the caller awaits its answer under the host's
//! deadline. Nothing here spawns per request: a caller's future is its
//! own slot in the link's in-flight map (`inflight`), woken by the link's
//! reader (`links`).

mod forwarder;
mod inflight;
mod links;
mod network;

pub(crate) use forwarder::{Forwarder, UpstreamWire};
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use codecs::framing::{FrameCodec, FrameConfig, TPDU_BYTES};
use codecs::iso8583::{Mti, Profile};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use inflight::{InFlight, Key, Refusal, Ticket};

/// Most links to one host (the contract's `connections`, 1..=64); also
/// the width of the mask `Host::try_enqueue` keeps of links tried.
pub(crate) const CONNECTIONS_MAX: usize = 64;
/// Most requests awaiting an answer on one link, whatever is configured:
/// each is a slot of the link's map, allocated as it is first needed.
pub(crate) const INFLIGHT_PER_LINK_LIMIT: usize = 65_536;
/// Histogram buckets of `switch_upstream_answer_seconds`, seconds: an
/// issuer answers in milliseconds to seconds, up to the 60 s deadline.
pub(crate) const ANSWER_BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

const _: () = assert!(CONNECTIONS_MAX <= u64::BITS as usize);
const _: () = assert!(INFLIGHT_PER_LINK_LIMIT <= u32::MAX as usize);

/// One issuer host, as the forwarding stage configures it from
/// `[[upstreams]]`.
pub(crate) struct LinkConfig {
    /// The `upstream` label of metrics and logs.
    pub(crate) name: String,
    /// `host:port`.
    pub(crate) addr: String,
    /// Encoding of the messages (the caller's requests use it too).
    pub(crate) profile: &'static Profile,
    /// Length header, TPDU (written as zeros on requests) and frame limit.
    pub(crate) framing: FrameConfig,
    /// Links kept open, 1..=[`CONNECTIONS_MAX`] (clamped).
    pub(crate) connections: usize,
    /// Requests awaiting an answer on one link, 1..=[`INFLIGHT_PER_LINK_LIMIT`]
    /// (clamped).
    pub(crate) inflight_per_link_max: usize,
    /// Answer deadline of one request from its sending; also the longest
    /// wait for room, and for the answer to an 0800 of the link's own.
    pub(crate) timeout: Duration,
    /// An 0800/301 on a link that has received nothing this long (writes
    /// do not count); `None`: never.
    pub(crate) echo_interval: Option<Duration>,
    /// 0800/001 on connect (the link takes requests only once it is
    /// answered 00), 0800/002 before a planned close.
    pub(crate) sign_on: bool,
    /// F32 of the link's own 0800s (1 to 11 digits; empty: no F32).
    pub(crate) acquirer_id: String,
    /// F7 of the link's own 0800s.
    pub(crate) clock: Clock,
    /// TLS to the host (`tls_ca_file` set): the connector and the name
    /// its certificate must show (the address's host).
    pub(crate) tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

/// Why [`Upstreams::exchange`] has no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// No link of the host is connected (and signed on): at once, never
    /// after a wait.
    #[error("no link to the upstream is connected")]
    NoLink,
    /// Sent, and no answer within the host's timeout. The request has left
    /// the in-flight map: its answer, if it comes, is counted late.
    #[error("no answer within the upstream's timeout")]
    TimedOut,
    /// Every connected link was at `inflight_per_link_max` for the whole
    /// timeout. Nothing was sent.
    #[error("every link to the upstream stayed full for the timeout")]
    Full,
    /// The link closed after the request was queued and before its
    /// answer. The issuer may have it: treat it as a timeout.
    #[error("the link closed before the answer")]
    LinkLost,
    /// A request with the same F11 and MTI class already awaits its
    /// answer on every link with room. Nothing was sent.
    #[error("a request with this F11 already awaits its answer")]
    Duplicate,
    /// Not a request MTI, or over the frame limit. Nothing was sent.
    #[error("not a request, or too long to frame")]
    Refused,
}

/// Counts per host since start, for tests and `/readyz`; the metrics
/// carry the same.
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "read by the tests; the metrics carry the same")
)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UpstreamStats {
    /// Connections made.
    pub(crate) connects_ok: u64,
    /// Connection attempts that failed.
    pub(crate) connects_failed: u64,
    /// Requests sent and not answered in time.
    pub(crate) timeouts: u64,
    /// Answers that matched no request waiting.
    pub(crate) late_answers: u64,
    /// Echoes not answered in time (each closed its link).
    pub(crate) echo_failures: u64,
    /// Frames from the issuer that did not frame or decode (each closed
    /// its link).
    pub(crate) malformed: u64,
    /// Links closed, for any reason.
    pub(crate) links_closed: u64,
}

/// Every upstream host, by its index in configuration order.
pub(crate) struct Upstreams {
    hosts: Vec<Arc<Host>>,
}

impl Upstreams {
    /// Starts one task per link of every host (on `tracker`; they end
    /// when `cancel` is cancelled, after a best-effort sign-off). Must be
    /// called within a tokio runtime.
    pub(crate) fn start(
        configs: Vec<LinkConfig>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Upstreams> {
        let hosts: Vec<Arc<Host>> = configs
            .into_iter()
            .map(|c| Arc::new(Host::new(c)))
            .collect();
        for host in &hosts {
            for index in 0..host.links.len() {
                tracker.spawn(links::run(host.clone(), index, cancel.clone()));
            }
        }
        Arc::new(Upstreams { hosts })
    }

    /// Sends one request to host `upstream` and waits for its answer.
    ///
    /// `body` is the encoded message (MTI onwards, no length header; the
    /// link frames it) whose F11 is `stan` and F41 `terminal` (`None` for
    /// network messages). The answer is the message of MTI class one
    /// above (0100 → 0110, 0421 → 0430) with the same F11, and the same
    /// F41 when both have one, from the link the request went out on.
    /// The link is the connected one with the fewest requests in flight;
    /// when every one is full, the call waits for room at most the host's
    /// timeout. The answer deadline is the timeout from sending.
    ///
    /// # Errors
    /// [`ExchangeError`]: `NoLink` at once when no link is up (or there
    /// is no host `upstream`); `Full`,
    /// `Duplicate`, `Refused` when nothing was sent; `TimedOut`,
    /// `LinkLost` when it was (the issuer may have it).
    pub(crate) async fn exchange(
        &self,
        upstream: usize,
        stan: u32,
        terminal: Option<[u8; 8]>,
        body: Bytes,
    ) -> Result<Bytes, ExchangeError> {
        let host = self.hosts.get(upstream).ok_or(ExchangeError::NoLink)?;
        let key = host.answer_key(&body, stan)?;
        let (link, ticket) = host.enqueue(key, terminal, &body).await?;
        let sent = Instant::now();
        let answer = Answer {
            host,
            link,
            ticket,
            done: false,
        };
        match tokio::time::timeout_at(sent + host.config.timeout, answer).await {
            Ok(Ok(b)) => {
                host.metrics
                    .answer_seconds
                    .record(sent.elapsed().as_secs_f64());
                Ok(b)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                host.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                host.metrics.timeouts.increment(1);
                Err(ExchangeError::TimedOut)
            }
        }
    }

    /// Links of host `upstream` connected (and signed on) now.
    pub(crate) fn connected(&self, upstream: usize) -> usize {
        self.hosts.get(upstream).map_or(0, |h| {
            h.links
                .iter()
                .filter(|l| l.accepting.load(Ordering::Relaxed))
                .count()
        })
    }

    /// The hosts' names, in index order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.hosts.iter().map(|h| h.config.name.as_str())
    }

    /// The index of the host named `name`.
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.config.name == name)
    }

    /// Counts of host `upstream` since start.
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "read by the tests; the metrics carry the same")
    )]
    pub(crate) fn stats(&self, upstream: usize) -> Option<UpstreamStats> {
        self.hosts.get(upstream).map(|h| h.stats.snapshot())
    }
}

/// One host: its configuration, links and counters.
struct Host {
    config: LinkConfig,
    /// Writes requests' frames (`write_frame` takes `&self`).
    frames: FrameCodec,
    links: Box<[Link]>,
    /// `inflight_per_link_max`, clamped.
    capacity: usize,
    /// Callers waiting for room: one is woken per slot freed, all when a
    /// link goes up or down.
    room: Notify,
    /// How many wait on `room`, so freeing a slot skips the `Notify`
    /// when none does.
    room_waiters: AtomicUsize,
    metrics: HostMetrics,
    stats: Stats,
}

/// One link's state shared by its task and its callers.
struct Link {
    /// The one lock of the link: its map and the requests queued for it.
    state: Mutex<LinkState>,
    /// Mirrors `LinkState::accepting`, read without the lock to pick a link.
    accepting: AtomicBool,
    /// Mirrors `InFlight::used`, read without the lock to pick a link.
    in_flight: AtomicUsize,
    /// Wakes the link's task when requests are queued.
    wake: Notify,
}

struct LinkState {
    /// Connected (and signed on), not draining.
    accepting: bool,
    inflight: InFlight,
    /// Framed requests not yet taken by the link's task. Bounded: each is
    /// in `inflight`, so at most `capacity` frames.
    out: BytesMut,
}

/// Why no link took a request now.
enum Pick {
    NoLink,
    Full,
    Duplicate,
}

impl Host {
    fn new(mut config: LinkConfig) -> Host {
        config.connections = config.connections.clamp(1, CONNECTIONS_MAX);
        let capacity = config
            .inflight_per_link_max
            .clamp(1, INFLIGHT_PER_LINK_LIMIT);
        let links = (0..config.connections)
            .map(|_| Link {
                state: Mutex::new(LinkState {
                    accepting: false,
                    inflight: InFlight::new(capacity),
                    out: BytesMut::new(),
                }),
                accepting: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                wake: Notify::new(),
            })
            .collect();
        Host {
            frames: FrameCodec::new(config.framing),
            metrics: HostMetrics::new(&config.name),
            config,
            links,
            capacity,
            room: Notify::new(),
            room_waiters: AtomicUsize::new(0),
            stats: Stats::default(),
        }
    }

    /// The key of the answer to `body`, checking it can be sent.
    fn answer_key(&self, body: &[u8], stan: u32) -> Result<Key, ExchangeError> {
        let answer = body
            .first_chunk::<4>()
            .and_then(|m| Mti::from_bytes(m))
            .and_then(|m| m.response())
            .ok_or(ExchangeError::Refused)?;
        let framing = self.frames.config();
        let tpdu = if framing.tpdu { TPDU_BYTES } else { 0 };
        if body.len() + tpdu > framing.frame_bytes_max {
            return Err(ExchangeError::Refused);
        }
        Ok(inflight::key(answer.as_bytes(), stan))
    }

    /// Queues the request on a link with room, waiting for room at most
    /// the timeout.
    async fn enqueue(
        &self,
        key: Key,
        terminal: Option<[u8; 8]>,
        body: &[u8],
    ) -> Result<(usize, Ticket), ExchangeError> {
        // The usual case, without registering as a waiter.
        match self.try_enqueue(key, terminal, body) {
            Ok(t) => return Ok(t),
            Err(Pick::Full) => {}
            Err(Pick::NoLink) => return Err(ExchangeError::NoLink),
            Err(Pick::Duplicate) => return Err(ExchangeError::Duplicate),
        }
        let deadline = Instant::now() + self.config.timeout;
        let _waiting = WaiterGuard::new(&self.room_waiters);
        loop {
            // Registered before trying, so a slot freed in between wakes it.
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_enqueue(key, terminal, body) {
                Ok(t) => return Ok(t),
                Err(Pick::Full) => {}
                Err(Pick::NoLink) => return Err(ExchangeError::NoLink),
                Err(Pick::Duplicate) => return Err(ExchangeError::Duplicate),
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ExchangeError::Full);
            }
        }
    }

    /// Queues the request on the accepting link with the fewest in flight.
    fn try_enqueue(
        &self,
        key: Key,
        terminal: Option<[u8; 8]>,
        body: &[u8],
    ) -> Result<(usize, Ticket), Pick> {
        let mut tried = 0u64;
        let (mut any_up, mut duplicate) = (false, false);
        loop {
            let mut best: Option<(usize, usize)> = None;
            for (i, link) in self.links.iter().enumerate() {
                if tried & (1 << i) != 0 || !link.accepting.load(Ordering::Acquire) {
                    continue;
                }
                any_up = true;
                let n = link.in_flight.load(Ordering::Relaxed);
                if n < self.capacity && best.is_none_or(|(_, fewest)| n < fewest) {
                    best = Some((i, n));
                }
            }
            let Some((i, _)) = best else {
                return Err(match (any_up, duplicate) {
                    (false, _) => Pick::NoLink,
                    (true, true) => Pick::Duplicate,
                    (true, false) => Pick::Full,
                });
            };
            tried |= 1 << i;
            match self
                .links
                .get(i)
                .map(|l| l.try_insert(self, key, terminal, body))
            {
                Some(Ok(ticket)) => {
                    self.metrics.requests_in_flight.increment(1.0);
                    return Ok((i, ticket));
                }
                Some(Err(Some(Refusal::Duplicate))) => duplicate = true,
                _ => {}
            }
        }
    }

    /// A slot was freed: one waiter for room may go.
    fn freed(&self) {
        self.metrics.requests_in_flight.decrement(1.0);
        if self.room_waiters.load(Ordering::SeqCst) > 0 {
            self.room.notify_one();
        }
    }
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot and queues the frame; `Err(None)` when the link does
    /// not accept requests.
    fn try_insert(
        &self,
        host: &Host,
        key: Key,
        terminal: Option<[u8; 8]>,
        body: &[u8],
    ) -> Result<Ticket, Option<Refusal>> {
        let mut state = self.lock();
        if !state.accepting {
            return Err(None);
        }
        let ticket = state.inflight.insert(key, terminal).map_err(Some)?;
        let was_empty = state.out.is_empty();
        if network::write_request(&mut state.out, &host.frames, body).is_err() {
            // Checked by `answer_key`; kept consistent regardless.
            state.inflight.cancel(ticket);
            return Err(None);
        }
        self.in_flight
            .store(state.inflight.used(), Ordering::Relaxed);
        drop(state);
        if was_empty {
            self.wake.notify_one();
        }
        Ok(ticket)
    }
}

/// A caller's wait for its answer: its slot in the link's map, freed when
/// the answer is taken or the wait is dropped (timed out, cancelled).
struct Answer<'a> {
    host: &'a Host,
    link: usize,
    ticket: Ticket,
    /// The slot was freed by taking the result.
    done: bool,
}

impl Future for Answer<'_> {
    type Output = Result<Bytes, ExchangeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(link) = this.host.links.get(this.link) else {
            return Poll::Ready(Err(ExchangeError::LinkLost));
        };
        let mut state = link.lock();
        let r = state.inflight.poll(this.ticket, cx);
        if r.is_ready() {
            link.in_flight
                .store(state.inflight.used(), Ordering::Relaxed);
            drop(state);
            this.done = true;
            this.host.freed();
        }
        r
    }
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(link) = self.host.links.get(self.link) else {
            return;
        };
        let mut state = link.lock();
        if state.inflight.cancel(self.ticket) {
            link.in_flight
                .store(state.inflight.used(), Ordering::Relaxed);
            drop(state);
            self.host.freed();
        }
    }
}

/// Counts a caller among the waiters for room while it lives.
struct WaiterGuard<'a>(&'a AtomicUsize);

impl<'a> WaiterGuard<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        WaiterGuard(count)
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A host's metric handles, registered once.
struct HostMetrics {
    /// `switch_upstream_links_connected`.
    links_connected: metrics::Gauge,
    /// `switch_upstream_requests_in_flight`.
    requests_in_flight: metrics::Gauge,
    /// `switch_upstream_answer_seconds`: sending to answer.
    answer_seconds: metrics::Histogram,
    /// `switch_upstream_timeouts_total`.
    timeouts: metrics::Counter,
    /// `switch_upstream_late_answers_total`.
    late_answers: metrics::Counter,
    /// `switch_upstream_connects_total{result="ok"}`.
    connects_ok: metrics::Counter,
    /// `switch_upstream_connects_total{result="error"}`.
    connects_error: metrics::Counter,
    /// `switch_upstream_echo_failures_total`.
    echo_failures: metrics::Counter,
}

impl HostMetrics {
    fn new(name: &str) -> Self {
        let n = name.to_owned();
        describe();
        HostMetrics {
            links_connected: metrics::gauge!("switch_upstream_links_connected", "upstream" => n.clone()),
            requests_in_flight: metrics::gauge!("switch_upstream_requests_in_flight", "upstream" => n.clone()),
            answer_seconds: metrics::histogram!("switch_upstream_answer_seconds", "upstream" => n.clone()),
            timeouts: metrics::counter!("switch_upstream_timeouts_total", "upstream" => n.clone()),
            late_answers: metrics::counter!("switch_upstream_late_answers_total", "upstream" => n.clone()),
            connects_ok: metrics::counter!("switch_upstream_connects_total", "upstream" => n.clone(), "result" => "ok"),
            connects_error: metrics::counter!("switch_upstream_connects_total", "upstream" => n.clone(), "result" => "error"),
            echo_failures: metrics::counter!("switch_upstream_echo_failures_total", "upstream" => n),
        }
    }
}

/// Describes the upstream metrics (idempotent).
fn describe() {
    metrics::describe_gauge!(
        "switch_upstream_links_connected",
        "Links to the upstream connected (and signed on) now."
    );
    metrics::describe_gauge!(
        "switch_upstream_requests_in_flight",
        "Requests queued or sent to the upstream, awaiting their answer."
    );
    metrics::describe_histogram!(
        "switch_upstream_answer_seconds",
        metrics::Unit::Seconds,
        "Time from sending a request to the upstream to its answer."
    );
    metrics::describe_counter!(
        "switch_upstream_timeouts_total",
        "Requests sent to the upstream and not answered within timeout_ms."
    );
    metrics::describe_counter!(
        "switch_upstream_late_answers_total",
        "Answers from the upstream that matched no request waiting (late or unknown); never forwarded."
    );
    metrics::describe_counter!(
        "switch_upstream_connects_total",
        "Connection attempts to the upstream, by result (ok, error)."
    );
    metrics::describe_counter!(
        "switch_upstream_echo_failures_total",
        "Echoes (0800/301) not answered within timeout_ms; each closed its link."
    );
    metrics::describe_counter!(
        "switch_upstream_links_closed_total",
        "Links to the upstream closed, by reason."
    );
}

/// The counters behind [`UpstreamStats`].
#[derive(Default)]
struct Stats {
    connects_ok: AtomicU64,
    connects_failed: AtomicU64,
    timeouts: AtomicU64,
    late_answers: AtomicU64,
    echo_failures: AtomicU64,
    malformed: AtomicU64,
    links_closed: AtomicU64,
}

impl Stats {
    #[cfg_attr(not(test), allow(dead_code, reason = "read by the tests"))]
    fn snapshot(&self) -> UpstreamStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UpstreamStats {
            connects_ok: get(&self.connects_ok),
            connects_failed: get(&self.connects_failed),
            timeouts: get(&self.timeouts),
            late_answers: get(&self.late_answers),
            echo_failures: get(&self.echo_failures),
            malformed: get(&self.malformed),
            links_closed: get(&self.links_closed),
        }
    }
}
