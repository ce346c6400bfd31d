//! Forty simulated days of mixed traffic through the engine on an
//! injected clock, its journal drained into a real SQLite archive as the
//! switch's drainer does: memory holds only what can still change, and
//! every lookup that memory can no longer answer is answered by the
//! archive. At the end: a refund of a 35-day-old sale is approved, a
//! repeat whose answer left memory within the window gets the very same
//! answer, and every payment of the period is found exactly once.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use archive::{Archive, SqliteArchive, BATCH_RECORDS_MAX, PAGE_PAYMENTS_MAX};
use codecs::card::{Pan, TokenKey};
use codecs::iso8583::datetime::{civil_from_days, Expiry};
use codecs::iso8583::f90::OriginalData;
use engine::{
    Channel, Code, Command, Engine, Fetched, Journal, ListFilter, Merchant, MessageKey, Op,
    OriginalRef, Query, QueryReply, Reply, Request, Settings, Wait,
};

/// 2026-01-05T00:00:00Z.
const START_MS: u64 = 1_767_571_200_000;
const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;
const DAYS: u64 = 40;
const MID: &[u8; 15] = b"DEMO00000000001";
const TERMINALS: [[u8; 8]; 2] = [*b"DEMO0001", *b"DEMO0002"];
/// Final payments stay in memory this long after their last change.
const RETENTION_MS: u64 = 5 * MINUTE_MS;
const WINDOW_MS: u64 = 3_600_000;
/// Small tables, so memory must let go many times over the period.
const PAYMENTS_MAX: usize = 2_000;
const ANSWERS_MAX: usize = 1_000;

/// The journal: every record, its seq its position.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

impl Journal for Recorder {
    fn append(&self, _record_type: u8, payload: &[u8]) -> Result<u64, Code> {
        let mut records = self.0.lock().expect("lock");
        records.push(payload.to_vec());
        Ok(records.len() as u64)
    }
}

/// A message sent, to refer to or repeat later.
#[derive(Clone, Copy, Debug)]
struct Sent {
    op: Op,
    terminal: usize,
    stan: u32,
    f7: [u8; 10],
    amount: u64,
    reply: Reply,
}

struct World {
    engine: Engine,
    journal: Recorder,
    archive: SqliteArchive,
    /// Records applied to the archive.
    drained: usize,
    now_ms: u64,
    stan: u32,
    /// Every payment a reply named.
    payments: BTreeSet<u64>,
    lookups: usize,
    _dir: tempfile::TempDir,
}

fn f7_of(ms: u64) -> [u8; 10] {
    let (_, month, day) = civil_from_days(ms / DAY_MS);
    let s = ms / 1000 % 86_400;
    let text = format!(
        "{month:02}{day:02}{:02}{:02}{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    text.as_bytes().try_into().expect("10 digits")
}

fn number(digits: &[u8]) -> u64 {
    digits.iter().fold(0, |v, d| v * 10 + u64::from(d - b'0'))
}

/// An engine of the test's merchant and limits, at `now_ms`, without a
/// journal.
fn new_engine(now_ms: u64) -> Engine {
    let merchant = Merchant {
        id: *MID,
        terminals: TERMINALS.to_vec(),
        enabled: true,
        currencies: vec![978],
        over_capture_pct: 10,
        refunds_allowed: true,
        moto_allowed: true,
        hold_period_ms: 7 * DAY_MS,
        auto_capture_ms: None,
    };
    let settings = Settings {
        merchants: vec![merchant],
        payments_max: PAYMENTS_MAX,
        idempotency_entries_max: ANSWERS_MAX,
        idempotency_window_ms: WINDOW_MS,
        routing: Default::default(),
        stand_in: Default::default(),
        forwards_max: 1_000,
        saf_max: 1_000,
    };
    let key = TokenKey::new(b"forty days");
    let policy = risk::Policy::embedded(&engine::tokenizer(&key));
    Engine::new(settings, key, policy, now_ms)
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut engine = new_engine(START_MS);
        let journal = Recorder::default();
        engine.set_journal(Box::new(journal.clone()));
        World {
            engine,
            journal,
            archive: SqliteArchive::open(dir.path()).expect("archive"),
            drained: 0,
            now_ms: START_MS,
            stan: 0,
            payments: BTreeSet::new(),
            lookups: 0,
            _dir: dir,
        }
    }

    fn request<'a>(&self, s: &Sent, original: Option<OriginalRef>, pan: &'a [u8]) -> Request<'a> {
        let mti = match s.op {
            Op::PreAuth => 100,
            Op::Capture => 220,
            Op::Reversal => 400,
            _ => 200,
        };
        Request {
            op: s.op,
            key: Some(MessageKey {
                mti,
                terminal: TERMINALS[s.terminal],
                stan: s.stan,
                transmission: number(&s.f7),
            }),
            repeat: false,
            content_crc: s.stan ^ (s.amount as u32),
            merchant_id: MID,
            terminal_id: TERMINALS[s.terminal],
            pan: original.is_none().then(|| Pan::new(pan)).flatten(),
            expiry: Expiry::parse(b"3012"),
            amount_minor: s.amount,
            currency: 978,
            original,
            replacement_minor: None,
            channel: Channel::CardPresent,
            eci: None,
            rrn: None,
            extras: None,
            keep_open: false,
        }
    }

    /// Applies `req` now, answering the engine's lookups from the archive
    /// as the switch does.
    fn apply(&mut self, req: Request<'_>) -> Reply {
        let mut fetched = Fetched::default();
        let mut reply = self.engine.apply(Command::Message(req), self.now_ms);
        for _ in 0..3 {
            let Wait::Archive(fetch) = reply.wait else {
                break;
            };
            self.lookups += 1;
            fetched.archived_seq = self.drained as u64;
            archive::fetch(&self.archive, fetch, &mut fetched).expect("archive lookup");
            let resume = Command::Resume {
                request: req,
                fetched: &fetched,
            };
            reply = self.engine.apply(resume, self.now_ms);
        }
        assert!(
            !matches!(reply.wait, Wait::Archive(_)),
            "at most two lookups"
        );
        reply
    }

    /// Sends a new message of `op` from `terminal`.
    fn send(&mut self, op: Op, terminal: usize, amount: u64, original: Option<&Sent>) -> Sent {
        self.stan = self.stan % 999_999 + 1;
        let mut s = Sent {
            op,
            terminal,
            stan: self.stan,
            f7: f7_of(self.now_ms),
            amount,
            reply: Reply {
                code: Code::APPROVED,
                rrn: [b'0'; 12],
                auth_code: None,
                payment_id: None,
                wait: Wait::Nothing,
                record_seq: 0,
                count: 0,
                again: false,
            },
        };
        let reference = original.map(f90);
        // Distinct cards, so velocity rules do not decline.
        let pan = luhn_pan(u64::from(self.stan) + self.now_ms / MINUTE_MS * 7);
        let req = self.request(&s, reference, &pan);
        s.reply = self.apply(req);
        if op.authorizes() {
            self.payments.insert(
                s.reply
                    .payment_id
                    .expect("an authorization names its payment"),
            );
        }
        s
    }

    /// The archive drainer: what the journal holds, in batches.
    fn drain(&mut self) -> u64 {
        let records = self.journal.0.lock().expect("lock").clone();
        for chunk in records[self.drained..].chunks(BATCH_RECORDS_MAX) {
            let first = self.drained as u64 + 1;
            let batch: Vec<(u64, &[u8])> = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| (first + i as u64, r.as_slice()))
                .collect();
            self.archive.apply(&batch).expect("archive apply");
            self.drained += chunk.len();
        }
        self.drained as u64
    }

    /// One minute passes: the drainer runs (every fifth minute: one
    /// fsync each), then the timers.
    fn minute(&mut self) {
        self.now_ms += MINUTE_MS;
        let archived_seq = if self.now_ms / MINUTE_MS % 5 == 0 {
            self.drain()
        } else {
            self.drained as u64
        };
        self.engine
            .apply(Command::Tick { archived_seq }, self.now_ms);
        let cutoff_ms = self.now_ms - RETENTION_MS;
        self.engine.apply(
            Command::Retire {
                cutoff_ms,
                archived_seq,
            },
            self.now_ms,
        );
    }

    fn in_memory(&self, id: u64) -> bool {
        matches!(
            self.engine.query(Query::Payment { scope: &[0], id }),
            QueryReply::Payment(Some(_))
        )
    }
}

/// F90 naming `s`.
fn f90(s: &Sent) -> OriginalRef {
    let mti = match s.op {
        Op::PreAuth => "0100",
        Op::Capture => "0220",
        _ => "0200",
    };
    let text = format!(
        "{mti}{:06}{}{}",
        s.stan,
        std::str::from_utf8(&s.f7).expect("digits"),
        "0".repeat(22)
    );
    OriginalRef::Message(OriginalData::parse(text.as_bytes()).expect("F90"))
}

/// A 16-digit PAN with a valid check digit, from `n`.
fn luhn_pan(n: u64) -> Vec<u8> {
    let body = format!("411111{:09}", n % 1_000_000_000);
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    format!("{body}{check}").into_bytes()
}

#[test]
fn forty_days_then_an_old_refund_a_repeat_from_the_archive_and_a_full_export() {
    let mut w = World::new();
    let mut sales: Vec<Sent> = Vec::new();
    let mut open_holds: Vec<Sent> = Vec::new();
    let mut by_day: HashMap<u64, Vec<Sent>> = HashMap::new();
    let mut peak_in_memory = 0;
    for minute in 0..DAYS * 1_440 {
        let day = minute / 1_440;
        // About 290 authorizations a day, with captures and refunds.
        if minute % 5 == 0 {
            let terminal = (minute / 5 % 2) as usize;
            let amount = 1_000 + minute % 9_000;
            if minute % 3 == 0 {
                let s = w.send(Op::PreAuth, terminal, amount, None);
                if s.reply.code == Code::APPROVED {
                    open_holds.push(s);
                }
            } else {
                let s = w.send(Op::Sale, terminal, amount, None);
                if s.reply.code == Code::APPROVED {
                    sales.push(s);
                    by_day.entry(day).or_default().push(s);
                }
            }
        }
        // Capture half of the holds an hour after they were placed; the
        // rest expire after 7 days through the timers.
        if minute % 10 == 7 && open_holds.len() > 12 {
            let hold = open_holds.remove(0);
            if hold.stan % 2 == 0 {
                let c = w.send(Op::Capture, hold.terminal, hold.amount, Some(&hold));
                assert_eq!(c.reply.code, Code::APPROVED, "capture of {hold:?}");
            }
        }
        // Refund a sale of 2 days ago, now and then (the archive answers).
        if minute % 240 == 120 && day >= 2 {
            let slot = (minute % 1_440 / 240) as usize;
            if let Some(old) = by_day
                .get(&(day - 2))
                .and_then(|v| v.get(slot + 1))
                .copied()
            {
                let r = w.send(Op::Refund, old.terminal, old.amount / 2, Some(&old));
                assert_eq!(r.reply.code, Code::APPROVED, "refund of {old:?}");
            }
        }
        w.minute();
        let QueryReply::Stats(stats) = w.engine.query(Query::Stats) else {
            panic!("stats")
        };
        peak_in_memory = peak_in_memory.max(stats.payments);
    }
    assert!(w.payments.len() > 10_000, "{} payments", w.payments.len());
    assert!(
        peak_in_memory < PAYMENTS_MAX,
        "memory peaked at {peak_in_memory} of {PAYMENTS_MAX}: it must let go"
    );
    assert!(w.lookups > 0, "the archive answered some lookups");

    // A refund of a 35-day-old sale: only the archive has it.
    let old = by_day[&(DAYS - 35)][0];
    let id = old.reply.payment_id.expect("id");
    assert!(!w.in_memory(id), "a 35-day-old sale is no longer in memory");
    let refund = w.send(Op::Refund, old.terminal, old.amount, Some(&old));
    assert_eq!(refund.reply.code, Code::APPROVED);
    assert_eq!(refund.reply.payment_id, Some(id));
    assert!(w.in_memory(id), "the refunded payment is back in memory");

    // A burst fills memory's answers; the first answer leaves memory within
    // the window, and its repeat gets the very same answer from the archive.
    let first = w.send(Op::Sale, 0, 4_242, None);
    for _ in 0..ANSWERS_MAX {
        w.send(Op::Sale, 1, 1_000, None);
        w.drain();
        w.engine.apply(
            Command::Tick {
                archived_seq: w.drained as u64,
            },
            w.now_ms,
        );
    }
    let lookups = w.lookups;
    let pan = luhn_pan(1);
    let mut again = w.request(&first, None, &pan);
    again.repeat = true;
    let repeat = w.apply(again);
    assert_eq!(
        w.lookups,
        lookups + 1,
        "the answer was asked of the archive"
    );
    assert_eq!(
        (repeat.code, repeat.rrn, repeat.auth_code),
        (first.reply.code, first.reply.rrn, first.reply.auth_code)
    );

    // Every payment of the period, exactly once: the archive's pages and
    // what memory holds that is not archived yet.
    w.drain();
    let mut seen = BTreeSet::new();
    let mut cursor = None;
    loop {
        let page = w
            .archive
            .list(&[0], &ListFilter::default(), cursor, PAGE_PAYMENTS_MAX)
            .expect("list");
        for p in &page.payments {
            assert!(seen.insert(p.id), "payment {} listed twice", p.id);
        }
        cursor = page.payments.last().map(|p| p.id);
        if !page.more {
            break;
        }
    }
    let missing: Vec<_> = w.payments.difference(&seen).take(5).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
    assert_eq!(seen.len(), w.payments.len());
}

/// A second engine recovered from the first's snapshot and journal, with
/// the records the archive holds not put back in memory.
fn recover(w: &World, snapshot: Option<(u64, &[u8])>) -> Engine {
    let mut e = new_engine(w.now_ms);
    let floor = w.drained as u64;
    let from = match snapshot {
        Some((seq, bytes)) => {
            e.replay_snapshot(seq, bytes).expect("snapshot");
            seq
        }
        None => 0,
    };
    let records = w.journal.0.lock().expect("lock").clone();
    for (i, r) in records.iter().enumerate().skip(from as usize) {
        let seq = i as u64 + 1;
        if seq <= floor {
            e.replay_archived_record(seq, engine::record::RECORD_PAYMENT, r)
                .expect("archived record");
        } else {
            e.replay_record(seq, engine::record::RECORD_PAYMENT, r)
                .expect("record");
        }
    }
    e.assume_answers_archived_through(w.now_ms);
    e.set_journal(Box::new(w.journal.clone()));
    e
}

#[test]
fn recovery_leaves_archived_payments_in_the_archive_and_answers_as_before() {
    let mut w = World::new();
    let hold = w.send(Op::PreAuth, 0, 5_000, None);
    let mut snapshot = Vec::new();
    w.engine.encode_snapshot(&mut snapshot);
    let snapshot_seq = w.journal.0.lock().expect("lock").len() as u64;
    // After the snapshot: the hold is captured, and sales are answered.
    let capture = w.send(Op::Capture, 0, 5_000, Some(&hold));
    assert_eq!(capture.reply.code, Code::APPROVED);
    let sales: Vec<Sent> = (0..50)
        .map(|i| w.send(Op::Sale, 1, 100 + i, None))
        .collect();
    w.drain();
    let last = w.send(Op::Sale, 1, 999, None);
    let highest_id = last.reply.payment_id.expect("id");

    // Everything but the last sale is archived: recovery keeps it out of
    // memory, but brings the snapshot's hold up to date with its capture.
    w.engine = recover(&w, Some((snapshot_seq, &snapshot)));
    let QueryReply::Stats(stats) = w.engine.query(Query::Stats) else {
        panic!("stats")
    };
    assert_eq!(
        stats.payments, 2,
        "the snapshot's hold and the unarchived sale"
    );
    let again = w.send(Op::Capture, 0, 5_000, Some(&hold));
    assert_eq!(
        again.reply.code,
        Code::INVALID_TRANSACTION,
        "captured once only"
    );
    // A repeat of an archived answer gets it from the archive.
    let lookups = w.lookups;
    let pan = luhn_pan(7);
    let mut repeat = w.request(&sales[3], None, &pan);
    repeat.repeat = true;
    let r = w.apply(repeat);
    assert_eq!(w.lookups, lookups + 1, "asked the archive");
    assert_eq!((r.code, r.rrn), (sales[3].reply.code, sales[3].reply.rrn));
    // New payments get new ids.
    let next = w.send(Op::Sale, 1, 1_234, None);
    assert!(next.reply.payment_id.expect("id") > highest_id);
    // A refund of an archived sale is found there.
    let refund = w.send(Op::Refund, 1, 10, Some(&sales[0]));
    assert_eq!(refund.reply.code, Code::APPROVED);
}

#[test]
fn a_copy_read_before_a_change_memory_let_go_is_read_again() {
    let mut w = World::new();
    let sale = w.send(Op::Sale, 0, 1_000, None);
    let id = sale.reply.payment_id.expect("id");
    // Archived and let go.
    w.drain();
    w.now_ms += 10 * MINUTE_MS;
    w.minute();
    assert!(!w.in_memory(id));
    // A lookup reads the sale as it is now...
    let pan = luhn_pan(3);
    let late = Sent {
        op: Op::Refund,
        stan: 900_001,
        amount: 200,
        ..sale
    };
    let req = w.request(&late, Some(f90(&sale)), &pan);
    let Wait::Archive(fetch) = w.engine.apply(Command::Message(req), w.now_ms).wait else {
        panic!("memory let the sale go: the archive is asked");
    };
    let mut stale = Fetched {
        archived_seq: w.drained as u64,
        ..Fetched::default()
    };
    archive::fetch(&w.archive, fetch, &mut stale).expect("lookup");
    // ... then another refund changes it, is archived and let go.
    let first = w.send(Op::Refund, 0, 900, Some(&sale));
    assert_eq!(first.reply.code, Code::APPROVED);
    w.drain();
    w.now_ms += 10 * MINUTE_MS;
    w.minute();
    assert!(!w.in_memory(id));
    // The older copy is not brought back (it lacks the first refund): the
    // archive is asked again, and the second refund sees the first.
    let resumed = w.engine.apply(
        Command::Resume {
            request: req,
            fetched: &stale,
        },
        w.now_ms,
    );
    assert!(matches!(resumed.wait, Wait::Archive(_)), "{resumed:?}");
    let again = w.apply(req);
    assert_eq!(
        again.code,
        Code::INVALID_AMOUNT,
        "200 on the stale copy (nothing refunded) would pass; 900 + 200 of 1,000 does not"
    );
}
