//! F48 subelements: 2-digit tag, 2-digit length, value; ECI in tag 42,
//! the partial-capture indicator in tag 22.

use super::amount::parse_digits;

/// Most subelements read from one F48 before giving up.
pub const SUBELEMENTS_MAX: usize = 64;

/// The subelement that carries the electronic commerce indicator.
pub const ECI_TAG: u8 = 42;

/// The subelement that marks a capture (0220) as partial: `1`, the rest of
/// the hold stays open for further captures; `0` or absent, final.
pub const PARTIAL_CAPTURE_TAG: u8 = 22;

/// Why F48 could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum F48Error {
    /// A tag or length is not 2 digits, or a value runs past the end.
    #[error("F48 subelement at byte {0} is malformed")]
    Malformed(u16),
    /// More than [`SUBELEMENTS_MAX`] subelements.
    #[error("F48 has more than {SUBELEMENTS_MAX} subelements")]
    TooMany,
    /// The ECI subelement is not 2 digits.
    #[error("F48 subelement 42 (ECI) must be 2 digits")]
    BadEci,
    /// The partial-capture subelement is not the one digit `0` or `1`.
    #[error("F48 subelement 22 (partial capture) must be 0 or 1")]
    BadPartialCapture,
}

/// Iterator over `(tag, value)`; stops after the first error.
#[derive(Clone, Debug)]
pub struct Subelements<'a> {
    /// What is left to read.
    rest: &'a [u8],
    /// Offset of `rest` in the field, for errors.
    offset: usize,
    /// Subelements read so far, against [`SUBELEMENTS_MAX`].
    count: usize,
}

/// Reads the subelements of F48's content.
pub fn subelements(f48: &[u8]) -> Subelements<'_> {
    Subelements {
        rest: f48,
        offset: 0,
        count: 0,
    }
}

impl<'a> Iterator for Subelements<'a> {
    type Item = Result<(u8, &'a [u8]), F48Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let at = u16::try_from(self.offset).unwrap_or(u16::MAX);
        let fail = |s: &mut Self, e| {
            s.rest = &[];
            Some(Err(e))
        };
        if self.count == SUBELEMENTS_MAX {
            return fail(self, F48Error::TooMany);
        }
        let head = self
            .rest
            .get(..4)
            .and_then(|h| Some((parse_digits(h.get(..2)?, 2)?, parse_digits(h.get(2..)?, 2)?)));
        let Some((tag, len)) = head else {
            return fail(self, F48Error::Malformed(at));
        };
        let end = 4 + len as usize;
        let Some(value) = self.rest.get(4..end) else {
            return fail(self, F48Error::Malformed(at));
        };
        self.rest = self.rest.get(end..).unwrap_or(&[]);
        self.offset += end;
        self.count += 1;
        Some(Ok((tag as u8, value)))
    }
}

/// The first subelement with `tag`.
///
/// # Errors
/// [`F48Error`] when F48 is malformed before that subelement is found.
pub fn find(f48: &[u8], tag: u8) -> Result<Option<&[u8]>, F48Error> {
    for item in subelements(f48) {
        let (t, v) = item?;
        if t == tag {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// Electronic commerce indicator, the 2 digits of subelement 42.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Eci(pub u8);

/// What an ECI says about cardholder authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EciClass {
    /// 05 (Visa) or 02 (Mastercard): 3-D Secure authenticated.
    FullyAuthenticated,
    /// 06 (Visa) or 01 (Mastercard): authentication attempted.
    Attempted,
    /// 07 (or 00): not authenticated.
    NotAuthenticated,
    /// Any other value.
    Unknown,
}

impl Eci {
    /// The class of this indicator.
    pub fn class(self) -> EciClass {
        match self.0 {
            5 | 2 => EciClass::FullyAuthenticated,
            6 | 1 => EciClass::Attempted,
            7 | 0 => EciClass::NotAuthenticated,
            _ => EciClass::Unknown,
        }
    }
}

/// The ECI in F48, if any.
///
/// # Errors
/// [`F48Error`] when F48 is malformed or subelement 42 is not 2 digits.
pub fn eci(f48: &[u8]) -> Result<Option<Eci>, F48Error> {
    match find(f48, ECI_TAG)? {
        None => Ok(None),
        Some(v) => parse_digits(v, 2)
            .map(|d| Some(Eci(d as u8)))
            .ok_or(F48Error::BadEci),
    }
}

/// Whether F48 marks a capture as partial (subelement 22 is `1`).
///
/// # Errors
/// [`F48Error`] when F48 is malformed or subelement 22 is not `0` or `1`.
pub fn partial_capture(f48: &[u8]) -> Result<bool, F48Error> {
    match find(f48, PARTIAL_CAPTURE_TAG)? {
        None | Some(b"0") => Ok(false),
        Some(b"1") => Ok(true),
        Some(_) => Err(F48Error::BadPartialCapture),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_eci_among_others() {
        let f48 = b"0103abc420207";
        assert_eq!(eci(f48), Ok(Some(Eci(7))));
        assert_eq!(Eci(7).class(), EciClass::NotAuthenticated);
        assert_eq!(Eci(5).class(), EciClass::FullyAuthenticated);
        assert_eq!(Eci(1).class(), EciClass::Attempted);
        assert_eq!(eci(b"0103abc"), Ok(None));
        assert_eq!(eci(b""), Ok(None));
    }

    #[test]
    fn finds_the_partial_capture_indicator() {
        assert_eq!(partial_capture(b"22011"), Ok(true));
        assert_eq!(partial_capture(b"4202052201"), Err(F48Error::Malformed(6)));
        assert_eq!(partial_capture(b"42020522010"), Ok(false));
        assert_eq!(partial_capture(b"42020522011"), Ok(true));
        assert_eq!(eci(b"42020522011"), Ok(Some(Eci(5))));
        assert_eq!(partial_capture(b"420205"), Ok(false));
        assert_eq!(partial_capture(b""), Ok(false));
        assert_eq!(partial_capture(b"22012"), Err(F48Error::BadPartialCapture));
        assert_eq!(partial_capture(b"220211"), Err(F48Error::BadPartialCapture));
        assert_eq!(partial_capture(b"2200"), Err(F48Error::BadPartialCapture));
    }

    #[test]
    fn malformed_subelements_are_errors() {
        assert_eq!(eci(b"0105abc"), Err(F48Error::Malformed(0)));
        assert_eq!(eci(b"01"), Err(F48Error::Malformed(0)));
        assert_eq!(eci(b"0100x"), Err(F48Error::Malformed(4)));
        assert_eq!(eci(b"42027x"), Err(F48Error::BadEci));
        let many = b"0100".repeat(SUBELEMENTS_MAX + 1);
        assert_eq!(find(&many, 42), Err(F48Error::TooMany));
    }
}
