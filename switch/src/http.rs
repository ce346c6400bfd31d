//! A minimal HTTP/1.1 endpoint for SREs: `/metrics` (Prometheus text
//! exposition), `/healthz` (process up) and `/readyz` (listeners bound and
//! recovery done, journal healthy).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest request head read.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Concurrent HTTP connections (scrapers and probes are few).
const HTTP_CONNECTIONS_MAX: usize = 64;
/// Time allowed to send a request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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
}

/// Serves until `cancel`.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics::counter!("switch_limit_reached_total", "limit" => "http_connections_max")
                .increment(1);
            continue;
        };
        let state = state.clone();
        tracker.spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &state)).await;
            drop(permit);
        });
    }
}

async fn answer(mut stream: TcpStream, state: &HttpState) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too large\n",
            )
            .await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method != b"GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n",
        )
        .await;
    }
    match path {
        b"/metrics" => {
            (state.refresh)();
            let body = state.prometheus.render();
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        b"/healthz" => respond(&mut stream, "200 OK", "text/plain", "ok\n").await,
        b"/readyz" => match ((state.unhealthy)(), state.ready.load(Ordering::Acquire)) {
            (Some(why), _) => {
                respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    &format!("{why}\n"),
                )
                .await
            }
            (None, false) => {
                respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    "starting\n",
                )
                .await
            }
            (None, true) => respond(&mut stream, "200 OK", "text/plain", "ready\n").await,
        },
        _ => respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
