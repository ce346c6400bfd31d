//! What the pages show of payments: view models filled from the switch's
//! answers. They hold the masked PAN only.

/// A payment's status, as the internal frames number it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// A pre-authorization's hold, not yet captured.
    Uncaptured,
    /// Captured (or a sale).
    Succeeded,
    /// Captured, part refunded.
    PartiallyRefunded,
    /// Captured, wholly refunded.
    Refunded,
    /// Voided.
    Cancelled,
    /// Reversed by the acquirer side.
    Reversed,
    /// A hold that ran out.
    Expired,
    /// Refused at authorization.
    Declined,
}

/// Every status, in wire order, for the filter's choices.
pub(crate) const STATUSES: [Status; 8] = [
    Status::Uncaptured,
    Status::Succeeded,
    Status::PartiallyRefunded,
    Status::Refunded,
    Status::Cancelled,
    Status::Reversed,
    Status::Expired,
    Status::Declined,
];

impl Status {
    /// From the wire's `u8`; `None` for a code this version does not know.
    pub(crate) fn from_code(code: u8) -> Option<Status> {
        STATUSES.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// The wire's `u8`.
    pub(crate) fn code(self) -> u8 {
        self as u8 + 1
    }

    /// What operators read.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Status::Uncaptured => "Uncaptured",
            Status::Succeeded => "Succeeded",
            Status::PartiallyRefunded => "Partially refunded",
            Status::Refunded => "Refunded",
            Status::Cancelled => "Cancelled",
            Status::Reversed => "Reversed",
            Status::Expired => "Expired",
            Status::Declined => "Declined",
        }
    }

    /// A hold can be captured.
    pub(crate) fn capturable(self) -> bool {
        self == Status::Uncaptured
    }

    /// Captured money can be refunded.
    pub(crate) fn refundable(self) -> bool {
        matches!(self, Status::Succeeded | Status::PartiallyRefunded)
    }

    /// A hold, or a capture not yet refunded, can be voided (the switch has
    /// the last word).
    pub(crate) fn cancellable(self) -> bool {
        matches!(self, Status::Uncaptured | Status::Succeeded)
    }
}

/// Sale or pre-authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One step: authorized and captured.
    Sale,
    /// Two steps: a hold to capture later.
    Preauthorization,
}

impl Kind {
    /// What operators read.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Sale => "Sale",
            Kind::Preauthorization => "Pre-authorization",
        }
    }
}

/// The result of a new payment, for the page after submission.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// What was asked.
    pub(crate) kind: Kind,
    /// Result code `00`.
    pub(crate) approved: bool,
    /// ISO 8583 result code.
    pub(crate) result_code: String,
    /// The switch's reason, when it gave one.
    pub(crate) message: Option<String>,
    /// Set when the switch recorded a payment (approved, and some declines).
    pub(crate) payment_id: Option<u64>,
    /// Approval code (F38).
    pub(crate) auth_code: Option<String>,
    /// Status after the request.
    pub(crate) status: Option<Status>,
    /// Amount asked.
    pub(crate) amount_minor: u64,
    /// ISO 4217 numeric.
    pub(crate) currency: u16,
    /// First 6 and last 4 digits only.
    pub(crate) masked_pan: String,
    /// The merchant's reference.
    pub(crate) reference: String,
}

/// One row of the payments table.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    /// The switch's id.
    pub(crate) payment_id: u64,
    /// Creation time, Unix seconds.
    pub(crate) created_s: u64,
    /// `None` for a status this version does not know.
    pub(crate) status: Option<Status>,
    /// Flagged as a scam.
    pub(crate) scam: bool,
    /// ISO 4217 numeric.
    pub(crate) currency: u16,
    /// Authorized amount.
    pub(crate) authorized_minor: u64,
    /// Captured amount.
    pub(crate) captured_minor: u64,
    /// Refunded amount.
    pub(crate) refunded_minor: u64,
    /// Empty when there is none.
    pub(crate) reference: String,
}

/// One page of the table.
#[derive(Clone, Debug, Default)]
pub(crate) struct RowsPage {
    /// Newest first.
    pub(crate) rows: Vec<Row>,
    /// For the "older" link, when there is a next page.
    pub(crate) next_cursor: Option<u64>,
}

/// One entry of a payment's history.
#[derive(Clone, Debug)]
pub(crate) struct Activity {
    /// When, Unix seconds.
    pub(crate) at_s: u64,
    /// What happened.
    pub(crate) what: &'static str,
    /// How much.
    pub(crate) amount_minor: u64,
    /// The result code of that step.
    pub(crate) result_code: String,
}

/// What happened, from the history entry's kind code.
pub(crate) fn activity_label(kind: u8) -> &'static str {
    match kind {
        1 => "Authorized (sale)",
        2 => "Pre-authorized",
        3 => "Captured",
        4 => "Refunded",
        5 => "Cancelled",
        6 => "Reversed",
        7 => "Expired",
        8 => "Marked as scam",
        9 => "Declined",
        _ => "Other",
    }
}

/// A payment with its history, for its own page.
#[derive(Clone, Debug)]
pub(crate) struct Detail {
    /// The table's columns.
    pub(crate) row: Row,
    /// First 6 and last 4 digits only.
    pub(crate) masked_pan: Option<String>,
    /// Approval code.
    pub(crate) auth_code: Option<String>,
    /// The terminal it was taken on.
    pub(crate) terminal_id: Option<String>,
    /// Oldest first.
    pub(crate) history: Vec<Activity>,
}

/// The table's filters, checked, as the switch takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filters {
    /// Only this status.
    pub(crate) status: Option<Status>,
    /// Created at or after, Unix seconds.
    pub(crate) created_from_s: Option<u64>,
    /// Created at or before, Unix seconds.
    pub(crate) created_to_s: Option<u64>,
    /// Authorized amount at least.
    pub(crate) amount_min_minor: Option<u64>,
    /// Authorized amount at most.
    pub(crate) amount_max_minor: Option<u64>,
    /// Exactly this merchant reference.
    pub(crate) reference: Option<String>,
    /// Only this terminal.
    pub(crate) terminal_id: Option<String>,
    /// The page after this cursor.
    pub(crate) cursor: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip() {
        for status in STATUSES {
            assert_eq!(Status::from_code(status.code()), Some(status));
        }
        assert_eq!(Status::from_code(0), None);
        assert_eq!(Status::from_code(9), None);
        assert_eq!(Status::Uncaptured.code(), 1);
        assert_eq!(Status::Declined.code(), 8);
    }
}
