//! The terminal's clock, injectable so session-expiry tests never sleep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Seconds since the Unix epoch, from the system or from a test.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The system's real-time clock.
    System,
    /// A clock that moves only when told (tests).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock starting at `start_s`.
    pub fn manual(start_s: u64) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(start_s)))
    }

    /// Now, in seconds since the Unix epoch.
    pub fn now_s(&self) -> u64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            Clock::Manual(t) => t.load(Ordering::Acquire),
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance_s(&self, by_s: u64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(by_s, Ordering::AcqRel);
        }
    }
}
