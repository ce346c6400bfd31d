//! The terminal's one connection to the switch: internal frames over TCP,
//! logged in with the merchant's key, through `switch_client`. Connected on
//! first use and again after the connection breaks, so the terminal starts
//! (and shows its sign-in page) while the switch is down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switch_client::{Client, ClientError, ListQuery, MotoPayment, Reply};

use crate::card::{CardNumber, Cvv2};
use crate::payment::{activity_label, Activity, Detail, Filters, Kind, Outcome, Row, RowsPage};

/// How long one request waits for the switch: an operator is watching.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting and logging in may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows per table page.
pub(crate) const ROWS_PER_PAGE: u16 = 25;

/// Why the switch could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// Not reachable, or the connection broke.
    #[error("the switch cannot be reached right now ({0}); try again")]
    Unavailable(String),
    /// The switch refused the merchant's key: a configuration problem.
    #[error("the switch refused the terminal's key ({0}); tell an administrator")]
    Key(String),
    /// The request was refused before it was sent.
    #[error("the request was refused: {0}")]
    Refused(String),
}

impl From<ClientError> for LinkError {
    fn from(e: ClientError) -> LinkError {
        match e {
            ClientError::Authentication { .. } => LinkError::Key(e.to_string()),
            ClientError::Encode(_) | ClientError::InvalidInput { .. } => {
                LinkError::Refused(e.to_string())
            }
            ClientError::Io(_) | ClientError::Closed | ClientError::Timeout(_) => {
                LinkError::Unavailable(e.to_string())
            }
        }
    }
}

impl LinkError {
    /// The connection is no good any more and must be made again.
    fn breaks_connection(&self) -> bool {
        matches!(self, LinkError::Unavailable(_))
    }
}

/// A payment to take, with the card data in its masked types.
pub(crate) struct NewPayment {
    /// Sale or pre-authorization.
    pub(crate) kind: Kind,
    /// In clear only inside.
    pub(crate) pan: CardNumber,
    /// `YYMM`.
    pub(crate) expiry_yymm: String,
    /// Mail orders may not have one.
    pub(crate) cvv2: Option<Cvv2>,
    /// As typed.
    pub(crate) cardholder_name: Option<String>,
    /// The merchant's reference.
    pub(crate) reference: String,
    /// What was sold.
    pub(crate) description: Option<String>,
    /// ISO 4217 numeric.
    pub(crate) currency: u16,
    /// Minor units.
    pub(crate) amount_minor: u64,
    /// ISO 8583 F41.
    pub(crate) terminal_id: String,
}

impl std::fmt::Debug for NewPayment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPayment")
            .field("kind", &self.kind)
            .field("pan", &self.pan)
            .field("reference", &self.reference)
            .field("currency", &self.currency)
            .field("amount_minor", &self.amount_minor)
            .field("terminal_id", &self.terminal_id)
            .finish_non_exhaustive()
    }
}

/// The connection and what it takes to make it again.
#[derive(Debug)]
pub(crate) struct Link {
    /// The switch's internal-frame listener.
    addr: SocketAddr,
    /// The merchant's key id.
    client_id: String,
    /// The merchant's key secret.
    secret: String,
    /// The live connection, if any; shared by every request (the client
    /// pipelines).
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Link {
    /// Not connected yet.
    pub(crate) fn new(addr: SocketAddr, client_id: String, secret: String) -> Link {
        Link {
            addr,
            client_id,
            secret,
            client: tokio::sync::Mutex::new(None),
        }
    }

    async fn client(&self) -> Result<Arc<Client>, LinkError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let connect = Client::connect(self.addr, &self.client_id, &self.secret);
        let client = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| LinkError::Unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))??
            .with_timeout(REQUEST_TIMEOUT);
        tracing::info!(switch = %self.addr, client_id = %self.client_id, "connected to the switch");
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Forgets a broken connection, so the next request connects again.
    async fn settle(
        &self,
        used: &Arc<Client>,
        result: Result<Reply, ClientError>,
    ) -> Result<Reply, LinkError> {
        let result = result.map_err(LinkError::from);
        if let Err(e) = &result {
            if e.breaks_connection() {
                tracing::warn!(error = %e, "connection to the switch lost");
                let mut slot = self.client.lock().await;
                if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
                    *slot = None;
                }
            }
        }
        result
    }

    /// Takes a payment. Never retried: a lost answer could mean a taken
    /// payment, which the table then shows.
    pub(crate) async fn pay(&self, p: &NewPayment) -> Result<Outcome, LinkError> {
        let request = MotoPayment {
            pan: p.pan.expose().to_string(),
            expiry_yymm: p.expiry_yymm.clone(),
            cvv2: p.cvv2.as_ref().map(|c| c.expose().to_string()),
            cardholder_name: p.cardholder_name.clone(),
            merchant_reference: p.reference.clone(),
            description: p.description.clone(),
            currency: p.currency,
            amount_minor: p.amount_minor,
            terminal_id: p.terminal_id.clone(),
            cart: Vec::new(),
        };
        let client = self.client().await?;
        let result = match p.kind {
            Kind::Sale => client.authorize_moto(&request).await,
            Kind::Preauthorization => client.preauthorize_moto(&request).await,
        };
        drop(request);
        let reply = self.settle(&client, result).await?;
        Ok(outcome(p, &reply))
    }

    /// Captures a hold: `amount_minor`, or what is left of it when
    /// `None`; `keep_open` makes it a partial capture (the rest stays held
    /// for further captures), else the rest is released.
    pub(crate) async fn capture(
        &self,
        payment_id: u64,
        amount_minor: Option<u64>,
        keep_open: bool,
    ) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client
            .capture_partial(payment_id, amount_minor, keep_open)
            .await;
        self.settle(&client, result).await
    }

    /// Marks a payment as scam (the switch records this terminal's key as
    /// who, and `note` as why).
    pub(crate) async fn mark_scam(
        &self,
        payment_id: u64,
        note: Option<&str>,
    ) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client.mark_scam(payment_id, note).await;
        self.settle(&client, result).await
    }

    /// Takes the scam mark off a payment, with why.
    pub(crate) async fn unmark_scam(
        &self,
        payment_id: u64,
        reason: &str,
    ) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client.unmark_scam(payment_id, reason).await;
        self.settle(&client, result).await
    }

    /// Refunds part or all of a captured payment.
    pub(crate) async fn refund(
        &self,
        payment_id: u64,
        amount_minor: u64,
        reason: Option<&str>,
    ) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client.refund(payment_id, amount_minor, reason).await;
        self.settle(&client, result).await
    }

    /// The merchant's terminals as the switch has them (one page of at
    /// most `limit`); an error when the switch refuses the list.
    pub(crate) async fn terminals(
        &self,
        limit: u16,
    ) -> Result<Vec<switch_client::Terminal>, LinkError> {
        let reply = self
            .read(|c| async move { c.list_terminals(None, None, Some(limit)).await })
            .await?;
        if !reply.approved() {
            return Err(LinkError::Refused(format!(
                "{} {}",
                reply.code(),
                reply.message.as_deref().unwrap_or("")
            )));
        }
        Ok(reply.terminals)
    }

    /// Adds a terminal to the merchant.
    pub(crate) async fn add_terminal(
        &self,
        terminal_id: &str,
        name: Option<&str>,
    ) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client.add_terminal(terminal_id, None, name).await;
        self.settle(&client, result).await
    }

    /// Enables, disables or changes a terminal's settings.
    pub(crate) async fn set_terminal(
        &self,
        terminal_id: &str,
        settings: &switch_client::TerminalSettings,
    ) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client.set_terminal(terminal_id, settings).await;
        self.settle(&client, result).await
    }

    /// Removes a terminal.
    pub(crate) async fn remove_terminal(&self, terminal_id: &str) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client.remove_terminal(terminal_id).await;
        self.settle(&client, result).await
    }

    /// The merchant's settings as the switch has them; an error when the
    /// switch refuses to say.
    pub(crate) async fn merchant(&self) -> Result<switch_client::Merchant, LinkError> {
        let reply = self
            .read(|c| async move { c.get_merchant(None).await })
            .await?;
        match reply.merchant {
            Some(m) if reply.approved() => Ok(m),
            _ => Err(LinkError::Refused(reply_reason(&reply))),
        }
    }

    /// Changes the merchant's settings (those given).
    pub(crate) async fn set_merchant(
        &self,
        settings: &switch_client::MerchantSettings,
    ) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client.set_merchant(settings).await;
        self.settle(&client, result).await
    }

    /// The merchant's webhook endpoint (`None`: none), its secret masked.
    pub(crate) async fn webhook_endpoint(
        &self,
    ) -> Result<Option<switch_client::WebhookEndpoint>, LinkError> {
        let reply = self
            .read(|c| async move { c.get_webhook_endpoint(None).await })
            .await?;
        if !reply.approved() {
            return Err(LinkError::Refused(reply_reason(&reply)));
        }
        Ok(reply.webhook_endpoint)
    }

    /// One page of the merchant's webhook events (in `status`, when
    /// given), newest first, from `cursor` (a previous page's next
    /// cursor); and the next page's cursor, `None` on the last page.
    pub(crate) async fn webhook_events(
        &self,
        status: Option<switch_client::WebhookStatus>,
        cursor: Option<u64>,
        limit: u16,
    ) -> Result<(Vec<switch_client::WebhookEvent>, Option<u64>), LinkError> {
        let reply = self
            .read(|c| async move {
                c.list_webhook_events(None, None, status, cursor, Some(limit))
                    .await
            })
            .await?;
        if !reply.approved() {
            return Err(LinkError::Refused(reply_reason(&reply)));
        }
        Ok((reply.webhook_events, reply.next_cursor))
    }

    /// Sets the merchant's webhook endpoint; the reply carries the new
    /// secret, once.
    pub(crate) async fn set_webhook_endpoint(&self, url: &str) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client.set_webhook_endpoint(None, url).await;
        self.settle(&client, result).await
    }

    /// Removes the merchant's webhook endpoint.
    pub(crate) async fn remove_webhook_endpoint(&self) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client.remove_webhook_endpoint(None).await;
        self.settle(&client, result).await
    }

    /// Queues a webhook event again.
    pub(crate) async fn resend_webhook_event(&self, event_id: &str) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client.resend_webhook_event(event_id).await;
        self.settle(&client, result).await
    }

    /// Voids a payment.
    pub(crate) async fn cancel(&self, payment_id: u64) -> Result<Reply, LinkError> {
        let client = self.client().await?;
        let result = client.cancel(payment_id).await;
        self.settle(&client, result).await
    }

    /// A read: tried once more on a fresh connection when the first one
    /// turns out broken (the switch restarted), since reading twice is
    /// harmless.
    async fn read<F, Fut>(&self, request: F) -> Result<Reply, LinkError>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<Reply, ClientError>>,
    {
        let client = self.client().await?;
        match self.settle(&client, request(client.clone()).await).await {
            Err(e) if e.breaks_connection() => {
                let client = self.client().await?;
                self.settle(&client, request(client.clone()).await).await
            }
            other => other,
        }
    }

    /// One payment with its history; `None` when the merchant has no such
    /// payment.
    pub(crate) async fn payment(&self, payment_id: u64) -> Result<Option<Detail>, LinkError> {
        let reply = self
            .read(|c| async move { c.get_payment(payment_id).await })
            .await?;
        if !reply.approved() {
            return Ok(None);
        }
        Ok(Some(detail(payment_id, &reply)))
    }

    /// One page of the table.
    pub(crate) async fn list(&self, filters: &Filters) -> Result<RowsPage, LinkError> {
        let query = ListQuery {
            status: filters.status,
            created_from_unix_s: filters.created_from_s,
            created_to_unix_s: filters.created_to_s,
            amount_min_minor: filters.amount_min_minor,
            amount_max_minor: filters.amount_max_minor,
            merchant_reference: filters.reference.clone(),
            terminal_id: filters.terminal_id.clone(),
            cursor: filters.cursor,
            limit: Some(ROWS_PER_PAGE),
            scam: filters.scam,
            rrn: filters.rrn.clone(),
            auth_code: filters.auth_code.clone(),
            last4: filters.last4.clone(),
            statuses: filters.statuses.clone(),
            webhook_status: filters.webhook,
            ..ListQuery::default()
        };
        let query = &query;
        let reply = self
            .read(|c| async move { c.list_payments(query).await })
            .await?;
        if !reply.approved() {
            return Err(LinkError::Refused(reply_reason(&reply)));
        }
        Ok(rows_page(&reply))
    }
}

/// The switch's reason for a refusal: its message and result code.
pub(crate) fn reply_reason(reply: &Reply) -> String {
    match &reply.message {
        Some(m) => format!("{m} (code {})", reply.code()),
        None => format!("result code {}", reply.code()),
    }
}

fn outcome(p: &NewPayment, reply: &Reply) -> Outcome {
    // The switch masks the card; when it did not send one (a refusal
    // before its card stage), the same mask is made here.
    let masked_pan = reply.masked_pan.clone().unwrap_or_else(|| p.pan.masked());
    Outcome {
        kind: p.kind,
        approved: reply.approved(),
        result_code: reply.code().to_string(),
        message: reply.message.clone(),
        payment_id: reply.payment_id,
        auth_code: reply.auth_code.clone(),
        status: reply.status,
        amount_minor: reply
            .amount_authorized_minor
            .filter(|a| *a > 0)
            .unwrap_or(p.amount_minor),
        currency: reply.currency.unwrap_or(p.currency),
        masked_pan,
        reference: p.reference.clone(),
    }
}

fn rows_page(reply: &Reply) -> RowsPage {
    RowsPage {
        rows: reply
            .rows
            .iter()
            .map(|r| Row {
                payment_id: r.payment_id,
                created_s: r.created_unix_s,
                status: Some(r.status),
                scam: r.scam,
                currency: r.currency,
                authorized_minor: r.amount_authorized_minor,
                captured_minor: r.amount_captured_minor,
                refunded_minor: r.amount_refunded_minor,
                reference: r.merchant_reference.clone().unwrap_or_default(),
            })
            .collect(),
        next_cursor: reply.next_cursor,
    }
}

fn detail(payment_id: u64, reply: &Reply) -> Detail {
    Detail {
        row: Row {
            payment_id: reply.payment_id.unwrap_or(payment_id),
            created_s: reply.created_unix_s.unwrap_or(0),
            status: reply.status,
            scam: reply.scam.unwrap_or(false),
            currency: reply.currency.unwrap_or(0),
            authorized_minor: reply.amount_authorized_minor.unwrap_or(0),
            captured_minor: reply.amount_captured_minor.unwrap_or(0),
            refunded_minor: reply.amount_refunded_minor.unwrap_or(0),
            reference: reply.merchant_reference.clone().unwrap_or_default(),
        },
        masked_pan: reply.masked_pan.clone(),
        auth_code: reply.auth_code.clone(),
        terminal_id: reply.terminal_id.clone(),
        history: reply
            .history
            .iter()
            .map(|h| Activity {
                at_s: h.at_unix_s,
                what: activity_label(h.kind.code()),
                amount_minor: h.amount_minor,
                result_code: h.result_code.as_str().to_string(),
            })
            .collect(),
        details: reply.details.clone(),
        webhooks: reply.webhook_events.clone(),
    }
}
