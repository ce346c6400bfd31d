//! F7 (MMDDhhmmss), F12 (hhmmss), F13 (MMDD) and F14 (YYMM) with range checks.

use super::amount::parse_digits;

/// F7 transmission date and time, MMDDhhmmss in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransmissionTime {
    /// 1..=12.
    pub month: u8,
    /// 1..=31.
    pub day: u8,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59.
    pub second: u8,
}

fn two(bytes: &[u8], at: usize) -> Option<u8> {
    let v = parse_digits(bytes.get(at..at + 2)?, 2)?;
    u8::try_from(v).ok()
}

fn in_range(v: u8, lo: u8, hi: u8) -> Option<u8> {
    (lo..=hi).contains(&v).then_some(v)
}

impl TransmissionTime {
    /// Parses F7; `None` unless 10 digits with each part in range.
    pub fn parse(f7: &[u8]) -> Option<Self> {
        if f7.len() != 10 {
            return None;
        }
        Some(TransmissionTime {
            month: in_range(two(f7, 0)?, 1, 12)?,
            day: in_range(two(f7, 2)?, 1, 31)?,
            hour: in_range(two(f7, 4)?, 0, 23)?,
            minute: in_range(two(f7, 6)?, 0, 59)?,
            second: in_range(two(f7, 8)?, 0, 59)?,
        })
    }
}

/// F12 local time, hhmmss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=59.
    pub second: u8,
}

impl LocalTime {
    /// Parses F12; `None` unless 6 digits in range.
    pub fn parse(f12: &[u8]) -> Option<Self> {
        if f12.len() != 6 {
            return None;
        }
        Some(LocalTime {
            hour: in_range(two(f12, 0)?, 0, 23)?,
            minute: in_range(two(f12, 2)?, 0, 59)?,
            second: in_range(two(f12, 4)?, 0, 59)?,
        })
    }
}

/// F13 local date, MMDD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalDate {
    /// 1..=12.
    pub month: u8,
    /// 1..=31.
    pub day: u8,
}

impl LocalDate {
    /// Parses F13; `None` unless 4 digits in range.
    pub fn parse(f13: &[u8]) -> Option<Self> {
        if f13.len() != 4 {
            return None;
        }
        Some(LocalDate {
            month: in_range(two(f13, 0)?, 1, 12)?,
            day: in_range(two(f13, 2)?, 1, 31)?,
        })
    }
}

/// F14 card expiry, YYMM: the card is valid through the end of that month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expiry {
    /// Two-digit year, 2000-based.
    pub year: u8,
    /// 1..=12.
    pub month: u8,
}

impl Expiry {
    /// Parses F14; `None` unless 4 digits with a month in 1..=12.
    pub fn parse(f14: &[u8]) -> Option<Self> {
        if f14.len() != 4 {
            return None;
        }
        Some(Expiry {
            year: two(f14, 0)?,
            month: in_range(two(f14, 2)?, 1, 12)?,
        })
    }

    /// Whether the card has expired in the given month (`year` 2000-based
    /// two digits, `month` 1..=12): true once that month is after expiry.
    pub fn is_expired_at(&self, year: u8, month: u8) -> bool {
        (year, month) > (self.year, self.month)
    }
}

/// Days from 0000-03-01 to 1970-01-01 in the proleptic Gregorian calendar.
const EPOCH_SHIFT_DAYS: u64 = 719_468;

/// Year, month (1–12) and day (1–31) of a count of days since 1970-01-01,
/// in UTC (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + EPOCH_SHIFT_DAYS;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (the inverse of
/// [`civil_from_days`]); `None` when the date does not exist or is outside
/// the years 1970 to 9999.
pub fn days_from_civil(year: u32, month: u32, day: u32) -> Option<u64> {
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || day == 0 {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days: [u32; 12] = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day > *month_days.get((month - 1) as usize)? {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (u64::from(era) * 146_097 + u64::from(doe)).checked_sub(EPOCH_SHIFT_DAYS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmission_time_checks_ranges() {
        let t = TransmissionTime::parse(b"1123114959").expect("valid");
        assert_eq!(
            (t.month, t.day, t.hour, t.minute, t.second),
            (11, 23, 11, 49, 59)
        );
        for bad in [
            &b"1323114959"[..],
            b"1100114959",
            b"1123244959",
            b"1123116059",
            b"112311495",
            b"11231149a9",
        ] {
            assert_eq!(TransmissionTime::parse(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(days_from_civil(2024, 2, 29), Some(19_782));
        assert_eq!(days_from_civil(2023, 2, 29), None);
        assert_eq!(days_from_civil(2026, 13, 1), None);
        assert_eq!(days_from_civil(1969, 12, 31), None);
        for days in (0..2_900_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y as u32, m as u32, d as u32), Some(days));
        }
    }

    #[test]
    fn expiry_is_inclusive_of_its_month() {
        let e = Expiry::parse(b"2611").expect("valid");
        assert!(!e.is_expired_at(26, 11));
        assert!(e.is_expired_at(26, 12));
        assert!(e.is_expired_at(27, 1));
        assert!(!e.is_expired_at(25, 12));
        assert_eq!(Expiry::parse(b"2613"), None);
        assert_eq!(LocalTime::parse(b"235960"), None);
        assert_eq!(LocalDate::parse(b"0231").map(|d| d.day), Some(31));
    }
}
