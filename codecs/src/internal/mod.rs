//! Internal binary frames: the compact, versioned format of internal
//! clients (the MO/TO virtual terminal, merchants' back offices) over a
//! persistent, pipelined TCP connection. The byte-by-byte format is in
//! `docs/internal-frames.md`.
//!
//! A frame is a 16-byte header (magic `SW`, version, frame type, request
//! id, body length) and a body of typed fields (`tag u8, length u16,
//! value`), all big-endian. Decoding is check-then-parse: [`check`] (or
//! [`InternalCodec`]) delimits a frame from the header alone, then
//! [`Request::parse`] / [`Response::parse`] walk the body once, without
//! recursion or allocation, into views that borrow from the input.
//!
//! Layout:
//! - `header`: the header, [`check`] and [`Frame`];
//! - `field`: the field walker, value checks and the body writer;
//! - `request`, `response`: the typed views and their encoding;
//! - `items`, `repeated`: repeatable fields (cart lines, history, rows);
//! - `sensitive`: card data and secrets, masked in `Debug`;
//! - `terminal`: terminals at run time (list, add, set, remove);
//! - `merchant`: a merchant's own settings (get, set);
//! - `webhook`: webhook events and endpoints (list, resend, get, set,
//!   remove);
//! - `codec`: the tokio-util [`InternalCodec`].

mod codec;
mod codes;
mod error;
mod field;
mod frame_type;
mod header;
mod items;
mod merchant;
mod repeated;
mod request;
mod response;
mod sensitive;
pub mod tag;
mod terminal;
mod webhook;

pub use codec::{CodecError, FrameBytes, InternalCodec};
pub use codes::{EventKind, PaymentStatus, ResultCode};
pub use error::Error;
pub use frame_type::FrameType;
pub use header::{check, Frame, FRAME_HEADER_BYTES, FRAME_MAGIC, FRAME_VERSION};
pub use items::{scope, CartLine, HistoryEntry, MandateRow, PaymentRow};
pub use merchant::{
    Currencies, MerchantChange, MerchantSettings, CURRENCIES_MAX, HOLD_HOURS_MAX,
    OVER_CAPTURE_PCT_MAX,
};
pub use repeated::{Repeated, RepeatedItem, RepeatedIter};
pub use request::{Authenticate, ListPayments, MotoRequest, Refund, Request};
pub use response::{Details, Response};
pub use sensitive::{Cvv2, Expiry, Pan, Secret};
pub use terminal::{ListTerminals, Setting, TerminalChange, TerminalRow, TerminalState};
pub use webhook::{
    ListWebhookEvents, WebhookEndpoint, WebhookEndpointChange, WebhookEventRow, WebhookSecret,
    WebhookStatus, WEBHOOK_EVENT_ID_BYTES_MAX, WEBHOOK_SECRET_BYTES_MAX, WEBHOOK_URL_BYTES_MAX,
};

/// Largest body accepted or written: 16 KiB, checked on the header before
/// anything is buffered. Holds the largest response (a full list page and
/// a full history) with room to spare.
pub const FRAME_BODY_BYTES_MAX: usize = 16 * 1024;
/// Most fields in one body, repeated ones included.
pub const FRAME_FIELDS_MAX: usize = 224;
/// Most cart lines in a sale or refund.
pub const CART_LINES_MAX: usize = 50;
/// Most activity history entries in a response.
pub const HISTORY_ENTRIES_MAX: usize = 64;
/// Most rows in a list page, and the largest `limit` a list request may ask.
pub const LIST_ROWS_MAX: usize = 100;
/// Most rows in a mandate list.
pub const MANDATE_ROWS_MAX: usize = 150;
/// Most terminals in one response page, and the largest `limit` a
/// terminal list may ask.
pub const TERMINAL_ROWS_MAX: usize = 100;
/// Most webhook events in one response (a `ListWebhookEvents` page, or a
/// payment's events in `GetPayment`), and the largest `limit` an event
/// list may ask.
pub const WEBHOOK_EVENTS_MAX: usize = 50;
/// Largest quantity on a cart line.
pub const CART_QUANTITY_MAX: u32 = 9_999;
/// Largest amount in minor units: 12 digits, as ISO 8583 F4 (n12) holds.
pub const AMOUNT_MINOR_MAX: u64 = 999_999_999_999;

/// Fields a response has besides its repeated ones (15, the 12 of
/// `Details`, the merchant composite, the webhook endpoint composite and
/// the webhook secret).
const RESPONSE_SINGLE_FIELDS: usize = 15 + 12 + 1 + 2;
/// Worst case of the single fields: every one at its longest (a 255-byte
/// message and 64-byte reference are the long ones; then the details: ECI,
/// RRN, channel, stand-in, code, amount, five 255-byte texts, a time).
const RESPONSE_SINGLE_BYTES_MAX: usize = 15 * 3
    + 2
    + 255
    + 8
    + 6
    + 1
    + 2
    + 3 * 8
    + 19
    + 1
    + 64
    + 8
    + 3 * 8
    + 12 * 3
    + 1
    + 12
    + 1
    + 1
    + 2
    + 8
    + 5 * 255
    + 8
    + field::FIELD_HEADER_BYTES
    + merchant::MERCHANT_FIXED_BYTES
    + 64;

// The largest response must fit the limits the decoder enforces.
const _: () =
    assert!(RESPONSE_SINGLE_FIELDS + HISTORY_ENTRIES_MAX + LIST_ROWS_MAX <= FRAME_FIELDS_MAX);
const _: () = assert!(
    RESPONSE_SINGLE_BYTES_MAX
        + HISTORY_ENTRIES_MAX * (field::FIELD_HEADER_BYTES + items::HISTORY_ENTRY_BYTES)
        + LIST_ROWS_MAX * (field::FIELD_HEADER_BYTES + items::PAYMENT_ROW_FIXED_BYTES + 64)
        <= FRAME_BODY_BYTES_MAX
);
// A payment's webhook events ride with its history (GetPayment), never
// with list rows; an event page rides alone. Either fits with the webhook
// endpoint and secret at their longest.
const WEBHOOK_SINGLE_BYTES_MAX: usize = 2 * field::FIELD_HEADER_BYTES
    + webhook::WEBHOOK_ENDPOINT_FIXED_BYTES
    + webhook::MASKED_SECRET_BYTES_MAX
    + webhook::WEBHOOK_URL_BYTES_MAX
    + webhook::WEBHOOK_SECRET_BYTES_MAX;
const WEBHOOK_EVENT_ROW_BYTES_MAX: usize = field::FIELD_HEADER_BYTES
    + webhook::WEBHOOK_EVENT_ROW_FIXED_BYTES
    + webhook::WEBHOOK_EVENT_ID_BYTES_MAX
    + webhook::EVENT_TYPE_BYTES_MAX;
const _: () =
    assert!(RESPONSE_SINGLE_FIELDS + HISTORY_ENTRIES_MAX + WEBHOOK_EVENTS_MAX <= FRAME_FIELDS_MAX);
const _: () = assert!(
    RESPONSE_SINGLE_BYTES_MAX
        + WEBHOOK_SINGLE_BYTES_MAX
        + HISTORY_ENTRIES_MAX * (field::FIELD_HEADER_BYTES + items::HISTORY_ENTRY_BYTES)
        + WEBHOOK_EVENTS_MAX * WEBHOOK_EVENT_ROW_BYTES_MAX
        <= FRAME_BODY_BYTES_MAX
);
const _: () = assert!(webhook::WEBHOOK_URL_BYTES_MAX + 64 <= u16::MAX as usize);
// So does a full mandate list.
const _: () = assert!(RESPONSE_SINGLE_FIELDS + MANDATE_ROWS_MAX <= FRAME_FIELDS_MAX);
const _: () = assert!(
    RESPONSE_SINGLE_BYTES_MAX
        + MANDATE_ROWS_MAX * (field::FIELD_HEADER_BYTES + items::MANDATE_ROW_FIXED_BYTES + 15)
        <= FRAME_BODY_BYTES_MAX
);
// A full page of terminals (each at its longest name) fits beside the
// single fields; a response never carries terminals with rows or history.
const _: () = assert!(RESPONSE_SINGLE_FIELDS + TERMINAL_ROWS_MAX <= FRAME_FIELDS_MAX);
const _: () = assert!(
    RESPONSE_SINGLE_BYTES_MAX
        + TERMINAL_ROWS_MAX * (field::FIELD_HEADER_BYTES + terminal::TERMINAL_ROW_FIXED_BYTES + 64)
        <= FRAME_BODY_BYTES_MAX
);
// The merchant composite: its currency slots hold what a merchant may
// accept, and a SetMerchant with every field fits a request.
const _: () = assert!(merchant::CURRENCIES_MAX <= u8::MAX as usize);
const _: () = assert!(merchant::MERCHANT_FIXED_BYTES + 64 <= u16::MAX as usize);
const _: () = assert!(
    9 * field::FIELD_HEADER_BYTES + 15 + 1 + 2 * merchant::CURRENCIES_MAX + 1 + 2 + 2 + 1 + 1 + 64
        <= FRAME_BODY_BYTES_MAX
);
// A request carrying every cart line also fits.
const _: () =
    assert!(CART_LINES_MAX * (field::FIELD_HEADER_BYTES + 12 + 64) + 1024 <= FRAME_BODY_BYTES_MAX);
// Body offsets are reported as `u16`.
const _: () = assert!(FRAME_BODY_BYTES_MAX <= u16::MAX as usize);
// Every amount fits ISO 8583 F4, and a whole cart of maximum lines cannot
// overflow `u64` before the limit check.
const _: () =
    assert!(AMOUNT_MINOR_MAX < u64::MAX / (CART_QUANTITY_MAX as u64 * CART_LINES_MAX as u64));
