//! UTC dates for the filter form and the table: `YYYY-MM-DD` ↔ Unix
//! seconds, without a time-zone database (the terminal shows UTC).

/// Seconds in a day.
const DAY_S: u64 = 86_400;

use codecs::iso8583::datetime::{civil_from_days, days_from_civil};

/// Unix seconds at 00:00:00 UTC of a `YYYY-MM-DD` date (what
/// `<input type="date">` sends); `None` when it is not such a date.
pub(crate) fn parse_date_s(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = text.get(range)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let days = days_from_civil(number(0..4)?, number(5..7)?, number(8..10)?)?;
    days.checked_mul(DAY_S)
}

/// The last second of the day that starts at `day_start_s`: a "to" date
/// includes the whole day.
pub(crate) fn end_of_day_s(day_start_s: u64) -> u64 {
    day_start_s.saturating_add(DAY_S - 1)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub(crate) fn format_utc(unix_s: u64) -> String {
    let (year, month, day) = civil_from_days(unix_s / DAY_S);
    let in_day_s = unix_s % DAY_S;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        in_day_s / 3600,
        in_day_s % 3600 / 60,
        in_day_s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_date_s("1970-01-01"), Some(0));
        assert_eq!(parse_date_s("2026-11-23"), Some(1_795_392_000));
        assert_eq!(format_utc(1_795_434_550), "2026-11-23 11:49:10");
        assert_eq!(
            parse_date_s("2024-02-29").map(format_utc).as_deref(),
            Some("2024-02-29 00:00:00")
        );
        for days in [0u64, 59, 60, 365, 10_000, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y as u32, m as u32, d as u32), Some(days));
        }
    }

    #[test]
    fn bad_dates_are_refused() {
        for text in [
            "2023-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "1969-12-31",
            "2026-01-32",
            "abcd-ef-gh",
            "+026-01-01",
            "",
        ] {
            assert_eq!(parse_date_s(text), None, "{text}");
        }
    }
}
