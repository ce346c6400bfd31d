//! Field tags. One tag space for all frame types; each frame type allows a
//! subset (see `docs/internal-frames.md`). Tags from [`EXTENSION_MIN`] up are
//! ignorable extensions: a receiver that does not know one skips it. Any
//! other unknown tag is an error.

/// Payment id: `u64` big-endian, not zero.
pub const PAYMENT_ID: u8 = 0x01;
/// Amount in minor units: `u64` big-endian, at most `AMOUNT_MINOR_MAX`.
pub const AMOUNT_MINOR: u8 = 0x02;
/// Currency, ISO 4217 numeric: `u16` big-endian, 1..=999.
pub const CURRENCY: u8 = 0x03;
/// Merchant's own reference: printable ASCII, 1..=64 bytes.
pub const MERCHANT_REFERENCE: u8 = 0x04;
/// Terminal id (ISO 8583 F41): printable ASCII, 1..=8 bytes.
pub const TERMINAL_ID: u8 = 0x05;
/// Free text (sale description, refund or scam reason): UTF-8 without
/// control characters, 1..=255 bytes.
pub const DESCRIPTION: u8 = 0x06;
/// A capture that is not final: `u8`, 1 (a partial capture: the rest of
/// the hold stays open for further captures) or 0 (final, as when absent).
pub const NOT_FINAL: u8 = 0x07;

/// Client id `XX-0000-0000`: two upper-case letters, four digits, four digits.
pub const CLIENT_ID: u8 = 0x10;
/// Client secret: raw bytes, 16..=64.
pub const SECRET: u8 = 0x11;

/// Card number: ASCII digits, 12..=19.
pub const PAN: u8 = 0x20;
/// Card expiry `YYMM`: four ASCII digits, month 01..=12.
pub const EXPIRY: u8 = 0x21;
/// Card verification value: ASCII digits, 3..=4.
pub const CVV2: u8 = 0x22;
/// Cardholder name: UTF-8 without control characters, 1..=64 bytes.
pub const CARDHOLDER_NAME: u8 = 0x23;
/// Cart line (repeatable): quantity `u32`, unit price `u64`, item name UTF-8.
pub const CART_LINE: u8 = 0x24;

/// Payment status: `u8` (see `PaymentStatus`).
pub const STATUS: u8 = 0x30;
/// Created at or after, Unix seconds: `u64`.
pub const CREATED_FROM_UNIX_S: u8 = 0x31;
/// Created at or before, Unix seconds: `u64`.
pub const CREATED_TO_UNIX_S: u8 = 0x32;
/// Smallest amount, minor units: `u64`.
pub const AMOUNT_MIN_MINOR: u8 = 0x33;
/// Largest amount, minor units: `u64`.
pub const AMOUNT_MAX_MINOR: u8 = 0x34;
/// Paging cursor: `u64`, opaque, from a previous response's `NEXT_CURSOR`.
pub const CURSOR: u8 = 0x35;
/// Page size: `u16`, 1..=`LIST_ROWS_MAX`.
pub const LIMIT: u8 = 0x36;
/// List filter, flagged as a scam (1) or not (0): `u8`.
pub const FILTER_SCAM: u8 = 0x37;
/// List filter, the authorization's F37: 12 printable ASCII bytes.
pub const FILTER_RRN: u8 = 0x38;
/// List filter, the authorization's F38: six ASCII letters or digits.
pub const FILTER_AUTH_CODE: u8 = 0x39;
/// List filter, the card's last four digits: four ASCII digits.
pub const FILTER_LAST4: u8 = 0x3A;
/// List filter, the channel (F25): `u8`, one of 0, 8, 59, 99.
pub const FILTER_CHANNEL: u8 = 0x3B;
/// List filter, the ECI: `u8`, 0..=99.
pub const FILTER_ECI: u8 = 0x3C;
/// List filter, the authorization's response code: two ASCII upper-case
/// letters or digits.
pub const FILTER_RESULT_CODE: u8 = 0x3D;
/// List filter, any of several statuses: 1..=8 bytes, each a status code,
/// none twice.
pub const FILTER_STATUSES: u8 = 0x3E;

/// Result code, the ISO 8583 response code: two ASCII upper-case letters or
/// digits.
pub const RESULT_CODE: u8 = 0x40;
/// Human-readable message: UTF-8 without control characters, 1..=255 bytes.
pub const MESSAGE: u8 = 0x41;
/// Authorization code (ISO 8583 F38): six ASCII letters or digits.
pub const AUTH_CODE: u8 = 0x42;
/// Amount authorized, minor units: `u64`.
pub const AMOUNT_AUTHORIZED_MINOR: u8 = 0x43;
/// Amount captured, minor units: `u64`.
pub const AMOUNT_CAPTURED_MINOR: u8 = 0x44;
/// Amount refunded, minor units: `u64`.
pub const AMOUNT_REFUNDED_MINOR: u8 = 0x45;
/// Masked card number: digits and `*`, 12..=19, at most 10 digits.
pub const MASKED_PAN: u8 = 0x46;
/// Flagged as a scam: `u8`, 0 or 1.
pub const SCAM: u8 = 0x47;
/// Activity history entry (repeatable): 19 bytes fixed.
pub const HISTORY_ENTRY: u8 = 0x48;
/// Payment list row (repeatable): 44 bytes fixed, then the merchant reference.
pub const PAYMENT_ROW: u8 = 0x49;
/// Cursor for the next page: `u64`; absent on the last page.
pub const NEXT_CURSOR: u8 = 0x4A;
/// Payment created at, Unix seconds: `u64`.
pub const CREATED_UNIX_S: u8 = 0x4B;

/// Merchant id (ISO 8583 F42): printable ASCII, 15 bytes.
pub const MERCHANT_ID: u8 = 0x50;
/// Terminal row (repeatable): 27 bytes fixed, then the terminal's name.
pub const TERMINAL_ROW: u8 = 0x51;
/// Terminal name: UTF-8 without control characters, 1..=64 bytes.
pub const TERMINAL_NAME: u8 = 0x52;
/// Terminal state: `u8`, 0 enabled, 1 disabled (2 removed, in rows).
pub const TERMINAL_STATE: u8 = 0x53;
/// Refunds on a terminal: `u8`, 0 off, 1 on, 2 the merchant's.
pub const REFUNDS: u8 = 0x54;
/// MO/TO on a terminal: `u8`, 0 off, 1 on, 2 the merchant's.
pub const MOTO: u8 = 0x55;
/// Cancels over internal frames on a terminal: `u8`, 0 off, 1 on, 2 the
/// default (allowed).
pub const CANCEL: u8 = 0x56;
/// A merchant enabled (1) or disabled (0): `u8`.
pub const MERCHANT_ENABLED: u8 = 0x57;
/// A merchant's currencies: 1..=32 ISO 4217 numeric `u16`s, none twice.
pub const CURRENCIES: u8 = 0x58;
/// A merchant's over-capture percentage: `u8`, 0..=100.
pub const OVER_CAPTURE_PCT: u8 = 0x59;
/// A merchant's hold period, hours: `u16`, 1..=744.
pub const HOLD_HOURS: u8 = 0x5A;
/// A merchant's auto-capture, hours: `u16`, 0 off, else 1..=744.
pub const AUTO_CAPTURE_HOURS: u8 = 0x5B;
/// A merchant's refunds: `u8`, 0 off, 1 on.
pub const MERCHANT_REFUNDS: u8 = 0x5C;
/// A merchant's MO/TO: `u8`, 0 off, 1 on.
pub const MERCHANT_MOTO: u8 = 0x5D;
/// A merchant's name: UTF-8 without control characters, 1..=64 bytes.
pub const MERCHANT_NAME: u8 = 0x5E;
/// A merchant's settings (one per response): 87 bytes fixed, then its
/// name.
pub const MERCHANT: u8 = 0x5F;
/// The ECI the payment was authorized with: `u8`, 0..=99.
pub const ECI: u8 = 0x60;
/// F37 of the authorization: 12 printable ASCII bytes.
pub const RRN: u8 = 0x61;
/// How the card was presented (F25): `u8`, one of 0, 8, 59, 99.
pub const CHANNEL: u8 = 0x62;
/// Approved by the switch in the issuer's stead: `u8`, 0 or 1.
pub const STOOD_IN: u8 = 0x63;
/// The response code the authorization was answered with: two ASCII
/// upper-case letters or digits.
pub const AUTH_RESULT_CODE: u8 = 0x64;
/// The amount the authorization asked for (what a decline was for),
/// minor units: `u64`.
pub const AMOUNT_REQUESTED_MINOR: u8 = 0x65;
/// The rules that flagged the payment, comma-separated: UTF-8 without
/// control characters, 1..=255 bytes.
pub const FLAG_REASONS: u8 = 0x66;
/// Who marked the payment as scam by hand: as `FLAG_REASONS`.
pub const FLAGGED_BY: u8 = 0x67;
/// Why they did, as they said: as `FLAG_REASONS`.
pub const FLAG_NOTE: u8 = 0x68;
/// Who last took the scam flag off: as `FLAG_REASONS`.
pub const UNFLAGGED_BY: u8 = 0x69;
/// Why: as `FLAG_REASONS`.
pub const UNFLAG_REASON: u8 = 0x6A;
/// When, Unix seconds: `u64`.
pub const UNFLAGGED_UNIX_S: u8 = 0x6B;
/// Mandate list row (repeatable): `granted_unix_s u64, scopes u8`, then
/// the merchant's MID (15 printable characters).
pub const MANDATE_ROW: u8 = 0x70;
/// Webhook event row (repeatable): 47 bytes fixed, then the event id and
/// its type (see `WebhookEventRow`).
pub const WEBHOOK_EVENT: u8 = 0x71;
/// A webhook event id: printable ASCII, 1..=32 bytes.
pub const WEBHOOK_EVENT_ID: u8 = 0x72;
/// A webhook delivery status: `u8`, 0 pending, 1 delivered, 2 failed (a
/// `ListWebhookEvents` filter, and a `ListPayments` one: payments with an
/// event in that status).
pub const WEBHOOK_STATUS: u8 = 0x73;
/// A webhook endpoint URL: printable ASCII, 1..=2048 bytes.
pub const WEBHOOK_URL: u8 = 0x74;
/// A merchant's webhook endpoint (one per response): 9 bytes fixed, then
/// the secret masked and the URL (see `WebhookEndpoint`).
pub const WEBHOOK_ENDPOINT: u8 = 0x75;
/// A new webhook signing secret, answered once: printable ASCII,
/// 16..=128 bytes. Sensitive: never logged.
pub const WEBHOOK_SECRET: u8 = 0x76;

/// First ignorable extension tag: tags `0xF0..=0xFF` that a receiver does
/// not know are skipped (still counted, still checked for duplicates).
pub const EXTENSION_MIN: u8 = 0xF0;

/// Whether a tag may appear more than once in a body.
pub(crate) fn is_repeatable(tag: u8) -> bool {
    matches!(
        tag,
        CART_LINE | HISTORY_ENTRY | PAYMENT_ROW | MANDATE_ROW | TERMINAL_ROW | WEBHOOK_EVENT
    )
}

/// The field's name, for error messages.
pub(crate) fn name(tag: u8) -> &'static str {
    match tag {
        PAYMENT_ID => "payment_id",
        AMOUNT_MINOR => "amount_minor",
        CURRENCY => "currency",
        MERCHANT_REFERENCE => "merchant_reference",
        TERMINAL_ID => "terminal_id",
        DESCRIPTION => "description",
        NOT_FINAL => "not_final",
        CLIENT_ID => "client_id",
        SECRET => "secret",
        PAN => "pan",
        EXPIRY => "expiry",
        CVV2 => "cvv2",
        CARDHOLDER_NAME => "cardholder_name",
        CART_LINE => "cart_line",
        STATUS => "status",
        CREATED_FROM_UNIX_S => "created_from_unix_s",
        CREATED_TO_UNIX_S => "created_to_unix_s",
        AMOUNT_MIN_MINOR => "amount_min_minor",
        AMOUNT_MAX_MINOR => "amount_max_minor",
        CURSOR => "cursor",
        LIMIT => "limit",
        RESULT_CODE => "result_code",
        MESSAGE => "message",
        AUTH_CODE => "auth_code",
        AMOUNT_AUTHORIZED_MINOR => "amount_authorized_minor",
        AMOUNT_CAPTURED_MINOR => "amount_captured_minor",
        AMOUNT_REFUNDED_MINOR => "amount_refunded_minor",
        MASKED_PAN => "masked_pan",
        SCAM => "scam",
        HISTORY_ENTRY => "history_entry",
        PAYMENT_ROW => "payment_row",
        NEXT_CURSOR => "next_cursor",
        CREATED_UNIX_S => "created_unix_s",
        MERCHANT_ID => "merchant_id",
        TERMINAL_ROW => "terminal_row",
        TERMINAL_NAME => "terminal_name",
        TERMINAL_STATE => "terminal_state",
        REFUNDS => "refunds",
        MOTO => "moto",
        CANCEL => "cancel",
        MERCHANT_ENABLED => "merchant_enabled",
        CURRENCIES => "currencies",
        OVER_CAPTURE_PCT => "over_capture_pct",
        HOLD_HOURS => "hold_hours",
        AUTO_CAPTURE_HOURS => "auto_capture_hours",
        MERCHANT_REFUNDS => "merchant_refunds",
        MERCHANT_MOTO => "merchant_moto",
        MERCHANT_NAME => "merchant_name",
        MERCHANT => "merchant",
        FILTER_SCAM => "filter_scam",
        FILTER_RRN => "filter_rrn",
        FILTER_AUTH_CODE => "filter_auth_code",
        FILTER_LAST4 => "filter_last4",
        FILTER_CHANNEL => "filter_channel",
        FILTER_ECI => "filter_eci",
        FILTER_RESULT_CODE => "filter_result_code",
        FILTER_STATUSES => "filter_statuses",
        ECI => "eci",
        RRN => "rrn",
        CHANNEL => "channel",
        STOOD_IN => "stood_in",
        AUTH_RESULT_CODE => "auth_result_code",
        AMOUNT_REQUESTED_MINOR => "amount_requested_minor",
        FLAG_REASONS => "flag_reasons",
        FLAGGED_BY => "flagged_by",
        FLAG_NOTE => "flag_note",
        UNFLAGGED_BY => "unflagged_by",
        UNFLAG_REASON => "unflag_reason",
        UNFLAGGED_UNIX_S => "unflagged_unix_s",
        MANDATE_ROW => "mandate_row",
        WEBHOOK_EVENT => "webhook_event",
        WEBHOOK_EVENT_ID => "webhook_event_id",
        WEBHOOK_STATUS => "webhook_status",
        WEBHOOK_URL => "webhook_url",
        WEBHOOK_ENDPOINT => "webhook_endpoint",
        WEBHOOK_SECRET => "webhook_secret",
        t if t >= EXTENSION_MIN => "extension",
        _ => "unknown",
    }
}
