//! Zero-copy decode: a [`Message`] borrows every field from the input.

use super::bitmap::Bitmap;
use super::error::{DecodeError, DecodeErrorKind};
use super::spec::{BinaryEncoding, FieldSpec, FieldType, LenKind, Profile};
use super::{content_ok, hex_ok, hex_value, Mti, MESSAGE_BYTES_MAX};

/// Where a field's content lies in the message: start and length in bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    /// Offset of the first content byte (after any length prefix).
    start: u16,
    /// Content length on the wire.
    len: u16,
}

/// A decoded ISO 8583 message borrowing its fields from the frame buffer.
///
/// Decoding validates every field against its type and length, so the
/// accessors never fail on a present field. No heap allocation happens.
#[derive(Clone)]
pub struct Message<'a> {
    /// The whole message, MTI first.
    buf: &'a [u8],
    /// The profile it was decoded with (binary fields depend on it).
    profile: &'static Profile,
    /// The message type indicator.
    mti: Mti,
    /// Present fields, primary and secondary.
    bitmap: Bitmap,
    /// Content spans by field number; meaningful only where `bitmap` says so.
    spans: [Span; 129],
}

impl std::fmt::Debug for Message<'_> {
    /// Field numbers and lengths only: a message holds card data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_map();
        for n in self.bitmap.fields() {
            list.entry(&n, &self.span(n).len);
        }
        list.finish()?;
        write!(f, " mti={}", self.mti)
    }
}

/// Reads a run of `digits` ASCII digits as a number; `None` on a non-digit.
fn ascii_number(bytes: &[u8]) -> Option<u16> {
    let mut value: u16 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u16::from(b - b'0'))?;
    }
    Some(value)
}

/// A cursor over the input with checked advancing.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: u8) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end.and_then(|e| self.buf.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.error(
                field,
                DecodeErrorKind::Truncated {
                    needed: u16::try_from(n - (self.buf.len() - self.pos)).unwrap_or(u16::MAX),
                },
            )),
        }
    }

    fn error(&self, field: u8, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            field,
            kind,
            offset: u16::try_from(self.pos).unwrap_or(u16::MAX),
        }
    }
}

impl<'a> Message<'a> {
    /// Decodes one message (MTI, bitmaps, fields; no length header).
    ///
    /// # Errors
    /// [`DecodeError`] naming the field and the problem: truncated input, a
    /// bad MTI or bitmap, a length prefix over the field's maximum, content
    /// of the wrong type, or trailing bytes.
    pub fn decode(profile: &'static Profile, buf: &'a [u8]) -> Result<Self, DecodeError> {
        match Self::decode_inner(profile, buf, false)? {
            (m, None) => Ok(m),
            (_, Some(e)) => Err(e),
        }
    }

    /// Decodes as much as can be trusted, so a server can answer a bad
    /// message with response code 30 and still echo F11 and F41.
    ///
    /// A field whose content has the wrong type but whose length is known
    /// is left out of the result and decoding goes on; a length or
    /// truncation error stops it, keeping the fields before it. The first
    /// error, if any, is returned beside the message.
    ///
    /// # Errors
    /// [`DecodeError`] when not even the MTI and bitmaps can be read.
    pub fn decode_lenient(
        profile: &'static Profile,
        buf: &'a [u8],
    ) -> Result<(Self, Option<DecodeError>), DecodeError> {
        Self::decode_inner(profile, buf, true)
    }

    // Inlined into both callers so the large `Message` is built in place
    // rather than copied out of a tuple.
    #[inline(always)]
    fn decode_inner(
        profile: &'static Profile,
        buf: &'a [u8],
        lenient: bool,
    ) -> Result<(Self, Option<DecodeError>), DecodeError> {
        if buf.len() > MESSAGE_BYTES_MAX {
            return Err(DecodeError {
                field: 0,
                kind: DecodeErrorKind::MessageTooLong,
                offset: 0,
            });
        }
        let mut cur = Cursor { buf, pos: 0 };
        let mti_bytes = cur.take(4, 0)?;
        let mti = Mti::from_bytes(mti_bytes).ok_or(DecodeError {
            field: 0,
            kind: DecodeErrorKind::BadMti,
            offset: 0,
        })?;
        let primary = read_bitmap_half(&mut cur, profile.bitmap)?;
        let mut bitmap = Bitmap(u128::from(primary) << 64);
        if bitmap.has(1) {
            bitmap.0 |= u128::from(read_bitmap_half(&mut cur, profile.bitmap)?);
        }
        let mut spans = [Span::default(); 129];
        // Present fields minus those that failed; an error that stops
        // decoding also drops every field after it.
        let mut good = bitmap;
        let mut first_error = None;
        // Walk each 64-bit half on its own: cheaper than u128 shifts.
        let halves = [(bitmap.0 >> 64) as u64 & !(1u64 << 63), bitmap.0 as u64];
        'fields: for (half, base) in halves.into_iter().zip([0u8, 64]) {
            let mut bits = half;
            while bits != 0 {
                let lead = bits.leading_zeros();
                bits ^= 1u64 << (63 - lead);
                // lead <= 63, so n is 2..=128.
                let n = base + lead as u8 + 1;
                let spec = profile
                    .fields
                    .get(usize::from(n))
                    .ok_or(cur.error(n, DecodeErrorKind::BadBitmap))?;
                match read_field(&mut cur, profile, n, spec) {
                    Ok(span) => {
                        if let Some(slot) = spans.get_mut(usize::from(n)) {
                            *slot = span;
                        }
                    }
                    Err(e) => {
                        first_error = first_error.or(Some(e));
                        // Content errors leave the cursor after the field.
                        let content_only = matches!(e.kind, DecodeErrorKind::BadContent(_));
                        if !lenient || !content_only {
                            // Field n is bit 128 - n: drop it and all below.
                            good.0 &= !((1u128 << (129 - u32::from(n))) - 1);
                            break 'fields;
                        }
                        good.0 &= !(1u128 << (128 - u32::from(n)));
                    }
                }
            }
        }
        if first_error.is_none() && cur.pos != buf.len() {
            let left = u16::try_from(buf.len() - cur.pos).unwrap_or(u16::MAX);
            first_error = Some(cur.error(0, DecodeErrorKind::TrailingBytes(left)));
        }
        Ok((
            Message {
                buf,
                profile,
                mti,
                bitmap: good,
                spans,
            },
            first_error,
        ))
    }

    /// The message type indicator.
    pub fn mti(&self) -> Mti {
        self.mti
    }

    /// The fields present.
    pub fn bitmap(&self) -> Bitmap {
        self.bitmap
    }

    /// The profile the message was decoded with.
    pub fn profile(&self) -> &'static Profile {
        self.profile
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    fn span(&self, n: u8) -> Span {
        self.spans.get(usize::from(n)).copied().unwrap_or_default()
    }

    /// Whether field `n` is present.
    pub fn has(&self, n: u8) -> bool {
        n >= 2 && self.bitmap.has(n)
    }

    /// Field `n`'s content as on the wire (without its length prefix). For
    /// binary fields in a hex profile this is the hex text; see [`Self::binary`].
    pub fn raw(&self, n: u8) -> Option<&'a [u8]> {
        if !self.has(n) {
            return None;
        }
        let s = self.span(n);
        self.buf
            .get(usize::from(s.start)..usize::from(s.start) + usize::from(s.len))
    }

    /// A text field's content; `None` if absent or binary.
    pub fn text(&self, n: u8) -> Option<&'a str> {
        match self.profile.field(n)?.ty {
            FieldType::B => None,
            // Validated ASCII at decode, so this never fails.
            _ => std::str::from_utf8(self.raw(n)?).ok(),
        }
    }

    /// A numeric field's value; `None` if absent, not numeric or over 19 digits.
    pub fn number(&self, n: u8) -> Option<u64> {
        let raw = self.raw(n)?;
        if raw.len() > 19 || self.profile.field(n)?.ty != FieldType::N {
            return None;
        }
        raw.iter().try_fold(0u64, |v, &b| {
            v.checked_mul(10)?
                .checked_add(u64::from(b.wrapping_sub(b'0')))
        })
    }

    /// A binary field's bytes, decoded from hex when the profile says so.
    pub fn binary(&self, n: u8) -> Option<BinaryField<'a>> {
        if self.profile.field(n)?.ty != FieldType::B {
            return None;
        }
        Some(BinaryField {
            wire: self.raw(n)?,
            encoding: self.profile.binary,
        })
    }

    /// Present fields and their wire content, in ascending order.
    pub fn fields(&self) -> impl Iterator<Item = (u8, &'a [u8])> + '_ {
        self.bitmap
            .fields()
            .filter_map(move |n| Some((n, self.raw(n)?)))
    }
}

/// A binary field's content, raw or hex on the wire.
#[derive(Clone, Copy, Debug)]
pub struct BinaryField<'a> {
    /// Content as on the wire.
    wire: &'a [u8],
    /// Raw or hex.
    encoding: BinaryEncoding,
}

impl<'a> BinaryField<'a> {
    /// Length in bytes once decoded.
    pub fn len(&self) -> usize {
        self.wire.len() / Profile::binary_unit(self.encoding)
    }

    /// Whether the field is empty.
    pub fn is_empty(&self) -> bool {
        self.wire.is_empty()
    }

    /// The bytes, copied into `out` when hex has to be decoded; `None` when
    /// `out` is too small. A raw field is returned without copying.
    pub fn bytes<'o>(&self, out: &'o mut [u8]) -> Option<&'o [u8]>
    where
        'a: 'o,
    {
        match self.encoding {
            BinaryEncoding::Raw => Some(self.wire),
            BinaryEncoding::Hex => {
                let dst = out.get_mut(..self.len())?;
                for (d, pair) in dst.iter_mut().zip(self.wire.chunks_exact(2)) {
                    let (hi, lo) = (pair.first().copied()?, pair.get(1).copied()?);
                    *d = (hex_value(hi)? << 4) | hex_value(lo)?;
                }
                Some(dst)
            }
        }
    }
}

fn read_bitmap_half(cur: &mut Cursor<'_>, encoding: BinaryEncoding) -> Result<u64, DecodeError> {
    match encoding {
        BinaryEncoding::Raw => {
            let b = cur.take(8, 0)?;
            let arr: [u8; 8] = b
                .try_into()
                .map_err(|_| cur.error(0, DecodeErrorKind::BadBitmap))?;
            Ok(u64::from_be_bytes(arr))
        }
        BinaryEncoding::Hex => {
            let start = cur.pos;
            let b = cur.take(16, 0)?;
            b.iter()
                .try_fold(0u64, |v, &c| Some((v << 4) | u64::from(hex_value(c)?)))
                .ok_or(DecodeError {
                    field: 0,
                    kind: DecodeErrorKind::BadBitmap,
                    offset: u16::try_from(start).unwrap_or(u16::MAX),
                })
        }
    }
}

// Inlined: called once per field, the call itself cost a fifth of a decode.
#[inline(always)]
fn read_field(
    cur: &mut Cursor<'_>,
    profile: &Profile,
    n: u8,
    spec: &FieldSpec,
) -> Result<Span, DecodeError> {
    let unit = if spec.ty == FieldType::B {
        Profile::binary_unit(profile.binary)
    } else {
        1
    };
    // Maximum wire length; at most 2 * 999, no overflow.
    let max_wire = usize::from(spec.max_len) * unit;
    let len = match spec.len {
        LenKind::Fixed => max_wire,
        kind => {
            let digits = kind.prefix_digits();
            let prefix_at = cur.pos;
            let prefix = cur.take(digits, n)?;
            let len = ascii_number(prefix).ok_or(DecodeError {
                field: n,
                kind: DecodeErrorKind::BadLengthPrefix {
                    digits: digits as u8,
                },
                offset: u16::try_from(prefix_at).unwrap_or(u16::MAX),
            })?;
            let len = usize::from(len);
            if len > max_wire || len % unit != 0 {
                return Err(DecodeError {
                    field: n,
                    kind: DecodeErrorKind::LengthOverMax {
                        len: len as u16,
                        max: max_wire as u16,
                    },
                    offset: u16::try_from(prefix_at).unwrap_or(u16::MAX),
                });
            }
            len
        }
    };
    let start = cur.pos;
    let content = cur.take(len, n)?;
    let binary_hex = spec.ty == FieldType::B && profile.binary == BinaryEncoding::Hex;
    let ok = if binary_hex {
        hex_ok(content)
    } else {
        content_ok(spec.ty, content)
    };
    if !ok {
        return Err(DecodeError {
            field: n,
            kind: DecodeErrorKind::BadContent(spec.ty),
            offset: u16::try_from(start).unwrap_or(u16::MAX),
        });
    }
    // MESSAGE_BYTES_MAX fits u16, checked on entry.
    Ok(Span {
        start: start as u16,
        len: len as u16,
    })
}
