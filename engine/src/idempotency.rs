//! Answers to messages already seen, so repeats get the very same answer.
//!
//! The key is the MTI without its repeat digit, F41, F11 and F7. Entries
//! age out after the configured window and the map is bounded.

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
    /// Journal sequence of the answer's record (0 when none); a repeat's
    /// answer waits for it like the original's.
    pub seq: u64,
    /// When answered, for ageing out.
    pub at_ms: u64,
}

/// What the index says about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Never answered: process it.
    New,
    /// Answered before with the same content, or a repeat: answer again.
    Again(Answer),
    /// A new message with an answered key but other content: 94.
    Conflict,
}

/// The bounded index, in two generations so that ageing out never walks
/// the entries: answers go into the current generation; every window the
/// older one is cleared and becomes the current one. An answer is therefore
/// kept at least one window and less than two.
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
        }
    }

    fn newer(&self) -> &DashMap<MessageKey, Answer, MapHasher> {
        &self.generations[self.current.load(Ordering::Acquire) & 1]
    }

    fn older(&self) -> &DashMap<MessageKey, Answer, MapHasher> {
        &self.generations[(self.current.load(Ordering::Acquire) + 1) & 1]
    }

    /// The older generation first: it holds the first answer when a race
    /// left one in each, so `store` need not look there.
    fn find(&self, key: &MessageKey) -> Option<Answer> {
        self.older()
            .get(key)
            .or_else(|| self.newer().get(key))
            .map(|a| *a)
    }

    /// Looks a message up. `repeat` is whether its MTI says so.
    pub(crate) fn check(&self, key: &MessageKey, repeat: bool, content_crc: u32) -> Seen {
        match self.find(key) {
            None => Seen::New,
            Some(a) if repeat || a.content_crc == content_crc => Seen::Again(a),
            Some(_) => Seen::Conflict,
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

    /// Once `window_ms` has passed since the last rotation, drops the older
    /// generation (cleared, not walked) and makes it the current one.
    /// Returns how many answers were dropped.
    pub(crate) fn rotate_if_due(&self, now_ms: u64, window_ms: u64) -> usize {
        let last = self.rotated_at_ms.load(Ordering::Acquire);
        if now_ms.saturating_sub(last) < window_ms {
            return 0;
        }
        self.rotated_at_ms.store(now_ms, Ordering::Release);
        let older = (self.current.load(Ordering::Acquire) + 1) & 1;
        // Walked once a window, not per message.
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
        assert_eq!(idx.check(&key(1), false, 7), Seen::New);
        idx.store(key(1), answer(7, 10));
        assert_eq!(idx.check(&key(1), false, 7), Seen::Again(answer(7, 10)));
        assert_eq!(
            idx.check(&key(1), true, 8),
            Seen::Again(answer(7, 10)),
            "a repeat gets the answer"
        );
        assert_eq!(idx.check(&key(1), false, 8), Seen::Conflict);
        idx.store(key(1), answer(9, 11));
        assert_eq!(
            idx.check(&key(1), false, 7),
            Seen::Again(answer(7, 10)),
            "first answer wins"
        );
    }

    #[test]
    fn bounded_and_ageing_by_generation() {
        let idx = Idempotency::new(2, 0);
        idx.store(key(1), answer(1, 10));
        idx.store(key(2), answer(1, 20));
        assert_eq!(idx.room(), Err(Code::SYSTEM_MALFUNCTION));
        assert_eq!(idx.rotate_if_due(999, 1_000), 0, "not a window yet");
        // One window: the answers move to the older generation, still found.
        assert_eq!(idx.rotate_if_due(1_000, 1_000), 0);
        assert_eq!(idx.check(&key(1), true, 1), Seen::Again(answer(1, 10)));
        idx.store(key(3), answer(1, 1_500));
        assert_eq!(idx.len(), 3);
        // Two windows: the first two are gone, the third is kept.
        assert_eq!(idx.rotate_if_due(2_000, 1_000), 2);
        assert_eq!(idx.check(&key(1), true, 1), Seen::New);
        assert_eq!(idx.check(&key(3), true, 1), Seen::Again(answer(1, 1_500)));
        assert_eq!(idx.room(), Ok(()));
        // First answer wins across generations too.
        idx.store(key(3), answer(9, 2_100));
        assert_eq!(idx.check(&key(3), false, 1), Seen::Again(answer(1, 1_500)));
    }
}
