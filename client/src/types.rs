//! Owned inputs and results: what callers build and keep, free of the
//! codec's borrowed views.

use codecs::internal::{
    HistoryEntry, PaymentStatus, Response, ResultCode, Setting, TerminalState, WebhookStatus,
};

/// A mail or telephone order, for [`crate::Client::authorize_moto`] and
/// [`crate::Client::preauthorize_moto`]. `Debug` masks the card data.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MotoPayment {
    /// Card number, 12 to 19 digits.
    pub pan: String,
    /// Card expiry as `YYMM`.
    pub expiry_yymm: String,
    /// Card verification value, 3 or 4 digits; mail orders may not have one.
    /// Sent for the check only: the switch never stores it.
    pub cvv2: Option<String>,
    /// Cardholder name as given.
    pub cardholder_name: Option<String>,
    /// The merchant's order reference, 1 to 64 printable ASCII characters.
    pub merchant_reference: String,
    /// What was sold.
    pub description: Option<String>,
    /// ISO 4217 numeric currency (978 EUR).
    pub currency: u16,
    /// Amount in the currency's minor units.
    pub amount_minor: u64,
    /// The terminal (ISO 8583 F41) the order is taken on; names the merchant.
    pub terminal_id: String,
    /// Itemization; need not add up to the amount (shipping, taxes).
    pub cart: Vec<CartItem>,
}

impl std::fmt::Debug for MotoPayment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoPayment")
            .field("pan", &"***")
            .field("expiry_yymm", &"****")
            .field("cvv2", &self.cvv2.as_ref().map(|_| "***"))
            .field("merchant_reference", &self.merchant_reference)
            .field("currency", &self.currency)
            .field("amount_minor", &self.amount_minor)
            .field("terminal_id", &self.terminal_id)
            .field("cart", &self.cart)
            .finish_non_exhaustive()
    }
}

/// One cart line: sold with a payment, or refunded by
/// [`crate::Client::refund_lines`] (the same item and unit price as sold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CartItem {
    /// Item name or SKU, 1 to 64 bytes.
    pub item: String,
    /// Quantity, 1 to 9 999.
    pub quantity: u32,
    /// Price of one, minor units.
    pub unit_price_minor: u64,
}

/// Filters and paging of [`crate::Client::list_payments`]; all optional,
/// combined with "and".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only payments in this status.
    pub status: Option<PaymentStatus>,
    /// Created at or after, Unix seconds.
    pub created_from_unix_s: Option<u64>,
    /// Created at or before, Unix seconds.
    pub created_to_unix_s: Option<u64>,
    /// Amount at least, minor units.
    pub amount_min_minor: Option<u64>,
    /// Amount at most, minor units.
    pub amount_max_minor: Option<u64>,
    /// Only this merchant reference.
    pub merchant_reference: Option<String>,
    /// Only this terminal.
    pub terminal_id: Option<String>,
    /// Resume after a previous page: its [`Reply::next_cursor`].
    pub cursor: Option<u64>,
    /// Page size, 1 to 100; absent: the switch's default.
    pub limit: Option<u16>,
    /// Only flagged (`true`) or unflagged (`false`) payments.
    pub scam: Option<bool>,
    /// Only this F37 of the authorization (12 characters).
    pub rrn: Option<String>,
    /// Only this F38 of the authorization (6 letters or digits).
    pub auth_code: Option<String>,
    /// Only cards ending with these four digits.
    pub last4: Option<String>,
    /// Only this channel (F25's value: 0, 8, 59, 99).
    pub channel: Option<u8>,
    /// Only this ECI, 0 to 99.
    pub eci: Option<u8>,
    /// Only payments whose authorization was answered with this code.
    pub result_code: Option<ResultCode>,
    /// Only payments in one of these statuses (empty: any).
    pub statuses: Vec<PaymentStatus>,
    /// Only payments with a webhook event in this delivery status.
    pub webhook_status: Option<WebhookStatus>,
}

/// One payment in a list page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRow {
    /// The payment.
    pub payment_id: u64,
    /// When it was created, Unix seconds.
    pub created_unix_s: u64,
    /// Where it is in its life.
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
    /// The merchant's reference, when it has one.
    pub merchant_reference: Option<String>,
}

/// A mandate a provider holds (list mandates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MandateRow {
    /// The merchant that granted it (MID).
    pub merchant_id: String,
    /// When it was granted, Unix seconds.
    pub granted_unix_s: u64,
    /// What it allows: bits of `codecs::internal::scope` (1 payments,
    /// 2 refunds, 4 reporting).
    pub scopes: u8,
}

/// The switch's answer to one request, owned. Which fields are present
/// depends on the request (see `docs/internal-api.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// ISO 8583 response code: `00` approved, `25` no such payment...
    pub result_code: ResultCode,
    /// Why it failed, or what was done.
    pub message: Option<String>,
    /// The payment created or concerned.
    pub payment_id: Option<u64>,
    /// Authorization code on approval.
    pub auth_code: Option<String>,
    /// The payment's status after the request.
    pub status: Option<PaymentStatus>,
    /// ISO 4217 numeric, for the amounts.
    pub currency: Option<u16>,
    /// Authorized, minor units.
    pub amount_authorized_minor: Option<u64>,
    /// Captured, minor units.
    pub amount_captured_minor: Option<u64>,
    /// Refunded, minor units.
    pub amount_refunded_minor: Option<u64>,
    /// The card, masked (first 6 and last 4 at most).
    pub masked_pan: Option<String>,
    /// Flagged as a scam.
    pub scam: Option<bool>,
    /// The merchant's reference for the payment.
    pub merchant_reference: Option<String>,
    /// The payment's terminal.
    pub terminal_id: Option<String>,
    /// When the payment was created, Unix seconds.
    pub created_unix_s: Option<u64>,
    /// Activity history, oldest first (get payment).
    pub history: Vec<HistoryEntry>,
    /// One page of payments, newest first (list payments).
    pub rows: Vec<PaymentRow>,
    /// Cursor of the next page; `None` on the last page.
    pub next_cursor: Option<u64>,
    /// The mandates the key's provider holds (list mandates).
    pub mandates: Vec<MandateRow>,
    /// How the payment was authorized, and its scam flag's workflow.
    pub details: Details,
    /// Terminals: a page (list terminals), or the one changed.
    pub terminals: Vec<Terminal>,
    /// A merchant's settings (get and set merchant).
    pub merchant: Option<Merchant>,
    /// Webhook events with their delivery status: a page, newest first
    /// (list webhook events), the one resent, or a payment's in the order
    /// of its changes (get payment).
    pub webhook_events: Vec<WebhookEvent>,
    /// A merchant's webhook endpoint, its secret masked (get and set
    /// webhook endpoint); `None`: none.
    pub webhook_endpoint: Option<WebhookEndpoint>,
    /// The endpoint's new signing secret (set webhook endpoint), shown
    /// this once: `Debug` masks it.
    pub webhook_secret: Option<NewSecret>,
}

/// A webhook event and where its delivery is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    /// `evt_…`, stable across retries.
    pub id: String,
    /// `payment.captured`...
    pub kind: String,
    /// The payment it tells of.
    pub payment_id: u64,
    /// Its merchant (MID).
    pub merchant_id: String,
    /// Pending, delivered or failed.
    pub status: WebhookStatus,
    /// Posts tried so far.
    pub attempts: u32,
    /// The last answer's HTTP status (none: no answer, or not tried yet).
    pub last_status_code: Option<u16>,
    /// When it was last tried, Unix seconds.
    pub last_attempt_unix_s: Option<u64>,
    /// When it is tried next (pending), Unix seconds.
    pub next_attempt_unix_s: Option<u64>,
}

/// A merchant's webhook endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// Where events are posted.
    pub url: String,
    /// Its signing secret, masked (`whsec_…` and the last 4).
    pub secret_masked: String,
    /// When it was set, Unix seconds.
    pub created_unix_s: u64,
}

/// A signing secret shown once. `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSecret(String);

impl NewSecret {
    /// The secret, to show its owner this once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewSecret(***)")
    }
}

/// A merchant's settings as the switch holds them (get and set merchant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merchant {
    /// F42.
    pub merchant_id: String,
    /// Whether it transacts (its acquirer's choice).
    pub enabled: bool,
    /// Accepted currencies, ISO 4217 numeric.
    pub currencies: Vec<u16>,
    /// How far a capture may exceed the hold, percent.
    pub over_capture_pct: u8,
    /// How long a hold stays open, hours.
    pub hold_hours: u16,
    /// Holds captured after this many hours; `None`: never.
    pub auto_capture_hours: Option<u16>,
    /// Refunds allowed.
    pub refunds: bool,
    /// MO/TO allowed.
    pub moto: bool,
    /// For people; empty when none.
    pub name: String,
}

/// A merchant's settings to change, for
/// [`crate::Client::set_merchant`]; `None` leaves one as it is. Enabling
/// or disabling is its acquirer's (`switch merchants enable|disable`): the
/// switch answers `enabled` with `58`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerchantSettings {
    /// Which of the key's merchants; `None`: the key's only one.
    pub merchant_id: Option<String>,
    /// Enabled (refused by the switch, `58`).
    pub enabled: Option<bool>,
    /// Accepted currencies (1 to 32, none twice), replacing the list.
    pub currencies: Option<Vec<u16>>,
    /// Over-capture percentage, 0 to 100.
    pub over_capture_pct: Option<u8>,
    /// Hold period, hours, 1 to 744.
    pub hold_hours: Option<u16>,
    /// Auto-capture: `Some(None)` off, `Some(Some(h))` after `h` hours.
    pub auto_capture_hours: Option<Option<u16>>,
    /// Refunds allowed.
    pub refunds: Option<bool>,
    /// MO/TO allowed.
    pub moto: Option<bool>,
    /// New name.
    pub name: Option<String>,
}

/// What the back office sees of one payment besides its amounts (answers
/// that carry the payment, get payment above all). All optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    /// The ECI it was authorized with, 0 to 99.
    pub eci: Option<u8>,
    /// F37 of the authorization.
    pub rrn: Option<String>,
    /// How the card was presented (F25): 0, 8, 59 or 99.
    pub channel: Option<u8>,
    /// Approved by the switch in the issuer's stead.
    pub stood_in: Option<bool>,
    /// The response code the authorization was answered with.
    pub auth_result_code: Option<ResultCode>,
    /// The amount the authorization asked for (what a decline was for).
    pub amount_requested_minor: Option<u64>,
    /// The rules that flagged it, comma-separated.
    pub flag_reasons: Option<String>,
    /// Who marked it as scam by hand.
    pub flagged_by: Option<String>,
    /// Why they did.
    pub flag_note: Option<String>,
    /// Who last took the flag off.
    pub unflagged_by: Option<String>,
    /// Why.
    pub unflag_reason: Option<String>,
    /// When, Unix seconds.
    pub unflagged_unix_s: Option<u64>,
}

/// A terminal as the switch has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminal {
    /// F41.
    pub terminal_id: String,
    /// Its merchant's F42.
    pub merchant_id: String,
    /// Enabled, disabled or removed.
    pub state: TerminalState,
    /// Refunds on it: on, off, or its merchant's.
    pub refunds: Setting,
    /// MO/TO on it.
    pub moto: Setting,
    /// Cancels over internal frames on it.
    pub cancel: Setting,
    /// For people; empty when none.
    pub name: String,
}

/// A terminal's state and settings to change, for
/// [`crate::Client::set_terminal`]; `None` leaves one as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TerminalSettings {
    /// New name.
    pub name: Option<String>,
    /// Enabled (`true`) or disabled.
    pub enabled: Option<bool>,
    /// Refunds.
    pub refunds: Option<Setting>,
    /// MO/TO.
    pub moto: Option<Setting>,
    /// Cancels over internal frames.
    pub cancel: Option<Setting>,
}

impl Reply {
    /// Whether the result code is `00`.
    pub fn approved(&self) -> bool {
        self.result_code == ResultCode::APPROVED
    }

    /// The result code as text (`"00"`, `"25"`...).
    pub fn code(&self) -> &str {
        self.result_code.as_str()
    }

    /// Copies a decoded response.
    pub(crate) fn from_response(r: &Response<'_>) -> Reply {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        Reply {
            result_code: r.result_code,
            message: owned(r.message),
            payment_id: r.payment_id,
            auth_code: owned(r.auth_code),
            status: r.status,
            currency: r.currency,
            amount_authorized_minor: r.amount_authorized_minor,
            amount_captured_minor: r.amount_captured_minor,
            amount_refunded_minor: r.amount_refunded_minor,
            masked_pan: owned(r.masked_pan),
            scam: r.scam,
            merchant_reference: owned(r.merchant_reference),
            terminal_id: owned(r.terminal_id),
            created_unix_s: r.created_unix_s,
            history: r.history.iter().collect(),
            rows: r
                .rows
                .iter()
                .map(|row| PaymentRow {
                    payment_id: row.payment_id,
                    created_unix_s: row.created_unix_s,
                    status: row.status,
                    scam: row.scam,
                    currency: row.currency,
                    amount_authorized_minor: row.amount_authorized_minor,
                    amount_captured_minor: row.amount_captured_minor,
                    amount_refunded_minor: row.amount_refunded_minor,
                    merchant_reference: owned(row.merchant_reference),
                })
                .collect(),
            next_cursor: r.next_cursor,
            terminals: r
                .terminals
                .iter()
                .map(|t| Terminal {
                    terminal_id: t.terminal_id.to_owned(),
                    merchant_id: t.merchant_id.to_owned(),
                    state: t.state,
                    refunds: t.refunds,
                    moto: t.moto,
                    cancel: t.cancel,
                    name: t.name.to_owned(),
                })
                .collect(),
            mandates: r
                .mandates
                .iter()
                .map(|m| MandateRow {
                    merchant_id: m.merchant_id.to_owned(),
                    granted_unix_s: m.granted_unix_s,
                    scopes: m.scopes,
                })
                .collect(),
            details: Details::of(&r.details),
            merchant: r.merchant.map(|m| Merchant {
                merchant_id: m.merchant_id.to_owned(),
                enabled: m.enabled,
                currencies: m.currencies.as_slice().to_vec(),
                over_capture_pct: m.over_capture_pct,
                hold_hours: m.hold_hours,
                auto_capture_hours: m.auto_capture_hours,
                refunds: m.refunds,
                moto: m.moto,
                name: m.name.to_owned(),
            }),
            webhook_events: r
                .webhook_events
                .iter()
                .map(|e| WebhookEvent {
                    id: e.id.to_owned(),
                    kind: e.kind.to_owned(),
                    payment_id: e.payment_id,
                    merchant_id: e.merchant_id.to_owned(),
                    status: e.status,
                    attempts: e.attempts,
                    last_status_code: e.last_status_code,
                    last_attempt_unix_s: e.last_attempt_unix_s,
                    next_attempt_unix_s: e.next_attempt_unix_s,
                })
                .collect(),
            webhook_endpoint: r.webhook_endpoint.map(|e| WebhookEndpoint {
                url: e.url.to_owned(),
                secret_masked: e.secret_masked.to_owned(),
                created_unix_s: e.created_unix_s,
            }),
            webhook_secret: r.webhook_secret.map(|s| NewSecret(s.expose().to_owned())),
        }
    }
}

impl Details {
    fn of(d: &codecs::internal::Details<'_>) -> Details {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        Details {
            eci: d.eci,
            rrn: owned(d.rrn),
            channel: d.channel,
            stood_in: d.stood_in,
            auth_result_code: d.auth_result_code,
            amount_requested_minor: d.amount_requested_minor,
            flag_reasons: owned(d.flag_reasons),
            flagged_by: owned(d.flagged_by),
            flag_note: owned(d.flag_note),
            unflagged_by: owned(d.unflagged_by),
            unflag_reason: owned(d.unflag_reason),
            unflagged_unix_s: d.unflagged_unix_s,
        }
    }
}
