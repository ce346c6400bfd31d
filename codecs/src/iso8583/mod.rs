//! ISO 8583:1987 messages: profiles, bitmaps, decode, encode, subfields.

mod bitmap;
mod error;
mod message;
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
pub(crate) fn content_ok(ty: FieldType, content: &[u8]) -> bool {
    match ty {
        FieldType::N => content.iter().all(u8::is_ascii_digit),
        FieldType::An => content
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b' '),
        FieldType::Ans => content.iter().all(|&c| (0x20..=0x7e).contains(&c)),
        FieldType::Z => content
            .iter()
            .all(|&c| c.is_ascii_digit() || c == b'=' || c == b'D'),
        FieldType::XN => match content.split_first() {
            Some((&sign, rest)) => {
                (sign == b'C' || sign == b'D') && rest.iter().all(u8::is_ascii_digit)
            }
            None => false,
        },
        FieldType::B => true,
    }
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
