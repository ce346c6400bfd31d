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
pub(crate) struct Target {
    /// The payment.
    pub(crate) payment: u64,
    /// The refund, when the original was a refund.
    pub(crate) refund: Option<u8>,
}

/// How an original message is found: merchant, MTI without repeat, STAN, F7
/// (what F90 carries), as the contract requires, within one merchant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct OriginalKey {
    /// Merchant index.
    pub(crate) merchant: u32,
    /// MTI without the repeat digit, as a number (100, 200, 220).
    pub(crate) mti: u16,
    /// F11.
    pub(crate) stan: u32,
    /// F7 as a number (MMDDhhmmss).
    pub(crate) transmission: u64,
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
        let rrn_key = (payment.status != Status::Declined).then_some((
            payment.merchant,
            payment.rrn,
            payment.auth_code,
        ));
        self.bump_id(id);
        let journaled = match self.payments.entry(id) {
            Entry::Vacant(v) => journal(&v.insert(Box::new(payment))),
            Entry::Occupied(mut o) => {
                // Ids are fresh: a replaced payment would be a bug, but
                // keep the count true.
                self.payments_len.fetch_sub(1, Ordering::Relaxed);
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
        if self.payments.insert(id, Box::new(payment)).is_none() {
            self.payments_len.fetch_add(1, Ordering::Relaxed);
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
        self.payments.get_mut(&id).map(|mut p| f(&mut p))
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

    /// Counts payments by status (for the gauge), visiting each shard once.
    pub(crate) fn count_by_status(&self) -> [u64; 8] {
        let mut counts = [0u64; 8];
        for p in self.payments.iter() {
            if let Some(c) = counts.get_mut(usize::from(p.status.to_u8())) {
                *c += 1;
            }
        }
        counts
    }

    /// Every payment (snapshots, exports); takes each shard's lock in turn.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Payment)) {
        for p in self.payments.iter() {
            f(&p);
        }
    }

    /// Drops payments in a final state created before `cutoff_ms`; returns
    /// how many. Their index entries go with them.
    pub(crate) fn retire(&self, cutoff_ms: u64) -> usize {
        let mut retired = 0;
        self.payments.retain(|_, p| {
            let keep = p.created_ms >= cutoff_ms || p.status == Status::Uncaptured;
            retired += usize::from(!keep);
            keep
        });
        self.payments_len.fetch_sub(retired, Ordering::Relaxed);
        self.by_original
            .retain(|_, t| self.payments.contains_key(&t.payment));
        self.by_rrn.retain(|_, id| self.payments.contains_key(id));
        retired
    }
}
