//! What the pages show of payments: view models filled from the switch's
//! answers. They hold the masked PAN only.

use switch_client::PaymentStatus;

/// What operators read for a status. The type is the wire's (one status
/// type in the workspace); its `label` is for machines, this is for people.
pub(crate) fn status_text(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Uncaptured => "Uncaptured",
        PaymentStatus::Succeeded => "Succeeded",
        PaymentStatus::PartiallyRefunded => "Partially refunded",
        PaymentStatus::Refunded => "Refunded",
        PaymentStatus::Cancelled => "Cancelled",
        PaymentStatus::Reversed => "Reversed",
        PaymentStatus::Expired => "Expired",
        PaymentStatus::Declined => "Declined",
    }
}

/// A hold can be captured (offered as a button; the switch has the last
/// word).
pub(crate) fn capturable(status: PaymentStatus) -> bool {
    status == PaymentStatus::Uncaptured
}

/// Captured money can be refunded.
pub(crate) fn refundable(status: PaymentStatus) -> bool {
    matches!(
        status,
        PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded
    )
}

/// A hold, or a capture not yet refunded, can be voided (the switch has
/// the last word).
pub(crate) fn cancellable(status: PaymentStatus) -> bool {
    matches!(status, PaymentStatus::Uncaptured | PaymentStatus::Succeeded)
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
    pub(crate) status: Option<PaymentStatus>,
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
    /// `None` when the switch's answer carried no status.
    pub(crate) status: Option<PaymentStatus>,
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
        10 => "Scam mark taken off",
        11 => "Capture refused",
        12 => "Refund refused",
        13 => "Cancel refused",
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
    /// Oldest first, refused operations included.
    pub(crate) history: Vec<Activity>,
    /// How it was authorized, and its scam flag's workflow.
    pub(crate) details: switch_client::Details,
    /// Its webhook events with their delivery status, in the order of its
    /// changes (none when the merchant has no endpoint).
    pub(crate) webhooks: Vec<switch_client::WebhookEvent>,
}

/// What operators read for a channel (F25's value).
pub(crate) fn channel_text(channel: u8) -> &'static str {
    match channel {
        0 => "Card present (00)",
        8 => "Mail or telephone order (08)",
        59 => "E-commerce (59)",
        _ => "Other (99)",
    }
}

/// The table's filters, checked, as the switch takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filters {
    /// Only this status.
    pub(crate) status: Option<PaymentStatus>,
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
    /// Only flagged (`true`) or unflagged (`false`) payments.
    pub(crate) scam: Option<bool>,
    /// Only this F37 (12 characters).
    pub(crate) rrn: Option<String>,
    /// Only this approval code (6 letters or digits).
    pub(crate) auth_code: Option<String>,
    /// Only cards ending with these 4 digits.
    pub(crate) last4: Option<String>,
    /// Only these statuses (empty: any); with `status`, both hold.
    pub(crate) statuses: Vec<PaymentStatus>,
    /// Only payments with a webhook event in this delivery status.
    pub(crate) webhook: Option<switch_client::WebhookStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_own_text_and_actions() {
        let texts = PaymentStatus::ALL.map(status_text);
        for (i, t) in texts.iter().enumerate() {
            assert!(!texts[..i].contains(t), "{t} twice");
        }
        assert_eq!(
            status_text(PaymentStatus::PartiallyRefunded),
            "Partially refunded"
        );
        let actions = |s| (capturable(s), refundable(s), cancellable(s));
        assert_eq!(actions(PaymentStatus::Uncaptured), (true, false, true));
        assert_eq!(actions(PaymentStatus::Succeeded), (false, true, true));
        assert_eq!(
            actions(PaymentStatus::PartiallyRefunded),
            (false, true, false)
        );
        for s in [
            PaymentStatus::Refunded,
            PaymentStatus::Cancelled,
            PaymentStatus::Reversed,
            PaymentStatus::Expired,
            PaymentStatus::Declined,
        ] {
            assert_eq!(actions(s), (false, false, false), "{s:?}");
        }
    }
}
