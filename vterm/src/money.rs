//! Amounts as operators type and read them ("25.00 EUR") ↔ integer minor
//! units with an ISO 4217 numeric currency, as the switch speaks them.

use rust_decimal::Decimal;

/// The largest amount the internal frames carry (ISO 8583 F4, n12).
pub(crate) const AMOUNT_MINOR_MAX: u64 = 999_999_999_999;
/// The longest amount text accepted from a form: 12 digits, a point.
const AMOUNT_TEXT_BYTES_MAX: usize = 13;

/// A currency the terminal can take payments in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Currency {
    /// ISO 4217 numeric code, what the switch speaks.
    pub(crate) numeric: u16,
    /// ISO 4217 alphabetic code, what operators read.
    pub(crate) alpha: &'static str,
    /// Digits after the decimal point (2 for EUR, 0 for JPY).
    pub(crate) exponent: u32,
}

/// The currencies the terminal knows. A configured currency must be here,
/// so amounts are never shown with a guessed exponent.
const CURRENCIES: [Currency; 12] = [
    Currency {
        numeric: 36,
        alpha: "AUD",
        exponent: 2,
    },
    Currency {
        numeric: 124,
        alpha: "CAD",
        exponent: 2,
    },
    Currency {
        numeric: 156,
        alpha: "CNY",
        exponent: 2,
    },
    Currency {
        numeric: 208,
        alpha: "DKK",
        exponent: 2,
    },
    Currency {
        numeric: 392,
        alpha: "JPY",
        exponent: 0,
    },
    Currency {
        numeric: 578,
        alpha: "NOK",
        exponent: 2,
    },
    Currency {
        numeric: 752,
        alpha: "SEK",
        exponent: 2,
    },
    Currency {
        numeric: 756,
        alpha: "CHF",
        exponent: 2,
    },
    Currency {
        numeric: 826,
        alpha: "GBP",
        exponent: 2,
    },
    Currency {
        numeric: 840,
        alpha: "USD",
        exponent: 2,
    },
    Currency {
        numeric: 978,
        alpha: "EUR",
        exponent: 2,
    },
    Currency {
        numeric: 985,
        alpha: "PLN",
        exponent: 2,
    },
];

impl Currency {
    /// The currency with this ISO 4217 numeric code, if the terminal knows it.
    pub(crate) fn by_numeric(numeric: u16) -> Option<Currency> {
        CURRENCIES.iter().copied().find(|c| c.numeric == numeric)
    }
}

/// Why an amount typed into a form was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AmountError {
    /// Not digits with at most one decimal point.
    #[error("the amount must be a number such as 25.00")]
    Syntax,
    /// More decimals than the currency has.
    #[error("the amount has more decimals than the currency allows")]
    Precision,
    /// Zero, or above what the switch carries.
    #[error("the amount must be above zero and at most 999999999999 minor units")]
    Range,
}

/// Minor units of a decimal amount text in `currency` ("25.5" EUR → 2550).
///
/// # Errors
/// [`AmountError`] when the text is not a plain positive decimal number
/// with at most the currency's decimals, or is out of range.
pub(crate) fn parse_amount_minor(text: &str, currency: Currency) -> Result<u64, AmountError> {
    let text = text.trim();
    if text.is_empty() || text.len() > AMOUNT_TEXT_BYTES_MAX {
        return Err(AmountError::Syntax);
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return Err(AmountError::Syntax);
    }
    if fraction.len() > currency.exponent as usize {
        return Err(AmountError::Precision);
    }
    let scale = 10u64.pow(currency.exponent);
    let fraction_minor = if fraction.is_empty() {
        0
    } else {
        let padded = 10u64.pow(currency.exponent - fraction.len() as u32);
        fraction.parse::<u64>().map_err(|_| AmountError::Syntax)? * padded
    };
    // At most 13 bytes of digits: no overflow before the range check.
    let minor = whole
        .parse::<u64>()
        .ok()
        .and_then(|w| w.checked_mul(scale))
        .and_then(|w| w.checked_add(fraction_minor))
        .ok_or(AmountError::Range)?;
    if minor == 0 || minor > AMOUNT_MINOR_MAX {
        return Err(AmountError::Range);
    }
    Ok(minor)
}

/// The amount as operators read it: "25.00 EUR"; a currency the terminal
/// does not know is shown in minor units with its numeric code.
pub(crate) fn format_amount(minor: u64, currency_numeric: u16) -> String {
    match (Currency::by_numeric(currency_numeric), i64::try_from(minor)) {
        (Some(currency), Ok(minor)) => {
            let mut value = Decimal::new(minor, currency.exponent);
            value.rescale(currency.exponent);
            format!("{value} {}", currency.alpha)
        }
        _ => format!("{minor} minor units ({currency_numeric:03})"),
    }
}

/// The amount without its currency, as a form field's default ("25.00").
pub(crate) fn format_amount_plain(minor: u64, currency_numeric: u16) -> String {
    let text = format_amount(minor, currency_numeric);
    match Currency::by_numeric(currency_numeric) {
        Some(_) => text.split(' ').next().unwrap_or_default().to_string(),
        None => minor.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EUR: Currency = CURRENCIES[10];
    const JPY: Currency = CURRENCIES[4];

    #[test]
    fn amounts_parse_in_minor_units() {
        assert_eq!(EUR.alpha, "EUR");
        assert_eq!(parse_amount_minor("25.00", EUR), Ok(2500));
        assert_eq!(parse_amount_minor("25.5", EUR), Ok(2550));
        assert_eq!(parse_amount_minor(" 7 ", EUR), Ok(700));
        assert_eq!(parse_amount_minor("0.01", EUR), Ok(1));
        assert_eq!(parse_amount_minor("1500", JPY), Ok(1500));
        assert_eq!(
            parse_amount_minor("9999999999.99", EUR),
            Ok(AMOUNT_MINOR_MAX)
        );
    }

    #[test]
    fn bad_amounts_are_refused() {
        assert_eq!(parse_amount_minor("", EUR), Err(AmountError::Syntax));
        assert_eq!(parse_amount_minor("-1", EUR), Err(AmountError::Syntax));
        assert_eq!(parse_amount_minor("1e3", EUR), Err(AmountError::Syntax));
        assert_eq!(parse_amount_minor(".5", EUR), Err(AmountError::Syntax));
        assert_eq!(parse_amount_minor("1.2.3", EUR), Err(AmountError::Syntax));
        assert_eq!(parse_amount_minor("1,00", EUR), Err(AmountError::Syntax));
        assert_eq!(
            parse_amount_minor("1.001", EUR),
            Err(AmountError::Precision)
        );
        assert_eq!(parse_amount_minor("1.5", JPY), Err(AmountError::Precision));
        assert_eq!(parse_amount_minor("0.00", EUR), Err(AmountError::Range));
        assert_eq!(
            parse_amount_minor("10000000000.00", EUR),
            Err(AmountError::Syntax)
        );
        assert_eq!(
            parse_amount_minor("10000000000", EUR),
            Err(AmountError::Range)
        );
    }

    #[test]
    fn amounts_format_with_the_currency_exponent() {
        assert_eq!(format_amount(2500, 978), "25.00 EUR");
        assert_eq!(format_amount(5, 978), "0.05 EUR");
        assert_eq!(format_amount(1500, 392), "1500 JPY");
        assert_eq!(format_amount(12, 1), "12 minor units (001)");
        assert_eq!(format_amount_plain(2550, 978), "25.50");
    }
}
