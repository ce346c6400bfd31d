//! Warnings at a bounded rate, per cause.
//!
//! A client can make the switch warn once per connection it opens (a bad
//! frame, a refused connection, a timeout); unbounded, 5,000 bad
//! connections wrote 610 KB of log, a way to fill a disk shared with the
//! journal. Each call site of [`warn_limited!`] has its own budget of
//! [`WARNINGS_PER_WINDOW_MAX`] lines per [`WINDOW_MS`]; what is over the
//! budget is counted, and the first line of the next window that logs says
//! how many were suppressed. The metrics beside each warning count every
//! event, suppressed or not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Length of a budget window.
pub(crate) const WINDOW_MS: u64 = 10_000;
/// Lines one call site may write per window.
pub(crate) const WARNINGS_PER_WINDOW_MAX: u64 = 10;

/// Milliseconds since the first use, from the monotonic clock: only
/// differences matter here, and wall time may step.
fn uptime_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The budget of one call site. Lock-free: two threads racing at a window
/// boundary may let one extra line through, never fewer.
pub(crate) struct LogLimit {
    /// Start of the current window (`uptime_ms`), plus one (0: never used).
    window_start_ms: AtomicU64,
    /// Lines admitted in the current window.
    admitted: AtomicU64,
    /// Lines suppressed since the last admitted one.
    suppressed: AtomicU64,
}

impl LogLimit {
    /// A fresh budget, for a `static`.
    pub(crate) const fn new() -> Self {
        LogLimit {
            window_start_ms: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now; `Some(n)` with the number of
    /// lines suppressed since the last one written.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(uptime_ms())
    }

    fn admit_at(&self, now_ms: u64) -> Option<u64> {
        let start = self.window_start_ms.load(Ordering::Relaxed);
        if start == 0 || now_ms + 1 >= start + WINDOW_MS {
            self.window_start_ms.store(now_ms + 1, Ordering::Relaxed);
            self.admitted.store(0, Ordering::Relaxed);
        }
        if self.admitted.fetch_add(1, Ordering::Relaxed) < WARNINGS_PER_WINDOW_MAX {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// `tracing::warn!` within the call site's budget; the first line after a
/// suppression is preceded by one that counts what was suppressed.
/// The first argument names the cause (a string literal).
macro_rules! warn_limited {
    ($cause:literal, $($arg:tt)+) => {{
        static LIMIT: $crate::ratelog::LogLimit = $crate::ratelog::LogLimit::new();
        if let Some(suppressed) = LIMIT.admit() {
            if suppressed > 0 {
                tracing::warn!(cause = $cause, suppressed, "similar warnings suppressed");
            }
            tracing::warn!(cause = $cause, $($arg)+);
        }
    }};
}
pub(crate) use warn_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_at_the_budget_and_counted() {
        let limit = LogLimit::new();
        let admitted = (0..100).filter(|_| limit.admit_at(5).is_some()).count();
        assert_eq!(admitted as u64, WARNINGS_PER_WINDOW_MAX);
        // Still the same window: nothing more.
        assert_eq!(limit.admit_at(5 + WINDOW_MS - 2), None);
        // The next window says how many were suppressed, then resets.
        let suppressed = 100 - WARNINGS_PER_WINDOW_MAX + 1;
        assert_eq!(limit.admit_at(5 + WINDOW_MS), Some(suppressed));
        assert_eq!(limit.admit_at(5 + WINDOW_MS), Some(0));
    }

    #[test]
    fn a_slow_trickle_is_never_suppressed() {
        let limit = LogLimit::new();
        for i in 0..50 {
            assert_eq!(limit.admit_at(i * 2_000), Some(0), "line {i}");
        }
    }
}
