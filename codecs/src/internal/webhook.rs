//! Webhooks over internal frames (frame types `0x11`-`0x13`, `0x15`,
//! `0x16`, tags `0x71`-`0x76`): a merchant's events and their delivery
//! status, resending one, and its endpoint (read, set, remove). The server
//! scopes every request to the merchants the API key acts for.

use std::fmt;

use super::error::Error;
use super::field::{
    self, check_str, payment_id_value, required, u16_value, u64_value, u8_value, unexpected,
    BodyWriter, Charset, Field, Fields, StrSpec,
};
use super::frame_type::FrameType;
use super::repeated::RepeatedItem;
use super::tag;
use super::terminal::MERCHANT_ID;
use super::WEBHOOK_EVENTS_MAX;

/// Longest endpoint URL: the switch's limit (`switch webhooks set`).
pub const WEBHOOK_URL_BYTES_MAX: usize = 2_048;
/// Longest event id (`evt_` and 16 digits today).
pub const WEBHOOK_EVENT_ID_BYTES_MAX: usize = 32;
/// Longest signing secret on the wire (`whsec_` and 43 characters today).
pub const WEBHOOK_SECRET_BYTES_MAX: usize = 128;
/// Longest masked secret in an endpoint composite.
pub(crate) const MASKED_SECRET_BYTES_MAX: usize = 32;
/// Longest event type inside a row (`payment.flagged_scam` is 20).
pub(crate) const EVENT_TYPE_BYTES_MAX: usize = 32;

/// An event id in a request.
pub(crate) const EVENT_ID: StrSpec = field::spec(
    tag::WEBHOOK_EVENT_ID,
    1,
    WEBHOOK_EVENT_ID_BYTES_MAX,
    Charset::Printable,
);
/// An endpoint URL in a request.
const URL: StrSpec = field::spec(
    tag::WEBHOOK_URL,
    1,
    WEBHOOK_URL_BYTES_MAX,
    Charset::Printable,
);
/// A new signing secret in a response.
const SECRET: StrSpec = field::spec(
    tag::WEBHOOK_SECRET,
    16,
    WEBHOOK_SECRET_BYTES_MAX,
    Charset::Printable,
);
const ROW_MERCHANT_ID: StrSpec = field::spec(tag::WEBHOOK_EVENT, 15, 15, Charset::Printable);
const ROW_EVENT_ID: StrSpec = field::spec(
    tag::WEBHOOK_EVENT,
    1,
    WEBHOOK_EVENT_ID_BYTES_MAX,
    Charset::Printable,
);
const ROW_TYPE: StrSpec = field::spec(
    tag::WEBHOOK_EVENT,
    1,
    EVENT_TYPE_BYTES_MAX,
    Charset::Printable,
);
const ENDPOINT_MASKED: StrSpec = field::spec(
    tag::WEBHOOK_ENDPOINT,
    1,
    MASKED_SECRET_BYTES_MAX,
    Charset::Text,
);
const ENDPOINT_URL: StrSpec = field::spec(
    tag::WEBHOOK_ENDPOINT,
    1,
    WEBHOOK_URL_BYTES_MAX,
    Charset::Printable,
);

/// Where an event's delivery is: on the wire `0` pending, `1` delivered,
/// `2` failed (given up after 3 days).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebhookStatus {
    /// Not delivered yet; retried.
    Pending,
    /// Answered 2xx.
    Delivered,
    /// Given up on.
    Failed,
}

impl WebhookStatus {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            WebhookStatus::Pending => 0,
            WebhookStatus::Delivered => 1,
            WebhookStatus::Failed => 2,
        }
    }

    /// The status for a code.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for `tag`.
    pub fn from_code(tag: u8, code: u8) -> Result<WebhookStatus, Error> {
        Ok(match code {
            0 => WebhookStatus::Pending,
            1 => WebhookStatus::Delivered,
            2 => WebhookStatus::Failed,
            _ => return Err(Error::OutOfRange { tag }),
        })
    }

    /// `pending`, `delivered` or `failed`.
    pub fn label(self) -> &'static str {
        match self {
            WebhookStatus::Pending => "pending",
            WebhookStatus::Delivered => "delivered",
            WebhookStatus::Failed => "failed",
        }
    }

    /// The status named `label`.
    pub fn from_label(label: &str) -> Option<WebhookStatus> {
        match label {
            "pending" => Some(WebhookStatus::Pending),
            "delivered" => Some(WebhookStatus::Delivered),
            "failed" => Some(WebhookStatus::Failed),
            _ => None,
        }
    }
}

/// One event with its delivery status: `payment_id u64, merchant_id
/// [u8; 15], status u8, attempts u32, last_status_code u16 (0: none),
/// last_attempt_unix_s u64 (0: none), next_attempt_unix_s u64 (0: none),
/// id_length u8` (47 bytes), then the event id, then its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookEventRow<'a> {
    /// The payment it tells of.
    pub payment_id: u64,
    /// Its merchant's F42.
    pub merchant_id: &'a str,
    /// Where its delivery is.
    pub status: WebhookStatus,
    /// Posts tried so far.
    pub attempts: u32,
    /// The HTTP status of the last attempt (none: no answer or none yet).
    pub last_status_code: Option<u16>,
    /// When it was last tried, Unix seconds.
    pub last_attempt_unix_s: Option<u64>,
    /// When it is tried next (pending), Unix seconds.
    pub next_attempt_unix_s: Option<u64>,
    /// `evt_…`, stable across retries.
    pub id: &'a str,
    /// `payment.captured`...
    pub kind: &'a str,
}

/// Bytes of an event row before its id.
pub(crate) const WEBHOOK_EVENT_ROW_FIXED_BYTES: usize = 8 + 15 + 1 + 4 + 2 + 8 + 8 + 1;

impl<'a> WebhookEventRow<'a> {
    pub(crate) fn decode_value(value: &'a [u8]) -> Result<WebhookEventRow<'a>, Error> {
        const T: u8 = tag::WEBHOOK_EVENT;
        if value.len() < WEBHOOK_EVENT_ROW_FIXED_BYTES {
            return Err(field::length_error(T, value.len()));
        }
        let (fixed_part, rest) = value.split_at(WEBHOOK_EVENT_ROW_FIXED_BYTES);
        let (payment_id, f) = fixed_part.split_at(8);
        let (mid, f) = f.split_at(15);
        let (status, f) = f.split_at(1);
        let (attempts, f) = f.split_at(4);
        let (code, f) = f.split_at(2);
        let (last, f) = f.split_at(8);
        let (next, id_len) = f.split_at(8);
        let id_len = usize::from(u8_value(T, id_len)?);
        if rest.len() <= id_len {
            return Err(field::length_error(T, value.len()));
        }
        let (id, kind) = rest.split_at(id_len);
        let nonzero = |v: u64| (v != 0).then_some(v);
        Ok(WebhookEventRow {
            payment_id: payment_id_value(T, payment_id)?,
            merchant_id: check_str(ROW_MERCHANT_ID, mid)?,
            status: WebhookStatus::from_code(T, u8_value(T, status)?)?,
            attempts: u32::from_be_bytes(field::fixed(T, attempts)?),
            last_status_code: Some(u16_value(T, code)?).filter(|&c| c != 0),
            last_attempt_unix_s: nonzero(u64_value(T, last)?),
            next_attempt_unix_s: nonzero(u64_value(T, next)?),
            id: check_str(ROW_EVENT_ID, id)?,
            kind: check_str(ROW_TYPE, kind)?,
        })
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        const T: u8 = tag::WEBHOOK_EVENT;
        field::check_payment_id(T, self.payment_id)?;
        check_str(ROW_MERCHANT_ID, self.merchant_id.as_bytes())?;
        check_str(ROW_EVENT_ID, self.id.as_bytes())?;
        check_str(ROW_TYPE, self.kind.as_bytes())?;
        let id_len = u8::try_from(self.id.len()).map_err(|_| field::length_error(T, 0))?;
        let length = WEBHOOK_EVENT_ROW_FIXED_BYTES + self.id.len() + self.kind.len();
        let dst = w.begin(T, length)?;
        dst.extend_from_slice(&self.payment_id.to_be_bytes());
        dst.extend_from_slice(self.merchant_id.as_bytes());
        dst.extend_from_slice(&[self.status.code()]);
        dst.extend_from_slice(&self.attempts.to_be_bytes());
        dst.extend_from_slice(&self.last_status_code.unwrap_or(0).to_be_bytes());
        dst.extend_from_slice(&self.last_attempt_unix_s.unwrap_or(0).to_be_bytes());
        dst.extend_from_slice(&self.next_attempt_unix_s.unwrap_or(0).to_be_bytes());
        dst.extend_from_slice(&[id_len]);
        dst.extend_from_slice(self.id.as_bytes());
        dst.extend_from_slice(self.kind.as_bytes());
        Ok(())
    }
}

impl<'a> RepeatedItem<'a> for WebhookEventRow<'a> {
    const TAG: u8 = tag::WEBHOOK_EVENT;

    fn decode(value: &'a [u8]) -> Result<WebhookEventRow<'a>, Error> {
        WebhookEventRow::decode_value(value)
    }
}

/// A merchant's endpoint in a response (one per response):
/// `created_unix_s u64, masked_length u8` (9 bytes), then the secret
/// masked (`whsec_…` and its last 4 characters), then the URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint<'a> {
    /// When it was set, Unix seconds.
    pub created_unix_s: u64,
    /// The signing secret, masked.
    pub secret_masked: &'a str,
    /// Where events are posted.
    pub url: &'a str,
}

/// Bytes of an endpoint composite before the masked secret.
pub(crate) const WEBHOOK_ENDPOINT_FIXED_BYTES: usize = 9;

impl<'a> WebhookEndpoint<'a> {
    pub(crate) fn decode_value(value: &'a [u8]) -> Result<WebhookEndpoint<'a>, Error> {
        const T: u8 = tag::WEBHOOK_ENDPOINT;
        if value.len() < WEBHOOK_ENDPOINT_FIXED_BYTES {
            return Err(field::length_error(T, value.len()));
        }
        let (created, rest) = value.split_at(8);
        let (masked_len, rest) = rest.split_at(1);
        let masked_len = usize::from(u8_value(T, masked_len)?);
        if rest.len() <= masked_len {
            return Err(field::length_error(T, value.len()));
        }
        let (masked, url) = rest.split_at(masked_len);
        Ok(WebhookEndpoint {
            created_unix_s: u64_value(T, created)?,
            secret_masked: check_str(ENDPOINT_MASKED, masked)?,
            url: check_str(ENDPOINT_URL, url)?,
        })
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        const T: u8 = tag::WEBHOOK_ENDPOINT;
        check_str(ENDPOINT_MASKED, self.secret_masked.as_bytes())?;
        check_str(ENDPOINT_URL, self.url.as_bytes())?;
        let masked_len =
            u8::try_from(self.secret_masked.len()).map_err(|_| field::length_error(T, 0))?;
        let length = WEBHOOK_ENDPOINT_FIXED_BYTES + self.secret_masked.len() + self.url.len();
        let dst = w.begin(T, length)?;
        dst.extend_from_slice(&self.created_unix_s.to_be_bytes());
        dst.extend_from_slice(&[masked_len]);
        dst.extend_from_slice(self.secret_masked.as_bytes());
        dst.extend_from_slice(self.url.as_bytes());
        Ok(())
    }
}

/// A new signing secret, answered once by `SetWebhookEndpoint`. `Debug`
/// prints `***`; the clear value only through `expose`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WebhookSecret<'a>(&'a str);

impl<'a> WebhookSecret<'a> {
    /// Checks the length and characters.
    ///
    /// # Errors
    /// [`Error::FieldLength`] or [`Error::BadCharacter`] for tag
    /// `WEBHOOK_SECRET`.
    pub fn new(secret: &'a str) -> Result<WebhookSecret<'a>, Error> {
        check_str(SECRET, secret.as_bytes()).map(WebhookSecret)
    }

    pub(crate) fn decode(value: &'a [u8]) -> Result<WebhookSecret<'a>, Error> {
        check_str(SECRET, value).map(WebhookSecret)
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        w.str(SECRET, self.0)
    }

    /// The secret, to show its owner once.
    pub fn expose(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for WebhookSecret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

/// `ListWebhookEvents` fields, all optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListWebhookEvents<'a> {
    /// Only this merchant's (one the key acts for).
    pub merchant_id: Option<&'a str>,
    /// Only this payment's.
    pub payment_id: Option<u64>,
    /// Only events in this status.
    pub status: Option<WebhookStatus>,
    /// Where to resume: a previous response's `next_cursor`.
    pub cursor: Option<u64>,
    /// Page size, 1..=`WEBHOOK_EVENTS_MAX`; absent: the server's default.
    pub limit: Option<u16>,
}

impl<'a> ListWebhookEvents<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<ListWebhookEvents<'a>, Error> {
        let mut l = ListWebhookEvents::default();
        let mut fields = Fields::new(body);
        while let Some(Field { tag, value }) = fields.next_field()? {
            match tag {
                tag::MERCHANT_ID => l.merchant_id = Some(check_str(MERCHANT_ID, value)?),
                tag::PAYMENT_ID => l.payment_id = Some(payment_id_value(tag, value)?),
                tag::WEBHOOK_STATUS => {
                    l.status = Some(WebhookStatus::from_code(tag, u8_value(tag, value)?)?);
                }
                tag::CURSOR => l.cursor = Some(u64_value(tag, value)?),
                tag::LIMIT => l.limit = Some(u16_value(tag, value)?),
                tag => unexpected(FrameType::ListWebhookEvents, tag)?,
            }
        }
        l.check()?;
        Ok(l)
    }

    fn check(&self) -> Result<(), Error> {
        if let Some(id) = self.payment_id {
            field::check_payment_id(tag::PAYMENT_ID, id)?;
        }
        match self.limit {
            Some(limit) if limit == 0 || usize::from(limit) > WEBHOOK_EVENTS_MAX => {
                Err(Error::OutOfRange { tag: tag::LIMIT })
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn encode(&self, w: &mut BodyWriter<'_>) -> Result<(), Error> {
        self.check()?;
        w.opt_str(MERCHANT_ID, self.merchant_id)?;
        w.opt_u64(tag::PAYMENT_ID, self.payment_id)?;
        if let Some(status) = self.status {
            w.u8(tag::WEBHOOK_STATUS, status.code())?;
        }
        w.opt_u64(tag::CURSOR, self.cursor)?;
        if let Some(limit) = self.limit {
            w.u16(tag::LIMIT, limit)?;
        }
        Ok(())
    }
}

/// `GetWebhookEndpoint`, `SetWebhookEndpoint` and `RemoveWebhookEndpoint`
/// fields: `merchant_id` names the merchant (absent: the key's only one);
/// `url` is required by `SetWebhookEndpoint` and allowed by it alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookEndpointChange<'a> {
    /// F42: which of the key's merchants.
    pub merchant_id: Option<&'a str>,
    /// The new URL (http or https).
    pub url: Option<&'a str>,
}

impl<'a> WebhookEndpointChange<'a> {
    pub(crate) fn parse(
        frame_type: FrameType,
        body: &'a [u8],
    ) -> Result<WebhookEndpointChange<'a>, Error> {
        let mut c = WebhookEndpointChange::default();
        let mut fields = Fields::new(body);
        while let Some(Field { tag, value }) = fields.next_field()? {
            match (frame_type, tag) {
                (_, tag::MERCHANT_ID) => c.merchant_id = Some(check_str(MERCHANT_ID, value)?),
                (FrameType::SetWebhookEndpoint, tag::WEBHOOK_URL) => {
                    c.url = Some(check_str(URL, value)?);
                }
                (_, tag) => unexpected(frame_type, tag)?,
            }
        }
        if frame_type == FrameType::SetWebhookEndpoint {
            required(tag::WEBHOOK_URL, c.url)?;
        }
        Ok(c)
    }

    pub(crate) fn encode(
        &self,
        frame_type: FrameType,
        w: &mut BodyWriter<'_>,
    ) -> Result<(), Error> {
        w.opt_str(MERCHANT_ID, self.merchant_id)?;
        match (frame_type, self.url) {
            (FrameType::SetWebhookEndpoint, Some(url)) => w.str(URL, url),
            (FrameType::SetWebhookEndpoint, None) => Err(Error::MissingField {
                tag: tag::WEBHOOK_URL,
            }),
            (_, Some(_)) => Err(Error::UnexpectedField {
                frame_type,
                tag: tag::WEBHOOK_URL,
            }),
            (_, None) => Ok(()),
        }
    }
}

/// Parses a `ResendWebhookEvent` body: the event id, required.
pub(crate) fn parse_resend(body: &[u8]) -> Result<&str, Error> {
    let mut id = None;
    let mut fields = Fields::new(body);
    while let Some(Field { tag, value }) = fields.next_field()? {
        match tag {
            tag::WEBHOOK_EVENT_ID => id = Some(check_str(EVENT_ID, value)?),
            tag => unexpected(FrameType::ResendWebhookEvent, tag)?,
        }
    }
    required(tag::WEBHOOK_EVENT_ID, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_row_and_an_endpoint_round_trip_and_the_secret_is_masked() {
        let row = WebhookEventRow {
            payment_id: 42,
            merchant_id: "DEMO00000000001",
            status: WebhookStatus::Failed,
            attempts: 7,
            last_status_code: Some(503),
            last_attempt_unix_s: Some(1_764_979_200),
            next_attempt_unix_s: None,
            id: "evt_0000000000000007",
            kind: "payment.captured",
        };
        let rows = [row];
        let endpoint = WebhookEndpoint {
            created_unix_s: 1_764_979_000,
            secret_masked: "whsec_…abcd",
            url: "https://example.com/hooks",
        };
        let secret = WebhookSecret::new("whsec_0123456789abcdef0123456789abcdef0123456").unwrap();
        let mut response = super::super::Response::new(super::super::ResultCode::APPROVED);
        response.webhook_events = super::super::Repeated::from_slice(&rows);
        response.webhook_endpoint = Some(endpoint);
        response.webhook_secret = Some(secret);
        let mut buf = bytes::BytesMut::new();
        response.encode(7, &mut buf).expect("encodes");
        let (frame, _) = super::super::Frame::parse(&buf)
            .expect("whole")
            .expect("a frame");
        let parsed = super::super::Response::parse(&frame).expect("parses");
        assert_eq!(parsed.webhook_events.iter().collect::<Vec<_>>(), [row]);
        assert_eq!(parsed.webhook_endpoint, Some(endpoint));
        assert_eq!(
            parsed.webhook_secret.map(|s| s.expose()),
            Some(secret.expose())
        );
        let debug = format!("{parsed:?}");
        assert!(!debug.contains(secret.expose()), "{debug}");
        assert!(debug.contains("WebhookSecret(***)"), "{debug}");
        // A bad status, a short row, an id longer than the row.
        let mut value = Vec::new();
        value.extend_from_slice(&42u64.to_be_bytes());
        value.extend_from_slice(b"DEMO00000000001");
        value.push(2);
        value.extend_from_slice(&7u32.to_be_bytes());
        value.extend_from_slice(&503u16.to_be_bytes());
        value.extend_from_slice(&1_764_979_200u64.to_be_bytes());
        value.extend_from_slice(&0u64.to_be_bytes());
        value.push(20);
        value.extend_from_slice(b"evt_0000000000000007payment.captured");
        assert_eq!(WebhookEventRow::decode_value(&value), Ok(row));
        let mut bad = value.to_vec();
        bad[23] = 3;
        assert_eq!(
            WebhookEventRow::decode_value(&bad),
            Err(Error::OutOfRange {
                tag: tag::WEBHOOK_EVENT
            })
        );
        assert!(WebhookEventRow::decode_value(&value[..30]).is_err());
        let mut bad = value.to_vec();
        bad[WEBHOOK_EVENT_ROW_FIXED_BYTES - 1] = 200;
        assert!(WebhookEventRow::decode_value(&bad).is_err());
    }
}
