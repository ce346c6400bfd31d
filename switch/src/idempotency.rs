//! Answers to messages already seen, so repeats get the very same answer.
//!
//! The key is the MTI without its repeat digit, F41, F11 and F7. Entries
//! age out after the configured window and the map is bounded.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::code::Code;

/// The key of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MessageKey {
    /// MTI without the repeat digit, as a number (100, 200, 220, 400, 420).
    pub(crate) mti: u16,
    /// F41.
    pub(crate) terminal: [u8; 8],
    /// F11.
    pub(crate) stan: u32,
    /// F7 as a number.
    pub(crate) transmission: u64,
}

/// The answer given to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// F39.
    pub(crate) code: Code,
    /// F37.
    pub(crate) rrn: [u8; 12],
    /// F38, on approval.
    pub(crate) auth_code: Option<[u8; 6]>,
    /// Checksum of the request's content (bitmap and fields).
    pub(crate) content_crc: u32,
    /// Journal sequence of the answer's record (0 when none); a repeat's
    /// answer waits for it like the original's.
    pub(crate) seq: u64,
    /// When answered, for ageing out.
    pub(crate) at_ms: u64,
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

/// The bounded index.
pub(crate) struct Idempotency {
    /// Answers by key.
    map: DashMap<MessageKey, Answer>,
    /// Most entries (`limits.idempotency_entries_max`).
    entries_max: usize,
    /// Entries refused at the limit, for the metric.
    refused: AtomicU64,
}

impl Idempotency {
    /// An empty index of at most `entries_max` entries.
    pub(crate) fn new(entries_max: usize) -> Self {
        Idempotency {
            map: DashMap::new(),
            entries_max,
            refused: AtomicU64::new(0),
        }
    }

    /// Looks a message up. `repeat` is whether its MTI says so.
    pub(crate) fn check(&self, key: &MessageKey, repeat: bool, content_crc: u32) -> Seen {
        match self.map.get(key) {
            None => Seen::New,
            Some(a) if repeat || a.content_crc == content_crc => Seen::Again(*a),
            Some(_) => Seen::Conflict,
        }
    }

    /// Records an answer.
    ///
    /// # Errors
    /// 96 when the index is full (the message must not be processed).
    pub(crate) fn room(&self) -> Result<(), Code> {
        if self.map.len() >= self.entries_max {
            self.refused.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("switch_limit_reached_total", "limit" => "idempotency_entries_max")
                .increment(1);
            return Err(Code::SYSTEM_MALFUNCTION);
        }
        Ok(())
    }

    /// Stores the answer to `key` unless one is there (first wins).
    pub(crate) fn store(&self, key: MessageKey, answer: Answer) {
        if let Entry::Vacant(v) = self.map.entry(key) {
            v.insert(answer);
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops answers older than `cutoff_ms`; returns how many.
    pub(crate) fn expire(&self, cutoff_ms: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, a| a.at_ms >= cutoff_ms);
        before.saturating_sub(self.map.len())
    }

    /// Every entry (snapshots).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&MessageKey, &Answer)) {
        for e in self.map.iter() {
            f(e.key(), e.value());
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
        let idx = Idempotency::new(2);
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
    fn bounded_and_ageing() {
        let idx = Idempotency::new(2);
        idx.store(key(1), answer(1, 10));
        idx.store(key(2), answer(1, 20));
        assert_eq!(idx.room(), Err(Code::SYSTEM_MALFUNCTION));
        assert_eq!(idx.expire(15), 1);
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.room(), Ok(()));
        assert_eq!(idx.check(&key(1), true, 1), Seen::New);
    }
}
