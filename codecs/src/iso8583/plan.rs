//! Per-profile field plans: what the decoder needs of each field, resolved
//! once from the dictionary and the profile's encodings.
//!
//! The decode loop reads one small [`FieldPlan`] per field and never
//! branches on the field type or the binary encoding; the built-in
//! profiles have their plans as `static` data.

use super::spec::{BinaryEncoding, FieldSpec, FieldType, LenKind, Profile, DICTIONARY_1987};

/// How a field's content is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Anything goes (raw binary).
    Any,
    /// ASCII digits, 8 bytes per step.
    Digits,
    /// Printable ASCII 0x20–0x7E, 8 bytes per step.
    Printable,
    /// Every byte in the given class of the class table (`an`, `z`, hex).
    Class(u8),
    /// `C` or `D` then digits (`x+n`).
    SignedDigits,
}

/// One field as the decoder sees it under one profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldPlan {
    /// Fixed wire length, or the maximum a length prefix may give.
    pub(crate) wire_len_max: u16,
    /// Digits of the length prefix; 0 for fixed fields.
    pub(crate) prefix_digits: u8,
    /// Mask a prefixed wire length must not have set (1 for hex binary:
    /// two characters per byte).
    pub(crate) odd_mask: u16,
    /// The content check.
    pub(crate) check: Check,
    /// The dictionary type, for error reports.
    pub(crate) ty: FieldType,
}

impl FieldPlan {
    /// The plan of `spec` with binary content in `binary`.
    pub(crate) const fn new(spec: &FieldSpec, binary: BinaryEncoding) -> FieldPlan {
        let hex = matches!(binary, BinaryEncoding::Hex);
        let is_binary = matches!(spec.ty, FieldType::B);
        let unit: u16 = if is_binary && hex { 2 } else { 1 };
        let check = match spec.ty {
            FieldType::N => Check::Digits,
            FieldType::An => Check::Class(super::CLASS_AN),
            FieldType::Ans => Check::Printable,
            FieldType::Z => Check::Class(super::CLASS_Z),
            FieldType::XN => Check::SignedDigits,
            FieldType::B if hex => Check::Class(super::CLASS_HEX),
            FieldType::B => Check::Any,
        };
        FieldPlan {
            // At most 2 * 999: no overflow.
            wire_len_max: spec.max_len * unit,
            prefix_digits: spec.len.prefix_digits() as u8,
            odd_mask: unit - 1,
            check,
            ty: spec.ty,
        }
    }

    /// The plans of every field of `fields` (index 0 and 1 included, unused).
    #[allow(clippy::indexing_slicing, reason = "i < 129 indexes 129-entry arrays")]
    pub(crate) const fn table(fields: &[FieldSpec; 129], binary: BinaryEncoding) -> Plans {
        let mut out = [FieldPlan::new(&fields[0], binary); 129];
        let mut i = 1;
        while i < 129 {
            out[i] = FieldPlan::new(&fields[i], binary);
            i += 1;
        }
        out
    }

    /// The plan of field `n` of `profile`, for the accessors.
    pub(crate) fn of(profile: &Profile, n: u8) -> Option<FieldPlan> {
        Some(FieldPlan::new(profile.field(n)?, profile.binary))
    }

    /// Whether the field has a length prefix.
    pub(crate) const fn is_variable(self) -> bool {
        self.prefix_digits != 0
    }
}

/// A plan per field number.
pub(crate) type Plans = [FieldPlan; 129];

/// [`DICTIONARY_1987`] with raw binary fields.
static PLANS_1987_RAW: Plans = FieldPlan::table(&DICTIONARY_1987, BinaryEncoding::Raw);
/// [`DICTIONARY_1987`] with hex binary fields.
static PLANS_1987_HEX: Plans = FieldPlan::table(&DICTIONARY_1987, BinaryEncoding::Hex);

/// The precomputed plans of `profile`, when it uses the 1987 dictionary
/// (every built-in profile does); `None` for other dictionaries.
pub(crate) fn precomputed(profile: &Profile) -> Option<&'static Plans> {
    of_1987(profile, &PLANS_1987_RAW, &PLANS_1987_HEX)
}

/// `raw` or `hex` after `profile`'s binary encoding, when `profile` uses
/// the 1987 dictionary; `None` for other dictionaries.
fn of_1987<T>(profile: &Profile, raw: &'static T, hex: &'static T) -> Option<&'static T> {
    if !std::ptr::eq(profile.fields, &DICTIONARY_1987) {
        return None;
    }
    Some(match profile.binary {
        BinaryEncoding::Raw => raw,
        BinaryEncoding::Hex => hex,
    })
}

/// One field as the writer sees it under one profile: the length test is
/// one comparison, and numbers that are not fields fail it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WritePlan {
    /// Shortest value allowed, in bytes (content, before any hex): the
    /// length of a fixed field, 0 for a variable one, and `u16::MAX` for
    /// field numbers 0 and 1, which no value fits.
    pub(crate) min_len: u16,
    /// Longest value allowed minus the shortest.
    pub(crate) span: u16,
    /// Digits of the length prefix; 0 for fixed fields.
    pub(crate) prefix_digits: u8,
    /// Binary content written as two hex characters per byte.
    pub(crate) hex: bool,
    /// The dictionary type, for the content check.
    pub(crate) ty: FieldType,
}

impl WritePlan {
    /// The plan of field `n` of `fields` with binary content in `binary`.
    #[allow(clippy::indexing_slicing, reason = "callers pass n < 129")]
    pub(crate) const fn new(fields: &[FieldSpec; 129], n: usize, binary: BinaryEncoding) -> Self {
        let spec = &fields[n];
        let fixed = matches!(spec.len, LenKind::Fixed);
        let min_len = if n < 2 {
            u16::MAX
        } else if fixed {
            spec.max_len
        } else {
            0
        };
        WritePlan {
            min_len,
            span: if n < 2 { 0 } else { spec.max_len - min_len },
            prefix_digits: spec.len.prefix_digits() as u8,
            hex: matches!(spec.ty, FieldType::B) && matches!(binary, BinaryEncoding::Hex),
            ty: spec.ty,
        }
    }

    /// Whether a value of `len` bytes has an allowed length.
    #[inline(always)]
    pub(crate) fn len_ok(self, len: usize) -> bool {
        len.wrapping_sub(usize::from(self.min_len)) <= usize::from(self.span)
    }

    /// The plans of every field of `fields` (0 and 1 fit no value).
    #[allow(clippy::indexing_slicing, reason = "i < 129 indexes 129-entry arrays")]
    pub(crate) const fn table(fields: &[FieldSpec; 129], binary: BinaryEncoding) -> WritePlans {
        let mut out = [WritePlan::new(fields, 0, binary); 129];
        let mut i = 1;
        while i < 129 {
            out[i] = WritePlan::new(fields, i, binary);
            i += 1;
        }
        out
    }

    /// The plan of field `n` of `profile`: from the precomputed table when
    /// there is one, else worked out from the dictionary.
    #[inline(always)]
    pub(crate) fn of(table: Option<&'static WritePlans>, profile: &Profile, n: u8) -> Option<Self> {
        match table {
            Some(plans) => plans.get(usize::from(n)).copied(),
            None if n <= 128 => Some(WritePlan::new(
                profile.fields,
                usize::from(n),
                profile.binary,
            )),
            None => None,
        }
    }
}

/// A write plan per field number.
pub(crate) type WritePlans = [WritePlan; 129];

/// [`DICTIONARY_1987`] with raw binary fields, for the writer.
static WRITE_1987_RAW: WritePlans = WritePlan::table(&DICTIONARY_1987, BinaryEncoding::Raw);
/// [`DICTIONARY_1987`] with hex binary fields, for the writer.
static WRITE_1987_HEX: WritePlans = WritePlan::table(&DICTIONARY_1987, BinaryEncoding::Hex);

/// The precomputed write plans of `profile`, when it uses the 1987
/// dictionary; `None` for other dictionaries.
pub(crate) fn precomputed_write(profile: &Profile) -> Option<&'static WritePlans> {
    of_1987(profile, &WRITE_1987_RAW, &WRITE_1987_HEX)
}
