//! The switch's clock, injectable so lifecycle tests never sleep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Milliseconds since the Unix epoch, from the system or from a test.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The system's real-time clock.
    System,
    /// A clock that moves only when told (tests, simulations).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock starting at `start_ms`.
    pub fn manual(start_ms: u64) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(start_ms)))
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            Clock::Manual(t) => t.load(Ordering::Acquire),
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance_ms(&self, by_ms: u64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(by_ms, Ordering::AcqRel);
        }
    }
}

/// A calendar date and time in UTC, from milliseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UtcDateTime {
    /// Full year.
    pub(crate) year: u32,
    /// 1..=12.
    pub(crate) month: u8,
    /// 1..=31.
    pub(crate) day: u8,
    /// 0..=23.
    pub(crate) hour: u8,
    /// 0..=59.
    pub(crate) minute: u8,
    /// 0..=59.
    pub(crate) second: u8,
}

impl UtcDateTime {
    /// Civil date and time of milliseconds since the epoch.
    pub(crate) fn from_ms(ms: u64) -> Self {
        let secs = ms / 1000;
        let rem = secs % 86_400;
        let (year, month, day) = codecs::iso8583::datetime::civil_from_days(secs / 86_400);
        UtcDateTime {
            year: year as u32,
            month: month as u8,
            day: day as u8,
            hour: (rem / 3600) as u8,
            minute: ((rem % 3600) / 60) as u8,
            second: (rem % 60) as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(
            UtcDateTime::from_ms(0),
            UtcDateTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
        // 2026-11-23T11:49:10Z
        let t = UtcDateTime::from_ms(1_795_434_550_000);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2026, 11, 23, 11, 49, 10)
        );
        // 2024-02-29T23:59:59Z
        let t = UtcDateTime::from_ms(1_709_251_199_000);
        assert_eq!((t.year, t.month, t.day), (2024, 2, 29));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = Clock::manual(5);
        assert_eq!(c.now_ms(), 5);
        c.advance_ms(10);
        assert_eq!(c.now_ms(), 15);
        assert!(Clock::System.now_ms() > 1_700_000_000_000);
    }
}
