//! Open-loop pacing: send times fixed in advance (global send g at
//! g / rate, round-robin over connections), released by a dedicated thread
//! that sleeps while the next send is far and spins (yielding) when it is near, so
//! the release is precise to microseconds rather than a timer's millisecond.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::conn::Slot;

/// The schedule of an open-loop run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenPlan {
    /// Requests per second over all connections.
    pub(crate) rate_per_s: u64,
    /// Connections.
    pub(crate) connections: u64,
    /// Sends in the whole run.
    pub(crate) total: u64,
}

impl OpenPlan {
    /// Scheduled time of global send `g`, ns since start.
    fn global_ns(&self, g: u64) -> u64 {
        let ns = u128::from(g) * 1_000_000_000 / u128::from(self.rate_per_s.max(1));
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Scheduled time of connection `conn`'s `k`-th send.
    pub(crate) fn scheduled_ns(&self, conn: u64, k: u64) -> u64 {
        self.global_ns(k * self.connections + conn)
    }

    /// Global sends due at `now_ns` (scheduled at or before it).
    fn due_at(&self, now_ns: u64) -> u64 {
        let n = u128::from(now_ns) * u128::from(self.rate_per_s) / 1_000_000_000 + 1;
        u64::try_from(n).unwrap_or(u64::MAX).min(self.total)
    }

    /// Sends of connection `conn` among the first `due` global sends.
    fn due_for(&self, conn: u64, due: u64) -> u64 {
        if due > conn {
            (due - conn - 1) / self.connections + 1
        } else {
            0
        }
    }

    /// All sends of connection `conn`.
    pub(crate) fn sends_for(&self, conn: u64) -> u64 {
        self.due_for(conn, self.total)
    }
}

/// The pacer thread's timer slack, ns: how late the kernel may end its sleeps.
const PACER_TIMER_SLACK_NS: u64 = 1_000;

/// Releases sends to `slots` on schedule until all are released or
/// `cancel` fires. Sleeps until `spin` before the next send, then spins.
pub(crate) fn pace(
    slots: &[Arc<Slot>],
    plan: OpenPlan,
    start: Instant,
    spin: Duration,
    cancel: &CancellationToken,
) {
    // The default slack lets a sleep end up to 50 µs late; 1 µs makes a
    // plain sleep precise enough that the pacer need not spin (spinning
    // took a whole core from the server on a 2-core machine).
    if let Err(e) = nix::sys::prctl::set_timerslack(PACER_TIMER_SLACK_NS) {
        eprintln!(
            "loadgen: could not set the pacer's timer slack ({e}); sends may be up to 50 us late"
        );
    }
    let spin_ns = u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX);
    let now_ns = || u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let n = plan.connections;
    let mut released = 0u64;
    while released < plan.total && !cancel.is_cancelled() {
        let due = plan.due_at(now_ns());
        if due > released {
            if due - released >= n {
                for (c, slot) in (0..n).zip(slots) {
                    slot.due.store(plan.due_for(c, due), Ordering::Release);
                    slot.notify.notify_one();
                }
            } else {
                for g in released..due {
                    let c = g % n;
                    if let Some(slot) = usize::try_from(c).ok().and_then(|c| slots.get(c)) {
                        slot.due.store(g / n + 1, Ordering::Release);
                        slot.notify.notify_one();
                    }
                }
            }
            released = due;
        }
        let next = plan.global_ns(released);
        let now = now_ns();
        if next > now.saturating_add(spin_ns) {
            std::thread::sleep(Duration::from_nanos(next - now - spin_ns));
        } else {
            // Spin, but give the core away when anything else is runnable:
            // on a busy machine a pure spin is descheduled for whole time
            // slices; on an idle one this returns at once.
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_round_robin_and_complete() {
        let p = OpenPlan {
            rate_per_s: 1000,
            connections: 3,
            total: 10,
        };
        assert_eq!(p.scheduled_ns(0, 0), 0);
        assert_eq!(p.scheduled_ns(1, 0), 1_000_000);
        assert_eq!(p.scheduled_ns(0, 1), 3_000_000);
        assert_eq!((0..3).map(|c| p.sends_for(c)).sum::<u64>(), 10);
        assert_eq!(p.sends_for(0), 4);
        assert_eq!(p.due_at(0), 1);
        assert_eq!(p.due_at(2_500_000), 3);
        assert_eq!(p.due_at(u64::MAX / 2), 10);
        assert_eq!(p.due_for(2, 3), 1);
        assert_eq!(p.due_for(2, 2), 0);
    }
}
