//! Velocity counters: counts and amounts per key over 60 s, 1 h and 24 h.
//!
//! # Windows
//! - **60 s is exact.** Each key keeps its last [`RECENT_EVENTS_MAX`] events
//!   (time and amount) in a ring. An event at `t` is inside the window at
//!   `now` when `now - t < 60_000` ms, i.e. the window is `(now - 60 s, now]`:
//!   an attempt exactly 60 000 ms old no longer counts. The policy refuses
//!   60 s count limits above [`COUNT_60S_MAX`], so every count at or under a
//!   limit fits in the ring and is exact; counts above it saturate at the
//!   ring size, which is still above any limit.
//! - **1 h and 24 h are time-bucketed** (12 buckets of 5 min, 24 of 1 h).
//!   A window sums the current bucket and the ones before it, so it looks
//!   back at least 55 min (23 h) and at most 60 min (24 h): an attempt may
//!   stop counting up to one bucket early, never late. Counts and amounts
//!   inside a bucket are exact.
//!
//! Events that arrive out of order (a clock step back, two threads racing)
//! are never lost: they count in the ring and, if their bucket was already
//! reused for a newer period, in the newer bucket (a conservative overcount).
//!
//! # Memory and concurrency
//! A [`Table`] is [`SHARDS`] independently locked shards, each a slab of at
//! most `keys_max / SHARDS` slots with a hash index sized twice that, so
//! nothing allocates after construction (the index never grows: hashbrown
//! rehashes in place while it is at most half full). A full shard evicts its
//! least recently seen key (an intrusive LRU list over the slab), counts the
//! eviction and updates the size gauge. A lock is held only for one key's
//! update, a few dozen nanoseconds, and two cards rarely share a shard.
//!
//! Each shard also holds a set of *marked* keys (the watch list for cards),
//! bounded by the table's `marked_max`, which eviction never touches.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::WatchListFull;
use crate::key::{Key, KeyHasherBuild};
use crate::metrics::{self, TableName};

/// Events the exact 60 s window remembers per key.
pub const RECENT_EVENTS_MAX: usize = 16;
/// Largest 60 s count limit a policy may set: one less than the ring, so
/// a count at the limit is always exact.
pub const COUNT_60S_MAX: u32 = RECENT_EVENTS_MAX as u32 - 1;
/// Independently locked shards per table (a power of two).
pub const SHARDS: usize = 64;

/// Length of the three windows, for reasons and docs.
pub(crate) const WINDOW_MS: [u64; 3] = [60_000, 3_600_000, 86_400_000];
const HOUR_BUCKET_MS: u64 = 300_000;
const HOUR_BUCKETS: usize = 12;
const DAY_BUCKET_MS: u64 = 3_600_000;
const DAY_BUCKETS: usize = 24;
const NIL: u32 = u32::MAX;

const _: () = assert!(HOUR_BUCKET_MS * HOUR_BUCKETS as u64 == WINDOW_MS[1]);
const _: () = assert!(DAY_BUCKET_MS * DAY_BUCKETS as u64 == WINDOW_MS[2]);
const _: () = assert!(SHARDS.is_power_of_two());
const _: () = assert!(RECENT_EVENTS_MAX <= u8::MAX as usize);

/// Counts and amounts in the three windows after recording one event,
/// that event included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Events in 60 s, 1 h, 24 h.
    pub(crate) count: [u32; 3],
    /// Sum of amounts in 60 s, 1 h, 24 h (saturating).
    pub(crate) amount_minor: [u64; 3],
    /// Whether the key is marked (on the watch list).
    pub(crate) marked: bool,
}

/// Which totals the caller will compare, so the others are not summed:
/// recording always updates every window, summing touches only these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Need {
    /// 60 s, 1 h, 24 h.
    pub(crate) windows: [bool; 3],
    /// Whether amounts are summed as well as counts.
    pub(crate) amounts: bool,
}

impl Need {
    #[cfg(test)]
    pub(crate) const ALL: Need = Need {
        windows: [true; 3],
        amounts: true,
    };
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// `now_ms / bucket_ms` of the period this bucket holds.
    epoch: u32,
    count: u32,
    amount_minor: u64,
}

/// One key's counters.
#[derive(Clone, Copy)]
struct Windows {
    /// Times of the last events, a ring; exact 60 s window.
    recent_ms: [u64; RECENT_EVENTS_MAX],
    /// Amounts of the same events.
    recent_amount_minor: [u64; RECENT_EVENTS_MAX],
    /// How many ring entries are used.
    recent_len: u8,
    /// Where the next event goes.
    recent_next: u8,
    /// 1 h window.
    hour: [Bucket; HOUR_BUCKETS],
    /// 24 h window.
    day: [Bucket; DAY_BUCKETS],
}

impl Windows {
    const EMPTY: Windows = Windows {
        recent_ms: [0; RECENT_EVENTS_MAX],
        recent_amount_minor: [0; RECENT_EVENTS_MAX],
        recent_len: 0,
        recent_next: 0,
        hour: [Bucket {
            epoch: 0,
            count: 0,
            amount_minor: 0,
        }; HOUR_BUCKETS],
        day: [Bucket {
            epoch: 0,
            count: 0,
            amount_minor: 0,
        }; DAY_BUCKETS],
    };

    fn record(&mut self, now_ms: u64, amount_minor: u64, need: Need) -> Totals {
        let next = usize::from(self.recent_next);
        self.recent_ms[next] = now_ms;
        self.recent_amount_minor[next] = amount_minor;
        self.recent_next = ((next + 1) % RECENT_EVENTS_MAX) as u8;
        self.recent_len = (usize::from(self.recent_len) + 1).min(RECENT_EVENTS_MAX) as u8;
        let hour_epoch = add_to_bucket(&mut self.hour, HOUR_BUCKET_MS, now_ms, amount_minor);
        let day_epoch = add_to_bucket(&mut self.day, DAY_BUCKET_MS, now_ms, amount_minor);

        let mut totals = Totals::default();
        if need.windows[0] {
            let used = usize::from(self.recent_len);
            for (i, &at_ms) in self.recent_ms[..used].iter().enumerate() {
                if now_ms.saturating_sub(at_ms) < WINDOW_MS[0] {
                    totals.count[0] += 1;
                    if need.amounts {
                        let amount = self.recent_amount_minor[i];
                        totals.amount_minor[0] = totals.amount_minor[0].saturating_add(amount);
                    }
                }
            }
        }
        if need.windows[1] {
            (totals.count[1], totals.amount_minor[1]) = sum_buckets(&self.hour, hour_epoch);
        }
        if need.windows[2] {
            (totals.count[2], totals.amount_minor[2]) = sum_buckets(&self.day, day_epoch);
        }
        totals
    }
}

/// Adds an event to its bucket; returns the bucket's epoch.
fn add_to_bucket(buckets: &mut [Bucket], bucket_ms: u64, now_ms: u64, amount_minor: u64) -> u32 {
    let epoch = (now_ms / bucket_ms) as u32;
    let len = buckets.len();
    let bucket = &mut buckets[epoch as usize % len];
    if bucket.epoch < epoch || (bucket.count == 0 && bucket.amount_minor == 0) {
        *bucket = Bucket {
            epoch,
            count: 0,
            amount_minor: 0,
        };
    }
    bucket.count = bucket.count.saturating_add(1);
    bucket.amount_minor = bucket.amount_minor.saturating_add(amount_minor);
    epoch
}

/// Sums the buckets inside the window ending in `epoch`.
fn sum_buckets(buckets: &[Bucket], epoch: u32) -> (u32, u64) {
    let (mut count, mut amount) = (0u32, 0u64);
    for bucket in buckets {
        if (epoch.saturating_sub(bucket.epoch) as usize) < buckets.len() {
            count = count.saturating_add(bucket.count);
            amount = amount.saturating_add(bucket.amount_minor);
        }
    }
    (count, amount)
}

/// A key's slot in a shard's slab.
struct Slot {
    key: Key,
    windows: Windows,
}

/// A slot's place in the shard's LRU list; kept apart from the slots so
/// relinking touches a small, dense array instead of two cold slots.
#[derive(Clone, Copy)]
struct Link {
    /// Towards the most recently seen.
    prev: u32,
    /// Towards the least recently seen.
    next: u32,
}

struct Shard {
    /// Key → slot index. Capacity twice `slots_max` so it never reallocates.
    index: HashMap<Key, u32, KeyHasherBuild>,
    /// Slab; grows to `slots_max` within its preallocated capacity.
    slots: Vec<Slot>,
    /// LRU links, parallel to `slots`.
    links: Vec<Link>,
    /// Most recently seen slot.
    head: u32,
    /// Least recently seen slot: the one evicted.
    tail: u32,
    /// Marked keys (the watch list), untouched by eviction.
    marked: HashSet<Key, KeyHasherBuild>,
    /// Most slots; the slab and index were sized for it.
    slots_max: usize,
}

/// What `Shard::observe` did to the table's size.
enum Growth {
    None,
    Inserted,
    Evicted,
}

impl Shard {
    fn new(slots_max: usize) -> Shard {
        Shard {
            index: HashMap::with_capacity_and_hasher(slots_max * 2, KeyHasherBuild::default()),
            slots: Vec::with_capacity(slots_max),
            links: Vec::with_capacity(slots_max),
            head: NIL,
            tail: NIL,
            marked: HashSet::with_hasher(KeyHasherBuild::default()),
            slots_max,
        }
    }

    fn observe(
        &mut self,
        key: &Key,
        now_ms: u64,
        amount_minor: u64,
        need: Need,
    ) -> (Totals, Growth) {
        let (slot, growth) = match self.index.get(key) {
            Some(&slot) => {
                self.unlink(slot);
                (slot, Growth::None)
            }
            None => self.insert(*key),
        };
        self.push_front(slot);
        let mut totals = self.slots[slot as usize]
            .windows
            .record(now_ms, amount_minor, need);
        totals.marked = !self.marked.is_empty() && self.marked.contains(key);
        (totals, growth)
    }

    /// A slot for a new key: a fresh one while the slab has room, else the
    /// least recently seen one, emptied. Returned unlinked.
    fn insert(&mut self, key: Key) -> (u32, Growth) {
        if self.slots.len() < self.slots_max {
            let slot = self.slots.len() as u32;
            self.slots.push(Slot {
                key,
                windows: Windows::EMPTY,
            });
            self.links.push(Link {
                prev: NIL,
                next: NIL,
            });
            self.index.insert(key, slot);
            return (slot, Growth::Inserted);
        }
        let slot = self.tail;
        assert!(slot != NIL, "a full shard has a tail");
        self.unlink(slot);
        let old = &mut self.slots[slot as usize];
        self.index.remove(&old.key);
        old.key = key;
        old.windows = Windows::EMPTY;
        self.index.insert(key, slot);
        (slot, Growth::Evicted)
    }

    fn unlink(&mut self, slot: u32) {
        let Link { prev, next } = self.links[slot as usize];
        match prev {
            NIL => self.head = next,
            prev => self.links[prev as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => self.links[next as usize].prev = prev,
        }
    }

    fn push_front(&mut self, slot: u32) {
        let old_head = self.head;
        self.links[slot as usize] = Link {
            prev: NIL,
            next: old_head,
        };
        match old_head {
            NIL => self.tail = slot,
            head => self.links[head as usize].prev = slot,
        }
        self.head = slot;
    }
}

/// Keeps shards on separate cache lines so two threads on two shards do
/// not contend.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// A bounded, sharded velocity table; see the module docs.
pub(crate) struct Table {
    shards: Box<[Padded]>,
    /// Keys tracked now, for the size gauge.
    len: AtomicUsize,
    /// Keys evicted since start.
    evictions: AtomicU64,
    /// Marked keys now.
    marked_len: AtomicUsize,
    /// Most marked keys allowed.
    marked_max: usize,
    /// Metric label.
    name: TableName,
}

impl Table {
    /// A table tracking at most `keys_max` keys (rounded up to a multiple
    /// of [`SHARDS`]) and `marked_max` marked keys.
    pub(crate) fn new(name: TableName, keys_max: usize, marked_max: usize) -> Table {
        assert!(keys_max > 0, "a velocity table needs room for one key");
        let slots_max = keys_max.div_ceil(SHARDS);
        assert!(slots_max < NIL as usize);
        let shards = (0..SHARDS)
            .map(|_| Padded(Mutex::new(Shard::new(slots_max))))
            .collect();
        Table {
            shards,
            len: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            marked_len: AtomicUsize::new(0),
            marked_max,
            name,
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        let index = (key.hash64() >> 58) as usize % SHARDS;
        &self.shards[index].0
    }

    /// Records one event for `key` at `now_ms` and returns the windows'
    /// totals including it.
    pub(crate) fn observe(&self, key: &Key, now_ms: u64, amount_minor: u64, need: Need) -> Totals {
        let (totals, growth) = {
            let mut shard = self
                .shard(key)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            shard.observe(key, now_ms, amount_minor, need)
        };
        match growth {
            Growth::None => {}
            Growth::Inserted => {
                let len = self.len.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::velocity_keys(self.name, len);
            }
            Growth::Evicted => {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                metrics::velocity_eviction(self.name);
            }
        }
        totals
    }

    /// Marks `key`; `Ok(false)` if it already was.
    pub(crate) fn mark(&self, key: &Key) -> Result<bool, WatchListFull> {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.marked.contains(key) {
            return Ok(false);
        }
        if self.marked_len.load(Ordering::Relaxed) >= self.marked_max {
            return Err(WatchListFull {
                max: self.marked_max,
            });
        }
        self.marked_len.fetch_add(1, Ordering::Relaxed);
        shard.marked.insert(*key);
        Ok(true)
    }

    pub(crate) fn is_marked(&self, key: &Key) -> bool {
        let shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.marked.contains(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Subject;

    fn key(n: u8) -> Key {
        Key {
            id: [n; 32],
            subject: Subject::Card,
            currency: 0,
        }
    }

    #[test]
    fn sixty_second_window_is_half_open() {
        let mut w = Windows::EMPTY;
        assert_eq!(w.record(1_000, 10, Need::ALL).count[0], 1);
        assert_eq!(w.record(60_999, 10, Need::ALL).count[0], 2);
        // The first event is exactly 60 000 ms old: out.
        let totals = w.record(61_000, 10, Need::ALL);
        assert_eq!(totals.count[0], 2);
        assert_eq!(totals.amount_minor[0], 20);
        assert_eq!(totals.count[1], 3);
    }

    #[test]
    fn ring_saturates_above_the_limit() {
        let mut w = Windows::EMPTY;
        for i in 0..40u64 {
            let totals = w.record(i, 1, Need::ALL);
            let expected = (i as u32 + 1).min(RECENT_EVENTS_MAX as u32);
            assert_eq!(totals.count[0], expected);
            assert!(totals.count[0] > COUNT_60S_MAX || totals.count[0] == i as u32 + 1);
        }
    }

    #[test]
    fn hour_window_forgets_at_most_one_bucket_early() {
        let mut w = Windows::EMPTY;
        w.record(0, 5, Need::ALL);
        // 55 min later: still inside (the bucket of t=0 is 11 buckets back).
        assert_eq!(w.record(55 * 60_000 - 1, 5, Need::ALL).count[1], 2);
        // 60 min later: out of the hour, inside the day.
        let totals = w.record(60 * 60_000, 5, Need::ALL);
        assert_eq!(totals.count[1], 2);
        assert_eq!(totals.count[2], 3);
        assert_eq!(totals.amount_minor[2], 15);
    }

    #[test]
    fn out_of_order_events_still_count() {
        let mut w = Windows::EMPTY;
        w.record(10 * DAY_BUCKET_MS, 1, Need::ALL);
        let totals = w.record(10 * DAY_BUCKET_MS - 1, 1, Need::ALL);
        assert_eq!(totals.count, [2, 2, 2]);
    }

    #[test]
    fn full_shard_evicts_least_recently_seen() {
        let mut shard = Shard::new(3);
        for n in 1..=3 {
            shard.observe(&key(n), 0, 0, Need::ALL);
        }
        shard.observe(&key(1), 1, 0, Need::ALL); // 2 is now the oldest
        let (_, growth) = shard.observe(&key(4), 2, 0, Need::ALL);
        assert!(matches!(growth, Growth::Evicted));
        assert!(!shard.index.contains_key(&key(2)));
        for n in [1, 3, 4] {
            assert!(shard.index.contains_key(&key(n)));
        }
        // An evicted key starts again from zero.
        let (totals, _) = shard.observe(&key(2), 3, 0, Need::ALL);
        assert_eq!(totals.count[0], 1);
        assert_eq!(shard.slots.len(), 3);
        assert_eq!(shard.slots.capacity(), 3);
    }

    #[test]
    fn table_stays_bounded() {
        let table = Table::new(TableName::Card, SHARDS * 2, 4);
        for n in 0..10_000u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_le_bytes());
            let key = Key {
                id,
                subject: Subject::Card,
                currency: 0,
            };
            table.observe(&key, 0, 0, Need::ALL);
        }
        assert!(table.len() <= SHARDS * 2);
        assert_eq!(table.len() as u64 + table.evictions(), 10_000);
    }

    #[test]
    fn marks_are_bounded_and_survive_eviction() {
        let table = Table::new(TableName::Card, SHARDS, 2);
        assert_eq!(table.mark(&key(1)), Ok(true));
        assert_eq!(table.mark(&key(1)), Ok(false));
        assert_eq!(table.mark(&key(2)), Ok(true));
        assert_eq!(table.mark(&key(3)), Err(WatchListFull { max: 2 }));
        for n in 10..200 {
            table.observe(&key(n), 0, 0, Need::ALL);
        }
        assert!(table.observe(&key(1), 0, 0, Need::ALL).marked);
        assert!(table.is_marked(&key(2)));
    }
}
