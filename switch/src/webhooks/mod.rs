//! Webhooks: what happened to their payments, posted to the merchants'
//! endpoints (the contract: `docs/webhooks.md`).
//!
//! Events are a pure function of journal records (`engine::events`), so
//! this module only moves them: the `dispatcher` thread tails the journal
//! from its own watermark and queues each change's event, with the
//! watermark, in one SQLite transaction (`queue`, `<data_dir>/webhooks.sqlite`);
//! the journal keeps what the watermark has not passed (`crate::retain`).
//! `deliver` posts queued events, one task and connection pool per
//! merchant, signed, retried with backoff on the switch's clock.
//! `endpoints` is the endpoint file (`<data_dir>/webhooks.json`, 0600,
//! with the signing secrets) the `switch webhooks` commands write and the
//! running switch re-reads when it changes. In cluster mode the queue is
//! in PostgreSQL and each node queues and delivers its shards' events
//! (`pg`, [`start_cluster`]), and the endpoints are one sealed row of it
//! (`endpoints`, [`ClusterEndpoints`]).

mod deliver;
mod dispatcher;
mod endpoints;
mod pg;
mod queue;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use deliver::Networks;
pub(crate) use dispatcher::{Dispatcher, MidOf};
pub(crate) use endpoints::{check_url, cluster_key, ClusterEndpoints, EndpointAdmin};
pub(crate) use pg::{
    install as install_cluster_tables, resend as cluster_resend, rows as cluster_rows,
    ClusterEvents,
};
pub(crate) use queue::{Queue, Row, LIST_ROWS_MAX};

use crate::clock::Clock;
use crate::retain::RetainFloor;

/// What back offices (internal frames) and the commands read of a queue:
/// the data directory's ([`Queue`]) or, in cluster mode, PostgreSQL's
/// (`pg::ClusterEvents`).
pub(crate) trait EventRows: Send {
    /// Up to `limit` events of payment `payment_id`, in the order of its
    /// changes ([`Queue::payment_rows`]).
    fn payment_rows(&mut self, payment_id: u64, limit: usize) -> anyhow::Result<Vec<Row>>;
    /// A page of `merchants`' events, newest first, each with its
    /// sequence ([`Queue::merchant_rows`]).
    fn merchant_rows(
        &mut self,
        merchants: &[String],
        payment_id: Option<u64>,
        status: Option<&str>,
        before_seq: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<(u64, Row)>>;
    /// Event `id`, if queued.
    fn event_row(&mut self, id: &str) -> anyhow::Result<Option<Row>>;
    /// Ids of `merchants`' payments with an event in `status`
    /// ([`Queue::payment_ids`]).
    fn payment_ids(
        &mut self,
        merchants: &[String],
        status: &str,
        below_id: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<u64>>;
    /// Event `id` pending again, due at once; whether it exists.
    fn resend(&mut self, id: &str, now_ms: u64) -> anyhow::Result<bool>;
}

impl EventRows for Queue {
    fn payment_rows(&mut self, payment_id: u64, limit: usize) -> anyhow::Result<Vec<Row>> {
        Queue::payment_rows(self, payment_id, limit)
    }

    fn merchant_rows(
        &mut self,
        merchants: &[String],
        payment_id: Option<u64>,
        status: Option<&str>,
        before_seq: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<(u64, Row)>> {
        Queue::merchant_rows(self, merchants, payment_id, status, before_seq, limit)
    }

    fn event_row(&mut self, id: &str) -> anyhow::Result<Option<Row>> {
        Queue::event_row(self, id)
    }

    fn payment_ids(
        &mut self,
        merchants: &[String],
        status: &str,
        below_id: Option<u64>,
        limit: usize,
    ) -> anyhow::Result<Vec<u64>> {
        Queue::payment_ids(self, merchants, status, below_id, limit)
    }

    fn resend(&mut self, id: &str, now_ms: u64) -> anyhow::Result<bool> {
        Queue::resend(self, id, now_ms)
    }
}

/// The nice value of the webhook threads (the dispatcher's, and the
/// deliveries' runtime with its blocking pool): when the machine is busy,
/// the scheduler gives authorizations the CPU first (a nice-10 thread
/// weighs about a tenth of a nice-0 one) and deliveries what is left; the
/// backlog holds the difference (`backlog_max`).
pub(crate) const THREAD_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`THREAD_NICE`]; a failure is
/// logged and the thread runs at its default priority.
pub(crate) fn lower_priority() {
    // SAFETY: gettid(2) and setpriority(2) read and write only the calling
    // thread's scheduling attributes; no memory is passed.
    #[allow(unsafe_code)]
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, THREAD_NICE)
    };
    if r != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "webhooks: could not lower a thread's priority");
    }
}

/// Worker threads of the deliveries' runtime (their HTTP clients and
/// connections, and the merchants' tasks): off the authorizations' runtime.
const DELIVERY_WORKERS: usize = 1;
/// Threads of its blocking pool (the queue's SQLite calls).
const DELIVERY_BLOCKING_THREADS_MAX: usize = 4;

/// Buckets of `switch_webhook_delivery_seconds` (and its per-merchant
/// twin), seconds: 1 ms to 3 days, since retries go on that long.
pub(crate) const DELIVERY_BUCKETS_S: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3_600.0, 21_600.0, 86_400.0, 259_200.0,
];

/// The backlog's bound (`[webhooks] backlog_max`) and its size as the
/// dispatcher sees it: the deliveries' last count of pending events (every
/// [`deliver::GAUGES_EVERY`]) plus everything the dispatcher queued since
/// that count began. Events queued while it was being taken are counted
/// twice, never missed, so the backlog never passes `max`; deliveries make
/// room at the next count.
#[derive(Debug)]
pub(crate) struct Backlog {
    /// `[webhooks] backlog_max`.
    max: u64,
    /// Events the dispatcher has queued since the start.
    added: AtomicU64,
    /// The last count of pending events, and `added` when it began.
    counted: Mutex<(u64, u64)>,
}

impl Backlog {
    /// A bound of `max`, with `pending` events in the queue now.
    pub(crate) fn new(max: u64, pending: u64) -> Backlog {
        Backlog {
            max,
            added: AtomicU64::new(0),
            counted: Mutex::new((pending, 0)),
        }
    }

    /// How many more events may be queued now.
    pub(crate) fn room(&self) -> u64 {
        let (pending, added_then) = *self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = self
            .added
            .load(Ordering::Acquire)
            .saturating_sub(added_then);
        self.max.saturating_sub(pending.saturating_add(since))
    }

    /// The dispatcher queued `n`.
    pub(crate) fn added(&self, n: u64) {
        self.added.fetch_add(n, Ordering::AcqRel);
    }

    /// Call before counting; pass what it returns to [`Backlog::counted`].
    pub(crate) fn counting(&self) -> u64 {
        self.added.load(Ordering::Acquire)
    }

    /// The deliveries counted `pending` events, having begun when
    /// [`Backlog::counting`] returned `added_then`.
    pub(crate) fn counted(&self, pending: u64, added_then: u64) {
        *self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (pending, added_then);
    }
}

/// Opens the queue and reads the dispatcher's watermark (before the
/// journal opens: its floor).
///
/// # Errors
/// When the queue cannot be opened or read.
pub(crate) fn open_queue(data_dir: &Path) -> anyhow::Result<(Queue, Option<u64>)> {
    let queue = Queue::open(data_dir)?;
    let watermark = queue.watermark()?;
    Ok((queue, watermark))
}

/// What [`start`] needs.
pub(crate) struct Start<'a> {
    /// `[webhooks] allow_networks`.
    pub(crate) allow_networks: &'a [String],
    /// `[webhooks] timeout_ms`.
    pub(crate) timeout_ms: u64,
    /// `[webhooks] keep_days`.
    pub(crate) keep_days: u64,
    /// `[webhooks] backlog_max`.
    pub(crate) backlog_max: u64,
    /// The data directory.
    pub(crate) data_dir: &'a Path,
    /// The running journal.
    pub(crate) journal: Arc<journal::Journal>,
    /// The queue opened by [`open_queue`], for the dispatcher.
    pub(crate) queue: Queue,
    /// Its watermark (`None`: first start, which begins at the journal's
    /// durable end: changes before webhooks existed are not sent).
    pub(crate) watermark: Option<u64>,
    /// The journal's floor.
    pub(crate) floor: Arc<RetainFloor>,
    /// The switch's clock.
    pub(crate) clock: Clock,
    /// The MID of a merchant index.
    pub(crate) mid_of: dispatcher::MidOf,
    /// `[metrics] merchant_labels_max` when `merchant_labels` is on.
    pub(crate) merchant_labels_max: Option<usize>,
}

/// Starts the dispatcher's thread and the deliveries' tasks (on `tracker`,
/// until `cancel`). The dispatcher is returned: stop it before the journal
/// closes.
///
/// # Errors
/// A bad `allow_networks`, the queue's second connection, or the journal.
pub(crate) fn start(
    s: Start<'_>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Dispatcher> {
    describe_metrics();
    let networks = networks(s.allow_networks)?;
    let endpoints = Arc::new(endpoints::EndpointView::open(s.data_dir));
    let queued = Arc::new(tokio::sync::Notify::new());
    let at = s.watermark.unwrap_or_else(|| s.journal.durable_seq());
    let (pending, _) = s.queue.pending()?;
    let backlog = Arc::new(Backlog::new(s.backlog_max, pending));
    let dispatcher = Dispatcher::start(
        s.journal,
        at,
        dispatcher::Parts {
            queue: s.queue,
            endpoints: endpoints.clone(),
            mid_of: s.mid_of,
            floor: s.floor,
            clock: s.clock.clone(),
            queued: queued.clone(),
            backlog: backlog.clone(),
        },
    )?;
    let queue = Box::new(Queue::open_for_attempts(s.data_dir)?);
    let runtime = deliveries(
        queue,
        Delivering {
            endpoints,
            clock: s.clock,
            limits: (s.timeout_ms, s.keep_days),
            networks,
            queued,
            labels_max: s.merchant_labels_max,
            backlog,
        },
        cancel,
        tracker,
    )?;
    Ok(dispatcher.with_runtime(runtime))
}

/// `[webhooks] allow_networks`, parsed; the clients' TLS provider.
fn networks(allow: &[String]) -> anyhow::Result<Networks> {
    // The clients name no provider; the switch's one is aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Networks::parse(allow).map_err(|e| anyhow::anyhow!("webhooks.allow_networks: {e}"))
}

/// What the deliveries share besides their queue, one node's or the
/// cluster's.
struct Delivering {
    /// The endpoints now.
    endpoints: Arc<endpoints::EndpointView>,
    /// The switch's clock.
    clock: Clock,
    /// `[webhooks] timeout_ms` and `keep_days`.
    limits: (u64, u64),
    /// `[webhooks] allow_networks`, parsed.
    networks: Networks,
    /// Woken when events were queued.
    queued: Arc<tokio::sync::Notify>,
    /// `[metrics] merchant_labels_max` when `merchant_labels` is on.
    labels_max: Option<usize>,
    /// The backlog's bound and count.
    backlog: Arc<Backlog>,
}

/// Starts the deliveries of `queue` in a runtime of their own, their
/// tasks on `tracker` until `cancel`; the runtime, kept by the dispatcher.
fn deliveries(
    queue: Box<dyn deliver::Store>,
    d: Delivering,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<tokio::runtime::Runtime> {
    let (timeout_ms, keep_days) = d.limits;
    let shared = Arc::new(deliver::Shared {
        queue: Mutex::new(queue),
        endpoints: d.endpoints,
        clock: d.clock,
        timeout: Duration::from_millis(timeout_ms),
        keep_ms: keep_days.saturating_mul(86_400_000),
        networks: Arc::new(d.networks),
        queued: d.queued,
        labels: d.labels_max.map(deliver::MerchantLabels::new),
        backlog: d.backlog,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(DELIVERY_WORKERS)
        .max_blocking_threads(DELIVERY_BLOCKING_THREADS_MAX)
        .thread_name("webhook-deliver")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the webhook deliveries' runtime: {e}"))?;
    tracker.spawn_on(
        deliver::run(shared, cancel.clone(), tracker.clone()),
        runtime.handle(),
    );
    Ok(runtime)
}

/// What [`start_cluster`] needs.
pub(crate) struct ClusterStart<'a> {
    /// `[webhooks] allow_networks`.
    pub(crate) allow_networks: &'a [String],
    /// `[webhooks] timeout_ms`, `keep_days`, `backlog_max`.
    pub(crate) limits: (u64, u64, u64),
    /// The cluster's endpoints.
    pub(crate) endpoints: ClusterEndpoints,
    /// archive.url.
    pub(crate) url: &'a str,
    /// The shards this node writes now (queueing) and serves (deliveries).
    pub(crate) writing: pg::Shards,
    /// The shards this node serves now.
    pub(crate) serving: pg::Shards,
    /// The switch's clock.
    pub(crate) clock: Clock,
    /// The MID of a merchant index.
    pub(crate) mid_of: dispatcher::MidOf,
    /// `[metrics] merchant_labels_max` when `merchant_labels` is on.
    pub(crate) merchant_labels_max: Option<usize>,
}

/// Cluster mode's webhooks (`pg`): the feed from `cluster_records` into
/// PostgreSQL's queue, and the deliveries of the shards served here. The
/// tables are installed ([`install_cluster_tables`]) before. The returned
/// dispatcher stops the feed.
///
/// # Errors
/// A bad `allow_networks`; the thread or the runtime not started.
pub(crate) fn start_cluster(
    s: ClusterStart<'_>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<Dispatcher> {
    describe_metrics();
    let networks = networks(s.allow_networks)?;
    let (timeout_ms, keep_days, backlog_max) = s.limits;
    let endpoints = Arc::new(endpoints::EndpointView::cluster(s.endpoints));
    let queued = Arc::new(tokio::sync::Notify::new());
    // The deliveries' first count of the gauges sets what is pending.
    let backlog = Arc::new(Backlog::new(backlog_max, 0));
    let dispatcher = pg::start_feed(pg::Feed {
        url: s.url.to_owned(),
        shards: s.writing,
        endpoints: endpoints.clone(),
        mid_of: s.mid_of,
        clock: s.clock.clone(),
        queued: queued.clone(),
        backlog: backlog.clone(),
    })?;
    let runtime = deliveries(
        Box::new(pg::PgQueue::new(s.url, s.serving)),
        Delivering {
            endpoints,
            clock: s.clock,
            limits: (timeout_ms, keep_days),
            networks,
            queued,
            labels_max: s.merchant_labels_max,
            backlog,
        },
        cancel,
        tracker,
    )?;
    Ok(dispatcher.with_runtime(runtime))
}

fn describe_metrics() {
    ::metrics::describe_counter!(
        "switch_webhook_deliveries_total",
        "Webhook delivery attempts by result: delivered (2xx), failed_attempt (retried), failed (given up after 3 days)."
    );
    ::metrics::describe_histogram!(
        "switch_webhook_delivery_seconds",
        "From a change (or an operator's resend) to its event's 2xx answer, seconds on the switch's clock, retries included."
    );
    ::metrics::describe_gauge!(
        "switch_webhook_queue_depth",
        "Webhook events pending delivery."
    );
    ::metrics::describe_gauge!(
        "switch_webhook_oldest_pending_seconds",
        "Age of the oldest pending webhook event, seconds (0 when none)."
    );
}

#[cfg(test)]
mod tests {
    use super::Backlog;

    #[test]
    fn the_backlog_counts_what_was_queued_during_a_count_twice_never_not() {
        let b = Backlog::new(100, 40);
        assert_eq!(b.room(), 60);
        b.added(50);
        assert_eq!(b.room(), 10);
        // A count begins; 10 more are queued before its query reads them.
        let then = b.counting();
        b.added(10);
        assert_eq!(b.room(), 0, "full");
        // The count saw 100 - 30 delivered = 70, the last 10 included.
        b.counted(70, then);
        assert_eq!(b.room(), 20, "the 10 counted twice until the next count");
        let then = b.counting();
        b.counted(70, then);
        assert_eq!(b.room(), 30);
        b.added(1_000);
        assert_eq!(b.room(), 0, "never negative");
    }
}
