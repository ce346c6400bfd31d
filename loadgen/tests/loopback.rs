//! Short bounded runs against the echo server and the iso8583_rs peer on
//! loopback: counts, mismatch accounting and latency outputs are sane.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use loadgen::{run, spawn_echo, start_peer, RunConfig, Summary, Target};

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal address")
}

fn echo() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| spawn_echo(any_port(), 1).expect("echo server"))
}

fn peer() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start_peer(any_port()).expect("iso8583_rs peer"))
}

fn config(addr: SocketAddr, target: Target) -> RunConfig {
    let mut c = RunConfig::new(addr, target);
    c.connections = 4;
    c.depth = 4;
    c.duration = Duration::from_millis(700);
    c.drain = Duration::from_secs(2);
    c
}

fn assert_sane_latency(s: &Summary) {
    let l = &s.latency;
    assert!(l.p50_us > 0.0, "{s:?}");
    assert!(l.p50_us <= l.p90_us && l.p90_us <= l.p99_us, "{s:?}");
    assert!(l.p99_us <= l.p999_us && l.p999_us <= l.max_us, "{s:?}");
}

#[test]
fn echo_closed_loop_answers_everything() {
    let s = run(&config(echo(), Target::Echo)).expect("run");
    assert!(s.sent > 1_000, "{s:?}");
    assert_eq!(s.answered, s.sent);
    assert_eq!(s.mismatches_total, 0, "{:?}", s.mismatch_samples);
    assert_eq!(s.codes.get("0100/--"), Some(&s.answered));
    assert!(s.throughput_per_s > 1_000.0);
    assert_sane_latency(&s);
}

#[test]
fn echo_open_loop_sends_exactly_the_schedule() {
    let mut c = config(echo(), Target::Echo);
    c.rate_per_s = Some(3_000);
    c.duration = Duration::from_secs(1);
    let s = run(&c).expect("run");
    assert_eq!(s.sent, 3_000);
    assert_eq!(s.answered, 3_000);
    assert_eq!(s.mismatches_total, 0, "{:?}", s.mismatch_samples);
    assert_eq!(s.mode, "open");
    assert_sane_latency(&s);
}

#[test]
fn a_wrong_expectation_is_counted_as_mismatches() {
    // The echo server returns 0100 where the peer would answer 0110.
    let s = run(&config(echo(), Target::Peer)).expect("run");
    assert!(s.answered > 0);
    assert_eq!(s.mismatches.wrong_mti, s.answered, "{s:?}");
    // The peer approves with 00; expecting 05 makes every answer a mismatch.
    let mut c = config(peer(), Target::Peer);
    c.expect_code = Some(*b"05");
    let s = run(&c).expect("run");
    assert!(s.answered > 0);
    assert_eq!(s.mismatches.unexpected_code, s.answered, "{s:?}");
    assert_eq!(s.mismatches_total, s.answered);
}

#[test]
fn peer_answers_every_authorization() {
    let mut c = config(peer(), Target::Peer);
    c.depth = 1;
    let s = run(&c).expect("run");
    assert!(s.sent > 100, "{s:?}");
    assert_eq!(s.answered, s.sent);
    assert_eq!(s.mismatches_total, 0, "{:?}", s.mismatch_samples);
    assert_eq!(s.codes.get("0100/00"), Some(&s.answered));
    assert_sane_latency(&s);
}

#[test]
fn peer_follows_flows_with_captures_refunds_reversals_and_repeats() {
    let mut c = config(peer(), Target::Peer);
    c.mix =
        loadgen::Mix::parse("preauth-capture=1,refund=1,reversal=1,repeat=1,sale=1").expect("mix");
    let s = run(&c).expect("run");
    assert_eq!(s.mismatches_total, 0, "{:?}", s.mismatch_samples);
    for mti in ["0100", "0101", "0200", "0220", "0400"] {
        assert!(
            s.codes.contains_key(&format!("{mti}/00")),
            "{mti} in {:?}",
            s.codes
        );
    }
}

#[test]
fn cli_prints_a_json_summary_and_a_table() {
    let exe = env!("CARGO_BIN_EXE_loadgen");
    let out = Command::new(exe)
        .args(["run", "--target", "echo", "-q", "-c", "2", "-d", "2"])
        .args(["--duration-s", "0.3", "--label", "echo-cli", "--check"])
        .args(["--addr", &echo().to_string()])
        .output()
        .expect("loadgen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).expect("utf-8");
    let s: Summary = serde_json::from_str(line.trim()).expect("one JSON summary");
    assert_eq!((s.label.as_str(), s.mismatches_total), ("echo-cli", 0));
    let dir = std::env::temp_dir().join(format!("loadgen-cli-{}.json", std::process::id()));
    std::fs::write(&dir, &line).expect("write summary");
    let table = Command::new(exe)
        .arg("report")
        .arg(&dir)
        .output()
        .expect("report");
    let _ = std::fs::remove_file(&dir);
    let table = String::from_utf8(table.stdout).expect("utf-8");
    assert!(table.lines().any(|l| l.starts_with("echo-cli")), "{table}");
}
