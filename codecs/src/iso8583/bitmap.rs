//! Primary and secondary bitmaps as one `u128`.
//!
//! Field `n` (1..=128) is bit `128 - n`: field 1 is the most significant
//! bit, as on the wire, so the primary bitmap is the high 64 bits.

/// The set of fields present in a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bitmap(pub u128);

impl Bitmap {
    pub(crate) const fn mask(n: u8) -> u128 {
        1u128 << (128 - n as u32)
    }

    /// Whether field `n` is present; false outside 1..=128.
    pub const fn has(self, n: u8) -> bool {
        n >= 1 && n <= 128 && self.0 & Self::mask(n) != 0
    }

    /// Marks field `n` present (1..=128); other values are ignored.
    pub fn set(&mut self, n: u8) {
        if (1..=128).contains(&n) {
            self.0 |= Self::mask(n);
        }
    }

    /// Whether any field above 64 is present (a secondary bitmap is needed).
    pub const fn needs_secondary(self) -> bool {
        self.0 & (u64::MAX as u128) != 0
    }

    /// The present fields in ascending order, skipping field 1 (which only
    /// says that a secondary bitmap follows).
    pub fn fields(self) -> Fields {
        Fields(self.0 & !Self::mask(1))
    }

    /// The primary bitmap's 8 bytes as on the wire.
    pub const fn primary_bytes(self) -> [u8; 8] {
        ((self.0 >> 64) as u64).to_be_bytes()
    }

    /// The secondary bitmap's 8 bytes as on the wire.
    pub const fn secondary_bytes(self) -> [u8; 8] {
        (self.0 as u64).to_be_bytes()
    }
}

/// Iterator over the present field numbers; at most 127 steps.
#[derive(Clone, Debug)]
pub struct Fields(u128);

impl Iterator for Fields {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        if self.0 == 0 {
            return None;
        }
        let leading = self.0.leading_zeros();
        self.0 &= !(1u128 << (127 - leading));
        // leading <= 127, so the field number fits a u8.
        Some((leading + 1) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_out_in_order() {
        let mut b = Bitmap::default();
        for n in [128, 2, 64, 65, 3, 1] {
            b.set(n);
        }
        assert_eq!(b.fields().collect::<Vec<_>>(), vec![2, 3, 64, 65, 128]);
        assert!(b.has(1) && b.has(128) && !b.has(4) && !b.has(0) && !b.has(129));
        assert!(b.needs_secondary());
        assert_eq!(b.primary_bytes()[0], 0b1110_0000);
        assert_eq!(b.secondary_bytes()[7], 1);
    }

    #[test]
    fn primary_only_needs_no_secondary() {
        let mut b = Bitmap::default();
        b.set(64);
        assert!(!b.needs_secondary());
        assert_eq!(b.primary_bytes()[7], 1);
    }
}
