//! Card data as typed into the payment form. The clear PAN and CVV2 live
//! only in these types, whose `Debug` masks them and which have no
//! `Display`: they go to the switch and are dropped, never logged nor
//! rendered. Pages show [`mask_pan`]'s output only.

use std::fmt;

/// Shortest PAN (ISO/IEC 7812 and the internal frames).
const PAN_DIGITS_MIN: usize = 12;
/// Longest PAN.
const PAN_DIGITS_MAX: usize = 19;
/// The longest card-number text accepted, with spaces or dashes between groups.
const PAN_TEXT_BYTES_MAX: usize = 40;
/// Leading digits a masked PAN keeps (the BIN).
const MASK_KEEP_FIRST: usize = 6;
/// Trailing digits a masked PAN keeps.
const MASK_KEEP_LAST: usize = 4;

const _: () = assert!(MASK_KEEP_FIRST + MASK_KEEP_LAST < PAN_DIGITS_MIN);

/// Why card data typed into the form was refused. The messages never
/// repeat what was typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CardError {
    /// Not 12 to 19 digits.
    #[error("the card number must have 12 to 19 digits")]
    PanLength,
    /// The check digit is wrong: most likely a typing error.
    #[error("the card number is not valid (check digit): please check it")]
    PanCheckDigit,
    /// Not `MM/YY` with a month 01..=12.
    #[error("the expiry must be MM/YY")]
    Expiry,
    /// Not 3 or 4 digits.
    #[error("the security code must have 3 or 4 digits")]
    Cvv2,
}

/// A card number in clear, digits only.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct CardNumber(String);

impl CardNumber {
    /// Digits of a typed card number; spaces and dashes between groups are
    /// dropped. The check digit is verified here, so a typing error is
    /// caught before anything is sent to the switch.
    ///
    /// # Errors
    /// [`CardError::PanLength`] or [`CardError::PanCheckDigit`].
    pub(crate) fn parse(text: &str) -> Result<CardNumber, CardError> {
        if text.len() > PAN_TEXT_BYTES_MAX {
            return Err(CardError::PanLength);
        }
        let mut digits = String::with_capacity(PAN_DIGITS_MAX);
        for b in text.trim().bytes() {
            match b {
                b'0'..=b'9' if digits.len() < PAN_DIGITS_MAX => digits.push(char::from(b)),
                b' ' | b'-' => {}
                _ => return Err(CardError::PanLength),
            }
        }
        if digits.len() < PAN_DIGITS_MIN
            || text.bytes().filter(u8::is_ascii_digit).count() > PAN_DIGITS_MAX
        {
            return Err(CardError::PanLength);
        }
        if !codecs::card::luhn_valid(digits.as_bytes()) {
            return Err(CardError::PanCheckDigit);
        }
        Ok(CardNumber(digits))
    }

    /// The digits in clear, for the request to the switch only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// First 6 and last 4 digits, the others `*`.
    pub(crate) fn masked(&self) -> String {
        mask_pan(&self.0)
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber({})", self.masked())
    }
}

/// A card security code (CVV2/CVC2) in clear.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Cvv2(String);

impl Cvv2 {
    /// A typed security code: 3 or 4 digits.
    ///
    /// # Errors
    /// [`CardError::Cvv2`].
    pub(crate) fn parse(text: &str) -> Result<Cvv2, CardError> {
        let text = text.trim();
        if !(3..=4).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardError::Cvv2);
        }
        Ok(Cvv2(text.to_string()))
    }

    /// The digits in clear, for the request to the switch only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cvv2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvv2(***)")
    }
}

/// `YYMM` as the switch wants it, from `MM/YY` (or `MMYY`, `MM/YYYY`) as
/// printed on cards.
///
/// # Errors
/// [`CardError::Expiry`].
pub(crate) fn parse_expiry_yymm(text: &str) -> Result<String, CardError> {
    let digits: String = text
        .trim()
        .chars()
        .filter(|c| *c != '/' && *c != ' ')
        .collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CardError::Expiry);
    }
    let (month, year) = match digits.len() {
        4 => (&digits[0..2], &digits[2..4]),
        6 => (&digits[0..2], &digits[4..6]),
        _ => return Err(CardError::Expiry),
    };
    if !matches!(month.parse::<u8>(), Ok(1..=12)) {
        return Err(CardError::Expiry);
    }
    Ok(format!("{year}{month}"))
}

/// A PAN with all but its first 6 and last 4 digits replaced by `*`.
/// Anything shorter than the shortest PAN is masked whole.
pub(crate) fn mask_pan(pan: &str) -> String {
    let len = pan.chars().count();
    if len < PAN_DIGITS_MIN {
        return "*".repeat(len);
    }
    pan.chars()
        .enumerate()
        .map(|(i, c)| {
            if i < MASK_KEEP_FIRST || i + MASK_KEEP_LAST >= len {
                c
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_masked_everywhere_they_print() {
        let pan = CardNumber::parse("4111 1111 1111 1111").expect("valid");
        assert_eq!(pan.expose(), "4111111111111111");
        assert_eq!(pan.masked(), "411111******1111");
        assert_eq!(format!("{pan:?}"), "CardNumber(411111******1111)");
        let cvv2 = Cvv2::parse("123").expect("valid");
        assert_eq!(format!("{cvv2:?}"), "Cvv2(***)");
        assert_eq!(mask_pan("5555555555554444"), "555555******4444");
        assert_eq!(mask_pan("4000056655665556789"), "400005*********6789");
        assert_eq!(mask_pan("12345"), "*****");
    }

    #[test]
    fn typing_errors_are_caught() {
        assert_eq!(
            CardNumber::parse("4111 1111 1111 1112"),
            Err(CardError::PanCheckDigit)
        );
        assert_eq!(CardNumber::parse("4111"), Err(CardError::PanLength));
        assert_eq!(
            CardNumber::parse("41111111111111111111111"),
            Err(CardError::PanLength)
        );
        assert_eq!(
            CardNumber::parse("4111x111 1111 1111"),
            Err(CardError::PanLength)
        );
        assert_eq!(Cvv2::parse("12"), Err(CardError::Cvv2));
        assert_eq!(Cvv2::parse("12a"), Err(CardError::Cvv2));
        assert_eq!(parse_expiry_yymm("12/27"), Ok("2712".to_string()));
        assert_eq!(parse_expiry_yymm("0930"), Ok("3009".to_string()));
        assert_eq!(parse_expiry_yymm("09/2030"), Ok("3009".to_string()));
        assert_eq!(parse_expiry_yymm("13/27"), Err(CardError::Expiry));
        assert_eq!(parse_expiry_yymm("1/27"), Err(CardError::Expiry));
    }

    #[test]
    fn errors_do_not_repeat_the_card_number() {
        for text in ["4111 1111 1111 1112", "4111", "4111x111"] {
            let message = CardNumber::parse(text).expect_err("refused").to_string();
            assert!(!message.contains("4111"), "{message}");
        }
    }
}
