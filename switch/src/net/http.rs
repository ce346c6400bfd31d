//! A minimal HTTP/1.1 endpoint for SREs: `/metrics` (Prometheus text
//! exposition), `/healthz` (process up), `/readyz` (listeners bound and
//! recovery done, journal healthy) and, in cluster mode, `/cluster` (the
//! node's own view of its shards and commits, JSON).
//!
//! Probes and scrapes must get through whatever other clients do, so the
//! listener has its own limits (`[limits]`, `http_*`): a deadline for each
//! request head, a keep-alive wait and a request count per connection, and
//! a connection limit at which the connection that has waited longest for
//! its request is closed to make room for the new one. A client that
//! opens connections and sends nothing only ever pushes out its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::ratelog::warn_limited;

/// Largest request head read.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// The HTTP listener's limits (`[limits]`, `http_*` and `write_timeout_ms`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HttpLimits {
    /// `limits.http_connections_max`.
    pub(crate) connections_max: usize,
    /// `limits.http_header_timeout_ms`: the first request head.
    pub(crate) header: Duration,
    /// `limits.http_keepalive_timeout_ms`: each later request head.
    pub(crate) keepalive: Duration,
    /// `limits.http_requests_per_connection_max`.
    pub(crate) requests_per_connection_max: u64,
    /// `limits.write_timeout_ms`.
    pub(crate) write: Duration,
}

impl HttpLimits {
    /// From `[limits]`.
    pub(crate) fn new(l: &Limits) -> Self {
        HttpLimits {
            connections_max: l.http_connections_max,
            header: Duration::from_millis(l.http_header_timeout_ms),
            keepalive: Duration::from_millis(l.http_keepalive_timeout_ms),
            requests_per_connection_max: l.http_requests_per_connection_max,
            write: Duration::from_millis(l.write_timeout_ms),
        }
    }
}

/// What the HTTP endpoint reports.
pub(crate) struct HttpState {
    /// Renders the metrics.
    pub(crate) prometheus: PrometheusHandle,
    /// Set once listeners are bound and recovery is done.
    pub(crate) ready: AtomicBool,
    /// Refreshes gauges before a scrape.
    pub(crate) refresh: Box<dyn Fn() + Send + Sync>,
    /// Why the switch is not ready, when a component failed (journal).
    pub(crate) unhealthy: Box<dyn Fn() -> Option<String> + Send + Sync>,
    /// The SAF as JSON lines (`GET /saf`).
    pub(crate) saf_list: Box<dyn Fn() -> String + Send + Sync>,
    /// Sends every SAF entry again now (`POST /saf/retry`); false when no
    /// upstream is configured.
    pub(crate) saf_retry: Box<dyn Fn() -> bool + Send + Sync>,
    /// The node's cluster view as JSON (`GET /cluster`), set once a
    /// cluster node has joined; unset (404) on a single node.
    pub(crate) cluster: std::sync::OnceLock<Box<dyn Fn() -> String + Send + Sync>>,
}

/// Serves until `cancel`.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    limits: HttpLimits,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Slots::new(limits.connections_max));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Some(slot) = slots.admit() else {
            warn_limited!("http_connections_max", %peer, "HTTP connection refused: every connection is answering");
            metrics::counter!("switch_limit_reached_total", "limit" => "http_connections_max")
                .increment(1);
            continue;
        };
        let (state, cancel) = (state.clone(), cancel.clone());
        tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = slot.state.evict.cancelled() => {}
                r = connection(stream, &state, &limits, &slot) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                }
            }
        });
    }
}

/// The open HTTP connections, for the limit: each says since when it has
/// been waiting for a request head (0: answering one).
struct Slots {
    /// Open connections, in no order.
    open: Mutex<Vec<Arc<SlotState>>>,
    /// `limits.http_connections_max`.
    max: usize,
    /// Id of the next connection.
    next_id: AtomicU64,
    /// Start of the waiting clocks (only their order matters).
    epoch: Instant,
}

/// One connection's place.
struct SlotState {
    /// Its id in `Slots::open`.
    id: u64,
    /// Milliseconds since `Slots`' start + 1 at which it began waiting for
    /// a request head; 0 while answering.
    waiting_since_ms: AtomicU64,
    /// Cancelled to close it when a newer connection needs the room.
    evict: CancellationToken,
}

/// A connection's slot, released on drop.
struct Slot {
    /// The state it shares with `Slots`.
    state: Arc<SlotState>,
    /// Where it is counted.
    slots: Arc<Slots>,
}

impl Slots {
    fn new(max: usize) -> Self {
        Slots {
            open: Mutex::new(Vec::with_capacity(max)),
            max,
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// A slot for a new connection: a free one, or the one of the
    /// connection waiting longest for a request head, which is closed.
    /// `None` when every connection is answering.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.max {
            let oldest = open
                .iter()
                .enumerate()
                .filter(|(_, s)| s.waiting_since_ms.load(Ordering::Relaxed) > 0)
                .min_by_key(|(_, s)| s.waiting_since_ms.load(Ordering::Relaxed))
                .map(|(i, _)| i)?;
            let evicted = open.swap_remove(oldest);
            evicted.evict.cancel();
            warn_limited!(
                "http_connections_max",
                "HTTP connection limit: the longest-waiting connection was closed"
            );
            metrics::counter!("switch_limit_reached_total", "limit" => "http_connections_max")
                .increment(1);
        }
        let state = Arc::new(SlotState {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            waiting_since_ms: AtomicU64::new(0),
            evict: CancellationToken::new(),
        });
        open.push(state.clone());
        Some(Slot {
            state,
            slots: self.clone(),
        })
    }
}

impl Slot {
    /// Now waiting for a request head, or (`false`) answering one.
    fn waiting(&self, waiting: bool) {
        let since = if waiting {
            self.slots.epoch.elapsed().as_millis() as u64 + 1
        } else {
            0
        };
        self.state.waiting_since_ms.store(since, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = open.iter().position(|s| s.id == self.state.id) {
            open.swap_remove(i);
        }
    }
}

/// One connection: requests answered in turn until the client closes, a
/// deadline passes or the request limit is reached.
async fn connection(
    mut stream: TcpStream,
    state: &HttpState,
    limits: &HttpLimits,
    slot: &Slot,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    for n in 1..=limits.requests_per_connection_max {
        slot.waiting(true);
        let wait = if n == 1 {
            limits.header
        } else {
            limits.keepalive
        };
        let head = match tokio::time::timeout(wait, read_head(&mut stream, &mut buf)).await {
            Ok(head) => head?,
            Err(_) => {
                if n == 1 || !buf.is_empty() {
                    metrics::counter!("switch_limit_reached_total", "limit" => "http_header_timeout_ms")
                        .increment(1);
                    warn_limited!(
                        "http_header_timeout",
                        "HTTP request head not received in time"
                    );
                }
                return Ok(());
            }
        };
        slot.waiting(false);
        let Some(head_len) = head else { return Ok(()) };
        let head_bytes = buf.get(..head_len).unwrap_or_default();
        let keep = n < limits.requests_per_connection_max && keep_alive(head_bytes);
        let reply = answer(head_bytes, state);
        buf.drain(..head_len);
        let write = respond(&mut stream, &reply, keep);
        match tokio::time::timeout(limits.write, write).await {
            Ok(r) => r?,
            Err(_) => {
                metrics::counter!("switch_limit_reached_total", "limit" => "write_timeout_ms")
                    .increment(1);
                warn_limited!("http_write_timeout", "HTTP answer not written in time");
                return Ok(());
            }
        }
        if !keep || reply.close {
            break;
        }
    }
    let _ = stream.shutdown().await;
    Ok(())
}

/// Reads until `buf` holds a whole request head; its length, or `None`
/// when the client closed first. A head over the limit is answered 431
/// by the caller through `answer`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(i + 4));
        }
        if buf.len() > REQUEST_HEAD_BYTES_MAX {
            return Ok(Some(buf.len()));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// Whether the client keeps the connection: HTTP/1.1 unless it says
/// `Connection: close`; HTTP/1.0 only when it says `keep-alive`.
fn keep_alive(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let mut lines = text.split("\r\n");
    let http11 = lines.next().is_some_and(|l| l.ends_with("http/1.1"));
    let connection = lines
        .filter_map(|l| l.strip_prefix("connection:"))
        .map(str::trim)
        .last();
    match connection {
        Some(v) if v.contains("close") => false,
        Some(v) if v.contains("keep-alive") => true,
        _ => http11,
    }
}

/// A response to write.
struct Reply {
    /// Status line's code and reason.
    status: &'static str,
    /// `Content-Type`.
    content_type: &'static str,
    /// The body.
    body: String,
    /// Close after it, whatever the client asked (an unusable request).
    close: bool,
}

impl Reply {
    fn text(status: &'static str, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            body: body.into(),
            close: false,
        }
    }
}

fn answer(head: &[u8], state: &HttpState) -> Reply {
    if head.len() > REQUEST_HEAD_BYTES_MAX || !head.ends_with(b"\r\n\r\n") {
        let mut r = Reply::text(
            "431 Request Header Fields Too Large",
            "request head too large\n",
        );
        r.close = true;
        return r;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let has_body = String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .split("\r\n")
        .any(|l| {
            l.starts_with("transfer-encoding:")
                || l.strip_prefix("content-length:")
                    .is_some_and(|v| v.trim() != "0")
        });
    let retry = method == b"POST" && path == b"/saf/retry";
    if (method != b"GET" && !retry) || has_body {
        let mut r = Reply::text("405 Method Not Allowed", "only GET (and POST /saf/retry)\n");
        r.close = true;
        return r;
    }
    if retry {
        return if (state.saf_retry)() {
            Reply::text("202 Accepted", "every SAF entry is sent again now\n")
        } else {
            Reply::text("404 Not Found", "no upstream configured\n")
        };
    }
    match path {
        b"/saf" => Reply {
            status: "200 OK",
            content_type: "application/x-ndjson",
            body: (state.saf_list)(),
            close: false,
        },
        b"/metrics" => {
            (state.refresh)();
            Reply {
                status: "200 OK",
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: state.prometheus.render(),
                close: false,
            }
        }
        b"/healthz" => Reply::text("200 OK", "ok\n"),
        b"/cluster" => match state.cluster.get() {
            Some(view) => Reply {
                status: "200 OK",
                content_type: "application/json",
                body: view(),
                close: false,
            },
            None => Reply::text("404 Not Found", "not in cluster mode\n"),
        },
        b"/readyz" => match ((state.unhealthy)(), state.ready.load(Ordering::Acquire)) {
            (Some(why), _) => Reply::text("503 Service Unavailable", format!("{why}\n")),
            (None, false) => Reply::text("503 Service Unavailable", "starting\n"),
            (None, true) => Reply::text("200 OK", "ready\n"),
        },
        _ => Reply::text("404 Not Found", "not found\n"),
    }
}

async fn respond(stream: &mut TcpStream, reply: &Reply, keep: bool) -> std::io::Result<()> {
    let connection = if keep && !reply.close {
        "keep-alive"
    } else {
        "close"
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    out.push_str(&reply.body);
    stream.write_all(out.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn state() -> HttpState {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        HttpState {
            prometheus: recorder.handle(),
            ready: true.into(),
            refresh: Box::new(|| {}),
            unhealthy: Box::new(|| None),
            saf_list: Box::new(String::new),
            saf_retry: Box::new(|| false),
            cluster: std::sync::OnceLock::new(),
        }
    }

    #[test]
    fn heads_are_answered_by_method_path_and_connection() {
        let s = state();
        let get = |head: &str| {
            let r = answer(head.as_bytes(), &s);
            (r.status, r.close, keep_alive(head.as_bytes()))
        };
        assert_eq!(
            get("GET /healthz HTTP/1.1\r\n\r\n"),
            ("200 OK", false, true)
        );
        assert_eq!(
            get("GET /readyz HTTP/1.1\r\nConnection: close\r\n\r\n"),
            ("200 OK", false, false)
        );
        assert_eq!(
            get("GET /healthz HTTP/1.0\r\n\r\n"),
            ("200 OK", false, false)
        );
        assert_eq!(
            get("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
            ("200 OK", false, true)
        );
        assert_eq!(get("GET /nope HTTP/1.1\r\n\r\n").0, "404 Not Found");
        // A single node has no cluster view; a cluster node's is JSON.
        assert_eq!(get("GET /cluster HTTP/1.1\r\n\r\n").0, "404 Not Found");
        let s = state();
        s.cluster
            .set(Box::new(|| "{\"node_id\":\"n1\"}".to_owned()))
            .unwrap_or_else(|_| unreachable!());
        let r = answer(b"GET /cluster HTTP/1.1\r\n\r\n", &s);
        assert_eq!(
            (r.status, r.content_type, r.body.as_str()),
            ("200 OK", "application/json", "{\"node_id\":\"n1\"}")
        );
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").1, "closed after");
        let with_body = "GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(get(with_body).0, "405 Method Not Allowed");
        let empty_body = "GET /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(get(empty_body).0, "200 OK");
    }

    proptest! {
        /// Whatever the head holds, it is answered with a status and
        /// never panics; a head that is not whole is refused and closed.
        #[test]
        fn any_head_gets_an_answer(head in proptest::collection::vec(any::<u8>(), 0..600)) {
            let s = state();
            let r = answer(&head, &s);
            prop_assert!(!r.status.is_empty());
            let _ = keep_alive(&head);
            if !head.ends_with(b"\r\n\r\n") {
                prop_assert!(r.close);
            }
        }
    }
}
