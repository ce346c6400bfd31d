//! The dispatcher: journal records into queued events, on its own thread.
//!
//! It tails the journal from its own watermark (only what is durable),
//! turns each payment record into its event ([`engine::events::of_record`])
//! when the payment's merchant has an endpoint, and queues the batch with
//! the new watermark in one transaction. The journal keeps every segment
//! above the watermark (the retain floor, [`crate::retain::RetainFloor`]),
//! so a crash at any point neither loses nor duplicates an event: what was
//! not committed is read again, and ids already queued are ignored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use journal::Journal;

use super::endpoints::EndpointView;
use super::queue::{NewEvent, Queue};
use crate::clock::Clock;
use crate::retain::RetainFloor;

/// Most journal records read per transaction.
pub(crate) const BATCH_RECORDS_MAX: usize = 1_024;
/// Pause when the journal has nothing new.
const IDLE_PAUSE: Duration = Duration::from_millis(10);
/// Longest the watermark stays behind records that gave no event, and the
/// longest between two durable commits (the journal's floor moves at
/// those only).
const WATERMARK_INTERVAL: Duration = Duration::from_secs(1);
/// Pause after a failed batch (it is read again from the watermark).
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Pause while the backlog is full (`[webhooks] backlog_max`).
const FULL_PAUSE: Duration = Duration::from_millis(100);

/// The running dispatcher, and the deliveries' runtime.
pub(crate) struct Dispatcher {
    /// Set to stop it.
    stop: Arc<AtomicBool>,
    /// Its thread.
    thread: Option<JoinHandle<()>>,
    /// The deliveries' runtime (`super::start`), shut down with it.
    runtime: Option<tokio::runtime::Runtime>,
}

/// The MID of a merchant index, `None` for an index the switch does not
/// know (its events are not queued).
pub(crate) type MidOf = Box<dyn Fn(u32) -> Option<String> + Send>;

/// What the dispatcher needs besides the journal.
pub(crate) struct Parts {
    /// The queue (its own connection).
    pub(crate) queue: Queue,
    /// The endpoints now.
    pub(crate) endpoints: Arc<EndpointView>,
    /// The MID of a merchant index (the engine's numbering).
    pub(crate) mid_of: MidOf,
    /// Where the watermark holds the journal's segments.
    pub(crate) floor: Arc<RetainFloor>,
    /// For the queue's times.
    pub(crate) clock: Clock,
    /// Woken when events were queued.
    pub(crate) queued: Arc<tokio::sync::Notify>,
    /// `[webhooks] backlog_max` and the pending count.
    pub(crate) backlog: Arc<super::Backlog>,
}

impl Dispatcher {
    /// Starts tailing `journal` after `watermark`. When the journal no
    /// longer holds the records after it (a queue older than the journal),
    /// it starts at the first record on disk and says so.
    ///
    /// # Errors
    /// When the journal cannot be tailed or the thread not started.
    pub(crate) fn start(
        journal: Arc<Journal>,
        watermark: u64,
        parts: Parts,
    ) -> anyhow::Result<Self> {
        let tail = match journal.tail(watermark) {
            Ok(tail) => tail,
            Err(journal::Error::TailGap {
                wanted,
                first_available,
            }) => {
                tracing::warn!(
                    watermark,
                    wanted,
                    first_available,
                    "webhooks: the journal no longer holds the records after the queue's watermark; events of the changes between are not sent"
                );
                journal
                    .tail(first_available.saturating_sub(1))
                    .context("tailing the journal")?
            }
            Err(e) => return Err(e).context("tailing the journal"),
        };
        parts.floor.set_webhooks(tail.position());
        tracing::info!(
            after_seq = tail.position(),
            endpoints = parts.endpoints.get().len(),
            "webhooks: queueing events of the journal's changes"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let run = Run {
            journal,
            tail,
            parts,
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("webhook-dispatcher".into())
            .spawn(move || {
                super::lower_priority();
                run.run();
            })
            .context("starting the webhook dispatcher")?;
        Ok(Dispatcher {
            stop,
            thread: Some(thread),
            runtime: None,
        })
    }

    /// A dispatcher of another source (cluster mode's, `super::pg`): its
    /// thread, which ends once `stop` is set.
    pub(crate) fn of_thread(stop: Arc<AtomicBool>, thread: JoinHandle<()>) -> Self {
        Dispatcher {
            stop,
            thread: Some(thread),
            runtime: None,
        }
    }

    /// Keeps the deliveries' runtime until [`Dispatcher::stop`].
    pub(crate) fn with_runtime(mut self, runtime: tokio::runtime::Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Stops after the batch in progress.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("webhook dispatcher panicked");
            }
        }
        // Its tasks ended at the switch's cancel (the shutdown waited for
        // them); this does not block, so it is safe from any context.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The event of payment record `payload` made at sequence `seq`, when
/// its merchant has an endpoint in `endpoints`. A record that does not
/// decode gives none (the engine's own recovery reports it).
pub(crate) fn event_of(
    seq: u64,
    payload: &[u8],
    endpoints: &super::endpoints::EndpointMap,
    mid_of: &MidOf,
) -> Option<NewEvent> {
    let rec = engine::record::decode(payload).ok()?;
    let mid = mid_of(rec.payment.merchant)?;
    if !endpoints.contains_key(&mid) {
        return None;
    }
    let e = engine::events::of_record(seq, &rec, &mid)?;
    Some(NewEvent {
        id: e.id,
        merchant: mid,
        payment_id: e.payment_id,
        seq: e.seq,
        kind: e.kind.label(),
        changed_at_ms: e.at_ms,
        body: e.body,
    })
}

/// The thread's state.
struct Run {
    journal: Arc<Journal>,
    tail: journal::Tail,
    parts: Parts,
    stop: Arc<AtomicBool>,
}

impl Run {
    fn run(mut self) {
        let mut events: Vec<NewEvent> = Vec::with_capacity(BATCH_RECORDS_MAX);
        let mut committed = self.tail.position();
        let mut last_commit = std::time::Instant::now();
        // Batches are committed without an fsync each (synchronous=NORMAL:
        // a crash of the switch loses none of them); once a second a
        // durable commit makes them safe from a power loss too, and only
        // then does the journal's floor move past them. A power loss
        // before it rewinds the watermark to the last durable commit,
        // whose records the journal still holds: their events are queued
        // again (ids already queued are ignored) or, when they were
        // delivered, posted again, which at-least-once allows.
        if let Err(e) = self.parts.queue.set_durable(false) {
            tracing::warn!(error = %e, "webhooks: synchronous=NORMAL refused; every batch is fsynced");
        }
        let mut durable = committed;
        let mut last_sync = std::time::Instant::now();
        let mut full = false;
        while !self.stop.load(Ordering::Acquire) {
            events.clear();
            // Records give at most one event each: reading no more records
            // than there is room keeps the backlog within its bound.
            let room = usize::try_from(self.parts.backlog.room()).unwrap_or(usize::MAX);
            if room == 0 {
                if !full {
                    full = true;
                    ::metrics::counter!("switch_limit_reached_total", "limit" => "webhooks_backlog_max")
                        .increment(1);
                }
                crate::ratelog::warn_limited!("webhooks_backlog", "webhooks: the backlog is at webhooks.backlog_max; queueing waits for deliveries (the journal keeps the changes)");
                self.pause(FULL_PAUSE);
                continue;
            }
            full = false;
            let read = self.read_batch(&mut events, room.min(BATCH_RECORDS_MAX));
            let read = match read {
                Ok(n) => n,
                Err(e) => {
                    crate::ratelog::warn_limited!("webhooks_tail", error = %e, "webhooks: reading the journal failed; retrying");
                    self.pause(RETRY_PAUSE);
                    // What was handed out before the error is read again.
                    if !self.rewind(committed) {
                        return;
                    }
                    continue;
                }
            };
            let position = self.tail.position();
            // Records with no event move the watermark at most once per
            // WATERMARK_INTERVAL (a commit is an fsync; the journal keeps
            // what it has not passed meanwhile).
            let idle = events.is_empty()
                && (position == committed || last_commit.elapsed() < WATERMARK_INTERVAL);
            if idle {
                if committed != durable && last_sync.elapsed() >= WATERMARK_INTERVAL {
                    self.sync(committed, &mut durable);
                    last_sync = std::time::Instant::now();
                }
                if read == 0 {
                    self.pause(IDLE_PAUSE);
                }
                continue;
            }
            let now_ms = self.parts.clock.now_ms();
            match self.parts.queue.enqueue(&events, position, now_ms) {
                Ok(added) => {
                    self.parts.backlog.added(added as u64);
                    committed = position;
                    last_commit = std::time::Instant::now();
                    if added > 0 {
                        self.parts.queued.notify_waiters();
                    }
                }
                Err(e) => {
                    crate::ratelog::warn_limited!("webhooks_enqueue", error = %e, "webhooks: queueing events failed; the journal keeps them, retrying");
                    self.pause(RETRY_PAUSE);
                    if !self.rewind(committed) {
                        return;
                    }
                    continue;
                }
            }
            if committed != durable && last_sync.elapsed() >= WATERMARK_INTERVAL {
                self.sync(committed, &mut durable);
                last_sync = std::time::Instant::now();
            }
        }
        if committed != durable {
            self.sync(committed, &mut durable);
        }
    }

    /// Makes the queue durable up to `committed` and moves the journal's
    /// floor there; on failure the floor stays (the next sync tries again).
    fn sync(&mut self, committed: u64, durable: &mut u64) {
        match self.parts.queue.sync(self.parts.clock.now_ms()) {
            Ok(()) => {
                *durable = committed;
                self.parts.floor.set_webhooks(committed);
            }
            Err(e) => {
                crate::ratelog::warn_limited!("webhooks_sync", error = %e, "webhooks: a durable commit of the queue failed; the journal keeps its records, retrying");
            }
        }
    }

    /// Reads the next durable records into `events` (the events of those
    /// whose merchant has an endpoint); returns how many records were read.
    fn read_batch(
        &mut self,
        events: &mut Vec<NewEvent>,
        records_max: usize,
    ) -> Result<usize, journal::Error> {
        let endpoints = self.parts.endpoints.get();
        let mid_of = &self.parts.mid_of;
        let upto = self.journal.durable_seq();
        self.tail.read(upto, records_max, |r| {
            if r.record_type != engine::record::RECORD_PAYMENT || endpoints.is_empty() {
                return;
            }
            events.extend(event_of(r.seq, r.payload, &endpoints, mid_of));
        })
    }

    /// Tails the journal again after `committed` (the batch is read again);
    /// false when it cannot be (the dispatcher stops, the watermark holds).
    fn rewind(&mut self, committed: u64) -> bool {
        match self.journal.tail(committed) {
            Ok(t) => {
                self.tail = t;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "webhooks: the journal cannot be tailed again; the dispatcher stops");
                false
            }
        }
    }

    /// Sleeps `d`, waking early to stop.
    fn pause(&self, d: Duration) {
        let end = std::time::Instant::now() + d;
        while !self.stop.load(Ordering::Acquire) {
            let now = std::time::Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}
