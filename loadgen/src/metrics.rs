//! Scrapes the switch's `switch_requests_total{mti,code}` counters over
//! plain HTTP/1.0 and compares their growth during a run with what the
//! loadgen counted.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The counter compared.
const COUNTER: &str = "switch_requests_total";
/// Largest metrics page read.
const PAGE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Connect and read timeout.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Counter values by `MTI/code`.
pub(crate) type Counts = BTreeMap<String, u64>;

/// The switch's counters against the loadgen's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsCheck {
    /// Growth of the switch's total over the run.
    pub switch_total: u64,
    /// Answers the loadgen matched.
    pub loadgen_total: u64,
    /// Whether every `MTI/code` grew by what the loadgen counted.
    pub agree: bool,
    /// `MTI/code` → [switch growth, loadgen count], where they differ.
    pub differences: BTreeMap<String, [u64; 2]>,
}

impl MetricsCheck {
    /// Compares `after - before` with the loadgen's `ours`.
    pub(crate) fn new(before: &Counts, after: &Counts, ours: &Counts) -> Self {
        let mut differences = BTreeMap::new();
        let mut keys: Vec<&String> = after.keys().chain(ours.keys()).collect();
        keys.sort();
        keys.dedup();
        let mut switch_total = 0;
        for k in keys {
            let grew = after
                .get(k)
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.get(k).copied().unwrap_or(0));
            switch_total += grew;
            let mine = ours.get(k).copied().unwrap_or(0);
            if grew != mine {
                differences.insert(k.clone(), [grew, mine]);
            }
        }
        MetricsCheck {
            switch_total,
            loadgen_total: ours.values().sum(),
            agree: differences.is_empty(),
            differences,
        }
    }
}

/// Reads the counters at `url` (`http://host:port/path`).
///
/// # Errors
/// A URL that is not plain `http://`, a connection or read failure, a
/// status other than 200, or a page over the size limit.
pub(crate) fn scrape(url: &str) -> anyhow::Result<Counts> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("metrics URL {url:?}: expected http://host:port/path"))?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("metrics URL {url:?}: resolving {host}"))?
        .next()
        .with_context(|| format!("metrics URL {url:?}: no address for {host}"))?;
    let mut s = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)
        .with_context(|| format!("connecting to {addr} for metrics"))?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    let path = path.trim_start_matches('/');
    write!(
        s,
        "GET /{path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain\r\n\r\n"
    )?;
    let mut page = String::new();
    s.take(PAGE_BYTES_MAX)
        .read_to_string(&mut page)
        .with_context(|| format!("reading {url}"))?;
    let (head, body) = page
        .split_once("\r\n\r\n")
        .with_context(|| format!("{url}: no HTTP header end"))?;
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200") {
        bail!("{url}: {status}");
    }
    Ok(parse_counts(body))
}

/// Sums `switch_requests_total{...,mti="..",code=".."}` lines by `MTI/code`.
pub(crate) fn parse_counts(page: &str) -> Counts {
    let mut out = Counts::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(COUNTER).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        let (Some(mti), Some(code)) = (label("mti"), label("code")) else {
            continue;
        };
        let Ok(v) = value.trim().split(' ').next().unwrap_or("").parse::<f64>() else {
            continue;
        };
        *out.entry(format!("{mti}/{code}")).or_default() += v as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        let before = parse_counts(
            "# TYPE switch_requests_total counter\n\
             switch_requests_total{mti=\"0100\",code=\"00\"} 5\n",
        );
        let after = parse_counts(
            "switch_requests_total{code=\"00\",mti=\"0100\"} 15\n\
             switch_requests_total{mti=\"0200\",code=\"30\"} 2\n\
             switch_other_total 7\n",
        );
        assert_eq!(after.get("0100/00"), Some(&15));
        let ours: Counts = [("0100/00".to_string(), 10), ("0200/30".to_string(), 2)].into();
        let c = MetricsCheck::new(&before, &after, &ours);
        assert!(c.agree, "{c:?}");
        assert_eq!((c.switch_total, c.loadgen_total), (12, 12));
        let ours: Counts = [("0100/00".to_string(), 9)].into();
        let c = MetricsCheck::new(&before, &after, &ours);
        assert!(!c.agree);
        assert_eq!(c.differences.get("0100/00"), Some(&[10, 9]));
        assert_eq!(c.differences.get("0200/30"), Some(&[2, 0]));
    }
}
