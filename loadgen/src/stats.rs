//! Counts, mismatch accounting, latency percentiles and the JSON summary.

use std::collections::BTreeMap;

use codecs::iso8583::{DecodeError, Mti};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Most mismatch descriptions kept per connection for the summary.
const MISMATCH_SAMPLES_MAX: usize = 4;
/// Highest latency a histogram records exactly, ns (longer ones saturate).
pub(crate) const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds: {e}"))
}

/// Answers that were not what the contract says, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatches {
    /// F39 other than expected.
    pub unexpected_code: u64,
    /// Answer MTI other than expected.
    pub wrong_mti: u64,
    /// A repeat answered with another F38 than its original.
    pub wrong_f38: u64,
    /// An answer whose STAN + F41 matched nothing in flight.
    pub unmatched: u64,
    /// An answer that did not decode.
    pub undecodable: u64,
    /// Requests never answered (in flight at the end, or on a closed connection).
    pub lost: u64,
    /// A new request's key still in flight (STAN space wrapped; a loadgen limit).
    pub key_collision: u64,
}

impl Mismatches {
    /// All kinds added up.
    pub fn total(&self) -> u64 {
        self.unexpected_code
            + self.wrong_mti
            + self.wrong_f38
            + self.unmatched
            + self.undecodable
            + self.lost
            + self.key_collision
    }

    fn add(&mut self, o: &Mismatches) {
        self.unexpected_code += o.unexpected_code;
        self.wrong_mti += o.wrong_mti;
        self.wrong_f38 += o.wrong_f38;
        self.unmatched += o.unmatched;
        self.undecodable += o.undecodable;
        self.lost += o.lost;
        self.key_collision += o.key_collision;
    }
}

/// One connection's counts.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Requests written.
    pub(crate) sent: u64,
    /// Answers matched to a request.
    pub(crate) matched: u64,
    /// Requests never answered.
    pub(crate) lost: u64,
    /// Mismatches by kind (`lost` is added at the end).
    mismatches: Mismatches,
    /// Answers by request MTI and F39 (`--` when absent); a handful of keys.
    codes: Vec<([u8; 4], [u8; 2], u64)>,
    /// First few mismatches, described.
    samples: Vec<String>,
}

impl Tally {
    /// Mismatches so far, for the progress line.
    pub(crate) fn mismatch_total(&self) -> u64 {
        self.mismatches.total() + self.lost
    }

    pub(crate) fn answered(&mut self, mti: Mti, code: Option<[u8; 2]>) {
        self.matched += 1;
        let code = code.unwrap_or(*b"--");
        let m = *mti.as_bytes();
        match self
            .codes
            .iter_mut()
            .find(|(a, b, _)| *a == m && *b == code)
        {
            Some(entry) => entry.2 += 1,
            None => self.codes.push((m, code, 1)),
        }
    }

    fn sample(&mut self, text: impl FnOnce() -> String) {
        if self.samples.len() < MISMATCH_SAMPLES_MAX {
            self.samples.push(text());
        }
    }

    pub(crate) fn mismatch_undecodable(&mut self, e: &DecodeError) {
        self.mismatches.undecodable += 1;
        self.sample(|| format!("undecodable answer: {e}"));
    }

    pub(crate) fn mismatch_unmatched(&mut self, mti: Mti, stan: Option<u32>, f41: Option<&[u8]>) {
        self.mismatches.unmatched += 1;
        self.sample(|| {
            format!(
                "{mti} answer with F11 {stan:?} F41 {:?} matches nothing in flight",
                f41.map(String::from_utf8_lossy)
            )
        });
    }

    pub(crate) fn mismatch_mti(&mut self, request: Mti, want: Mti, got: Mti) {
        self.mismatches.wrong_mti += 1;
        self.sample(|| format!("{request} answered with MTI {got}, expected {want}"));
    }

    pub(crate) fn mismatch_code(&mut self, request: Mti, want: [u8; 2], got: Option<[u8; 2]>) {
        self.mismatches.unexpected_code += 1;
        self.sample(|| {
            format!(
                "{request} answered F39 {}, expected {}",
                got.map_or("(none)".into(), |c| String::from_utf8_lossy(&c)
                    .into_owned()),
                String::from_utf8_lossy(&want)
            )
        });
    }

    pub(crate) fn mismatch_f38(&mut self, request: Mti) {
        self.mismatches.wrong_f38 += 1;
        self.sample(|| format!("{request} (repeat) answered with another F38 than its original"));
    }

    pub(crate) fn mismatch_key_collision(&mut self) {
        self.mismatches.key_collision += 1;
        self.sample(|| "a new request reused a key still in flight (STAN space wrapped)".into());
    }
}

/// Latency percentiles, microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    pub(crate) fn from_histogram(h: &Histogram<u32>) -> Self {
        let us = |ns: u64| ns as f64 / 1_000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1_000.0,
        }
    }
}

/// What a run did; printed as one JSON line on stdout.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Name of the run.
    pub label: String,
    /// `switch`, `echo` or `peer`.
    pub target: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Connections.
    pub connections: usize,
    /// Closed loop: requests in flight per connection.
    pub depth: usize,
    /// Open loop: target requests per second.
    pub rate_per_s: Option<u64>,
    /// Sending time, seconds.
    pub duration_s: f64,
    /// Requests written.
    pub sent: u64,
    /// Answers matched to a request.
    pub answered: u64,
    /// Answers per second over the sending time.
    pub throughput_per_s: f64,
    /// Latency of matched answers (open loop: from the scheduled send).
    pub latency: Latency,
    /// Mismatches by kind.
    pub mismatches: Mismatches,
    /// All mismatches.
    pub mismatches_total: u64,
    /// Answers by `MTI/F39` of the request.
    pub codes: BTreeMap<String, u64>,
    /// A few mismatches, described.
    pub mismatch_samples: Vec<String>,
    /// Open loop: sends released later than scheduled by more than 100 µs (pacer lag).
    pub late_sends: u64,
    /// Open loop: how late sends were written after their scheduled time
    /// (the pacer's and the loadgen's own timing error).
    pub send_lag: Option<Latency>,
    /// The switch's counters compared with ours, when scraped.
    pub metrics: Option<crate::metrics::MetricsCheck>,
}

/// Folds connection tallies into totals.
#[derive(Default)]
pub(crate) struct Totals {
    pub(crate) sent: u64,
    pub(crate) answered: u64,
    pub(crate) mismatches: Mismatches,
    pub(crate) codes: BTreeMap<String, u64>,
    pub(crate) samples: Vec<String>,
}

impl Totals {
    pub(crate) fn add(&mut self, t: &Tally) {
        self.sent += t.sent;
        self.answered += t.matched;
        let mut m = t.mismatches;
        m.lost += t.lost;
        self.mismatches.add(&m);
        for (mti, code, n) in &t.codes {
            let k = format!(
                "{}/{}",
                String::from_utf8_lossy(mti),
                String::from_utf8_lossy(code)
            );
            *self.codes.entry(k).or_default() += n;
        }
        for s in &t.samples {
            if self.samples.len() < 2 * MISMATCH_SAMPLES_MAX {
                self.samples.push(s.clone());
            }
        }
    }
}
