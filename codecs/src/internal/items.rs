//! The values of repeatable fields: cart lines, activity history entries
//! and payment list rows. Each is a fixed-size part, then (for some) one
//! trailing string, so there is no nesting.

use super::codes::{EventKind, PaymentStatus, ResultCode};
use super::error::Error;
use super::field::{self, check_amount, check_currency, check_payment_id, check_str, BodyWriter};
use super::repeated::RepeatedItem;
use super::tag;
use super::CART_QUANTITY_MAX;

/// Takes `N` bytes off the front of `rest`.
fn take<const N: usize>(rest: &mut &[u8], tag: u8) -> Result<[u8; N], Error> {
    let (head, tail) = rest.split_first_chunk::<N>().ok_or(Error::FieldLength {
        tag,
        length: u16::try_from(rest.len()).unwrap_or(u16::MAX),
    })?;
    *rest = tail;
    Ok(*head)
}

/// One cart line: `quantity u32, unit_price_minor u64, item` (UTF-8,
/// 1..=64 bytes). Value length 13..=76.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CartLine<'a> {
    /// What was sold, as the merchant names it.
    pub item: &'a str,
    /// How many, 1..=[`CART_QUANTITY_MAX`].
    pub quantity: u32,
    /// Price of one, in the request's currency minor units.
    pub unit_price_minor: u64,
}

/// Bytes before the item name.
const CART_LINE_FIXED_BYTES: usize = 12;

impl<'a> CartLine<'a> {
    /// `quantity × unit_price_minor`, `None` on overflow.
    pub fn total_minor(&self) -> Option<u64> {
        u64::from(self.quantity).checked_mul(self.unit_price_minor)
    }

    pub(crate) fn decode_value(value: &'a [u8]) -> Result<CartLine<'a>, Error> {
        let mut rest = value;
        let quantity = u32::from_be_bytes(take(&mut rest, tag::CART_LINE)?);
        let unit_price_minor = u64::from_be_bytes(take(&mut rest, tag::CART_LINE)?);
        let item = check_str(field::CART_ITEM, rest)?;
        let line = CartLine {
            item,
            quantity,
            unit_price_minor,
        };
        line.check_numbers()?;
        Ok(line)
    }

    fn check_numbers(&self) -> Result<(), Error> {
        if !(1..=CART_QUANTITY_MAX).contains(&self.quantity) {
            return Err(Error::OutOfRange {
                tag: tag::CART_LINE,
            });
        }
        check_amount(tag::CART_LINE, self.unit_price_minor, 0)?;
        Ok(())
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        self.check_numbers()?;
        check_str(field::CART_ITEM, self.item.as_bytes())?;
        let length = CART_LINE_FIXED_BYTES.saturating_add(self.item.len());
        let dst = w.begin(tag::CART_LINE, length)?;
        dst.extend_from_slice(&self.quantity.to_be_bytes());
        dst.extend_from_slice(&self.unit_price_minor.to_be_bytes());
        dst.extend_from_slice(self.item.as_bytes());
        Ok(())
    }
}

/// Sum of the lines' totals, `OutOfRange` on overflow or above the amount
/// limit.
pub(crate) fn cart_total_minor<'a>(
    lines: impl Iterator<Item = CartLine<'a>>,
) -> Result<u64, Error> {
    let mut total: u64 = 0;
    for line in lines {
        total = line
            .total_minor()
            .and_then(|t| total.checked_add(t))
            .ok_or(Error::OutOfRange {
                tag: tag::CART_LINE,
            })?;
    }
    check_amount(tag::CART_LINE, total, 0)
}

/// One entry of a payment's activity history: `at_unix_s u64, kind u8,
/// amount_minor u64, result_code [u8; 2]`, 19 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// When it happened, Unix seconds.
    pub at_unix_s: u64,
    /// What happened.
    pub kind: EventKind,
    /// The amount it concerned, minor units.
    pub amount_minor: u64,
    /// How it ended.
    pub result_code: ResultCode,
}

/// Value length of a history entry.
pub(crate) const HISTORY_ENTRY_BYTES: usize = 19;

impl HistoryEntry {
    pub(crate) fn decode_value(value: &[u8]) -> Result<HistoryEntry, Error> {
        if value.len() != HISTORY_ENTRY_BYTES {
            return Err(field::length_error(tag::HISTORY_ENTRY, value.len()));
        }
        let mut rest = value;
        let at_unix_s = u64::from_be_bytes(take(&mut rest, tag::HISTORY_ENTRY)?);
        let [kind] = take(&mut rest, tag::HISTORY_ENTRY)?;
        let amount_minor = u64::from_be_bytes(take(&mut rest, tag::HISTORY_ENTRY)?);
        let code = take(&mut rest, tag::HISTORY_ENTRY)?;
        Ok(HistoryEntry {
            at_unix_s,
            kind: EventKind::from_code(kind)?,
            amount_minor: check_amount(tag::HISTORY_ENTRY, amount_minor, 0)?,
            result_code: ResultCode::new(code).map_err(|_| Error::BadCharacter {
                tag: tag::HISTORY_ENTRY,
            })?,
        })
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        check_amount(tag::HISTORY_ENTRY, self.amount_minor, 0)?;
        let dst = w.begin(tag::HISTORY_ENTRY, HISTORY_ENTRY_BYTES)?;
        dst.extend_from_slice(&self.at_unix_s.to_be_bytes());
        dst.extend_from_slice(&[self.kind.code()]);
        dst.extend_from_slice(&self.amount_minor.to_be_bytes());
        dst.extend_from_slice(&self.result_code.bytes());
        Ok(())
    }
}

/// One row of a payment list: `payment_id u64, created_unix_s u64,
/// status u8, scam u8, currency u16, amount_authorized_minor u64,
/// amount_captured_minor u64, amount_refunded_minor u64` (44 bytes), then
/// the merchant reference (printable ASCII, 0..=64 bytes; empty: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentRow<'a> {
    /// The payment.
    pub payment_id: u64,
    /// When it was created, Unix seconds.
    pub created_unix_s: u64,
    /// Where it is in its lifecycle.
    pub status: PaymentStatus,
    /// Flagged as a scam.
    pub scam: bool,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// Authorized, minor units.
    pub amount_authorized_minor: u64,
    /// Captured, minor units.
    pub amount_captured_minor: u64,
    /// Refunded, minor units.
    pub amount_refunded_minor: u64,
    /// The merchant's reference, if it gave one.
    pub merchant_reference: Option<&'a str>,
}

/// Bytes before the merchant reference.
pub(crate) const PAYMENT_ROW_FIXED_BYTES: usize = 44;

impl<'a> PaymentRow<'a> {
    pub(crate) fn decode_value(value: &'a [u8]) -> Result<PaymentRow<'a>, Error> {
        const T: u8 = tag::PAYMENT_ROW;
        let mut rest = value;
        let payment_id = check_payment_id(T, u64::from_be_bytes(take(&mut rest, T)?))?;
        let created_unix_s = u64::from_be_bytes(take(&mut rest, T)?);
        let [status, scam] = take(&mut rest, T)?;
        let currency = check_currency(T, u16::from_be_bytes(take(&mut rest, T)?))?;
        let mut amount = || -> Result<u64, Error> {
            check_amount(T, u64::from_be_bytes(take(&mut rest, T)?), 0)
        };
        let amount_authorized_minor = amount()?;
        let amount_captured_minor = amount()?;
        let amount_refunded_minor = amount()?;
        let reference = check_str(field::ROW_REFERENCE, rest)?;
        Ok(PaymentRow {
            payment_id,
            created_unix_s,
            status: PaymentStatus::from_code(T, status)?,
            scam: field::flag_value(T, scam)?,
            currency,
            amount_authorized_minor,
            amount_captured_minor,
            amount_refunded_minor,
            merchant_reference: (!reference.is_empty()).then_some(reference),
        })
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        const T: u8 = tag::PAYMENT_ROW;
        check_payment_id(T, self.payment_id)?;
        check_currency(T, self.currency)?;
        for amount in [
            self.amount_authorized_minor,
            self.amount_captured_minor,
            self.amount_refunded_minor,
        ] {
            check_amount(T, amount, 0)?;
        }
        let reference = self.merchant_reference.unwrap_or("");
        if self.merchant_reference == Some("") {
            // Empty on the wire means none: `Some("")` would not round-trip.
            return Err(Error::FieldLength { tag: T, length: 0 });
        }
        check_str(field::ROW_REFERENCE, reference.as_bytes())?;
        let dst = w.begin(T, PAYMENT_ROW_FIXED_BYTES.saturating_add(reference.len()))?;
        dst.extend_from_slice(&self.payment_id.to_be_bytes());
        dst.extend_from_slice(&self.created_unix_s.to_be_bytes());
        dst.extend_from_slice(&[self.status.code(), u8::from(self.scam)]);
        dst.extend_from_slice(&self.currency.to_be_bytes());
        dst.extend_from_slice(&self.amount_authorized_minor.to_be_bytes());
        dst.extend_from_slice(&self.amount_captured_minor.to_be_bytes());
        dst.extend_from_slice(&self.amount_refunded_minor.to_be_bytes());
        dst.extend_from_slice(reference.as_bytes());
        Ok(())
    }
}

/// What a mandate lets its provider do, as bits of a `u8`.
pub mod scope {
    /// Take, capture, cancel and flag payments (and manage terminals).
    pub const PAYMENTS: u8 = 1;
    /// Refund payments.
    pub const REFUNDS: u8 = 2;
    /// Read payments: details, lists.
    pub const REPORTING: u8 = 4;
    /// Every scope.
    pub const ALL: u8 = PAYMENTS | REFUNDS | REPORTING;
}

/// One row of a mandate list: `granted_unix_s u64, scopes u8` (9 bytes),
/// then the merchant's MID (15 printable characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MandateRow<'a> {
    /// The merchant that granted it.
    pub merchant_id: &'a str,
    /// When it was granted, Unix seconds.
    pub granted_unix_s: u64,
    /// What it allows: bits of [`scope`], at least one, no others.
    pub scopes: u8,
}

/// Bytes before the MID.
pub(crate) const MANDATE_ROW_FIXED_BYTES: usize = 9;

impl<'a> MandateRow<'a> {
    pub(crate) fn decode_value(value: &'a [u8]) -> Result<MandateRow<'a>, Error> {
        const T: u8 = tag::MANDATE_ROW;
        let mut rest = value;
        let granted_unix_s = u64::from_be_bytes(take(&mut rest, T)?);
        let [scopes] = take(&mut rest, T)?;
        let merchant_id = check_str(field::ROW_MERCHANT_ID, rest)?;
        let row = MandateRow {
            merchant_id,
            granted_unix_s,
            scopes,
        };
        row.check_scopes()?;
        Ok(row)
    }

    fn check_scopes(&self) -> Result<(), Error> {
        if self.scopes == 0 || self.scopes & !scope::ALL != 0 {
            return Err(Error::OutOfRange {
                tag: tag::MANDATE_ROW,
            });
        }
        Ok(())
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        const T: u8 = tag::MANDATE_ROW;
        self.check_scopes()?;
        check_str(field::ROW_MERCHANT_ID, self.merchant_id.as_bytes())?;
        let dst = w.begin(T, MANDATE_ROW_FIXED_BYTES + self.merchant_id.len())?;
        dst.extend_from_slice(&self.granted_unix_s.to_be_bytes());
        dst.extend_from_slice(&[self.scopes]);
        dst.extend_from_slice(self.merchant_id.as_bytes());
        Ok(())
    }
}

impl<'a> RepeatedItem<'a> for MandateRow<'a> {
    const TAG: u8 = tag::MANDATE_ROW;

    fn decode(value: &'a [u8]) -> Result<MandateRow<'a>, Error> {
        MandateRow::decode_value(value)
    }
}

impl<'a> RepeatedItem<'a> for CartLine<'a> {
    const TAG: u8 = tag::CART_LINE;

    fn decode(value: &'a [u8]) -> Result<CartLine<'a>, Error> {
        CartLine::decode_value(value)
    }
}

impl RepeatedItem<'_> for HistoryEntry {
    const TAG: u8 = tag::HISTORY_ENTRY;

    fn decode(value: &[u8]) -> Result<HistoryEntry, Error> {
        HistoryEntry::decode_value(value)
    }
}

impl<'a> RepeatedItem<'a> for PaymentRow<'a> {
    const TAG: u8 = tag::PAYMENT_ROW;

    fn decode(value: &'a [u8]) -> Result<PaymentRow<'a>, Error> {
        PaymentRow::decode_value(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cart_totals_are_checked() {
        let line = |quantity, unit_price_minor| CartLine {
            item: "x",
            quantity,
            unit_price_minor,
        };
        assert_eq!(
            cart_total_minor([line(2, 500), line(1, 1)].into_iter()),
            Ok(1001)
        );
        let over = line(CART_QUANTITY_MAX, super::super::AMOUNT_MINOR_MAX);
        assert_eq!(
            cart_total_minor([over].into_iter()),
            Err(Error::OutOfRange {
                tag: tag::CART_LINE
            })
        );
        assert_eq!(line(2, u64::MAX).total_minor(), None);
    }

    #[test]
    fn row_reference_empty_means_none() {
        let mut value = vec![0u8; PAYMENT_ROW_FIXED_BYTES];
        value[7] = 1; // payment id 1
        value[16] = 2; // Succeeded
        value[19] = 0x30; // currency 48
        let row = PaymentRow::decode_value(&value).unwrap();
        assert_eq!(row.merchant_reference, None);
        value[17] = 2; // scam flag must be 0 or 1
        assert_eq!(
            PaymentRow::decode_value(&value),
            Err(Error::OutOfRange {
                tag: tag::PAYMENT_ROW
            })
        );
    }
}
