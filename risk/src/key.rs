//! Fixed-size keys for cards and terminals, and the hasher for them.
//!
//! Card keys are HMAC outputs the client cannot choose, and terminal keys
//! come from terminals the switch has already validated, so a fast
//! non-keyed hash (Fx mixing with a murmur3 finalizer) is safe here and
//! several times cheaper than SipHash.

use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::context::CardToken;

/// Bytes of F42 the contract allows.
pub(crate) const MERCHANT_ID_BYTES_MAX: usize = 15;
/// Bytes of F41 the contract allows.
pub(crate) const TERMINAL_ID_BYTES_MAX: usize = 8;

/// Whose counters a velocity key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Subject {
    /// A card, all channels.
    Card = 0,
    /// A card, MO/TO only.
    CardMoto = 1,
    /// A merchant's terminal.
    Terminal = 2,
}

impl Subject {
    pub(crate) const COUNT: usize = 3;
}

/// A velocity or block-list key: a 32-byte id, whose counters, and the
/// currency for amount counters (0 for count counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    /// Card token, or merchant and terminal id packed by [`terminal_id`].
    pub(crate) id: [u8; 32],
    /// Card, card MO/TO or terminal.
    pub(crate) subject: Subject,
    /// ISO 4217 numeric for amount counters; 0 for counts over all currencies.
    pub(crate) currency: u16,
}

impl Key {
    pub(crate) fn card(token: CardToken, subject: Subject, currency: u16) -> Key {
        Key {
            id: token.0,
            subject,
            currency,
        }
    }

    /// 64-bit hash, also used to pick a shard.
    pub(crate) fn hash64(&self) -> u64 {
        let mut hasher = KeyHasher::default();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for word in self.id.chunks_exact(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            state.write_u64(u64::from_le_bytes(bytes));
        }
        state.write_u64(u64::from(self.subject as u8) << 16 | u64::from(self.currency));
    }
}

/// Packs merchant and terminal ids into 32 bytes: merchant in 0..15,
/// terminal in 15..23, their lengths in 23 and 24, and byte 25 set if either
/// was longer than the contract allows (then truncated; the switch refuses
/// such messages with 30 before risk).
pub(crate) fn terminal_id(merchant_id: &str, terminal_id: &str) -> [u8; 32] {
    let mut id = [0u8; 32];
    let merchant = merchant_id.as_bytes();
    let terminal = terminal_id.as_bytes();
    let merchant_len = merchant.len().min(MERCHANT_ID_BYTES_MAX);
    let terminal_len = terminal.len().min(TERMINAL_ID_BYTES_MAX);
    id[..merchant_len].copy_from_slice(&merchant[..merchant_len]);
    id[15..15 + terminal_len].copy_from_slice(&terminal[..terminal_len]);
    id[23] = merchant_len as u8;
    id[24] = terminal_len as u8;
    id[25] = u8::from(merchant.len() > merchant_len || terminal.len() > terminal_len);
    id
}

/// Fx-style multiply-rotate hasher with a murmur3 finalizer.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

/// `BuildHasher` for maps keyed by [`Key`] and by packed ids.
pub(crate) type KeyHasherBuild = BuildHasherDefault<KeyHasher>;

const FX_SEED: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(word) ^ (rest.len() as u64) << 59);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_ids_differ_by_merchant_and_terminal() {
        let a = terminal_id("DEMO00000000001", "DEMO0001");
        assert_ne!(a, terminal_id("DEMO00000000002", "DEMO0001"));
        assert_ne!(a, terminal_id("DEMO00000000001", "DEMO0002"));
        assert_ne!(terminal_id("AB", "C"), terminal_id("A", "BC"));
        assert_eq!(a[25], 0);
        assert_eq!(terminal_id("DEMO000000000011", "DEMO0001")[25], 1);
    }
}
