//! Requests, client to server: typed zero-copy views parsed from a
//! [`Frame`], and their encoding (for clients and tests).

use bytes::BytesMut;

use super::codes::{PaymentStatus, ResultCode};
use super::error::Error;
use super::field::{
    self, check_amount, check_currency, check_str, count_repeat, encode_frame, fixed, flag_value,
    payment_id_value, required, u16_value, u64_value, u8_value, unexpected, BodyWriter, Field,
    Fields,
};
use super::frame_type::FrameType;
use super::header::Frame;
use super::items::{cart_total_minor, CartLine};
use super::merchant::MerchantChange;
use super::repeated::Repeated;
use super::sensitive::{Cvv2, Expiry, Pan, Secret};
use super::tag;
use super::terminal::{ListTerminals, TerminalChange};
use super::webhook::{self, ListWebhookEvents, WebhookEndpointChange, WebhookStatus};
use super::{CART_LINES_MAX, LIST_ROWS_MAX};

/// A request from an internal client. Every request is answered by one
/// `Response` frame carrying the same request id.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Request<'a> {
    /// Logs the connection in; the merchant of every later request is the
    /// authenticated client's.
    Authenticate(Authenticate<'a>),
    /// One-step MO/TO sale: authorized and captured at once.
    AuthorizeMoto(MotoRequest<'a>),
    /// Two-step MO/TO pre-authorization: places a hold.
    PreauthorizeMoto(MotoRequest<'a>),
    /// Captures a pre-authorization: in full, in part, or by an edited
    /// cart.
    Capture {
        /// The pre-authorization.
        payment_id: u64,
        /// Amount to capture, minor units; absent: the cart lines' total
        /// when they are given, else what is left of the hold. Decoded
        /// with cart lines, it is their total (when both are given they
        /// must agree).
        amount_minor: Option<u64>,
        /// The cart as captured ("capture by an edited cart"), up to
        /// `CART_LINES_MAX` lines: it replaces the payment's cart.
        cart: Repeated<'a, CartLine<'a>>,
        /// Not final (`NOT_FINAL` 1): a partial capture, the rest of the
        /// hold stays open for further captures.
        not_final: bool,
    },
    /// Refunds a captured payment.
    Refund(Refund<'a>),
    /// Cancels (voids) a payment.
    Cancel {
        /// The payment.
        payment_id: u64,
    },
    /// Reads one payment with its activity history.
    GetPayment {
        /// The payment.
        payment_id: u64,
    },
    /// Lists payments, one page at a time.
    ListPayments(ListPayments<'a>),
    /// Flags a payment as a scam.
    MarkScam {
        /// The payment.
        payment_id: u64,
        /// Why, for the back office.
        reason: Option<&'a str>,
    },
    /// Lists the mandates the key's provider holds (no fields).
    ListMandates,
    /// Takes the scam flag off a payment.
    UnmarkScam {
        /// The payment.
        payment_id: u64,
        /// Why, required: kept with the payment.
        reason: &'a str,
    },
    /// Lists the terminals of the key's merchants, one page at a time.
    ListTerminals(ListTerminals<'a>),
    /// Adds a terminal.
    AddTerminal(TerminalChange<'a>),
    /// Changes a terminal's state or settings.
    SetTerminal(TerminalChange<'a>),
    /// Removes a terminal.
    RemoveTerminal(TerminalChange<'a>),
    /// Reads a merchant's settings (only `merchant_id` may be set).
    GetMerchant(MerchantChange<'a>),
    /// Changes a merchant's settings.
    SetMerchant(MerchantChange<'a>),
    /// Lists the webhook events of the key's merchants, newest first.
    ListWebhookEvents(ListWebhookEvents<'a>),
    /// Queues a webhook event again.
    ResendWebhookEvent {
        /// `evt_…`.
        event_id: &'a str,
    },
    /// Reads a merchant's webhook endpoint (only `merchant_id`).
    GetWebhookEndpoint(WebhookEndpointChange<'a>),
    /// Sets (or replaces) a merchant's webhook endpoint; answered with its
    /// new signing secret, once.
    SetWebhookEndpoint(WebhookEndpointChange<'a>),
    /// Removes a merchant's webhook endpoint (only `merchant_id`).
    RemoveWebhookEndpoint(WebhookEndpointChange<'a>),
}

/// `Authenticate` fields: `CLIENT_ID` and `SECRET`, both required.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authenticate<'a> {
    /// `XX-0000-0000`.
    pub client_id: &'a str,
    /// Verified by the server against its stored key, then forgotten.
    pub secret: Secret<'a>,
}

/// `AuthorizeMoto` and `PreauthorizeMoto` fields. `Debug` masks the PAN
/// and CVV2.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MotoRequest<'a> {
    /// Card number, required.
    pub pan: Pan<'a>,
    /// Card expiry, required.
    pub expiry: Expiry,
    /// Card verification value; mail orders may not have one.
    pub cvv2: Option<Cvv2<'a>>,
    /// Cardholder name as given.
    pub cardholder_name: Option<&'a str>,
    /// The merchant's reference for the order, required.
    pub merchant_reference: &'a str,
    /// What was sold.
    pub description: Option<&'a str>,
    /// ISO 4217 numeric, required.
    pub currency: u16,
    /// Amount, minor units, 1..=`AMOUNT_MINOR_MAX`, required.
    pub amount_minor: u64,
    /// Terminal id (ISO 8583 F41), required.
    pub terminal_id: &'a str,
    /// Itemization, up to `CART_LINES_MAX` lines. Not required to add up
    /// to the amount (shipping, taxes).
    pub cart: Repeated<'a, CartLine<'a>>,
}

/// `Refund` fields. On the wire the amount may be left out when cart lines
/// are given; decoded, `amount_minor` is then their total. When both are
/// given they must agree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refund<'a> {
    /// The captured payment.
    pub payment_id: u64,
    /// Amount to refund, minor units, 1..=`AMOUNT_MINOR_MAX`.
    pub amount_minor: u64,
    /// The lines refunded, if refunding by item.
    pub lines: Repeated<'a, CartLine<'a>>,
    /// Why, for the back office.
    pub reason: Option<&'a str>,
}

/// `ListPayments` filters; all optional, combined with "and".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListPayments<'a> {
    /// Only payments in this status.
    pub status: Option<PaymentStatus>,
    /// Created at or after, Unix seconds.
    pub created_from_unix_s: Option<u64>,
    /// Created at or before, Unix seconds; not before `created_from_unix_s`.
    pub created_to_unix_s: Option<u64>,
    /// Amount authorized at least, minor units.
    pub amount_min_minor: Option<u64>,
    /// Amount authorized at most, minor units; not below `amount_min_minor`.
    pub amount_max_minor: Option<u64>,
    /// Only this merchant reference.
    pub merchant_reference: Option<&'a str>,
    /// Only this terminal.
    pub terminal_id: Option<&'a str>,
    /// Where to resume: a previous response's `next_cursor`.
    pub cursor: Option<u64>,
    /// Page size, 1..=`LIST_ROWS_MAX`; absent: the server's default.
    pub limit: Option<u16>,
    /// Only flagged (`true`) or unflagged (`false`) payments.
    pub scam: Option<bool>,
    /// Only this F37 of the authorization (12 bytes).
    pub rrn: Option<&'a str>,
    /// Only this F38 of the authorization (6 letters or digits).
    pub auth_code: Option<&'a str>,
    /// Only cards ending with these four digits.
    pub last4: Option<&'a str>,
    /// Only this channel (F25's value: 0, 8, 59, 99).
    pub channel: Option<u8>,
    /// Only this ECI, 0..=99.
    pub eci: Option<u8>,
    /// Only payments whose authorization was answered with this code.
    pub result_code: Option<ResultCode>,
    /// Only payments in one of these statuses, as their codes (at most
    /// one of each); `status`, if given too, must hold as well.
    pub statuses: Option<&'a [u8]>,
    /// Only payments with at least one webhook event in this delivery
    /// status.
    pub webhook_status: Option<WebhookStatus>,
}

impl ListPayments<'_> {
    /// The statuses of `statuses`, in the order given.
    pub fn statuses(&self) -> impl Iterator<Item = PaymentStatus> + '_ {
        self.statuses
            .unwrap_or_default()
            .iter()
            .filter_map(|&c| PaymentStatus::from_code(tag::FILTER_STATUSES, c).ok())
    }
}

impl<'a> Request<'a> {
    /// Parses the body of a request frame. Allocates nothing; strings and
    /// card data borrow from the frame.
    ///
    /// # Errors
    /// [`Error::UnknownFrameType`], [`Error::WrongDirection`] for a
    /// response frame, or the first field error found. All mean result
    /// code `30`.
    pub fn parse(frame: &Frame<'a>) -> Result<Request<'a>, Error> {
        let frame_type = frame.frame_type()?;
        let body = frame.body();
        Ok(match frame_type {
            FrameType::Authenticate => Request::Authenticate(Authenticate::parse(body)?),
            FrameType::AuthorizeMoto => {
                Request::AuthorizeMoto(MotoRequest::parse(frame_type, body)?)
            }
            FrameType::PreauthorizeMoto => {
                Request::PreauthorizeMoto(MotoRequest::parse(frame_type, body)?)
            }
            FrameType::Refund => Request::Refund(Refund::parse(body)?),
            FrameType::ListPayments => Request::ListPayments(ListPayments::parse(body)?),
            FrameType::Capture => parse_capture(body)?,
            FrameType::Cancel
            | FrameType::GetPayment
            | FrameType::MarkScam
            | FrameType::UnmarkScam => parse_payment_action(frame_type, body)?,
            FrameType::ListMandates => {
                if let Some(Field { tag, .. }) = Fields::new(body).next_field()? {
                    unexpected(frame_type, tag)?;
                }
                Request::ListMandates
            }
            FrameType::ListTerminals => Request::ListTerminals(ListTerminals::parse(body)?),
            FrameType::AddTerminal => {
                Request::AddTerminal(TerminalChange::parse(frame_type, body)?)
            }
            FrameType::SetTerminal => {
                Request::SetTerminal(TerminalChange::parse(frame_type, body)?)
            }
            FrameType::RemoveTerminal => {
                Request::RemoveTerminal(TerminalChange::parse(frame_type, body)?)
            }
            FrameType::GetMerchant => {
                Request::GetMerchant(MerchantChange::parse(frame_type, body)?)
            }
            FrameType::SetMerchant => {
                Request::SetMerchant(MerchantChange::parse(frame_type, body)?)
            }
            FrameType::ListWebhookEvents => {
                Request::ListWebhookEvents(ListWebhookEvents::parse(body)?)
            }
            FrameType::ResendWebhookEvent => Request::ResendWebhookEvent {
                event_id: webhook::parse_resend(body)?,
            },
            FrameType::GetWebhookEndpoint => {
                Request::GetWebhookEndpoint(WebhookEndpointChange::parse(frame_type, body)?)
            }
            FrameType::SetWebhookEndpoint => {
                Request::SetWebhookEndpoint(WebhookEndpointChange::parse(frame_type, body)?)
            }
            FrameType::RemoveWebhookEndpoint => {
                Request::RemoveWebhookEndpoint(WebhookEndpointChange::parse(frame_type, body)?)
            }
            FrameType::Response => return Err(Error::WrongDirection { found: frame_type }),
        })
    }

    /// The frame type this request travels in.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Request::Authenticate(_) => FrameType::Authenticate,
            Request::AuthorizeMoto(_) => FrameType::AuthorizeMoto,
            Request::PreauthorizeMoto(_) => FrameType::PreauthorizeMoto,
            Request::Capture { .. } => FrameType::Capture,
            Request::Refund(_) => FrameType::Refund,
            Request::Cancel { .. } => FrameType::Cancel,
            Request::GetPayment { .. } => FrameType::GetPayment,
            Request::ListPayments(_) => FrameType::ListPayments,
            Request::MarkScam { .. } => FrameType::MarkScam,
            Request::UnmarkScam { .. } => FrameType::UnmarkScam,
            Request::ListMandates => FrameType::ListMandates,
            Request::ListTerminals(_) => FrameType::ListTerminals,
            Request::AddTerminal(_) => FrameType::AddTerminal,
            Request::SetTerminal(_) => FrameType::SetTerminal,
            Request::RemoveTerminal(_) => FrameType::RemoveTerminal,
            Request::GetMerchant(_) => FrameType::GetMerchant,
            Request::SetMerchant(_) => FrameType::SetMerchant,
            Request::ListWebhookEvents(_) => FrameType::ListWebhookEvents,
            Request::ResendWebhookEvent { .. } => FrameType::ResendWebhookEvent,
            Request::GetWebhookEndpoint(_) => FrameType::GetWebhookEndpoint,
            Request::SetWebhookEndpoint(_) => FrameType::SetWebhookEndpoint,
            Request::RemoveWebhookEndpoint(_) => FrameType::RemoveWebhookEndpoint,
        }
    }

    /// Appends the request as one frame to `dst`, checking every field
    /// against the limits the decoder enforces.
    ///
    /// # Errors
    /// The first field that the decoder would refuse; `dst` is then left
    /// as it was.
    pub fn encode(&self, request_id: u64, dst: &mut BytesMut) -> Result<(), Error> {
        encode_frame(dst, self.frame_type(), request_id, |w| match self {
            Request::Authenticate(a) => a.encode(w),
            Request::AuthorizeMoto(m) | Request::PreauthorizeMoto(m) => m.encode(w),
            Request::Refund(r) => r.encode(w),
            Request::ListPayments(l) => l.encode(w),
            Request::ListTerminals(l) => l.encode(w),
            Request::AddTerminal(t) | Request::SetTerminal(t) | Request::RemoveTerminal(t) => {
                t.encode(w)
            }
            Request::GetMerchant(m) | Request::SetMerchant(m) => m.encode(self.frame_type(), w),
            Request::ListWebhookEvents(l) => l.encode(w),
            Request::ResendWebhookEvent { event_id } => w.str(webhook::EVENT_ID, event_id),
            Request::GetWebhookEndpoint(c)
            | Request::SetWebhookEndpoint(c)
            | Request::RemoveWebhookEndpoint(c) => c.encode(self.frame_type(), w),
            Request::Capture {
                payment_id,
                amount_minor,
                cart,
                not_final,
            } => {
                w.u64(
                    tag::PAYMENT_ID,
                    field::check_payment_id(tag::PAYMENT_ID, *payment_id)?,
                )?;
                let amount = lines_amount(*amount_minor, cart)?;
                w.opt_u64(tag::AMOUNT_MINOR, amount)?;
                encode_cart(w, cart)?;
                if *not_final {
                    w.u8(tag::NOT_FINAL, 1)?;
                }
                Ok(())
            }
            Request::Cancel { payment_id } | Request::GetPayment { payment_id } => w.u64(
                tag::PAYMENT_ID,
                field::check_payment_id(tag::PAYMENT_ID, *payment_id)?,
            ),
            Request::MarkScam { payment_id, reason } => {
                w.u64(
                    tag::PAYMENT_ID,
                    field::check_payment_id(tag::PAYMENT_ID, *payment_id)?,
                )?;
                w.opt_str(field::DESCRIPTION, *reason)
            }
            Request::ListMandates => Ok(()),
            Request::UnmarkScam { payment_id, reason } => {
                w.u64(
                    tag::PAYMENT_ID,
                    field::check_payment_id(tag::PAYMENT_ID, *payment_id)?,
                )?;
                w.str(field::DESCRIPTION, reason)
            }
        })
    }
}

/// `Capture`: a payment id, an amount, cart lines and the not-final flag,
/// each optional but the id.
fn parse_capture(body: &[u8]) -> Result<Request<'_>, Error> {
    let (mut payment_id, mut amount_minor, mut not_final, mut lines) = (None, None, false, 0);
    let mut fields = Fields::new(body);
    while let Some(Field { tag, value }) = fields.next_field()? {
        match tag {
            tag::PAYMENT_ID => payment_id = Some(payment_id_value(tag, value)?),
            tag::AMOUNT_MINOR => {
                amount_minor = Some(check_amount(tag, u64_value(tag, value)?, 1)?);
            }
            tag::CART_LINE => {
                CartLine::decode_value(value)?;
                count_repeat(tag, &mut lines, CART_LINES_MAX)?;
            }
            tag::NOT_FINAL => {
                not_final = match u8_value(tag, value)? {
                    0 => false,
                    1 => true,
                    _ => return Err(Error::OutOfRange { tag }),
                }
            }
            tag => unexpected(FrameType::Capture, tag)?,
        }
    }
    let cart = Repeated::from_wire(body, lines);
    Ok(Request::Capture {
        payment_id: required(tag::PAYMENT_ID, payment_id)?,
        amount_minor: lines_amount(amount_minor, &cart)?,
        cart,
        not_final,
    })
}

/// A capture's amount: given, or the cart lines' total; when both, they
/// agree; neither, absent.
fn lines_amount(
    amount_minor: Option<u64>,
    lines: &Repeated<'_, CartLine<'_>>,
) -> Result<Option<u64>, Error> {
    if lines.is_empty() {
        return amount_minor
            .map(|a| check_amount(tag::AMOUNT_MINOR, a, 1))
            .transpose();
    }
    refund_amount(amount_minor, lines).map(Some)
}

/// `Cancel`, `GetPayment`, `MarkScam`, `UnmarkScam`: a payment id and at
/// most one more field.
fn parse_payment_action(frame_type: FrameType, body: &[u8]) -> Result<Request<'_>, Error> {
    let (mut payment_id, mut reason) = (None, None);
    let mut fields = Fields::new(body);
    while let Some(Field { tag, value }) = fields.next_field()? {
        match (frame_type, tag) {
            (_, tag::PAYMENT_ID) => payment_id = Some(payment_id_value(tag, value)?),
            (FrameType::MarkScam | FrameType::UnmarkScam, tag::DESCRIPTION) => {
                reason = Some(check_str(field::DESCRIPTION, value)?)
            }
            (_, tag) => unexpected(frame_type, tag)?,
        }
    }
    let payment_id = required(tag::PAYMENT_ID, payment_id)?;
    Ok(match frame_type {
        FrameType::Cancel => Request::Cancel { payment_id },
        FrameType::GetPayment => Request::GetPayment { payment_id },
        FrameType::MarkScam => Request::MarkScam { payment_id, reason },
        FrameType::UnmarkScam => Request::UnmarkScam {
            payment_id,
            reason: required(tag::DESCRIPTION, reason)?,
        },
        found => return Err(Error::WrongDirection { found }),
    })
}

impl<'a> Authenticate<'a> {
    fn parse(body: &'a [u8]) -> Result<Authenticate<'a>, Error> {
        let (mut client_id, mut secret) = (None, None);
        let mut fields = Fields::new(body);
        while let Some(Field { tag, value }) = fields.next_field()? {
            match tag {
                tag::CLIENT_ID => client_id = Some(check_str(field::CLIENT_ID, value)?),
                tag::SECRET => secret = Some(Secret::new(value)?),
                tag => unexpected(FrameType::Authenticate, tag)?,
            }
        }
        Ok(Authenticate {
            client_id: required(tag::CLIENT_ID, client_id)?,
            secret: required(tag::SECRET, secret)?,
        })
    }

    fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        w.str(field::CLIENT_ID, self.client_id)?;
        w.bytes(tag::SECRET, Secret::new(self.secret.expose())?.expose())
    }
}

/// `MotoRequest` fields as they arrive, before the required ones are
/// checked.
#[derive(Default)]
struct MotoFields<'a> {
    pan: Option<Pan<'a>>,
    expiry: Option<Expiry>,
    cvv2: Option<Cvv2<'a>>,
    cardholder_name: Option<&'a str>,
    merchant_reference: Option<&'a str>,
    description: Option<&'a str>,
    currency: Option<u16>,
    amount_minor: Option<u64>,
    terminal_id: Option<&'a str>,
    cart_lines: usize,
}

impl<'a> MotoFields<'a> {
    fn set(&mut self, frame_type: FrameType, tag: u8, value: &'a [u8]) -> Result<(), Error> {
        match tag {
            tag::PAN => self.pan = Some(Pan::decode(value)?),
            tag::EXPIRY => self.expiry = Some(Expiry::decode(value)?),
            tag::CVV2 => self.cvv2 = Some(Cvv2::decode(value)?),
            tag::CARDHOLDER_NAME => {
                self.cardholder_name = Some(check_str(field::CARDHOLDER_NAME, value)?)
            }
            tag::MERCHANT_REFERENCE => {
                self.merchant_reference = Some(check_str(field::MERCHANT_REFERENCE, value)?);
            }
            tag::DESCRIPTION => self.description = Some(check_str(field::DESCRIPTION, value)?),
            tag::CURRENCY => self.currency = Some(check_currency(tag, u16_value(tag, value)?)?),
            tag::AMOUNT_MINOR => {
                self.amount_minor = Some(check_amount(tag, u64_value(tag, value)?, 1)?)
            }
            tag::TERMINAL_ID => self.terminal_id = Some(check_str(field::TERMINAL_ID, value)?),
            tag::CART_LINE => {
                CartLine::decode_value(value)?;
                count_repeat(tag, &mut self.cart_lines, CART_LINES_MAX)?;
            }
            tag => unexpected(frame_type, tag)?,
        }
        Ok(())
    }
}

impl<'a> MotoRequest<'a> {
    fn parse(frame_type: FrameType, body: &'a [u8]) -> Result<MotoRequest<'a>, Error> {
        let mut f = MotoFields::default();
        let mut fields = Fields::new(body);
        while let Some(Field { tag, value }) = fields.next_field()? {
            f.set(frame_type, tag, value)?;
        }
        Ok(MotoRequest {
            pan: required(tag::PAN, f.pan)?,
            expiry: required(tag::EXPIRY, f.expiry)?,
            cvv2: f.cvv2,
            cardholder_name: f.cardholder_name,
            merchant_reference: required(tag::MERCHANT_REFERENCE, f.merchant_reference)?,
            description: f.description,
            currency: required(tag::CURRENCY, f.currency)?,
            amount_minor: required(tag::AMOUNT_MINOR, f.amount_minor)?,
            terminal_id: required(tag::TERMINAL_ID, f.terminal_id)?,
            cart: Repeated::from_wire(body, f.cart_lines),
        })
    }

    fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        w.str(field::PAN, self.pan.expose())?;
        w.bytes(tag::EXPIRY, &self.expiry.encode())?;
        w.opt_str(field::CVV2, self.cvv2.map(|c| c.expose()))?;
        w.opt_str(field::CARDHOLDER_NAME, self.cardholder_name)?;
        w.str(field::MERCHANT_REFERENCE, self.merchant_reference)?;
        w.opt_str(field::DESCRIPTION, self.description)?;
        w.u16(tag::CURRENCY, check_currency(tag::CURRENCY, self.currency)?)?;
        w.u64(
            tag::AMOUNT_MINOR,
            check_amount(tag::AMOUNT_MINOR, self.amount_minor, 1)?,
        )?;
        w.str(field::TERMINAL_ID, self.terminal_id)?;
        encode_cart(w, &self.cart)
    }
}

/// Writes cart lines, at most [`CART_LINES_MAX`].
fn encode_cart(w: &mut BodyWriter<'_>, cart: &Repeated<'_, CartLine<'_>>) -> Result<(), Error> {
    if cart.len() > CART_LINES_MAX {
        return Err(Error::TooManyRepeats {
            tag: tag::CART_LINE,
        });
    }
    cart.iter().try_for_each(|line| line.encode(w))
}

impl<'a> Refund<'a> {
    fn parse(body: &'a [u8]) -> Result<Refund<'a>, Error> {
        let (mut payment_id, mut amount_minor, mut reason, mut lines) = (None, None, None, 0);
        let mut fields = Fields::new(body);
        while let Some(Field { tag, value }) = fields.next_field()? {
            match tag {
                tag::PAYMENT_ID => payment_id = Some(payment_id_value(tag, value)?),
                tag::AMOUNT_MINOR => {
                    amount_minor = Some(check_amount(tag, u64_value(tag, value)?, 1)?)
                }
                tag::DESCRIPTION => reason = Some(check_str(field::DESCRIPTION, value)?),
                tag::CART_LINE => {
                    CartLine::decode_value(value)?;
                    count_repeat(tag, &mut lines, CART_LINES_MAX)?;
                }
                tag => unexpected(FrameType::Refund, tag)?,
            }
        }
        let lines = Repeated::from_wire(body, lines);
        let amount_minor = refund_amount(amount_minor, &lines)?;
        Ok(Refund {
            payment_id: required(tag::PAYMENT_ID, payment_id)?,
            amount_minor,
            lines,
            reason,
        })
    }

    fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        w.u64(
            tag::PAYMENT_ID,
            field::check_payment_id(tag::PAYMENT_ID, self.payment_id)?,
        )?;
        w.u64(
            tag::AMOUNT_MINOR,
            refund_amount(Some(self.amount_minor), &self.lines)?,
        )?;
        encode_cart(w, &self.lines)?;
        w.opt_str(field::DESCRIPTION, self.reason)
    }
}

/// The refund amount: given, or the lines' total; when both, they agree.
fn refund_amount(
    amount_minor: Option<u64>,
    lines: &Repeated<'_, CartLine<'_>>,
) -> Result<u64, Error> {
    if let Some(amount) = amount_minor {
        check_amount(tag::AMOUNT_MINOR, amount, 1)?;
    }
    if lines.is_empty() {
        return required(tag::AMOUNT_MINOR, amount_minor);
    }
    let total = cart_total_minor(lines.iter())?;
    match amount_minor {
        Some(amount) if amount != total => Err(Error::Inconsistent {
            tag: tag::CART_LINE,
        }),
        _ => check_amount(tag::CART_LINE, total, 1),
    }
}

impl<'a> ListPayments<'a> {
    fn parse(body: &'a [u8]) -> Result<ListPayments<'a>, Error> {
        let mut l = ListPayments::default();
        let mut fields = Fields::new(body);
        while let Some(Field { tag, value }) = fields.next_field()? {
            match tag {
                tag::STATUS => {
                    l.status = Some(PaymentStatus::from_code(tag, u8_value(tag, value)?)?)
                }
                tag::CREATED_FROM_UNIX_S => l.created_from_unix_s = Some(u64_value(tag, value)?),
                tag::CREATED_TO_UNIX_S => l.created_to_unix_s = Some(u64_value(tag, value)?),
                tag::AMOUNT_MIN_MINOR => l.amount_min_minor = Some(u64_value(tag, value)?),
                tag::AMOUNT_MAX_MINOR => l.amount_max_minor = Some(u64_value(tag, value)?),
                tag::MERCHANT_REFERENCE => {
                    l.merchant_reference = Some(check_str(field::MERCHANT_REFERENCE, value)?);
                }
                tag::TERMINAL_ID => l.terminal_id = Some(check_str(field::TERMINAL_ID, value)?),
                tag::CURSOR => l.cursor = Some(u64_value(tag, value)?),
                tag::LIMIT => l.limit = Some(u16_value(tag, value)?),
                tag => l.set_back_office(tag, value)?,
            }
        }
        l.check()?;
        Ok(l)
    }

    /// The back office's filters (tags `0x37..=0x3E`).
    fn set_back_office(&mut self, tag: u8, value: &'a [u8]) -> Result<(), Error> {
        match tag {
            tag::FILTER_SCAM => self.scam = Some(flag_value(tag, u8_value(tag, value)?)?),
            tag::FILTER_RRN => self.rrn = Some(check_str(field::FILTER_RRN, value)?),
            tag::FILTER_AUTH_CODE => {
                self.auth_code = Some(check_str(field::FILTER_AUTH_CODE, value)?)
            }
            tag::FILTER_LAST4 => self.last4 = Some(check_str(field::FILTER_LAST4, value)?),
            tag::FILTER_CHANNEL => self.channel = Some(field::channel_value(tag, value)?),
            tag::FILTER_ECI => self.eci = Some(field::eci_value(tag, value)?),
            tag::FILTER_RESULT_CODE => {
                self.result_code = Some(ResultCode::new(fixed(tag, value)?)?)
            }
            tag::FILTER_STATUSES => self.statuses = Some(value),
            tag::WEBHOOK_STATUS => {
                self.webhook_status = Some(WebhookStatus::from_code(tag, u8_value(tag, value)?)?);
            }
            tag => unexpected(FrameType::ListPayments, tag)?,
        }
        Ok(())
    }

    /// The statuses filter: 1..=8 known codes, none twice.
    fn check_statuses(&self) -> Result<(), Error> {
        let Some(codes) = self.statuses else {
            return Ok(());
        };
        let t = tag::FILTER_STATUSES;
        if codes.is_empty() || codes.len() > PaymentStatus::ALL.len() {
            return Err(field::length_error(t, codes.len()));
        }
        let mut seen = 0u16;
        for &c in codes {
            PaymentStatus::from_code(t, c)?;
            if seen & (1 << c) != 0 {
                return Err(Error::Inconsistent { tag: t });
            }
            seen |= 1 << c;
        }
        Ok(())
    }

    /// Ranges and the page size.
    fn check(&self) -> Result<(), Error> {
        self.check_statuses()?;
        for (tag, amount) in [
            (tag::AMOUNT_MIN_MINOR, self.amount_min_minor),
            (tag::AMOUNT_MAX_MINOR, self.amount_max_minor),
        ] {
            amount.map(|a| check_amount(tag, a, 0)).transpose()?;
        }
        if let (Some(from), Some(to)) = (self.created_from_unix_s, self.created_to_unix_s) {
            if from > to {
                return Err(Error::Inconsistent {
                    tag: tag::CREATED_TO_UNIX_S,
                });
            }
        }
        if let (Some(min), Some(max)) = (self.amount_min_minor, self.amount_max_minor) {
            if min > max {
                return Err(Error::Inconsistent {
                    tag: tag::AMOUNT_MAX_MINOR,
                });
            }
        }
        match self.limit {
            Some(limit) if limit == 0 || usize::from(limit) > LIST_ROWS_MAX => {
                Err(Error::OutOfRange { tag: tag::LIMIT })
            }
            _ => Ok(()),
        }
    }

    fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        self.check()?;
        if let Some(status) = self.status {
            w.u8(tag::STATUS, status.code())?;
        }
        w.opt_u64(tag::CREATED_FROM_UNIX_S, self.created_from_unix_s)?;
        w.opt_u64(tag::CREATED_TO_UNIX_S, self.created_to_unix_s)?;
        w.opt_u64(tag::AMOUNT_MIN_MINOR, self.amount_min_minor)?;
        w.opt_u64(tag::AMOUNT_MAX_MINOR, self.amount_max_minor)?;
        w.opt_str(field::MERCHANT_REFERENCE, self.merchant_reference)?;
        w.opt_str(field::TERMINAL_ID, self.terminal_id)?;
        w.opt_u64(tag::CURSOR, self.cursor)?;
        if let Some(limit) = self.limit {
            w.u16(tag::LIMIT, limit)?;
        }
        if let Some(scam) = self.scam {
            w.u8(tag::FILTER_SCAM, u8::from(scam))?;
        }
        w.opt_str(field::FILTER_RRN, self.rrn)?;
        w.opt_str(field::FILTER_AUTH_CODE, self.auth_code)?;
        w.opt_str(field::FILTER_LAST4, self.last4)?;
        if let Some(channel) = self.channel {
            w.u8(tag::FILTER_CHANNEL, channel)?;
        }
        if let Some(eci) = self.eci {
            w.u8(tag::FILTER_ECI, eci)?;
        }
        if let Some(code) = self.result_code {
            w.bytes(tag::FILTER_RESULT_CODE, &code.bytes())?;
        }
        if let Some(codes) = self.statuses {
            w.bytes(tag::FILTER_STATUSES, codes)?;
        }
        if let Some(status) = self.webhook_status {
            w.u8(tag::WEBHOOK_STATUS, status.code())?;
        }
        Ok(())
    }
}
