//! The switch's clock (the workspace's one `Clock`, injectable so lifecycle
//! tests never sleep) and the calendar view of its milliseconds.

/// The workspace's one clock (the `clock` crate), re-exported so
/// `switch::Clock` stays the switch's public name for it.
pub use ::clock::Clock;

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
}
