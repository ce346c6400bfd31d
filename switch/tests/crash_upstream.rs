//! Crash tests of forwarding (`../shared/upstream.md`, "Crash"): the
//! switch process is killed (-9) while authorizations are with the issuer,
//! restarted on the same data directory, and every forwarded request whose
//! answer never reached the terminal is reversed at the issuer (0420, F90
//! the request as the issuer saw it, F48.21 4021), and no request whose
//! answer did reach it is. Then the SAF empties.
//!
//! Rounds: `SWITCH_CRASH_UPSTREAM_RUNS` (10 by default, about 4 s; the
//! test with several terminals runs half as many); a longer series sets
//! it higher (20 rounds ran in 7.9 s).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use loadgen::issuer::{self, IssuerConfig, Latency};

/// Rounds unless `SWITCH_CRASH_UPSTREAM_RUNS` says otherwise.
const RUNS_DEFAULT: u64 = 10;
/// Sales in flight at the issuer when the switch is killed, per round.
const IN_FLIGHT: u64 = 6;
/// How long the issuer holds them: far past the kill.
const HELD_MS: u64 = 30_000;
/// Bound on the reversals arriving after the restart.
const REVERSALS_BOUND: Duration = Duration::from_secs(20);

/// A forwarded request as the issuer saw it: (F11, F7).
type Seen = (String, String);

fn forwarded_sales(iss: &issuer::IssuerHandle) -> BTreeSet<Seen> {
    iss.received()
        .iter()
        .filter(|m| m.mti.as_bytes() == b"0200")
        .filter_map(|m| Some((m.text(11)?.to_owned(), m.text(7)?.to_owned())))
        .collect()
}

/// The requests reversed so far, by F90's F11 and F7; and whether every
/// reversal said "timeout" (F48.21 4021) and named an 0200.
fn reversed(iss: &issuer::IssuerHandle) -> (BTreeSet<Seen>, bool) {
    let mut all_ok = true;
    let set = iss
        .received()
        .iter()
        .filter(|m| matches!(m.mti.as_bytes(), b"0420" | b"0421"))
        .filter_map(|m| {
            all_ok &= m.text(48) == Some("21044021");
            let f90 = m.text(90)?;
            all_ok &= f90.starts_with("0200");
            Some((f90.get(4..10)?.to_owned(), f90.get(10..20)?.to_owned()))
        })
        .collect();
    (set, all_ok)
}

fn config_for(issuer: std::net::SocketAddr) -> toml::Table {
    let mut config = default_config();
    let upstream: toml::Table = toml::toml! {
        name = "crash-issuer"
        timeout_ms = 60000
        connections = 1
        echo_interval_s = 0
    };
    let mut upstream = upstream;
    upstream.insert("addr".into(), issuer.to_string().into());
    config.insert(
        "upstreams".into(),
        toml::Value::Array(vec![upstream.into()]),
    );
    let route: toml::Table = toml::toml! {
        pan_prefixes = ["4111112"]
        upstream = "crash-issuer"
    };
    config.insert("routes".into(), toml::Value::Array(vec![route.into()]));
    let saf: toml::Table = toml::toml! {
        retry_interval_ms = 100
        retry_interval_max_ms = 400
    };
    config.insert("saf".into(), saf.into());
    config
}

/// A fresh data directory with the configuration routing to `issuer`;
/// (the directory, the configuration file).
fn prepared(issuer: std::net::SocketAddr) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = data_dir();
    std::fs::create_dir_all(&dir).expect("data dir");
    let config_path = dir.join("switch.toml");
    write_config(&config_for(issuer), &config_path);
    (dir, config_path)
}

/// How the switch process starts on `dir` with `config`.
fn launch<'a>(dir: &'a std::path::Path, config: &'a std::path::Path) -> Launch<'a> {
    Launch {
        dir,
        config: Some(config),
        logs: dir,
        log_level: "info",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_in_flight_at_a_kill_9_are_reversed_after_the_restart() {
    let runs = env_number("SWITCH_CRASH_UPSTREAM_RUNS", RUNS_DEFAULT) as usize;
    let iss = issuer::start(IssuerConfig::default())
        .await
        .expect("issuer simulator");
    let (dir, config_path) = prepared(iss.addr());
    let launch = launch(&dir, &config_path);
    let mut answered: BTreeSet<Seen> = BTreeSet::new();
    let mut seed = 0;
    for run in 0..runs {
        iss.set_latency(Latency::Fixed(0));
        let (mut p, mut client) = launch.start(&format!("life-{run}")).await;
        p.wait_metric("switch_upstream_links_connected", TIMEOUT, |v| v >= 1.0)
            .await;
        // One answered before the kill: never to be reversed.
        let before = forwarded_sales(&iss);
        seed += 1;
        let r = client
            .call(&sale(&card(200_000_000 + run as u64 * 100 + seed), 1_000))
            .await;
        assert_eq!(r.code(), "00", "round {run}");
        let after: BTreeSet<Seen> = forwarded_sales(&iss).difference(&before).cloned().collect();
        assert_eq!(
            after.len(),
            1,
            "{:?} {:?}",
            iss.counts(),
            iss.received().last()
        );
        answered.extend(after);
        // Then sales the issuer holds, and the kill while it does.
        iss.set_latency(Latency::Fixed(HELD_MS));
        let before = forwarded_sales(&iss);
        for i in 0..IN_FLIGHT {
            let s = sale(&card(200_000_000 + run as u64 * 100 + 10 + i), 2_000 + i);
            client.send_raw(&s.encode()).await;
        }
        let deadline = Instant::now() + TIMEOUT;
        while forwarded_sales(&iss).len() < before.len() + IN_FLIGHT as usize {
            assert!(Instant::now() < deadline, "round {run}: not all forwarded");
            tokio::time::sleep(POLL_PAUSE).await;
        }
        p.kill9();
        let held: BTreeSet<Seen> = forwarded_sales(&iss).difference(&before).cloned().collect();
        // The issuer goes on answering at once; what it holds from the
        // killed life is answered to nobody (the link is gone).
        iss.disconnect_all();
        iss.set_latency(Latency::Fixed(0));
        let (mut p, _client) = launch.start(&format!("after-{run}")).await;
        let deadline = Instant::now() + REVERSALS_BOUND;
        loop {
            let (rev, ok) = reversed(&iss);
            assert!(ok, "round {run}: a reversal without 4021 or of another MTI");
            if held.is_subset(&rev) {
                assert!(
                    rev.is_disjoint(&answered),
                    "round {run}: an answered sale was reversed"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {run}: reversed {rev:?}, in flight at the kill {held:?}; see {}",
                p.log.display()
            );
            tokio::time::sleep(POLL_PAUSE).await;
        }
        p.wait_metric("switch_saf_depth", TIMEOUT, |v| v == 0.0)
            .await;
        p.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advices_queued_before_a_kill_9_are_delivered_after_the_restart() {
    let iss = issuer::start(IssuerConfig::default())
        .await
        .expect("issuer simulator");
    let (dir, config_path) = prepared(iss.addr());
    let launch = launch(&dir, &config_path);
    let (mut p, mut client) = launch.start("first").await;
    p.wait_metric("switch_upstream_links_connected", TIMEOUT, |v| v >= 1.0)
        .await;
    let auths: Vec<Req> = (0..4)
        .map(|i| preauth(&card(200_000_500 + i), 1_000))
        .collect();
    for a in &auths {
        assert_eq!(client.call(a).await.code(), "00");
    }
    // The issuer goes away: captures are answered here, advices wait.
    iss.stop_listening().await;
    iss.disconnect_all();
    for a in &auths {
        assert_eq!(client.call(&capture(a, 900)).await.code(), "00");
    }
    p.wait_metric("switch_saf_depth", TIMEOUT, |v| v == 4.0)
        .await;
    p.kill9();
    iss.resume_listening().await.expect("listening again");
    let (mut p, _client) = launch.start("second").await;
    p.wait_metric("switch_saf_depth", TIMEOUT, |v| v == 0.0)
        .await;
    let advised: BTreeSet<String> = iss
        .received()
        .iter()
        .filter(|m| matches!(m.mti.as_bytes(), b"0220" | b"0221"))
        .filter_map(|m| m.text(90).map(str::to_owned))
        .collect();
    let authorized: BTreeSet<String> = iss
        .received()
        .iter()
        .filter(|m| m.mti.as_bytes() == b"0100")
        .filter_map(|m| Some(format!("0100{}{}", m.text(11)?, m.text(7)?)))
        .collect();
    let advised_heads: BTreeSet<String> = advised.iter().map(|f| f[..20].to_owned()).collect();
    assert_eq!(
        advised_heads, authorized,
        "one advice per capture, naming its authorization"
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Terminals (connections, each its own F41) in the test below.
const TERMINALS: [&str; 3] = ["DEMO0001", "DEMO0002", "DEMO0003"];
/// Per terminal and round: sales answered at once, and sales held.
const PROMPT_PER_TERMINAL: u64 = 2;
/// See [`PROMPT_PER_TERMINAL`].
const HELD_PER_TERMINAL: u64 = 2;
/// Amounts the issuer holds (answered after [`HELD_MS`]); below them,
/// answered at once.
const HELD_AMOUNT_MIN: u64 = 7_000;

/// Every forwarded sale as the issuer saw it, by its card (each sale
/// here has a card of its own).
fn seen_by_card(iss: &issuer::IssuerHandle) -> BTreeMap<String, Seen> {
    iss.received()
        .iter()
        .filter(|m| m.mti.as_bytes() == b"0200")
        .filter_map(|m| {
            Some((
                m.text(2)?.to_owned(),
                (m.text(11)?.to_owned(), m.text(7)?.to_owned()),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_terminals_interleaved_answered_ones_are_kept_and_held_ones_reversed() {
    let runs = env_number("SWITCH_CRASH_UPSTREAM_RUNS", RUNS_DEFAULT).div_ceil(2);
    let iss = issuer::start(IssuerConfig::default())
        .await
        .expect("issuer simulator");
    let (dir, config_path) = prepared(iss.addr());
    let launch = launch(&dir, &config_path);
    let held_amounts: Vec<u64> = (0..HELD_PER_TERMINAL * TERMINALS.len() as u64)
        .map(|i| HELD_AMOUNT_MIN + i)
        .collect();
    let mut reached: BTreeSet<Seen> = BTreeSet::new();
    for run in 0..runs {
        let held_amounts = held_amounts.clone();
        iss.update(|c| {
            c.late = Some((held_amounts, HELD_MS));
            c.latency = Latency::Uniform {
                min_ms: 0,
                max_ms: 100,
            };
        })
        .expect("held amounts");
        let (mut p, first) = launch.start(&format!("terminals-{run}")).await;
        p.wait_metric("switch_upstream_links_connected", TIMEOUT, |v| v >= 1.0)
            .await;
        let mut clients = vec![first];
        while clients.len() < TERMINALS.len() {
            clients.push(Client::connect(p.iso).await);
        }
        // Interleaved: held and prompt sales, every terminal at once.
        let mut sent: Vec<(usize, Req)> = Vec::new();
        for k in 0..PROMPT_PER_TERMINAL + HELD_PER_TERMINAL {
            for (t, tid) in TERMINALS.iter().enumerate() {
                let n = (k * TERMINALS.len() as u64) + t as u64;
                let amount = if k % 2 == 0 {
                    HELD_AMOUNT_MIN + n / 2
                } else {
                    1_000 + n
                };
                let pan = card(200_001_000 + run * 100 + n);
                let req = sale(&pan, amount).set(41, tid);
                clients[t].send_raw(&req.encode()).await;
                sent.push((t, req));
            }
        }
        // Killed once every sale is at the issuer and half the prompt
        // answers were read, so the rest race the kill; what was already
        // on its way to a terminal is still read after it.
        let prompt = (PROMPT_PER_TERMINAL * TERMINALS.len() as u64) as usize;
        let mut answered_stans = BTreeSet::new();
        let deadline = Instant::now() + TIMEOUT;
        while answered_stans.len() < prompt / 2
            || seen_by_card(&iss).len() < sent.len() * (run as usize + 1)
        {
            assert!(Instant::now() < deadline, "round {run}: {:?}", iss.counts());
            for c in &mut clients {
                if let Ok(Some(r)) = tokio::time::timeout(POLL_PAUSE, c.recv()).await {
                    assert_eq!(r.code(), "00", "round {run}");
                    answered_stans.insert(r.text(11));
                }
            }
        }
        p.kill9();
        for c in &mut clients {
            while let Some(r) = c.recv_or_close().await {
                assert_eq!(r.code(), "00", "round {run}");
                answered_stans.insert(r.text(11));
            }
        }
        // Reached its terminal: never reversed. Held by the issuer: must
        // be. Answered by the issuer and lost with the process: reversed
        // unless its answer was journaled (either is right).
        let seen = seen_by_card(&iss);
        let mut held = BTreeSet::new();
        for (_, req) in &sent {
            let pan = String::from_utf8_lossy(&req.fields[&2]).into_owned();
            let at_issuer = seen[&pan].clone();
            let amount: u64 = String::from_utf8_lossy(&req.fields[&4])
                .parse()
                .expect("amount");
            if answered_stans.contains(&stan_of(&req.fields)) {
                assert!(
                    amount < HELD_AMOUNT_MIN,
                    "round {run}: a held sale answered"
                );
                reached.insert(at_issuer);
            } else if amount >= HELD_AMOUNT_MIN {
                held.insert(at_issuer);
            }
        }
        assert_eq!(held.len(), sent.len() - prompt, "round {run}");
        // The issuer answers at once again; what it held is answered to
        // nobody (the links are gone).
        iss.disconnect_all();
        iss.update(|c| {
            c.late = None;
            c.latency = Latency::Fixed(0);
        })
        .expect("prompt again");
        let (mut p, _client) = launch.start(&format!("terminals-after-{run}")).await;
        let deadline = Instant::now() + REVERSALS_BOUND;
        loop {
            let (rev, ok) = reversed(&iss);
            assert!(ok, "round {run}: a reversal without 4021 or of another MTI");
            if held.is_subset(&rev) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {run}: reversed {rev:?}, held at the kill {held:?}; see {}",
                p.log.display()
            );
            tokio::time::sleep(POLL_PAUSE).await;
        }
        p.wait_metric("switch_saf_depth", TIMEOUT, |v| v == 0.0)
            .await;
        let (rev, _) = reversed(&iss);
        assert!(
            rev.is_disjoint(&reached),
            "round {run}: a sale whose answer reached its terminal was reversed: {:?}",
            rev.intersection(&reached).collect::<Vec<_>>()
        );
        p.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
