//! Crash tests of the two tiers: kill -9 the switch at random points while
//! its drainer feeds the archive and memory lets payments go to it,
//! restart it on the same data directory, and check that every
//! acknowledged payment is in archive ∪ memory exactly once.
//!
//! Each round: a pre-authorization and its capture, then pipelined sales
//! on a second connection, killed (-9) at a random point; then a second
//! life that waits (bounded) until memory holds no payment, so every
//! answer below comes from the archive, and checks
//! - a repeat of every acknowledged sale gets the very same answer;
//! - a refund by F90 of some sales of earlier rounds is approved, and the
//!   archive was asked for their originals;
//! - a capture of every acknowledged capture's pre-authorization is
//!   refused as already captured (12).
//!
//! The last life stops cleanly (SIGTERM, exit 0); then the archive is
//! opened directly and read beside the journal's state (its newest
//! snapshot and the records after it, what memory starts from): every
//! acknowledged sale is there exactly once (by F37 + F38) with its amount
//! and exactly its acknowledged refunds, every acknowledged
//! pre-authorization once and captured for its amount, a payment in both
//! is the same payment, and some are only in the archive (memory let them
//! go), so the archive is what kept them.
//!
//! The switch runs from `switch default-config` with small limits
//! ([`PAYMENTS_MAX`], [`IDEMPOTENCY_ENTRIES_MAX`]), a payment retention of
//! 1 s on its real clock and a snapshot every second, so payments and
//! answers leave memory during the run.
//!
//! SQLite (`<data_dir>/archive.sqlite`): `SWITCH_CRASH_RUNS` rounds (20 by
//! default). PostgreSQL (a throwaway server, `archive::testing::PgServer`):
//! `SWITCH_CRASH_PG_RUNS` rounds (20 by default). Each test prints its
//! seed; `SWITCH_CRASH_SEED` replays it. `scripts/crash-loop.sh` runs many
//! more rounds of both.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use engine::Payment;

/// Rounds against SQLite unless `SWITCH_CRASH_RUNS` says otherwise (the
/// issue asks for at least 20 in CI).
const SQLITE_RUNS_DEFAULT: u64 = 20;
/// Rounds against PostgreSQL unless `SWITCH_CRASH_PG_RUNS` says otherwise
/// (the issue asks for at least 20 for both stores).
const PG_RUNS_DEFAULT: u64 = 20;
/// `limits.payments_max`: a round's load can pass 75% of it, where final
/// payments leave memory however recent (once archived).
const PAYMENTS_MAX: i64 = 2_000;
/// `limits.idempotency_entries_max`: small, so generations of answers
/// leave memory during the run and repeats are asked of the archive; far
/// above what the drainer falls behind by, so no sale gets 96 for it.
const IDEMPOTENCY_ENTRIES_MAX: i64 = 20_000;
/// Sales pipelined per round, at least and below.
const SALES_PER_ROUND: (u64, u64) = (300, 1_500);
/// When the load is killed, in ms after it starts, at least and below:
/// from the first answers to after the last (debug build, two cores).
const KILL_AFTER_MS: (u64, u64) = (5, 400);
/// Most refunds of earlier rounds' sales per round.
const REFUNDS_PER_ROUND_MAX: usize = 8;
/// What a pre-authorization holds and what its capture takes.
const PREAUTH_MINOR: u64 = 1_000;
/// The capture of each pre-authorization (over-capture allowed: 20%).
const CAPTURE_MINOR: u64 = 1_100;
/// Bound on memory letting every payment go after a restart: retention
/// 1 s, a pass every 100 ms, the drainer catching up after recovery.
const RETIRE_BOUND: Duration = Duration::from_secs(30);
/// Bound on the next snapshot: one a second, its metric folded in every
/// second.
const SNAPSHOT_BOUND: Duration = Duration::from_secs(10);
/// The merchant of every payment here (`DEMO00000000001`), by index.
const MERCHANT: u32 = 0;

/// A sale the switch acknowledged (00).
struct Sale {
    /// The request.
    req: Req,
    /// The answer.
    resp: Resp,
    /// The round it was acknowledged in.
    run: usize,
    /// The sum of its acknowledged refunds.
    refunded_minor: u64,
}

/// Everything acknowledged so far, across rounds.
#[derive(Default)]
struct Ledger {
    /// Acknowledged sales.
    sales: Vec<Sale>,
    /// Acknowledged pre-authorizations (with their answers), each captured
    /// for [`CAPTURE_MINOR`] (acknowledged too).
    preauths: Vec<(Req, Resp)>,
}

/// One crash test: the store, the rounds, the seed.
struct Crash<'a> {
    /// For messages: "sqlite" or "postgresql".
    name: &'a str,
    /// `archive.url` (empty: SQLite in the data directory).
    url: &'a str,
    /// Rounds.
    runs: usize,
    /// The seed printed.
    seed: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_payments_survive_kill_9_while_draining() {
    let crash = Crash {
        name: "sqlite",
        url: "",
        runs: env_number("SWITCH_CRASH_RUNS", SQLITE_RUNS_DEFAULT) as usize,
        seed: crash_seed(),
    };
    crash.run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_acknowledged_payments_survive_kill_9_while_draining() {
    let (pg, url) = off_runtime(|| {
        let pg = archive::testing::PgServer::new()
            .expect("PostgreSQL for tests (run scripts/install-test-deps.sh)");
        let url = pg.create_database("switch_crash").expect("database");
        (pg, url)
    });
    let crash = Crash {
        name: "postgresql",
        url: &url,
        runs: env_number("SWITCH_CRASH_PG_RUNS", PG_RUNS_DEFAULT) as usize,
        seed: crash_seed(),
    };
    crash.run().await;
    off_runtime(move || drop(pg));
}

impl Crash<'_> {
    async fn run(&self) {
        let (runs, seed, name) = (self.runs, self.seed, self.name);
        assert!(runs > 0, "at least one round");
        eprintln!("crash test ({name}): {runs} runs, SWITCH_CRASH_SEED={seed}");
        let started = Instant::now();
        let mut rng = Rng(seed | 1);
        let dir = data_dir();
        let config_path = dir.with_extension("toml");
        write_config(&self.config(), &config_path);
        let launch = Launch {
            dir: &dir,
            config: Some(&config_path),
            logs: &dir,
            log_level: "info",
        };
        let mut ledger = Ledger::default();
        for run in 0..runs {
            let t0 = Instant::now();
            self.load(&launch, run, &mut rng, &mut ledger).await;
            let t1 = t0.elapsed();
            self.check(&launch, run, run + 1 == runs, &mut rng, &mut ledger)
                .await;
            eprintln!(
                "{name} run {run}: load {t1:?}, restart and check {:?}, {} sales acknowledged so far",
                t0.elapsed() - t1,
                ledger.sales.len()
            );
        }
        let only_archived = self.check_stores(&dir, &ledger);
        eprintln!(
            "crash test ({name}): {} sales and {} pre-authorizations survived {runs} kill -9s, {only_archived} of them only in the archive, in {:?}",
            ledger.sales.len(),
            ledger.preauths.len(),
            started.elapsed()
        );
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&config_path);
    }

    /// `switch default-config` with this test's limits and archive.
    fn config(&self) -> toml::Table {
        let mut config = default_config();
        set(&mut config, "limits", "payments_max", PAYMENTS_MAX);
        set(&mut config, "limits", "payment_retention_s", 1);
        set(
            &mut config,
            "limits",
            "idempotency_entries_max",
            IDEMPOTENCY_ENTRIES_MAX,
        );
        set(&mut config, "journal", "snapshot_interval_s", 1);
        set(&mut config, "archive", "url", self.url);
        config
    }

    /// The first life of a round: a pre-authorization and its capture,
    /// then pipelined sales, killed (-9) at a random point.
    async fn load(&self, launch: &Launch<'_>, run: usize, rng: &mut Rng, ledger: &mut Ledger) {
        let (mut p, mut c) = launch.start(&format!("{run}-0")).await;
        let auth = preauth(&card(rng.next()), PREAUTH_MINOR).set(7, "1123120000");
        let authorized = c.call(&auth).await;
        assert_eq!(authorized.code(), "00", "{}", self.at(run));
        let captured = c.call(&capture(&auth, CAPTURE_MINOR)).await;
        assert_eq!(captured.code(), "00", "{}", self.at(run));
        ledger.preauths.push((auth, authorized));
        let count = rng.range(SALES_PER_ROUND.0, SALES_PER_ROUND.1);
        let sales: Vec<Req> = (0..count)
            .map(|i| sale(&card(rng.next()), 100 + i))
            .collect();
        let kill_after = Duration::from_millis(rng.range(KILL_AFTER_MS.0, KILL_AFTER_MS.1));
        for (req, resp) in pipeline_for(p.iso, &sales, kill_after).await {
            assert_eq!(resp.code(), "00", "{}: a sale refused", self.at(run));
            ledger.sales.push(Sale {
                req,
                resp,
                run,
                refunded_minor: 0,
            });
        }
        p.kill9();
    }

    /// The second life of a round: once memory has let every payment go,
    /// everything acknowledged is asked of it (so of the archive). The
    /// last round's stops cleanly; the others are killed (-9).
    async fn check(
        &self,
        launch: &Launch<'_>,
        run: usize,
        last: bool,
        rng: &mut Rng,
        ledger: &mut Ledger,
    ) {
        let (mut p, mut c) = launch.start(&format!("{run}-1")).await;
        p.wait_metric("switch_payments", RETIRE_BOUND, |n| n == 0.0)
            .await;
        let repeats: Vec<Req> = ledger
            .sales
            .iter()
            .map(|s| s.req.clone().mti("0201"))
            .collect();
        for (s, again) in ledger
            .sales
            .iter()
            .zip(pipeline_all(&mut c, &repeats).await)
        {
            assert_eq!(
                (again.code(), again.text(37), again.text(38), again.text(4)),
                (
                    s.resp.code(),
                    s.resp.text(37),
                    s.resp.text(38),
                    s.resp.text(4)
                ),
                "{}: acknowledged sale {} (round {}) lost or changed",
                self.at(run),
                stan_of(&s.req.fields),
                s.run
            );
        }
        let originals = "switch_archive_lookups_total{what=\"original\"}";
        let payments = "switch_archive_lookups_total{what=\"payment\"}";
        let asked_before = p.metric(originals).await + p.metric(payments).await;
        let earlier = ledger.sales.iter().take_while(|s| s.run < run).count();
        let refunds = REFUNDS_PER_ROUND_MAX.min(earlier);
        for _ in 0..refunds {
            let s = &mut ledger.sales[rng.range(0, earlier as u64) as usize];
            let refunded = c.call(&refund(&s.req, 1)).await;
            assert_eq!(
                refunded.code(),
                "00",
                "{}: a refund of sale {} (round {}) memory let go",
                self.at(run),
                stan_of(&s.req.fields),
                s.run
            );
            s.refunded_minor += 1;
        }
        let asked = p.metric(originals).await + p.metric(payments).await - asked_before;
        // A sale refunded twice in this life is in memory the second time.
        assert!(
            refunds == 0 || asked >= 1.0,
            "{}: {refunds} refunds and the archive was not asked",
            self.at(run)
        );
        for (auth, _) in &ledger.preauths {
            let again = c.call(&capture(auth, PREAUTH_MINOR)).await;
            assert_eq!(
                again.code(),
                "12",
                "{}: an acknowledged capture was lost",
                self.at(run)
            );
        }
        if last {
            // A snapshot of what memory holds now: the journal's state then
            // leaves out what memory let go, which only the archive has.
            let snapshots = "switch_journal_snapshot_seconds_count";
            let before = p.metric(snapshots).await;
            p.wait_metric(snapshots, SNAPSHOT_BOUND, |n| n > before)
                .await;
            let status = p.stop().await;
            assert!(
                status.success(),
                "{}: SIGTERM exit {status}; see {}",
                self.at(run),
                p.log.display()
            );
        } else {
            p.kill9();
        }
    }

    /// With the switch stopped: every acknowledged payment once in the
    /// archive ∪ the journal's state, as acknowledged. Returns how many
    /// are only in the archive (asserted more than none).
    fn check_stores(&self, dir: &Path, ledger: &Ledger) -> usize {
        let archived = off_runtime(|| archived_payments(dir, self.url));
        let journaled = journal_state(dir);
        let mut both: BTreeMap<u64, &Payment> = archived.iter().map(|(id, p)| (*id, p)).collect();
        for (id, p) in &journaled {
            if let Some(a) = archived.get(id) {
                assert_eq!(
                    (a.rrn, a.auth_code, a.authorized_minor, a.created_ms),
                    (p.rrn, p.auth_code, p.authorized_minor, p.created_ms),
                    "{}: payment {id} differs between the archive and the journal",
                    self.name
                );
            }
            // The journal's image is the newer one.
            both.insert(*id, p);
        }
        let mut by_reference: HashMap<(Vec<u8>, Vec<u8>), Vec<&Payment>> = HashMap::new();
        for p in both.values().filter(|p| p.merchant == MERCHANT) {
            by_reference
                .entry((p.rrn.to_vec(), p.auth_code.to_vec()))
                .or_default()
                .push(p);
        }
        let find = |resp: &Resp, what: &str| -> &Payment {
            let key = (resp.fields[&37].clone(), resp.fields[&38].clone());
            match by_reference.get(&key).map(Vec::as_slice) {
                Some([p]) => p,
                found => panic!(
                    "{} (seed {}): acknowledged {what} F37 {} F38 {} found {} times in archive ∪ journal: {:?}",
                    self.name,
                    self.seed,
                    resp.text(37),
                    resp.text(38),
                    found.map_or(0, <[_]>::len),
                    found.unwrap_or_default().iter().map(|p| (p.id, p.created_ms, p.status, p.authorized_minor, p.history.len(), archived.contains_key(&p.id))).collect::<Vec<_>>()
                ),
            }
        };
        let mut only_archived = 0;
        for s in &ledger.sales {
            let p = find(&s.resp, "sale");
            let amount: u64 = s.resp.text(4).parse().expect("F4");
            let refunded: u64 = p
                .refunds
                .iter()
                .filter(|r| !r.reversed)
                .map(|r| r.amount_minor)
                .sum();
            assert_eq!(
                (p.authorized_minor, p.captured_minor, refunded),
                (amount, amount, s.refunded_minor),
                "{} (seed {}): sale {} (round {}, payment {}, F37 {}, {}) amounts (authorized, captured, refunded)",
                self.name,
                self.seed,
                stan_of(&s.req.fields),
                s.run,
                p.id,
                s.resp.text(37),
                if journaled.contains_key(&p.id) { "in the journal's state" } else { "only in the archive" }
            );
            only_archived += usize::from(!journaled.contains_key(&p.id));
        }
        for (_, resp) in &ledger.preauths {
            let p = find(resp, "pre-authorization");
            assert_eq!(
                (p.authorized_minor, p.captured_minor),
                (PREAUTH_MINOR, CAPTURE_MINOR),
                "{} (seed {}): a pre-authorization's amounts",
                self.name,
                self.seed
            );
            only_archived += usize::from(!journaled.contains_key(&p.id));
        }
        assert!(
            only_archived > 0,
            "{}: every acknowledged payment is still in the journal's state; memory let none go",
            self.name
        );
        only_archived
    }

    /// Names the store, round and seed in a failure.
    fn at(&self, run: usize) -> String {
        format!("{} run {run} (seed {})", self.name, self.seed)
    }
}

/// Every payment of [`MERCHANT`] in the archive (`url`, or SQLite in
/// `dir`), by id, paged through as `switch export` does.
fn archived_payments(dir: &Path, url: &str) -> BTreeMap<u64, Payment> {
    let store: Box<dyn archive::Archive> = if url.is_empty() {
        Box::new(archive::SqliteArchive::open(dir).expect("the SQLite archive opens"))
    } else {
        Box::new(archive::PgArchive::connect(url).expect("the PostgreSQL archive connects"))
    };
    let mut payments = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(
                &[MERCHANT],
                &engine::ListFilter::default(),
                cursor,
                archive::PAGE_PAYMENTS_MAX,
            )
            .expect("the archive lists");
        cursor = page.payments.last().map(|p| p.id);
        for p in page.payments {
            assert!(payments.insert(p.id, p).is_none(), "a payment listed twice");
        }
        if !page.more {
            return payments;
        }
    }
}

/// What memory starts from: the payments of the journal's newest snapshot
/// and of every record after it, each as last recorded.
fn journal_state(dir: &Path) -> BTreeMap<u64, Payment> {
    let mut payments = BTreeMap::new();
    journal::read_state(&journal::OsStorage, &dir.join("journal"), |item| {
        match item {
            journal::Replay::Snapshot { bytes, .. } => {
                for p in engine::record::decode_snapshot(bytes)?.payments {
                    payments.insert(p.id, p);
                }
            }
            journal::Replay::Record(r) => {
                let rec = engine::record::decode(r.payload)?;
                payments.insert(rec.payment.id, rec.payment);
            }
        }
        Ok(())
    })
    .expect("the journal reads");
    payments
}
