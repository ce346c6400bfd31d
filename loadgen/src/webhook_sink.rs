//! A webhook receiver for benchmarks (`benches/webhooks.sh`): answers every
//! POST with 200 at once, or after `slow_ms` when its path starts with
//! `/slow`, and counts what it got per path (`GET /stats`, one JSON
//! object). It does not check signatures: the switch's tests do
//! (`switch/tests/webhooks.rs`); this one only has to be fast.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;

/// Most distinct paths counted; the rest are counted as `other`.
pub const SINK_PATHS_MAX: usize = 64;

/// The counts per path.
#[derive(Default)]
struct Counts {
    by_path: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    fn add(&self, path: &str) {
        let mut map = self.by_path.lock().unwrap_or_else(PoisonError::into_inner);
        let key = if map.contains_key(path) || map.len() < SINK_PATHS_MAX {
            path
        } else {
            "other"
        };
        *map.entry(key.to_owned()).or_default() += 1;
    }
}

/// Binds `addr` and serves on a thread of its own with `threads` runtime
/// workers; returns the bound address. Runs until the process exits.
///
/// # Errors
/// When the runtime cannot be built or the address cannot be bound.
pub fn spawn_webhook_sink(
    addr: SocketAddr,
    threads: usize,
    slow_ms: u64,
) -> anyhow::Result<SocketAddr> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.clamp(1, crate::config::THREADS_MAX))
        .enable_io()
        .enable_time()
        .thread_name("webhook-sink")
        .build()
        .context("building the webhook sink's runtime")?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr().context("local address")?;
    let counts = Arc::new(Counts::default());
    let slow = Duration::from_millis(slow_ms);
    let app = Router::new()
        .route("/stats", get(stats))
        .route(
            "/{*path}",
            post(
                move |State(c): State<Arc<Counts>>, Path(path): Path<String>| async move {
                    if path.starts_with("slow") {
                        tokio::time::sleep(slow).await;
                    }
                    c.add(&path);
                    "ok"
                },
            ),
        )
        .with_state(counts);
    std::thread::Builder::new()
        .name("webhook-sink".into())
        .spawn(move || {
            rt.block_on(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    eprintln!("webhook sink: {e}");
                }
            });
        })
        .context("spawning the webhook sink's thread")?;
    Ok(local)
}

async fn stats(State(c): State<Arc<Counts>>) -> String {
    let map = c.by_path.lock().unwrap_or_else(PoisonError::into_inner);
    serde_json::to_string(&*map).unwrap_or_default()
}
