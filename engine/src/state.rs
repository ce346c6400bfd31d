//! In-memory payment state: sharded maps (no global lock), indexes from
//! message keys to payments, and the queue of holds waiting to end.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
    /// No payment held was created before this (ms; `u64::MAX` when none
    /// was): [`State::retire`] skips its walks while its cutoff is at or
    /// below it.
    oldest_created_ms: AtomicU64,
    /// Original message → payment (and refund).
    by_original: DashMap<OriginalKey, Target, MapHasher>,
    /// (merchant, F37, F38) → payment, for captures that reference those.
    by_rrn: DashMap<(u32, [u8; 12], [u8; 6]), u64, MapHasher>,
    /// Next payment id.
    next_id: AtomicU64,
    /// Holds in order of creation per push; drained by the sweeper.
    holds: SegQueue<Hold>,
    /// Most payments held (`limits.payments_max`).
    payments_max: usize,
}

impl State {
    /// An empty state holding at most `payments_max` payments.
    pub(crate) fn new(payments_max: usize) -> Self {
        State {
            payments: new_map(payments_max),
            payments_len: AtomicUsize::new(0),
            by_status: Default::default(),
            oldest_created_ms: AtomicU64::new(u64::MAX),
            by_original: new_map(payments_max),
            by_rrn: new_map(payments_max),
            next_id: AtomicU64::new(1),
            holds: SegQueue::new(),
            payments_max,
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

    /// Counts a payment that came, created at `created_ms`.
    fn came(&self, status: Status, created_ms: u64) {
        self.count(status, true);
        // Loaded first: a new payment is rarely the oldest, and a load
        // leaves the line shared between the cores where an atomic
        // read-modify-write on every authorization would move it.
        if created_ms < self.oldest_created_ms.load(Ordering::Relaxed) {
            self.oldest_created_ms
                .fetch_min(created_ms, Ordering::Relaxed);
        }
    }

    /// Adds a payment, runs `journal` on it under its shard's lock (so
    /// the record is made without looking the payment up again), then
    /// indexes it; returns what `journal` returned.
    ///
    /// # Errors
    /// 96 when [`Self::len`] is at `payments_max`.
    pub(crate) fn insert<R>(
        &self,
        payment: Payment,
        key: Option<OriginalKey>,
        hold_due_ms: Option<u64>,
        journal: impl FnOnce(&Payment) -> R,
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
                self.came(status, created_ms);
                journal(&v.insert(Box::new(payment)))
            }
            Entry::Occupied(mut o) => {
                // Ids are fresh: a replaced payment would be a bug, but
                // keep the counts true.
                self.payments_len.fetch_sub(1, Ordering::Relaxed);
                self.count(o.get().status, false);
                self.came(status, created_ms);
                o.insert(Box::new(payment));
                journal(o.get())
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
        self.bump_id(id);
        self.came(payment.status, payment.created_ms);
        match self.payments.insert(id, Box::new(payment)) {
            None => {
                self.payments_len.fetch_add(1, Ordering::Relaxed);
            }
            Some(old) => self.count(old.status, false),
        }
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

    /// Drops payments in a final state created before `cutoff_ms`; returns
    /// how many. Their index entries go with them.
    ///
    /// Walks every payment, and every index entry when some were dropped,
    /// unless no payment is that old: until the first reaches the retention
    /// age (30 days by default) a call costs one load. (It used to walk
    /// everything once a minute on a runtime worker; one walk of 1.8 M
    /// payments, for the status gauge, took 0.15–0.5 s.)
    pub(crate) fn retire(&self, cutoff_ms: u64) -> usize {
        if cutoff_ms <= self.oldest_created_ms.load(Ordering::Relaxed) {
            return 0;
        }
        // Payments added during the walk lower it again with `came`.
        self.oldest_created_ms.store(u64::MAX, Ordering::Relaxed);
        let mut retired = 0;
        let mut oldest_kept = u64::MAX;
        self.payments.retain(|_, p| {
            let keep = p.created_ms >= cutoff_ms || p.status == Status::Uncaptured;
            if keep {
                oldest_kept = oldest_kept.min(p.created_ms);
            } else {
                retired += 1;
                self.count(p.status, false);
            }
            keep
        });
        self.oldest_created_ms
            .fetch_min(oldest_kept, Ordering::Relaxed);
        if retired == 0 {
            return 0;
        }
        self.payments_len.fetch_sub(retired, Ordering::Relaxed);
        self.by_original
            .retain(|_, t| self.payments.contains_key(&t.payment));
        self.by_rrn.retain(|_, id| self.payments.contains_key(id));
        retired
    }
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
    fn retire_drops_old_final_payments_and_skips_when_none_is_old() {
        let state = State::new(10);
        add(&state, made(1, Kind::Sale, 100), Some(key(1)));
        add(&state, made(2, Kind::PreAuth, 100), Some(key(2)));
        add(&state, made(3, Kind::Sale, 5_000), Some(key(3)));
        // Nothing created before 100: nothing to retire.
        assert_eq!(state.retire(100), 0);
        assert_eq!(state.len(), 3);
        // The old sale goes with its index entries; the old pre-authorization
        // still holds funds and stays.
        assert_eq!(state.retire(1_000), 1);
        assert_eq!(state.len(), 2);
        assert!(state.get(1).is_none());
        assert_eq!(state.find(&key(1)), None);
        assert_eq!(state.find_by_rrn(0, rrn(1), *b"000001"), None);
        assert_eq!(state.find_by_rrn(0, rrn(2), *b"000001"), Some(2));
        assert!(state.find(&key(2)).is_some());
        assert_eq!(count(&state, Status::Succeeded), 1);
        assert_eq!(state.count_by_status(), walked(&state));
        // Once the pre-authorization ends it is retired too; the newer sale
        // is not.
        state.with_payment(2, |p| p.status = Status::Expired);
        assert_eq!(state.retire(1_000), 1);
        assert_eq!(state.retire(1_000), 0);
        assert_eq!(state.len(), 1);
        // A payment recovered with an old creation time is seen again.
        state.restore(made(7, Kind::Sale, 10));
        assert_eq!(state.retire(1_000), 1);
        assert_eq!(state.count_by_status(), walked(&state));
        assert_eq!(state.count_by_status().iter().sum::<u64>(), 1);
    }
}
