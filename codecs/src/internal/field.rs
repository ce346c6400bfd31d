//! The body's field layer: walking `tag u8, length u16, value` triples with
//! every length checked, the value checks shared by decode and encode, and
//! the body writer.

use bytes::{BufMut, BytesMut};

use super::error::Error;
use super::frame_type::FrameType;
use super::header::{finish_frame, start_frame};
use super::tag;
use super::{AMOUNT_MINOR_MAX, FRAME_BODY_BYTES_MAX, FRAME_FIELDS_MAX};

/// Tag byte plus the `u16` length.
pub(crate) const FIELD_HEADER_BYTES: usize = 3;

/// One field of a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// What the value is (see [`tag`]).
    pub(crate) tag: u8,
    /// The value, borrowed from the body.
    pub(crate) value: &'a [u8],
}

/// Splits the first field off `rest`. `Ok(None)` at the end of the body,
/// `Err(())` when the body ends inside the field.
pub(crate) fn split_field(rest: &[u8]) -> Result<Option<(Field<'_>, &[u8])>, ()> {
    let [tag, l0, l1, rest @ ..] = rest else {
        return if rest.is_empty() { Ok(None) } else { Err(()) };
    };
    let length = usize::from(u16::from_be_bytes([*l0, *l1]));
    let (value, rest) = rest.split_at_checked(length).ok_or(())?;
    Ok(Some((Field { tag: *tag, value }, rest)))
}

/// Walks a body once, checking truncation, the field count limit and
/// duplicates of non-repeatable tags (a 256-bit set, no allocation).
pub(crate) struct Fields<'a> {
    /// What is left of the body.
    rest: &'a [u8],
    /// Offset of `rest` in the body, for error messages.
    offset: usize,
    /// Fields seen so far, against [`FRAME_FIELDS_MAX`].
    count: usize,
    /// One bit per tag seen.
    seen: [u64; 4],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Fields<'a> {
        Fields {
            rest: body,
            offset: 0,
            count: 0,
            seen: [0; 4],
        }
    }

    /// The next field, `Ok(None)` at the end of the body.
    pub(crate) fn next_field(&mut self) -> Result<Option<Field<'a>>, Error> {
        let offset = u16::try_from(self.offset).unwrap_or(u16::MAX);
        let Some((field, rest)) =
            split_field(self.rest).map_err(|()| Error::TruncatedField { offset })?
        else {
            return Ok(None);
        };
        self.count = self.count.saturating_add(1);
        if self.count > FRAME_FIELDS_MAX {
            return Err(Error::TooManyFields);
        }
        if !tag::is_repeatable(field.tag) {
            let bit = 1u64 << (field.tag & 63);
            let word = self
                .seen
                .get_mut(usize::from(field.tag >> 6))
                .ok_or(Error::TooManyFields)?;
            if *word & bit != 0 {
                return Err(Error::DuplicateField { tag: field.tag });
            }
            *word |= bit;
        }
        self.offset = self
            .offset
            .saturating_add(FIELD_HEADER_BYTES)
            .saturating_add(field.value.len());
        self.rest = rest;
        Ok(Some(field))
    }
}

/// A tag the frame type does not define: skipped if it is an extension,
/// else an error.
pub(crate) fn unexpected(frame_type: FrameType, tag: u8) -> Result<(), Error> {
    if tag >= tag::EXTENSION_MIN {
        Ok(())
    } else {
        Err(Error::UnexpectedField { frame_type, tag })
    }
}

/// Counts one more occurrence of a repeatable tag against its limit.
pub(crate) fn count_repeat(tag: u8, count: &mut usize, limit: usize) -> Result<(), Error> {
    *count = count.saturating_add(1);
    if *count > limit {
        return Err(Error::TooManyRepeats { tag });
    }
    Ok(())
}

/// A required field's value, or [`Error::MissingField`].
pub(crate) fn required<T>(tag: u8, value: Option<T>) -> Result<T, Error> {
    value.ok_or(Error::MissingField { tag })
}

pub(crate) fn length_error(tag: u8, length: usize) -> Error {
    Error::FieldLength {
        tag,
        length: u16::try_from(length).unwrap_or(u16::MAX),
    }
}

/// A fixed-size value as an array.
pub(crate) fn fixed<const N: usize>(tag: u8, value: &[u8]) -> Result<[u8; N], Error> {
    value.try_into().map_err(|_| length_error(tag, value.len()))
}

pub(crate) fn u64_value(tag: u8, value: &[u8]) -> Result<u64, Error> {
    fixed(tag, value).map(u64::from_be_bytes)
}

pub(crate) fn u16_value(tag: u8, value: &[u8]) -> Result<u16, Error> {
    fixed(tag, value).map(u16::from_be_bytes)
}

pub(crate) fn u8_value(tag: u8, value: &[u8]) -> Result<u8, Error> {
    fixed::<1>(tag, value).map(|[b]| b)
}

/// A payment id field's value: `u64`, not zero.
pub(crate) fn payment_id_value(tag: u8, value: &[u8]) -> Result<u64, Error> {
    check_payment_id(tag, u64_value(tag, value)?)
}

/// A payment id: not zero.
pub(crate) fn check_payment_id(tag: u8, id: u64) -> Result<u64, Error> {
    if id == 0 {
        return Err(Error::OutOfRange { tag });
    }
    Ok(id)
}

/// An amount in minor units within `min..=AMOUNT_MINOR_MAX`.
pub(crate) fn check_amount(tag: u8, amount_minor: u64, min: u64) -> Result<u64, Error> {
    if amount_minor < min || amount_minor > AMOUNT_MINOR_MAX {
        return Err(Error::OutOfRange { tag });
    }
    Ok(amount_minor)
}

/// An ISO 4217 numeric currency code: 1..=999.
pub(crate) fn check_currency(tag: u8, currency: u16) -> Result<u16, Error> {
    if !(1..=999).contains(&currency) {
        return Err(Error::OutOfRange { tag });
    }
    Ok(currency)
}

/// A boolean: 0 or 1.
pub(crate) fn flag_value(tag: u8, byte: u8) -> Result<bool, Error> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::OutOfRange { tag }),
    }
}

/// What characters a string field allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Charset {
    /// ASCII digits.
    Digits,
    /// ASCII 0x20..=0x7E.
    Printable,
    /// ASCII letters and digits.
    Alphanumeric,
    /// Digits and `*`, at least one `*`, at most 10 digits.
    MaskedPan,
    /// `XX-0000-0000`.
    ClientId,
    /// UTF-8 without control characters.
    Text,
}

/// The limits of one string field: the same checks on decode and encode.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StrSpec {
    pub(crate) tag: u8,
    pub(crate) bytes_min: usize,
    pub(crate) bytes_max: usize,
    pub(crate) charset: Charset,
}

pub(crate) const fn spec(tag: u8, bytes_min: usize, bytes_max: usize, charset: Charset) -> StrSpec {
    StrSpec {
        tag,
        bytes_min,
        bytes_max,
        charset,
    }
}

pub(crate) const MERCHANT_REFERENCE: StrSpec =
    spec(tag::MERCHANT_REFERENCE, 1, 64, Charset::Printable);
pub(crate) const TERMINAL_ID: StrSpec = spec(tag::TERMINAL_ID, 1, 8, Charset::Printable);
pub(crate) const DESCRIPTION: StrSpec = spec(tag::DESCRIPTION, 1, 255, Charset::Text);
pub(crate) const CLIENT_ID: StrSpec = spec(tag::CLIENT_ID, 12, 12, Charset::ClientId);
pub(crate) const PAN: StrSpec = spec(tag::PAN, 12, 19, Charset::Digits);
pub(crate) const CVV2: StrSpec = spec(tag::CVV2, 3, 4, Charset::Digits);
pub(crate) const CARDHOLDER_NAME: StrSpec = spec(tag::CARDHOLDER_NAME, 1, 64, Charset::Text);
pub(crate) const MESSAGE: StrSpec = spec(tag::MESSAGE, 1, 255, Charset::Text);
pub(crate) const AUTH_CODE: StrSpec = spec(tag::AUTH_CODE, 6, 6, Charset::Alphanumeric);
pub(crate) const MASKED_PAN: StrSpec = spec(tag::MASKED_PAN, 12, 19, Charset::MaskedPan);
pub(crate) const FILTER_RRN: StrSpec = spec(tag::FILTER_RRN, 12, 12, Charset::Printable);
pub(crate) const FILTER_AUTH_CODE: StrSpec =
    spec(tag::FILTER_AUTH_CODE, 6, 6, Charset::Alphanumeric);
pub(crate) const FILTER_LAST4: StrSpec = spec(tag::FILTER_LAST4, 4, 4, Charset::Digits);
pub(crate) const RRN: StrSpec = spec(tag::RRN, 12, 12, Charset::Printable);
pub(crate) const FLAG_REASONS: StrSpec = spec(tag::FLAG_REASONS, 1, 255, Charset::Text);
pub(crate) const FLAGGED_BY: StrSpec = spec(tag::FLAGGED_BY, 1, 255, Charset::Text);
pub(crate) const FLAG_NOTE: StrSpec = spec(tag::FLAG_NOTE, 1, 255, Charset::Text);
pub(crate) const UNFLAGGED_BY: StrSpec = spec(tag::UNFLAGGED_BY, 1, 255, Charset::Text);
pub(crate) const UNFLAG_REASON: StrSpec = spec(tag::UNFLAG_REASON, 1, 255, Charset::Text);

/// A channel (F25 value) the switch records: 0, 8, 59 or 99.
pub(crate) fn channel_value(tag: u8, value: &[u8]) -> Result<u8, Error> {
    match u8_value(tag, value)? {
        c @ (0 | 8 | 59 | 99) => Ok(c),
        _ => Err(Error::OutOfRange { tag }),
    }
}

/// An ECI: its 2-digit number, 0..=99.
pub(crate) fn eci_value(tag: u8, value: &[u8]) -> Result<u8, Error> {
    match u8_value(tag, value)? {
        e @ 0..=99 => Ok(e),
        _ => Err(Error::OutOfRange { tag }),
    }
}

/// The item name inside a cart line.
pub(crate) const CART_ITEM: StrSpec = spec(tag::CART_LINE, 1, 64, Charset::Text);
/// The merchant reference inside a payment row (empty when there is none).
pub(crate) const ROW_MERCHANT_ID: StrSpec = spec(tag::MANDATE_ROW, 15, 15, Charset::Printable);
pub(crate) const ROW_REFERENCE: StrSpec = spec(tag::PAYMENT_ROW, 0, 64, Charset::Printable);

/// Checks a string value against its spec: length first, then characters.
pub(crate) fn check_str(spec: StrSpec, value: &[u8]) -> Result<&str, Error> {
    let tag = spec.tag;
    if value.len() < spec.bytes_min || value.len() > spec.bytes_max {
        return Err(length_error(tag, value.len()));
    }
    let text = std::str::from_utf8(value).map_err(|_| Error::BadUtf8 { tag })?;
    let ok = match spec.charset {
        Charset::Digits => value.iter().all(u8::is_ascii_digit),
        Charset::Printable => value.iter().all(|b| (0x20..=0x7E).contains(b)),
        Charset::Alphanumeric => value.iter().all(u8::is_ascii_alphanumeric),
        Charset::MaskedPan => is_masked_pan(value),
        Charset::ClientId => is_client_id(value),
        Charset::Text => !text.chars().any(char::is_control),
    };
    if !ok {
        return Err(Error::BadCharacter { tag });
    }
    Ok(text)
}

/// Digits and `*` only, at least one `*`, at most 6 + 4 digits: never a
/// clear PAN.
fn is_masked_pan(value: &[u8]) -> bool {
    let digits = value.iter().filter(|b| b.is_ascii_digit()).count();
    let stars = value.iter().filter(|b| **b == b'*').count();
    digits.saturating_add(stars) == value.len() && stars > 0 && digits <= 10
}

/// `XX-0000-0000`: two upper-case letters, a dash, four digits, a dash,
/// four digits.
fn is_client_id(value: &[u8]) -> bool {
    value.len() == 12
        && value.iter().enumerate().all(|(i, b)| match i {
            0 | 1 => b.is_ascii_uppercase(),
            2 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// Writes the body of one frame: fields with their headers, refusing a
/// field or body over its limit before writing it.
pub(crate) struct BodyWriter<'b> {
    /// The caller's buffer; the frame header is already in it.
    dst: &'b mut BytesMut,
    /// Body bytes written so far, against [`FRAME_BODY_BYTES_MAX`].
    body_bytes: usize,
    /// Fields written so far, against [`FRAME_FIELDS_MAX`].
    fields: usize,
}

impl BodyWriter<'_> {
    /// Writes a field header for a value of `length` bytes; the caller then
    /// writes exactly that many bytes with [`BodyWriter::dst`].
    pub(crate) fn begin(&mut self, tag: u8, length: usize) -> Result<&mut BytesMut, Error> {
        let length16 = u16::try_from(length).map_err(|_| length_error(tag, length))?;
        let body_bytes = self
            .body_bytes
            .saturating_add(FIELD_HEADER_BYTES)
            .saturating_add(length);
        if body_bytes > FRAME_BODY_BYTES_MAX {
            return Err(Error::BodyTooLong {
                length: u32::try_from(body_bytes).unwrap_or(u32::MAX),
            });
        }
        self.fields = self.fields.saturating_add(1);
        if self.fields > FRAME_FIELDS_MAX {
            return Err(Error::TooManyFields);
        }
        self.body_bytes = body_bytes;
        self.dst.reserve(FIELD_HEADER_BYTES.saturating_add(length));
        self.dst.put_u8(tag);
        self.dst.put_u16(length16);
        Ok(self.dst)
    }

    pub(crate) fn bytes(&mut self, tag: u8, value: &[u8]) -> Result<(), Error> {
        self.begin(tag, value.len())?.put_slice(value);
        Ok(())
    }

    /// A string field, checked against its spec first.
    pub(crate) fn str(&mut self, spec: StrSpec, value: &str) -> Result<(), Error> {
        check_str(spec, value.as_bytes())?;
        self.bytes(spec.tag, value.as_bytes())
    }

    pub(crate) fn opt_str(&mut self, spec: StrSpec, value: Option<&str>) -> Result<(), Error> {
        value.map_or(Ok(()), |v| self.str(spec, v))
    }

    pub(crate) fn u64(&mut self, tag: u8, value: u64) -> Result<(), Error> {
        self.bytes(tag, &value.to_be_bytes())
    }

    pub(crate) fn opt_u64(&mut self, tag: u8, value: Option<u64>) -> Result<(), Error> {
        value.map_or(Ok(()), |v| self.u64(tag, v))
    }

    pub(crate) fn u16(&mut self, tag: u8, value: u16) -> Result<(), Error> {
        self.bytes(tag, &value.to_be_bytes())
    }

    pub(crate) fn u8(&mut self, tag: u8, value: u8) -> Result<(), Error> {
        self.bytes(tag, &[value])
    }
}

/// Appends one frame to `dst`: header, then the body `write_body` writes,
/// then the patched body length. On error `dst` is left as it was.
pub(crate) fn encode_frame(
    dst: &mut BytesMut,
    frame_type: FrameType,
    request_id: u64,
    write_body: impl FnOnce(&mut BodyWriter<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let start = dst.len();
    start_frame(dst, frame_type, request_id);
    let mut writer = BodyWriter {
        dst,
        body_bytes: 0,
        fields: 0,
    };
    let result = write_body(&mut writer).and_then(|()| finish_frame(dst, start));
    if result.is_err() {
        dst.truncate(start);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(fields: &[(u8, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        for (t, value) in fields {
            v.push(*t);
            v.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
            v.extend_from_slice(value);
        }
        v
    }

    #[test]
    fn walks_fields_and_refuses_duplicates() {
        let b = body(&[
            (1, b"ab"),
            (tag::CART_LINE, b""),
            (tag::CART_LINE, b"x"),
            (1, b""),
        ]);
        let mut f = Fields::new(&b);
        assert_eq!(f.next_field().unwrap().unwrap().value, b"ab");
        assert_eq!(f.next_field().unwrap().unwrap().tag, tag::CART_LINE);
        assert_eq!(f.next_field().unwrap().unwrap().value, b"x");
        assert_eq!(f.next_field(), Err(Error::DuplicateField { tag: 1 }));
    }

    #[test]
    fn truncation_names_the_offset() {
        let mut b = body(&[(1, b"ab"), (2, b"cdef")]);
        b.pop();
        let mut f = Fields::new(&b);
        assert!(f.next_field().unwrap().is_some());
        assert_eq!(f.next_field(), Err(Error::TruncatedField { offset: 5 }));
        let mut f = Fields::new(&[7, 0]);
        assert_eq!(f.next_field(), Err(Error::TruncatedField { offset: 0 }));
    }

    #[test]
    fn field_count_is_limited() {
        let b = [tag::CART_LINE, 0, 0].repeat(FRAME_FIELDS_MAX + 1);
        let mut f = Fields::new(&b);
        for _ in 0..FRAME_FIELDS_MAX {
            assert!(f.next_field().unwrap().is_some());
        }
        assert_eq!(f.next_field(), Err(Error::TooManyFields));
    }

    #[test]
    fn string_checks() {
        assert!(check_str(CLIENT_ID, b"AB-1234-5678").is_ok());
        assert_eq!(
            check_str(CLIENT_ID, b"ab-1234-5678"),
            Err(Error::BadCharacter {
                tag: tag::CLIENT_ID
            })
        );
        assert!(check_str(MASKED_PAN, b"411111******1111").is_ok());
        assert!(check_str(MASKED_PAN, b"4111111111111111").is_err());
        assert!(check_str(MASKED_PAN, b"41111111111*1111").is_err());
        assert_eq!(
            check_str(DESCRIPTION, b"a\nb"),
            Err(Error::BadCharacter {
                tag: tag::DESCRIPTION
            })
        );
        assert_eq!(
            check_str(DESCRIPTION, b"\xff"),
            Err(Error::BadUtf8 {
                tag: tag::DESCRIPTION
            })
        );
        assert!(check_str(DESCRIPTION, "Café crème".as_bytes()).is_ok());
        assert_eq!(
            check_str(PAN, b"4111"),
            Err(Error::FieldLength {
                tag: tag::PAN,
                length: 4
            })
        );
    }

    #[test]
    fn failed_encode_leaves_the_buffer_as_it_was() {
        let mut dst = BytesMut::from(&b"keep"[..]);
        let r = encode_frame(&mut dst, FrameType::Cancel, 1, |w| {
            w.u64(tag::PAYMENT_ID, 1)?;
            w.str(PAN, "12")
        });
        assert_eq!(
            r,
            Err(Error::FieldLength {
                tag: tag::PAN,
                length: 2
            })
        );
        assert_eq!(&dst[..], b"keep");
        let big = vec![b'a'; FRAME_BODY_BYTES_MAX];
        let r = encode_frame(&mut dst, FrameType::Cancel, 1, |w| w.bytes(0xF0, &big));
        assert!(matches!(r, Err(Error::BodyTooLong { .. })));
        assert_eq!(&dst[..], b"keep");
    }
}
