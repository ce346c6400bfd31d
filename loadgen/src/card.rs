//! Luhn-valid test card numbers, one per index, never the blocklisted one.

/// Digits of a generated PAN.
pub(crate) const PAN_DIGITS: usize = 16;
/// Prefix of every generated PAN: a Visa-like BIN that cannot produce the
/// blocklisted test card 4000000000000002.
const PAN_PREFIX: &[u8; 2] = b"41";
/// Digits between the prefix and the check digit.
const INDEX_DIGITS: usize = PAN_DIGITS - PAN_PREFIX.len() - 1;
/// Distinct PANs the generator can make; indexes wrap modulo this.
pub(crate) const CARD_INDEX_LIMIT: u64 = 10u64.pow(INDEX_DIGITS as u32);

const _: () = assert!(PAN_DIGITS >= codecs::card::PAN_DIGITS_MIN);
const _: () = assert!(PAN_DIGITS <= codecs::card::PAN_DIGITS_MAX);

/// The PAN for card `index` (taken modulo [`CARD_INDEX_LIMIT`]).
pub(crate) fn pan(index: u64) -> [u8; PAN_DIGITS] {
    let mut out = [b'0'; PAN_DIGITS];
    out[..PAN_PREFIX.len()].copy_from_slice(PAN_PREFIX);
    let mut v = index % CARD_INDEX_LIMIT;
    for slot in out[PAN_PREFIX.len()..PAN_DIGITS - 1].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    // The body is all ASCII digits (the prefix and `b'0' + v % 10`), so it
    // always has a check digit: `None` would be a bug here, not bad input.
    out[PAN_DIGITS - 1] =
        codecs::card::luhn_check_digit(&out[..PAN_DIGITS - 1]).expect("a PAN body of ASCII digits");
    debug_assert!(codecs::card::luhn_valid(&out));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pan_is_luhn_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for i in (0..10_000).chain(CARD_INDEX_LIMIT - 10..CARD_INDEX_LIMIT + 10) {
            let p = pan(i);
            assert!(
                codecs::card::luhn_valid(&p),
                "{}",
                String::from_utf8_lossy(&p)
            );
            assert_ne!(&p, b"4000000000000002");
            seen.insert(p);
        }
        assert_eq!(seen.len(), 10_000 + 10);
    }
}
