//! Card data and secrets, in types whose `Debug` masks them. None of them
//! implements `Display`: the clear value is only reachable through
//! `expose`, which is easy to find in review.

use std::fmt;

use super::error::Error;
use super::field::{self, check_str};
use super::tag;

/// A card number in clear: 12..=19 ASCII digits, borrowed from the frame.
/// `Debug` shows at most the first 6 and last 4 digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pan<'a>(&'a str);

impl<'a> Pan<'a> {
    /// Checks the digits and length.
    ///
    /// # Errors
    /// [`Error::FieldLength`] or [`Error::BadCharacter`] for tag `PAN`.
    pub fn new(digits: &'a str) -> Result<Pan<'a>, Error> {
        check_str(field::PAN, digits.as_bytes()).map(Pan)
    }

    pub(crate) fn decode(value: &'a [u8]) -> Result<Pan<'a>, Error> {
        check_str(field::PAN, value).map(Pan)
    }

    /// The clear card number, for Luhn checking and tokenization only.
    pub fn expose(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for Pan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.0.len();
        let first = self.0.get(..6).unwrap_or("");
        let last = self.0.get(len.saturating_sub(4)..).unwrap_or("");
        f.write_str("Pan(")?;
        f.write_str(first)?;
        for _ in 0..len.saturating_sub(10) {
            f.write_str("*")?;
        }
        f.write_str(last)?;
        f.write_str(")")
    }
}

/// A card verification value (CVV2/CVC2): 3 or 4 ASCII digits. `Debug`
/// prints `***`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cvv2<'a>(&'a str);

impl<'a> Cvv2<'a> {
    /// Checks the digits and length.
    ///
    /// # Errors
    /// [`Error::FieldLength`] or [`Error::BadCharacter`] for tag `CVV2`.
    pub fn new(digits: &'a str) -> Result<Cvv2<'a>, Error> {
        check_str(field::CVV2, digits.as_bytes()).map(Cvv2)
    }

    pub(crate) fn decode(value: &'a [u8]) -> Result<Cvv2<'a>, Error> {
        check_str(field::CVV2, value).map(Cvv2)
    }

    /// The clear value, to pass to the issuer check only.
    pub fn expose(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for Cvv2<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvv2(***)")
    }
}

/// A client secret: 16..=64 raw bytes. `Debug` prints `***`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret<'a>(&'a [u8]);

/// Shortest secret accepted.
const SECRET_BYTES_MIN: usize = 16;
/// Longest secret accepted.
const SECRET_BYTES_MAX: usize = 64;

impl<'a> Secret<'a> {
    /// Checks the length.
    ///
    /// # Errors
    /// [`Error::FieldLength`] for tag `SECRET`.
    pub fn new(bytes: &'a [u8]) -> Result<Secret<'a>, Error> {
        if bytes.len() < SECRET_BYTES_MIN || bytes.len() > SECRET_BYTES_MAX {
            return Err(field::length_error(tag::SECRET, bytes.len()));
        }
        Ok(Secret(bytes))
    }

    /// The secret, to verify (in constant time) and forget.
    pub fn expose(&self) -> &'a [u8] {
        self.0
    }
}

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A card expiry: year 00..=99 and month 01..=12, `YYMM` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// Two-digit year.
    year: u8,
    /// Month, 1..=12.
    month: u8,
}

impl Expiry {
    /// From a two-digit year and a month.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for tag `EXPIRY` when the year is over 99 or
    /// the month is not 1..=12.
    pub fn new(year: u8, month: u8) -> Result<Expiry, Error> {
        if year > 99 || !(1..=12).contains(&month) {
            return Err(Error::OutOfRange { tag: tag::EXPIRY });
        }
        Ok(Expiry { year, month })
    }

    /// Two-digit year, 0..=99.
    pub fn year(&self) -> u8 {
        self.year
    }

    /// Month, 1..=12.
    pub fn month(&self) -> u8 {
        self.month
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Expiry, Error> {
        let [y0, y1, m0, m1] = field::fixed::<4>(tag::EXPIRY, value)?;
        let digit = |b: u8| {
            b.is_ascii_digit()
                .then(|| b - b'0')
                .ok_or(Error::BadCharacter { tag: tag::EXPIRY })
        };
        let year = digit(y0)? * 10 + digit(y1)?;
        let month = digit(m0)? * 10 + digit(m1)?;
        Expiry::new(year, month)
    }

    pub(crate) fn encode(&self) -> [u8; 4] {
        let Expiry { year, month } = *self;
        [
            b'0' + year / 10,
            b'0' + year % 10,
            b'0' + month / 10,
            b'0' + month % 10,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_masks_card_data() {
        let pan = Pan::new("4111111111111111").unwrap();
        assert_eq!(format!("{pan:?}"), "Pan(411111******1111)");
        let pan = Pan::new("411111111111").unwrap();
        assert_eq!(format!("{pan:?}"), "Pan(411111**1111)");
        assert_eq!(format!("{:?}", Cvv2::new("123").unwrap()), "Cvv2(***)");
        assert_eq!(
            format!("{:?}", Secret::new(&[7; 16]).unwrap()),
            "Secret(***)"
        );
    }

    #[test]
    fn expiry_round_trips() {
        let e = Expiry::decode(b"2712").unwrap();
        assert_eq!((e.year(), e.month()), (27, 12));
        assert_eq!(&e.encode(), b"2712");
        assert_eq!(
            Expiry::decode(b"2713"),
            Err(Error::OutOfRange { tag: tag::EXPIRY })
        );
        assert_eq!(
            Expiry::decode(b"27a1"),
            Err(Error::BadCharacter { tag: tag::EXPIRY })
        );
        assert_eq!(
            Expiry::decode(b"271"),
            Err(Error::FieldLength {
                tag: tag::EXPIRY,
                length: 3
            })
        );
    }
}
