//! A velocity table's keys as bytes, and back: what a cluster node writes
//! as a card shard's velocity checkpoint, so the shard's next counting node
//! sets the cards' counts from it instead of replaying every attempt of
//! the last 25 hours (docs/cluster.md, "Velocity checkpoints").
//!
//! Big endian. A header, then one entry per key:
//!
//! ```text
//! version u8 (2) | entries u32
//! entry: id 32 | subject u8 | currency u16 | newest_ms u64 | hour_now u32
//!        | day_now u32 | next u8
//!        | ring: bitmap 2, ages_ms u32 of the used places (not empty)
//!        | hour_counts: bitmap 2, u32 of the places not 0
//!        | day_counts: bitmap 3, u32 of the places not 0
//!        [currency != 0: recent_minor u64 of the ring's used places
//!         | hour_minor: bitmap 2, u64 not 0 | day_minor: bitmap 3, u64 not 0]
//! ```
//!
//! A bitmap has a bit per place, place i in byte i / 8, bit i % 8; a value
//! is written only where its bit is set. An entry is the slot's whole state
//! (a ring place left empty, a period with nothing in it, are not written:
//! about 65 bytes for a key with one event, 95 with amounts, at most 260
//! and 676), so a key set from it counts the next event exactly as the
//! exporting table would have. (Version 1 wrote every place: 3 MiB a
//! shard's checkpoint at 10,000/s, measured; refused now.)

use super::{Buckets, Slot, AGE_MS_NONE, DAY_BUCKETS, HOUR_BUCKETS, RECENT_EVENTS_MAX};
use crate::error::CheckpointError;
use crate::key::{Key, Subject};

/// The version this build writes and reads.
const VERSION: u8 = 2;
/// Header bytes: version and entry count.
const HEADER_BYTES: usize = 1 + 4;
/// An entry's fixed part: id, subject, currency, newest, the newest
/// periods' counts, the ring's next place.
const FIXED_BYTES: usize = 32 + 1 + 2 + 8 + 4 + 4 + 1;
/// An entry's bytes at least: the fixed part and the three bitmaps.
const ENTRY_BYTES_MIN: usize = FIXED_BYTES
    + bitmap_bytes(RECENT_EVENTS_MAX)
    + bitmap_bytes(HOUR_BUCKETS)
    + bitmap_bytes(DAY_BUCKETS);

/// Bytes of a bitmap of `places` bits.
const fn bitmap_bytes(places: usize) -> usize {
    places.div_ceil(8)
}

/// The amounts beside a slot: the ring's, per 5 min, per hour.
pub(super) type AmountsOf = (
    [u64; RECENT_EVENTS_MAX],
    [u64; HOUR_BUCKETS],
    [u64; DAY_BUCKETS],
);

/// One decoded key: its slot, older periods and amounts (zero for a
/// count key, and where the exporter wrote none).
pub(super) struct Entry {
    pub(super) slot: Slot,
    pub(super) buckets: Buckets,
    pub(super) amounts: AmountsOf,
}

impl Entry {
    /// The key the slot holds.
    pub(super) fn key(&self) -> Key {
        Key {
            id: self.slot.id,
            subject: subject_of(self.slot.subject_code - 1).unwrap_or(Subject::Card),
            currency: self.slot.currency,
        }
    }
}

fn subject_of(code: u8) -> Option<Subject> {
    match code {
        0 => Some(Subject::Card),
        1 => Some(Subject::CardMoto),
        2 => Some(Subject::Terminal),
        _ => None,
    }
}

/// Writes the header with a count patched in by [`finish`]; where it is.
pub(super) fn begin(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.push(VERSION);
    out.extend_from_slice(&[0; 4]);
    at
}

/// Patches the header at `at` with `entries`.
pub(super) fn finish(out: &mut [u8], at: usize, entries: u32) {
    out[at + 1..at + HEADER_BYTES].copy_from_slice(&entries.to_be_bytes());
}

/// A value of a place.
trait Value: Copy + Default {
    const BYTES: usize;
    fn put(self, out: &mut Vec<u8>);
    fn read(bytes: &[u8]) -> Self;
}

/// [`Value`] for an unsigned integer, big endian.
macro_rules! value {
    ($t:ty) => {
        impl Value for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn read(bytes: &[u8]) -> $t {
                let mut b = [0; std::mem::size_of::<$t>()];
                b.copy_from_slice(bytes);
                <$t>::from_be_bytes(b)
            }
        }
    };
}

value!(u32);
value!(u64);

/// The bitmap of the places `used` takes.
fn bitmap_of<T: Copy>(values: &[T], used: impl Fn(T) -> bool) -> Vec<u8> {
    let mut bits = vec![0u8; bitmap_bytes(values.len())];
    for (i, v) in values.iter().enumerate() {
        if used(*v) {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    bits
}

fn is_set(bits: &[u8], i: usize) -> bool {
    bits[i / 8] & (1 << (i % 8)) != 0
}

/// Writes the values of the places set in `bits`.
fn put_values<T: Value>(out: &mut Vec<u8>, bits: &[u8], values: &[T]) {
    for (i, v) in values.iter().enumerate() {
        if is_set(bits, i) {
            v.put(out);
        }
    }
}

/// Writes a bitmap of the places not 0, then their values.
fn put_sparse<T: Value + PartialEq>(out: &mut Vec<u8>, values: &[T]) {
    let bits = bitmap_of(values, |v| v != T::default());
    out.extend_from_slice(&bits);
    put_values(out, &bits, values);
}

/// Appends one key's state.
pub(super) fn put_entry(
    out: &mut Vec<u8>,
    slot: &Slot,
    buckets: &Buckets,
    amounts: Option<(
        &[u64; RECENT_EVENTS_MAX],
        &[u64; HOUR_BUCKETS],
        &[u64; DAY_BUCKETS],
    )>,
) {
    out.extend_from_slice(&slot.id);
    out.push(slot.subject_code - 1);
    out.extend_from_slice(&slot.currency.to_be_bytes());
    out.extend_from_slice(&slot.newest_ms.to_be_bytes());
    out.extend_from_slice(&slot.hour_now.to_be_bytes());
    out.extend_from_slice(&slot.day_now.to_be_bytes());
    out.push(slot.next);
    let ring = bitmap_of(&slot.ages_ms, |age| age != AGE_MS_NONE);
    out.extend_from_slice(&ring);
    put_values(out, &ring, &slot.ages_ms);
    put_sparse(out, &buckets.hour_counts);
    put_sparse(out, &buckets.day_counts);
    if let Some((recent, hour, day)) = amounts {
        put_values(out, &ring, recent);
        put_sparse(out, hour);
        put_sparse(out, day);
    }
}

/// Reads bytes in order.
struct Reader<'a> {
    bytes: &'a [u8],
    entry: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        if self.bytes.len() < n {
            return Err(self.error("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, CheckpointError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, CheckpointError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, CheckpointError> {
        self.array().map(u64::from_be_bytes)
    }

    /// A bitmap of `N` places; bits past them refused.
    fn bitmap<const N: usize>(&mut self) -> Result<Vec<u8>, CheckpointError> {
        let bits = self.take(bitmap_bytes(N))?.to_vec();
        if (N..bitmap_bytes(N) * 8).any(|i| is_set(&bits, i)) {
            return Err(self.error("a bitmap bit past its places"));
        }
        Ok(bits)
    }

    /// The values of the places set in `bits`; `empty` elsewhere.
    fn values<T: Value, const N: usize>(
        &mut self,
        bits: &[u8],
        empty: T,
    ) -> Result<[T; N], CheckpointError> {
        let mut out = [empty; N];
        for (i, v) in out.iter_mut().enumerate() {
            if is_set(bits, i) {
                *v = T::read(self.take(T::BYTES)?);
            }
        }
        Ok(out)
    }

    /// A bitmap, then the values of its places; 0 elsewhere.
    fn sparse<T: Value, const N: usize>(&mut self) -> Result<[T; N], CheckpointError> {
        let bits = self.bitmap::<N>()?;
        self.values(&bits, T::default())
    }

    fn error(&self, what: &'static str) -> CheckpointError {
        CheckpointError {
            what,
            entry: self.entry,
        }
    }
}

/// Every entry of `bytes`, checked: a known version, the count's entries
/// and nothing after them, known subjects, a ring position inside the
/// ring, no bitmap bit past its places, amounts only for amount keys.
pub(super) fn decode(bytes: &[u8]) -> Result<Vec<Entry>, CheckpointError> {
    let mut r = Reader { bytes, entry: 0 };
    if r.u8()? != VERSION {
        return Err(r.error("unknown version"));
    }
    let count = r.u32()? as usize;
    // Each entry is at least ENTRY_BYTES_MIN: a count the bytes cannot
    // hold is refused before anything is reserved for it.
    if count > r.bytes.len() / ENTRY_BYTES_MIN {
        return Err(r.error("more entries than bytes"));
    }
    let mut entries = Vec::with_capacity(count);
    for entry in 0..count {
        r.entry = entry + 1;
        let id = r.array::<32>()?;
        let subject = subject_of(r.u8()?).ok_or_else(|| r.error("unknown subject"))?;
        let currency = r.u16()?;
        let newest_ms = r.u64()?;
        let (hour_now, day_now) = (r.u32()?, r.u32()?);
        let next = r.u8()?;
        if usize::from(next) >= RECENT_EVENTS_MAX {
            return Err(r.error("ring position outside the ring"));
        }
        let ring = r.bitmap::<RECENT_EVENTS_MAX>()?;
        let ages_ms = r.values(&ring, AGE_MS_NONE)?;
        let buckets = Buckets {
            hour_counts: r.sparse()?,
            day_counts: r.sparse()?,
        };
        let amounts = if currency == 0 {
            ([0; RECENT_EVENTS_MAX], [0; HOUR_BUCKETS], [0; DAY_BUCKETS])
        } else {
            (r.values(&ring, 0)?, r.sparse()?, r.sparse()?)
        };
        let slot = Slot {
            id,
            newest_ms,
            hour_now,
            day_now,
            currency,
            subject_code: subject as u8 + 1,
            next,
            _pad: [0; 12],
            ages_ms,
        };
        entries.push(Entry {
            slot,
            buckets,
            amounts,
        });
    }
    if !r.bytes.is_empty() {
        return Err(r.error("bytes after the last entry"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{Need, Table};
    use super::*;
    use crate::metrics::TableName;

    fn table() -> Table {
        Table::new(TableName::Card, 1_024, 16)
    }

    fn key(card: u8, subject: u8, currency: u16) -> Key {
        Key {
            id: [card; 32],
            subject: subject_of(subject).unwrap_or(Subject::Card),
            currency,
        }
    }

    /// Even cards are the shard's.
    fn kept(id: &[u8; 32]) -> bool {
        id[0] % 2 == 0
    }

    /// One event: card, subject, amount key or not, milliseconds after the
    /// previous one (some before it: late events), amount.
    fn event() -> impl Strategy<Value = (u8, u8, bool, i64, u64)> {
        (
            0u8..8,
            0u8..2,
            any::<bool>(),
            prop_oneof![
                4 => 0i64..90_000,
                2 => 0i64..2_000_000,
                1 => -400_000i64..0,
                1 => 0i64..30_000_000,
            ],
            0u64..1_000_000,
        )
    }

    /// Each entry of a checkpoint as its own bytes, sorted: the same keys
    /// in the same state give the same list, whatever their slots.
    fn entries_of(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = decode(bytes)
            .expect("decodes")
            .iter()
            .map(|e| {
                let mut one = Vec::new();
                let amounts =
                    (e.slot.currency != 0).then_some((&e.amounts.0, &e.amounts.1, &e.amounts.2));
                put_entry(&mut one, &e.slot, &e.buckets, amounts);
                one
            })
            .collect();
        out.sort();
        out
    }

    proptest! {
        /// A table set from another's checkpoint of some cards (fresh, or
        /// one that counted those cards differently and was reset) holds
        /// them in the same state, and counts every later event of them
        /// exactly as the exporting table does.
        #[test]
        fn an_imported_checkpoint_counts_on_exactly_as_its_exporter(
            before in proptest::collection::vec(event(), 1..120),
            stale in proptest::collection::vec(event(), 0..40),
            after in proptest::collection::vec(event(), 1..60),
        ) {
            let (a, b, c) = (table(), table(), table());
            let mut now = 100_000_000_000i64;
            let replay = |t: &Table, events: &[(u8, u8, bool, i64, u64)], now: &mut i64| {
                for &(card, subject, amounts, dt, amount) in events {
                    *now += dt;
                    let k = key(card, subject, if amounts { 978 } else { 0 });
                    t.observe(&k, *now as u64, amount, Need::ALL);
                }
            };
            replay(&a, &before, &mut now);
            let mut stale_now = now - 5_000_000;
            replay(&c, &stale, &mut stale_now);
            let mut bytes = Vec::new();
            let exported = a.export_where(&kept, &mut bytes);
            prop_assert_eq!(b.import(&bytes), Ok(exported));
            c.reset_where(&kept);
            prop_assert_eq!(c.import(&bytes), Ok(exported));
            let mut again = Vec::new();
            b.export_where(&|_| true, &mut again);
            prop_assert_eq!(entries_of(&again), entries_of(&bytes));
            for &(card, subject, amounts, dt, amount) in &after {
                now += dt;
                let k = key(card & !1, subject, if amounts { 978 } else { 0 });
                let at = now as u64;
                let want = a.observe(&k, at, amount, Need::ALL);
                prop_assert_eq!(b.observe(&k, at, amount, Need::ALL), want);
                prop_assert_eq!(c.observe(&k, at, amount, Need::ALL), want);
            }
        }

        /// Any bytes: entries or an error, never a panic; a valid
        /// checkpoint with a byte changed either decodes or is refused.
        #[test]
        fn garbage_is_refused_without_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2_000),
            events in proptest::collection::vec(event(), 1..20),
            flip in any::<(usize, u8)>(),
        ) {
            let _ = decode(&bytes);
            let t = table();
            let mut now = 1_000_000i64;
            for &(card, subject, amounts, dt, amount) in &events {
                now += dt;
                t.observe(&key(card, subject, if amounts { 978 } else { 0 }), now as u64, amount, Need::ALL);
            }
            let mut good = Vec::new();
            t.export_where(&|_| true, &mut good);
            let mut bad = good.clone();
            let at = flip.0 % bad.len();
            bad[at] ^= flip.1 | 1;
            let _ = table().import(&bad);
        }
    }

    #[test]
    fn truncated_extended_or_unknown_checkpoints_are_refused_and_set_nothing() {
        let t = table();
        t.observe(&key(2, 0, 978), 5_000, 700, Need::ALL);
        t.observe(&key(4, 1, 0), 6_000, 0, Need::ALL);
        let mut good = Vec::new();
        assert_eq!(t.export_where(&|_| true, &mut good), 2);
        // One event each: the fixed part, the ring's bitmap and one age,
        // the periods' empty bitmaps (the newest period's count is in the
        // fixed part); the amount key adds the event's amount and its
        // 5 min and hour amounts, with their bitmaps.
        let count_key = FIXED_BYTES + 2 + 4 + 2 + 3;
        assert_eq!(
            good.len(),
            HEADER_BYTES + count_key + (count_key + 8 + 2 + 8 + 3 + 8)
        );
        let fresh = table();
        for cut in 0..good.len() {
            assert!(fresh.import(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        let err = fresh.import(&longer).expect_err("a byte too many");
        assert_eq!(err.what, "bytes after the last entry");
        let mut version = good.clone();
        version[0] = 1;
        assert_eq!(
            fresh.import(&version).expect_err("v2").what,
            "unknown version"
        );
        let mut huge = good.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            fresh.import(&huge).expect_err("count").what,
            "more entries than bytes"
        );
        // A bit past the 12 places of the first entry's 5 min bitmap
        // (after its ring's bitmap and one age).
        let mut past = good.clone();
        past[HEADER_BYTES + FIXED_BYTES + 2 + 4 + 1] |= 0x80;
        let err = fresh.import(&past).expect_err("bit past");
        assert_eq!((err.what, err.entry), ("a bitmap bit past its places", 1));
        // The first entry's subject.
        let mut subject = good.clone();
        subject[HEADER_BYTES + 32] = 3;
        let err = fresh.import(&subject).expect_err("subject");
        assert_eq!((err.what, err.entry), ("unknown subject", 1));
        // None of it set anything: the first key counts from one.
        let totals = fresh.observe(&key(2, 0, 978), 7_000, 1, Need::ALL);
        assert_eq!((totals.count, totals.amount_minor[0]), ([1; 3], 1));
        assert_eq!(fresh.import(&good), Ok(2));
        let totals = fresh.observe(&key(2, 0, 978), 7_000, 1, Need::ALL);
        assert_eq!((totals.count, totals.amount_minor[0]), ([2; 3], 701));
    }
}
