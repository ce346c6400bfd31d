//! Encoding into a caller's reusable buffer, fields in ascending order.

use bytes::{BufMut, BytesMut};

use super::error::{EncodeError, EncodeErrorKind};
use super::plan::{self, WritePlan, WritePlans};
use super::spec::{FieldType, LenKind, Profile};
use super::{content_ok, short_word, Mti, MESSAGE_BYTES_MAX};

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Writes one message into a `BytesMut` without allocating once the
/// buffer has grown to its working size.
///
/// The MTI goes first and room for both bitmaps is kept; fields are
/// appended in ascending order; [`MessageWriter::finish`] fills the bitmaps
/// and closes the gap when no secondary bitmap is needed. If a field is
/// refused, nothing of it is written and the writer stays usable.
pub struct MessageWriter<'b> {
    /// Destination; the message starts at `start`.
    buf: &'b mut BytesMut,
    /// Dictionary and encodings.
    profile: &'static Profile,
    /// The profile's write plans, when precomputed (every built-in
    /// profile's are).
    plans: Option<&'static WritePlans>,
    /// Offset of the MTI in `buf`.
    start: usize,
    /// Fields written so far, the primary bitmap's (field `n` at bit
    /// `64 - n`) and the secondary's (bit `128 - n`): two words kept in
    /// registers, where an array of two was kept in memory and a `u128`
    /// took a dozen instructions per field to shift.
    primary: u64,
    /// See `primary`.
    secondary: u64,
    /// Last field written, to enforce ascending order.
    last: u8,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message of type `mti` at the end of `buf`.
    pub fn new(buf: &'b mut BytesMut, profile: &'static Profile, mti: Mti) -> Self {
        let start = buf.len();
        buf.put_slice(mti.as_bytes());
        buf.put_bytes(0, 2 * 8 * Profile::binary_unit(profile.bitmap));
        MessageWriter {
            buf,
            profile,
            plans: plan::precomputed_write(profile),
            start,
            primary: 0,
            secondary: 0,
            last: 1,
        }
    }

    /// Appends field `n` with its logical value: text for text fields, raw
    /// bytes for binary fields (hex-encoded here when the profile says so).
    ///
    /// # Errors
    /// [`EncodeError`] when `n` is out of order or not a field, or the value
    /// has the wrong length or content for the field's type.
    // Inlined where messages are built: the call itself (saving and
    // restoring registers) was a tenth of an encode.
    #[inline]
    pub fn field(&mut self, n: u8, value: &[u8]) -> Result<&mut Self, EncodeError> {
        let len = value.len();
        // Order, field number, length and content in one test, so the
        // usual path has one branch; the reason is worked out again, out
        // of line, only when a field is refused. Numbers 0 and 1 fit no
        // length; numbers over 128 have no plan.
        let plan = match WritePlan::of(self.plans, self.profile, n) {
            Some(plan) if n > self.last && plan.len_ok(len) && content_ok(plan.ty, value) => plan,
            _ => return Err(refusal(self.profile, self.last, n, value)),
        };
        let hex = plan.hex;
        let wire_len = if hex { len * 2 } else { len };
        match plan.prefix_digits {
            0 => {}
            2 => put_digits::<2>(self.buf, wire_len),
            _ => put_digits::<3>(self.buf, wire_len),
        }
        if hex {
            put_hex(self.buf, value);
        } else {
            put_raw(self.buf, value);
        }
        // n is 2..=128 here (a field of the dictionary).
        let bit = 1u64 << ((128 - u32::from(n)) & 63);
        if n <= 64 {
            self.primary |= bit;
        } else {
            self.secondary |= bit;
        }
        self.last = n;
        Ok(self)
    }

    /// Appends a fixed numeric field from a number, zero-padded.
    ///
    /// # Errors
    /// As [`Self::field`], and [`EncodeErrorKind::NumberTooLarge`] when the
    /// number has more digits than the field.
    #[allow(clippy::indexing_slicing, reason = "width <= 20 checked above")]
    pub fn number(&mut self, n: u8, value: u64) -> Result<&mut Self, EncodeError> {
        let spec = self.profile.field(n).ok_or(EncodeError {
            field: n,
            kind: EncodeErrorKind::NotAField,
        })?;
        let width = usize::from(spec.max_len);
        if spec.ty != FieldType::N || spec.len != LenKind::Fixed || width > 20 {
            return Err(EncodeError {
                field: n,
                kind: EncodeErrorKind::BadContent(spec.ty),
            });
        }
        let mut digits = [b'0'; 20];
        let mut v = value;
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
        let fits = width >= 20 || value < 10u64.pow(width as u32);
        if !fits {
            return Err(EncodeError {
                field: n,
                kind: EncodeErrorKind::NumberTooLarge,
            });
        }
        self.field(n, &digits[20 - width..])
    }

    /// Fills in the bitmaps and returns the message's length in bytes.
    ///
    /// # Errors
    /// [`EncodeErrorKind::MessageTooLong`] when the message exceeds
    /// [`MESSAGE_BYTES_MAX`]; the caller should truncate the buffer.
    #[allow(
        clippy::indexing_slicing,
        reason = "the bitmap room was reserved by `new`"
    )]
    pub fn finish(self) -> Result<usize, EncodeError> {
        let half = 8 * Profile::binary_unit(self.profile.bitmap);
        let bitmap_at = self.start + 4;
        let (mut primary, secondary) = (self.primary, self.secondary);
        if secondary != 0 {
            primary |= 1 << 63;
            write_bitmap(
                &mut self.buf[bitmap_at + half..bitmap_at + 2 * half],
                secondary.to_be_bytes(),
            );
        } else {
            // No secondary bitmap: close its room.
            let end = self.buf.len();
            self.buf
                .copy_within(bitmap_at + 2 * half..end, bitmap_at + half);
            self.buf.truncate(end - half);
        }
        write_bitmap(
            &mut self.buf[bitmap_at..bitmap_at + half],
            primary.to_be_bytes(),
        );
        let len = self.buf.len() - self.start;
        if len > MESSAGE_BYTES_MAX {
            return Err(EncodeError {
                field: 0,
                kind: EncodeErrorKind::MessageTooLong,
            });
        }
        Ok(len)
    }
}

/// Why field `n` with `value` is refused after field `last`: out of order
/// or not a field, then the length, then the content. Out of line, and
/// given values rather than the writer, so that the writer's address is
/// not taken and it can stay in registers.
#[cold]
#[inline(never)]
fn refusal(profile: &Profile, last: u8, n: u8, value: &[u8]) -> EncodeError {
    let err = |kind| EncodeError { field: n, kind };
    if n <= last {
        return err(EncodeErrorKind::OutOfOrder);
    }
    let Some(spec) = profile.field(n) else {
        return err(EncodeErrorKind::NotAField);
    };
    let actual = u16::try_from(value.len()).unwrap_or(u16::MAX);
    match spec.len {
        LenKind::Fixed if actual != spec.max_len => err(EncodeErrorKind::WrongLength {
            expected: spec.max_len,
            actual,
        }),
        LenKind::LlVar | LenKind::LllVar if actual > spec.max_len => {
            err(EncodeErrorKind::TooLong {
                max: spec.max_len,
                actual,
            })
        }
        _ => err(EncodeErrorKind::BadContent(spec.ty)),
    }
}

#[allow(
    clippy::indexing_slicing,
    reason = "chunks of 2, nibbles index a 16-entry table"
)]
fn write_bitmap(dst: &mut [u8], bytes: [u8; 8]) {
    if dst.len() == 8 {
        dst.copy_from_slice(&bytes);
    } else {
        for (pair, b) in dst.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX_UPPER[usize::from(b >> 4)];
            pair[1] = HEX_UPPER[usize::from(b & 0x0f)];
        }
    }
}

/// Writes `value` as it is, with fixed-size stores up to 16 bytes (most
/// fields): one 8-byte store, or two overlapping ones with the length cut
/// back in between, instead of a `memcpy` call each.
#[inline(always)]
fn put_raw(buf: &mut BytesMut, value: &[u8]) {
    let len = value.len();
    if let (Some(head), Some(tail)) = (value.first_chunk::<8>(), value.last_chunk::<8>()) {
        if len <= 16 {
            let end = buf.len() + len;
            buf.put_slice(head);
            buf.truncate(end - 8);
            buf.put_slice(tail);
            return;
        }
    } else if !value.is_empty() {
        // Under 8 bytes: loaded into a word whose first lanes are the value,
        // written whole, the unused tail cut off.
        buf.put_u64_le(short_word(value));
        buf.truncate(buf.len() - (8 - len));
        return;
    }
    buf.put_slice(value);
}

/// Writes `value` as upper-case hex, two characters per byte.
#[allow(clippy::indexing_slicing, reason = "nibbles index a 16-entry table")]
fn put_hex(buf: &mut BytesMut, value: &[u8]) {
    for &b in value {
        buf.put_slice(&[
            HEX_UPPER[usize::from(b >> 4)],
            HEX_UPPER[usize::from(b & 0x0f)],
        ]);
    }
}

/// Writes a length prefix: `value` (at most 999, checked by the caller
/// against the field's maximum) as `WIDTH` digits. Constant divisors, so
/// no division instruction.
fn put_digits<const WIDTH: usize>(buf: &mut BytesMut, value: usize) {
    let mut digits = [b'0'; WIDTH];
    let mut v = value;
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    buf.put_slice(&digits);
}
