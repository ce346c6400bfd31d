//! Backpressure: while memory is nearly full because the archive has not
//! caught up (memory lets payments and answers go only once the archive
//! holds them), connections stop reading new requests, so clients wait
//! instead of getting 96. The timers turn it on and off (with a gap
//! between the two thresholds, so it does not flap); what was already
//! read is still answered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a paused connection looks whether it may read again.
pub(crate) const PRESSURE_RECHECK: Duration = Duration::from_millis(5);
/// Fill of a bounded table (% of its limit) at which reading stops.
pub(crate) const PRESSURE_ON_PCT: usize = 90;
/// Fill below which reading starts again.
pub(crate) const PRESSURE_OFF_PCT: usize = 85;

/// Whether connections hold off reading; shared by every connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pressure(Arc<AtomicBool>);

impl Pressure {
    /// Whether reading is held off now.
    pub(crate) fn is_on(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Updates from the fullest table's fill, `n` of `max`; returns the
    /// new state when it changed.
    pub(crate) fn update(&self, n: usize, max: usize) -> Option<bool> {
        let pct = n.saturating_mul(100) / max.max(1);
        let was = self.is_on();
        let now = if was {
            pct >= PRESSURE_OFF_PCT
        } else {
            pct >= PRESSURE_ON_PCT
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
        assert_eq!(p.update(89, 100), None);
        assert_eq!(p.update(90, 100), Some(true));
        assert!(p.is_on());
        assert_eq!(p.update(86, 100), None, "stays on in the gap");
        assert_eq!(p.update(84, 100), Some(false));
        assert!(!p.is_on());
    }
}
