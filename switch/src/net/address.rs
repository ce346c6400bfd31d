//! Open connections per peer host, so that one host cannot take every
//! slot of a listener.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// The host a peer address counts as: an IPv4 address (IPv4-mapped IPv6
/// included), or the /64 of an IPv6 address, which one host usually holds
/// whole and can rotate through at will. Shared by the connection limit
/// and the log-in lockout.
pub(crate) fn host_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

/// Open connections per address of one listener, bounded by
/// `limits.connections_per_address_max`. The map holds one entry per
/// address with an open connection, so it is bounded by
/// `limits.connections_max`.
pub(crate) struct AddressLimit {
    /// Connections open per address.
    open: Mutex<HashMap<IpAddr, usize>>,
    /// `limits.connections_per_address_max`.
    per_address_max: usize,
}

impl AddressLimit {
    /// A limit of `per_address_max` connections per address.
    pub(crate) fn new(per_address_max: usize) -> Arc<Self> {
        Arc::new(AddressLimit {
            open: Mutex::new(HashMap::new()),
            per_address_max,
        })
    }

    /// A slot for a connection from `addr`, or `None` at the limit.
    pub(crate) fn acquire(self: &Arc<Self>, peer: IpAddr) -> Option<AddressSlot> {
        let addr = host_of(peer);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(addr).or_insert(0);
        if *n >= self.per_address_max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            limit: self.clone(),
            addr,
        })
    }

    /// Connections open from `addr`.
    #[cfg(test)]
    fn open(&self, addr: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&addr).copied().unwrap_or(0)
    }
}

/// One connection's place in its address's count; released on drop.
pub(crate) struct AddressSlot {
    /// The limit it counts against.
    limit: Arc<AddressLimit>,
    /// The peer's address.
    addr: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .limit
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_apart_and_released() {
        let limit = AddressLimit::new(2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let a1 = limit.acquire(a).expect("first");
        let _a2 = limit.acquire(a).expect("second");
        assert!(limit.acquire(a).is_none(), "third from a");
        let _b1 = limit.acquire(b).expect("b is not a");
        drop(a1);
        assert_eq!(limit.open(a), 1);
        assert!(limit.acquire(a).is_some(), "a slot freed");
    }

    #[test]
    fn an_ipv6_host_is_its_64() {
        let limit = AddressLimit::new(1);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = limit.acquire(one).expect("first");
        assert!(limit.acquire(same_64).is_none(), "same /64");
        assert!(limit.acquire(other_64).is_some(), "another /64");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let _v4 = limit.acquire("127.0.0.1".parse().unwrap()).expect("v4");
        assert!(
            limit.acquire(mapped).is_none(),
            "IPv4-mapped is the IPv4 host"
        );
    }
}
