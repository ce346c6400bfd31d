//! Crash tests: kill -9 the switch at random points under pipelined load
//! (durable acknowledgement), restart it on the same data directory, and
//! check that every acknowledged change is there: a repeat of each
//! acknowledged sale gets the very same answer, and a capture of each
//! acknowledged capture's pre-authorization is refused as already
//! captured; a hold raised by an incremental authorization and partially
//! captured is still open, raised, with its capture counted. Also a PCI check: no PAN or track data of the run in the
//! data directory or the logs.
//!
//! Runs `SWITCH_CRASH_RUNS` rounds (20 by default; `scripts/crash-loop.sh`
//! runs many more), each reproducible from the seed it prints.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_kill_9() {
    let runs = env_number("SWITCH_CRASH_RUNS", 20) as usize;
    let seed = crash_seed();
    eprintln!("crash test: {runs} runs, SWITCH_CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let dir = data_dir();
    let launch = Launch {
        dir: &dir,
        config: None,
        logs: &dir,
        log_level: "debug",
    };
    let mut pans_used = Vec::new();
    let mut acked_sales: HashMap<String, (Req, Resp)> = HashMap::new();
    let mut acked_captures: Vec<Req> = Vec::new();
    let mut acked_raised: Vec<Req> = Vec::new();
    for run in 0..runs {
        let t0 = std::time::Instant::now();
        let (mut p, mut c) = launch.start(&format!("{run}-0")).await;
        // A pre-authorization and its capture, acknowledged before the load.
        let pan = card(rng.next() % 1_000_000_000);
        pans_used.push(pan.clone());
        let auth = preauth(&pan, 1_000).set(7, "1123120000");
        assert_eq!(c.call(&auth).await.code(), "00");
        let cap = capture(&auth, 1_100);
        assert_eq!(c.call(&cap).await.code(), "00");
        acked_captures.push(auth.clone());
        // A hold raised by an increment (1,000 + 500), partially captured
        // (1,300, over the first limit of 1,200), acknowledged too.
        let pan = card(rng.next() % 1_000_000_000);
        pans_used.push(pan.clone());
        let held = preauth(&pan, 1_000).set(7, "1123120000");
        assert_eq!(c.call(&held).await.code(), "00");
        let raise = preauth(&pan, 500).set(7, "1123120000").set(90, held.f90());
        assert_eq!(c.call(&raise).await.code(), "00");
        let part = capture(&held, 1_300).set(48, "22011");
        assert_eq!(c.call(&part).await.code(), "00");
        acked_raised.push(held);
        // Pipelined sales on a second connection; answers read as they come.
        let count = 200 + (rng.next() % 800) as usize;
        let sales: Vec<Req> = (0..count)
            .map(|i| {
                let pan = card(rng.next() % 1_000_000_000);
                pans_used.push(pan.clone());
                let s = sale(&pan, 100 + i as u64);
                // Some sales carry track 2 instead of F2 and F14.
                if i % 7 == 0 {
                    s.unset(2)
                        .unset(14)
                        .set(35, format!("{pan}=28121010000012345678"))
                } else {
                    s
                }
            })
            .collect();
        let kill_after = Duration::from_micros(5_000 + rng.next() % 95_000);
        for (req, resp) in pipeline_for(p.iso, &sales, kill_after).await {
            assert_eq!(resp.code(), "00");
            acked_sales.insert(stan_of(&req.fields), (req, resp));
        }
        p.kill9();
        // Restart and check everything acknowledged so far, across all runs.
        let t1 = t0.elapsed();
        let (mut p2, mut c) = launch.start(&format!("{run}-1")).await;
        let t2 = t0.elapsed();
        for (stan, (req, resp)) in &acked_sales {
            let again = c.call(&req.clone().mti("0201")).await;
            assert_eq!(
                (again.code(), again.text(37), again.text(38)),
                (resp.code(), resp.text(37), resp.text(38)),
                "run {run} (seed {seed}): acknowledged sale {stan} lost or changed"
            );
        }
        for auth in &acked_captures {
            let code = c.call(&capture(auth, 1_000)).await.code();
            assert_eq!(
                code, "12",
                "run {run} (seed {seed}): an acknowledged capture was lost"
            );
        }
        // 1,800 is the raised limit and 1,300 was captured: 501 more is
        // 13 (the partial capture survived), 500 is 00 (the increment did).
        for held in acked_raised.drain(..) {
            let codes = (
                c.call(&capture(&held, 501)).await.code(),
                c.call(&capture(&held, 500)).await.code(),
            );
            assert_eq!(
                codes,
                ("13".into(), "00".into()),
                "run {run} (seed {seed}): an acknowledged increment or partial capture was lost"
            );
        }
        p2.kill9();
        eprintln!(
            "run {run}: load {t1:?}, restart {:?}, check {:?}",
            t2 - t1,
            t0.elapsed() - t2
        );
    }
    // PCI: no PAN of the run and no track data in the data directory or
    // logs. One pass per file: every 16-digit window inside a digit run is
    // looked up among the PANs used.
    let pans: std::collections::HashSet<&[u8]> = pans_used.iter().map(|p| p.as_bytes()).collect();
    let mut files = vec![dir.clone()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("read dir")
                    .map(|e| e.expect("entry").path()),
            );
            continue;
        }
        let bytes = std::fs::read(&path).expect("read file");
        scanned += bytes.len();
        for run in bytes
            .split(|b| !b.is_ascii_digit())
            .filter(|r| r.len() >= 16)
        {
            assert!(
                !run.windows(16).any(|w| pans.contains(w)),
                "clear PAN in {}",
                path.display()
            );
        }
        assert!(
            !bytes.windows(12).any(|w| w == b"=28121010000"),
            "track data in {}",
            path.display()
        );
    }
    assert!(scanned > 0);
    eprintln!(
        "crash test: {} acknowledged sales and {} captures survived {runs} kill -9s",
        acked_sales.len(),
        acked_captures.len()
    );
}
