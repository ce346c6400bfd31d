//! Which node should own a shard: rendezvous (highest random weight)
//! hashing over the live nodes.
//!
//! Every node scores every (shard, node) pair with a fixed, seedless hash
//! and the highest score wins, so every node computes the same owner from
//! the same set of nodes, with no leader; a node joining or leaving moves
//! only the shards it wins or held, about S/N of them. The desire only
//! starts a move: the owner is whoever holds the shard's etcd key.
//!
//! All nodes weigh the same in this slice (`cluster.weight` is not built):
//! with equal weights `-w / ln(U)` orders nodes as `U` does, so the score
//! is the hash itself, compared as an integer, exactly alike on every
//! machine. Velocity shards will use the same function with another salt.

/// The salt of payment shards' scores.
pub const SALT_PAYMENT: u8 = b'p';
/// The salt of velocity shards' scores (velocity shards are not built yet).
pub const SALT_VELOCITY: u8 = b'v';

/// The node that should own `shard` among `nodes`, or `None` when there
/// are none. Ties (equal hashes, never seen in practice) go to the
/// smaller node id, so the answer does not depend on the list's order.
pub fn owner(salt: u8, shard: u32, nodes: &[String]) -> Option<&str> {
    nodes
        .iter()
        .map(|n| (score(salt, shard, n), n))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, n)| n.as_str())
}

/// The score of `node` for `shard`: FNV-1a 64 over the salt, the shard's
/// four bytes and the node id, then a finalizer (MurmurHash3's `fmix64`)
/// so that node ids differing in one last character still spread: over
/// 4,096 shards FNV-1a alone gives n1..n4 1,024/512/512/2,048 shards,
/// with the finalizer 989/1,023/1,016/1,068.
pub fn score(salt: u8, shard: u32, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    eat(salt);
    shard.to_be_bytes().into_iter().for_each(&mut eat);
    node.bytes().for_each(&mut eat);
    fmix64(h)
}

/// MurmurHash3's 64-bit finalizer: every input bit flips about half of
/// the output bits.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_score_is_fixed() {
        // Pinned: a change here moves shards between versions of a cluster.
        assert_ne!(score(SALT_PAYMENT, 0, "n1"), score(SALT_VELOCITY, 0, "n1"));
        // Checked against an independent Python FNV-1a 64 + fmix64.
        assert_eq!(score(SALT_PAYMENT, 7, "n2"), 0xab03_be5b_269d_e6d9);
        assert_eq!(score(SALT_VELOCITY, 4_095, "node-a"), 0x005a_7c64_7a75_a5c3);
    }

    #[test]
    fn the_order_of_the_list_does_not_matter() {
        let a = nodes(&["n1", "n2", "n3"]);
        let b = nodes(&["n3", "n1", "n2"]);
        for s in 0..256 {
            assert_eq!(owner(SALT_PAYMENT, s, &a), owner(SALT_PAYMENT, s, &b));
        }
        assert_eq!(owner(SALT_PAYMENT, 0, &[]), None);
    }

    #[test]
    fn shards_spread_and_a_join_moves_only_the_newcomer_s() {
        let three = nodes(&["n1", "n2", "n3"]);
        let four = nodes(&["n1", "n2", "n3", "n4"]);
        let mut count = [0u32; 4];
        let mut moved = 0;
        for s in 0..4_096 {
            let before = owner(SALT_PAYMENT, s, &three).unwrap();
            let after = owner(SALT_PAYMENT, s, &four).unwrap();
            if before != after {
                assert_eq!(after, "n4", "shard {s} moved between old nodes");
                moved += 1;
            }
            count[usize::from(after.as_bytes()[1] - b'1')] += 1;
        }
        // 1,024 each on average; a fair hash stays well within 15%.
        for c in count {
            assert!((870..=1_180).contains(&c), "{count:?}");
        }
        assert_eq!(moved, count[3]);
    }
}

/// The payment shard of merchant `f42` (docs/cluster.md, The partition
/// key): FNV-1a 32 over F42's bytes, the seedless hash
/// `idempotency::bucket` uses, modulo `shard_count`; the same on every
/// node, version and tool.
pub fn shard_of_merchant(f42: &[u8], shard_count: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in f42 {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h % shard_count.max(1)
}

/// The shard whose owner counts card `token`'s velocity (docs/cluster.md,
/// Velocity across nodes, as built): the same hash over the card's keyed
/// token, modulo the payment shard count, so the card is counted by the
/// node that owns that payment shard, under its epoch and fence. The
/// token is a keyed hash already, so its shards are even.
pub fn shard_of_card(token: &[u8; 32], shard_count: u32) -> u32 {
    shard_of_merchant(token, shard_count)
}

#[cfg(test)]
mod merchant_shard_tests {
    use super::shard_of_merchant;

    #[test]
    fn merchant_shards_are_fnv1a_32_modulo_the_count() {
        // FNV-1a 32 of "a" is 0xe40c292c (the published test vector).
        assert_eq!(shard_of_merchant(b"a", u32::MAX), 0xe40c_292c);
        assert_eq!(shard_of_merchant(b"a", 16), 0xe40c_292c % 16);
        let s = shard_of_merchant(b"DEMO00000000001", 256);
        assert!(s < 256);
        assert_eq!(s, shard_of_merchant(b"DEMO00000000001", 256));
    }
}
