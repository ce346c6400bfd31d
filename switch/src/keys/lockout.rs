//! The log-in limiter: failed log-ins counted by (client id, address) and
//! by address, so whoever fails locks out only itself.
//!
//! Client ids are not secret (they sit in configuration files and logs),
//! so a lockout keyed by client id alone would let anyone lock a merchant
//! out from everywhere. Here failures lock:
//! - the pair (client id, address) after [`PAIR_FAILURES_MAX`]: the same key
//!   from another address still logs in;
//! - the address after [`ADDRESS_FAILURES_MAX`], across client ids known or
//!   unknown: one address cannot try many ids.
//!
//! Both within [`FAILURE_WINDOW_MS`], for [`LOCKOUT_MS`]. An address is an
//! IPv4 address or an IPv6 /64. Both tables are bounded; when one is full
//! of live entries, new entries are not tracked (see [`Table::fail`]).
//! No I/O and no clock: `now_ms` is a parameter.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// Failed log-ins for one (client id, address) within the window that lock
/// that pair out.
pub(crate) const PAIR_FAILURES_MAX: u32 = 5;
/// Failed log-ins from one address, across client ids, that lock the
/// address out: above the pair's limit so that one mistyped key does not
/// take a provider's other keys on that host with it, low enough that an
/// address tries few ids a minute.
pub(crate) const ADDRESS_FAILURES_MAX: u32 = 20;
/// The window failures are counted in.
pub(crate) const FAILURE_WINDOW_MS: u64 = 60_000;
/// How long a locked-out pair or address is refused.
pub(crate) const LOCKOUT_MS: u64 = 60_000;
/// Most (client id, address) pairs tracked.
const PAIRS_MAX: usize = 10_000;
/// Most addresses tracked.
const ADDRESSES_MAX: usize = 10_000;
/// Least time between two sweeps of stale entries: a sweep walks a whole
/// table, so it runs at most this often rather than on every failure.
const SWEEP_INTERVAL_MS: u64 = 1_000;
/// Bytes of a client id kept as a key: the codec accepts exactly 12
/// (`XX-0000-0000`).
const CLIENT_ID_BYTES: usize = 12;

const _: () = assert!(PAIR_FAILURES_MAX > 1 && ADDRESS_FAILURES_MAX > PAIR_FAILURES_MAX);
const _: () = assert!(LOCKOUT_MS >= FAILURE_WINDOW_MS && SWEEP_INTERVAL_MS < FAILURE_WINDOW_MS);
// An address holds about ADDRESS_FAILURES_MAX live pairs before it is
// locked out, so filling the pair table takes a hundred addresses or more.
const _: () = assert!((ADDRESS_FAILURES_MAX as usize) * 100 <= PAIRS_MAX);

/// A client id as a fixed-size key: no allocation per log-in.
type ClientKey = [u8; CLIENT_ID_BYTES];

/// Which lockout began; the label of `switch_auth_lockouts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// One client id from one address.
    Pair,
    /// Every client id from one address.
    Address,
}

impl Scope {
    fn label(self) -> &'static str {
        match self {
            Scope::Pair => "pair",
            Scope::Address => "address",
        }
    }
}

/// Failures of one pair or address.
#[derive(Clone, Copy, Debug)]
struct Tally {
    /// Start of the current counting window, ms.
    window_start_ms: u64,
    /// Failures in the window.
    failures: u32,
    /// Refused until then, ms.
    locked_until_ms: u64,
}

impl Tally {
    fn new(now_ms: u64) -> Tally {
        Tally {
            window_start_ms: now_ms,
            failures: 0,
            locked_until_ms: 0,
        }
    }

    /// Neither locked nor counting: forgetting it changes nothing.
    fn stale(&self, now_ms: u64) -> bool {
        now_ms >= self.locked_until_ms
            && now_ms.saturating_sub(self.window_start_ms) >= FAILURE_WINDOW_MS
    }

    /// Counts a failure; true when it starts a lockout.
    fn fail(&mut self, failures_max: u32, now_ms: u64) -> bool {
        if now_ms.saturating_sub(self.window_start_ms) >= FAILURE_WINDOW_MS {
            self.window_start_ms = now_ms;
            self.failures = 0;
        }
        self.failures += 1;
        if self.failures < failures_max {
            return false;
        }
        self.locked_until_ms = now_ms.saturating_add(LOCKOUT_MS);
        self.failures = 0;
        true
    }
}

/// Tallies by key, at most `entries_max`, stale ones swept out.
#[derive(Debug)]
struct Table<K> {
    /// The tallies.
    tallies: HashMap<K, Tally>,
    /// [`PAIRS_MAX`] or [`ADDRESSES_MAX`]; a field so tests can use less.
    entries_max: usize,
    /// The `switch_limit_reached_total` label when full.
    limit: &'static str,
    /// Last sweep, ms.
    swept_ms: u64,
    /// Whether the full table was logged since the last sweep: one line
    /// per interval, not one per failure, during a flood.
    full_logged: bool,
}

impl<K: Hash + Eq> Table<K> {
    fn new(entries_max: usize, limit: &'static str) -> Table<K> {
        Table {
            tallies: HashMap::new(),
            entries_max,
            limit,
            swept_ms: 0,
            full_logged: false,
        }
    }

    fn locked(&self, key: &K, now_ms: u64) -> bool {
        self.tallies
            .get(key)
            .is_some_and(|t| now_ms < t.locked_until_ms)
    }

    /// Counts a failure of `key`; true when it starts a lockout.
    ///
    /// When the table is full of live entries, a new key is not tracked:
    /// the keys that filled it (the flood) stay counted and locked, and
    /// nobody is locked out for it. What goes uncounted is guessing at
    /// 256-bit secrets, which counting does not make safer anyway.
    fn fail(&mut self, key: K, failures_max: u32, now_ms: u64) -> bool {
        if now_ms.saturating_sub(self.swept_ms) >= SWEEP_INTERVAL_MS {
            self.tallies.retain(|_, t| !t.stale(now_ms));
            self.swept_ms = now_ms;
            self.full_logged = false;
        }
        let full = self.tallies.len() >= self.entries_max;
        match self.tallies.entry(key) {
            Entry::Occupied(e) => e.into_mut().fail(failures_max, now_ms),
            Entry::Vacant(e) if !full => e.insert(Tally::new(now_ms)).fail(failures_max, now_ms),
            Entry::Vacant(_) => {
                metrics::counter!("switch_limit_reached_total", "limit" => self.limit).increment(1);
                if !self.full_logged {
                    self.full_logged = true;
                    tracing::warn!(
                        limit = self.limit,
                        entries_max = self.entries_max,
                        "log-in limiter full: new failures not tracked"
                    );
                }
                false
            }
        }
    }

    fn forget(&mut self, key: &K) {
        self.tallies.remove(key);
    }
}

/// Failure counts by pair and by address.
#[derive(Debug)]
pub(crate) struct Limiter {
    /// By (client id, address), unknown ids too: otherwise a lockout
    /// after a few tries would tell which client ids exist.
    pairs: Table<(ClientKey, IpAddr)>,
    /// By address, across client ids.
    addresses: Table<IpAddr>,
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter::with_limits(PAIRS_MAX, ADDRESSES_MAX)
    }
}

impl Limiter {
    fn with_limits(pairs_max: usize, addresses_max: usize) -> Limiter {
        Limiter {
            pairs: Table::new(pairs_max, "auth_pairs_max"),
            addresses: Table::new(addresses_max, "auth_addresses_max"),
        }
    }

    /// Whether `client_id` from `peer` is refused without a check.
    pub(crate) fn locked(&self, client_id: &str, peer: IpAddr, now_ms: u64) -> bool {
        let address = address(peer);
        self.pairs.locked(&(client_key(client_id), address), now_ms)
            || self.addresses.locked(&address, now_ms)
    }

    /// Counts a failed log-in; logs and measures a lockout that begins.
    pub(crate) fn fail(&mut self, client_id: &str, peer: IpAddr, now_ms: u64) {
        let address = address(peer);
        let pair = (client_key(client_id), address);
        if self.pairs.fail(pair, PAIR_FAILURES_MAX, now_ms) {
            lockout_began(Scope::Pair, client_id, address);
        }
        if self.addresses.fail(address, ADDRESS_FAILURES_MAX, now_ms) {
            lockout_began(Scope::Address, client_id, address);
        }
    }

    /// A log-in worked: the pair starts afresh. The address keeps its
    /// count, or one valid key would let its holder reset the count
    /// between guesses at others.
    pub(crate) fn succeed(&mut self, client_id: &str, peer: IpAddr) {
        self.pairs.forget(&(client_key(client_id), address(peer)));
    }
}

fn lockout_began(scope: Scope, client_id: &str, address: IpAddr) {
    metrics::counter!("switch_auth_lockouts_total", "scope" => scope.label()).increment(1);
    tracing::warn!(
        client_id,
        %address,
        scope = scope.label(),
        lockout_ms = LOCKOUT_MS,
        "internal-frame log-ins locked out"
    );
}

/// The address failures are charged to: the host
/// ([`crate::net::host_of`]: an IPv4 address, or an IPv6 /64).
fn address(peer: IpAddr) -> IpAddr {
    crate::net::host_of(peer)
}

/// The first [`CLIENT_ID_BYTES`] of `client_id`, zero-padded. A longer id
/// (the codec lets none through) could share a key with a real one only
/// from its own address, which locks out nobody else.
fn client_key(client_id: &str) -> ClientKey {
    let mut key = [0u8; CLIENT_ID_BYTES];
    let n = client_id.len().min(CLIENT_ID_BYTES);
    key[..n].copy_from_slice(&client_id.as_bytes()[..n]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn ipv6_is_charged_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(address(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(address(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        let mut l = Limiter::default();
        for i in 0..PAIR_FAILURES_MAX {
            l.fail("MK-0000-0001", ip(&format!("2001:db8::{i}")), 0);
        }
        assert!(
            l.locked("MK-0000-0001", ip("2001:db8::ffff"), 1),
            "same /64"
        );
        assert!(!l.locked("MK-0000-0001", ip("2001:db8:0:1::1"), 1));
    }

    #[test]
    fn a_full_pair_table_still_counts_the_address() {
        let mut l = Limiter::with_limits(2, ADDRESSES_MAX);
        let a = ip("192.0.2.1");
        for i in 0..ADDRESS_FAILURES_MAX {
            l.fail(&format!("MK-0000-{i:04}"), a, 10);
        }
        assert_eq!(l.pairs.tallies.len(), 2, "bounded");
        assert!(l.locked("MK-0000-9999", a, 11), "the address still locks");
        assert!(!l.locked("MK-0000-9999", ip("192.0.2.2"), 11));
    }

    #[test]
    fn a_full_address_table_tracks_no_new_address_and_locks_nobody_else() {
        let mut l = Limiter::with_limits(PAIRS_MAX, 2);
        for a in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
            for _ in 0..ADDRESS_FAILURES_MAX {
                l.fail("MK-0000-0001", ip(a), 10);
            }
        }
        assert_eq!(l.addresses.tallies.len(), 2, "bounded");
        assert!(
            l.locked("MK-0000-0002", ip("192.0.2.1"), 11),
            "first flooder"
        );
        assert!(!l.locked("MK-0000-0002", ip("192.0.2.3"), 11), "untracked");
        assert!(!l.locked("MK-0000-0002", ip("192.0.2.4"), 11), "bystander");
    }

    #[test]
    fn stale_entries_are_swept_and_make_room() {
        let mut l = Limiter::with_limits(PAIRS_MAX, 1);
        l.fail("MK-0000-0001", ip("192.0.2.1"), 0);
        let later_ms = FAILURE_WINDOW_MS;
        l.fail("MK-0000-0001", ip("192.0.2.2"), later_ms);
        assert_eq!(l.addresses.tallies.len(), 1);
        assert!(l.addresses.tallies.contains_key(&ip("192.0.2.2")));
        assert_eq!(l.pairs.tallies.len(), 1, "the stale pair went too");
    }

    #[test]
    fn a_lockout_lasts_its_time_and_success_clears_only_the_pair() {
        let mut l = Limiter::default();
        let a = ip("192.0.2.1");
        for _ in 0..PAIR_FAILURES_MAX {
            l.fail("MK-0000-0001", a, 5_000);
        }
        assert!(l.locked("MK-0000-0001", a, 5_000 + LOCKOUT_MS - 1));
        assert!(!l.locked("MK-0000-0001", a, 5_000 + LOCKOUT_MS));
        l.succeed("MK-0000-0001", a);
        assert!(l.pairs.tallies.is_empty());
        assert_eq!(l.addresses.tallies.len(), 1, "the address keeps count");
    }
}
