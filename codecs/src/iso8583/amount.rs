//! Amounts in minor units with their ISO 4217 currency.

use rust_decimal::Decimal;

/// An amount in the currency's minor units (cents for EUR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Amount {
    /// Minor units.
    pub minor: u64,
    /// ISO 4217 numeric currency code (978 = EUR).
    pub currency: u16,
}

impl Amount {
    /// Parses F4 (n12) and F49 (n3) content.
    pub fn from_fields(f4: &[u8], f49: &[u8]) -> Option<Amount> {
        Some(Amount {
            minor: parse_digits(f4, 12)?,
            currency: u16::try_from(parse_digits(f49, 3)?).ok()?,
        })
    }

    /// The amount in major units for display (`1234` EUR → `12.34`); `None`
    /// for a currency this table does not know.
    pub fn to_decimal(&self) -> Option<Decimal> {
        let exponent = minor_unit_exponent(self.currency)?;
        let minor = i64::try_from(self.minor).ok()?;
        Some(Decimal::new(minor, u32::from(exponent)))
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_decimal() {
            Some(d) => write!(f, "{d} {:03}", self.currency),
            None => write!(f, "{} minor {:03}", self.minor, self.currency),
        }
    }
}

/// Digits of a minor unit for the currencies this switch is likely to see
/// (ISO 4217); `None` for others.
pub fn minor_unit_exponent(currency: u16) -> Option<u8> {
    Some(match currency {
        // Zero-decimal currencies.
        152 | 352 | 392 | 410 | 704 | 950 | 952 => 0,
        // Three-decimal currencies.
        48 | 368 | 400 | 414 | 434 | 512 | 788 => 3,
        // Common two-decimal currencies.
        36 | 124 | 156 | 203 | 208 | 344 | 348 | 356 | 376 | 484 | 554 | 578 | 643 | 702 | 710
        | 752 | 756 | 826 | 840 | 946 | 949 | 978 | 985 | 986 => 2,
        _ => return None,
    })
}

/// Parses exactly `width` ASCII digits; `None` otherwise.
pub fn parse_digits(bytes: &[u8], width: usize) -> Option<u64> {
    if bytes.len() != width || width > 19 {
        return None;
    }
    bytes.iter().try_fold(0u64, |v, &b| {
        b.is_ascii_digit().then(|| v * 10 + u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_display_in_major_units() {
        let a = Amount::from_fields(b"000000003000", b"978").expect("valid");
        assert_eq!(
            a,
            Amount {
                minor: 3000,
                currency: 978
            }
        );
        assert_eq!(a.to_string(), "30.00 978");
        let yen = Amount {
            minor: 500,
            currency: 392,
        };
        assert_eq!(yen.to_decimal(), Some(Decimal::new(500, 0)));
        assert_eq!(
            Amount {
                minor: 1,
                currency: 999
            }
            .to_string(),
            "1 minor 999"
        );
    }

    #[test]
    fn bad_digits_are_refused() {
        assert_eq!(parse_digits(b"12a", 3), None);
        assert_eq!(parse_digits(b"12", 3), None);
        assert_eq!(Amount::from_fields(b"00000000300", b"978"), None);
    }
}
