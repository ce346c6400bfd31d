//! The one wall clock of the workspace: the system's, or a manual one that
//! moves only when told, so lifecycle and session-expiry tests never sleep.
//!
//! The switch reads it in milliseconds (payment deadlines), the virtual
//! terminal in seconds (sign-in sessions); both read the same clock, so a
//! test can drive either with one value. It holds no runtime: no tokio, no
//! timers, only "what time is it".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Milliseconds since the Unix epoch, from the system or from a test.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The system's real-time clock.
    System,
    /// A clock that moves only when told (tests, simulations); clones share
    /// it, so the test that holds one moves the server's.
    Manual(Arc<AtomicU64>),
}

/// Milliseconds in a second, for the seconds views of the clock.
const MS_PER_S: u64 = 1_000;

impl Clock {
    /// A manual clock starting at `start_ms`.
    pub fn manual(start_ms: u64) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(start_ms)))
    }

    /// Now, in milliseconds since the Unix epoch (0 if the system clock is
    /// before the epoch, so callers never see an error from a bad clock).
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            Clock::Manual(t) => t.load(Ordering::Acquire),
        }
    }

    /// Now, in whole seconds since the Unix epoch.
    pub fn now_s(&self) -> u64 {
        self.now_ms() / MS_PER_S
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance_ms(&self, by_ms: u64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(by_ms, Ordering::AcqRel);
        }
    }

    /// Moves a manual clock forward by whole seconds; no effect on the
    /// system clock.
    pub fn advance_s(&self, by_s: u64) {
        self.advance_ms(by_s.saturating_mul(MS_PER_S));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = Clock::manual(5);
        assert_eq!(c.now_ms(), 5);
        c.advance_ms(10);
        assert_eq!(c.now_ms(), 15);
        assert!(Clock::System.now_ms() > 1_700_000_000_000);
    }

    #[test]
    fn seconds_are_whole_seconds_of_the_same_clock() {
        let c = Clock::manual(1_795_434_550_999);
        assert_eq!(c.now_s(), 1_795_434_550);
        c.advance_s(301);
        assert_eq!(c.now_ms(), 1_795_434_851_999);
        assert_eq!(c.now_s(), 1_795_434_851);
        let system_s = Clock::System.now_s();
        assert!(system_s > 1_700_000_000 && system_s < 1_700_000_000_000);
    }

    #[test]
    fn clones_share_a_manual_clock() {
        let server = Clock::manual(0);
        let test = server.clone();
        test.advance_s(2);
        assert_eq!(server.now_ms(), 2_000);
    }
}
