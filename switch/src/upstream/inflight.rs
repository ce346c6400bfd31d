//! One link's requests awaiting their answers: a slab of slots (no
//! allocation per request once it has grown to the link's in-flight
//! limit) indexed by (answer MTI class, F11).
//!
//! A slot lives from the request being queued until its caller has taken
//! the result or given up (timed out, dropped). The index entry goes as
//! soon as an answer or a failure is delivered, so an answer that comes
//! after that finds nothing and is counted late.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::ExchangeError;

/// An answer's key: its MTI's first three digits (version, class,
/// function) in bits 32..56, its F11 in bits 0..32.
pub(super) type Key = u64;

/// The key of an answer with MTI digits `mti` (the origin digit is
/// ignored) and F11 `stan`.
pub(super) fn key(mti: &[u8; 4], stan: u32) -> Key {
    let [v, c, f, _] = *mti;
    (u64::from(v) << 48) | (u64::from(c) << 40) | (u64::from(f) << 32) | u64::from(stan)
}

/// Keys are spread by one multiplication (Fibonacci hashing): they are
/// small distinct numbers chosen by the switch, so SipHash's defence
/// against chosen keys buys nothing here; the issuer only looks keys up.
#[derive(Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// What became of a request, as its slot holds it.
enum State {
    /// Unused, on the free list.
    Free,
    /// Queued or sent; the caller's waker once it has polled.
    Waiting(Option<Waker>),
    /// Answered or failed; the caller has not taken it yet.
    Done(Result<Bytes, ExchangeError>),
}

struct Slot {
    /// The index entry, removed at delivery.
    key: Key,
    /// The request's F41, checked against the answer's when both have one.
    terminal: Option<[u8; 8]>,
    /// Bumped at every reuse, so a stale ticket never reads a new request.
    generation: u32,
    state: State,
}

/// Why a request could not take a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// At the link's in-flight limit.
    Full,
    /// The same key already awaits an answer on this link.
    Duplicate,
}

/// Why an answer was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unmatched {
    /// No request awaits this key: it timed out, or was never sent.
    Unknown,
    /// A request awaits the key, but for another F41; it keeps waiting.
    OtherTerminal,
}

/// One ticket: which slot, which use of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ticket {
    index: u32,
    generation: u32,
}

/// The map of one link.
pub(super) struct InFlight {
    slots: Vec<Slot>,
    /// Indexes of `Free` slots.
    free: Vec<u32>,
    /// Keys awaiting an answer → slot index.
    index: HashMap<Key, u32, BuildHasherDefault<KeyHasher>>,
    /// Slots not `Free`: the link's room is `capacity - used`.
    used: usize,
    /// `inflight_per_link_max`.
    capacity: usize,
}

impl InFlight {
    /// An empty map for at most `capacity` requests (at least 1).
    pub(super) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        InFlight {
            slots: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            index: HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
            used: 0,
            capacity,
        }
    }

    /// Slots in use (waiting, or done and not yet taken).
    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// Requests still awaiting an answer.
    pub(super) fn waiting(&self) -> usize {
        self.index.len()
    }

    /// Takes a slot for a request whose answer has key `key`.
    pub(super) fn insert(
        &mut self,
        key: Key,
        terminal: Option<[u8; 8]>,
    ) -> Result<Ticket, Refusal> {
        if self.used >= self.capacity {
            return Err(Refusal::Full);
        }
        if self.index.contains_key(&key) {
            return Err(Refusal::Duplicate);
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len()).map_err(|_| Refusal::Full)?;
                self.slots.push(Slot {
                    key,
                    terminal,
                    generation: 0,
                    state: State::Free,
                });
                i
            }
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return Err(Refusal::Full);
        };
        debug_assert!(matches!(slot.state, State::Free), "a free slot was in use");
        slot.key = key;
        slot.terminal = terminal;
        slot.generation = slot.generation.wrapping_add(1);
        slot.state = State::Waiting(None);
        self.index.insert(key, index);
        self.used += 1;
        Ok(Ticket {
            index,
            generation: slot.generation,
        })
    }

    /// Delivers an answer; returns the waker to wake (after unlocking).
    pub(super) fn deliver(
        &mut self,
        key: Key,
        terminal: Option<&[u8]>,
        body: Bytes,
    ) -> Result<Option<Waker>, Unmatched> {
        let &index = self.index.get(&key).ok_or(Unmatched::Unknown)?;
        let slot = self
            .slots
            .get_mut(index as usize)
            .ok_or(Unmatched::Unknown)?;
        if let (Some(ours), Some(theirs)) = (&slot.terminal, terminal) {
            if ours.as_slice() != theirs {
                return Err(Unmatched::OtherTerminal);
            }
        }
        self.index.remove(&key);
        let waker = match std::mem::replace(&mut slot.state, State::Done(Ok(body))) {
            State::Waiting(w) => w,
            State::Free | State::Done(_) => None,
        };
        Ok(waker)
    }

    /// Fails every request still waiting with `error` (the link closed),
    /// collecting their wakers into `wakers`.
    pub(super) fn fail_all(&mut self, error: ExchangeError, wakers: &mut Vec<Waker>) {
        for (_, index) in self.index.drain() {
            if let Some(slot) = self.slots.get_mut(index as usize) {
                if let State::Waiting(w) =
                    std::mem::replace(&mut slot.state, State::Done(Err(error)))
                {
                    wakers.extend(w);
                }
            }
        }
    }

    /// The caller polls its ticket: the result once there (and the slot is
    /// freed), else its waker is kept.
    pub(super) fn poll(
        &mut self,
        ticket: Ticket,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Bytes, ExchangeError>> {
        let Some(slot) = self.slot_of(ticket) else {
            // Freed under the caller: cannot happen while it holds the ticket.
            return Poll::Ready(Err(ExchangeError::LinkLost));
        };
        match &mut slot.state {
            State::Waiting(w) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            State::Done(_) => match std::mem::replace(&mut slot.state, State::Free) {
                State::Done(r) => {
                    self.release(ticket.index);
                    Poll::Ready(r)
                }
                State::Free | State::Waiting(_) => Poll::Ready(Err(ExchangeError::LinkLost)),
            },
            State::Free => Poll::Ready(Err(ExchangeError::LinkLost)),
        }
    }

    /// The caller gave up (timed out, dropped): the request leaves the
    /// map, so its answer, if it comes, is late. `true` when a slot was
    /// freed.
    pub(super) fn cancel(&mut self, ticket: Ticket) -> bool {
        let Some(slot) = self.slot_of(ticket) else {
            return false;
        };
        let key = slot.key;
        match std::mem::replace(&mut slot.state, State::Free) {
            State::Waiting(_) => {
                self.index.remove(&key);
            }
            State::Done(_) => {}
            State::Free => return false,
        }
        self.release(ticket.index);
        true
    }

    fn slot_of(&mut self, ticket: Ticket) -> Option<&mut Slot> {
        self.slots
            .get_mut(ticket.index as usize)
            .filter(|s| s.generation == ticket.generation)
    }

    fn release(&mut self, index: u32) {
        self.free.push(index);
        self.used -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn answer_by_key_frees_the_slot_once_taken() {
        let mut m = InFlight::new(2);
        let a = m.insert(key(b"0110", 1), Some(*b"TERM0001")).expect("room");
        let b = m.insert(key(b"0110", 2), None).expect("room");
        assert_eq!(m.insert(key(b"0110", 3), None), Err(Refusal::Full));
        assert!(m.poll(a, &mut cx()).is_pending());
        assert_eq!(
            m.deliver(key(b"0110", 1), Some(b"TERM0002"), Bytes::new())
                .err(),
            Some(Unmatched::OtherTerminal)
        );
        assert!(m
            .deliver(key(b"0110", 1), Some(b"TERM0001"), Bytes::from_static(b"x"))
            .is_ok());
        assert_eq!(
            m.deliver(key(b"0110", 1), None, Bytes::new()).err(),
            Some(Unmatched::Unknown),
            "a second answer is late"
        );
        assert_eq!(m.used(), 2, "the slot stays until the caller takes it");
        assert!(matches!(m.poll(a, &mut cx()), Poll::Ready(Ok(b)) if &b[..] == b"x"));
        assert_eq!(m.used(), 1);
        assert!(m.cancel(b));
        assert_eq!((m.used(), m.waiting()), (0, 0));
        assert_eq!(
            m.deliver(key(b"0110", 2), None, Bytes::new()).err(),
            Some(Unmatched::Unknown),
            "an answer after its request gave up is late"
        );
        let c = m.insert(key(b"0110", 2), None).expect("reused");
        assert!(
            !m.cancel(b),
            "a stale ticket does not touch the new request"
        );
        assert_eq!(m.waiting(), 1);
        assert!(m.cancel(c));
    }

    #[test]
    fn the_same_key_twice_is_refused_and_classes_differ() {
        let mut m = InFlight::new(4);
        m.insert(key(b"0110", 7), None).expect("room");
        assert_eq!(m.insert(key(b"0111", 7), None), Err(Refusal::Duplicate));
        m.insert(key(b"0430", 7), None).expect("another class");
        let mut wakers = Vec::new();
        m.fail_all(ExchangeError::LinkLost, &mut wakers);
        assert_eq!(m.waiting(), 0);
        assert_eq!(m.used(), 2, "failed requests wait for their callers");
    }
}
