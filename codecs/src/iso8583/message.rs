//! Zero-copy decode: a [`Message`] borrows every field from the input.

use super::bitmap::Bitmap;
use super::error::{DecodeError, DecodeErrorKind};
use super::plan::{self, Check, FieldPlan, Plans};
use super::spec::{BinaryEncoding, FieldType, Profile};
use super::{all_in, digits_ok, hex_value, printable_ok, Mti, MESSAGE_BYTES_MAX};

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
    /// Present fields, primary and secondary: the fields of `wire` less
    /// those that failed a lenient decode.
    bitmap: Bitmap,
    /// The bitmap as on the wire: its fields (but field 1) are the ones
    /// `starts` locates, in order.
    wire: Bitmap,
    /// Offset of the content (after any length prefix) of the first
    /// [`STARTS_KEPT`] fields of `wire`, by their rank in it. The length
    /// is the fixed length or the prefix just before it, both checked at
    /// decode. A field further on is found by walking on from the last
    /// one kept. Kept this small so a `Message` is built and moved with a
    /// few register stores, not a `memcpy` call (a fifth of a decode when
    /// every field number had its slot).
    starts: [u16; STARTS_KEPT],
}

/// How many field offsets a [`Message`] keeps; fields past this many are
/// found by walking on from the last one kept. A typical authorization
/// has 15 to 25 fields.
pub(crate) const STARTS_KEPT: usize = 32;

impl std::fmt::Debug for Message<'_> {
    /// Field numbers and lengths only: a message holds card data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_map();
        for n in self.bitmap.fields() {
            list.entry(&n, &self.raw(n).map_or(0, <[u8]>::len));
        }
        list.finish()?;
        write!(f, " mti={}", self.mti)
    }
}

/// Reads a length prefix (at most 3 ASCII digits, so at most 999) as a
/// number; `None` on a non-digit or a longer run.
#[inline(always)]
pub(super) fn ascii_number(bytes: &[u8]) -> Option<u16> {
    let digit = |b: u8| u16::from(b.wrapping_sub(b'0'));
    // Each "digit" is at most 255 before the check: no sum overflows u16.
    let (value, digit_max) = match *bytes {
        [] => (0, 0),
        [a] => (digit(a), digit(a)),
        [a, b] => (digit(a) * 10 + digit(b), digit(a).max(digit(b))),
        [a, b, c] => (
            digit(a) * 100 + digit(b) * 10 + digit(c),
            digit(a).max(digit(b)).max(digit(c)),
        ),
        _ => return None,
    };
    (digit_max <= 9).then_some(value)
}

impl<'a> Message<'a> {
    /// Decodes one message (MTI, bitmaps, fields; no length header).
    ///
    /// # Errors
    /// [`DecodeError`] naming the field and the problem: truncated input, a
    /// bad MTI or bitmap, a length prefix over the field's maximum, content
    /// of the wrong type, or trailing bytes.
    pub fn decode(profile: &'static Profile, buf: &'a [u8]) -> Result<Self, DecodeError> {
        // Built in place and filled, so the message is not copied out of
        // an intermediate value.
        let mut out = Self::decode_header(profile, buf);
        if let Ok(m) = &mut out {
            if let Some(e) = m.decode_fields(false) {
                out = Err(e);
            }
        }
        out
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
        let mut m = Self::decode_header(profile, buf)?;
        let error = m.decode_fields(true);
        Ok((m, error))
    }

    /// The MTI and bitmaps, as a message with every field present per the
    /// bitmap and no field located yet.
    #[inline(always)]
    fn decode_header(profile: &'static Profile, buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() > MESSAGE_BYTES_MAX {
            return Err(error_at(0, 0, DecodeErrorKind::MessageTooLong));
        }
        let mti_bytes = buf.get(..4).ok_or_else(|| truncated(buf, 0, 0, 4))?;
        let mti = Mti::from_bytes(mti_bytes).ok_or(error_at(0, 0, DecodeErrorKind::BadMti))?;
        let half_bytes = bitmap_half_bytes(profile.bitmap);
        let primary = read_bitmap_half(buf, 4, profile.bitmap)?;
        let mut bitmap = Bitmap(u128::from(primary) << 64);
        if bitmap.has(1) {
            bitmap.0 |= u128::from(read_bitmap_half(buf, 4 + half_bytes, profile.bitmap)?);
        }
        Ok(Message {
            buf,
            profile,
            mti,
            bitmap,
            wire: bitmap,
            starts: [0; STARTS_KEPT],
        })
    }

    /// Locates and checks every field the bitmap names, clearing from the
    /// bitmap those that fail; returns the first error. Without `lenient`
    /// any error stops decoding; with it, content errors do not.
    #[inline(always)]
    fn decode_fields(&mut self, lenient: bool) -> Option<DecodeError> {
        let local: Plans;
        let plans = match plan::precomputed(self.profile) {
            Some(plans) => plans,
            None => {
                local = FieldPlan::table(self.profile.fields, self.profile.binary);
                &local
            }
        };
        let buf = self.buf;
        let half_bytes = bitmap_half_bytes(self.profile.bitmap);
        let mut pos = 4 + half_bytes * (1 + usize::from(self.bitmap.has(1)));
        let bitmap = self.bitmap;
        // Present fields minus those that failed; an error that stops
        // decoding also drops every field after it.
        let mut good = bitmap;
        let mut first_error = None;
        // Rank of the field in the wire bitmap: its slot in `starts`.
        let mut rank = 0usize;
        // Walk each 64-bit half on its own: cheaper than u128 shifts.
        let halves = [(bitmap.0 >> 64) as u64 & !(1u64 << 63), bitmap.0 as u64];
        'fields: for (half, base) in halves.into_iter().zip([0u8, 64]) {
            let mut bits = half;
            while bits != 0 {
                let lead = bits.leading_zeros();
                bits ^= 1u64 << (63 - lead);
                // lead <= 63, so n is 2..=128.
                let n = base + lead as u8 + 1;
                let result = match plans.get(usize::from(n)) {
                    Some(&plan) => read_field(buf, &mut pos, n, plan),
                    None => Err(error_at(n, pos, DecodeErrorKind::BadBitmap)),
                };
                let slot = self.starts.get_mut(rank);
                rank += 1;
                match result {
                    Ok(start) => {
                        if let Some(slot) = slot {
                            *slot = start;
                        }
                    }
                    Err(e) => {
                        first_error = first_error.or(Some(e));
                        // Content errors leave the cursor after the field,
                        // and say where its content starts: later fields
                        // are found by walking on from it.
                        let content_only = matches!(e.kind, DecodeErrorKind::BadContent(_));
                        if let (true, Some(slot)) = (content_only, slot) {
                            *slot = e.offset;
                        }
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
        self.bitmap = good;
        if first_error.is_none() && pos != buf.len() {
            let left = u16::try_from(buf.len() - pos).unwrap_or(u16::MAX);
            first_error = Some(error_at(0, pos, DecodeErrorKind::TrailingBytes(left)));
        }
        first_error
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

    /// Whether field `n` is present.
    pub fn has(&self, n: u8) -> bool {
        n >= 2 && self.bitmap.has(n)
    }

    /// Field `n`'s content as on the wire (without its length prefix). For
    /// binary fields in a hex profile this is the hex text; see [`Self::binary`].
    pub fn raw(&self, n: u8) -> Option<&'a [u8]> {
        let (start, end) = self.span(n)?;
        self.buf.get(start..end)
    }

    /// Where present field `n`'s content starts and ends in the message.
    fn span(&self, n: u8) -> Option<(usize, usize)> {
        if !self.has(n) {
            return None;
        }
        // Wire fields before n (n >= 2, so the shift is 1..=127).
        let before = self.wire.0 & !Bitmap::mask(1) & (u128::MAX << (129 - u32::from(n)));
        if let Some(&start) = self.starts.get(before.count_ones() as usize) {
            return span_at(
                self.buf,
                FieldPlan::of(self.profile, n)?,
                usize::from(start),
            );
        }
        // Past the offsets kept: walk on from the last one kept. Every wire
        // field before a present one was located at decode, so each length
        // read here was checked there.
        let mut wire = self.wire.fields().skip(STARTS_KEPT - 1);
        let last_kept = wire.next()?;
        let plan = FieldPlan::of(self.profile, last_kept)?;
        let (_, mut end) = span_at(self.buf, plan, usize::from(*self.starts.last()?))?;
        for m in wire {
            let plan = FieldPlan::of(self.profile, m)?;
            let span = span_at(self.buf, plan, end + usize::from(plan.prefix_digits))?;
            if m == n {
                return Some(span);
            }
            end = span.1;
        }
        None
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

    /// Present fields and their wire content, in ascending order: one
    /// walk over the message, however many fields it has.
    pub fn fields(&self) -> impl Iterator<Item = (u8, &'a [u8])> + '_ {
        let present = self.bitmap.0 & !Bitmap::mask(1);
        // The last present field; no field is located after it.
        let last = 128 - present.trailing_zeros().min(127) as u8;
        let mut wire = self.wire.fields().take_while(move |&n| n <= last);
        let mut rank = 0;
        let mut end = 0;
        std::iter::from_fn(move || loop {
            let n = wire.next()?;
            let plan = FieldPlan::of(self.profile, n)?;
            let start = match self.starts.get(rank) {
                Some(&start) => usize::from(start),
                None => end + usize::from(plan.prefix_digits),
            };
            rank += 1;
            let span = span_at(self.buf, plan, start)?;
            end = span.1;
            if self.bitmap.has(n) {
                return Some((n, self.buf.get(span.0..span.1)?));
            }
        })
    }
}

/// Where a field of plan `plan` whose content starts at `start` ends: its
/// fixed length, or the length in the prefix just before it.
fn span_at(buf: &[u8], plan: FieldPlan, start: usize) -> Option<(usize, usize)> {
    let len = if plan.is_variable() {
        let prefix_at = start.checked_sub(usize::from(plan.prefix_digits))?;
        usize::from(ascii_number(buf.get(prefix_at..start)?)?)
    } else {
        usize::from(plan.wire_len_max)
    };
    Some((start, start.checked_add(len)?))
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

/// Bytes of one bitmap half under `encoding`.
#[inline(always)]
const fn bitmap_half_bytes(encoding: BinaryEncoding) -> usize {
    match encoding {
        BinaryEncoding::Raw => 8,
        BinaryEncoding::Hex => 16,
    }
}

/// An error in field `field` at offset `pos` (at most `MESSAGE_BYTES_MAX`).
#[inline(always)]
fn error_at(field: u8, pos: usize, kind: DecodeErrorKind) -> DecodeError {
    DecodeError {
        field,
        kind,
        offset: u16::try_from(pos).unwrap_or(u16::MAX),
    }
}

/// Truncation in field `field`: `n` bytes wanted at `pos`, fewer there.
#[cold]
fn truncated(buf: &[u8], field: u8, pos: usize, n: usize) -> DecodeError {
    let needed = n.saturating_sub(buf.len().saturating_sub(pos));
    error_at(
        field,
        pos,
        DecodeErrorKind::Truncated {
            needed: u16::try_from(needed).unwrap_or(u16::MAX),
        },
    )
}

fn read_bitmap_half(buf: &[u8], at: usize, encoding: BinaryEncoding) -> Result<u64, DecodeError> {
    let len = bitmap_half_bytes(encoding);
    let b = buf
        .get(at..at + len)
        .ok_or_else(|| truncated(buf, 0, at, len))?;
    match encoding {
        BinaryEncoding::Raw => {
            let arr: [u8; 8] = b
                .try_into()
                .map_err(|_| error_at(0, at, DecodeErrorKind::BadBitmap))?;
            Ok(u64::from_be_bytes(arr))
        }
        BinaryEncoding::Hex => b
            .iter()
            .try_fold(0u64, |v, &c| Some((v << 4) | u64::from(hex_value(c)?)))
            .ok_or(error_at(0, at, DecodeErrorKind::BadBitmap)),
    }
}

/// Whether `buf[start..end]` is all in `class`: out of line, as `an`,
/// `z` and hex fields are few, so the loop over the usual ones stays small.
#[inline(never)]
fn class_ok(buf: &[u8], start: usize, end: usize, class: u8) -> bool {
    buf.get(start..end).is_some_and(|c| all_in(c, class))
}

/// Whether `buf[start..end]` is `C` or `D` then digits (`x+n`); out of
/// line like [`class_ok`].
#[inline(never)]
fn signed_digits_ok(buf: &[u8], start: usize, end: usize) -> bool {
    matches!(buf.get(start), Some(b'C' | b'D')) && start < end && digits_ok(buf, start + 1, end)
}

/// Locates field `n` at `*pos` following its plan and checks its content;
/// returns the content's offset. On success and on a content error the
/// cursor moves past the field; on other errors it stays.
// Inlined: called once per field, the call itself cost a fifth of a decode.
#[inline(always)]
fn read_field(buf: &[u8], pos: &mut usize, n: u8, plan: FieldPlan) -> Result<u16, DecodeError> {
    let prefix_at = *pos;
    let digits = usize::from(plan.prefix_digits);
    // prefix_at <= buf.len() <= MESSAGE_BYTES_MAX: no overflow below.
    let start = prefix_at + digits;
    let len = if digits == 0 {
        usize::from(plan.wire_len_max)
    } else {
        let prefix = buf
            .get(prefix_at..start)
            .ok_or_else(|| truncated(buf, n, prefix_at, digits))?;
        let len = ascii_number(prefix).ok_or(error_at(
            n,
            prefix_at,
            DecodeErrorKind::BadLengthPrefix {
                digits: plan.prefix_digits,
            },
        ))?;
        if len > plan.wire_len_max || len & plan.odd_mask != 0 {
            return Err(error_at(
                n,
                prefix_at,
                DecodeErrorKind::LengthOverMax {
                    len,
                    max: plan.wire_len_max,
                },
            ));
        }
        usize::from(len)
    };
    let end = start + len;
    if end > buf.len() {
        return Err(truncated(buf, n, start, len));
    }
    *pos = end;
    let ok = match plan.check {
        Check::Any => true,
        Check::Digits => digits_ok(buf, start, end),
        Check::Printable => printable_ok(buf, start, end),
        Check::Class(class) => class_ok(buf, start, end, class),
        Check::SignedDigits => signed_digits_ok(buf, start, end),
    };
    if !ok {
        return Err(error_at(n, start, DecodeErrorKind::BadContent(plan.ty)));
    }
    // MESSAGE_BYTES_MAX fits u16, checked on entry.
    Ok(start as u16)
}
