//! Sign-in lockouts by (operator name, address) and by address, so whoever
//! fails locks out only itself.
//!
//! Operator names are not secret (they show on every page, and people say
//! them aloud), so a lockout keyed by name alone would let anyone lock an
//! operator out from every browser. Here failures lock:
//! - the pair (name, address) after [`PAIR_FAILURES_MAX`]: the operator
//!   still signs in from another address;
//! - the address after [`ADDRESS_FAILURES_MAX`], across names known or not:
//!   one address cannot try many names.
//!
//! Both within [`LOCKOUT_S`] of the first failure, until [`LOCKOUT_S`] after
//! it. An address is an IPv4 address or an IPv6 /64. Both tables are
//! bounded; when one is full of live entries, new entries are not tracked
//! (see [`Table::fail`]). Time is a parameter.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};

use crate::config::OPERATOR_NAME_BYTES_MAX;

/// Failed sign-ins for one (operator name, address) that lock that pair
/// out.
pub(crate) const PAIR_FAILURES_MAX: u32 = 5;
/// Failed sign-ins from one address, across names, that lock the address
/// out: above the pair's limit so that one operator's mistyped password
/// does not lock out colleagues at the same desk, low enough that an
/// address tries few names.
pub(crate) const ADDRESS_FAILURES_MAX: u32 = 20;
/// How long failures are counted from the first, and how long from it a
/// lockout lasts.
pub(crate) const LOCKOUT_S: u64 = 300;
/// Most (name, address) pairs tracked: each holds a name of at most
/// `OPERATOR_NAME_BYTES_MAX` bytes.
const PAIRS_MAX: usize = 10_000;
/// Most addresses tracked.
const ADDRESSES_MAX: usize = 10_000;
/// Least time between two sweeps of stale entries: a sweep walks a whole
/// table, so it runs at most this often rather than on every failure.
const SWEEP_INTERVAL_S: u64 = 1;

const _: () = assert!(PAIR_FAILURES_MAX > 1 && ADDRESS_FAILURES_MAX > PAIR_FAILURES_MAX);
const _: () = assert!(SWEEP_INTERVAL_S < LOCKOUT_S);

/// Failures of one pair or address within the current window.
#[derive(Clone, Copy, Debug)]
struct Failures {
    /// Failures counted since `since_s`.
    count: u32,
    /// Start of the window: the first failure.
    since_s: u64,
}

impl Failures {
    fn ends_s(&self) -> u64 {
        self.since_s.saturating_add(LOCKOUT_S)
    }
}

/// Failures by key, at most `entries_max`, stale ones swept out.
#[derive(Debug)]
struct Table<K> {
    /// The counts.
    failures: HashMap<K, Failures>,
    /// [`PAIRS_MAX`] or [`ADDRESSES_MAX`]; a field so tests can use less.
    entries_max: usize,
    /// Named in the log line when full.
    limit: &'static str,
    /// Last sweep.
    swept_s: u64,
    /// Whether the full table was logged since the last sweep: one line
    /// per interval, not one per failure, during a flood.
    full_logged: bool,
}

impl<K: Hash + Eq> Table<K> {
    fn new(entries_max: usize, limit: &'static str) -> Table<K> {
        Table {
            failures: HashMap::new(),
            entries_max,
            limit,
            swept_s: 0,
            full_logged: false,
        }
    }

    fn locked(&self, key: &K, failures_max: u32, now_s: u64) -> bool {
        self.failures
            .get(key)
            .is_some_and(|f| f.count >= failures_max && now_s < f.ends_s())
    }

    /// Counts a failure of `key`; true when it starts a lockout.
    ///
    /// When the table is full of live entries, a new key is not tracked:
    /// the keys that filled it (the flood) stay counted and locked, and
    /// nobody is locked out for it.
    fn fail(&mut self, key: K, failures_max: u32, now_s: u64) -> bool {
        if now_s.saturating_sub(self.swept_s) >= SWEEP_INTERVAL_S {
            self.failures.retain(|_, f| now_s < f.ends_s());
            self.swept_s = now_s;
            self.full_logged = false;
        }
        let full = self.failures.len() >= self.entries_max;
        let fresh = Failures {
            count: 0,
            since_s: now_s,
        };
        let entry = match self.failures.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) if !full => e.insert(fresh),
            Entry::Vacant(_) => {
                if !self.full_logged {
                    self.full_logged = true;
                    tracing::warn!(
                        limit = self.limit,
                        entries_max = self.entries_max,
                        "sign-in lockout table full: new failures not tracked"
                    );
                }
                return false;
            }
        };
        if now_s >= entry.ends_s() {
            *entry = fresh;
        }
        entry.count = entry.count.saturating_add(1);
        entry.count == failures_max
    }

    fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }
}

/// Failure counts by pair and by address.
#[derive(Debug)]
pub(crate) struct Lockouts {
    /// By (name, address), unknown names too: otherwise a lockout after a
    /// few tries would tell which names exist.
    pairs: Table<(String, IpAddr)>,
    /// By address, across names.
    addresses: Table<IpAddr>,
}

impl Default for Lockouts {
    fn default() -> Lockouts {
        Lockouts::with_limits(PAIRS_MAX, ADDRESSES_MAX)
    }
}

impl Lockouts {
    fn with_limits(pairs_max: usize, addresses_max: usize) -> Lockouts {
        Lockouts {
            pairs: Table::new(pairs_max, "pairs_max"),
            addresses: Table::new(addresses_max, "addresses_max"),
        }
    }

    /// Whether `name` from `peer` is refused without a check.
    pub(crate) fn locked(&self, name: &str, peer: IpAddr, now_s: u64) -> bool {
        let address = address(peer);
        self.pairs
            .locked(&pair(name, address), PAIR_FAILURES_MAX, now_s)
            || self.addresses.locked(&address, ADDRESS_FAILURES_MAX, now_s)
    }

    /// Counts a failed sign-in; logs a lockout that begins.
    pub(crate) fn fail(&mut self, name: &str, peer: IpAddr, now_s: u64) {
        let address = address(peer);
        if self
            .pairs
            .fail(pair(name, address), PAIR_FAILURES_MAX, now_s)
        {
            lockout_began("pair", name, address);
        }
        if self.addresses.fail(address, ADDRESS_FAILURES_MAX, now_s) {
            lockout_began("address", name, address);
        }
    }

    /// A sign-in worked: the pair starts afresh. The address keeps its
    /// count, or one operator's password would let its holder reset the
    /// count between guesses at others.
    pub(crate) fn succeed(&mut self, name: &str, peer: IpAddr) {
        self.pairs.forget(&pair(name, address(peer)));
    }
}

fn lockout_began(scope: &'static str, name: &str, address: IpAddr) {
    tracing::warn!(
        operator = ?name,
        %address,
        scope,
        lockout_s = LOCKOUT_S,
        "sign-in failures: locked out"
    );
}

/// The address failures are charged to: an IPv4 address (IPv4-mapped IPv6
/// included), or the /64 of an IPv6 address, which one host usually holds
/// whole and can rotate through at will.
fn address(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

/// The pair's key, the name cut to [`OPERATOR_NAME_BYTES_MAX`]: the form
/// allows 16 KiB. A cut name can share a key with a configured one only
/// from its own address, which locks out nobody else.
fn pair(name: &str, address: IpAddr) -> (String, IpAddr) {
    let mut end = name.len().min(OPERATOR_NAME_BYTES_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    (name[..end].to_string(), address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_pair_locks_at_its_limit_and_the_address_across_names() {
        let mut l = Lockouts::default();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        for _ in 0..PAIR_FAILURES_MAX {
            l.fail("alice", a, 10);
        }
        assert!(l.locked("alice", a, 11) && !l.locked("alice", b, 11));
        assert!(!l.locked("bob", a, 11), "the address is under its limit");
        for i in PAIR_FAILURES_MAX..ADDRESS_FAILURES_MAX {
            l.fail(&format!("guess{i}"), a, 12);
        }
        assert!(l.locked("bob", a, 13) && !l.locked("bob", b, 13));
        assert!(
            !l.locked("bob", a, 10 + LOCKOUT_S),
            "from the first failure"
        );
    }

    #[test]
    fn long_names_are_cut_and_ipv6_is_charged_by_its_64() {
        let mut l = Lockouts::default();
        let long = "é".repeat(1_000);
        for i in 0..PAIR_FAILURES_MAX {
            l.fail(&long, ip(&format!("2001:db8::{i}")), 0);
        }
        let (key, _) = l.pairs.failures.keys().next().expect("one pair");
        assert!(key.len() <= OPERATOR_NAME_BYTES_MAX);
        assert_eq!(l.pairs.failures.len(), 1, "one /64");
        assert!(l.locked(&long, ip("2001:db8::ffff"), 1));
        assert!(!l.locked(&long, ip("2001:db8:0:1::1"), 1));
    }

    #[test]
    fn full_tables_track_no_new_entry_and_lock_nobody_else() {
        let mut l = Lockouts::with_limits(2, 2);
        for a in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
            for i in 0..ADDRESS_FAILURES_MAX {
                l.fail(&format!("n{i}"), ip(a), 10);
            }
        }
        assert_eq!((l.pairs.failures.len(), l.addresses.failures.len()), (2, 2));
        assert!(l.locked("alice", ip("192.0.2.1"), 11), "first flooder");
        assert!(!l.locked("alice", ip("192.0.2.4"), 11), "bystander");
        l.fail("alice", ip("192.0.2.4"), 10 + LOCKOUT_S);
        assert_eq!(l.addresses.failures.len(), 1, "stale ones swept");
    }
}
