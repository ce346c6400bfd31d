//! Card numbers: Luhn check, masking for display, keyed tokens for storage.
//!
//! The clear PAN lives only in [`Pan`], which borrows it from the frame
//! buffer between decode and tokenization; its `Debug` is masked and it has
//! no `Display`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shortest and longest PAN accepted.
pub const PAN_DIGITS_MIN: usize = 12;
/// Longest PAN (ISO/IEC 7812).
pub const PAN_DIGITS_MAX: usize = 19;

/// A clear card number borrowed from the input.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pan<'a>(&'a [u8]);

impl<'a> Pan<'a> {
    /// Wraps 12 to 19 ASCII digits; `None` otherwise. Luhn is not checked
    /// here (see [`Pan::luhn_ok`]) so the caller can answer 14 rather than 30.
    pub fn new(digits: &'a [u8]) -> Option<Self> {
        let ok = (PAN_DIGITS_MIN..=PAN_DIGITS_MAX).contains(&digits.len())
            && digits.iter().all(u8::is_ascii_digit);
        ok.then_some(Pan(digits))
    }

    /// Whether the check digit is right.
    pub fn luhn_ok(&self) -> bool {
        luhn_valid(self.0)
    }

    /// The masked form for display and records.
    pub fn masked(&self) -> MaskedPan {
        MaskedPan::new(self.0)
    }

    /// The first six digits (issuer identification) as a number.
    pub fn bin(&self) -> u32 {
        self.0
            .iter()
            .take(6)
            .fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'))
    }

    /// The clear digits; use only to tokenize or to forward.
    pub fn expose(&self) -> &'a [u8] {
        self.0
    }
}

impl std::fmt::Debug for Pan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

/// Luhn (mod 10) check over ASCII digits; false for non-digits or empty.
///
/// The one Luhn of the workspace: the switch, the risk policy, the virtual
/// terminal and the test-card generators all call it, so they cannot
/// disagree on which card numbers are well typed.
pub fn luhn_valid(digits: &[u8]) -> bool {
    // The check digit is the last one, at position 0 from the right.
    luhn_sum(digits, 1).is_some_and(|sum| sum % 10 == 0)
}

/// The check digit (ASCII) that makes `body` followed by it Luhn-valid;
/// `None` if `body` is empty or holds a non-digit.
///
/// For making test and load-generator card numbers from a body, so they
/// are valid by the same rule [`luhn_valid`] checks.
pub fn luhn_check_digit(body: &[u8]) -> Option<u8> {
    // The check digit will take position 0, so the body's last digit is at
    // position 1 and is doubled.
    let sum = luhn_sum(body, 0)?;
    // Below 10 after the last `% 10`, so the cast keeps every bit.
    Some(b'0' + ((10 - sum % 10) % 10) as u8)
}

/// The Luhn sum of `digits`, doubling those whose position from the right
/// has parity `doubled_parity`; `None` for non-digits or empty.
#[inline]
fn luhn_sum(digits: &[u8], doubled_parity: usize) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    let mut sum = 0u32;
    for (i, &c) in digits.iter().rev().enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        let mut d = u32::from(c - b'0');
        if i % 2 == doubled_parity {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    Some(sum)
}

/// A PAN with everything but the BIN (first 6) and last 4 replaced by `*`;
/// a PAN shorter than 16 digits keeps only its last 4. Fixed capacity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskedPan {
    /// Masked digits, `len` of them in use.
    bytes: [u8; PAN_DIGITS_MAX],
    /// Digits in use.
    len: u8,
}

impl MaskedPan {
    /// Masks `digits` (at most 19 are kept).
    pub fn new(digits: &[u8]) -> Self {
        let len = digits.len().min(PAN_DIGITS_MAX);
        let mut bytes = [b'*'; PAN_DIGITS_MAX];
        let head = if len >= 16 { 6 } else { 0 };
        let tail = if len >= 8 { 4 } else { 0 };
        for (i, slot) in bytes.iter_mut().enumerate().take(len) {
            if i < head || i >= len - tail {
                *slot = digits.get(i).copied().unwrap_or(b'*');
            }
        }
        MaskedPan {
            bytes,
            len: len as u8,
        }
    }

    /// From an already masked string (as stored in records); `None` when it
    /// is too long or shows more than BIN and last 4.
    #[allow(
        clippy::indexing_slicing,
        reason = "len <= PAN_DIGITS_MAX checked above"
    )]
    pub fn from_masked(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        let len = b.len();
        if len > PAN_DIGITS_MAX {
            return None;
        }
        let clear = b.iter().filter(|c| c.is_ascii_digit()).count();
        if clear > 10 || !b.iter().all(|&c| c.is_ascii_digit() || c == b'*') {
            return None;
        }
        let mut bytes = [b'*'; PAN_DIGITS_MAX];
        bytes[..len].copy_from_slice(b);
        Some(MaskedPan {
            bytes,
            len: len as u8,
        })
    }

    /// The masked text.
    pub fn as_str(&self) -> &str {
        let digits = self.bytes.get(..usize::from(self.len)).unwrap_or(&[]);
        std::str::from_utf8(digits).unwrap_or("")
    }
}

impl std::fmt::Display for MaskedPan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for MaskedPan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MaskedPan({})", self.as_str())
    }
}

/// A keyed token of a PAN (HMAC-SHA-256): stable for one key, so it can
/// index payments, velocity counters and block lists without the PAN.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CardToken(pub [u8; 32]);

impl std::fmt::Debug for CardToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CardToken(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl CardToken {
    /// Lower-case hex, for records and exports.
    #[allow(clippy::indexing_slicing, reason = "nibbles index a 16-entry table")]
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
        }
        s
    }
}

/// The secret key that makes tokens; its `Debug` hides it.
#[derive(Clone)]
pub struct TokenKey {
    /// The keyed HMAC state, cloned per token so the key is hashed once.
    mac: Hmac<Sha256>,
}

impl TokenKey {
    /// A key from secret bytes (any length; 32 random bytes recommended).
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        TokenKey { mac }
    }

    /// The token of `pan`.
    pub fn token(&self, pan: &Pan<'_>) -> CardToken {
        self.token_of_digits(pan.0)
    }

    /// The token of clear digits (configuration block lists, tests).
    pub fn token_of_digits(&self, digits: &[u8]) -> CardToken {
        let mut mac = self.mac.clone();
        mac.update(digits);
        CardToken(mac.finalize().into_bytes().into())
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(luhn_valid(b"4000000000000002"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(!luhn_valid(b"4000000000000003"));
        assert!(!luhn_valid(b"41111111x1111111"));
        assert!(!luhn_valid(b""));
    }

    #[test]
    fn check_digit_completes_a_luhn_valid_number() {
        assert_eq!(luhn_check_digit(b"411111111111111"), Some(b'1'));
        assert_eq!(luhn_check_digit(b"400000000000000"), Some(b'2'));
        // A body whose sum is already a multiple of 10 takes 0, not 10.
        assert_eq!(luhn_check_digit(b"0"), Some(b'0'));
        assert_eq!(luhn_check_digit(b""), None);
        assert_eq!(luhn_check_digit(b"41x1"), None);
        for seed in 0..2_000u32 {
            let mut pan = format!("411111{seed:09}").into_bytes();
            let check = luhn_check_digit(&pan).expect("digits");
            pan.push(check);
            assert!(luhn_valid(&pan), "{}", String::from_utf8_lossy(&pan));
            // Any other check digit fails: the check digit is unique.
            for other in (b'0'..=b'9').filter(|&d| d != check) {
                *pan.last_mut().expect("pushed") = other;
                assert!(!luhn_valid(&pan));
            }
        }
    }

    #[test]
    fn masks_show_bin_and_last_four_at_most() {
        let pan = Pan::new(b"4111111111111111").expect("valid");
        assert_eq!(pan.masked().as_str(), "411111******1111");
        assert_eq!(format!("{pan:?}"), "Pan(411111******1111)");
        assert_eq!(MaskedPan::new(b"123456789012").as_str(), "********9012");
        assert_eq!(
            MaskedPan::new(b"1234567890123456789").as_str(),
            "123456*********6789"
        );
        assert_eq!(pan.bin(), 411111);
        assert!(Pan::new(b"41111111111").is_none());
        assert!(Pan::new(b"41111111111111111111").is_none());
        assert!(MaskedPan::from_masked("4111111111111111").is_none());
        assert_eq!(
            MaskedPan::from_masked("411111******1111").map(|m| m.len),
            Some(16)
        );
    }

    #[test]
    fn tokens_are_keyed_and_stable() {
        let k1 = TokenKey::new(b"one");
        let k2 = TokenKey::new(b"two");
        let pan = Pan::new(b"4111111111111111").expect("valid");
        assert_eq!(k1.token(&pan), k1.token_of_digits(b"4111111111111111"));
        assert_ne!(k1.token(&pan), k2.token(&pan));
        assert!(!format!("{:?}", k1.token(&pan)).contains("4111"));
        assert_eq!(format!("{k1:?}"), "TokenKey(***)");
        assert_eq!(k1.token(&pan).to_hex().len(), 64);
    }
}
