//! Terminals and merchants at run time, over real loopback TCP: the
//! `switch terminals` and `switch merchants` commands (the binary) change a
//! running switch within 2 s, without a restart, and the change survives
//! one. A disabled or removed terminal's 0100, 0200 (sale, refund) and
//! 0220 get 58 and change nothing; its reversals are processed.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The contract's bound on a change reaching a running switch.
const APPLIES_WITHIN: Duration = Duration::from_secs(2);

/// Runs the switch binary with `args`; its stdout. Panics with its stderr
/// when it fails.
fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run switch");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Runs the switch binary with `args`, expecting it to fail; its stderr.
fn cli_fails(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run switch");
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).expect("utf-8")
}

/// The sum of metric `name` (as spelled, labels included) now. The
/// recorder is global to the test process: only for what no other test
/// of this file counts.
async fn metric(sw: &TestSwitch, name: &str) -> f64 {
    metric_sum(&sw.http_get("/metrics").await.1, name).unwrap_or(0.0)
}

const ERRORS: &str = "switch_directory_errors_total";

/// Runs the command line `args` against the running switch's data
/// directory, in the name of `terminals-test`; its stdout.
fn change(sw: &TestSwitch, args: &[&str]) -> String {
    let dir = sw.dir.to_str().expect("utf-8 dir").to_owned();
    let mut all = args.to_vec();
    all.extend(["--data-dir", &dir, "--by", "terminals-test"]);
    cli(&all)
}

/// Sends fresh `probe`s (requests that change nothing whatever their
/// answer) until one is answered `code`, at most [`APPLIES_WITHIN`]: the
/// switch has applied the change the probe shows.
async fn applied(c: &mut Client, probe: impl Fn() -> Req, code: &str) {
    let deadline = Instant::now() + APPLIES_WITHIN;
    loop {
        let got = c.call(&probe()).await.code();
        if got == code {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {got}, not {code}, {APPLIES_WITHIN:?} after the change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pre-authorization of nothing from `tid` of `mid`: 13 (invalid amount)
/// when the terminal transacts, 58 when it does not, 03 for a disabled or
/// unknown merchant; never a payment.
fn probe(tid: &'static str, mid: &'static str) -> impl Fn() -> Req {
    move || preauth(&card(99), 0).set(41, tid).set(42, mid)
}

const M1: &str = "DEMO00000000001";

/// `req` from terminal `tid`.
fn from(req: Req, tid: &str) -> Req {
    req.set(41, tid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_terminal_gets_58_its_reversals_are_honoured_and_it_survives_a_restart() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let held = preauth(&card(1), 5_000);
    let to_capture = preauth(&card(2), 5_000);
    let advised = preauth(&card(3), 5_000);
    let sold = sale(&card(4), 3_000);
    for r in [&held, &to_capture, &advised, &sold] {
        assert_eq!(c.call(r).await.code(), "00");
    }
    change(&sw, &["terminals", "disable", "DEMO0001"]);
    applied(&mut c, probe("DEMO0001", M1), "58").await;

    // Every payment message of it is refused, and changes nothing.
    let refused = [
        preauth(&card(5), 1_000),
        sale(&card(6), 1_000),
        refund(&sold, 1_000),
        capture(&to_capture, 5_000),
    ];
    for r in &refused {
        let resp = c.call(r).await;
        assert_eq!(resp.code(), "58", "{} from a disabled terminal", r.mti);
    }
    // Its neighbour transacts.
    let other = from(sale(&card(7), 1_000), "DEMO0002");
    assert_eq!(c.call(&other).await.code(), "00");
    // Its reversals are processed: the holds are released.
    let reversed = reversal(&held);
    assert_eq!(c.call(&reversed).await.code(), "00");
    let repeat = reversed.clone().mti("0401");
    assert_eq!(c.call(&repeat).await.code(), "00", "its repeat too");
    let advice = reversal(&advised).mti("0420");
    let resp = c.call(&advice).await;
    assert_eq!((resp.mti.as_str(), resp.code().as_str()), ("0430", "00"));

    change(&sw, &["terminals", "enable", "DEMO0001"]);
    applied(&mut c, probe("DEMO0001", M1), "13").await;
    assert_eq!(c.call(&sale(&card(8), 1_000)).await.code(), "00");
    // What was refused changed nothing: the refund and capture go now.
    assert_eq!(c.call(&refund(&sold, 1_000)).await.code(), "00");
    assert_eq!(c.call(&capture(&to_capture, 5_000)).await.code(), "00");
    // The reversed holds are gone: 12 (cancelled).
    assert_eq!(c.call(&capture(&held, 5_000)).await.code(), "12");
    assert_eq!(c.call(&capture(&advised, 5_000)).await.code(), "12");

    // Disabled, then restarted: still disabled.
    change(&sw, &["terminals", "disable", "DEMO0001"]);
    applied(&mut c, probe("DEMO0001", M1), "58").await;
    sw.stop().await;
    let dir = sw.dir.clone();
    let mut sw = TestSwitch::start_in(dir, |_| {}).await;
    let mut c = sw.client().await;
    assert_eq!(c.call(&sale(&card(9), 1_000)).await.code(), "58");
    let audit = std::fs::read_to_string(sw.dir.join("audit.log")).expect("audit log");
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(lines.len(), 3, "one line per change: {audit}");
    assert!(
        lines[0].contains("\"who\":\"terminals-test\"")
            && lines[0].contains("\"what\":\"terminal.disable\"")
            && lines[0].contains("\"target\":\"DEMO0001\""),
        "{audit}"
    );
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminals_settings_override_its_merchants() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let here = sale(&card(11), 2_000);
    let there = from(sale(&card(12), 2_000), "DEMO0002");
    assert_eq!(c.call(&here).await.code(), "00");
    assert_eq!(c.call(&there).await.code(), "00");
    // A refund of nothing: 58 where refunds are off, else 13.
    let refund_probe = |original: Req| move || refund(&original, 0);
    // Merchant 1 allows refunds; its terminal DEMO0001 no longer does.
    let out = change(&sw, &["terminals", "set", "DEMO0001", "--refunds", "off"]);
    assert!(out.contains("refunds off"), "{out}");
    applied(&mut c, refund_probe(here.clone()), "58").await;
    assert_eq!(c.call(&refund(&here, 500)).await.code(), "58");
    assert_eq!(
        c.call(&refund(&there, 500)).await.code(),
        "00",
        "DEMO0002 inherits"
    );
    // Merchant 2 refuses refunds; its terminal DEMO0101 may.
    let m2 = |r: Req| r.set(41, "DEMO0101").set(42, "DEMO00000000002");
    let sold = m2(sale(&card(13), 2_000));
    assert_eq!(c.call(&sold).await.code(), "00");
    assert_eq!(
        c.call(&refund(&sold, 500)).await.code(),
        "58",
        "merchant 2: no refunds"
    );
    change(&sw, &["terminals", "set", "DEMO0101", "--refunds", "on"]);
    applied(&mut c, refund_probe(sold.clone()), "13").await;
    assert_eq!(c.call(&refund(&sold, 500)).await.code(), "00");
    // Back to inheriting.
    change(
        &sw,
        &["terminals", "set", "DEMO0001", "--refunds", "inherit"],
    );
    applied(&mut c, refund_probe(here.clone()), "13").await;
    assert_eq!(c.call(&refund(&here, 500)).await.code(), "00");
    // MO/TO off on a terminal: its F25 = 08 authorizations get 58 (the
    // probe's card fails Luhn, 14, where MO/TO is allowed).
    let moto =
        |tid: &'static str, pan: &'static str| move || from(sale(pan, 1_000), tid).set(25, "08");
    change(&sw, &["terminals", "set", "DEMO0002", "--moto", "off"]);
    applied(&mut c, moto("DEMO0002", "4111111111111112"), "58").await;
    let good = card(14);
    assert_eq!(
        c.call(&from(sale(&good, 1_000), "DEMO0002").set(25, "08"))
            .await
            .code(),
        "58"
    );
    assert_eq!(
        c.call(&from(sale(&good, 1_000), "DEMO0003").set(25, "08"))
            .await
            .code(),
        "00"
    );

    // The merchant's own settings change too: refunds off for merchant 1
    // reach DEMO0003 (inheriting) but not DEMO0001 once it says on.
    let third = from(sale(&card(15), 2_000), "DEMO0003");
    assert_eq!(c.call(&third).await.code(), "00");
    change(&sw, &["terminals", "set", "DEMO0001", "--refunds", "on"]);
    change(
        &sw,
        &[
            "merchants",
            "set",
            M1,
            "--refunds",
            "off",
            "--over-capture-pct",
            "0",
        ],
    );
    applied(&mut c, refund_probe(third.clone()), "58").await;
    assert_eq!(c.call(&refund(&third, 500)).await.code(), "58");
    assert_eq!(
        c.call(&refund(&here, 500)).await.code(),
        "00",
        "DEMO0001 says on"
    );
    // Over-capture 0 %: a capture above the hold is now 13 (20 % before).
    let held = preauth(&card(16), 1_000);
    assert_eq!(c.call(&held).await.code(), "00");
    assert_eq!(c.call(&capture(&held, 1_100)).await.code(), "13");
    assert_eq!(c.call(&capture(&held, 1_000)).await.code(), "00");
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_terminals_and_merchants_transact_removed_ones_get_58() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let new = |r: Req| r.set(41, "NEWT0001");
    assert_eq!(
        c.call(&new(sale(&card(21), 1_000))).await.code(),
        "58",
        "unknown"
    );
    change(&sw, &["terminals", "add", "NEWT0001", "--merchant", M1]);
    applied(&mut c, probe("NEWT0001", M1), "13").await;
    let sold = new(sale(&card(22), 1_000));
    assert_eq!(c.call(&sold).await.code(), "00");
    let held = new(preauth(&card(23), 1_000));
    assert_eq!(c.call(&held).await.code(), "00");
    change(&sw, &["terminals", "remove", "NEWT0001"]);
    applied(&mut c, probe("NEWT0001", M1), "58").await;
    assert_eq!(c.call(&new(sale(&card(24), 1_000))).await.code(), "58");
    assert_eq!(c.call(&refund(&sold, 500)).await.code(), "58");
    assert_eq!(
        c.call(&reversal(&held)).await.code(),
        "00",
        "reversal honoured"
    );
    let dir = sw.dir.to_str().expect("utf-8").to_owned();
    let listed = cli(&["terminals", "list", "--merchant", M1, "--data-dir", &dir]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("NEWT0001") && l.contains("removed")),
        "{listed}"
    );
    // Clear errors: a terminal of another merchant, a bad F41, an
    // unknown merchant.
    let e = cli_fails(&[
        "terminals",
        "add",
        "DEMO0001",
        "--merchant",
        "DEMO00000000002",
        "--data-dir",
        &dir,
    ]);
    assert!(
        e.contains("already belongs to merchant DEMO00000000001"),
        "{e}"
    );
    let e = cli_fails(&[
        "--data-dir",
        &dir,
        "terminals",
        "add",
        "T1",
        "--merchant",
        M1,
    ]);
    assert!(e.contains("expected 8 printable characters (F41)"), "{e}");
    let e = cli_fails(&[
        "terminals",
        "add",
        "NEWT0002",
        "--merchant",
        "NOSUCHMERCHANT1",
        "--data-dir",
        &dir,
    ]);
    assert!(e.contains("unknown merchant NOSUCHMERCHANT1"), "{e}");

    // A merchant added at run time, with a terminal.
    let theirs = probe("NEWT0003", "NEWM00000000003");
    assert_eq!(c.call(&theirs()).await.code(), "03", "unknown merchant");
    let out = change(
        &sw,
        &[
            "merchants",
            "add",
            "NEWM00000000003",
            "--currencies",
            "978,840",
            "--refunds",
            "on",
        ],
    );
    assert!(out.contains("index 2"), "{out}");
    change(
        &sw,
        &[
            "terminals",
            "add",
            "NEWT0003",
            "--merchant",
            "NEWM00000000003",
        ],
    );
    applied(&mut c, probe("NEWT0003", "NEWM00000000003"), "13").await;
    let of_theirs = |r: Req| r.set(41, "NEWT0003").set(42, "NEWM00000000003");
    let sold = of_theirs(sale(&card(25), 1_000));
    assert_eq!(c.call(&sold).await.code(), "00");
    assert_eq!(c.call(&refund(&sold, 1_000)).await.code(), "00");
    // Exported under its own F42, as a configured merchant's would be.
    let csv = cli(&[
        "--data-dir",
        &dir,
        "export",
        "--from",
        "2026-11-23",
        "--to",
        "2026-11-23",
        "--merchant",
        "NEWM00000000003",
    ]);
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert!(
        rows[0].contains("NEWM00000000003") && rows[0].contains("NEWT0003"),
        "{csv}"
    );
    // A mandate may name it: a merchant added at run time is one the
    // switch serves (the provider holds a key).
    switch::KeyAdmin::new(&sw.dir)
        .create_key(switch::Owner::Provider("SP-0000-0003".into()), "psp")
        .expect("provider key");
    let granted = cli(&[
        "mandates",
        "grant",
        "--data-dir",
        &dir,
        "--merchant",
        "NEWM00000000003",
        "--provider",
        "SP-0000-0003",
    ]);
    assert!(granted.contains("granted SP-0000-0003"), "{granted}");
    change(&sw, &["merchants", "disable", "NEWM00000000003"]);
    applied(&mut c, probe("NEWT0003", "NEWM00000000003"), "03").await;
    assert_eq!(
        c.call(&of_theirs(sale(&card(26), 1_000))).await.code(),
        "03"
    );
    let listed = cli(&["merchants", "list", "--data-dir", &dir]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("2 ") && l.contains("NEWM00000000003") && l.contains("added")),
        "{listed}"
    );
    sw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_directory_file_keeps_the_last_good_one() {
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    change(&sw, &["terminals", "disable", "DEMO0005"]);
    applied(&mut c, probe("DEMO0005", M1), "58").await;
    let path = sw.dir.join("directory.json");
    let good = std::fs::read_to_string(&path).expect("file");
    let before = metric(&sw, ERRORS).await;
    std::fs::write(&path, b"{\"version\": 1, \"terminals\": [").expect("write");
    let deadline = Instant::now() + APPLIES_WITHIN;
    while metric(&sw, ERRORS).await <= before {
        assert!(Instant::now() < deadline, "the bad file was not noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sold = from(sale(&card(31), 1_000), "DEMO0005");
    assert_eq!(c.call(&sold).await.code(), "58", "still disabled");
    let (status, _) = sw.http_get("/readyz").await;
    assert!(status.contains("200"), "readiness stays: {status}");
    // A good file again is applied.
    std::fs::write(&path, good.replace("\"disabled\"", "\"enabled\"")).expect("write");
    applied(&mut c, probe("DEMO0005", M1), "13").await;
    let sold = from(sale(&card(32), 1_000), "DEMO0005");
    assert_eq!(c.call(&sold).await.code(), "00");
    sw.stop().await;
}

/// A merchant key of `mid` in `sw`'s data directory, logged in; and its
/// client id.
async fn frames_of(sw: &TestSwitch, mid: &str) -> (switch_client::Client, String) {
    let k = switch::KeyAdmin::new(&sw.dir)
        .create_key(switch::Owner::Merchant(mid.into()), "back office")
        .expect("create key");
    let client = tokio::time::timeout(
        TIMEOUT,
        switch_client::Client::connect(sw.frame, &k.client_id, &k.secret),
    )
    .await
    .expect("in time")
    .expect("log-in accepted");
    (client, k.client_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_key_manages_its_own_terminals_over_internal_frames() {
    use switch_client::{Setting, TerminalSettings, TerminalState};
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let (ours, our_id) = frames_of(&sw, M1).await;
    let (theirs, _) = frames_of(&sw, "DEMO00000000002").await;

    // Added with the merchant key: it transacts once the answer is in.
    let r = ours
        .add_terminal("BACK0001", None, Some("web shop"))
        .await
        .expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    let t = &r.terminals[0];
    assert_eq!(
        (
            t.terminal_id.as_str(),
            t.merchant_id.as_str(),
            t.state,
            t.name.as_str()
        ),
        ("BACK0001", M1, TerminalState::Enabled, "web shop")
    );
    let sold = from(sale(&card(41), 1_000), "BACK0001");
    assert_eq!(c.call(&sold).await.code(), "00");

    // Disabled with the merchant key: 58 at once, its refund too.
    let off = TerminalSettings {
        enabled: Some(false),
        ..TerminalSettings::default()
    };
    let r = ours.set_terminal("BACK0001", &off).await.expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    assert_eq!(r.terminals[0].state, TerminalState::Disabled);
    assert_eq!(
        c.call(&from(sale(&card(42), 1_000), "BACK0001"))
            .await
            .code(),
        "58"
    );
    assert_eq!(c.call(&refund(&sold, 500)).await.code(), "58");

    // Another merchant's key can neither see nor change it.
    let on = TerminalSettings {
        enabled: Some(true),
        ..TerminalSettings::default()
    };
    let r = theirs
        .set_terminal("BACK0001", &on)
        .await
        .expect("answered");
    assert_eq!(r.code(), "25", "{r:?}");
    let r = theirs.remove_terminal("DEMO0001").await.expect("answered");
    assert_eq!(r.code(), "25", "{r:?}");
    let r = theirs
        .add_terminal("BACK0002", Some(M1), None)
        .await
        .expect("answered");
    assert_eq!(r.code(), "58", "{r:?}");
    let listed = theirs
        .list_terminals(None, None, None)
        .await
        .expect("answered");
    assert_eq!(listed.code(), "00");
    assert!(
        listed
            .terminals
            .iter()
            .all(|t| t.merchant_id == "DEMO00000000002"),
        "{listed:?}"
    );
    assert_eq!(
        c.call(&from(sale(&card(43), 1_000), "BACK0001"))
            .await
            .code(),
        "58"
    );

    // Its own settings: refunds off, then enabled again.
    let settings = TerminalSettings {
        enabled: Some(true),
        refunds: Some(Setting::Off),
        ..TerminalSettings::default()
    };
    let r = ours
        .set_terminal("BACK0001", &settings)
        .await
        .expect("answered");
    assert_eq!((r.code(), r.terminals[0].refunds), ("00", Setting::Off));
    assert_eq!(
        c.call(&from(sale(&card(44), 1_000), "BACK0001"))
            .await
            .code(),
        "00"
    );
    assert_eq!(
        c.call(&refund(&sold, 500)).await.code(),
        "58",
        "refunds off"
    );

    // Cancels off on DEMO0003: a cancel over frames is 58 and changes
    // nothing; an ISO 8583 reversal from it still goes.
    let no_cancel = TerminalSettings {
        cancel: Some(Setting::Off),
        ..TerminalSettings::default()
    };
    let r = ours
        .set_terminal("DEMO0003", &no_cancel)
        .await
        .expect("answered");
    assert_eq!((r.code(), r.terminals[0].cancel), ("00", Setting::Off));
    let order = switch_client::MotoPayment {
        pan: card(46),
        expiry_yymm: "2812".into(),
        merchant_reference: "ORD-46".into(),
        currency: 978,
        amount_minor: 1_000,
        terminal_id: "DEMO0003".into(),
        ..switch_client::MotoPayment::default()
    };
    let held = ours.preauthorize_moto(&order).await.expect("answered");
    assert_eq!(held.code(), "00", "{held:?}");
    let id = held.payment_id.expect("id");
    let r = ours.cancel(id).await.expect("answered");
    assert_eq!(r.code(), "58", "{r:?}");
    let r = ours.get_payment(id).await.expect("answered");
    assert_eq!(r.status, Some(switch_client::PaymentStatus::Uncaptured));
    let iso_held = from(preauth(&card(47), 1_000), "DEMO0003");
    assert_eq!(c.call(&iso_held).await.code(), "00");
    assert_eq!(c.call(&reversal(&iso_held)).await.code(), "00");

    // Paging over the merchant's 11 terminals, 4 at a time.
    let (mut seen, mut cursor) = (Vec::new(), None);
    for _ in 0..10 {
        let page = ours
            .list_terminals(Some(M1), cursor, Some(4))
            .await
            .expect("answered");
        assert_eq!(page.code(), "00");
        seen.extend(page.terminals.iter().map(|t| t.terminal_id.clone()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 11, "{seen:?}");
    assert!(seen.contains(&"BACK0001".to_owned()));

    // Removed: 58, listed as removed; the audit names the key.
    let r = ours.remove_terminal("BACK0001").await.expect("answered");
    assert_eq!(
        (r.code(), r.terminals[0].state),
        ("00", TerminalState::Removed)
    );
    assert_eq!(
        c.call(&from(sale(&card(45), 1_000), "BACK0001"))
            .await
            .code(),
        "58"
    );
    let audit = std::fs::read_to_string(sw.dir.join("audit.log")).expect("audit");
    assert_eq!(audit.lines().count(), 5, "{audit}");
    let who = format!("\"who\":\"{our_id}\"");
    assert!(audit.lines().all(|l| l.contains(&who)), "{audit}");
    sw.stop().await;
}

/// A provider's key acts for the merchants whose mandates it holds: it
/// must name the merchant a terminal is added to, and sees only theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_key_manages_the_terminals_of_its_mandates_only() {
    let mut sw = TestSwitch::start().await;
    let admin = switch::KeyAdmin::new(&sw.dir);
    let k = admin
        .create_key(switch::Owner::Provider("SP-0000-0042".into()), "provider")
        .expect("key");
    let known = |_: &str| true;
    admin
        .grant_mandate(
            "DEMO00000000002",
            "SP-0000-0042",
            &[switch::Scope::Reporting],
            &known,
        )
        .expect("mandate");
    let p = tokio::time::timeout(
        TIMEOUT,
        switch_client::Client::connect(sw.frame, &k.client_id, &k.secret),
    )
    .await
    .expect("in time")
    .expect("log-in accepted");
    // A reporting mandate lists the merchant's terminals, changes none.
    let r = p.list_terminals(None, None, None).await.expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    assert!(
        r.terminals.iter().any(|t| t.terminal_id == "DEMO0101"),
        "{r:?}"
    );
    let r = p
        .add_terminal("PROV0001", None, None)
        .await
        .expect("answered");
    assert_ne!(r.code(), "00", "reporting only: {r:?}");
    admin
        .grant_mandate(
            "DEMO00000000002",
            "SP-0000-0042",
            &switch::Scope::all(),
            &known,
        )
        .expect("mandate");
    // One mandate: the merchant may be left out.
    let r = p
        .add_terminal("PROV0001", None, None)
        .await
        .expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    assert_eq!(r.terminals[0].merchant_id, "DEMO00000000002");
    let r = p
        .add_terminal("PROV0002", Some(M1), None)
        .await
        .expect("answered");
    assert_eq!(r.code(), "58", "no mandate for merchant 1: {r:?}");
    admin
        .grant_mandate(M1, "SP-0000-0042", &switch::Scope::all(), &known)
        .expect("mandate");
    // Two mandates: the merchant must be named.
    let r = p
        .add_terminal("PROV0002", None, None)
        .await
        .expect("answered");
    assert_eq!(r.code(), "30", "{r:?}");
    let r = p
        .add_terminal("PROV0002", Some(M1), None)
        .await
        .expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    let listed = p
        .list_terminals(None, None, Some(100))
        .await
        .expect("answered");
    // Merchant 1's ten and its added one, merchant 2's one and its added one.
    assert_eq!(listed.terminals.len(), 13, "{listed:?}");
    let mut c = sw.client().await;
    assert_eq!(
        c.call(&from(sale(&card(51), 1_000), "PROV0002"))
            .await
            .code(),
        "00"
    );
    sw.stop().await;
}

/// A merchant's own settings over internal frames: its key reads them and
/// raises its over-capture (a capture that was 13 then goes), may not
/// disable itself, and no other merchant's key touches them; a provider
/// with a reporting mandate reads them and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_key_changes_its_own_settings_over_internal_frames() {
    use switch_client::MerchantSettings;
    const M2: &str = "DEMO00000000002";
    let mut sw = TestSwitch::start().await;
    let mut c = sw.client().await;
    let (ours, our_id) = frames_of(&sw, M2).await;
    let (theirs, _) = frames_of(&sw, M1).await;

    let r = ours.get_merchant(None).await.expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    let m = r.merchant.expect("settings");
    assert_eq!(
        (
            m.merchant_id.as_str(),
            m.enabled,
            m.currencies.as_slice(),
            m.over_capture_pct,
            m.hold_hours,
            m.auto_capture_hours,
            m.refunds,
            m.moto,
            m.name.as_str()
        ),
        (
            M2,
            true,
            &[978][..],
            0,
            168,
            None,
            false,
            true,
            "Demo merchant 2"
        )
    );

    // Over-capture 0 %: 1,100 on a hold of 1,000 is 13.
    let m2 = |r: Req| r.set(41, "DEMO0101").set(42, M2);
    let held = m2(preauth(&card(61), 1_000));
    assert_eq!(c.call(&held).await.code(), "00");
    assert_eq!(c.call(&capture(&held, 1_100)).await.code(), "13");

    // Another merchant's key can neither read nor change it.
    let raise = MerchantSettings {
        merchant_id: Some(M2.into()),
        over_capture_pct: Some(20),
        ..MerchantSettings::default()
    };
    let r = theirs.get_merchant(Some(M2)).await.expect("answered");
    assert_eq!((r.code(), r.merchant.is_none()), ("58", true), "{r:?}");
    let r = theirs.set_merchant(&raise).await.expect("answered");
    assert_eq!((r.code(), r.merchant.is_none()), ("58", true), "{r:?}");
    assert_eq!(c.call(&capture(&held, 1_100)).await.code(), "13");

    // Its own key raises it to 20 %: in force when the answer is in.
    let r = ours.set_merchant(&raise).await.expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    let m = r.merchant.expect("settings");
    assert_eq!((m.over_capture_pct, m.refunds), (20, false), "others kept");
    assert_eq!(c.call(&capture(&held, 1_100)).await.code(), "00");

    // Several settings at once; read back.
    let more = MerchantSettings {
        currencies: Some(vec![978, 840]),
        hold_hours: Some(72),
        auto_capture_hours: Some(Some(24)),
        refunds: Some(true),
        name: Some("Shop two".into()),
        ..MerchantSettings::default()
    };
    let r = ours.set_merchant(&more).await.expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    let m = ours
        .get_merchant(Some(M2))
        .await
        .expect("answered")
        .merchant
        .expect("settings");
    assert_eq!(
        (
            m.currencies.as_slice(),
            m.hold_hours,
            m.auto_capture_hours,
            m.refunds,
            m.over_capture_pct,
            m.name.as_str()
        ),
        (&[978, 840][..], 72, Some(24), true, 20, "Shop two")
    );

    // Refused, changing nothing: disabling itself (58, the acquirer's),
    // nothing to change (30), auto-capture after the hold ends (30).
    let off = MerchantSettings {
        enabled: Some(false),
        over_capture_pct: Some(5),
        ..MerchantSettings::default()
    };
    let r = ours.set_merchant(&off).await.expect("answered");
    assert_eq!(r.code(), "58", "{r:?}");
    assert!(
        r.message
            .as_deref()
            .unwrap_or_default()
            .contains("acquirer"),
        "{r:?}"
    );
    let r = ours
        .set_merchant(&MerchantSettings::default())
        .await
        .expect("answered");
    assert_eq!(r.code(), "30", "{r:?}");
    let late = MerchantSettings {
        auto_capture_hours: Some(Some(100)),
        ..MerchantSettings::default()
    };
    let r = ours.set_merchant(&late).await.expect("answered");
    assert_eq!(r.code(), "30", "{r:?}");
    assert!(
        r.message
            .as_deref()
            .unwrap_or_default()
            .contains("auto-capture"),
        "{r:?}"
    );
    let m = ours.get_merchant(None).await.expect("answered");
    let m = m.merchant.expect("settings");
    assert_eq!(
        (m.enabled, m.over_capture_pct, m.auto_capture_hours),
        (true, 20, Some(24))
    );
    let sold = m2(sale(&card(62), 1_000));
    assert_eq!(c.call(&sold).await.code(), "00", "still enabled");

    // A provider with a reporting mandate reads, cannot set.
    let admin = switch::KeyAdmin::new(&sw.dir);
    let k = admin
        .create_key(switch::Owner::Provider("SP-0000-0043".into()), "provider")
        .expect("key");
    admin
        .grant_mandate(M2, "SP-0000-0043", &[switch::Scope::Reporting], &|_| true)
        .expect("mandate");
    let p = tokio::time::timeout(
        TIMEOUT,
        switch_client::Client::connect(sw.frame, &k.client_id, &k.secret),
    )
    .await
    .expect("in time")
    .expect("log-in accepted");
    let r = p.get_merchant(None).await.expect("answered");
    assert_eq!(r.code(), "00", "{r:?}");
    assert_eq!(r.merchant.expect("settings").over_capture_pct, 20);
    let r = p.set_merchant(&raise).await.expect("answered");
    assert_eq!(r.code(), "58", "reporting only: {r:?}");

    // Two changes audited under the key's client id, on disk.
    let audit = std::fs::read_to_string(sw.dir.join("audit.log")).expect("audit");
    assert_eq!(audit.lines().count(), 2, "{audit}");
    let who = format!("\"who\":\"{our_id}\"");
    assert!(
        audit
            .lines()
            .all(|l| l.contains(&who) && l.contains("\"what\":\"merchant.set\"")),
        "{audit}"
    );
    sw.stop().await;
}
