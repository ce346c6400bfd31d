//! Typed, `Copy` errors that name the field and what was wrong.

use super::spec::FieldType;

/// Why a message could not be decoded. `field` is the data element number,
/// 0 for the MTI and bitmaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {kind} (at byte {offset})")]
pub struct DecodeError {
    /// Data element number (0: MTI or bitmap).
    pub field: u8,
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// Byte offset in the message where the problem starts.
    pub offset: u16,
}

/// What was wrong with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The message is longer than a length header can describe.
    #[error("message longer than {max} bytes", max = crate::iso8583::MESSAGE_BYTES_MAX)]
    MessageTooLong,
    /// The input ended inside the MTI, a bitmap, a length prefix or a field.
    #[error("truncated: {needed} more bytes expected")]
    Truncated {
        /// Bytes missing.
        needed: u16,
    },
    /// The MTI is not four digits.
    #[error("MTI must be 4 digits")]
    BadMti,
    /// A hex bitmap holds a non-hex character.
    #[error("bitmap is not hex")]
    BadBitmap,
    /// A length prefix holds a non-digit.
    #[error("length prefix is not {digits} digits")]
    BadLengthPrefix {
        /// Digits expected.
        digits: u8,
    },
    /// A variable length over the field's maximum (or odd for hex binary).
    #[error("length {len} over maximum {max}")]
    LengthOverMax {
        /// Length found.
        len: u16,
        /// Maximum allowed, in wire units.
        max: u16,
    },
    /// Content not allowed by the field's type.
    #[error("content is not of type {}", .0.letters())]
    BadContent(FieldType),
    /// Bytes left over after the last field of the bitmap.
    #[error("{0} trailing bytes after the last field")]
    TrailingBytes(u16),
}

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {kind}")]
pub struct EncodeError {
    /// Data element number (0: MTI).
    pub field: u8,
    /// What was wrong.
    pub kind: EncodeErrorKind,
}

/// What was wrong with a value to encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeErrorKind {
    /// Fields must be written in ascending order, each once.
    #[error("written out of order or twice")]
    OutOfOrder,
    /// Not a data element number this profile can carry (2..=128).
    #[error("not a data element")]
    NotAField,
    /// A fixed field given a value of another length.
    #[error("fixed length {expected}, value has {actual}")]
    WrongLength {
        /// The fixed length.
        expected: u16,
        /// The value's length.
        actual: u16,
    },
    /// A variable field given a value over its maximum.
    #[error("value of {actual} over maximum {max}")]
    TooLong {
        /// The maximum.
        max: u16,
        /// The value's length.
        actual: u16,
    },
    /// A number too large for a numeric field.
    #[error("number does not fit the field")]
    NumberTooLarge,
    /// Content not allowed by the field's type.
    #[error("content is not of type {}", .0.letters())]
    BadContent(FieldType),
    /// The MTI is not four digits.
    #[error("MTI must be 4 digits")]
    BadMti,
    /// The finished message is longer than [`crate::iso8583::MESSAGE_BYTES_MAX`].
    #[error("message longer than the maximum")]
    MessageTooLong,
}
