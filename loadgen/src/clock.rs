//! F7 (transmission date and time, MMDDhhmmss UTC) from a wall clock read
//! once at start, advanced by a monotonic offset.

use codecs::iso8583::datetime::civil_from_days;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds in a day.
const DAY_S: u64 = 86_400;

/// The wall clock at the run's start, in nanoseconds since the Unix epoch.
pub(crate) fn unix_ns_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Caches F7 for the current second so most requests copy 10 bytes.
#[derive(Clone, Debug)]
pub(crate) struct F7Cache {
    /// Unix second the cached text is for.
    second: u64,
    /// MMDDhhmmss of `second`.
    text: [u8; 10],
}

impl F7Cache {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        F7Cache {
            second: u64::MAX,
            text: *b"0101000000",
        }
    }

    /// F7 for the instant `unix_ns`.
    pub(crate) fn at(&mut self, unix_ns: u64) -> [u8; 10] {
        let second = unix_ns / 1_000_000_000;
        if second != self.second {
            self.second = second;
            self.text = format_f7(second);
        }
        self.text
    }
}

/// MMDDhhmmss (UTC) of a Unix second.
pub(crate) fn format_f7(unix_s: u64) -> [u8; 10] {
    let days = unix_s / DAY_S;
    let rem = unix_s % DAY_S;
    let (_, month, day) = civil_from_days(days);
    let parts = [month, day, rem / 3600, (rem % 3600) / 60, rem % 60];
    let mut out = [b'0'; 10];
    for (pair, v) in out.chunks_exact_mut(2).zip(parts) {
        pair[0] = b'0' + (v / 10) as u8;
        pair[1] = b'0' + (v % 10) as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(&format_f7(0), b"0101000000");
        // 2024-02-29 23:59:58 UTC.
        assert_eq!(&format_f7(1_709_251_198), b"0229235958");
        // 2025-12-31 12:34:56 UTC.
        assert_eq!(&format_f7(1_767_184_496), b"1231123456");
        let mut c = F7Cache::new();
        assert_eq!(&c.at(1_767_184_496_500_000_000), b"1231123456");
    }
}
