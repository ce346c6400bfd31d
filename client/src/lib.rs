//! A client for the switch's internal frames (`docs/internal-frames.md`,
//! `docs/internal-api.md`): the MO/TO virtual terminal and merchants'
//! back offices use it, and so do the switch's tests.
//!
//! One [`Client`] is one authenticated TCP connection. Its methods take
//! `&self`, so one client can be shared (in an `Arc`) and used from many
//! tasks at once: requests are pipelined on the connection and each answer
//! is matched to its request by request id, in whatever order the switch
//! answers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switch_client::ClientError> {
//! use switch_client::{Client, MotoPayment};
//! let client = Client::connect("127.0.0.1:8584", "MK-0000-0001", "secret…").await?;
//! let sale = client
//!     .authorize_moto(&MotoPayment {
//!         pan: "4111111111111111".into(),
//!         expiry_yymm: "2812".into(),
//!         cvv2: Some("123".into()),
//!         merchant_reference: "ORD-1".into(),
//!         currency: 978,
//!         amount_minor: 2500,
//!         terminal_id: "DEMO0001".into(),
//!         ..MotoPayment::default()
//!     })
//!     .await?;
//! assert!(sale.approved());
//! # Ok(()) }
//! ```

mod error;
mod types;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use codecs::internal::{
    Authenticate, CartLine, Currencies, Cvv2, Expiry, InternalCodec, ListPayments, ListTerminals,
    ListWebhookEvents, MerchantChange, MotoRequest, Pan, Refund, Repeated, Request, Response,
    Secret, TerminalChange, WebhookEndpointChange,
};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;

pub use codecs::internal::{
    EventKind, HistoryEntry, PaymentStatus, ResultCode, Setting, TerminalState, WebhookStatus,
    CURRENCIES_MAX, WEBHOOK_EVENTS_MAX,
};
pub use error::ClientError;
pub use types::{
    CartItem, Details, ListQuery, MandateRow, Merchant, MerchantSettings, MotoPayment, NewSecret,
    PaymentRow, Reply, Terminal, TerminalSettings, WebhookEndpoint, WebhookEvent,
};

/// How long a request waits for its answer unless told otherwise.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Most requests waiting for an answer on one client; more wait to send.
pub const PENDING_MAX: usize = 1024;

/// Requests waiting for their answers.
#[derive(Default)]
struct Pending {
    /// Request id → where its answer goes.
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set when the connection ended: nothing more will be answered.
    closed: bool,
}

/// The stream's read half: a TCP socket's, or a TLS stream's (boxed: one
/// `Client` type whatever the stream).
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// The writing side: one request is written at a time.
struct Writer {
    /// The stream's write half (TCP, or TLS, which must be flushed).
    half: Box<dyn AsyncWrite + Send + Unpin>,
    /// Encode buffer, reused.
    buf: BytesMut,
}

/// One connection to the switch's internal-frame listener.
pub struct Client {
    /// Serializes writes so frames never interleave.
    writer: tokio::sync::Mutex<Writer>,
    /// Shared with the reader task.
    pending: Arc<Mutex<Pending>>,
    /// Limits [`PENDING_MAX`] requests in flight.
    slots: Arc<tokio::sync::Semaphore>,
    /// Next request id; ids are unique per connection.
    next_id: AtomicU64,
    /// Per-request answer timeout.
    timeout: Duration,
    /// Reads responses and hands them out by request id.
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects and logs in with an API key (`client_id` as `XX-0000-0000`
    /// and its secret as printed by `switch keys create`).
    ///
    /// # Errors
    /// [`ClientError::Io`] when the switch cannot be reached,
    /// [`ClientError::Authentication`] when it refuses the key (the switch
    /// then closes the connection).
    pub async fn connect(
        addr: impl ToSocketAddrs,
        client_id: &str,
        secret: &str,
    ) -> Result<Client, ClientError> {
        Client::open(addr).await?.logged_in(client_id, secret).await
    }

    /// This client once the switch accepted the key.
    async fn logged_in(self, client_id: &str, secret: &str) -> Result<Client, ClientError> {
        let reply = self.authenticate(client_id, secret).await?;
        if !reply.approved() {
            return Err(ClientError::Authentication {
                result_code: reply.code().to_owned(),
                message: reply.message.unwrap_or_default(),
            });
        }
        Ok(self)
    }

    /// Connects without logging in; [`Client::authenticate`] must come
    /// first (anything else is refused with `58`). For tests and tools.
    ///
    /// # Errors
    /// [`ClientError::Io`] when the switch cannot be reached.
    pub async fn open(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Client::over(Box::new(read), Box::new(write)))
    }

    /// [`Client::connect`] over a stream the caller opened: TLS to a
    /// listener with `tls_cert_file` set, for one.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_stream(
        stream: impl AsyncRead + AsyncWrite + Send + 'static,
        client_id: &str,
        secret: &str,
    ) -> Result<Client, ClientError> {
        Client::from_stream(stream)
            .logged_in(client_id, secret)
            .await
    }

    /// [`Client::open`] over a stream the caller opened.
    ///
    /// # Panics
    /// Outside a tokio runtime (the client's reader is a task).
    pub fn from_stream(stream: impl AsyncRead + AsyncWrite + Send + 'static) -> Client {
        let (read, write) = tokio::io::split(stream);
        Client::over(Box::new(read), Box::new(write))
    }

    fn over(read: ReadHalf, write: Box<dyn AsyncWrite + Send + Unpin>) -> Client {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let reader = tokio::spawn(read_loop(
            FramedRead::new(read, InternalCodec::new()),
            pending.clone(),
        ));
        Client {
            writer: tokio::sync::Mutex::new(Writer {
                half: write,
                buf: BytesMut::with_capacity(1024),
            }),
            pending,
            slots: Arc::new(tokio::sync::Semaphore::new(PENDING_MAX)),
            next_id: AtomicU64::new(1),
            timeout: TIMEOUT_DEFAULT,
            reader,
        }
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Logs the connection in; the reply's result code says whether it
    /// worked (`00`) or not (`58`, and the switch closes the connection).
    ///
    /// # Errors
    /// [`ClientError::Encode`] for a client id or secret the format
    /// refuses; connection errors.
    pub async fn authenticate(&self, client_id: &str, secret: &str) -> Result<Reply, ClientError> {
        let secret = Secret::new(secret.as_bytes())?;
        self.call(&Request::Authenticate(Authenticate { client_id, secret }))
            .await
    }

    /// One-step MO/TO sale: authorized and captured at once.
    ///
    /// # Errors
    /// Input the format refuses, connection errors. A decline is a reply.
    pub async fn authorize_moto(&self, payment: &MotoPayment) -> Result<Reply, ClientError> {
        self.moto(payment, true).await
    }

    /// Two-step MO/TO pre-authorization: places a hold to capture later.
    ///
    /// # Errors
    /// Input the format refuses, connection errors. A decline is a reply.
    pub async fn preauthorize_moto(&self, payment: &MotoPayment) -> Result<Reply, ClientError> {
        self.moto(payment, false).await
    }

    async fn moto(&self, p: &MotoPayment, sale: bool) -> Result<Reply, ClientError> {
        let expiry = parse_expiry(&p.expiry_yymm)?;
        let lines = cart_lines(&p.cart);
        let moto = MotoRequest {
            pan: Pan::new(&p.pan)?,
            expiry,
            cvv2: p.cvv2.as_deref().map(Cvv2::new).transpose()?,
            cardholder_name: p.cardholder_name.as_deref(),
            merchant_reference: &p.merchant_reference,
            description: p.description.as_deref(),
            currency: p.currency,
            amount_minor: p.amount_minor,
            terminal_id: &p.terminal_id,
            cart: Repeated::from_slice(&lines),
        };
        let request = if sale {
            Request::AuthorizeMoto(moto)
        } else {
            Request::PreauthorizeMoto(moto)
        };
        self.call(&request).await
    }

    /// Captures a pre-authorization, for `amount_minor` or (when `None`)
    /// the amount authorized. Up to the merchant's over-capture limit.
    ///
    /// # Errors
    /// Input the format refuses, connection errors.
    pub async fn capture(
        &self,
        payment_id: u64,
        amount_minor: Option<u64>,
    ) -> Result<Reply, ClientError> {
        self.call(&Request::Capture {
            payment_id,
            amount_minor,
            cart: Repeated::empty(),
            not_final: false,
        })
        .await
    }

    /// Captures part of a pre-authorization: `amount_minor` (absent: what
    /// is left of the hold), keeping the rest held for further captures
    /// when `not_final`; a final capture releases what is left.
    ///
    /// # Errors
    /// Input the format refuses, connection errors.
    pub async fn capture_partial(
        &self,
        payment_id: u64,
        amount_minor: Option<u64>,
        not_final: bool,
    ) -> Result<Reply, ClientError> {
        self.call(&Request::Capture {
            payment_id,
            amount_minor,
            cart: Repeated::empty(),
            not_final,
        })
        .await
    }

    /// Captures a pre-authorization by an edited cart: the lines replace
    /// the payment's cart and their total is captured (within the
    /// over-capture limit); `not_final` keeps the rest of the hold open.
    ///
    /// # Errors
    /// [`ClientError::InvalidInput`] for no lines; input the format refuses
    /// (more than `CART_LINES_MAX` lines, a total that overflows);
    /// connection errors.
    pub async fn capture_cart(
        &self,
        payment_id: u64,
        cart: &[CartItem],
        not_final: bool,
    ) -> Result<Reply, ClientError> {
        if cart.is_empty() {
            return Err(ClientError::InvalidInput {
                field: "cart",
                expected: "at least one line",
            });
        }
        let wire = cart_lines(cart);
        self.call(&Request::Capture {
            payment_id,
            amount_minor: None,
            cart: Repeated::from_slice(&wire),
            not_final,
        })
        .await
    }

    /// Refunds `amount_minor` of a captured payment.
    ///
    /// # Errors
    /// Input the format refuses, connection errors.
    pub async fn refund(
        &self,
        payment_id: u64,
        amount_minor: u64,
        reason: Option<&str>,
    ) -> Result<Reply, ClientError> {
        self.call(&Request::Refund(Refund {
            payment_id,
            amount_minor,
            lines: Repeated::empty(),
            reason,
        }))
        .await
    }

    /// Refunds cart lines of a payment that carried a cart: the amount is
    /// the sum of quantity × unit price; each line must match a sold line
    /// with that much quantity not yet refunded.
    ///
    /// # Errors
    /// [`ClientError::InvalidInput`] for no lines or a total that
    /// overflows; input the format refuses; connection errors.
    pub async fn refund_lines(
        &self,
        payment_id: u64,
        lines: &[CartItem],
        reason: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let total = lines.iter().try_fold(0u64, |sum, l| {
            u64::from(l.quantity)
                .checked_mul(l.unit_price_minor)
                .and_then(|t| sum.checked_add(t))
        });
        let amount_minor = match total {
            Some(t) if !lines.is_empty() => t,
            _ => {
                return Err(ClientError::InvalidInput {
                    field: "lines",
                    expected: "at least one line, total within an amount",
                })
            }
        };
        let wire = cart_lines(lines);
        self.call(&Request::Refund(Refund {
            payment_id,
            amount_minor,
            lines: Repeated::from_slice(&wire),
            reason,
        }))
        .await
    }

    /// Cancels (voids) a payment: a hold is released, a sale reversed.
    ///
    /// # Errors
    /// Connection errors.
    pub async fn cancel(&self, payment_id: u64) -> Result<Reply, ClientError> {
        self.call(&Request::Cancel { payment_id }).await
    }

    /// One payment with its activity history.
    ///
    /// # Errors
    /// Connection errors.
    pub async fn get_payment(&self, payment_id: u64) -> Result<Reply, ClientError> {
        self.call(&Request::GetPayment { payment_id }).await
    }

    /// One page of payments matching `query`, newest first; pass the
    /// reply's `next_cursor` as `query.cursor` for the next page.
    ///
    /// # Errors
    /// Input the format refuses (ranges the wrong way round, limit 0 or
    /// over 100), connection errors.
    pub async fn list_payments(&self, query: &ListQuery) -> Result<Reply, ClientError> {
        let statuses: Vec<u8> = query.statuses.iter().map(|s| s.code()).collect();
        self.call(&Request::ListPayments(ListPayments {
            status: query.status,
            created_from_unix_s: query.created_from_unix_s,
            created_to_unix_s: query.created_to_unix_s,
            amount_min_minor: query.amount_min_minor,
            amount_max_minor: query.amount_max_minor,
            merchant_reference: query.merchant_reference.as_deref(),
            terminal_id: query.terminal_id.as_deref(),
            cursor: query.cursor,
            limit: query.limit,
            scam: query.scam,
            rrn: query.rrn.as_deref(),
            auth_code: query.auth_code.as_deref(),
            last4: query.last4.as_deref(),
            channel: query.channel,
            eci: query.eci,
            result_code: query.result_code,
            statuses: Some(&statuses[..]).filter(|s| !s.is_empty()),
            webhook_status: query.webhook_status,
        }))
        .await
    }

    /// Flags a payment as a scam; its card goes on the risk watch list.
    ///
    /// # Errors
    /// Connection errors.
    pub async fn mark_scam(
        &self,
        payment_id: u64,
        reason: Option<&str>,
    ) -> Result<Reply, ClientError> {
        self.call(&Request::MarkScam { payment_id, reason }).await
    }

    /// One page of the webhook events of the key's merchants (of
    /// `merchant_id`, of `payment_id`, in `status`, when given), newest
    /// first, in `Reply::webhook_events`; pass the reply's `next_cursor`
    /// as `cursor` for the next page.
    ///
    /// # Errors
    /// A limit of 0 or over [`WEBHOOK_EVENTS_MAX`], connection errors.
    pub async fn list_webhook_events(
        &self,
        merchant_id: Option<&str>,
        payment_id: Option<u64>,
        status: Option<WebhookStatus>,
        cursor: Option<u64>,
        limit: Option<u16>,
    ) -> Result<Reply, ClientError> {
        self.call(&Request::ListWebhookEvents(ListWebhookEvents {
            merchant_id,
            payment_id,
            status,
            cursor,
            limit,
        }))
        .await
    }

    /// Queues webhook event `event_id` again (as `switch webhooks
    /// resend`); the reply carries it. `25` for an event not found or not
    /// the key's merchants'.
    ///
    /// # Errors
    /// An empty or over-long id, connection errors.
    pub async fn resend_webhook_event(&self, event_id: &str) -> Result<Reply, ClientError> {
        self.call(&Request::ResendWebhookEvent { event_id }).await
    }

    /// A merchant's webhook endpoint (`merchant_id`, or the key's only
    /// merchant), its secret masked, in `Reply::webhook_endpoint` (`None`:
    /// none).
    ///
    /// # Errors
    /// Connection errors.
    pub async fn get_webhook_endpoint(
        &self,
        merchant_id: Option<&str>,
    ) -> Result<Reply, ClientError> {
        self.call(&Request::GetWebhookEndpoint(WebhookEndpointChange {
            merchant_id,
            url: None,
        }))
        .await
    }

    /// Sets (or replaces) a merchant's webhook endpoint; the reply carries
    /// its new signing secret in `Reply::webhook_secret`, this once.
    ///
    /// # Errors
    /// An empty or over-long URL, connection errors.
    pub async fn set_webhook_endpoint(
        &self,
        merchant_id: Option<&str>,
        url: &str,
    ) -> Result<Reply, ClientError> {
        self.call(&Request::SetWebhookEndpoint(WebhookEndpointChange {
            merchant_id,
            url: Some(url),
        }))
        .await
    }

    /// Removes a merchant's webhook endpoint (`25`: none).
    ///
    /// # Errors
    /// Connection errors.
    pub async fn remove_webhook_endpoint(
        &self,
        merchant_id: Option<&str>,
    ) -> Result<Reply, ClientError> {
        self.call(&Request::RemoveWebhookEndpoint(WebhookEndpointChange {
            merchant_id,
            url: None,
        }))
        .await
    }

    /// The mandates the key's provider holds, in `Reply::mandates`
    /// (none for a merchant's key).
    ///
    /// # Errors
    /// Connection errors.
    pub async fn list_mandates(&self) -> Result<Reply, ClientError> {
        self.call(&Request::ListMandates).await
    }

    /// Takes the scam flag off a payment, with why (kept with the
    /// payment, beside this key's client id); its card leaves the risk
    /// watch list unless another flagged payment of the card holds it.
    /// `12` when the payment is not flagged.
    ///
    /// # Errors
    /// An empty or over-long reason (nothing is sent), connection errors.
    pub async fn unmark_scam(&self, payment_id: u64, reason: &str) -> Result<Reply, ClientError> {
        self.call(&Request::UnmarkScam { payment_id, reason }).await
    }

    /// One page of the terminals of the key's merchants (of `merchant_id`
    /// only, when given); pass the reply's `next_cursor` as `cursor` for
    /// the next page.
    ///
    /// # Errors
    /// A limit of 0 or over 100, connection errors.
    pub async fn list_terminals(
        &self,
        merchant_id: Option<&str>,
        cursor: Option<u64>,
        limit: Option<u16>,
    ) -> Result<Reply, ClientError> {
        self.call(&Request::ListTerminals(ListTerminals {
            merchant_id,
            cursor,
            limit,
        }))
        .await
    }

    /// Adds terminal `terminal_id` (8 characters) to `merchant_id` (the
    /// key's only merchant when `None`), enabled; the reply's `terminals`
    /// holds it. It transacts once the answer is in.
    ///
    /// # Errors
    /// Input the format refuses, connection errors.
    pub async fn add_terminal(
        &self,
        terminal_id: &str,
        merchant_id: Option<&str>,
        name: Option<&str>,
    ) -> Result<Reply, ClientError> {
        self.call(&Request::AddTerminal(TerminalChange {
            terminal_id,
            merchant_id,
            name,
            ..TerminalChange::default()
        }))
        .await
    }

    /// Enables or disables a terminal, or changes its settings.
    ///
    /// # Errors
    /// Input the format refuses, connection errors.
    pub async fn set_terminal(
        &self,
        terminal_id: &str,
        settings: &TerminalSettings,
    ) -> Result<Reply, ClientError> {
        self.call(&Request::SetTerminal(TerminalChange {
            terminal_id,
            merchant_id: None,
            name: settings.name.as_deref(),
            state: settings.enabled.map(|on| {
                if on {
                    TerminalState::Enabled
                } else {
                    TerminalState::Disabled
                }
            }),
            refunds: settings.refunds,
            moto: settings.moto,
            cancel: settings.cancel,
        }))
        .await
    }

    /// Removes a terminal: 58 for its payments, its reversals still go.
    ///
    /// # Errors
    /// Input the format refuses, connection errors.
    pub async fn remove_terminal(&self, terminal_id: &str) -> Result<Reply, ClientError> {
        self.call(&Request::RemoveTerminal(TerminalChange {
            terminal_id,
            ..TerminalChange::default()
        }))
        .await
    }

    /// The settings of `merchant_id` (the key's only merchant when
    /// `None`): the reply's `merchant`. Needs a mandate's reporting scope
    /// for a provider's key; `58` for a merchant the key may not act for.
    ///
    /// # Errors
    /// A malformed merchant id (nothing is sent), connection errors.
    pub async fn get_merchant(&self, merchant_id: Option<&str>) -> Result<Reply, ClientError> {
        self.call(&Request::GetMerchant(MerchantChange {
            merchant_id,
            ..MerchantChange::default()
        }))
        .await
    }

    /// Changes a merchant's settings (those given); the reply's
    /// `merchant` holds them as they stand, in force once the answer is
    /// in. Needs a mandate's payments scope for a provider's key.
    /// Enabling or disabling is refused `58` (the acquirer's), and a
    /// request that changes nothing `30`.
    ///
    /// # Errors
    /// Currencies the format refuses ([`ClientError::InvalidInput`]),
    /// other input the format refuses, connection errors.
    pub async fn set_merchant(&self, settings: &MerchantSettings) -> Result<Reply, ClientError> {
        let currencies = settings
            .currencies
            .as_deref()
            .map(Currencies::new)
            .transpose()
            .map_err(|_| ClientError::InvalidInput {
                field: "currencies",
                expected: "1 to 32 ISO 4217 numeric codes, 1 to 999, none twice",
            })?;
        self.call(&Request::SetMerchant(MerchantChange {
            merchant_id: settings.merchant_id.as_deref(),
            enabled: settings.enabled,
            currencies,
            over_capture_pct: settings.over_capture_pct,
            hold_hours: settings.hold_hours,
            auto_capture_hours: settings.auto_capture_hours,
            refunds: settings.refunds,
            moto: settings.moto,
            name: settings.name.as_deref(),
        }))
        .await
    }

    /// Sends any request and waits for its answer.
    ///
    /// # Errors
    /// [`ClientError::Encode`] when the request breaks the format (nothing
    /// is sent), [`ClientError::Closed`], [`ClientError::Timeout`], I/O.
    pub async fn call(&self, request: &Request<'_>) -> Result<Reply, ClientError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ClientError::Closed)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.closed {
                return Err(ClientError::Closed);
            }
            pending.waiting.insert(id, tx);
        }
        if let Err(e) = self.write(id, request).await {
            lock(&self.pending).waiting.remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                lock(&self.pending).waiting.remove(&id);
                Err(ClientError::Timeout(self.timeout))
            }
        }
    }

    async fn write(&self, id: u64, request: &Request<'_>) -> Result<(), ClientError> {
        let mut w = self.writer.lock().await;
        let w = &mut *w;
        w.buf.clear();
        request.encode(id, &mut w.buf)?;
        w.half.write_all(&w.buf).await?;
        w.half.flush().await?;
        Ok(())
    }
}

/// `YYMM` → expiry.
fn parse_expiry(yymm: &str) -> Result<Expiry, ClientError> {
    let invalid = ClientError::InvalidInput {
        field: "expiry_yymm",
        expected: "YYMM, month 01 to 12",
    };
    let b = yymm.as_bytes();
    if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) {
        return Err(invalid);
    }
    let n = |i: usize| b.get(i).map_or(0, |d| d - b'0');
    Expiry::new(n(0) * 10 + n(1), n(2) * 10 + n(3)).map_err(|_| invalid)
}

/// Borrowed wire lines of owned items.
fn cart_lines(items: &[CartItem]) -> Vec<CartLine<'_>> {
    items
        .iter()
        .map(|i| CartLine {
            item: &i.item,
            quantity: i.quantity,
            unit_price_minor: i.unit_price_minor,
        })
        .collect()
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hands each response to the request that waits for it; at the end (EOF,
/// broken frame), fails everything still waiting.
async fn read_loop(mut frames: FramedRead<ReadHalf, InternalCodec>, pending: Arc<Mutex<Pending>>) {
    while let Some(Ok(frame)) = frames.next().await {
        let Ok(response) = Response::parse(&frame.frame()) else {
            break;
        };
        let reply = Reply::from_response(&response);
        if let Some(tx) = lock(&pending).waiting.remove(&frame.request_id()) {
            let _ = tx.send(reply);
        }
    }
    let mut p = lock(&pending);
    p.closed = true;
    p.waiting.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_checked() {
        let e = parse_expiry("2712").expect("valid");
        assert_eq!((e.year(), e.month()), (27, 12));
        assert!(parse_expiry("2713").is_err());
        assert!(parse_expiry("27-1").is_err());
        assert!(parse_expiry("271").is_err());
    }

    #[test]
    fn debug_masks_card_data() {
        let p = MotoPayment {
            pan: "4111111111111111".into(),
            cvv2: Some("123".into()),
            expiry_yymm: "2712".into(),
            ..MotoPayment::default()
        };
        let shown = format!("{p:?}");
        assert!(!shown.contains("4111") && !shown.contains("123") && !shown.contains("2712"));
    }
}
