//! Small coded values: the result code, payment statuses and activity
//! kinds.

use std::fmt;

use super::error::Error;
use super::tag;

/// The result of a request: the ISO 8583 response code (F39), two ASCII
/// upper-case letters or digits, e.g. `00` approved, `13` invalid amount,
/// `30` format error, `1A` additional authentication required.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResultCode([u8; 2]);

impl ResultCode {
    /// `00`: approved or done.
    pub const APPROVED: ResultCode = ResultCode(*b"00");
    /// `30`: format error, the answer to a frame that does not decode.
    pub const FORMAT_ERROR: ResultCode = ResultCode(*b"30");

    /// Checks the two characters.
    ///
    /// # Errors
    /// [`Error::BadCharacter`] for tag `RESULT_CODE` unless both are ASCII
    /// upper-case letters or digits.
    pub fn new(code: [u8; 2]) -> Result<ResultCode, Error> {
        if code
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            Ok(ResultCode(code))
        } else {
            Err(Error::BadCharacter {
                tag: tag::RESULT_CODE,
            })
        }
    }

    /// The two ASCII characters.
    pub fn bytes(self) -> [u8; 2] {
        self.0
    }

    /// As text, e.g. `"00"`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Debug for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResultCode({})", self.as_str())
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a payment is in its lifecycle (a `u8` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PaymentStatus {
    /// `1`: authorized, hold placed, not captured yet.
    Uncaptured = 1,
    /// `2`: captured (a sale, or a captured pre-authorization).
    Succeeded = 2,
    /// `3`: part of the captured amount refunded.
    PartiallyRefunded = 3,
    /// `4`: the whole captured amount refunded.
    Refunded = 4,
    /// `5`: pre-authorization cancelled, hold released.
    Cancelled = 5,
    /// `6`: sale reversed.
    Reversed = 6,
    /// `7`: pre-authorization not captured within the hold period.
    Expired = 7,
    /// `8`: declined at authorization.
    Declined = 8,
}

impl PaymentStatus {
    /// Every status in code order (`ALL[i]` has code `i + 1`), for the
    /// screens and reports that list them all, such as a status filter.
    pub const ALL: [PaymentStatus; 8] = [
        PaymentStatus::Uncaptured,
        PaymentStatus::Succeeded,
        PaymentStatus::PartiallyRefunded,
        PaymentStatus::Refunded,
        PaymentStatus::Cancelled,
        PaymentStatus::Reversed,
        PaymentStatus::Expired,
        PaymentStatus::Declined,
    ];

    /// The code on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// A stable lowercase name (`partially_refunded`) for logs, metrics and
    /// machine-read output, where a number would need a table to read.
    pub const fn label(self) -> &'static str {
        match self {
            PaymentStatus::Uncaptured => "uncaptured",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Cancelled => "cancelled",
            PaymentStatus::Reversed => "reversed",
            PaymentStatus::Expired => "expired",
            PaymentStatus::Declined => "declined",
        }
    }

    /// The status for a code.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] naming `tag` for an undefined code.
    pub fn from_code(tag: u8, code: u8) -> Result<PaymentStatus, Error> {
        Ok(match code {
            1 => PaymentStatus::Uncaptured,
            2 => PaymentStatus::Succeeded,
            3 => PaymentStatus::PartiallyRefunded,
            4 => PaymentStatus::Refunded,
            5 => PaymentStatus::Cancelled,
            6 => PaymentStatus::Reversed,
            7 => PaymentStatus::Expired,
            8 => PaymentStatus::Declined,
            _ => return Err(Error::OutOfRange { tag }),
        })
    }
}

/// What happened to a payment, in an activity history entry (a `u8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventKind {
    /// `1`: sale authorized and captured.
    Authorized = 1,
    /// `2`: pre-authorization placed.
    Preauthorized = 2,
    /// `3`: captured.
    Captured = 3,
    /// `4`: refunded (in part or in full).
    Refunded = 4,
    /// `5`: cancelled.
    Cancelled = 5,
    /// `6`: reversed.
    Reversed = 6,
    /// `7`: expired.
    Expired = 7,
    /// `8`: flagged as a scam.
    MarkedScam = 8,
    /// `9`: an attempt declined (the entry's result code says why).
    Declined = 9,
    /// `10`: the scam flag taken off by hand.
    UnmarkedScam = 10,
    /// `11`: a capture refused (the entry's result code says why, its
    /// amount is the one asked); the payment did not change.
    CaptureRefused = 11,
    /// `12`: a refund refused, as `CaptureRefused`.
    RefundRefused = 12,
    /// `13`: a cancel (reversal) refused, as `CaptureRefused`.
    CancelRefused = 13,
}

impl EventKind {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind for a code.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for tag `HISTORY_ENTRY` for an undefined code.
    pub fn from_code(code: u8) -> Result<EventKind, Error> {
        Ok(match code {
            1 => EventKind::Authorized,
            2 => EventKind::Preauthorized,
            3 => EventKind::Captured,
            4 => EventKind::Refunded,
            5 => EventKind::Cancelled,
            6 => EventKind::Reversed,
            7 => EventKind::Expired,
            8 => EventKind::MarkedScam,
            9 => EventKind::Declined,
            10 => EventKind::UnmarkedScam,
            11 => EventKind::CaptureRefused,
            12 => EventKind::RefundRefused,
            13 => EventKind::CancelRefused,
            _ => {
                return Err(Error::OutOfRange {
                    tag: tag::HISTORY_ENTRY,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=u8::MAX {
            if let Ok(s) = PaymentStatus::from_code(tag::STATUS, code) {
                assert_eq!(s.code(), code);
            }
            if let Ok(k) = EventKind::from_code(code) {
                assert_eq!(k.code(), code);
            }
        }
        assert_eq!(ResultCode::new(*b"1A").unwrap().as_str(), "1A");
        assert!(ResultCode::new(*b"1a").is_err());
        assert_eq!(ResultCode::FORMAT_ERROR.to_string(), "30");
    }

    #[test]
    fn every_status_in_code_order_with_its_label() {
        for (i, s) in PaymentStatus::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(s.code()), i + 1, "{s:?}");
            assert_eq!(PaymentStatus::from_code(tag::STATUS, s.code()), Ok(s));
        }
        assert!(PaymentStatus::from_code(tag::STATUS, 0).is_err());
        assert!(PaymentStatus::from_code(tag::STATUS, 9).is_err());
        assert_eq!(PaymentStatus::Uncaptured.code(), 1);
        assert_eq!(PaymentStatus::Declined.code(), 8);
        let labels = PaymentStatus::ALL.map(PaymentStatus::label);
        assert_eq!(
            labels,
            [
                "uncaptured",
                "succeeded",
                "partially_refunded",
                "refunded",
                "cancelled",
                "reversed",
                "expired",
                "declined",
            ]
        );
    }
}
