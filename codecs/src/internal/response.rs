//! The one response frame type, server to client: a result code, a
//! message, and the result fields the request calls for.

use bytes::BytesMut;

use super::codes::{PaymentStatus, ResultCode};
use super::error::Error;
use super::field::{
    self, check_amount, check_currency, check_payment_id, check_str, count_repeat, encode_frame,
    fixed, flag_value, payment_id_value, required, u16_value, u64_value, u8_value, unexpected,
    BodyWriter, Field, Fields,
};
use super::frame_type::FrameType;
use super::header::Frame;
use super::items::{HistoryEntry, MandateRow, PaymentRow};
use super::merchant::MerchantSettings;
use super::repeated::Repeated;
use super::tag;
use super::terminal::TerminalRow;
use super::webhook::{WebhookEndpoint, WebhookEventRow, WebhookSecret};
use super::{
    HISTORY_ENTRIES_MAX, LIST_ROWS_MAX, MANDATE_ROWS_MAX, TERMINAL_ROWS_MAX, WEBHOOK_EVENTS_MAX,
};

/// The answer to any request, success or error. Only `result_code` is
/// required; a server fills in what the request calls for (see
/// `docs/internal-frames.md`). Never carries a clear PAN: `masked_pan` is
/// refused unless masked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Response<'a> {
    /// The ISO 8583 response code: `00` approved, `30` format error...
    pub result_code: ResultCode,
    /// For people: why it failed, or what was done.
    pub message: Option<&'a str>,
    /// The payment created or concerned.
    pub payment_id: Option<u64>,
    /// Authorization code on approval (six letters or digits).
    pub auth_code: Option<&'a str>,
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
    /// Card number, masked (first 6 and last 4 at most).
    pub masked_pan: Option<&'a str>,
    /// Flagged as a scam.
    pub scam: Option<bool>,
    /// The merchant's reference for the payment.
    pub merchant_reference: Option<&'a str>,
    /// The terminal of the payment.
    pub terminal_id: Option<&'a str>,
    /// When the payment was created, Unix seconds.
    pub created_unix_s: Option<u64>,
    /// Activity history (`GetPayment`), oldest first, up to
    /// `HISTORY_ENTRIES_MAX`.
    pub history: Repeated<'a, HistoryEntry>,
    /// One page of payments (`ListPayments`), up to `LIST_ROWS_MAX`.
    pub rows: Repeated<'a, PaymentRow<'a>>,
    /// Mandate rows (ListMandates).
    pub mandates: Repeated<'a, MandateRow<'a>>,
    /// Cursor for the next page; absent on the last page.
    pub next_cursor: Option<u64>,
    /// Terminals (`ListTerminals`: a page; the terminal changes: the one
    /// changed), up to `TERMINAL_ROWS_MAX`.
    pub terminals: Repeated<'a, TerminalRow<'a>>,
    /// The back office's details of one payment (`GetPayment`, and the
    /// answers that carry the payment).
    pub details: Details<'a>,
    /// A merchant's settings (`GetMerchant`, `SetMerchant`).
    pub merchant: Option<MerchantSettings<'a>>,
    /// Webhook events with their delivery status (`ListWebhookEvents`: a
    /// page, newest first; `ResendWebhookEvent`: the event; `GetPayment`:
    /// the payment's, in the order of its changes), up to
    /// `WEBHOOK_EVENTS_MAX`.
    pub webhook_events: Repeated<'a, WebhookEventRow<'a>>,
    /// A merchant's webhook endpoint, secret masked (`GetWebhookEndpoint`,
    /// `SetWebhookEndpoint`); absent: none.
    pub webhook_endpoint: Option<WebhookEndpoint<'a>>,
    /// The endpoint's new signing secret (`SetWebhookEndpoint` only,
    /// once). `Debug` masks it.
    pub webhook_secret: Option<WebhookSecret<'a>>,
}

/// What the back office sees of one payment besides its amounts: how it
/// was authorized and its scam flag's workflow. All optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Details<'a> {
    /// The ECI it was authorized with, 0..=99.
    pub eci: Option<u8>,
    /// F37 of the authorization.
    pub rrn: Option<&'a str>,
    /// How the card was presented (F25): 0, 8, 59 or 99.
    pub channel: Option<u8>,
    /// Approved by the switch in the issuer's stead.
    pub stood_in: Option<bool>,
    /// The response code the authorization was answered with.
    pub auth_result_code: Option<ResultCode>,
    /// The amount the authorization asked for, minor units.
    pub amount_requested_minor: Option<u64>,
    /// The rules that flagged it, comma-separated.
    pub flag_reasons: Option<&'a str>,
    /// Who marked it as scam by hand.
    pub flagged_by: Option<&'a str>,
    /// Why they did.
    pub flag_note: Option<&'a str>,
    /// Who last took the flag off.
    pub unflagged_by: Option<&'a str>,
    /// Why.
    pub unflag_reason: Option<&'a str>,
    /// When, Unix seconds.
    pub unflagged_unix_s: Option<u64>,
}

impl<'a> Details<'a> {
    /// One field of the details; `Ok(false)` when `tag` is none of them.
    fn set(&mut self, tag: u8, value: &'a [u8]) -> Result<bool, Error> {
        match tag {
            tag::ECI => self.eci = Some(field::eci_value(tag, value)?),
            tag::RRN => self.rrn = Some(check_str(field::RRN, value)?),
            tag::CHANNEL => self.channel = Some(field::channel_value(tag, value)?),
            tag::STOOD_IN => self.stood_in = Some(flag_value(tag, u8_value(tag, value)?)?),
            tag::AUTH_RESULT_CODE => {
                self.auth_result_code = Some(ResultCode::new(fixed(tag, value)?)?)
            }
            tag::AMOUNT_REQUESTED_MINOR => {
                self.amount_requested_minor = Some(check_amount(tag, u64_value(tag, value)?, 0)?)
            }
            tag::FLAG_REASONS => self.flag_reasons = Some(check_str(field::FLAG_REASONS, value)?),
            tag::FLAGGED_BY => self.flagged_by = Some(check_str(field::FLAGGED_BY, value)?),
            tag::FLAG_NOTE => self.flag_note = Some(check_str(field::FLAG_NOTE, value)?),
            tag::UNFLAGGED_BY => self.unflagged_by = Some(check_str(field::UNFLAGGED_BY, value)?),
            tag::UNFLAG_REASON => {
                self.unflag_reason = Some(check_str(field::UNFLAG_REASON, value)?)
            }
            tag::UNFLAGGED_UNIX_S => self.unflagged_unix_s = Some(u64_value(tag, value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        if let Some(eci) = self.eci {
            w.u8(tag::ECI, eci)?;
        }
        w.opt_str(field::RRN, self.rrn)?;
        if let Some(channel) = self.channel {
            w.u8(tag::CHANNEL, channel)?;
        }
        if let Some(stood_in) = self.stood_in {
            w.u8(tag::STOOD_IN, u8::from(stood_in))?;
        }
        if let Some(code) = self.auth_result_code {
            w.bytes(tag::AUTH_RESULT_CODE, &code.bytes())?;
        }
        let requested = self
            .amount_requested_minor
            .map(|a| check_amount(tag::AMOUNT_REQUESTED_MINOR, a, 0))
            .transpose()?;
        w.opt_u64(tag::AMOUNT_REQUESTED_MINOR, requested)?;
        w.opt_str(field::FLAG_REASONS, self.flag_reasons)?;
        w.opt_str(field::FLAGGED_BY, self.flagged_by)?;
        w.opt_str(field::FLAG_NOTE, self.flag_note)?;
        w.opt_str(field::UNFLAGGED_BY, self.unflagged_by)?;
        w.opt_str(field::UNFLAG_REASON, self.unflag_reason)?;
        w.opt_u64(tag::UNFLAGGED_UNIX_S, self.unflagged_unix_s)
    }
}

impl<'a> Response<'a> {
    /// A response with only a result code.
    pub fn new(result_code: ResultCode) -> Response<'a> {
        Response {
            result_code,
            message: None,
            payment_id: None,
            auth_code: None,
            status: None,
            currency: None,
            amount_authorized_minor: None,
            amount_captured_minor: None,
            amount_refunded_minor: None,
            masked_pan: None,
            scam: None,
            merchant_reference: None,
            terminal_id: None,
            created_unix_s: None,
            history: Repeated::empty(),
            rows: Repeated::empty(),
            mandates: Repeated::empty(),
            next_cursor: None,
            details: Details::default(),
            terminals: Repeated::empty(),
            merchant: None,
            webhook_events: Repeated::empty(),
            webhook_endpoint: None,
            webhook_secret: None,
        }
    }

    /// Parses the body of a response frame, without allocating.
    ///
    /// # Errors
    /// [`Error::UnknownFrameType`], [`Error::WrongDirection`] for a request
    /// frame, or the first field error found.
    pub fn parse(frame: &Frame<'a>) -> Result<Response<'a>, Error> {
        let frame_type = frame.frame_type()?;
        if frame_type != FrameType::Response {
            return Err(Error::WrongDirection { found: frame_type });
        }
        let body = frame.body();
        let mut r = Response::new(ResultCode::APPROVED);
        let (mut result_code, mut history, mut rows) = (None, 0, 0);
        let (mut mandates, mut terminals, mut events) = (0, 0, 0);
        let mut fields = Fields::new(body);
        while let Some(Field { tag, value }) = fields.next_field()? {
            match tag {
                tag::RESULT_CODE => result_code = Some(ResultCode::new(fixed(tag, value)?)?),
                tag::HISTORY_ENTRY => {
                    HistoryEntry::decode_value(value)?;
                    count_repeat(tag, &mut history, HISTORY_ENTRIES_MAX)?;
                }
                tag::PAYMENT_ROW => {
                    PaymentRow::decode_value(value)?;
                    count_repeat(tag, &mut rows, LIST_ROWS_MAX)?;
                }
                tag::MANDATE_ROW => {
                    MandateRow::decode_value(value)?;
                    count_repeat(tag, &mut mandates, MANDATE_ROWS_MAX)?;
                }
                tag::TERMINAL_ROW => {
                    TerminalRow::decode_value(value)?;
                    count_repeat(tag, &mut terminals, TERMINAL_ROWS_MAX)?;
                }
                tag::WEBHOOK_EVENT => {
                    WebhookEventRow::decode_value(value)?;
                    count_repeat(tag, &mut events, WEBHOOK_EVENTS_MAX)?;
                }
                tag => r.set(tag, value)?,
            }
        }
        r.result_code = required(tag::RESULT_CODE, result_code)?;
        r.history = Repeated::from_wire(body, history);
        r.rows = Repeated::from_wire(body, rows);
        r.mandates = Repeated::from_wire(body, mandates);
        r.terminals = Repeated::from_wire(body, terminals);
        r.webhook_events = Repeated::from_wire(body, events);
        Ok(r)
    }

    /// One single-valued field.
    fn set(&mut self, tag: u8, value: &'a [u8]) -> Result<(), Error> {
        let amount = |value| check_amount(tag, u64_value(tag, value)?, 0);
        match tag {
            tag::MESSAGE => self.message = Some(check_str(field::MESSAGE, value)?),
            tag::PAYMENT_ID => self.payment_id = Some(payment_id_value(tag, value)?),
            tag::AUTH_CODE => self.auth_code = Some(check_str(field::AUTH_CODE, value)?),
            tag::STATUS => {
                self.status = Some(PaymentStatus::from_code(tag, u8_value(tag, value)?)?)
            }
            tag::CURRENCY => self.currency = Some(check_currency(tag, u16_value(tag, value)?)?),
            tag::AMOUNT_AUTHORIZED_MINOR => self.amount_authorized_minor = Some(amount(value)?),
            tag::AMOUNT_CAPTURED_MINOR => self.amount_captured_minor = Some(amount(value)?),
            tag::AMOUNT_REFUNDED_MINOR => self.amount_refunded_minor = Some(amount(value)?),
            tag::MASKED_PAN => self.masked_pan = Some(check_str(field::MASKED_PAN, value)?),
            tag::SCAM => self.scam = Some(flag_value(tag, u8_value(tag, value)?)?),
            tag::MERCHANT_REFERENCE => {
                self.merchant_reference = Some(check_str(field::MERCHANT_REFERENCE, value)?);
            }
            tag::TERMINAL_ID => self.terminal_id = Some(check_str(field::TERMINAL_ID, value)?),
            tag::CREATED_UNIX_S => self.created_unix_s = Some(u64_value(tag, value)?),
            tag::NEXT_CURSOR => self.next_cursor = Some(u64_value(tag, value)?),
            tag::MERCHANT => self.merchant = Some(MerchantSettings::decode_value(value)?),
            tag::WEBHOOK_ENDPOINT => {
                self.webhook_endpoint = Some(WebhookEndpoint::decode_value(value)?);
            }
            tag::WEBHOOK_SECRET => self.webhook_secret = Some(WebhookSecret::decode(value)?),
            tag => {
                if !self.details.set(tag, value)? {
                    unexpected(FrameType::Response, tag)?;
                }
            }
        }
        Ok(())
    }

    /// Appends the response as one frame to `dst`, checking every field
    /// against the limits the decoder enforces. Allocates nothing once
    /// `dst` has grown to its working size.
    ///
    /// # Errors
    /// The first field that the decoder would refuse; `dst` is then left
    /// as it was.
    pub fn encode(&self, request_id: u64, dst: &mut BytesMut) -> Result<(), Error> {
        encode_frame(dst, FrameType::Response, request_id, |w| {
            self.encode_body(w)
        })
    }

    fn encode_body(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        let amount = |tag, value: Option<u64>| value.map(|a| check_amount(tag, a, 0)).transpose();
        w.bytes(tag::RESULT_CODE, &self.result_code.bytes())?;
        w.opt_str(field::MESSAGE, self.message)?;
        let payment_id = self
            .payment_id
            .map(|id| check_payment_id(tag::PAYMENT_ID, id))
            .transpose()?;
        w.opt_u64(tag::PAYMENT_ID, payment_id)?;
        w.opt_str(field::AUTH_CODE, self.auth_code)?;
        if let Some(status) = self.status {
            w.u8(tag::STATUS, status.code())?;
        }
        if let Some(currency) = self.currency {
            w.u16(tag::CURRENCY, check_currency(tag::CURRENCY, currency)?)?;
        }
        let authorized = amount(tag::AMOUNT_AUTHORIZED_MINOR, self.amount_authorized_minor)?;
        w.opt_u64(tag::AMOUNT_AUTHORIZED_MINOR, authorized)?;
        let captured = amount(tag::AMOUNT_CAPTURED_MINOR, self.amount_captured_minor)?;
        w.opt_u64(tag::AMOUNT_CAPTURED_MINOR, captured)?;
        let refunded = amount(tag::AMOUNT_REFUNDED_MINOR, self.amount_refunded_minor)?;
        w.opt_u64(tag::AMOUNT_REFUNDED_MINOR, refunded)?;
        w.opt_str(field::MASKED_PAN, self.masked_pan)?;
        if let Some(scam) = self.scam {
            w.u8(tag::SCAM, u8::from(scam))?;
        }
        w.opt_str(field::MERCHANT_REFERENCE, self.merchant_reference)?;
        w.opt_str(field::TERMINAL_ID, self.terminal_id)?;
        w.opt_u64(tag::CREATED_UNIX_S, self.created_unix_s)?;
        w.opt_u64(tag::NEXT_CURSOR, self.next_cursor)?;
        self.details.encode(w)?;
        if let Some(m) = &self.merchant {
            m.encode(w)?;
        }
        if let Some(e) = &self.webhook_endpoint {
            e.encode(w)?;
        }
        if let Some(s) = &self.webhook_secret {
            s.encode(w)?;
        }
        self.encode_repeated(w)
    }

    fn encode_repeated(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        if self.history.len() > HISTORY_ENTRIES_MAX {
            return Err(Error::TooManyRepeats {
                tag: tag::HISTORY_ENTRY,
            });
        }
        if self.rows.len() > LIST_ROWS_MAX {
            return Err(Error::TooManyRepeats {
                tag: tag::PAYMENT_ROW,
            });
        }
        if self.mandates.len() > MANDATE_ROWS_MAX {
            return Err(Error::TooManyRepeats {
                tag: tag::MANDATE_ROW,
            });
        }
        if self.terminals.len() > TERMINAL_ROWS_MAX {
            return Err(Error::TooManyRepeats {
                tag: tag::TERMINAL_ROW,
            });
        }
        if self.webhook_events.len() > WEBHOOK_EVENTS_MAX {
            return Err(Error::TooManyRepeats {
                tag: tag::WEBHOOK_EVENT,
            });
        }
        self.webhook_events.iter().try_for_each(|e| e.encode(w))?;
        self.history.iter().try_for_each(|entry| entry.encode(w))?;
        self.rows.iter().try_for_each(|row| row.encode(w))?;
        self.mandates.iter().try_for_each(|row| row.encode(w))?;
        self.terminals.iter().try_for_each(|t| t.encode(w))
    }
}
