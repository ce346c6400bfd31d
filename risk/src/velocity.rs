//! Velocity counters: counts and amounts per key over 60 s, 1 h and 24 h.
//!
//! # Windows
//! - **60 s is exact.** Each key keeps its last [`RECENT_EVENTS_MAX`] events
//!   in a ring, as ages before the key's newest event. An event at `t` is
//!   inside the window at `now` when `now - t < 60_000` ms, i.e. the window
//!   is `(now - 60 s, now]`: an attempt exactly 60 000 ms old no longer
//!   counts. The policy refuses 60 s count limits above [`COUNT_60S_MAX`],
//!   so every count at or under a limit fits in the ring and is exact;
//!   counts above it saturate at the ring size, which is still above any
//!   limit. Ages are `u32` milliseconds, so this holds for any clock step
//!   back shorter than 49 days.
//! - **1 h and 24 h are time-bucketed** (12 buckets of 5 min, 24 of 1 h)
//!   over the periods ending at the key's newest event. A window sums its
//!   buckets, so it looks back at least 55 min (23 h) and at most 60 min
//!   (24 h): an attempt may stop counting up to one bucket early, never
//!   late. Counts and amounts inside a bucket are exact.
//!
//! Events that arrive out of order (a clock step back, two threads racing)
//! are never lost: they count in the ring and in the bucket of their period
//! or, if that period is older than the newest event's window, in the newer
//! bucket that took its place (a conservative overcount).
//!
//! # Memory and concurrency
//! A [`Table`] is [`SHARDS`] independently locked shards, each an
//! open-addressing array of `keys_max / SHARDS` slots allocated at
//! construction, so nothing allocates afterwards. A key lives in its home
//! slot or one of the [`NEIGHBOURHOOD_SLOTS`] - 1 after it (wrapping in the
//! shard); when all of those are taken, the least recently seen of them is
//! evicted (it then starts from zero), counted and reported. Slots are
//! never emptied, so a lookup stops at the first empty slot.
//!
//! Beside the slots, a shard keeps a compact probe array, 8 bytes per
//! slot: a *tag* (the 26 bits of the key's hash that pick neither the
//! shard nor the home slot, plus a bit that makes it nonzero; 0 marks an
//! empty slot) and the stamp of when the key was last seen. A lookup
//! reads its neighbourhood's probe entries, 64 bytes (two cache lines at
//! most, unless the neighbourhood wraps past the shard's end), and
//! compares the whole key (subject, currency, 32-byte id) only in a slot
//! whose tag matches; empty slots and the eviction victim are found from
//! the probe entries alone. So a new key on a full table, the normal
//! state of a busy switch, reads those lines rather than the first line
//! of each of eight slots. A tag is a filter, never an identity: two keys with equal
//! tags are still told apart by the whole key and never share counters.
//!
//! A slot is two cache lines: the key and the newest periods' 1 h and
//! 24 h counts, then the 60 s ring. A record reads and writes both. The
//! older periods' counts, in a parallel array, are touched only when a
//! key is claimed, a period passes or an event arrives late, or when a
//! policy limits the 1 h or 24 h window. Amounts (only keys with a currency,
//! i.e. amount keys) live in parallel arrays that stay untouched, and
//! uncommitted, until a policy sets an amount limit. A lock is held only
//! for one key's update, a few dozen nanoseconds, and two cards rarely
//! share a shard.
//!
//! Each shard also holds a set of *marked* keys (the watch list for cards),
//! bounded by the table's `marked_max`, which eviction never touches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::{CheckpointError, WatchListFull};
use crate::key::{Key, KeyHasherBuild};
use crate::metrics::{TableMetrics, TableName};

mod checkpoint;

/// Events the exact 60 s window remembers per key.
pub const RECENT_EVENTS_MAX: usize = 16;
/// Largest 60 s count limit a policy may set: one less than the ring, so
/// a count at the limit is always exact.
pub const COUNT_60S_MAX: u32 = RECENT_EVENTS_MAX as u32 - 1;
/// Independently locked shards per table (a power of two).
pub const SHARDS: usize = 64;
/// Slots a key may occupy: its home slot and the ones after it. Bounds a
/// lookup to this many key comparisons, and is the set eviction picks from.
pub(crate) const NEIGHBOURHOOD_SLOTS: usize = 8;

/// Length of the three windows, for reasons and docs.
pub(crate) const WINDOW_MS: [u64; 3] = [60_000, 3_600_000, 86_400_000];
const HOUR_BUCKET_MS: u64 = 300_000;
const HOUR_BUCKETS: usize = 12;
const DAY_BUCKET_MS: u64 = 3_600_000;
const DAY_BUCKETS: usize = 24;
/// The age of an unused ring entry, or of an event too old to tell apart:
/// never inside the 60 s window.
const AGE_MS_NONE: u32 = u32::MAX;

const _: () = assert!(HOUR_BUCKET_MS * HOUR_BUCKETS as u64 == WINDOW_MS[1]);
const _: () = assert!(DAY_BUCKET_MS * DAY_BUCKETS as u64 == WINDOW_MS[2]);
const _: () = assert!(SHARDS.is_power_of_two());
const _: () = assert!(RECENT_EVENTS_MAX <= u8::MAX as usize);
const _: () = assert!(WINDOW_MS[0] < AGE_MS_NONE as u64);
// Two cache lines; see the module docs.
const _: () = assert!(std::mem::size_of::<Slot>() == 128);
const _: () = assert!(std::mem::offset_of!(Slot, ages_ms) == 64);
// A neighbourhood's probe entries are one cache line's worth.
const _: () = assert!(std::mem::size_of::<Probe>() == 8);
const _: () = assert!(NEIGHBOURHOOD_SLOTS * std::mem::size_of::<Probe>() == 64);
// The tag's hash bits are above the home slot's and below the shard's,
// and the occupied bit is not one of them.
const _: () = assert!(TAG_HASH_SHIFT >= 32 && TAG_HASH_BITS >= 16 && TAG_HASH_BITS < 32);

/// The hash's top bits pick the shard ([`Table::shard`]), the low 32 bits
/// the home slot in it ([`Shard::find_or_claim`]).
const SHARD_HASH_SHIFT: u32 = 64 - SHARDS.trailing_zeros();
/// First bit of the hash a [`Probe::tag`] takes: above the home slot's.
const TAG_HASH_SHIFT: u32 = 32;
/// Hash bits a [`Probe::tag`] takes: all those between the home slot's
/// and the shard's (26 with 64 shards), so two keys of a neighbourhood
/// share a tag with probability 2^-26.
const TAG_HASH_BITS: u32 = SHARD_HASH_SHIFT - TAG_HASH_SHIFT;
/// Set in every occupied slot's tag, so no tag is 0 (an empty slot).
const TAG_OCCUPIED: u32 = 1 << 31;

/// A key's tag: hash bits that neither the shard nor the home slot
/// depend on (those are equal, or close, for every key a neighbourhood
/// holds), and never 0.
fn tag_of(hash: u64) -> u32 {
    let bits = (hash >> TAG_HASH_SHIFT) & ((1 << TAG_HASH_BITS) - 1);
    bits as u32 | TAG_OCCUPIED
}

/// Counts and amounts in the three windows after recording one event,
/// that event included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Events in 60 s, 1 h, 24 h.
    pub(crate) count: [u32; 3],
    /// Sum of amounts in 60 s, 1 h, 24 h (saturating); only for keys with a
    /// currency.
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

/// A slot's entry in the probe array, parallel to the slots: all a lookup
/// reads before it finds the key's slot, and all eviction reads.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Probe {
    /// [`tag_of`] the slot's key's hash; 0 when the slot is empty.
    tag: u32,
    /// The shard's touch sequence when the key was last seen: eviction
    /// takes the least recently seen of a neighbourhood.
    seen: u32,
}

impl Probe {
    const EMPTY: Probe = Probe { tag: 0, seen: 0 };
}

/// One key's place in a shard: the key and its exact 60 s window, in two
/// cache lines every record reads and writes; the 1 h and 24 h counts of
/// the newest event's periods are here too, the older periods' in
/// [`Buckets`], touched only when a period passes. Its tag and last-seen
/// stamp are in the parallel [`Probe`].
#[derive(Clone, Copy)]
#[repr(C, align(128))]
struct Slot {
    /// Card token or packed terminal id, compared whole so two keys never
    /// share counters.
    id: [u8; 32],
    /// Time of the newest event; the ring and the buckets are relative to it.
    newest_ms: u64,
    /// Events in the 5 min period of `newest_ms` (saturating); the older
    /// periods of the hour are in `Buckets::hour_counts`.
    hour_now: u32,
    /// Events in the hour of `newest_ms` (saturating).
    day_now: u32,
    /// The key's currency: 0 for count keys, the ISO code for amount keys.
    currency: u16,
    /// The key's subject plus one, so an empty slot (0) holds no key even
    /// if it were compared.
    subject_code: u8,
    /// Where the next event goes in `ages_ms`.
    next: u8,
    /// Keeps `ages_ms` on the second cache line.
    _pad: [u8; 12],
    /// How long before `newest_ms` each of the last events happened
    /// (saturating), a ring; [`AGE_MS_NONE`] when unused.
    ages_ms: [u32; RECENT_EVENTS_MAX],
}

/// Events per period before the newest event's, for the 1 h and 24 h
/// windows: at `period % len`, the newest period's entry kept at 0.
#[derive(Clone, Copy)]
struct Buckets {
    /// 5 min periods.
    hour_counts: [u32; HOUR_BUCKETS],
    /// Hours.
    day_counts: [u32; DAY_BUCKETS],
}

impl Buckets {
    const EMPTY: Buckets = Buckets {
        hour_counts: [0; HOUR_BUCKETS],
        day_counts: [0; DAY_BUCKETS],
    };
}

impl Slot {
    const EMPTY: Slot = Slot {
        id: [0; 32],
        newest_ms: 0,
        hour_now: 0,
        day_now: 0,
        currency: 0,
        subject_code: 0,
        next: 0,
        _pad: [0; 12],
        ages_ms: [AGE_MS_NONE; RECENT_EVENTS_MAX],
    };

    /// Whether the slot holds `key`: the whole key, not a hash of it.
    fn holds(&self, key: &Key) -> bool {
        self.subject_code == key.subject as u8 + 1
            && self.currency == key.currency
            && self.id == key.id
    }

    /// Empties the slot for `key`, whose first event is at `now_ms`.
    fn claim(&mut self, key: &Key, now_ms: u64) {
        *self = Slot {
            id: key.id,
            currency: key.currency,
            subject_code: key.subject as u8 + 1,
            newest_ms: now_ms,
            ..Slot::EMPTY
        };
    }

    /// Records one event at `now_ms`: moves the ring and the buckets
    /// forward if it is the newest, then adds it. Returns where it went.
    fn record(&mut self, buckets: &mut Buckets, now_ms: u64) -> Recorded {
        let newest_ms = self.newest_ms;
        if now_ms > newest_ms {
            let shift_ms = age_ms(now_ms - newest_ms);
            for age in &mut self.ages_ms {
                *age = age.saturating_add(shift_ms);
            }
            let hour = (&mut self.hour_now, &mut buckets.hour_counts[..]);
            pass_periods(hour, HOUR_BUCKET_MS, newest_ms, now_ms);
            let day = (&mut self.day_now, &mut buckets.day_counts[..]);
            pass_periods(day, DAY_BUCKET_MS, newest_ms, now_ms);
            self.newest_ms = now_ms;
        }
        let behind_ms = self.newest_ms - now_ms;
        let at = usize::from(self.next);
        self.ages_ms[at] = age_ms(behind_ms);
        self.next = ((at + 1) % RECENT_EVENTS_MAX) as u8;
        let hour = bucket_index(now_ms, HOUR_BUCKET_MS, HOUR_BUCKETS);
        let day = bucket_index(now_ms, DAY_BUCKET_MS, DAY_BUCKETS);
        let newest_hour = bucket_index(self.newest_ms, HOUR_BUCKET_MS, HOUR_BUCKETS);
        let newest_day = bucket_index(self.newest_ms, DAY_BUCKET_MS, DAY_BUCKETS);
        // An older period shares the newest one's bucket only if it is a
        // whole window older: then it counts in the newer one.
        let count = match hour == newest_hour {
            true => &mut self.hour_now,
            false => &mut buckets.hour_counts[hour],
        };
        *count = count.saturating_add(1);
        let count = match day == newest_day {
            true => &mut self.day_now,
            false => &mut buckets.day_counts[day],
        };
        *count = count.saturating_add(1);
        Recorded {
            newest_ms,
            ring_at: at,
            hour,
            day,
            // Inside the 60 s window: younger than 60 s before `now_ms`.
            age_ms_max: age_ms(behind_ms.saturating_add(WINDOW_MS[0])),
        }
    }

    /// Counts in the windows `need` asks for, after [`Slot::record`].
    fn counts(&self, buckets: &Buckets, recorded: &Recorded, need: Need) -> [u32; 3] {
        let mut count = [0u32; 3];
        if need.windows[0] {
            let inside = self
                .ages_ms
                .iter()
                .filter(|&&age| age < recorded.age_ms_max);
            count[0] = inside.count() as u32;
        }
        if need.windows[1] {
            let hour = buckets.hour_counts.iter();
            count[1] = hour.fold(self.hour_now, |a, &c| c.saturating_add(a));
        }
        if need.windows[2] {
            let day = buckets.day_counts.iter();
            count[2] = day.fold(self.day_now, |a, &c| c.saturating_add(a));
        }
        count
    }
}

/// Where [`Slot::record`] put an event, for the amounts beside it.
struct Recorded {
    /// The key's newest event before this one.
    newest_ms: u64,
    /// Ring index of the event.
    ring_at: usize,
    /// Hour-window bucket of the event.
    hour: usize,
    /// Day-window bucket of the event.
    day: usize,
    /// Ring entries younger than this are inside the 60 s window.
    age_ms_max: u32,
}

/// Milliseconds as a ring age, saturating.
fn age_ms(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(AGE_MS_NONE)
}

fn bucket_index(at_ms: u64, bucket_ms: u64, buckets: usize) -> usize {
    ((at_ms / bucket_ms) % buckets as u64) as usize
}

/// Moves a window's newest period from `from_ms`'s to `to_ms`'s, if that
/// is another period: the finished period's count goes to its bucket, and
/// the buckets of the periods passed since are emptied.
fn pass_periods(
    (now_count, buckets): (&mut u32, &mut [u32]),
    bucket_ms: u64,
    from_ms: u64,
    to_ms: u64,
) {
    if from_ms / bucket_ms == to_ms / bucket_ms {
        return;
    }
    buckets[bucket_index(from_ms, bucket_ms, buckets.len())] = *now_count;
    *now_count = 0;
    clear_passed(buckets, bucket_ms, from_ms, to_ms);
}

/// Empties the buckets of the periods after `from_ms`'s up to `to_ms`'s
/// (all of them if that is the whole window): they are about to hold new
/// periods.
fn clear_passed<T: Copy + Default>(buckets: &mut [T], bucket_ms: u64, from_ms: u64, to_ms: u64) {
    let len = buckets.len();
    let passed = (to_ms / bucket_ms - from_ms / bucket_ms).min(len as u64) as usize;
    let first = bucket_index(from_ms, bucket_ms, len) + 1;
    for step in 0..passed {
        buckets[(first + step) % len] = T::default();
    }
}

/// Amounts beside the slots, for keys with a currency (amount keys):
/// parallel arrays, zero-allocated so they are not committed until used.
struct Amounts {
    /// Amounts of the ring's events, parallel to `Slot::ages_ms`.
    recent_minor: Box<[[u64; RECENT_EVENTS_MAX]]>,
    /// Amounts per 5 min period, parallel to `Buckets::hour_counts`.
    hour_minor: Box<[[u64; HOUR_BUCKETS]]>,
    /// Amounts per hour, parallel to `Buckets::day_counts`.
    day_minor: Box<[[u64; DAY_BUCKETS]]>,
}

impl Amounts {
    fn new(slots: usize) -> Amounts {
        Amounts {
            recent_minor: vec![[0; RECENT_EVENTS_MAX]; slots].into_boxed_slice(),
            hour_minor: vec![[0; HOUR_BUCKETS]; slots].into_boxed_slice(),
            day_minor: vec![[0; DAY_BUCKETS]; slots].into_boxed_slice(),
        }
    }

    fn clear(&mut self, index: usize) {
        self.recent_minor[index] = [0; RECENT_EVENTS_MAX];
        self.hour_minor[index] = [0; HOUR_BUCKETS];
        self.day_minor[index] = [0; DAY_BUCKETS];
    }

    /// Adds an event's amount where [`Slot::record`] put it, and sums the
    /// windows `need` asks for.
    fn record(
        &mut self,
        index: usize,
        slot: &Slot,
        recorded: &Recorded,
        amount_minor: u64,
        need: Need,
    ) -> [u64; 3] {
        let (recent, hour, day) = (
            &mut self.recent_minor[index],
            &mut self.hour_minor[index],
            &mut self.day_minor[index],
        );
        clear_passed(hour, HOUR_BUCKET_MS, recorded.newest_ms, slot.newest_ms);
        clear_passed(day, DAY_BUCKET_MS, recorded.newest_ms, slot.newest_ms);
        recent[recorded.ring_at] = amount_minor;
        hour[recorded.hour] = hour[recorded.hour].saturating_add(amount_minor);
        day[recorded.day] = day[recorded.day].saturating_add(amount_minor);
        let mut sum = [0u64; 3];
        if need.windows[0] {
            let inside = slot.ages_ms.iter().zip(recent.iter());
            sum[0] = inside
                .filter(|(&age, _)| age < recorded.age_ms_max)
                .fold(0, |a, (_, &amount)| amount.saturating_add(a));
        }
        if need.windows[1] {
            sum[1] = hour.iter().fold(0, |a, &amount| amount.saturating_add(a));
        }
        if need.windows[2] {
            sum[2] = day.iter().fold(0, |a, &amount| amount.saturating_add(a));
        }
        sum
    }
}

struct Shard {
    /// Open-addressing slots, all allocated at construction.
    slots: Box<[Slot]>,
    /// Tags and last-seen stamps, parallel to `slots`: what a lookup
    /// probes, so it reads a neighbourhood in 64 bytes, not 1 KiB.
    probe: Box<[Probe]>,
    /// Older periods' counts, parallel to `slots`.
    buckets: Box<[Buckets]>,
    /// Amounts of the slots holding amount keys, parallel to `slots`.
    amounts: Amounts,
    /// Incremented at every observation; stamps `Probe::seen`.
    touches: u32,
    /// Slots a lookup may probe: [`NEIGHBOURHOOD_SLOTS`], or fewer in a
    /// tiny shard.
    neighbourhood: usize,
    /// Marked keys (the watch list), untouched by eviction, with, per key, how many holders marked it (flagged payments of the
    /// card): it is unmarked when the last lets go.
    marked: HashMap<Key, u32, KeyHasherBuild>,
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
            slots: vec![Slot::EMPTY; slots_max].into_boxed_slice(),
            probe: vec![Probe::EMPTY; slots_max].into_boxed_slice(),
            buckets: vec![Buckets::EMPTY; slots_max].into_boxed_slice(),
            amounts: Amounts::new(slots_max),
            touches: 0,
            neighbourhood: NEIGHBOURHOOD_SLOTS.min(slots_max),
            marked: HashMap::with_hasher(KeyHasherBuild::default()),
        }
    }

    fn observe(
        &mut self,
        key: &Key,
        hash: u64,
        now_ms: u64,
        amount_minor: u64,
        need: Need,
    ) -> (Totals, Growth) {
        let (index, growth) = self.find_or_claim(key, hash, now_ms);
        let has_amounts = key.currency != 0;
        let buckets = &mut self.buckets[index];
        if !matches!(growth, Growth::None) {
            *buckets = Buckets::EMPTY;
            if has_amounts {
                self.amounts.clear(index);
            }
        }
        self.probe[index].seen = self.touches;
        self.touches = self.touches.wrapping_add(1);
        let slot = &mut self.slots[index];
        let recorded = slot.record(buckets, now_ms);
        let mut totals = Totals {
            count: slot.counts(buckets, &recorded, need),
            ..Totals::default()
        };
        if has_amounts {
            let slot = &self.slots[index];
            totals.amount_minor = self
                .amounts
                .record(index, slot, &recorded, amount_minor, need);
        }
        totals.marked = !self.marked.is_empty() && self.marked.contains_key(key);
        (totals, growth)
    }

    /// The slot holding `key`, or one claimed for it: the first empty slot
    /// of its neighbourhood, else the neighbourhood's least recently seen.
    /// Reads the probe entries, and a slot only where the tag matches.
    fn find_or_claim(&mut self, key: &Key, hash: u64, now_ms: u64) -> (usize, Growth) {
        let len = self.slots.len();
        let home = home_of(hash, len);
        let tag = tag_of(hash);
        let (mut victim, mut victim_idle) = (home, 0u32);
        for step in 0..self.neighbourhood {
            let index = if home + step < len {
                home + step
            } else {
                home + step - len
            };
            let probe = self.probe[index];
            if probe.tag == 0 {
                self.claim(index, key, tag, now_ms);
                return (index, Growth::Inserted);
            }
            // The tag only filters: equal tags may be another key.
            if probe.tag == tag && self.slots[index].holds(key) {
                return (index, Growth::None);
            }
            let idle = self.touches.wrapping_sub(probe.seen);
            if idle > victim_idle {
                (victim, victim_idle) = (index, idle);
            }
        }
        self.claim(victim, key, tag, now_ms);
        (victim, Growth::Evicted)
    }

    /// Gives slot `index` to `key`, whose first event is at `now_ms`.
    fn claim(&mut self, index: usize, key: &Key, tag: u32, now_ms: u64) {
        self.probe[index].tag = tag;
        self.slots[index].claim(key, now_ms);
    }

    /// Where `key` is, found by a scan of the whole shard.
    #[cfg(test)]
    fn index_of(&self, key: &Key) -> Option<usize> {
        let mut slots = self.probe.iter().zip(self.slots.iter());
        slots.position(|(probe, slot)| probe.tag != 0 && slot.holds(key))
    }

    #[cfg(test)]
    fn contains(&self, key: &Key) -> bool {
        self.index_of(key).is_some()
    }
}

impl Shard {
    /// Appends the keys `keep` takes (by id) to `out`, as
    /// [`checkpoint`] entries; how many.
    fn export_where(&self, keep: &dyn Fn(&[u8; 32]) -> bool, out: &mut Vec<u8>) -> u32 {
        let mut n = 0;
        for (index, (probe, slot)) in self.probe.iter().zip(self.slots.iter()).enumerate() {
            if probe.tag == 0 || !keep(&slot.id) {
                continue;
            }
            let amounts = (slot.currency != 0).then(|| {
                (
                    &self.amounts.recent_minor[index],
                    &self.amounts.hour_minor[index],
                    &self.amounts.day_minor[index],
                )
            });
            checkpoint::put_entry(out, slot, &self.buckets[index], amounts);
            n += 1;
        }
        n
    }

    /// Empties the counts and amounts of the keys `keep` takes (by id); the
    /// keys keep their slots, so no lookup past them changes. How many.
    fn reset_where(&mut self, keep: &dyn Fn(&[u8; 32]) -> bool) -> usize {
        let mut n = 0;
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if self.probe[index].tag == 0 || !keep(&slot.id) {
                continue;
            }
            // As claimed afresh: the next event starts its periods.
            *slot = Slot {
                id: slot.id,
                currency: slot.currency,
                subject_code: slot.subject_code,
                ..Slot::EMPTY
            };
            self.buckets[index] = Buckets::EMPTY;
            if slot.currency != 0 {
                self.amounts.clear(index);
            }
            n += 1;
        }
        n
    }

    /// Sets `entry`'s key to exactly its state, in its slot or one claimed
    /// for it (as a first event would).
    fn put(&mut self, entry: &checkpoint::Entry, hash: u64) -> Growth {
        let key = entry.key();
        let (index, growth) = self.find_or_claim(&key, hash, entry.slot.newest_ms);
        self.probe[index].seen = self.touches;
        self.touches = self.touches.wrapping_add(1);
        self.slots[index] = entry.slot;
        self.buckets[index] = entry.buckets;
        if key.currency != 0 {
            let (recent, hour, day) = entry.amounts;
            self.amounts.recent_minor[index] = recent;
            self.amounts.hour_minor[index] = hour;
            self.amounts.day_minor[index] = day;
        }
        growth
    }
}

/// A key's home slot in a shard of `len` slots: the hash's low 32 bits
/// scaled to the shard (uniform, and no division).
fn home_of(hash: u64, len: usize) -> usize {
    (((hash & u64::from(u32::MAX)) * len as u64) >> 32) as usize
}

/// A shard, on cache lines of its own so two threads on two shards do not
/// contend, with where its arrays are (they never move) for
/// [`Table::prefetch`], which takes no lock.
#[repr(align(128))]
struct Padded {
    shard: Mutex<Shard>,
    /// Address of the first slot.
    slots_at: usize,
    /// Address of the first probe entry.
    probe_at: usize,
    /// Slots in the shard.
    slots_len: usize,
}

impl Padded {
    fn new(shard: Shard) -> Padded {
        Padded {
            slots_at: shard.slots.as_ptr() as usize,
            probe_at: shard.probe.as_ptr() as usize,
            slots_len: shard.slots.len(),
            shard: Mutex::new(shard),
        }
    }
}

/// Asks the CPU to start loading the cache line at `addr`. A hint only: it
/// reads nothing into the program, cannot fault whatever the address, and
/// changes no memory.
#[inline(always)]
#[allow(unsafe_code, reason = "a prefetch hint; see the SAFETY note")]
fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is a hint with no architectural effect: it does
    // not fault on any address and neither reads nor writes program state.
    // SSE, which it needs, is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

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
    /// Its size gauge and eviction counter.
    metrics: TableMetrics,
}

impl Table {
    /// A table tracking at most `keys_max` keys (rounded up to a multiple
    /// of [`SHARDS`]) and `marked_max` marked keys.
    pub(crate) fn new(name: TableName, keys_max: usize, marked_max: usize) -> Table {
        assert!(keys_max > 0, "a velocity table needs room for one key");
        let slots_max = keys_max.div_ceil(SHARDS);
        assert!(slots_max <= u32::MAX as usize, "slot index fits the hash");
        let shards = (0..SHARDS)
            .map(|_| Padded::new(Shard::new(slots_max)))
            .collect();
        Table {
            shards,
            len: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            marked_len: AtomicUsize::new(0),
            marked_max,
            metrics: TableMetrics::new(name),
        }
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.padded(hash).shard
    }

    fn padded(&self, hash: u64) -> &Padded {
        // The top bits pick the shard; the low ones the slot inside it,
        // the ones between the tag.
        &self.shards[(hash >> SHARD_HASH_SHIFT) as usize % SHARDS]
    }

    /// Starts loading the lines a lookup of the key hashed `hash` reads
    /// first (its home slot's probe entry and both lines of the slot), so
    /// the caller's work until [`Table::observe_hashed`] overlaps the
    /// memory's latency. Takes no lock.
    pub(crate) fn prefetch(&self, hash: u64) {
        let p = self.padded(hash);
        let home = home_of(hash, p.slots_len);
        prefetch_line(p.probe_at + home * std::mem::size_of::<Probe>());
        let slot_at = p.slots_at + home * std::mem::size_of::<Slot>();
        prefetch_line(slot_at);
        prefetch_line(slot_at + 64);
    }

    /// Records one event for `key` at `now_ms` and returns the windows'
    /// totals including it.
    pub(crate) fn observe(&self, key: &Key, now_ms: u64, amount_minor: u64, need: Need) -> Totals {
        self.observe_hashed(key, key.hash64(), now_ms, amount_minor, need)
    }

    /// [`Table::observe`] with the key's [`Key::hash64`] already known.
    pub(crate) fn observe_hashed(
        &self,
        key: &Key,
        hash: u64,
        now_ms: u64,
        amount_minor: u64,
        need: Need,
    ) -> Totals {
        let (totals, growth) = {
            let mut shard = self
                .shard(hash)
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            shard.observe(key, hash, now_ms, amount_minor, need)
        };
        self.grew(growth);
        totals
    }

    /// Marks `key` once more (one more holder); `Ok(false)` if it already
    /// was marked.
    pub(crate) fn mark(&self, key: &Key) -> Result<bool, WatchListFull> {
        let mut shard = self
            .shard(key.hash64())
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(holders) = shard.marked.get_mut(key) {
            *holders = holders.saturating_add(1);
            return Ok(false);
        }
        if self.marked_len.load(Ordering::Relaxed) >= self.marked_max {
            return Err(WatchListFull {
                max: self.marked_max,
            });
        }
        self.marked_len.fetch_add(1, Ordering::Relaxed);
        shard.marked.insert(*key, 1);
        Ok(true)
    }

    /// One holder of `key`'s mark lets go; the key is unmarked when it was
    /// the last. Returns whether it was unmarked now.
    pub(crate) fn unmark(&self, key: &Key) -> bool {
        let mut shard = self
            .shard(key.hash64())
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match shard.marked.get_mut(key) {
            Some(holders) if *holders > 1 => {
                *holders -= 1;
                false
            }
            Some(_) => {
                shard.marked.remove(key);
                self.marked_len.fetch_sub(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Takes every mark of the keys `keep` takes (by id), whatever their
    /// holders: their marks are set again from elsewhere (a card shard's
    /// watch records, on a takeover). How many keys were marked.
    pub(crate) fn unmark_where(&self, keep: &dyn Fn(&[u8; 32]) -> bool) -> usize {
        let mut n = 0;
        for padded in &*self.shards {
            let mut shard = padded.shard.lock().unwrap_or_else(PoisonError::into_inner);
            let before = shard.marked.len();
            shard.marked.retain(|k, _| !keep(&k.id));
            n += before - shard.marked.len();
        }
        self.marked_len.fetch_sub(n, Ordering::Relaxed);
        n
    }

    pub(crate) fn is_marked(&self, key: &Key) -> bool {
        let shard = self
            .shard(key.hash64())
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.marked.contains_key(key)
    }

    /// The state of every key `keep` takes (by id: a card's token), as a
    /// [`checkpoint`]: what [`Table::import`] sets again, exactly. Locks
    /// one shard at a time, so keys counted meanwhile may or may not be in
    /// it; the caller orders it against its counts. How many keys.
    pub(crate) fn export_where(
        &self,
        keep: &dyn Fn(&[u8; 32]) -> bool,
        out: &mut Vec<u8>,
    ) -> usize {
        let at = checkpoint::begin(out);
        let mut n = 0u32;
        for padded in &*self.shards {
            let shard = padded.shard.lock().unwrap_or_else(PoisonError::into_inner);
            n += shard.export_where(keep, out);
        }
        checkpoint::finish(out, at, n);
        n as usize
    }

    /// Sets each key of `bytes` ([`Table::export_where`]'s) to its state
    /// there, whatever this table held for it; other keys are untouched.
    /// Nothing is set unless every entry decodes. How many keys.
    ///
    /// # Errors
    /// [`CheckpointError`] when the bytes are not a checkpoint of this
    /// version, or an entry holds a value one never does.
    pub(crate) fn import(&self, bytes: &[u8]) -> Result<usize, CheckpointError> {
        let entries = checkpoint::decode(bytes)?;
        for entry in &entries {
            let hash = entry.key().hash64();
            let growth = self
                .shard(hash)
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put(entry, hash);
            self.grew(growth);
        }
        Ok(entries.len())
    }

    /// Empties the counts of every key `keep` takes (by id), before the
    /// counts of those cards are set again from elsewhere. How many.
    pub(crate) fn reset_where(&self, keep: &dyn Fn(&[u8; 32]) -> bool) -> usize {
        self.shards
            .iter()
            .map(|p| {
                p.shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .reset_where(keep)
            })
            .sum()
    }

    /// Counts a key inserted or evicted.
    fn grew(&self, growth: Growth) {
        match growth {
            Growth::None => {}
            Growth::Inserted => {
                let len = self.len.fetch_add(1, Ordering::Relaxed) + 1;
                self.metrics.keys(len);
            }
            Growth::Evicted => {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                self.metrics.eviction();
            }
        }
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

    /// One key's windows, with amounts: a one-slot shard and an amount key.
    struct Windows(Shard);

    impl Windows {
        fn new() -> Windows {
            Windows(Shard::new(1))
        }

        fn record(&mut self, now_ms: u64, amount_minor: u64, need: Need) -> Totals {
            let key = Key {
                currency: 978,
                ..key(1)
            };
            self.0
                .observe(&key, key.hash64(), now_ms, amount_minor, need)
                .0
        }
    }

    fn observe(shard: &mut Shard, key: &Key, now_ms: u64) -> (Totals, Growth) {
        shard.observe(key, key.hash64(), now_ms, 0, Need::ALL)
    }

    #[test]
    fn sixty_second_window_is_half_open() {
        let mut w = Windows::new();
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
        let mut w = Windows::new();
        for i in 0..40u64 {
            let totals = w.record(i, 1, Need::ALL);
            let expected = (i as u32 + 1).min(RECENT_EVENTS_MAX as u32);
            assert_eq!(totals.count[0], expected);
            assert!(totals.count[0] > COUNT_60S_MAX || totals.count[0] == i as u32 + 1);
        }
    }

    #[test]
    fn hour_window_forgets_at_most_one_bucket_early() {
        let mut w = Windows::new();
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
        let mut w = Windows::new();
        w.record(10 * DAY_BUCKET_MS, 1, Need::ALL);
        let totals = w.record(10 * DAY_BUCKET_MS - 1, 1, Need::ALL);
        assert_eq!(totals.count, [2, 2, 2]);
    }

    /// The old per-bucket-epoch windows, as a model for in-order events.
    fn model_buckets(times_ms: &[u64], bucket_ms: u64, len: usize) -> u32 {
        let mut buckets = vec![(0u64, 0u32); len];
        let mut epoch = 0;
        for &t in times_ms {
            epoch = t / bucket_ms;
            let bucket = &mut buckets[(epoch % len as u64) as usize];
            if bucket.0 < epoch || bucket.1 == 0 {
                *bucket = (epoch, 0);
            }
            bucket.1 += 1;
        }
        let inside = buckets.iter().filter(|b| epoch - b.0 < len as u64);
        inside.map(|b| b.1).sum()
    }

    proptest::proptest! {
        #[test]
        fn hour_and_day_match_the_bucket_model(
            gaps in proptest::collection::vec(0u64..7_200_000, 1..80),
        ) {
            let mut w = Windows::new();
            let mut times = Vec::new();
            let mut now = 1_700_000_000_000u64;
            for gap in gaps {
                now += gap;
                times.push(now);
                let totals = w.record(now, 1, Need::ALL);
                let hour = model_buckets(&times, HOUR_BUCKET_MS, HOUR_BUCKETS);
                let day = model_buckets(&times, DAY_BUCKET_MS, DAY_BUCKETS);
                proptest::prop_assert_eq!(totals.count[1], hour);
                proptest::prop_assert_eq!(totals.count[2], day);
                proptest::prop_assert_eq!(totals.amount_minor[1], u64::from(hour));
                proptest::prop_assert_eq!(totals.amount_minor[2], u64::from(day));
            }
        }
    }

    #[test]
    fn full_shard_evicts_least_recently_seen() {
        let mut shard = Shard::new(3);
        for n in 1..=3 {
            observe(&mut shard, &key(n), 0);
        }
        observe(&mut shard, &key(1), 1); // 2 is now the oldest
        let (_, growth) = observe(&mut shard, &key(4), 2);
        assert!(matches!(growth, Growth::Evicted));
        assert!(!shard.contains(&key(2)));
        for n in [1, 3, 4] {
            assert!(shard.contains(&key(n)));
        }
        // An evicted key starts again from zero.
        let (totals, _) = observe(&mut shard, &key(2), 3);
        assert_eq!(totals.count[0], 1);
        assert_eq!(shard.slots.len(), 3);
    }

    /// A hash whose home slot in a `len`-slot shard is `home` and whose
    /// tag holds `tag_bits`, to force keys into one neighbourhood.
    fn hash_at(home: usize, len: usize, tag_bits: u64) -> u64 {
        // The smallest low half that scales to `home` (see `find_or_claim`).
        let low = ((home as u64) << 32).div_ceil(len as u64);
        low | tag_bits << TAG_HASH_SHIFT
    }

    #[test]
    fn tags_are_never_zero_and_ignore_shard_and_home_bits() {
        assert_ne!(tag_of(0), 0);
        let shard_and_home = !0u64 << SHARD_HASH_SHIFT | u64::from(u32::MAX);
        assert_eq!(tag_of(shard_and_home), tag_of(0));
        for bit in TAG_HASH_SHIFT..SHARD_HASH_SHIFT {
            assert_ne!(tag_of(1 << bit), tag_of(0), "bit {bit}");
        }
        let mut shard = Shard::new(64);
        let hash = hash_at(10, 64, 0x2a);
        let (index, _) = shard.find_or_claim(&key(1), hash, 0);
        assert_eq!(index, 10);
        assert_eq!(shard.probe[10].tag, tag_of(hash));
    }

    #[test]
    fn keys_with_equal_tags_keep_separate_counters() {
        let mut shard = Shard::new(64);
        let hash = hash_at(10, 64, 0x2a);
        // One home slot and one tag for all; the keys differ by id, subject
        // or currency. The last has another tag, behind the others.
        let keys = [
            (key(1), hash),
            (key(2), hash),
            (
                Key {
                    subject: Subject::CardMoto,
                    ..key(1)
                },
                hash,
            ),
            (
                Key {
                    currency: 978,
                    ..key(1)
                },
                hash,
            ),
            (key(3), hash_at(10, 64, 0x2b)),
        ];
        // Key n is seen n + 1 times, after every key before it.
        let mut now_ms = 0;
        for (n, (key, hash)) in keys.iter().enumerate() {
            for seen in 1..=n as u32 + 1 {
                now_ms += 1;
                let (totals, _) = shard.observe(key, *hash, now_ms, 0, Need::ALL);
                assert_eq!(totals.count, [seen; 3], "key {n}");
            }
        }
        for (n, (key, hash)) in keys.iter().enumerate() {
            now_ms += 1;
            let (totals, growth) = shard.observe(key, *hash, now_ms, 0, Need::ALL);
            assert!(matches!(growth, Growth::None), "key {n}");
            assert_eq!(totals.count, [n as u32 + 2; 3], "key {n}");
            assert_eq!(shard.index_of(key), Some(10 + n));
        }
        assert_eq!(shard.probe[10].tag, shard.probe[13].tag);
        assert_ne!(shard.probe[10].tag, shard.probe[14].tag);
    }

    #[test]
    fn eviction_takes_the_least_recently_seen_by_the_probe_stamps() {
        let mut shard = Shard::new(16);
        // Home slot 12: the neighbourhood is 12..16 then 0..4, wrapping.
        let hash = hash_at(12, 16, 7);
        let keys: Vec<Key> = (1..=8).map(key).collect();
        for (t, key) in keys.iter().enumerate() {
            let (_, growth) = shard.observe(key, hash, t as u64, 0, Need::ALL);
            assert!(matches!(growth, Growth::Inserted));
        }
        let at: Vec<usize> = keys.iter().filter_map(|k| shard.index_of(k)).collect();
        assert_eq!(at, [12, 13, 14, 15, 0, 1, 2, 3]);
        // All but key 6 are seen again: it is the least recently seen.
        for key in keys.iter().filter(|k| k.id[0] != 6) {
            shard.observe(key, hash, 10, 0, Need::ALL);
        }
        let (_, growth) = shard.observe(&key(9), hash, 11, 0, Need::ALL);
        assert!(matches!(growth, Growth::Evicted));
        assert!(!shard.contains(&key(6)));
        assert_eq!(shard.index_of(&key(9)), Some(1));
        // The victim is chosen from the probe stamps alone: make key 3's
        // the oldest there and it goes next, though it was seen later.
        shard.probe[14].seen = shard.touches.wrapping_sub(1_000);
        let (_, growth) = shard.observe(&key(10), hash, 12, 0, Need::ALL);
        assert!(matches!(growth, Growth::Evicted));
        assert!(!shard.contains(&key(3)));
        assert_eq!(shard.index_of(&key(10)), Some(14));
        // The evicted key starts again from zero, evicting the next oldest.
        let (totals, growth) = shard.observe(&key(3), hash, 13, 0, Need::ALL);
        assert!(matches!(growth, Growth::Evicted));
        assert_eq!(totals.count, [1; 3]);
        assert_eq!(shard.index_of(&key(3)), Some(12));
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
    fn prefetch_stays_inside_the_home_shard() {
        // One slot per shard: every hash's home is slot 0 of its shard, so
        // the lines prefetched are that slot's and its probe entry's.
        let table = Table::new(TableName::Card, SHARDS, 2);
        for hash in [0, 1, u64::from(u32::MAX), u64::MAX, 0x8000_0000_0000_0000] {
            let p = table.padded(hash);
            assert_eq!(home_of(hash, p.slots_len), 0);
            table.prefetch(hash);
        }
        let wide = Table::new(TableName::Card, SHARDS * 1000, 2);
        for n in 0..1000u64 {
            let hash = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(home_of(hash, wide.padded(hash).slots_len) < 1000);
            wide.prefetch(hash);
        }
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
        // Key 1 has two holders: the first to let go leaves it marked.
        assert!(!table.unmark(&key(1)));
        assert!(table.is_marked(&key(1)));
        assert!(table.unmark(&key(1)));
        assert!(!table.is_marked(&key(1)));
        assert!(!table.unmark(&key(1)), "not marked: nothing to do");
        assert_eq!(table.mark(&key(3)), Ok(true), "its room is free again");
    }

    #[test]
    fn marks_taken_by_id_free_their_room_and_spare_the_rest() {
        let table = Table::new(TableName::Card, SHARDS, 3);
        assert_eq!(table.mark(&key(1)), Ok(true));
        assert_eq!(table.mark(&key(1)), Ok(false));
        assert_eq!(table.mark(&key(2)), Ok(true));
        assert_eq!(table.mark(&key(3)), Ok(true));
        let one_or_two = |id: &[u8; 32]| *id == key(1).id || *id == key(2).id;
        assert_eq!(
            table.unmark_where(&one_or_two),
            2,
            "two keys, whatever their holders"
        );
        assert!(!table.is_marked(&key(1)) && !table.is_marked(&key(2)));
        assert!(table.is_marked(&key(3)));
        assert_eq!(table.mark(&key(4)), Ok(true));
        assert_eq!(table.mark(&key(5)), Ok(true), "their room is free again");
        assert!(table.mark(&key(6)).is_err());
    }
}
