//! Answers held for their latency: one thread per issuer keeps every
//! delayed answer in order of when it is due and hands each to its link's
//! writer at that instant.
//!
//! Why a thread and not a task with `tokio::time::sleep` per answer:
//! tokio's timer rounds a deadline up to its next whole millisecond, so
//! `--latency-ms 1` answered after 1 to 2 ms (p50 1.7 ms, p99 2.6 ms at
//! 20,000/s over 4 links), which a benchmark then counted as the
//! switch's; and each answer cost a spawn and a timer. A thread waiting on
//! a condition variable wakes within tens of microseconds of a deadline.
//! The queue is bounded by the links' pending caps: every entry holds a
//! permit of its link's [`super::PENDING_ANSWERS_PER_LINK_MAX`].

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::{Outgoing, PendingSlot};

/// Longest sleep of the thread without a deadline, so that it sees a stop
/// even if a wake-up were missed.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// One answer waiting for its instant.
pub(crate) struct Delayed {
    /// When it is due.
    pub(crate) due: Instant,
    /// Its link's writer.
    pub(crate) tx: mpsc::Sender<Outgoing>,
    /// Its link's token: a closed link's answers are dropped.
    pub(crate) cancel: CancellationToken,
    /// The framed answer.
    pub(crate) frame: Bytes,
    /// Its pending slot (counted as dropped unless written).
    pub(crate) slot: PendingSlot,
}

/// Heap order: earliest due first, then first queued first.
struct Entry {
    due: Instant,
    seq: u64,
    answer: Delayed,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// What the thread and the links share.
struct Queue {
    /// Waiting answers and the next sequence number.
    heap: Mutex<(BinaryHeap<Reverse<Entry>>, u64)>,
    /// Wakes the thread when an earlier answer is queued, or to stop.
    wake: Condvar,
    /// Set to end the thread.
    stop: AtomicBool,
    /// Set when a link closed: its answers leave the queue (dropped) at
    /// once rather than at their instant.
    sweep: AtomicBool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, (BinaryHeap<Reverse<Entry>>, u64)> {
        // A panic while holding the lock leaves a heap that is still whole.
        self.heap.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The delay thread of one issuer; stopped on drop.
#[derive(Debug)]
pub(crate) struct Delayer {
    /// Shared with the thread.
    queue: Arc<Queue>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Delayer {
    /// Starts the thread.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub(crate) fn start() -> std::io::Result<Delayer> {
        let queue = Arc::new(Queue {
            heap: Mutex::new((BinaryHeap::new(), 0)),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            sweep: AtomicBool::new(false),
        });
        let q = queue.clone();
        std::thread::Builder::new()
            .name("issuer-delay".into())
            .spawn(move || run(&q))?;
        Ok(Delayer { queue })
    }

    /// Queues `answer` for its instant.
    pub(crate) fn push(&self, answer: Delayed) {
        let mut g = self.queue.lock();
        let earliest = g.0.peek().map(|Reverse(e)| e.due);
        let due = answer.due;
        let seq = g.1;
        g.1 += 1;
        g.0.push(Reverse(Entry { due, seq, answer }));
        drop(g);
        if earliest.is_none_or(|e| due < e) {
            self.queue.wake.notify_one();
        }
    }

    /// A link closed: drop its waiting answers now (counted as dropped).
    pub(crate) fn link_closed(&self) {
        self.queue.sweep.store(true, AtomicOrdering::Relaxed);
        self.queue.wake.notify_one();
    }

    /// Ends the thread; answers still waiting are dropped (and counted so).
    pub(crate) fn stop(&self) {
        self.queue.stop.store(true, AtomicOrdering::Relaxed);
        self.queue.wake.notify_one();
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread: hands over every answer that is due, then sleeps until the
/// next one (or a wake-up).
fn run(queue: &Queue) {
    let mut due_now = Vec::new();
    let mut g = queue.lock();
    loop {
        if queue.stop.load(AtomicOrdering::Relaxed) {
            g.0.clear();
            return;
        }
        if queue.sweep.swap(false, AtomicOrdering::Relaxed) {
            g.0.retain(|Reverse(e)| !e.answer.cancel.is_cancelled());
        }
        let now = Instant::now();
        while g.0.peek().is_some_and(|Reverse(e)| e.due <= now) {
            if let Some(Reverse(e)) = g.0.pop() {
                due_now.push(e.answer);
            }
        }
        if !due_now.is_empty() {
            // Sent without the lock, so the links can queue meanwhile.
            drop(g);
            for a in due_now.drain(..) {
                if !a.cancel.is_cancelled() {
                    // The channel has room for every pending slot; a
                    // closed writer drops the slot: counted as dropped.
                    let _ = a.tx.try_send(Outgoing::Answer(a.frame, a.slot));
                }
            }
            g = queue.lock();
            continue;
        }
        let wait =
            g.0.peek()
                .map_or(IDLE_WAIT, |Reverse(e)| e.due.saturating_duration_since(now));
        g = queue
            .wake
            .wait_timeout(g, wait.min(IDLE_WAIT))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}
