//! The two tiers through the running switch: a payment memory has let go
//! is refunded by F90 and read over internal frames from the archive; a
//! wrong `archive.url` is a start-up error naming the key; with
//! PostgreSQL, a server restart while draining loses nothing and shows in
//! `/readyz` while it lasts.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Runs `f` on a thread of its own: the PostgreSQL client blocks on a
/// runtime of its own, which tokio forbids inside the test's.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().expect("no panic"))
}

/// Polls `/metrics` until `name` (a counter or gauge without labels) is at
/// least `min`.
async fn wait_metric(t: &TestSwitch, name: &str, min: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = t.http_get("/metrics").await;
        let value = body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0);
        if value >= min {
            return;
        }
        assert!(Instant::now() < deadline, "{name} stayed below {min}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/readyz` until its status line contains `status`; its body.
async fn wait_ready(t: &TestSwitch, status: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (line, body) = t.http_get("/readyz").await;
        if line.contains(status) {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {line}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sale, then memory lets it go (retention 1 s, clock moved on), then
/// its refund by F90 is approved from the archive and names it again.
async fn refund_after_memory_let_go(t: &TestSwitch, seed: u64) {
    let mut client = t.client().await;
    let sale = sale(&card(seed), 5_000);
    let approved = client.call(&sale).await;
    assert_eq!(approved.code(), "00");
    t.clock.advance_s(10);
    wait_metric(t, "switch_payments_retired_total", 1.0).await;
    let refunded = client.call(&refund(&sale, 5_000)).await;
    assert_eq!(
        refunded.code(),
        "00",
        "refund of a payment only the archive holds"
    );
    // Brought back: a second refund finds it in memory, fully refunded.
    let again = client.call(&refund(&sale, 1)).await;
    assert_eq!(again.code(), "13");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_memory_let_go_is_refunded_from_the_sqlite_archive() {
    let mut t = TestSwitch::start_with(|c| c.limits.payment_retention_s = 1).await;
    refund_after_memory_let_go(&t, 11).await;
    t.stop().await;
    assert!(t.dir.join(archive::FILE_NAME).exists());
}

#[tokio::test]
async fn a_wrong_archive_url_is_a_start_up_error_naming_the_key() {
    let overrides = switch::Overrides {
        iso_addr: local(),
        frame_addr: local(),
        http_addr: local(),
        data_dir: Some(data_dir()),
        ..Default::default()
    };
    let mut config = switch::Config::load(None, overrides).expect("config");
    config.archive.url = format!("postgres://switch:s3cret@127.0.0.1:{}/none", free_port());
    let started = Instant::now();
    let err = match switch::start(config, switch::Clock::manual(START_MS)).await {
        Ok(_) => panic!("a switch started without its archive"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("archive.url"), "{err}");
    assert!(!err.contains("s3cret"), "the password is printed: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let mut config = switch::Config::load(None, switch::Overrides::default()).expect("config");
    config.archive.url = "mysql://localhost/x".into();
    let err = config
        .validate()
        .expect_err("not a supported URL")
        .to_string();
    assert!(err.contains("archive.url"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarting_while_draining_loses_nothing_and_shows_in_readyz() {
    let (mut pg, url) = off_runtime(|| {
        let pg = archive::testing::PgServer::new()
            .expect("PostgreSQL for tests (run scripts/install-test-deps.sh)");
        let url = pg.create_database("switch_tiers").expect("database");
        (pg, url)
    });
    let mut t = TestSwitch::start_with(|c| {
        c.archive.url = url.clone();
        c.limits.payment_retention_s = 1;
    })
    .await;
    refund_after_memory_let_go(&t, 21).await;

    // The server goes away: approvals go on (the journal has them), the
    // archive falls behind and /readyz says so.
    off_runtime(|| pg.stop()).expect("stop PostgreSQL");
    let mut client = t.client().await;
    let sales: Vec<Req> = (0..20).map(|i| sale(&card(100 + i), 1_000 + i)).collect();
    for s in &sales {
        assert_eq!(client.call(s).await.code(), "00");
    }
    let body = wait_ready(&t, "503").await;
    assert!(body.contains("archive"), "{body}");

    // Back: the drainer resumes, nothing is lost, memory lets go again.
    off_runtime(|| pg.start()).expect("start PostgreSQL");
    wait_ready(&t, "200").await;
    t.clock.advance_s(10);
    wait_metric(&t, "switch_payments_retired_total", 21.0).await;
    for s in &sales {
        let refunded = client.call(&refund(s, 1)).await;
        assert_eq!(
            refunded.code(),
            "00",
            "refund of an archived sale after the restart"
        );
    }
    t.stop().await;
    off_runtime(move || drop(pg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_full_while_the_archive_is_down_holds_requests_back_instead_of_96() {
    let (mut pg, url) = off_runtime(|| {
        let pg = archive::testing::PgServer::new()
            .expect("PostgreSQL for tests (run scripts/install-test-deps.sh)");
        let url = pg.create_database("switch_pressure").expect("database");
        (pg, url)
    });
    let mut t = TestSwitch::start_with(|c| {
        c.archive.url = url.clone();
        c.limits.payment_retention_s = 1;
        c.limits.payments_max = 100;
    })
    .await;
    off_runtime(|| pg.stop()).expect("stop PostgreSQL");
    let mut client = t.client().await;
    // Paced, so the timers (every 100 ms) see memory fill: at 90% of
    // payments_max connections stop reading.
    let mut answered = 0;
    let mut held = None;
    for i in 0..100 {
        let s = sale(&card(300 + i), 1_000 + i);
        client.send_raw(&s.encode()).await;
        match tokio::time::timeout(Duration::from_millis(1_000), client.recv()).await {
            Ok(Some(r)) => {
                assert_eq!(r.code(), "00", "sale {i} answered {}", r.code());
                answered += 1;
            }
            Ok(None) => panic!("connection closed"),
            Err(_) => {
                held = Some(s);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(held.is_some(), "all {answered} answered: no backpressure");
    assert!((85..100).contains(&answered), "held back after {answered}");
    let body = wait_ready(&t, "503").await;
    assert!(
        body.contains("archive") || body.contains("backpressure"),
        "{body}"
    );
    // The archive comes back: memory lets go, the held request is read and
    // approved.
    off_runtime(|| pg.start()).expect("start PostgreSQL");
    t.clock.advance_s(10);
    let r = client.recv().await.expect("the held request is answered");
    assert_eq!(r.code(), "00");
    wait_ready(&t, "200").await;
    // Every answer above was 00: none refused. (The metrics are the
    // process's, shared with the other tests of this file.)
    t.stop().await;
    off_runtime(move || drop(pg));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_holds_leave_a_full_memory_and_still_expire_from_the_archive() {
    let mut t = TestSwitch::start_with(|c| c.limits.payments_max = 100).await;
    let mut client = t.client().await;
    // More open pre-authorizations than memory holds: the oldest leave for
    // the archive (memory above 75%), none is refused, nothing stalls.
    let mut holds = Vec::new();
    for i in 0..300 {
        let p = preauth(&card(500 + i), 2_000);
        assert_eq!(client.call(&p).await.code(), "00", "pre-authorization {i}");
        holds.push(p);
        // Paced: the timers let go every 100 ms.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_metric(&t, "switch_payments_retired_total", 100.0).await;
    // A week and a day later, every hold has ended, the archived ones too:
    // a capture of the first is refused, as for any expired hold.
    t.clock.advance_s(8 * 86_400);
    wait_metric(&t, "switch_archived_holds_ended_total", 100.0).await;
    let late = client.call(&capture(&holds[0], 2_000)).await;
    assert_eq!(late.code(), "12", "capture after the hold ended");
    t.stop().await;
}

/// A restart after memory let a payment go and a snapshot no longer holds
/// it: a new payment takes a new id, and does not overwrite the archived
/// one (ids once came from what memory held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_reuse_the_id_of_a_payment_only_the_archive_holds() {
    let edit = |c: &mut switch::Config| {
        c.limits.payment_retention_s = 1;
        c.journal.snapshot_interval_s = 1;
        c.limits.idempotency_window_s = 1;
    };
    let mut t = TestSwitch::start_with(edit).await;
    let dir = t.dir.clone();
    let first_sale = sale(&card(31), 3_100);
    let first = t.client().await.call(&first_sale).await;
    assert_eq!(first.code(), "00");
    // Memory lets the sale go, and its answer (two rotations of the
    // answers' generations, a window apart). The metrics are the
    // process's, shared with the other tests: the data directory says
    // when it is done.
    wait_for("a snapshot without the sale and its answer", || {
        t.clock.advance_s(2);
        snapshot_state(&dir) == Some((0, 0, 0))
    })
    .await;
    t.stop().await;

    let mut t = TestSwitch::start_in(dir.clone(), edit).await;
    let mut client = t.client().await;
    // The first sale's answer left memory before the restart: its repeat
    // is asked of the archive, not approved as a new sale.
    let again = client.call(&first_sale.clone().mti("0201")).await;
    assert_eq!(
        (again.code(), again.text(37), again.text(38)),
        (first.code(), first.text(37), first.text(38)),
        "a repeat after the restart"
    );
    let second = client.call(&sale(&card(32), 3_200)).await;
    assert_eq!(second.code(), "00");
    wait_for("exactly the two sales in the archive", || {
        let mut amounts: Vec<u64> = off_runtime(|| {
            let a = archive::SqliteArchive::open(&dir).expect("archive");
            archive::Archive::list(&a, &[0], &Default::default(), None, 10)
                .expect("list")
                .payments
        })
        .iter()
        .map(|p| p.authorized_minor)
        .collect();
        amounts.sort_unstable();
        amounts == [3_100, 3_200]
    })
    .await;
    t.stop().await;
}

/// The newest snapshot's payments and answers, and the records after it;
/// `None` before the first snapshot.
fn snapshot_state(dir: &std::path::Path) -> Option<(usize, usize, usize)> {
    let (mut snapshot, mut records) = (None, 0);
    journal::read_state(&journal::OsStorage, &dir.join("journal"), |item| {
        match item {
            journal::Replay::Snapshot { bytes, .. } => {
                let s = engine::record::decode_snapshot(bytes)?;
                snapshot = Some((s.payments.len(), s.answers.len()));
            }
            journal::Replay::Record(_) => records += 1,
        }
        Ok(())
    })
    .expect("the journal reads");
    snapshot.map(|(payments, answers)| (payments, answers, records))
}

/// Polls `done` until it holds, at most 20 s.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_rebuild_writes_back_what_the_journal_holds() {
    let mut t = TestSwitch::start().await;
    let mut client = t.client().await;
    let mut sold = Vec::new();
    for i in 0..30 {
        let r = client.call(&sale(&card(700 + i), 100 + i)).await;
        assert_eq!(r.code(), "00");
        sold.push(r);
    }
    t.stop().await;
    // The archive is lost; the journal still holds every record.
    for name in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(t.dir.join(format!("{}{name}", archive::FILE_NAME)));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .arg("--data-dir")
        .arg(&t.dir)
        .args(["archive", "rebuild"])
        .output()
        .expect("switch archive rebuild runs");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("records applied"),
        "{out:?}"
    );
    let store = archive::SqliteArchive::open(&t.dir).expect("archive");
    for r in &sold {
        let rrn: [u8; 12] = r.text(37).as_bytes().try_into().expect("F37");
        let auth: [u8; 6] = r.text(38).as_bytes().try_into().expect("F38");
        let p = archive::Archive::payment_by_rrn(&store, 0, &rrn, &auth)
            .expect("read")
            .expect("the sale is in the rebuilt archive");
        assert_eq!(
            p.captured_minor.to_string(),
            r.text(4).trim_start_matches('0')
        );
    }
    // Rebuilding again changes nothing and is not refused.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_switch"))
        .arg("--data-dir")
        .arg(&t.dir)
        .args(["archive", "rebuild"])
        .output()
        .expect("runs");
    assert!(again.status.success(), "{again:?}");
}
