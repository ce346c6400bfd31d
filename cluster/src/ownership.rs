//! What a node does about each shard at one poll: a pure function from
//! what etcd holds (live nodes, owner keys) and what the node holds to a
//! [`Plan`]. No I/O, no clock: [`crate::member`] reads etcd, applies the
//! plan, and keeps the lease deadline.
//!
//! The rules (`docs/cluster.md`, Assignment):
//! - a shard with **no owner key** is acquired by its desired owner
//!   (rendezvous over the live nodes, [`crate::assign`]);
//! - a shard whose key **holds our lease** but that we do not count as
//!   ours (a create whose answer was lost) is adopted, with the key's
//!   create revision as its epoch;
//! - a shard we own but that **another live node should own** is released
//!   (graceful hand-over: we stop counting it, then delete the key only if
//!   it is still our creation; its desired owner then acquires it), at
//!   most `release_max` a poll;
//! - a shard we count as ours whose key is **gone or another's** is lost
//!   (our lease expired, or an operator deleted it).
//!
//! A node that does not see its own node key decides nothing but losses:
//! rendezvous without itself would release everything it owns.
//!
//! A **draining** node (its node key says `draining`, [`View::draining`])
//! is live but desired for nothing: its shards are released to the active
//! nodes and it acquires none. When no node is active, nothing is
//! released (no one could take it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::assign;
use crate::etcd::LeaseId;

/// Most payment shards (`cluster.shard_count`'s range, `docs/cluster.md`).
pub const SHARD_COUNT_MAX: u32 = 4_096;
/// Fewest payment shards.
pub const SHARD_COUNT_MIN: u32 = 16;
/// Most nodes in one cluster: rendezvous costs shards × nodes hashes a
/// poll (4,096 × 128 ≈ 0.5 M, a few ms), and the design's range is ~64.
pub const NODES_MAX: usize = 128;
/// Longest node id (`[a-z0-9-]{1,32}`).
pub const NODE_ID_BYTES_MAX: usize = 32;

/// The value of an owner key (`<prefix>/shards/<s>`), JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// The owning node.
    pub node_id: String,
    /// Its lease (the key is attached to it).
    pub lease: LeaseId,
}

/// A shard's owner as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardOwner {
    /// The key's value.
    pub record: OwnerRecord,
    /// The key's create revision: the ownership's epoch.
    pub epoch: i64,
}

/// What etcd holds, read at one poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The live nodes' ids (their node keys exist), any order.
    pub nodes: Vec<String>,
    /// Owner keys by shard.
    pub owners: BTreeMap<u32, ShardOwner>,
    /// Of `nodes`, those whose node key says `draining`: live (their keys
    /// stay theirs) but desired for no shard.
    pub draining: Vec<String>,
}

/// What to do at this poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Shards we count as ours whose key is gone or another's: stop at once.
    pub lost: Vec<u32>,
    /// Shards to hand over: stop counting them, then delete the key if its
    /// create revision is still this epoch.
    pub release: Vec<(u32, i64)>,
    /// Keys holding our lease that we did not count: ours, at this epoch.
    pub adopt: Vec<(u32, i64)>,
    /// Shards with no key whose desired owner is us: create the key.
    pub acquire: Vec<u32>,
}

/// The plan of node `me`, holding `lease` and counting `held` (shard →
/// epoch) as its own, over `shard_count` shards, given `view`.
pub fn plan(
    me: &str,
    lease: LeaseId,
    shard_count: u32,
    held: &BTreeMap<u32, i64>,
    view: &View,
    release_max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let visible = view.nodes.iter().any(|n| n == me);
    let active: Vec<String> = view
        .nodes
        .iter()
        .filter(|n| !view.draining.contains(n))
        .cloned()
        .collect();
    for s in 0..shard_count.min(SHARD_COUNT_MAX) {
        let owner = view.owners.get(&s);
        let ours = owner.is_some_and(|o| o.record.lease == lease && o.record.node_id == me);
        let mut holding = held.get(&s).copied();
        if let Some(epoch) = holding {
            if !ours || owner.is_some_and(|o| o.epoch != epoch) {
                plan.lost.push(s);
                holding = None;
            }
        }
        if !visible {
            continue;
        }
        let desired = assign::owner(assign::SALT_PAYMENT, s, &active);
        match owner {
            None if desired == Some(me) => plan.acquire.push(s),
            None => {}
            Some(o) if ours => {
                // Released only to another node: with none active, kept.
                let elsewhere = desired.is_some_and(|d| d != me);
                if elsewhere && plan.release.len() < release_max {
                    plan.release.push((s, o.epoch));
                } else if holding.is_none() {
                    plan.adopt.push((s, o.epoch));
                }
            }
            Some(_) => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(nodes: &[&str], owners: &[(u32, &str, LeaseId, i64)]) -> View {
        View {
            nodes: nodes.iter().map(|s| (*s).to_owned()).collect(),
            owners: owners
                .iter()
                .map(|&(s, n, lease, epoch)| {
                    let record = OwnerRecord {
                        node_id: n.to_owned(),
                        lease,
                    };
                    (s, ShardOwner { record, epoch })
                })
                .collect(),
            draining: Vec::new(),
        }
    }

    /// The shards `me` should own among `nodes`, of 16.
    fn desired(me: &str, nodes: &[&str]) -> Vec<u32> {
        let nodes: Vec<String> = nodes.iter().map(|s| (*s).to_owned()).collect();
        (0..16)
            .filter(|&s| assign::owner(assign::SALT_PAYMENT, s, &nodes) == Some(me))
            .collect()
    }

    #[test]
    fn a_lone_node_acquires_every_free_shard() {
        let p = plan("a", 1, 16, &BTreeMap::new(), &view(&["a"], &[]), 4);
        assert_eq!(p.acquire, (0..16).collect::<Vec<_>>());
        assert!(p.release.is_empty() && p.lost.is_empty() && p.adopt.is_empty());
    }

    #[test]
    fn an_invisible_node_acquires_nothing_and_releases_nothing() {
        let held = BTreeMap::from([(3, 10)]);
        let p = plan("a", 1, 16, &held, &view(&["b"], &[(3, "a", 1, 10)]), 4);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn a_join_releases_the_newcomer_s_shards_a_few_at_a_time() {
        let owners: Vec<_> = (0..16).map(|s| (s, "a", 1, 100 + i64::from(s))).collect();
        let held: BTreeMap<u32, i64> = owners.iter().map(|o| (o.0, o.3)).collect();
        let p = plan("a", 1, 16, &held, &view(&["a", "b"], &owners), 2);
        let for_b = desired("b", &["a", "b"]);
        assert!(for_b.len() > 2, "{for_b:?}");
        assert_eq!(
            p.release,
            for_b[..2]
                .iter()
                .map(|&s| (s, 100 + i64::from(s)))
                .collect::<Vec<_>>()
        );
        assert!(p.acquire.is_empty() && p.lost.is_empty() && p.adopt.is_empty());
        // b waits for the keys to go, then takes them.
        let p = plan("b", 2, 16, &BTreeMap::new(), &view(&["a", "b"], &owners), 2);
        assert_eq!(p, Plan::default());
        let rest: Vec<_> = owners
            .iter()
            .copied()
            .filter(|o| !for_b.contains(&o.0))
            .collect();
        let p = plan("b", 2, 16, &BTreeMap::new(), &view(&["a", "b"], &rest), 2);
        assert_eq!(p.acquire, for_b);
    }

    #[test]
    fn a_key_gone_or_taken_is_lost_and_our_own_key_is_adopted() {
        let held = BTreeMap::from([(0, 5), (1, 6), (2, 7)]);
        let v = view(&["a"], &[(1, "b", 2, 9), (2, "a", 1, 8), (3, "a", 1, 11)]);
        let p = plan("a", 1, 4, &held, &v, 4);
        // 0: key gone; 1: another node's; 2: ours but a newer epoch than we
        // counted (we lost it in between): lost, then adopted at 8.
        assert_eq!(p.lost, vec![0, 1, 2]);
        assert_eq!(p.adopt, vec![(2, 8), (3, 11)]);
        assert_eq!(p.acquire, vec![0]);
    }

    #[test]
    fn a_draining_node_hands_everything_to_the_active_ones_and_acquires_nothing() {
        let owners: Vec<_> = (0..16).map(|s| (s, "a", 1, 100 + i64::from(s))).collect();
        let held: BTreeMap<u32, i64> = owners.iter().map(|o| (o.0, o.3)).collect();
        let mut v = view(&["a", "b"], &owners);
        v.draining = vec!["a".to_owned()];
        let p = plan("a", 1, 16, &held, &v, 16);
        assert_eq!(p.release.len(), 16, "{p:?}");
        // The active node takes each key once it is gone.
        let p = plan("b", 2, 16, &BTreeMap::new(), &view(&["a", "b"], &[]), 4);
        assert_eq!(p.acquire.len(), desired("b", &["a", "b"]).len());
        let mut v = view(&["a", "b"], &[]);
        v.draining = vec!["a".to_owned()];
        let p = plan("b", 2, 16, &BTreeMap::new(), &v, 4);
        assert_eq!(p.acquire, (0..16).collect::<Vec<_>>());
        let p = plan("a", 1, 16, &BTreeMap::new(), &v, 4);
        assert!(p.acquire.is_empty(), "{p:?}");
        // Alone, a draining node keeps what it has: nobody could take it.
        let mut v = view(&["a"], &owners);
        v.draining = vec!["a".to_owned()];
        assert_eq!(plan("a", 1, 16, &held, &v, 16), Plan::default());
    }

    /// etcd as the plan sees it: owner keys with their lease and create
    /// revision, one revision counter; nodes with their lease and claims.
    #[derive(Default)]
    struct Model {
        revision: i64,
        keys: BTreeMap<u32, (String, LeaseId, i64)>,
        nodes: BTreeMap<String, (LeaseId, BTreeMap<u32, i64>)>,
        next_lease: LeaseId,
    }

    impl Model {
        fn view(&self) -> View {
            View {
                nodes: self.nodes.keys().cloned().collect(),
                owners: self
                    .keys
                    .iter()
                    .map(|(&s, (n, lease, epoch))| {
                        let record = OwnerRecord {
                            node_id: n.clone(),
                            lease: *lease,
                        };
                        (
                            s,
                            ShardOwner {
                                record,
                                epoch: *epoch,
                            },
                        )
                    })
                    .collect(),
                draining: Vec::new(),
            }
        }

        /// One poll of `node`, applied as `member` applies it.
        fn poll(&mut self, node: &str, release_max: usize) {
            let view = self.view();
            let Some((lease, held)) = self.nodes.get_mut(node) else {
                return;
            };
            let p = plan(node, *lease, 16, held, &view, release_max);
            for s in &p.lost {
                held.remove(s);
            }
            for (s, epoch) in &p.release {
                held.remove(s);
                if self.keys.get(s).is_some_and(|k| k.2 == *epoch) {
                    self.keys.remove(s);
                }
            }
            for &(s, epoch) in &p.adopt {
                held.insert(s, epoch);
            }
            for s in p.acquire {
                if !self.keys.contains_key(&s) {
                    self.revision += 1;
                    self.keys
                        .insert(s, (node.to_owned(), *lease, self.revision));
                    held.insert(s, self.revision);
                }
            }
        }

        /// Every claim is the key etcd holds: so no shard has two claimants.
        fn check(&self) {
            for (node, (lease, held)) in &self.nodes {
                for (s, epoch) in held {
                    assert_eq!(
                        self.keys.get(s),
                        Some(&(node.clone(), *lease, *epoch)),
                        "{node} claims {s}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn claims_are_always_etcd_s_keys_and_converge_to_rendezvous(
            events in proptest::collection::vec((0u8..3, 0usize..4), 1..60),
            release_max in 1usize..5,
        ) {
            const NAMES: [&str; 4] = ["n0", "n1", "n2", "n3"];
            let mut m = Model::default();
            for (kind, i) in events {
                let name = NAMES[i];
                match kind {
                    // Join: a new lease; a live node polls instead.
                    0 if !m.nodes.contains_key(name) => {
                        m.next_lease += 1;
                        m.nodes.insert(name.to_owned(), (m.next_lease, BTreeMap::new()));
                    }
                    // Crash: the lease expires, its keys go.
                    1 => {
                        if let Some((lease, _)) = m.nodes.remove(name) {
                            m.keys.retain(|_, k| k.1 != lease);
                        }
                    }
                    _ => m.poll(name, release_max),
                }
                m.check();
            }
            // Quiet: every node polls until the hand-overs are done.
            let names: Vec<String> = m.nodes.keys().cloned().collect();
            for _ in 0..(16 / release_max + 3) {
                for n in &names {
                    m.poll(n, release_max);
                    m.check();
                }
            }
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            for n in &names {
                let held: Vec<u32> = m.nodes[n].1.keys().copied().collect();
                proptest::prop_assert_eq!(held, desired(n, &refs));
            }
            proptest::prop_assert_eq!(m.keys.len(), if names.is_empty() { 0 } else { 16 });
        }
    }
}
