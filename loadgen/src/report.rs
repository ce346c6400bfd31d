//! One table from several run summaries: throughput, latency percentiles,
//! mismatches, and ratios against the echo and peer runs of the same
//! scenario (same mode, connections, depth or rate).

use std::fmt::Write;

use crate::stats::Summary;

fn scenario(s: &Summary) -> String {
    match s.rate_per_s {
        Some(rate) => format!("open {rate}/s x{}", s.connections),
        None => format!("closed {}x{}", s.connections, s.depth),
    }
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// Renders `runs` as a text table, grouped by scenario in first-seen order.
pub fn render_table(runs: &[Summary]) -> String {
    let mut scenarios: Vec<String> = Vec::new();
    for s in runs {
        let sc = scenario(s);
        if !scenarios.contains(&sc) {
            scenarios.push(sc);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<22} {:>11} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8}",
        "run",
        "scenario",
        "answers/s",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "mism",
        "x echo",
        "x peer",
        "p99/echo",
        "metrics"
    );
    for sc in &scenarios {
        let group: Vec<&Summary> = runs.iter().filter(|s| &scenario(s) == sc).collect();
        let reference = |t: &str| group.iter().find(|s| s.target == t).copied();
        let echo = reference("echo");
        let peer = reference("peer");
        for s in &group {
            let l = &s.latency;
            let metrics = match &s.metrics {
                Some(m) if m.agree => "agree",
                Some(_) => "DIFFER",
                None => "-",
            };
            let _ = writeln!(
                out,
                "{:<24} {:<22} {:>11.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8}",
                s.label,
                sc,
                s.throughput_per_s,
                l.p50_us,
                l.p90_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                s.mismatches_total,
                ratio(s.throughput_per_s, echo.map(|e| e.throughput_per_s)),
                ratio(s.throughput_per_s, peer.map(|e| e.throughput_per_s)),
                ratio(l.p99_us, echo.map(|e| e.latency.p99_us)),
                metrics,
                s.send_lag.map_or("-".into(), |l| format!("{:.1}", l.p99_us)),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_against_echo_of_the_same_scenario() {
        let mk = |target: &str, thr: f64, p99: f64| Summary {
            label: target.into(),
            target: target.into(),
            mode: "closed".into(),
            connections: 4,
            depth: 2,
            throughput_per_s: thr,
            latency: crate::stats::Latency {
                p99_us: p99,
                ..Default::default()
            },
            ..Default::default()
        };
        let t = render_table(&[
            mk("echo", 1000.0, 10.0),
            mk("peer", 250.0, 40.0),
            mk("switch", 100.0, 80.0),
        ]);
        let line = t
            .lines()
            .find(|l| l.starts_with("switch"))
            .expect("switch row");
        assert!(
            line.contains("0.10") && line.contains("0.40") && line.contains("8.00"),
            "{t}"
        );
    }
}
