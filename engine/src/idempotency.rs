//! Answers to messages already seen, so repeats get the very same answer.
//!
//! The key is the MTI without its repeat digit, F41, F11 and F7. Entries
//! age out after the configured window and the map is bounded.
//!
//! Two tiers: memory keeps the recent answers; every answer with a journal
//! record also reaches the archive, which keeps it for the window. A
//! generation leaves memory early when memory is full, but only once the
//! archive holds every answer in it; what left is summarised per terminal
//! (the latest F7 among its answers that left), so a new message whose F7
//! is later than that cannot be a repeat of one of them and is decided
//! without asking the archive. Only messages at or before it (repeats of
//! old messages, terminals whose clock went back) wait for an archive
//! lookup ([`Idempotency::may_be_archived`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::code::Code;
use crate::state::{new_map, MapHasher};

/// The key of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageKey {
    /// MTI without the repeat digit, as a number (100, 200, 220, 400, 420).
    pub mti: u16,
    /// F41.
    pub terminal: [u8; 8],
    /// F11.
    pub stan: u32,
    /// F7 as a number.
    pub transmission: u64,
}

/// The answer given to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// F39.
    pub code: Code,
    /// F37.
    pub rrn: [u8; 12],
    /// F38, on approval.
    pub auth_code: Option<[u8; 6]>,
    /// Checksum of the request's content (bitmap and fields).
    pub content_crc: u32,
    /// Journal sequence of the answer's record (0 when none): a repeat's
    /// answer waits for it like the original's (in `durable` mode), and
    /// the answer leaves memory only once the archive holds it.
    pub seq: u64,
    /// When answered, for ageing out.
    pub at_ms: u64,
}

/// What the index says about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Answered before with the same content, or a repeat: answer again.
    Again(Answer),
    /// A new message with an answered key but other content: 94.
    Conflict,
}

/// Buckets of terminals for [`Idempotency::may_be_archived`]: terminals
/// sharing a bucket share its latest F7, which can only make lookups more
/// frequent, never miss one.
const EVICTED_BUCKETS: usize = 4_096;

/// A message whose F7 lies within this of the latest F7 that left memory
/// for its terminal's bucket is also looked up: F7 has one-second
/// resolution and two messages of a second may leave in different passes.
const EVICTED_SLACK_MS: u64 = 1_000;

/// The bounded index, in two generations so that ageing out never walks
/// the entries on the request path: answers go into the current
/// generation; every window, or sooner when the current generation holds
/// 40% of `limits.idempotency_entries_max`, the older one is dropped and
/// becomes the current one, provided the archive holds every answer in
/// it. Without pressure an answer is kept at least one window.
pub(crate) struct Idempotency {
    /// The two generations; `current` says which one takes new answers.
    generations: [DashMap<MessageKey, Answer, MapHasher>; 2],
    /// Entries in each generation: [`DashMap::len`] would take every
    /// shard's lock on every message. A store racing a rotation can leave
    /// a count one off until that generation's next clear.
    lens: [AtomicUsize; 2],
    /// Index of the current generation (0 or 1).
    current: AtomicUsize,
    /// When the generations last rotated, ms.
    rotated_at_ms: AtomicU64,
    /// Most entries over both generations (`limits.idempotency_entries_max`).
    entries_max: usize,
    /// Per bucket of terminals, the latest F7 (ms since the epoch) among
    /// answers that left memory; 0 when none did.
    evicted_f7_ms: Box<[AtomicU64]>,
    /// The older generation's highest journal seq and latest F7 per
    /// bucket, once walked; cleared when it is dropped.
    older_summary: std::sync::Mutex<Option<(u64, Vec<u64>)>>,
}

/// Answers in the current generation at which it rotates without waiting
/// for the window: 40% of the limit, so the two generations stay under
/// the switch's backpressure threshold (85% to turn it off) while the
/// archive keeps up.
fn generation_full(entries_max: usize) -> usize {
    entries_max / 5 * 2
}

/// What an answer found for a message means: the same message again (or
/// a repeat) gets it; other content under the same key is a conflict.
pub(crate) fn judge(a: Answer, repeat: bool, content_crc: u32) -> Seen {
    if repeat || a.content_crc == content_crc {
        Seen::Again(a)
    } else {
        Seen::Conflict
    }
}

/// The bucket of terminal `t`.
fn bucket(t: &[u8; 8]) -> usize {
    // FNV-1a: stable across runs, cheap, spreads eight ASCII bytes.
    let mut h: u32 = 0x811c_9dc5;
    for &b in t {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h as usize % EVICTED_BUCKETS
}

/// F7 (`MMDDhhmmss` as a number, no year) as ms since the epoch: the year
/// that puts it nearest to `now_ms`. `None` for an impossible date.
pub(crate) fn f7_ms(transmission: u64, now_ms: u64) -> Option<u64> {
    let (month, day) = (
        (transmission / 100_000_000) as u32,
        (transmission / 1_000_000 % 100) as u32,
    );
    let secs = (transmission / 10_000 % 100) * 3_600
        + (transmission / 100 % 100) * 60
        + transmission % 100;
    let (year, _, _) = codecs::iso8583::datetime::civil_from_days(now_ms / 86_400_000);
    let year = u32::try_from(year).ok()?;
    [year.saturating_sub(1), year, year + 1]
        .into_iter()
        .filter_map(|y| codecs::iso8583::datetime::days_from_civil(y, month, day))
        .map(|d| d * 86_400_000 + secs * 1_000)
        .min_by_key(|&ms| ms.abs_diff(now_ms))
}

impl Idempotency {
    /// An empty index of at most `entries_max` entries, its window starting
    /// at `now_ms`.
    pub(crate) fn new(entries_max: usize, now_ms: u64) -> Self {
        Idempotency {
            generations: [new_map(entries_max), new_map(entries_max)],
            lens: [AtomicUsize::new(0), AtomicUsize::new(0)],
            current: AtomicUsize::new(0),
            rotated_at_ms: AtomicU64::new(now_ms),
            entries_max,
            evicted_f7_ms: (0..EVICTED_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            older_summary: std::sync::Mutex::new(None),
        }
    }

    /// Looks a message up (the older generation first, as
    /// [`Idempotency::answer_once`]); `None` when never answered. `repeat`
    /// is whether its MTI says so.
    #[cfg(test)]
    pub(crate) fn check(&self, key: &MessageKey, repeat: bool, content_crc: u32) -> Option<Seen> {
        let current = self.current.load(Ordering::Acquire) & 1;
        let found = self.generations[(current + 1) & 1]
            .get(key)
            .or_else(|| self.generations[current].get(key))
            .map(|a| *a)?;
        Some(judge(found, repeat, content_crc))
    }

    /// Answers message `key` once: the answer memory has (as [`Seen`]),
    /// or, when it has none, what `make` returns, storing the answer `make`
    /// gives (none: nothing remembered, e.g. a lookup in the archive comes
    /// first). `make` runs holding the key's slot in the current
    /// generation, so a repeat racing it waits and gets its answer; the
    /// common path is one lookup in the older generation (none while it is
    /// empty) and one entry in the current, where a check and a store took
    /// three. `make` must not touch this index.
    pub(crate) fn answer_once<R>(
        &self,
        key: &MessageKey,
        repeat: bool,
        content_crc: u32,
        make: impl FnOnce() -> (R, Option<Answer>),
    ) -> Result<R, Seen> {
        // The older generation first: it holds the first answer when a race
        // left one in each.
        let current = self.current.load(Ordering::Acquire) & 1;
        let older = (current + 1) & 1;
        if self.lens[older].load(Ordering::Relaxed) > 0 {
            if let Some(a) = self.generations[older].get(key).map(|a| *a) {
                return Err(judge(a, repeat, content_crc));
            }
        }
        match self.generations[current].entry(*key) {
            Entry::Occupied(o) => Err(judge(*o.get(), repeat, content_crc)),
            Entry::Vacant(v) => {
                let (made, answer) = make();
                if let Some(a) = answer {
                    v.insert(a);
                    self.lens[current].fetch_add(1, Ordering::Relaxed);
                }
                Ok(made)
            }
        }
    }

    /// Whether another answer fits.
    ///
    /// # Errors
    /// 96 when the index is full (the message must not be processed).
    pub(crate) fn room(&self) -> Result<(), Code> {
        if self.len() >= self.entries_max {
            metrics::counter!("switch_limit_reached_total", "limit" => "idempotency_entries_max")
                .increment(1);
            return Err(Code::SYSTEM_MALFUNCTION);
        }
        Ok(())
    }

    /// The answer remembered for `key`, if any.
    pub(crate) fn get(&self, key: &MessageKey) -> Option<Answer> {
        self.generations.iter().find_map(|g| g.get(key).map(|a| *a))
    }

    /// Stores the answer to `key` unless one is there (first wins).
    pub(crate) fn store(&self, key: MessageKey, answer: Answer) {
        // An answer already in the older generation is found first, so
        // this one would never be seen: first answer wins either way.
        let current = self.current.load(Ordering::Acquire) & 1;
        if let Entry::Vacant(v) = self.generations[current].entry(key) {
            v.insert(answer);
            self.lens[current].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.lens[0].load(Ordering::Relaxed) + self.lens[1].load(Ordering::Relaxed)
    }

    /// Most remembered answers (`limits.idempotency_entries_max`).
    pub(crate) fn len_max(&self) -> usize {
        self.entries_max
    }

    /// Whether the answer to `key` may have left memory for the archive:
    /// its F7 is at or before (within [`EVICTED_SLACK_MS`]) the latest F7
    /// that left for its terminal's bucket. One atomic load.
    pub(crate) fn may_be_archived(&self, key: &MessageKey, now_ms: u64) -> bool {
        let evicted = self.evicted_f7_ms[bucket(&key.terminal)].load(Ordering::Relaxed);
        if evicted == 0 {
            return false;
        }
        f7_ms(key.transmission, now_ms).is_none_or(|f7| f7 <= evicted + EVICTED_SLACK_MS)
    }

    /// After a restart beside an archive: which answers left memory in an
    /// earlier life is not known (the per-terminal summary starts empty),
    /// so every F7 up to `now_ms` may be archived and is asked of it;
    /// later ones cannot repeat an answer given before the restart.
    pub(crate) fn assume_left_through(&self, now_ms: u64) {
        for slot in self.evicted_f7_ms.iter() {
            slot.fetch_max(now_ms, Ordering::Relaxed);
        }
    }

    /// Rotates the generations when due: `window_ms` since the last
    /// rotation, or the current generation holding 40% of
    /// `limits.idempotency_entries_max`, or both together 80% of it (after
    /// recovery, which puts every answer of a snapshot in one generation:
    /// then the older must go too, not wait for new answers, which the
    /// switch's backpressure at 90% keeps from coming). The older generation is dropped
    /// (and becomes the current one) only when every answer in it has a
    /// journal sequence at or below `archived_seq`, so the archive can
    /// answer for it; its F7s are summarised per terminal bucket first.
    /// Walks the older generation (off the request path: the timers).
    /// Returns how many answers were dropped.
    pub(crate) fn rotate_if_due(&self, now_ms: u64, window_ms: u64, archived_seq: u64) -> usize {
        let last = self.rotated_at_ms.load(Ordering::Acquire);
        let current = self.current.load(Ordering::Acquire) & 1;
        let generation_max = generation_full(self.entries_max);
        let full = self.lens[current].load(Ordering::Relaxed) >= generation_max
            || self.len() >= 2 * generation_max;
        if now_ms.saturating_sub(last) < window_ms && !full {
            return 0;
        }
        let older = (current + 1) & 1;
        let mut summary = self
            .older_summary
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Walked once per generation, not once per timer pass while the
        // archive catches up (a walk of a million answers is tens of ms).
        // Answers stored into it after the walk would be missed: only a
        // store racing the rotation itself does that, microseconds after
        // it, while the walk comes a timer pass later.
        let (max_seq, latest) = summary.get_or_insert_with(|| {
            let mut latest = vec![0u64; EVICTED_BUCKETS];
            let mut max_seq = 0;
            for e in self.generations[older].iter() {
                max_seq = max_seq.max(e.value().seq);
                if let Some(f7) = f7_ms(e.key().transmission, now_ms) {
                    let b = &mut latest[bucket(&e.key().terminal)];
                    *b = (*b).max(f7);
                }
            }
            (max_seq, latest)
        });
        if *max_seq > archived_seq {
            metrics::counter!("switch_idempotency_rotations_deferred_total").increment(1);
            return 0;
        }
        let latest = std::mem::take(latest);
        *summary = None;
        drop(summary);
        for (slot, f7) in self.evicted_f7_ms.iter().zip(latest) {
            if f7 > 0 {
                slot.fetch_max(f7, Ordering::Relaxed);
            }
        }
        self.rotated_at_ms.store(now_ms, Ordering::Release);
        let dropped = self.generations[older].len();
        self.generations[older].clear();
        self.lens[older].store(0, Ordering::Relaxed);
        // New answers go to the cleared one; the other becomes the older.
        self.current.fetch_xor(1, Ordering::AcqRel);
        dropped
    }

    /// Every entry (snapshots).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&MessageKey, &Answer)) {
        for g in &self.generations {
            for e in g.iter() {
                f(e.key(), e.value());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(stan: u32) -> MessageKey {
        MessageKey {
            mti: 100,
            terminal: *b"DEMO0001",
            stan,
            transmission: 1123114959,
        }
    }

    fn answer(crc: u32, at_ms: u64) -> Answer {
        Answer {
            code: Code::APPROVED,
            rrn: *b"000000000001",
            auth_code: Some(*b"123456"),
            content_crc: crc,
            seq: 0,
            at_ms,
        }
    }

    #[test]
    fn repeats_and_conflicts() {
        let idx = Idempotency::new(2, 0);
        assert_eq!(idx.check(&key(1), false, 7), None);
        idx.store(key(1), answer(7, 10));
        assert_eq!(
            idx.check(&key(1), false, 7),
            Some(Seen::Again(answer(7, 10)))
        );
        assert_eq!(
            idx.check(&key(1), true, 8),
            Some(Seen::Again(answer(7, 10))),
            "a repeat gets the answer"
        );
        assert_eq!(idx.check(&key(1), false, 8), Some(Seen::Conflict));
        idx.store(key(1), answer(9, 11));
        assert_eq!(
            idx.check(&key(1), false, 7),
            Some(Seen::Again(answer(7, 10))),
            "first answer wins"
        );
    }

    #[test]
    fn bounded_and_ageing_by_generation() {
        let idx = Idempotency::new(8, 0);
        let all = u64::MAX;
        idx.store(key(1), answer(1, 10));
        idx.store(key(2), answer(1, 20));
        assert_eq!(idx.rotate_if_due(999, 1_000, all), 0, "not a window yet");
        // One window: the answers move to the older generation, still found.
        assert_eq!(idx.rotate_if_due(1_000, 1_000, all), 0);
        assert_eq!(
            idx.check(&key(1), true, 1),
            Some(Seen::Again(answer(1, 10)))
        );
        idx.store(key(3), answer(1, 1_500));
        assert_eq!(idx.len(), 3);
        // Two windows: the first two are gone, the third is kept.
        assert_eq!(idx.rotate_if_due(2_000, 1_000, all), 2);
        assert_eq!(idx.check(&key(1), true, 1), None);
        assert_eq!(
            idx.check(&key(3), true, 1),
            Some(Seen::Again(answer(1, 1_500)))
        );
        assert_eq!(idx.room(), Ok(()));
        // First answer wins across generations too.
        idx.store(key(3), answer(9, 2_100));
        assert_eq!(
            idx.check(&key(3), false, 1),
            Some(Seen::Again(answer(1, 1_500)))
        );
    }

    fn recorded(seq: u64) -> Answer {
        Answer {
            seq,
            ..answer(1, 0)
        }
    }

    #[test]
    fn a_full_generation_goes_early_only_once_archived() {
        let idx = Idempotency::new(5, 0);
        idx.store(key(1), recorded(1));
        idx.store(key(2), recorded(2));
        // 40% of the limit in the current generation: it becomes the older.
        assert_eq!(idx.rotate_if_due(10, 3_600_000, 0), 0);
        idx.store(key(3), recorded(3));
        idx.store(key(4), recorded(4));
        idx.store(key(5), recorded(5));
        assert_eq!(idx.room(), Err(Code::SYSTEM_MALFUNCTION));
        // The older generation holds seq 2; the archive only has 1.
        assert_eq!(idx.rotate_if_due(20, 3_600_000, 1), 0);
        assert_eq!(idx.check(&key(1), true, 1), Some(Seen::Again(recorded(1))));
        assert_eq!(idx.room(), Err(Code::SYSTEM_MALFUNCTION));
        // Archived: the first two go; memory has room again.
        assert_eq!(idx.rotate_if_due(30, 3_600_000, 2), 2);
        assert_eq!(idx.check(&key(1), true, 1), None);
        assert_eq!(idx.room(), Ok(()));
    }

    #[test]
    fn after_a_restart_every_earlier_f7_may_be_archived() {
        let now = f7_ms(1_123_114_959, 1_700_000_000_000).unwrap();
        let idx = Idempotency::new(5, now);
        assert!(!idx.may_be_archived(&key(1), now));
        idx.assume_left_through(now);
        assert!(
            idx.may_be_archived(&key(1), now),
            "given before the restart"
        );
        let later = MessageKey {
            transmission: 1_123_115_959,
            ..key(1)
        };
        assert!(!idx.may_be_archived(&later, now), "after it: new");
    }

    #[test]
    fn answers_recovered_into_one_generation_leave_without_new_ones() {
        let idx = Idempotency::new(10, 0);
        // As recovery leaves it: 90% of the limit, all in one generation.
        for i in 1..=9 {
            idx.store(key(i), recorded(u64::from(i)));
        }
        assert_eq!(
            idx.rotate_if_due(10, 3_600_000, 9),
            0,
            "the empty one goes first"
        );
        // No new answer comes (backpressure): the recovered ones go next.
        assert_eq!(idx.rotate_if_due(20, 3_600_000, 9), 9);
        assert_eq!(idx.len(), 0);
    }

    #[test]
    fn only_messages_at_or_before_what_left_may_be_archived() {
        // F7 11-23 11:49:59 of the year of `now`.
        let now = f7_ms(1_123_114_959, 1_700_000_000_000).unwrap();
        let idx = Idempotency::new(5, now);
        assert!(!idx.may_be_archived(&key(1), now), "nothing left memory");
        idx.store(key(1), recorded(1));
        idx.store(key(2), recorded(2));
        assert_eq!(idx.rotate_if_due(now, 3_600_000, 2), 0);
        assert_eq!(idx.rotate_if_due(now + 1, 1, 2), 2);
        // Same F7 (a repeat, or a STAN reused within the second): ask.
        assert!(idx.may_be_archived(&key(9), now));
        // An older F7 from the same terminal: ask.
        let older = MessageKey {
            transmission: 1_123_104_959,
            ..key(9)
        };
        assert!(idx.may_be_archived(&older, now));
        // A later F7 (past the slack): cannot be a repeat of what left.
        let later = MessageKey {
            transmission: 1_123_115_001,
            ..key(9)
        };
        assert!(!idx.may_be_archived(&later, now));
        // Another terminal (in another bucket) is not affected.
        let other = MessageKey {
            terminal: *b"OTHER001",
            ..key(9)
        };
        assert_ne!(bucket(&other.terminal), bucket(&key(9).terminal));
        assert!(!idx.may_be_archived(&other, now));
    }

    #[test]
    fn f7_takes_the_year_nearest_now() {
        // 2023-11-14T22:13:20Z.
        let now = 1_700_000_000_000;
        assert_eq!(f7_ms(1_114_221_320, now), Some(now));
        // 31 December seen on 1 January is last year's.
        let new_year = 1_704_067_200_000; // 2024-01-01T00:00:00Z
        assert_eq!(f7_ms(1_231_235_959, new_year), Some(new_year - 1_000));
        assert_eq!(f7_ms(1_332_000_000, now), None, "no month 13");
    }
}
