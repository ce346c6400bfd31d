//! The field dictionary and wire profiles, as data.
//!
//! A [`Profile`] is a dictionary (type and length of each of the 128 data
//! elements) plus how each kind of content is written on the wire. New
//! profiles (BCD numerics, EBCDIC text) are new values of this struct; the
//! decoder and writer branch on the encodings, never on the profile's name.

/// What characters a field may hold (ISO 8583:1987 attribute letters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// `n`: digits 0–9.
    N,
    /// `an`: letters, digits and space (space is allowed: RRNs and
    /// approval codes are space-padded in practice).
    An,
    /// `ans`: any printable ASCII character, 0x20–0x7E.
    Ans,
    /// `b`: binary bytes.
    B,
    /// `z`: track-2 characters: digits, `=` and `D` as separators.
    Z,
    /// `x+n`: `C` (credit) or `D` (debit) followed by digits.
    XN,
}

impl FieldType {
    /// The attribute letters, for error messages.
    pub const fn letters(self) -> &'static str {
        match self {
            FieldType::N => "n",
            FieldType::An => "an",
            FieldType::Ans => "ans",
            FieldType::B => "b",
            FieldType::Z => "z",
            FieldType::XN => "x+n",
        }
    }
}

/// How a field's length is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LenKind {
    /// Always `max_len` long.
    Fixed,
    /// Preceded by a 2-digit length.
    LlVar,
    /// Preceded by a 3-digit length.
    LllVar,
}

impl LenKind {
    /// Digits in the length prefix.
    pub const fn prefix_digits(self) -> usize {
        match self {
            LenKind::Fixed => 0,
            LenKind::LlVar => 2,
            LenKind::LllVar => 3,
        }
    }
}

/// One data element of the dictionary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// Allowed content.
    pub ty: FieldType,
    /// Fixed or variable length.
    pub len: LenKind,
    /// Length (fixed) or maximum length (variable), in characters for text
    /// fields and in bytes for binary fields.
    pub max_len: u16,
}

/// How binary content (bitmaps, `b` fields) is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryEncoding {
    /// Raw bytes (pyiso8583 `default`).
    Raw,
    /// Two upper-case hex characters per byte (pyiso8583 `default_ascii`);
    /// the length prefix of a variable binary field counts hex characters.
    Hex,
}

/// How text and length prefixes are written. One variant today; BCD and
/// EBCDIC are added here as data when a profile needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoding {
    /// One ASCII byte per character.
    Ascii,
}

/// A wire profile: dictionary plus encodings.
#[derive(Debug, PartialEq, Eq)]
pub struct Profile {
    /// Name used in configuration (`ascii`, `ascii-hex`).
    pub name: &'static str,
    /// Data elements by number; index 0 stands for the MTI and is unused.
    pub fields: &'static [FieldSpec; 129],
    /// Encoding of the bitmaps.
    pub bitmap: BinaryEncoding,
    /// Encoding of `b` fields.
    pub binary: BinaryEncoding,
    /// Encoding of the MTI, text fields and length prefixes.
    pub text: TextEncoding,
}

impl Profile {
    /// Binary bitmaps and binary fields (pyiso8583 `default`).
    pub const ASCII: Profile = Profile {
        name: "ascii",
        fields: &DICTIONARY_1987,
        bitmap: BinaryEncoding::Raw,
        binary: BinaryEncoding::Raw,
        text: TextEncoding::Ascii,
    };

    /// Hex bitmaps and hex binary fields (pyiso8583 `default_ascii`).
    pub const ASCII_HEX: Profile = Profile {
        name: "ascii-hex",
        fields: &DICTIONARY_1987,
        bitmap: BinaryEncoding::Hex,
        binary: BinaryEncoding::Hex,
        text: TextEncoding::Ascii,
    };

    /// Every built-in profile.
    pub const ALL: [&'static Profile; 2] = [&Profile::ASCII, &Profile::ASCII_HEX];

    /// Looks a profile up by its configuration name.
    pub fn by_name(name: &str) -> Option<&'static Profile> {
        Profile::ALL.into_iter().find(|p| p.name == name)
    }

    /// The spec of field `n` (2..=128); `None` for 0, 1 and above 128.
    pub fn field(&self, n: u8) -> Option<&'static FieldSpec> {
        if n < 2 {
            return None;
        }
        self.fields.get(usize::from(n))
    }

    /// Wire bytes of one byte of binary content under `encoding`.
    pub(crate) const fn binary_unit(encoding: BinaryEncoding) -> usize {
        match encoding {
            BinaryEncoding::Raw => 1,
            BinaryEncoding::Hex => 2,
        }
    }
}

const fn f(ty: FieldType, len: LenKind, max_len: u16) -> FieldSpec {
    FieldSpec { ty, len, max_len }
}

use FieldType::{An, Ans, B, N, XN, Z};
use LenKind::{Fixed as FX, LlVar as LL, LllVar as LLL};

/// ISO 8583:1987 data elements, with the lengths of pyiso8583's `default`
/// spec (checked field by field by `tests/interop_pyiso8583.rs`).
pub static DICTIONARY_1987: [FieldSpec; 129] = [
    f(N, FX, 4),      // 0: MTI (unused here)
    f(B, FX, 8),      // 1: secondary bitmap
    f(N, LL, 19),     // 2: PAN
    f(N, FX, 6),      // 3: processing code
    f(N, FX, 12),     // 4: amount, transaction
    f(N, FX, 12),     // 5: amount, settlement
    f(N, FX, 12),     // 6: amount, cardholder billing
    f(N, FX, 10),     // 7: transmission date and time
    f(N, FX, 8),      // 8: amount, cardholder billing fee
    f(N, FX, 8),      // 9: conversion rate, settlement
    f(N, FX, 8),      // 10: conversion rate, cardholder billing
    f(N, FX, 6),      // 11: STAN
    f(N, FX, 6),      // 12: time, local
    f(N, FX, 4),      // 13: date, local
    f(N, FX, 4),      // 14: date, expiration
    f(N, FX, 4),      // 15: date, settlement
    f(N, FX, 4),      // 16: date, conversion
    f(N, FX, 4),      // 17: date, capture
    f(N, FX, 4),      // 18: merchant type
    f(N, FX, 3),      // 19: acquiring institution country
    f(N, FX, 3),      // 20: PAN extended country
    f(N, FX, 3),      // 21: forwarding institution country
    f(N, FX, 3),      // 22: POS entry mode
    f(N, FX, 3),      // 23: PAN sequence number
    f(N, FX, 3),      // 24: NII
    f(N, FX, 2),      // 25: POS condition code
    f(N, FX, 2),      // 26: POS capture code
    f(N, FX, 1),      // 27: authorizing ID response length
    f(XN, FX, 9),     // 28: amount, transaction fee
    f(XN, FX, 9),     // 29: amount, settlement fee
    f(XN, FX, 9),     // 30: amount, transaction processing fee
    f(XN, FX, 9),     // 31: amount, settlement processing fee
    f(N, LL, 11),     // 32: acquiring institution ID
    f(N, LL, 11),     // 33: forwarding institution ID
    f(Ans, LL, 28),   // 34: PAN, extended
    f(Z, LL, 37),     // 35: track 2
    f(Z, LLL, 104),   // 36: track 3
    f(An, FX, 12),    // 37: retrieval reference number
    f(An, FX, 6),     // 38: authorization ID response
    f(An, FX, 2),     // 39: response code
    f(An, FX, 3),     // 40: service restriction code
    f(Ans, FX, 8),    // 41: card acceptor terminal ID
    f(Ans, FX, 15),   // 42: card acceptor ID
    f(Ans, FX, 40),   // 43: card acceptor name/location
    f(Ans, LL, 25),   // 44: additional response data
    f(Ans, LL, 76),   // 45: track 1
    f(Ans, LLL, 999), // 46: additional data, ISO
    f(Ans, LLL, 999), // 47: additional data, national
    f(Ans, LLL, 999), // 48: additional data, private
    f(N, FX, 3),      // 49: currency, transaction
    f(N, FX, 3),      // 50: currency, settlement
    f(N, FX, 3),      // 51: currency, cardholder billing
    f(B, FX, 8),      // 52: PIN block
    f(N, FX, 16),     // 53: security related control information
    f(Ans, LLL, 240), // 54: additional amounts
    f(B, LLL, 255),   // 55: ICC data
    f(Ans, LLL, 999), // 56
    f(Ans, LLL, 999), // 57
    f(Ans, LLL, 999), // 58
    f(Ans, LLL, 999), // 59
    f(Ans, LLL, 999), // 60
    f(Ans, LLL, 999), // 61
    f(Ans, LLL, 999), // 62
    f(Ans, LLL, 999), // 63
    f(B, FX, 8),      // 64: MAC
    f(B, FX, 8),      // 65: bitmap, extended
    f(N, FX, 1),      // 66: settlement code
    f(N, FX, 2),      // 67: extended payment code
    f(N, FX, 3),      // 68: receiving institution country
    f(N, FX, 3),      // 69: settlement institution country
    f(N, FX, 3),      // 70: network management information code
    f(N, FX, 4),      // 71: message number
    f(N, FX, 4),      // 72: message number, last
    f(N, FX, 6),      // 73: date, action
    f(N, FX, 10),     // 74: credits, number
    f(N, FX, 10),     // 75: credits, reversal number
    f(N, FX, 10),     // 76: debits, number
    f(N, FX, 10),     // 77: debits, reversal number
    f(N, FX, 10),     // 78: transfer, number
    f(N, FX, 10),     // 79: transfer, reversal number
    f(N, FX, 10),     // 80: inquiries, number
    f(N, FX, 10),     // 81: authorizations, number
    f(N, FX, 12),     // 82: credits, processing fee amount
    f(N, FX, 12),     // 83: credits, transaction fee amount
    f(N, FX, 12),     // 84: debits, processing fee amount
    f(N, FX, 12),     // 85: debits, transaction fee amount
    f(N, FX, 16),     // 86: credits, amount
    f(N, FX, 16),     // 87: credits, reversal amount
    f(N, FX, 16),     // 88: debits, amount
    f(N, FX, 16),     // 89: debits, reversal amount
    f(N, FX, 42),     // 90: original data elements
    f(An, FX, 1),     // 91: file update code
    f(An, FX, 2),     // 92: file security code
    f(An, FX, 5),     // 93: response indicator
    f(An, FX, 7),     // 94: service indicator
    f(An, FX, 42),    // 95: replacement amounts
    f(B, FX, 8),      // 96: message security code
    f(XN, FX, 17),    // 97: amount, net settlement
    f(Ans, FX, 25),   // 98: payee
    f(N, LL, 11),     // 99: settlement institution ID
    f(N, LL, 11),     // 100: receiving institution ID
    f(Ans, LL, 17),   // 101: file name
    f(Ans, LL, 28),   // 102: account ID 1
    f(Ans, LL, 28),   // 103: account ID 2
    f(Ans, LLL, 100), // 104: transaction description
    f(Ans, LLL, 999), // 105
    f(Ans, LLL, 999), // 106
    f(Ans, LLL, 999), // 107
    f(Ans, LLL, 999), // 108
    f(Ans, LLL, 999), // 109
    f(Ans, LLL, 999), // 110
    f(Ans, LLL, 999), // 111
    f(Ans, LLL, 999), // 112
    f(Ans, LLL, 999), // 113
    f(Ans, LLL, 999), // 114
    f(Ans, LLL, 999), // 115
    f(Ans, LLL, 999), // 116
    f(Ans, LLL, 999), // 117
    f(Ans, LLL, 999), // 118
    f(Ans, LLL, 999), // 119
    f(Ans, LLL, 999), // 120
    f(Ans, LLL, 999), // 121
    f(Ans, LLL, 999), // 122
    f(Ans, LLL, 999), // 123
    f(Ans, LLL, 999), // 124
    f(Ans, LLL, 999), // 125
    f(Ans, LLL, 999), // 126
    f(Ans, LLL, 999), // 127
    f(B, FX, 8),      // 128: MAC
];
