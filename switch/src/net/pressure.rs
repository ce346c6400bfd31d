//! Backpressure: while memory is nearly full because the archive has not
//! caught up (memory lets payments and answers go only once the archive
//! holds them), or the archive is more than a couple of seconds of work
//! behind the journal, connections stop reading new requests, so clients
//! wait instead of getting 96, and intake follows what the archive can
//! take in short pauses rather than one long one when memory fills. The
//! timers turn it on and off (with a gap between the two thresholds, so it
//! does not flap); what was already read is still answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a paused connection looks whether it may read again.
pub(crate) const PRESSURE_RECHECK: Duration = Duration::from_millis(5);
/// Fill of a bounded table (% of its limit) at which reading stops.
pub(crate) const PRESSURE_ON_PCT: usize = 90;
/// Fill below which reading starts again.
pub(crate) const PRESSURE_OFF_PCT: usize = 85;
/// Journal records not yet in the archive at which reading stops: about
/// two seconds of the SQLite drainer's work on a busy 2-core machine.
pub(crate) const PRESSURE_ON_LAG: u64 = 200_000;
/// Records behind below which reading starts again (fill permitting).
pub(crate) const PRESSURE_OFF_LAG: u64 = 50_000;

/// Whether connections hold off reading; shared by every connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pressure(Arc<AtomicBool>);

impl Pressure {
    /// Whether reading is held off now.
    pub(crate) fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Updates from the fullest table's fill, `n` of `max`, and the
    /// archive's lag in journal records; returns the new state when it
    /// changed.
    pub(crate) fn update(&self, n: usize, max: usize, lag: u64) -> Option<bool> {
        let pct = n.saturating_mul(100) / max.max(1);
        let was = self.is_on();
        let now = if was {
            pct >= PRESSURE_OFF_PCT || lag >= PRESSURE_OFF_LAG
        } else {
            pct >= PRESSURE_ON_PCT || lag >= PRESSURE_ON_LAG
        };
        (now != was).then(|| {
            self.0.store(now, Ordering::Relaxed);
            now
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_at_ninety_off_below_eighty_five() {
        let p = Pressure::default();
        assert_eq!(p.update(89, 100, 0), None);
        assert_eq!(p.update(90, 100, 0), Some(true));
        assert!(p.is_on());
        assert_eq!(p.update(86, 100, 0), None, "stays on in the gap");
        assert_eq!(p.update(84, 100, 0), Some(false));
        assert!(!p.is_on());
    }

    #[test]
    fn on_while_the_archive_lags_off_once_it_caught_up() {
        let p = Pressure::default();
        assert_eq!(p.update(10, 100, PRESSURE_ON_LAG - 1), None);
        assert_eq!(p.update(10, 100, PRESSURE_ON_LAG), Some(true));
        assert_eq!(
            p.update(10, 100, PRESSURE_OFF_LAG),
            None,
            "stays on in the gap"
        );
        assert_eq!(p.update(10, 100, PRESSURE_OFF_LAG - 1), Some(false));
        assert_eq!(p.update(86, 100, 0), None, "memory alone below the on mark");
    }
}
