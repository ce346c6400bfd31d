//! ISO 8583:1987 messages: profiles, bitmaps, decode, encode, subfields.

mod bitmap;
mod error;
mod message;
mod plan;
mod spec;
mod writer;

pub mod amount;
pub mod datetime;
pub mod f48;
pub mod f55;
pub mod f90;

pub use bitmap::{Bitmap, Fields};
pub use error::{DecodeError, DecodeErrorKind, EncodeError, EncodeErrorKind};
pub use message::{BinaryField, Message};
pub use spec::{
    BinaryEncoding, FieldSpec, FieldType, LenKind, Profile, TextEncoding, DICTIONARY_1987,
};
pub use writer::MessageWriter;

/// Largest message the codec accepts or writes: what a 2-byte length
/// header can describe. Listeners configure a lower frame limit.
pub const MESSAGE_BYTES_MAX: usize = 65_535;

/// Message type indicator: four ASCII digits (version, class, function,
/// origin).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mti([u8; 4]);

impl Mti {
    /// From four ASCII digits; `None` otherwise.
    pub fn from_bytes(bytes: &[u8]) -> Option<Mti> {
        let arr: [u8; 4] = bytes.try_into().ok()?;
        arr.iter().all(u8::is_ascii_digit).then_some(Mti(arr))
    }

    /// From a literal such as `"0100"`; `None` unless four digits.
    pub fn parse(s: &str) -> Option<Mti> {
        Mti::from_bytes(s.as_bytes())
    }

    /// The four ASCII digits.
    pub fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }

    /// As a string slice.
    pub fn as_str(&self) -> &str {
        // Four ASCII digits by construction.
        std::str::from_utf8(&self.0).unwrap_or("????")
    }

    /// The MTI as a number (`0100` → 100).
    pub fn number(&self) -> u16 {
        self.0
            .iter()
            .fold(0u16, |v, &d| v * 10 + u16::from(d - b'0'))
    }

    /// Whether the origin digit marks a repeat (`0101`, `0221`, …).
    pub fn is_repeat(&self) -> bool {
        self.0[3] == b'1'
    }

    /// The MTI without the repeat: `0101` → `0100`.
    pub fn without_repeat(&self) -> Mti {
        let mut m = self.0;
        if m[3] == b'1' {
            m[3] = b'0';
        }
        Mti(m)
    }

    /// Whether this is a request (function digit even: 0, 2, 4…).
    pub fn is_request(&self) -> bool {
        (self.0[2] - b'0') % 2 == 0
    }

    /// The response MTI: function digit plus one, origin 0 (`0101` → `0110`);
    /// `None` when this is not a request.
    pub fn response(&self) -> Option<Mti> {
        if !self.is_request() {
            return None;
        }
        let mut m = self.0;
        m[2] += 1;
        m[3] = b'0';
        Some(Mti(m))
    }
}

impl std::fmt::Display for Mti {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Mti {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mti({})", self.as_str())
    }
}

/// Whether `content` is allowed in a text field of type `ty` (binary
/// content is always allowed).
#[inline(always)]
pub(crate) fn content_ok(ty: FieldType, content: &[u8]) -> bool {
    match ty {
        // The usual types a word at a time, like the decoder.
        FieldType::N => slice_words_ok(content, word_digits),
        FieldType::An => all_in(content, CLASS_AN),
        FieldType::Ans => slice_words_ok(content, word_printable),
        FieldType::Z => all_in(content, CLASS_Z),
        FieldType::XN => match content.split_first() {
            Some((&sign, rest)) => (sign == b'C' || sign == b'D') && all_in(rest, CLASS_N),
            None => false,
        },
        FieldType::B => true,
    }
}

/// Character classes, one bit each, as [`CLASSES`] holds them.
pub(crate) const CLASS_N: u8 = 1;
pub(crate) const CLASS_AN: u8 = 2;
pub(crate) const CLASS_ANS: u8 = 4;
pub(crate) const CLASS_Z: u8 = 8;
pub(crate) const CLASS_HEX: u8 = 16;

/// The classes of every byte value: one load per byte checks any type.
static CLASSES: [u8; 256] = classes();

#[allow(clippy::indexing_slicing, reason = "i < 256 indexes a 256-entry table")]
const fn classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut k = 0;
        if c.is_ascii_digit() {
            k |= CLASS_N | CLASS_Z;
        }
        if c.is_ascii_alphanumeric() || c == b' ' {
            k |= CLASS_AN;
        }
        if c >= 0x20 && c <= 0x7e {
            k |= CLASS_ANS;
        }
        if c == b'=' || c == b'D' {
            k |= CLASS_Z;
        }
        if c.is_ascii_hexdigit() {
            k |= CLASS_HEX;
        }
        table[i] = k;
        i += 1;
    }
    table
}

/// Whether every byte of `content` is in `class`. Every byte of every
/// field goes through here on decode, so 8 bytes are checked per branch.
#[inline(always)]
#[allow(clippy::indexing_slicing, reason = "a u8 indexes a 256-entry table")]
pub(crate) fn all_in(content: &[u8], class: u8) -> bool {
    let mut chunks = content.chunks_exact(8);
    let whole = chunks
        .by_ref()
        .all(|ch| ch.iter().fold(class, |k, &c| k & CLASSES[usize::from(c)]) != 0);
    whole
        && chunks
            .remainder()
            .iter()
            .all(|&c| CLASSES[usize::from(c)] & class != 0)
}

/// One in every byte of a word.
const BYTES_1: u64 = 0x0101_0101_0101_0101;
/// The top bit of every byte of a word.
const BYTES_HIGH: u64 = 0x80 * BYTES_1;
/// `'0'` in every byte of a word: passes both word checks.
const BYTES_ZERO_DIGIT: u64 = 0x30 * BYTES_1;

/// Whether all 8 bytes of `word` are ASCII digits: high nibble 3, and
/// still 3 after adding 6 (so the low nibble is at most 9). A carry out of
/// a byte only happens when that byte already fails the first test.
#[inline(always)]
const fn word_digits(word: u64) -> bool {
    let high = 0xF0 * BYTES_1;
    let nibble_ok = (word & high) ^ BYTES_ZERO_DIGIT;
    let at_most_9 = (word.wrapping_add(0x06 * BYTES_1) & high) ^ BYTES_ZERO_DIGIT;
    nibble_ok | at_most_9 == 0
}

/// Whether all 8 bytes of `word` are printable ASCII (0x20–0x7E): top bit
/// clear, at least 0x20 (adding 0x60 sets the top bit), below 0x7F (adding
/// 1 leaves it clear). Carries only leave bytes that already failed.
#[inline(always)]
const fn word_printable(word: u64) -> bool {
    let at_least_20 = word.wrapping_add(0x60 * BYTES_1) & BYTES_HIGH;
    let above_7e = word.wrapping_add(BYTES_1) & BYTES_HIGH;
    (word & BYTES_HIGH) | (at_least_20 ^ BYTES_HIGH) | above_7e == 0
}

/// Whether `buf[start..end]` passes `word_ok` 8 bytes at a time. The last
/// word overlaps the one before it; a field shorter than 8 bytes is read
/// with the bytes before it (the MTI and bitmap guarantee 12) replaced by
/// `'0'`, which passes every word check. `None` when the words cannot be
/// read, for the caller to fall back to the byte table.
#[inline(always)]
fn words_ok(buf: &[u8], start: usize, end: usize, word_ok: impl Fn(u64) -> bool) -> Option<bool> {
    let content = buf.get(start..end)?;
    if let Some(last) = content.last_chunk::<8>() {
        Some(whole_words_ok(content, last, &word_ok))
    } else {
        let len = content.len();
        let word = u64::from_le_bytes(*buf.get(..end)?.last_chunk::<8>()?);
        // The field is the top `len` bytes (len < 8); an empty field keeps
        // nothing.
        let keep = u64::MAX.checked_shl(8 * (8 - len as u32)).unwrap_or(0);
        Some(word_ok((word & keep) | (BYTES_ZERO_DIGIT & !keep)))
    }
}

/// Whether every word of `content` (at least 8 bytes, ending in `last`)
/// passes `word_ok`: 8 bytes at a time, the last word overlapping the one
/// before it. Shared by the decoder and the encoder.
#[inline(always)]
fn whole_words_ok(content: &[u8], last: &[u8; 8], word_ok: &impl Fn(u64) -> bool) -> bool {
    let mut ok = word_ok(u64::from_le_bytes(*last));
    for chunk in content.chunks_exact(8) {
        if let Ok(word) = <[u8; 8]>::try_from(chunk) {
            ok &= word_ok(u64::from_le_bytes(word));
        }
    }
    ok
}

/// Whether all of `content` passes `word_ok`, 8 bytes at a time (the last
/// word overlapping the one before it); content shorter than a word is
/// padded with `'0'`, which passes every word check.
#[inline(always)]
fn slice_words_ok(content: &[u8], word_ok: impl Fn(u64) -> bool) -> bool {
    if let Some(last) = content.last_chunk::<8>() {
        whole_words_ok(content, last, &word_ok)
    } else {
        // Loaded in registers, the lanes past the content set to `'0'`.
        // Copying the bytes into a stack array and loading it as one word
        // stalled on store forwarding (a quarter of an encode's time).
        let keep = u64::MAX
            .checked_shr(8 * (8 - content.len() as u32))
            .unwrap_or(0);
        word_ok(short_word(content) | (BYTES_ZERO_DIGIT & !keep))
    }
}

/// `content` (under 8 bytes) as a little-endian word, its first byte in
/// the lowest lane and zeros past its end, with at most two overlapping
/// loads instead of a loop over its bytes: two 4-byte loads from 4 bytes
/// on, else its first, middle and last byte.
#[inline(always)]
pub(crate) fn short_word(content: &[u8]) -> u64 {
    let len = content.len();
    debug_assert!(len < 8, "callers pass under a word");
    if let (Some(head), Some(tail)) = (content.first_chunk::<4>(), content.last_chunk::<4>()) {
        // len is 4..=7: the tail's shift is at most 24 bits.
        u64::from(u32::from_le_bytes(*head))
            | u64::from(u32::from_le_bytes(*tail)) << (8 * (len - 4))
    } else if let (Some(&first), Some(&mid), Some(&last)) =
        (content.first(), content.get(len / 2), content.last())
    {
        // len is 1..=3: the lanes overlap where the bytes are the same.
        u64::from(first) | u64::from(mid) << (8 * (len / 2)) | u64::from(last) << (8 * (len - 1))
    } else {
        0
    }
}

/// Whether `buf[start..end]` is all ASCII digits.
#[inline(always)]
pub(crate) fn digits_ok(buf: &[u8], start: usize, end: usize) -> bool {
    words_ok(buf, start, end, word_digits)
        .unwrap_or_else(|| buf.get(start..end).is_some_and(|c| all_in(c, CLASS_N)))
}

/// Whether `buf[start..end]` is all printable ASCII (`ans`).
#[inline(always)]
pub(crate) fn printable_ok(buf: &[u8], start: usize, end: usize) -> bool {
    words_ok(buf, start, end, word_printable)
        .unwrap_or_else(|| buf.get(start..end).is_some_and(|c| all_in(c, CLASS_ANS)))
}

/// The value of a hex digit (either case).
pub(crate) fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
