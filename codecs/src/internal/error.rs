//! The one error type of the internal frame codec: small, `Copy`, and naming
//! the field (by tag) and what was wrong with it.

use super::frame_type::FrameType;
use super::header::{FRAME_MAGIC, FRAME_VERSION};
use super::tag;
use super::FRAME_BODY_BYTES_MAX;
use super::FRAME_FIELDS_MAX;

/// Why a frame could not be decoded, or a typed frame could not be encoded.
///
/// Eight bytes and `Copy`, so the hot path can return it without allocating.
/// Tags are raw `u8` values (see [`tag`](super::tag)); the message names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The first two bytes are not the magic `SW`: not an internal frame at
    /// all, and the stream cannot be resynchronized.
    #[error(
        "bad magic {found:#06x}, expected {:#06x}",
        u16::from_be_bytes(FRAME_MAGIC)
    )]
    BadMagic {
        /// The two bytes found, big-endian.
        found: u16,
    },
    /// A version this codec does not speak.
    #[error("unsupported frame version {found}, expected {FRAME_VERSION}")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// The header announces a body over [`FRAME_BODY_BYTES_MAX`], or an
    /// encoder was asked to write one.
    #[error("body of {length} bytes over the limit of {FRAME_BODY_BYTES_MAX}")]
    BodyTooLong {
        /// The announced (or attempted) body length, saturated at `u32::MAX`.
        length: u32,
    },
    /// The frame type code is not one this version defines.
    #[error("unknown frame type {found:#04x}")]
    UnknownFrameType {
        /// The frame type byte found.
        found: u8,
    },
    /// A known frame type in the wrong direction: a response parsed as a
    /// request, or the reverse.
    #[error("a {found} frame in the wrong direction")]
    WrongDirection {
        /// The frame's type.
        found: FrameType,
    },
    /// The body ends inside a field header or value.
    #[error("field truncated at body offset {offset}")]
    TruncatedField {
        /// Offset in the body where the truncated field starts.
        offset: u16,
    },
    /// More than [`FRAME_FIELDS_MAX`] fields in one body.
    #[error("more than {FRAME_FIELDS_MAX} fields in one frame")]
    TooManyFields,
    /// A tag this frame type does not define (and not an ignorable extension).
    #[error("field {} ({tag:#04x}) not allowed in a {frame_type} frame", tag::name(*tag))]
    UnexpectedField {
        /// The frame's type.
        frame_type: FrameType,
        /// The tag found.
        tag: u8,
    },
    /// A non-repeatable tag appears twice.
    #[error("duplicate field {} ({tag:#04x})", tag::name(*tag))]
    DuplicateField {
        /// The tag found twice.
        tag: u8,
    },
    /// A repeatable tag appears more often than its limit.
    #[error("too many {} fields ({tag:#04x})", tag::name(*tag))]
    TooManyRepeats {
        /// The repeated tag.
        tag: u8,
    },
    /// A field the frame type requires is absent.
    #[error("missing required field {} ({tag:#04x})", tag::name(*tag))]
    MissingField {
        /// The missing tag.
        tag: u8,
    },
    /// A value's length is outside the field's limits.
    #[error("field {} ({tag:#04x}): length {length} outside its limits", tag::name(*tag))]
    FieldLength {
        /// The field's tag.
        tag: u8,
        /// The length found (saturated at `u16::MAX` when encoding).
        length: u16,
    },
    /// A text value is not valid UTF-8.
    #[error("field {} ({tag:#04x}): not valid UTF-8", tag::name(*tag))]
    BadUtf8 {
        /// The field's tag.
        tag: u8,
    },
    /// A character the field does not allow (control character, non-digit,
    /// lower case, a clear PAN where a masked one belongs...).
    #[error("field {} ({tag:#04x}): character not allowed", tag::name(*tag))]
    BadCharacter {
        /// The field's tag.
        tag: u8,
    },
    /// A number, code or date outside its range.
    #[error("field {} ({tag:#04x}): value out of range", tag::name(*tag))]
    OutOfRange {
        /// The field's tag.
        tag: u8,
    },
    /// Fields that disagree: a refund amount that is not the sum of its cart
    /// lines, a date range or amount range whose start is after its end.
    #[error("field {} ({tag:#04x}) inconsistent with another field", tag::name(*tag))]
    Inconsistent {
        /// The tag of the second field of the pair.
        tag: u8,
    },
}

impl Error {
    /// Whether the byte stream can no longer be trusted, so the server must
    /// close the connection (bad magic, unsupported version, body over the
    /// limit). For every other error the frame was delimited correctly: the
    /// server answers it with result code `30` and keeps the connection.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Error::BadMagic { .. } | Error::UnsupportedVersion { .. } | Error::BodyTooLong { .. }
        )
    }
}

const _: () = assert!(std::mem::size_of::<Error>() <= 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field() {
        let e = Error::MissingField { tag: tag::PAN };
        assert_eq!(e.to_string(), "missing required field pan (0x20)");
        let e = Error::BadMagic { found: 0x4745 };
        assert_eq!(e.to_string(), "bad magic 0x4745, expected 0x5357");
    }

    #[test]
    fn framing_errors_close_the_connection() {
        assert!(Error::BodyTooLong { length: 1 << 20 }.closes_connection());
        assert!(!Error::MissingField { tag: tag::PAN }.closes_connection());
    }
}
