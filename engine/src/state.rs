//! In-memory payment state: sharded maps (no global lock), indexes from
//! message keys to payments, and the queue of holds waiting to end.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crossbeam::queue::SegQueue;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::code::Code;
use crate::lifecycle::{Payment, Status};

/// Where an original message's effect lives: a payment, or one of its refunds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The payment.
    pub payment: u64,
    /// The refund, when the original was a refund.
    pub refund: Option<u8>,
}

/// How an original message is found: merchant, MTI without repeat, STAN, F7
/// (what F90 carries), as the contract requires, within one merchant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OriginalKey {
    /// Merchant index.
    pub merchant: u32,
    /// MTI without the repeat digit, as a number (100, 200, 220).
    pub mti: u16,
    /// F11.
    pub stan: u32,
    /// F7 as a number (MMDDhhmmss).
    pub transmission: u64,
}

/// A pre-authorization waiting for its hold to end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hold {
    /// When the hold ends (expiry or auto-capture), ms since the epoch.
    pub(crate) due_ms: u64,
    /// The payment.
    pub(crate) payment: u64,
}

/// A payment in the order [`State::retire`] considers them.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    /// When it came, or last changed when it was put back in the queue.
    at_ms: u64,
    /// The payment.
    payment: u64,
}

/// An open pre-authorization [`State::retire`] let go: its hold leaves
/// the timers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenHold {
    /// The payment.
    pub(crate) payment: u64,
    /// Its merchant.
    pub(crate) merchant: u32,
    /// When its hold period started (creation, or its last incremental
    /// authorization).
    pub(crate) hold_from_ms: u64,
}

/// Most payments [`State::retire`] looks at in one pass, so a pass is
/// bounded however many there are (open pre-authorizations go back to the
/// end of the queue).
pub(crate) const RETIRE_PER_PASS_MAX: usize = 1 << 20;

/// Above this share of `limits.payments_max` (in %), [`State::retire`]
/// takes final, archived payments however recent: memory is for what can
/// change, and the archive answers for the rest.
pub(crate) const RETIRE_PRESSURE_PCT: usize = 75;

/// The hasher of every in-memory map: foldhash, seeded per process. SipHash
/// (std's) was 2% of the switch's CPU under load for no gain: the keys are
/// small and a per-process seed already keeps collisions unpredictable.
pub(crate) type MapHasher = foldhash::fast::RandomState;

/// Shards of each in-memory map (a power of two). Many small shards keep
/// two threads off each other's lock and bound the pause of a shard that
/// grows: it rehashes 1/`MAP_SHARDS` of the map, not an eighth.
pub(crate) const MAP_SHARDS: usize = 256;

/// Entries each map is sized for at start (or its limit, if smaller):
/// 2^20 slots filled to hashbrown's 7/8, so the first 917,504 entries never
/// wait for a shard to grow (growing from 65,536 was a third of the
/// kernel's page clearing in a profile of the first 500,000
/// authorizations). Untouched room costs address space, not memory; the
/// control bytes (one per slot) are written at start, 1 MiB per map.
pub(crate) const MAP_ENTRIES_INITIAL: usize = (1 << 20) / 8 * 7;

/// A map of the state, sharded and sized as above.
pub(crate) fn new_map<K: Eq + std::hash::Hash, V>(entries_max: usize) -> DashMap<K, V, MapHasher> {
    DashMap::with_capacity_and_hasher_and_shard_amount(
        entries_max.min(MAP_ENTRIES_INITIAL),
        MapHasher::default(),
        MAP_SHARDS,
    )
}

/// All payments and their indexes.
pub(crate) struct State {
    /// Payments by id, boxed: a map entry is 16 bytes, so growing a shard
    /// moves pointers, not 200-byte payments.
    payments: DashMap<u64, Box<Payment>, MapHasher>,
    /// Payments held: [`DashMap::len`] would take every shard's lock.
    payments_len: AtomicUsize,
    /// Payments held by status ([`crate::lifecycle::status_record_code`]), kept as payments come,
    /// change and go: the `switch_payments` gauge is read on every scrape,
    /// and walking 1.8 M payments for it held a runtime worker 0.15–0.5 s.
    by_status: [AtomicU64; Status::ALL.len()],
    /// Payments in the order they came (created or read back), with when:
    /// [`State::retire`] takes them from the front. One entry per payment
    /// held (a payment goes back in only when taken out), so bounded by
    /// `limits.payments_max`, plus the payments rolled back since the last
    /// pass.
    arrivals: SegQueue<Arrival>,
    /// The arrival [`State::retire`] stopped at (too recent, or not yet
    /// archived), taken first on the next pass; one pass at a time.
    retire_front: Mutex<Option<Arrival>>,
    /// Original message → payment (and refund).
    by_original: DashMap<OriginalKey, Target, MapHasher>,
    /// (merchant, F37, F38) → payment, for captures that reference those.
    by_rrn: DashMap<(u32, [u8; 12], [u8; 6]), u64, MapHasher>,
    /// Next payment id.
    next_id: AtomicU64,
    /// Cluster mode: ids come only from reserved blocks
    /// ([`State::take_ids_from_blocks`]); an id seen in a replayed or
    /// fetched payment does not move `next_id`.
    ids_from_blocks: std::sync::atomic::AtomicBool,
    /// Holds in order of creation per push; drained by the sweeper.
    holds: SegQueue<Hold>,
    /// Most payments held (`limits.payments_max`).
    payments_max: usize,
    /// The highest archive watermark a retire pass let a payment go at: a
    /// copy read from the archive at a lower watermark may predate a change
    /// memory had (see [`crate::Fetched::archived_seq`]).
    retired_through: AtomicU64,
}

impl State {
    /// An empty state holding at most `payments_max` payments.
    pub(crate) fn new(payments_max: usize) -> Self {
        State {
            payments: new_map(payments_max),
            payments_len: AtomicUsize::new(0),
            by_status: Default::default(),
            arrivals: SegQueue::new(),
            retire_front: Mutex::new(None),
            by_original: new_map(payments_max),
            by_rrn: new_map(payments_max),
            next_id: AtomicU64::new(1),
            ids_from_blocks: std::sync::atomic::AtomicBool::new(false),
            holds: SegQueue::new(),
            payments_max,
            retired_through: AtomicU64::new(0),
        }
    }

    /// A fresh payment id.
    pub(crate) fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes sure ids allocated later are above `id` (recovery).
    pub(crate) fn bump_id(&self, id: u64) {
        self.next_id.fetch_max(id + 1, Ordering::Relaxed);
    }

    /// [`State::bump_id`] for a payment this engine did not make now (a
    /// replayed image, one read back from the archive): on a single node
    /// its id was this engine's; in cluster mode it may be another node's,
    /// in that node's block, and ids are only ever taken from this node's
    /// own blocks ([`State::take_ids_from_blocks`]).
    fn bump_seen(&self, id: u64) {
        if !self.ids_from_blocks.load(Ordering::Relaxed) {
            self.bump_id(id);
        }
    }

    /// Cluster mode: from now on only [`State::bump_id`] (a reserved block)
    /// moves the next id, never an id seen in a replayed or fetched
    /// payment. Before, a node that loaded or read back another node's
    /// payment moved its counter into that node's block and made the same
    /// ids (two payments of one id, seen in the drain test).
    pub(crate) fn take_ids_from_blocks(&self) {
        self.ids_from_blocks.store(true, Ordering::Relaxed);
    }

    /// Payments held.
    pub(crate) fn len(&self) -> usize {
        self.payments_len.load(Ordering::Relaxed)
    }

    /// Most payments held (`limits.payments_max`).
    pub(crate) fn len_max(&self) -> usize {
        self.payments_max
    }

    /// Counts a payment in `status` (`came`) or out of it.
    fn count(&self, status: Status, came: bool) {
        if let Some(c) = self
            .by_status
            .get(usize::from(crate::lifecycle::status_record_code(status)))
        {
            if came {
                c.fetch_add(1, Ordering::Relaxed);
            } else {
                c.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts a payment that came at `at_ms` and queues it for
    /// [`State::retire`].
    fn came(&self, status: Status, id: u64, at_ms: u64) {
        self.count(status, true);
        self.arrivals.push(Arrival { at_ms, payment: id });
    }

    /// Adds a payment, runs `journal` on it under its shard's lock (so
    /// the record is made, and its sequence kept, without looking the
    /// payment up again), then indexes it; returns what `journal` returned.
    ///
    /// # Errors
    /// 96 when [`Self::len`] is at `payments_max`.
    pub(crate) fn insert<R>(
        &self,
        payment: Payment,
        key: Option<OriginalKey>,
        hold_due_ms: Option<u64>,
        journal: impl FnOnce(&mut Payment) -> R,
    ) -> Result<R, Code> {
        // Counted before inserting, so racing inserts cannot pass the limit.
        if self.payments_len.fetch_add(1, Ordering::Relaxed) >= self.payments_max {
            self.payments_len.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("switch_limit_reached_total", "limit" => "payments_max").increment(1);
            return Err(Code::SYSTEM_MALFUNCTION);
        }
        // The payment first, its index entries after: `retire` drops index
        // entries whose payment it cannot find, so an entry written before
        // its payment could be dropped by a retire running in between. No
        // other map is touched while the payment's lock is held (`retire`
        // takes an index lock, then a payment lock).
        let id = payment.id;
        let (status, created_ms) = (payment.status, payment.created_ms);
        let rrn_key = (payment.status != Status::Declined).then_some((
            payment.merchant,
            payment.rrn,
            payment.auth_code,
        ));
        self.bump_id(id);
        let journaled = match self.payments.entry(id) {
            Entry::Vacant(v) => {
                self.came(status, id, created_ms);
                journal(&mut v.insert(Box::new(payment)))
            }
            Entry::Occupied(mut o) => {
                // Ids are fresh: a replaced payment would be a bug, but
                // keep the counts true.
                self.payments_len.fetch_sub(1, Ordering::Relaxed);
                self.count(o.get().status, false);
                self.came(status, id, created_ms);
                o.insert(Box::new(payment));
                journal(o.get_mut())
            }
        };
        if let Some(k) = rrn_key {
            self.by_rrn.insert(k, id);
        }
        if let Some(k) = key {
            self.by_original.insert(
                k,
                Target {
                    payment: id,
                    refund: None,
                },
            );
        }
        if let Some(due_ms) = hold_due_ms {
            self.holds.push(Hold {
                due_ms,
                payment: id,
            });
        }
        Ok(journaled)
    }

    /// Removes a payment that could not be journaled, with its index entries.
    pub(crate) fn remove(&self, id: u64, key: Option<OriginalKey>) {
        if let Some((_, p)) = self.payments.remove(&id) {
            self.payments_len.fetch_sub(1, Ordering::Relaxed);
            self.count(p.status, false);
            self.by_rrn.remove(&(p.merchant, p.rrn, p.auth_code));
        }
        if let Some(k) = key {
            self.by_original.remove(&k);
        }
    }

    /// Puts a recovered payment image in place (replay: last image wins).
    pub(crate) fn restore(&self, payment: Payment) {
        let id = payment.id;
        if payment.status != Status::Declined {
            self.by_rrn
                .insert((payment.merchant, payment.rrn, payment.auth_code), id);
        }
        self.bump_seen(id);
        let status = payment.status;
        let at_ms = last_change_ms(&payment);
        match self.payments.insert(id, Box::new(payment)) {
            None => {
                self.payments_len.fetch_add(1, Ordering::Relaxed);
                self.came(status, id, at_ms);
            }
            Some(old) => {
                self.count(old.status, false);
                self.count(status, true);
            }
        }
    }

    /// Puts a payment read back from the archive in memory, unless memory
    /// holds it already (memory is never older than the archive). Counted
    /// against `limits.payments_max` like a new one.
    ///
    /// # Errors
    /// 96 when memory is full.
    pub(crate) fn bring_back(&self, payment: Payment) -> Result<(), Code> {
        if self.payments.contains_key(&payment.id) {
            return Ok(());
        }
        if self.payments_len.load(Ordering::Relaxed) >= self.payments_max {
            metrics::counter!("switch_limit_reached_total", "limit" => "payments_max").increment(1);
            return Err(Code::SYSTEM_MALFUNCTION);
        }
        let id = payment.id;
        let rrn_key = (payment.merchant, payment.rrn, payment.auth_code);
        let (status, at_ms) = (payment.status, last_change_ms(&payment));
        if let Entry::Vacant(v) = self.payments.entry(id) {
            self.payments_len.fetch_add(1, Ordering::Relaxed);
            self.came(status, id, at_ms);
            v.insert(Box::new(payment));
        }
        if status != Status::Declined {
            self.by_rrn.insert(rrn_key, id);
        }
        self.bump_seen(id);
        Ok(())
    }

    /// Queues a hold whose due time moved (an incremental authorization
    /// restarted it): the timers end it then; the entry of its earlier due
    /// time finds the hold not yet due and leaves it.
    pub(crate) fn queue_hold(&self, hold: Hold) {
        self.holds.push(hold);
    }

    /// Queues the hold of every uncaptured payment (after recovery).
    pub(crate) fn requeue_holds(&self, due: impl Fn(&Payment) -> u64) {
        for p in self.payments.iter() {
            if p.status == Status::Uncaptured {
                self.holds.push(Hold {
                    due_ms: due(&p),
                    payment: p.id,
                });
            }
        }
    }

    /// Every index entry (snapshots).
    pub(crate) fn for_each_index(&self, mut f: impl FnMut(&OriginalKey, &Target)) {
        for e in self.by_original.iter() {
            f(e.key(), e.value());
        }
    }

    /// Indexes a later message (capture, refund) under its own key.
    pub(crate) fn index(&self, key: OriginalKey, target: Target) {
        self.by_original.insert(key, target);
    }

    /// The target of an original message.
    pub(crate) fn find(&self, key: &OriginalKey) -> Option<Target> {
        self.by_original.get(key).map(|t| *t)
    }

    /// The payment approved with (F37, F38) at `merchant`.
    pub(crate) fn find_by_rrn(
        &self,
        merchant: u32,
        rrn: [u8; 12],
        auth_code: [u8; 6],
    ) -> Option<u64> {
        self.by_rrn.get(&(merchant, rrn, auth_code)).map(|id| *id)
    }

    /// Runs `f` on payment `id` under its shard's lock.
    pub(crate) fn with_payment<R>(&self, id: u64, f: impl FnOnce(&mut Payment) -> R) -> Option<R> {
        self.payments.get_mut(&id).map(|mut p| {
            let before = p.status;
            let out = f(&mut p);
            if p.status != before {
                self.count(before, false);
                self.count(p.status, true);
            }
            out
        })
    }

    /// Lets every payment of a merchant `of` says go, whatever its state;
    /// returns how many. Its index entries stay: a follow-up that finds one
    /// reads the payment from the archive, as after [`Self::retire`].
    pub(crate) fn forget_where(&self, of: impl Fn(u32) -> bool) -> usize {
        let mut gone = Vec::new();
        self.payments.retain(|_, p| {
            if of(p.merchant) {
                gone.push((p.status, (p.merchant, p.rrn, p.auth_code)));
                false
            } else {
                true
            }
        });
        for (status, rrn_key) in &gone {
            self.payments_len.fetch_sub(1, Ordering::Relaxed);
            self.count(*status, false);
            self.by_rrn.remove(rrn_key);
        }
        gone.len()
    }

    /// Whether a copy read from the archive at watermark `archived_seq`
    /// may predate a change memory had of a payment it let go since.
    pub(crate) fn may_be_stale(&self, archived_seq: u64) -> bool {
        archived_seq < self.retired_through.load(Ordering::Acquire)
    }

    /// Whether payment `id` is in memory.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.payments.contains_key(&id)
    }

    /// A copy of payment `id`.
    pub(crate) fn get(&self, id: u64) -> Option<Payment> {
        self.payments.get(&id).map(|p| Payment::clone(&p))
    }

    /// Takes the holds queued since the last call (the sweeper keeps them).
    pub(crate) fn drain_new_holds(&self, into: &mut Vec<Hold>, max: usize) {
        while into.len() < max {
            match self.holds.pop() {
                Some(h) => into.push(h),
                None => break,
            }
        }
    }

    /// Payments held by status (for the gauge), without walking them.
    pub(crate) fn count_by_status(&self) -> [u64; Status::ALL.len()] {
        self.by_status.each_ref().map(|c| c.load(Ordering::Relaxed))
    }

    /// Every payment (snapshots, exports); takes each shard's lock in turn.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Payment)) {
        for p in self.payments.iter() {
            f(&p);
        }
    }

    /// Drops from memory payments in a final state whose last change was
    /// before `cutoff_ms` (or, while memory is above [`RETIRE_PRESSURE_PCT`]
    /// of its limit, any payment, open pre-authorizations included, which
    /// are added to `open`), provided the archive holds their last change (`journal_seq` at or below `archived_seq`);
    /// returns how many went. Takes payments in the order they came, at
    /// most [`RETIRE_PER_PASS_MAX`]; stops at the first that is too recent
    /// or not archived yet, so a pass costs little when nothing is due.
    /// Open pre-authorizations, and payments changed since they came, go
    /// back to the end of the queue (so one may wait behind newer ones, at
    /// most one retention period longer).
    ///
    /// Index entries of a retired payment stay until the index is swept
    /// (when it holds more than twice the payments): a follow-up that
    /// finds one reads the payment back from the archive by id.
    pub(crate) fn retire(
        &self,
        cutoff_ms: u64,
        archived_seq: u64,
        open: &mut Vec<OpenHold>,
    ) -> usize {
        let mut front = self
            .retire_front
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let pressure = self.payments_max * RETIRE_PRESSURE_PCT / 100;
        let mut retired = 0;
        for _ in 0..RETIRE_PER_PASS_MAX {
            let Some(a) = front.take().or_else(|| self.arrivals.pop()) else {
                break;
            };
            let under_pressure = self.len() > pressure;
            if a.at_ms >= cutoff_ms && !under_pressure {
                *front = Some(a);
                break;
            }
            let mut blocked = false;
            let mut again = None;
            let removed = self.payments.remove_if(&a.payment, |_, p| {
                if p.status == Status::Uncaptured && !under_pressure {
                    again = Some(last_change_ms(p).max(a.at_ms));
                    return false;
                }
                let last = last_change_ms(p);
                if last >= cutoff_ms && !under_pressure {
                    again = Some(last);
                    return false;
                }
                if p.journal_seq > archived_seq {
                    blocked = true;
                    return false;
                }
                true
            });
            if blocked {
                *front = Some(a);
                break;
            }
            if let Some(at_ms) = again {
                self.arrivals.push(Arrival {
                    at_ms,
                    payment: a.payment,
                });
            }
            if let Some((_, p)) = removed {
                retired += 1;
                if p.status == Status::Uncaptured {
                    open.push(OpenHold {
                        payment: p.id,
                        merchant: p.merchant,
                        hold_from_ms: p.hold_from_ms(),
                    });
                }
                self.payments_len.fetch_sub(1, Ordering::Relaxed);
                self.count(p.status, false);
                self.by_rrn.remove(&(p.merchant, p.rrn, p.auth_code));
            }
        }
        drop(front);
        if retired > 0 {
            self.retired_through
                .fetch_max(archived_seq, Ordering::AcqRel);
        }
        if retired > 0 && self.by_original.len() > 2 * self.len() + MAP_SHARDS {
            self.by_original
                .retain(|_, t| self.payments.contains_key(&t.payment));
        }
        retired
    }
}

/// When `p` last changed: its last operation, or its creation.
pub(crate) fn last_change_ms(p: &Payment) -> u64 {
    p.history
        .last()
        .map_or(p.created_ms, |a| a.at_ms)
        .max(p.created_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::tests::payment;
    use crate::lifecycle::Kind;

    fn made(id: u64, kind: Kind, created_ms: u64) -> Payment {
        Payment {
            id,
            created_ms,
            rrn: rrn(id),
            ..payment(kind, 1_000)
        }
    }

    fn rrn(id: u64) -> [u8; 12] {
        let mut out = [b'0'; 12];
        out.copy_from_slice(format!("{id:012}").as_bytes());
        out
    }

    fn key(stan: u32) -> OriginalKey {
        OriginalKey {
            merchant: 0,
            mti: 100,
            stan,
            transmission: 1_123_114_959,
        }
    }

    fn count(state: &State, status: Status) -> u64 {
        state.count_by_status()[usize::from(crate::lifecycle::status_record_code(status))]
    }

    fn add(state: &State, payment: Payment, key: Option<OriginalKey>) {
        state.insert(payment, key, None, |_| ()).unwrap();
    }

    /// The by-status counts a walk of every payment gives.
    fn walked(state: &State) -> [u64; Status::ALL.len()] {
        let mut counts = [0; Status::ALL.len()];
        state
            .for_each(|p| counts[usize::from(crate::lifecycle::status_record_code(p.status))] += 1);
        counts
    }

    #[test]
    fn status_counts_follow_payments_without_a_walk() {
        let state = State::new(10);
        add(&state, made(1, Kind::PreAuth, 0), Some(key(1)));
        add(&state, made(2, Kind::Sale, 0), None);
        add(&state, made(3, Kind::PreAuth, 0), None);
        assert_eq!(count(&state, Status::Uncaptured), 2);
        assert_eq!(count(&state, Status::Succeeded), 1);
        // A change of status moves the count; other changes do not.
        state.with_payment(1, |p| p.status = Status::Cancelled);
        state.with_payment(3, |p| p.scam = true);
        assert_eq!(count(&state, Status::Uncaptured), 1);
        assert_eq!(count(&state, Status::Cancelled), 1);
        // Recovery's last image wins, and is counted once.
        state.restore(Payment {
            status: Status::Refunded,
            ..made(2, Kind::Sale, 0)
        });
        state.restore(made(4, Kind::Sale, 0));
        assert_eq!(count(&state, Status::Succeeded), 1);
        assert_eq!(count(&state, Status::Refunded), 1);
        state.remove(3, None);
        assert_eq!(count(&state, Status::Uncaptured), 0);
        assert_eq!(state.count_by_status(), walked(&state));
        assert_eq!(state.count_by_status().iter().sum::<u64>(), 3);
        assert_eq!(state.len(), 3);
    }

    #[test]
    fn retire_lets_old_final_archived_payments_go_in_order() {
        let state = State::new(100);
        let sale = |id, created_ms, journal_seq| Payment {
            journal_seq,
            ..made(id, Kind::Sale, created_ms)
        };
        add(&state, sale(1, 100, 5), Some(key(1)));
        add(&state, made(2, Kind::PreAuth, 100), Some(key(2)));
        add(&state, sale(3, 200, 9), Some(key(3)));
        add(&state, sale(4, 5_000, 10), None);
        // Nothing changed before 100: nothing goes, and the pass stops at
        // the first payment.
        assert_eq!(state.retire(100, u64::MAX, &mut Vec::new()), 0);
        assert_eq!(state.len(), 4);
        // Old enough, but the archive holds only up to seq 4: nothing goes.
        assert_eq!(state.retire(1_000, 4, &mut Vec::new()), 0);
        assert!(state.get(1).is_some());
        // The archive reaches 5: the first sale goes, the pass stops at the
        // third (seq 9 not archived); the open pre-authorization stays.
        assert_eq!(state.retire(1_000, 5, &mut Vec::new()), 1);
        assert!(state.get(1).is_none());
        assert!(state.get(3).is_some());
        assert_eq!(state.find_by_rrn(0, rrn(1), *b"000001"), None);
        assert_eq!(state.find_by_rrn(0, rrn(3), *b"000001"), Some(3));
        assert_eq!(count(&state, Status::Succeeded), 2);
        assert_eq!(state.count_by_status(), walked(&state));
        assert_eq!(state.retire(1_000, 9, &mut Vec::new()), 1);
        assert_eq!(
            state.retire(1_000, u64::MAX, &mut Vec::new()),
            0,
            "the newer sale is too recent"
        );
        assert_eq!(state.len(), 2);
        // Once the pre-authorization ends it goes too; its change time counts.
        state.with_payment(2, |p| {
            p.status = Status::Expired;
            p.record(
                crate::lifecycle::Operation::Expiry,
                0,
                1_500,
                Code::APPROVED,
            );
        });
        assert_eq!(
            state.retire(1_000, u64::MAX, &mut Vec::new()),
            0,
            "changed at 1,500"
        );
        // It went back to the end of the queue, behind the newer sale: it
        // goes when that one does (at most one retention period late).
        assert_eq!(state.retire(2_000, u64::MAX, &mut Vec::new()), 0);
        assert_eq!(state.retire(6_000, u64::MAX, &mut Vec::new()), 2);
        assert!(state.get(2).is_none());
        // A payment read back from the archive is counted and goes again.
        state.bring_back(made(1, Kind::Sale, 100)).unwrap();
        assert!(state.get(1).is_some());
        assert_eq!(count(&state, Status::Succeeded), 1);
        assert_eq!(state.retire(6_000, u64::MAX, &mut Vec::new()), 1);
        assert_eq!(state.count_by_status(), walked(&state));
        assert_eq!(state.count_by_status().iter().sum::<u64>(), 0);
        assert_eq!(state.len(), 0);
    }

    #[test]
    fn retire_under_pressure_takes_the_oldest_payments_open_holds_included() {
        let state = State::new(8);
        for id in 1..=4 {
            add(&state, made(id, Kind::PreAuth, 100), None);
        }
        for id in 5..=8 {
            add(&state, made(id, Kind::Sale, 100), None);
        }
        // 8 held, 75% of 8 is 6: the two oldest go, though recent and
        // open; their holds are reported, for the timers to drop.
        let mut open = Vec::new();
        assert_eq!(state.retire(0, u64::MAX, &mut open), 2);
        assert_eq!(state.len(), 6);
        assert_eq!(open.iter().map(|h| h.payment).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(count(&state, Status::Uncaptured), 2);
        // Not archived yet: nothing goes, whatever the pressure.
        add(&state, made(9, Kind::Sale, 100), None);
        state.with_payment(9, |p| p.journal_seq = 50);
        state.with_payment(3, |p| p.journal_seq = 50);
        assert_eq!(state.retire(0, 49, &mut Vec::new()), 0);
        assert_eq!(state.len(), 7);
        // Memory full: a payment brought back is refused with 96.
        add(&state, made(10, Kind::Sale, 100), None);
        assert_eq!(
            state.bring_back(made(1, Kind::Sale, 0)),
            Err(Code::SYSTEM_MALFUNCTION)
        );
    }
}
