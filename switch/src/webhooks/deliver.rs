//! Deliveries: queued events to the merchants' endpoints, off the request
//! path, on the runtime's tasks.
//!
//! One task per merchant with an endpoint, each with its own HTTP client
//! (its own connection pool) and at most [`INFLIGHT_PER_MERCHANT_MAX`]
//! requests and [`BATCH_EVENTS_MAX`] events in memory: a slow or dead
//! endpoint holds its own merchant's task and nothing else. The queue (a
//! [`Store`]: SQLite in the data directory, or PostgreSQL in cluster mode,
//! `super::pg`) is the durable backlog; a task loads from it in bounded batches,
//! each event the earliest of its payment not yet delivered or failed, so a
//! payment's events arrive in the order of its changes.
//!
//! An attempt is a `POST` of the event's body, signed
//! (`Switch-Signature: t=…,v1=…`), that follows no redirect and reads at
//! most [`RESPONSE_BYTES_MAX`] of the answer within the timeout
//! (`webhooks.timeout_ms`, 10 s). A 2xx is delivered; anything else is
//! retried after [`retry_delay_ms`] (1 s doubling to 1 h, with jitter) on
//! the switch's clock, so tests watch the backoff without sleeping, until
//! [`GIVE_UP_MS`] after the event was queued; then it is failed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::endpoints::{Endpoint, EndpointView};
use super::queue::{Due, Outcome, Queue};
use crate::clock::Clock;

/// Most requests in flight per merchant (and idle pooled connections).
pub(crate) const INFLIGHT_PER_MERCHANT_MAX: usize = 8;
/// Most events of one merchant loaded from the queue at once.
pub(crate) const BATCH_EVENTS_MAX: usize = 64;
/// Most bytes of an answer read (then the connection is dropped).
pub(crate) const RESPONSE_BYTES_MAX: usize = 16 * 1024;
/// First retry delay.
pub(crate) const RETRY_DELAY_MIN_MS: u64 = 1_000;
/// Longest retry delay.
pub(crate) const RETRY_DELAY_MAX_MS: u64 = 3_600_000;
/// An event not delivered this long after it was queued is failed.
pub(crate) const GIVE_UP_MS: u64 = 3 * 86_400_000;
/// Longest a task sleeps before looking at the queue again (real time):
/// also how soon it notices a clock moved by a test.
const DUE_POLL_MAX: Duration = Duration::from_millis(250);
/// Shortest a task sleeps when nothing was due (no spinning on the queue).
const DUE_POLL_MIN: Duration = Duration::from_millis(10);
/// How often the endpoint file is looked at (a change shows within 1 s).
const ENDPOINTS_POLL: Duration = Duration::from_millis(500);
/// How often the queue gauges are updated.
pub(crate) const GAUGES_EVERY: Duration = Duration::from_secs(1);
/// How often finished events past `webhooks.keep_days` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most pruning steps (of `queue::PRUNE_ROWS_MAX` rows, one transaction
/// each) per pass: a million rows a minute, more than the switch makes.
const PRUNE_STEPS_MAX: usize = 100;
/// Longest error text kept per event.
const ERROR_BYTES_MAX: usize = 200;

// How the limits relate.
const _: () = assert!(RETRY_DELAY_MIN_MS <= RETRY_DELAY_MAX_MS);
const _: () = assert!(RETRY_DELAY_MAX_MS < GIVE_UP_MS);
const _: () = assert!(INFLIGHT_PER_MERCHANT_MAX <= BATCH_EVENTS_MAX);

/// The `Switch-Signature` header value for `body` sent at `t_s`: the
/// lower-case hex HMAC-SHA-256 of `"<t>." + body`, keyed with the secret
/// string.
pub(crate) fn signature(secret: &str, t_s: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(t_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t_s},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delay before attempt `attempts + 1`, after `attempts` failed: 1 s
/// doubling to at most 1 h, less up to a fifth by a jitter drawn from the
/// event's id and attempt (so retries of many events spread out, and the
/// same event's delays can be recomputed).
pub(crate) fn retry_delay_ms(attempts: u32, event_id: &str) -> u64 {
    let doublings = attempts.saturating_sub(1).min(32);
    let base = RETRY_DELAY_MIN_MS
        .saturating_mul(1u64 << doublings)
        .min(RETRY_DELAY_MAX_MS);
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in event_id.bytes().chain(attempts.to_be_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    base - base / 5 * (h % 1_000) / 1_000
}

/// What to do after a failed attempt at `now_ms` (the `attempts`-th).
fn after_failure(due: &Due, attempts: u32, now_ms: u64) -> Outcome {
    if now_ms >= due.queued_at_ms.saturating_add(GIVE_UP_MS) {
        return Outcome::Failed;
    }
    Outcome::RetryAt(now_ms.saturating_add(retry_delay_ms(attempts, &due.id)))
}

/// The `[webhooks] allow_networks` list: when not empty, an endpoint's
/// address must be in one of them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Networks(Vec<(IpAddr, u8)>);

impl Networks {
    /// Parses `a.b.c.d/n` and `x::y/n` entries.
    ///
    /// # Errors
    /// The entry that does not parse.
    pub(crate) fn parse(list: &[String]) -> Result<Networks, String> {
        let mut out = Vec::with_capacity(list.len());
        for s in list {
            let bad = || format!("`{s}`: expected an address/prefix such as 10.0.0.0/8");
            let (addr, len) = s.split_once('/').ok_or_else(bad)?;
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let len: u8 = len.parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(bad());
            }
            out.push((addr, len));
        }
        Ok(Networks(out))
    }

    /// Whether `ip` may be posted to.
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.is_empty()
            || self.0.iter().any(|&(net, len)| match (net, ip) {
                (IpAddr::V4(n), IpAddr::V4(a)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                    u32::from(n) & mask == u32::from(a) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(a)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    u128::from(n) & mask == u128::from(a) & mask
                }
                _ => false,
            })
    }
}

/// The resolver of the deliveries' clients: the system's, less the
/// addresses `allow_networks` refuses (logged); none left is an error.
struct Guarded(Arc<Networks>);

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let networks = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| networks.allows(a.ip()))
                .collect();
            if allowed.len() < all.len() {
                crate::ratelog::warn_limited!("webhooks_ssrf", host = %host, refused = all.len() - allowed.len(), "webhooks: addresses outside webhooks.allow_networks refused");
            }
            if allowed.is_empty() {
                return Err(format!("{host}: no address in webhooks.allow_networks").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// One attempt to record: the event, when it ended, its answer's status,
/// why it failed without one, and what it came to.
pub(crate) type Attempted = (String, u64, Option<u16>, Option<String>, Outcome);

/// What deliveries need of a queue: the data directory's SQLite file
/// ([`Queue`]) or, in cluster mode, PostgreSQL's table of the shards this
/// node serves (`super::pg::PgQueue`).
pub(crate) trait Store: Send {
    /// Up to `limit` of `merchant`'s events due at `now_ms`, each the
    /// earliest of its payment not delivered yet ([`Queue::due`]).
    fn due(&mut self, merchant: &str, now_ms: u64, limit: usize) -> anyhow::Result<Vec<Due>>;
    /// When the next of `merchant`'s events is due ([`Queue::next_due_ms`]).
    fn next_due_ms(&mut self, merchant: &str) -> anyhow::Result<Option<u64>>;
    /// Records `attempts` in one transaction: all of them, or none.
    fn record(&mut self, attempts: &[Attempted]) -> anyhow::Result<()>;
    /// Pending events and when the oldest was queued ([`Queue::pending`]).
    fn pending(&mut self) -> anyhow::Result<(u64, Option<u64>)>;
    /// Pending events per merchant.
    fn pending_by_merchant(&mut self) -> anyhow::Result<Vec<(String, u64)>>;
    /// Deletes one step of finished events queued before `before_ms`;
    /// how many.
    fn prune(&mut self, before_ms: u64) -> anyhow::Result<usize>;
}

impl Store for Queue {
    fn due(&mut self, merchant: &str, now_ms: u64, limit: usize) -> anyhow::Result<Vec<Due>> {
        Queue::due(self, merchant, now_ms, limit)
    }

    fn next_due_ms(&mut self, merchant: &str) -> anyhow::Result<Option<u64>> {
        Queue::next_due_ms(self, merchant)
    }

    fn record(&mut self, attempts: &[Attempted]) -> anyhow::Result<()> {
        self.in_transaction(|q| {
            for (id, at_ms, status, error, outcome) in attempts {
                q.record_attempt(id, *at_ms, *status, error.as_deref(), *outcome)?;
            }
            Ok(())
        })
    }

    fn pending(&mut self) -> anyhow::Result<(u64, Option<u64>)> {
        Queue::pending(self)
    }

    fn pending_by_merchant(&mut self) -> anyhow::Result<Vec<(String, u64)>> {
        Queue::pending_by_merchant(self)
    }

    fn prune(&mut self, before_ms: u64) -> anyhow::Result<usize> {
        Queue::prune(self, before_ms)
    }
}

/// What every delivery task shares.
pub(crate) struct Shared {
    /// The queue (its own connection).
    pub(crate) queue: Mutex<Box<dyn Store>>,
    /// The endpoints now.
    pub(crate) endpoints: Arc<EndpointView>,
    /// The switch's clock: signatures, backoff.
    pub(crate) clock: Clock,
    /// `webhooks.timeout_ms`.
    pub(crate) timeout: Duration,
    /// `webhooks.keep_days`, ms: how long finished events are kept.
    pub(crate) keep_ms: u64,
    /// `webhooks.allow_networks`.
    pub(crate) networks: Arc<Networks>,
    /// Woken when the dispatcher queued events.
    pub(crate) queued: Arc<tokio::sync::Notify>,
    /// Per-merchant series, with `[metrics] merchant_labels` only.
    pub(crate) labels: Option<MerchantLabels>,
    /// The backlog's count, refreshed with the gauges.
    pub(crate) backlog: Arc<super::Backlog>,
}

/// The merchants with series of their own (`[metrics] merchant_labels`):
/// the first `merchant_labels_max` seen; later ones count as `other`.
#[derive(Debug)]
pub(crate) struct MerchantLabels {
    /// `merchant_labels_max`.
    max: usize,
    /// MIDs admitted so far, at most `max`.
    seen: Mutex<std::collections::HashSet<String>>,
}

impl MerchantLabels {
    /// Labels for at most `max` merchants.
    pub(crate) fn new(max: usize) -> MerchantLabels {
        MerchantLabels {
            max,
            seen: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// The label of `mid`.
    fn of(&self, mid: &str) -> String {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(mid) {
            return mid.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(mid.to_owned());
            return mid.to_owned();
        }
        ::metrics::counter!("switch_limit_reached_total", "limit" => "metrics_merchant_labels_max")
            .increment(1);
        "other".to_owned()
    }
}

impl Shared {
    /// Runs `f` on the queue off the runtime's workers.
    async fn with_queue<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut dyn Store) -> anyhow::Result<R> + Send + 'static,
    ) -> anyhow::Result<R> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut q = shared
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut **q)
        })
        .await?
    }
}

/// Starts one task per merchant with an endpoint as endpoints come and go,
/// and keeps the queue's gauges; returns when `cancel` is.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken, tracker: TaskTracker) {
    let mut tasks: HashMap<String, CancellationToken> = HashMap::new();
    let mut gauges = tokio::time::interval(GAUGES_EVERY);
    let mut endpoints_poll = tokio::time::interval(ENDPOINTS_POLL);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = endpoints_poll.tick() => {
                shared.endpoints.refresh();
                let now = shared.endpoints.get();
                tasks.retain(|mid, token| {
                    let keep = now.contains_key(mid);
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
                for mid in now.keys() {
                    if !tasks.contains_key(mid) {
                        let token = cancel.child_token();
                        tasks.insert(mid.clone(), token.clone());
                        tracker.spawn(merchant_task(shared.clone(), mid.clone(), token));
                    }
                }
            }
            _ = gauges.tick() => update_gauges(&shared).await,
            _ = prune.tick() => prune_pass(&shared).await,
        }
    }
}

/// Deletes finished events queued more than `webhooks.keep_days` ago, in
/// short transactions (the deliveries' writes go between them).
async fn prune_pass(shared: &Arc<Shared>) {
    let before_ms = shared.clock.now_ms().saturating_sub(shared.keep_ms);
    for _ in 0..PRUNE_STEPS_MAX {
        match shared.with_queue(move |q| q.prune(before_ms)).await {
            Ok(n) if n == super::queue::PRUNE_ROWS_MAX => continue,
            Ok(_) => return,
            Err(e) => {
                crate::ratelog::warn_limited!("webhooks_prune", error = %e, "webhooks: pruning finished events failed");
                return;
            }
        }
    }
}

async fn update_gauges(shared: &Arc<Shared>) {
    let now_ms = shared.clock.now_ms();
    let added_then = shared.backlog.counting();
    match shared.with_queue(|q| q.pending()).await {
        Ok((depth, oldest)) => {
            shared.backlog.counted(depth, added_then);
            ::metrics::gauge!("switch_webhook_queue_depth").set(depth as f64);
            let age_s = oldest.map_or(0, |t| now_ms.saturating_sub(t)) as f64 / 1_000.0;
            ::metrics::gauge!("switch_webhook_oldest_pending_seconds").set(age_s);
        }
        Err(e) => {
            crate::ratelog::warn_limited!("webhooks_gauges", error = %e, "webhooks: reading the queue failed");
        }
    }
    let Some(labels) = &shared.labels else { return };
    let Ok(rows) = shared.with_queue(|q| q.pending_by_merchant()).await else {
        return;
    };
    let mut depth: HashMap<String, u64> = HashMap::new();
    for (mid, n) in rows {
        *depth.entry(labels.of(&mid)).or_default() += n;
    }
    // Merchants whose queue emptied show 0, not their last depth.
    let known: Vec<String> = labels
        .seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    for mid in known {
        depth.entry(mid).or_default();
    }
    for (label, n) in depth {
        ::metrics::gauge!("switch_merchant_webhook_queue_depth", "merchant" => label).set(n as f64);
    }
}

/// A client for one endpoint: its own pool, no redirects, no proxy, the
/// timeout, the guarded resolver.
fn client(shared: &Shared) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // No proxy from the environment: it would receive every event and
        // be the only address allow_networks checks.
        .no_proxy()
        .timeout(shared.timeout)
        .connect_timeout(shared.timeout)
        .pool_max_idle_per_host(INFLIGHT_PER_MERCHANT_MAX)
        .dns_resolver(Arc::new(Guarded(shared.networks.clone())))
        .user_agent(concat!("switch-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// One merchant's deliveries, until its endpoint is removed or the switch stops.
async fn merchant_task(shared: Arc<Shared>, mid: String, cancel: CancellationToken) {
    let mut current: Option<(String, reqwest::Client)> = None;
    while !cancel.is_cancelled() {
        let Some(endpoint) = shared.endpoints.get().get(&mid).cloned() else {
            return;
        };
        if current.as_ref().is_none_or(|(url, _)| *url != endpoint.url) {
            match client(&shared) {
                Ok(c) => current = Some((endpoint.url.clone(), c)),
                Err(e) => {
                    tracing::error!(merchant = %mid, error = %e, "webhooks: no HTTP client");
                    return;
                }
            }
        }
        let Some((_, http)) = &current else { return };
        let now_ms = shared.clock.now_ms();
        let m = mid.clone();
        let due = match shared
            .with_queue(move |q| q.due(&m, now_ms, BATCH_EVENTS_MAX))
            .await
        {
            Ok(due) => due,
            Err(e) => {
                crate::ratelog::warn_limited!("webhooks_due", error = %e, "webhooks: reading the queue failed");
                Vec::new()
            }
        };
        if due.is_empty() {
            let m = mid.clone();
            let next = shared.with_queue(move |q| q.next_due_ms(&m)).await;
            let wait = match next {
                Ok(Some(at)) => Duration::from_millis(at.saturating_sub(now_ms)),
                _ => DUE_POLL_MAX,
            }
            .clamp(DUE_POLL_MIN, DUE_POLL_MAX);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = shared.queued.notified() => {}
            }
            continue;
        }
        let batch = futures_util::stream::iter(due)
            .map(|d| {
                let (http, endpoint, shared) = (http.clone(), &endpoint, &shared);
                async move {
                    let a = attempt(&http, endpoint, shared, &d).await;
                    (d, a)
                }
            })
            .buffer_unordered(INFLIGHT_PER_MERCHANT_MAX)
            .collect::<Vec<(Due, Attempt)>>();
        // Shutdown does not wait for a slow endpoint: attempts cut short
        // are not recorded, so they are made again after the restart.
        let results = tokio::select! {
            () = cancel.cancelled() => return,
            results = batch => results,
        };
        record(&shared, &mid, results).await;
    }
}

/// How one attempt went.
#[derive(Debug)]
struct Attempt {
    /// The answer's status, when there was one.
    status: Option<u16>,
    /// Why it failed without an answer.
    error: Option<String>,
    /// When it ended, ms on the switch's clock.
    at_ms: u64,
}

impl Attempt {
    fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Posts one event.
async fn attempt(http: &reqwest::Client, endpoint: &Endpoint, shared: &Shared, d: &Due) -> Attempt {
    let (status, error) = match post(http, endpoint, shared, d).await {
        Ok(status) => (Some(status), None),
        Err(mut text) => {
            let mut end = text.len().min(ERROR_BYTES_MAX);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            (None, Some(text))
        }
    };
    Attempt {
        status,
        error,
        at_ms: shared.clock.now_ms(),
    }
}

async fn post(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    shared: &Shared,
    d: &Due,
) -> Result<u16, String> {
    let url = reqwest::Url::parse(&endpoint.url).map_err(|e| e.to_string())?;
    // An address written in the URL is not resolved: checked here.
    let literal = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok());
    if let Some(ip) = literal.filter(|ip| !shared.networks.allows(*ip)) {
        crate::ratelog::warn_limited!("webhooks_ssrf", address = %ip, "webhooks: an endpoint address outside webhooks.allow_networks refused");
        return Err(format!("{ip}: not in webhooks.allow_networks"));
    }
    let t_s = shared.clock.now_s();
    let response = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            "Switch-Signature",
            signature(&endpoint.secret, t_s, d.body.as_bytes()),
        )
        .body(d.body.clone())
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status().as_u16();
    // Read (and drop) at most RESPONSE_BYTES_MAX of the answer.
    let mut response = response;
    let mut read = 0usize;
    while read < RESPONSE_BYTES_MAX {
        match response.chunk().await {
            Ok(Some(c)) => read += c.len(),
            Ok(None) => break,
            Err(e) => return Err(describe(&e)),
        }
    }
    Ok(status)
}

/// An error's text without the URL (which may hold a token of the merchant's).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "answer unreadable"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {detail}")
    }
}

/// Writes a batch's attempts to the queue and counts them.
async fn record(shared: &Arc<Shared>, mid: &str, results: Vec<(Due, Attempt)>) {
    let mut counts = [0u64; 3];
    let mut rows = Vec::with_capacity(results.len());
    for (d, a) in results {
        let attempts = d.attempts.saturating_add(1);
        let outcome = if a.delivered() {
            counts[0] += 1;
            if let Some(from) = d.latency_from_ms {
                let s = a.at_ms.saturating_sub(from) as f64 / 1_000.0;
                ::metrics::histogram!("switch_webhook_delivery_seconds").record(s);
                if let Some(labels) = &shared.labels {
                    ::metrics::histogram!("switch_merchant_webhook_delivery_seconds", "merchant" => labels.of(mid))
                        .record(s);
                }
            }
            Outcome::Delivered
        } else {
            let o = after_failure(&d, attempts, a.at_ms);
            if o == Outcome::Failed {
                counts[2] += 1;
                tracing::warn!(merchant = %mid, event = %d.id, attempts, "webhooks: an event is failed after its retry limit");
            } else {
                counts[1] += 1;
            }
            o
        };
        rows.push((d.id, a.at_ms, a.status, a.error, outcome));
    }
    let written = shared.with_queue(move |q| q.record(&rows)).await;
    if let Err(e) = written {
        // Not recorded: those events are attempted again (at least once).
        crate::ratelog::warn_limited!("webhooks_record", error = %e, "webhooks: recording attempts failed");
    }
    for (result, n) in ["delivered", "failed_attempt", "failed"]
        .into_iter()
        .zip(counts)
    {
        if n > 0 {
            ::metrics::counter!("switch_webhook_deliveries_total", "result" => result).increment(n);
            if let Some(labels) = &shared.labels {
                ::metrics::counter!(
                    "switch_merchant_webhook_deliveries_total",
                    "merchant" => labels.of(mid), "result" => result
                )
                .increment(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_the_contracts() {
        // Python: hmac.new(b"whsec_test", b"1764979200.{}", sha256).hexdigest()
        let s = signature("whsec_test", 1_764_979_200, b"{}");
        let (t, v1) = s.split_once(",v1=").expect("two parts");
        assert_eq!(t, "t=1764979200");
        assert_eq!(v1.len(), 64);
        assert!(v1
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(s, signature("whsec_other", 1_764_979_200, b"{}"));
        assert_ne!(s, signature("whsec_test", 1_764_979_201, b"{}"));
    }

    /// The Rust receiver of `docs/webhooks.md`, as written there.
    fn doc_verify(secret: &str, header: &str, body: &[u8], now_s: u64) -> bool {
        use hmac::{Hmac, Mac};
        use sha2::Sha256;
        let mut t = None;
        let mut v1 = None;
        for part in header.split(',') {
            match part.split_once('=') {
                Some(("t", v)) => t = Some(v),
                Some(("v1", v)) => v1 = Some(v),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else {
            return false;
        };
        let Ok(t_s) = t.parse::<u64>() else {
            return false;
        };
        if now_s.abs_diff(t_s) > 300 {
            return false;
        }
        let Ok(sig) = hex::decode(v1) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&sig).is_ok() // constant time
    }

    #[test]
    fn the_documented_receiver_accepts_our_signatures_only() {
        let body = br#"{"id":"evt_0000000000000001"}"#;
        let header = signature("whsec_abc", 1_000_000, body);
        assert!(doc_verify("whsec_abc", &header, body, 1_000_100));
        assert!(
            !doc_verify("whsec_abd", &header, body, 1_000_100),
            "another secret"
        );
        assert!(
            !doc_verify("whsec_abc", &header, b"{}", 1_000_100),
            "another body"
        );
        assert!(
            !doc_verify("whsec_abc", &header, body, 1_000_301),
            "too old"
        );
    }

    #[test]
    fn delays_double_from_one_second_to_one_hour_with_jitter() {
        let mut last = 0;
        for attempts in 1..=40 {
            let base = (1_000u64 << (attempts - 1).min(32)).min(RETRY_DELAY_MAX_MS);
            let d = retry_delay_ms(attempts, "evt_0000000000000001");
            assert!(
                d <= base && d >= base - base / 5,
                "attempt {attempts}: {d} for {base}"
            );
            assert!(d * 5 >= last * 4 || base == RETRY_DELAY_MAX_MS, "grows");
            last = d;
        }
        let spread: std::collections::HashSet<u64> = (0..50)
            .map(|i| retry_delay_ms(3, &engine::events::event_id(i)))
            .collect();
        assert!(spread.len() > 10, "jitter spreads events");
    }

    #[test]
    fn events_fail_after_three_days() {
        let d = Due {
            id: "evt_0000000000000001".into(),
            body: String::new(),
            attempts: 0,
            queued_at_ms: 1_000,
            latency_from_ms: Some(1_000),
        };
        assert!(matches!(after_failure(&d, 1, 1_000), Outcome::RetryAt(t) if t > 1_000));
        assert_eq!(after_failure(&d, 50, 1_000 + GIVE_UP_MS), Outcome::Failed);
    }

    #[test]
    fn networks_allow_what_they_hold() {
        let n = Networks::parse(&["10.0.0.0/8".into(), "fd00::/8".into()]).expect("parse");
        assert!(n.allows("10.1.2.3".parse().expect("ip")));
        assert!(n.allows("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!n.allows("127.0.0.1".parse().expect("ip")));
        assert!(n.allows("fd12::1".parse().expect("ip")));
        assert!(!n.allows("::1".parse().expect("ip")));
        assert!(Networks::default().allows("169.254.169.254".parse().expect("ip")));
        let all = Networks::parse(&["0.0.0.0/0".into()]).expect("parse");
        assert!(all.allows("1.2.3.4".parse().expect("ip")));
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8"] {
            assert!(Networks::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
